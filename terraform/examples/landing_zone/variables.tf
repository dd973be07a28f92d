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

variable "prefix" {
  type        = string
  description = "Folder of abaco's objects in the bucket, without slashes at the ends; \"\" (the default) for the bucket's root. The VM's ABACO_UPLOAD__DESTINATION is gs://<bucket_name>/<prefix> (output upload_destination)."
  default     = ""

  validation {
    condition     = var.prefix == "" || (can(regex("^[A-Za-z0-9._=-]+(/[A-Za-z0-9._=-]+)*$", var.prefix)) && alltrue([for segment in split("/", var.prefix) : segment != "." && segment != ".."]))
    error_message = "prefix must be \"\" or folder names separated by single slashes, without a slash at either end and without . or .. (e.g. \"prod\")."
  }
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

variable "lake_bucket_name" {
  type        = string
  description = "Globally unique name of the lake's bucket; null derives \"<project_id>-abaco-lake-<environment>\"."
  default     = null
}

variable "lake_prefix" {
  type        = string
  description = "Folder of the lake in its bucket, without slashes at the ends; \"\" (the default) for the bucket's root. The VM's ABACO_LAKE__DESTINATION is gs://<lake_bucket_name>/<lake_prefix> (output lake_destination)."
  default     = ""

  validation {
    condition     = var.lake_prefix == "" || (can(regex("^[A-Za-z0-9._=-]+(/[A-Za-z0-9._=-]+)*$", var.lake_prefix)) && alltrue([for segment in split("/", var.lake_prefix) : segment != "." && segment != ".."]))
    error_message = "lake_prefix must be \"\" or folder names separated by single slashes, without a slash at either end and without . or .. (e.g. \"prod\")."
  }
}

variable "lake_tables" {
  type        = list(string)
  description = "The tables the lake captures (lake.tables on the VM), as schema.table: one BigQuery Delta Lake table and one change-log table each."
  default = [
    "core_banking.customers",
    "core_banking.loans",
    "core_banking.payment_schedule",
    "core_banking.payments",
    "commercial.rate_card",
  ]
}

variable "lake_in_bigquery" {
  type        = bool
  description = "Create the BigQuery connection and tables over the lake. Leave false until `abaco lake init` has written the lake (BigQuery reads each Delta table's log and the change log's files when it creates the tables), then set true and apply again."
  default     = false
}
