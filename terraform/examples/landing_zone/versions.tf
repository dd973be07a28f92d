terraform {
  required_version = ">= 1.5"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 5.30, < 7"
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
