# Credentials come from the environment (gcloud application-default login, a CI identity...),
# never from here.
provider "google" {
  project = var.project_id
  region  = var.region

  default_labels = {
    project    = "petavox"
    managed-by = "terraform"
    stack      = var.name_prefix
  }
}
