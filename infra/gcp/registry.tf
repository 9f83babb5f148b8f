# The image registry: a Docker repository in the cluster's region; untagged images (left behind
# when a tag moves) are deleted.

resource "google_artifact_registry_repository" "petavox" {
  location      = var.region
  repository_id = var.name_prefix
  format        = "DOCKER"
  description   = "petavox images"

  cleanup_policies {
    id     = "delete-untagged"
    action = "DELETE"
    condition {
      tag_state  = "UNTAGGED"
      older_than = "${var.untagged_image_expiry_days * 86400}s"
    }
  }

  depends_on = [google_project_service.apis]
}
