variable "project_id" {
  type        = string
  description = "Project of the service accounts."
}

variable "bucket_name" {
  type        = string
  description = "The landing bucket; every grant on it is bucket-level, none project-level."
}

variable "subscription_name" {
  type        = string
  description = "The consumers' Pub/Sub subscription (short name)."
}

variable "exporter_account_id" {
  type        = string
  description = "account_id of the exporter's service account (the VM that runs abaco)."
  default     = "abaco-exporter"
}

variable "consumer_account_id" {
  type        = string
  description = "account_id of the consumer's service account (reads exports, pulls notifications)."
  default     = "abaco-consumer"
}

variable "prefix" {
  type        = string
  description = "Folder of abaco's objects in the bucket, without slashes at the ends: the <prefix> of the VM's destination gs://BUCKET/<prefix> (ABACO_UPLOAD__DESTINATION); \"\" for the bucket's root. The exporter may replace objects under <prefix>/exports/ and <prefix>/_control/latest/ only."
  default     = ""

  validation {
    condition     = var.prefix == "" || (can(regex("^[A-Za-z0-9._=-]+(/[A-Za-z0-9._=-]+)*$", var.prefix)) && alltrue([for segment in split("/", var.prefix) : segment != "." && segment != ".."]))
    error_message = "prefix must be \"\" or folder names separated by single slashes, without a slash at either end and without . or .. (e.g. \"prod\")."
  }
}

variable "extra_consumer_members" {
  type        = list(string)
  description = "Further principals (\"group:risk@example.com\", \"serviceAccount:...\") that may read the exports and pull notifications, like the consumer service account."
  default     = []
}
