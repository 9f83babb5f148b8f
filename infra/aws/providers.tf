# Credentials come from the environment (AWS_PROFILE, SSO, instance role...), never from here.
provider "aws" {
  region = var.region

  default_tags {
    tags = {
      project    = "petavox"
      managed-by = "terraform"
      stack      = var.name_prefix
    }
  }
}
