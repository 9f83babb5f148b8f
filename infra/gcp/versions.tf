terraform {
  required_version = ">= 1.5"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "~> 6.0"
    }
  }

  # Partial configuration: the state bucket and prefix come from
  # `terraform init -backend-config=backend.hcl` (see ../README.md).
  backend "gcs" {}
}
