variable "project_id" {
  type        = string
  description = "Google Cloud project of the landing zone."
}

variable "region" {
  type        = string
  description = "Region of the bucket, the BigQuery dataset and the provider's defaults."
  default     = "us-east1"
}

variable "environment" {
  type        = string
  description = "Environment name, part of resource names and labels (prod, staging, ...)."
  default     = "prod"
}

variable "bucket_name" {
  type        = string
  description = "Globally unique name of the landing bucket; null derives \"<project_id>-abaco-exports-<environment>\"."
  default     = null
}

variable "retention_days" {
  type        = number
  description = "Days exports are kept in the bucket: the same number as `abaco prune --retention 90d` on the VM."
  default     = 90
}

variable "retention_policy_days" {
  type        = number
  description = "Optional retention policy (WORM) in days; 0 for none. A value above 0 turns Object Versioning off (Cloud Storage allows only one of them)."
  default     = 0
}

variable "lock_retention_policy" {
  type        = bool
  description = "Lock the retention policy: IRREVERSIBLE (see modules/export_bucket)."
  default     = false
}

variable "exporter_may_replace" {
  type        = bool
  description = "Let the exporter overwrite objects it uploaded before (needed to re-upload a re-exported date); false keeps it create-only."
  default     = false
}

variable "extra_consumer_members" {
  type        = list(string)
  description = "Further principals that may read the exports and pull notifications, e.g. [\"group:risk@example.com\"]."
  default     = []
}

variable "hive_partitioning" {
  type        = bool
  description = "BigQuery partition pruning on as_of_date (the as_of_date=D folders); false only while the bucket holds Parquet files that still carry an as_of_date column (modules/bigquery_exports)."
  default     = true
}
