# The data bucket: run roots (layers, ledger, intermediate files) live here. IAM only (no object
# ACLs), never public, versioned.

locals {
  bucket_name = coalesce(var.bucket_name, "${var.project_id}-${var.name_prefix}")
}

resource "google_storage_bucket" "data" {
  name                        = local.bucket_name
  location                    = upper(var.region)
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"

  versioning {
    enabled = true
  }

  # Noncurrent versions already keep deleted data for noncurrent_version_expiry_days; soft delete
  # would bill every deleted intermediate file for another week.
  soft_delete_policy {
    retention_duration_seconds = 0
  }

  lifecycle_rule {
    condition {
      age            = var.intermediate_expiry_days
      matches_prefix = var.intermediate_prefixes
      with_state     = "LIVE"
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = var.noncurrent_version_expiry_days
      with_state                 = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      age = 7
    }
    action {
      type = "AbortIncompleteMultipartUpload"
    }
  }

  depends_on = [google_project_service.apis]
}
