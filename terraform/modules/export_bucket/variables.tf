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
  description = "Days an overwritten or deleted object's previous version is kept (the window for restoring from versioning, runbooks/restore-after-prune.md)."
  default     = 30

  validation {
    condition     = var.noncurrent_version_days >= 1
    error_message = "noncurrent_version_days must be at least 1."
  }
}

variable "noncurrent_versions_kept" {
  type        = number
  description = "Newest noncurrent versions of one object kept regardless of age limits; older ones are deleted (an hourly dpd file is replaced 24 times a day)."
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

variable "retention_policy_days" {
  type        = number
  description = "Optional bucket retention policy (WORM): no object can be deleted or replaced before it is this many days old. 0 (the default) means none. Cloud Storage does not allow a retention policy together with Object Versioning, so a value above 0 turns versioning off: the retention policy then protects the history instead. Must not exceed retention_days."
  default     = 0

  validation {
    condition     = var.retention_policy_days >= 0
    error_message = "retention_policy_days must be 0 (off) or a positive number of days."
  }
}

variable "lock_retention_policy" {
  type        = bool
  description = "Lock the retention policy (Bucket Lock). IRREVERSIBLE: a locked policy can never be shortened or removed, and the bucket cannot be deleted until every object has aged out. Only with retention_policy_days > 0."
  default     = false
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
