variable "project_id" {
  type        = string
  description = "Project that owns the lake's bucket."
}

variable "name" {
  type        = string
  description = "Globally unique name of the lake's bucket, e.g. \"abaco-lake-prod\"."
}

variable "location" {
  type        = string
  description = "Bucket location (region or multi-region), e.g. \"us-east1\". Keep it the same as the BigQuery dataset's (module bigquery_lake) and near the VM: every sync writes here."
}

variable "storage_class" {
  type        = string
  description = "Default storage class of new objects."
  default     = "STANDARD"
}

variable "prefix" {
  type        = string
  description = "Folder of the lake in the bucket, without slashes at the ends: the <prefix> of the VM's ABACO_LAKE__DESTINATION = gs://BUCKET/<prefix>; \"\" for the bucket's root. The lake lives under gs://BUCKET/<prefix>/lake/, where the writer may create, overwrite and delete."
  default     = ""

  validation {
    condition     = var.prefix == "" || (can(regex("^[A-Za-z0-9._=-]+(/[A-Za-z0-9._=-]+)*$", var.prefix)) && alltrue([for segment in split("/", var.prefix) : segment != "." && segment != ".."]))
    error_message = "prefix must be \"\" or folder names separated by single slashes, without a slash at either end and without . or .. (e.g. \"prod\")."
  }
}

variable "writer_member" {
  type        = string
  description = "The principal that runs `abaco lake` (the VM's exporter service account, \"serviceAccount:EMAIL\"): reads and lists the bucket, creates, overwrites and deletes under <prefix>/lake/."
}

variable "noncurrent_version_days" {
  type        = number
  description = "Days an overwritten or deleted object's previous version is kept: the window for restoring a file that vacuum (abaco lake compact), a crashed sync's cleanup or a person removed."
  default     = 30

  validation {
    condition     = var.noncurrent_version_days >= 1
    error_message = "noncurrent_version_days must be at least 1."
  }
}

variable "noncurrent_versions_kept" {
  type        = number
  description = "At most this many noncurrent versions of one object are kept (lake/_state/lake.json is replaced by every sync)."
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
