variable "project_id" {
  type        = string
  description = "Project that owns the bucket."
}

variable "name" {
  type        = string
  description = "Globally unique bucket name, e.g. \"abaco-exports-prod\"."
}

variable "location" {
  type        = string
  description = "Bucket location (region or multi-region), e.g. \"us-east1\" or \"US\". Keep it the same as the BigQuery dataset's."
}

variable "storage_class" {
  type        = string
  description = "Default storage class of new objects."
  default     = "STANDARD"
}

variable "retention_days" {
  type        = number
  description = "Days an export is kept: the lifecycle deletes live objects older than this. Keep it equal to `abaco prune --retention` on the VM (90d by default), so the VM and the bucket forget the same runs."
  default     = 90

  validation {
    condition     = var.retention_days >= 1
    error_message = "retention_days must be at least 1."
  }
}

variable "noncurrent_version_days" {
  type        = number
  description = "Days an overwritten or deleted object's previous version is kept (the window for restoring from versioning, runbooks/restore-after-prune.md); a re-export replaces a date's objects and deletes those of the previous run that the new manifest does not name, and each of them stays restorable this long."
  default     = 30

  validation {
    condition     = var.noncurrent_version_days >= 1
    error_message = "noncurrent_version_days must be at least 1."
  }
}

variable "noncurrent_versions_kept" {
  type        = number
  description = "At most this many noncurrent versions of one object are kept: an older one is deleted even inside noncurrent_version_days (today's dpd files are replaced by every hourly run)."
  default     = 5
}

variable "soft_delete_days" {
  type        = number
  description = "Soft delete: days a deleted object (or version) can still be restored. 0 turns it off; otherwise 7 to 90."
  default     = 14

  validation {
    condition     = var.soft_delete_days == 0 || (var.soft_delete_days >= 7 && var.soft_delete_days <= 90)
    error_message = "soft_delete_days must be 0 or between 7 and 90."
  }
}

variable "kms_key_name" {
  type        = string
  description = "Optional Cloud KMS key (projects/P/locations/L/keyRings/R/cryptoKeys/K) for CMEK; null uses Google-managed encryption. The project's Cloud Storage service agent needs roles/cloudkms.cryptoKeyEncrypterDecrypter on it."
  default     = null
}

variable "access_log_bucket" {
  type        = string
  description = "Optional bucket that receives usage logs of this one; null for none (Cloud Audit Logs record access anyway)."
  default     = null
}

variable "labels" {
  type        = map(string)
  description = "Labels on the bucket."
  default     = {}
}

variable "force_destroy" {
  type        = bool
  description = "Allow `terraform destroy` to delete a bucket that still holds objects. Keep false in production."
  default     = false
}
