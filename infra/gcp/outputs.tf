output "project_id" {
  description = "Project of the stack."
  value       = var.project_id
}

output "bucket_name" {
  description = "Data bucket name."
  value       = google_storage_bucket.data.name
}

output "bucket_url" {
  description = "Data bucket URL: run roots go under it (output: gs://<bucket>/runs/<name>)."
  value       = google_storage_bucket.data.url
}

output "cluster_name" {
  description = "GKE cluster name."
  value       = google_container_cluster.this.name
}

output "kubeconfig_command" {
  description = "Adds the cluster to ~/.kube/config (with a private endpoint only, the internal address: run it inside the VPC)."
  value       = "gcloud container clusters get-credentials ${google_container_cluster.this.name} --location ${google_container_cluster.this.location} --project ${var.project_id}${length(var.api_authorized_cidrs) == 0 ? " --internal-ip" : ""}"
}

output "registry_url" {
  description = "Artifact Registry repository to tag and push the petavox image to (<registry_url>/petavox:<tag>)."
  value       = "${google_artifact_registry_repository.petavox.location}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.petavox.repository_id}"
}

output "worker_service_account_email" {
  description = "Google service account the Ray pods act as."
  value       = google_service_account.worker.email
}

output "service_account_annotations" {
  description = "Annotations of the Kubernetes service account <k8s_namespace>/<k8s_service_account> the Ray head and workers run as."
  value       = { "iam.gke.io/gcp-service-account" = google_service_account.worker.email }
}

output "node_pools" {
  description = "Per pool: the node label to select it and the taints to tolerate (RayCluster group specs)."
  value = {
    head = { node_selector = { (local.pool_label_key) = "head" }, taints = [] }
    cpu  = { node_selector = { (local.pool_label_key) = "cpu" }, taints = [] }
    gpu  = { node_selector = { (local.pool_label_key) = "gpu" }, taints = ["${local.gpu_taint.key}=${local.gpu_taint.value}:NoSchedule"] }
  }
}
