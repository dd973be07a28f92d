variable "project_id" {
  type        = string
  description = "Project of the BigQuery connection and dataset."
}

variable "location" {
  type        = string
  description = "Location of the connection and the dataset; must match the lake bucket's location (module lake_bucket)."
}

variable "bucket_name" {
  type        = string
  description = "The lake's bucket (module lake_bucket), which the connection's service account may read."
}

variable "prefix" {
  type        = string
  description = "Folder of the lake in the bucket, without slashes at the ends: the <prefix> of the VM's ABACO_LAKE__DESTINATION = gs://BUCKET/<prefix>; \"\" for the bucket's root. The tables read gs://BUCKET/<prefix>/lake/tables/ and gs://BUCKET/<prefix>/lake/changes/."
  default     = ""

  validation {
    condition     = var.prefix == "" || (can(regex("^[A-Za-z0-9._=-]+(/[A-Za-z0-9._=-]+)*$", var.prefix)) && alltrue([for segment in split("/", var.prefix) : segment != "." && segment != ".."]))
    error_message = "prefix must be \"\" or folder names separated by single slashes, without a slash at either end and without . or .. (e.g. \"prod\")."
  }
}

variable "tables" {
  type        = list(string)
  description = "The tables the lake captures (lake.tables on the VM), as schema.table: each gets a Delta Lake table <schema>_<table> and a change-log table <schema>_<table>_changes. Default: the source contract's five tables (tables.* on the VM)."
  default = [
    "core_banking.customers",
    "core_banking.loans",
    "core_banking.payment_schedule",
    "core_banking.payments",
    "commercial.rate_card",
  ]

  validation {
    condition     = alltrue([for table in var.tables : can(regex("^[a-z_][a-z0-9_]*\\.[a-z_][a-z0-9_]*$", table))])
    error_message = "Each table must be a lower-case schema.table name, e.g. \"core_banking.loans\"."
  }

  validation {
    condition     = length(distinct([for table in var.tables : replace(table, ".", "_")])) == length(var.tables)
    error_message = "Two tables give the same BigQuery table id (schema.table with _ for .)."
  }
}

variable "dataset_id" {
  type        = string
  description = "BigQuery dataset that holds the lake's tables."
  default     = "abaco_lake"
}

variable "connection_id" {
  type        = string
  description = "Id of the BigLake (Cloud resource) connection the tables read the bucket through."
  default     = "abaco-lake"
}

variable "require_partition_filter" {
  type        = bool
  description = "Refuse queries of a change-log table without a filter on commit_date."
  default     = false
}

variable "reader_members" {
  type        = map(string)
  description = "Principals given roles/bigquery.dataViewer on the dataset, keyed by a fixed label (the key must be known at plan time), e.g. { consumer = \"serviceAccount:abaco-consumer@P.iam.gserviceaccount.com\" }. They need no access to the bucket (the connection reads it); to run queries, roles/bigquery.jobUser in some project."
  default     = {}
}

variable "kms_key_name" {
  type        = string
  description = "Optional Cloud KMS key for the dataset's default encryption (CMEK); null uses Google-managed encryption."
  default     = null
}

variable "labels" {
  type        = map(string)
  description = "Labels on the dataset and tables."
  default     = {}
}
