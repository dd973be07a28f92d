# Provider versions: "~> 6.0" allows 6.x, never 7.0. The exact release and its checksums belong
# in .terraform.lock.hcl next to this file, generated where the registry is reachable:
#   terraform providers lock -platform=linux_amd64 -platform=linux_arm64 -platform=darwin_arm64
# (terraform/README.md); commit it, and `terraform init` then refuses a provider that differs.
terraform {
  required_version = "~> 1.5"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "~> 6.0"
    }
  }

  # Keep the state in a bucket of its own (create it once by hand, versioning on):
  # backend "gcs" {
  #   bucket = "abaco-terraform-state"
  #   prefix = "landing-zone/prod"
  # }
}

provider "google" {
  project = var.project_id
  region  = var.region
}
