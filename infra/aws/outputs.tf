output "region" {
  description = "AWS region of the stack."
  value       = var.region
}

output "bucket_name" {
  description = "Data bucket name."
  value       = aws_s3_bucket.data.bucket
}

output "bucket_url" {
  description = "Data bucket URL: run roots go under it (output: s3://<bucket>/runs/<name>)."
  value       = "s3://${aws_s3_bucket.data.bucket}"
}

output "cluster_name" {
  description = "EKS cluster name."
  value       = aws_eks_cluster.this.name
}

output "kubeconfig_command" {
  description = "Adds the cluster to ~/.kube/config."
  value       = "aws eks update-kubeconfig --region ${var.region} --name ${aws_eks_cluster.this.name}"
}

output "registry_url" {
  description = "ECR repository URL to tag and push the petavox image to."
  value       = aws_ecr_repository.petavox.repository_url
}

output "worker_role_arn" {
  description = "IAM role of the Ray pods' service account."
  value       = aws_iam_role.worker.arn
}

output "service_account_annotations" {
  description = "Annotations of the Kubernetes service account <k8s_namespace>/<k8s_service_account> the Ray head and workers run as."
  value       = { "eks.amazonaws.com/role-arn" = aws_iam_role.worker.arn }
}

output "cluster_autoscaler_role_arn" {
  description = "IAM role for the Cluster Autoscaler's service account kube-system/cluster-autoscaler."
  value       = aws_iam_role.cluster_autoscaler.arn
}

output "node_pools" {
  description = "Per pool: the node label to select it and the taints to tolerate (RayCluster group specs)."
  value = {
    head = { node_selector = { (local.pool_label_key) = "head" }, taints = [] }
    cpu  = { node_selector = { (local.pool_label_key) = "cpu" }, taints = [] }
    gpu  = { node_selector = { (local.pool_label_key) = "gpu" }, taints = ["${local.gpu_taint.key}=${local.gpu_taint.value}:NoSchedule"] }
  }
}
