# Service accounts. Nodes run as a minimal account (logs, metrics, image pulls); Ray pods act as
# the worker account through workload identity, and that account may touch only the objects of
# the data bucket. Neither gets a project-level storage role.

# ---- nodes --------------------------------------------------------------------------------------

resource "google_service_account" "nodes" {
  account_id   = "${var.name_prefix}-nodes"
  display_name = "petavox GKE nodes"

  depends_on = [google_project_service.apis]
}

# Google's predefined minimum for GKE nodes: write logs and metrics, read node metadata.
resource "google_project_iam_member" "nodes" {
  project = var.project_id
  role    = "roles/container.defaultNodeServiceAccount"
  member  = "serviceAccount:${google_service_account.nodes.email}"
}

resource "google_artifact_registry_repository_iam_member" "nodes_pull" {
  location   = google_artifact_registry_repository.petavox.location
  repository = google_artifact_registry_repository.petavox.name
  role       = "roles/artifactregistry.reader"
  member     = "serviceAccount:${google_service_account.nodes.email}"
}

# ---- the Ray head and workers -------------------------------------------------------------------

resource "google_service_account" "worker" {
  account_id   = "${var.name_prefix}-worker"
  display_name = "petavox Ray pods (${var.k8s_namespace}/${var.k8s_service_account})"

  depends_on = [google_project_service.apis]
}

# Only the Kubernetes service account <k8s_namespace>/<k8s_service_account> may act as it.
resource "google_service_account_iam_member" "worker_workload_identity" {
  service_account_id = google_service_account.worker.name
  role               = "roles/iam.workloadIdentityUser"
  member             = "serviceAccount:${var.project_id}.svc.id.goog[${var.k8s_namespace}/${var.k8s_service_account}]"

  # The identity pool <project>.svc.id.goog exists once a cluster uses workload identity.
  depends_on = [google_container_cluster.this]
}

# Read, write, delete and list objects: of this bucket only.
resource "google_storage_bucket_iam_member" "worker_objects" {
  bucket = google_storage_bucket.data.name
  role   = "roles/storage.objectAdmin"
  member = "serviceAccount:${google_service_account.worker.email}"
}
