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

variable "exporter_may_replace" {
  type        = bool
  description = "false (the default): the exporter may only create objects (roles/storage.objectCreator), so the VM can never delete or overwrite what it uploaded, and an upload must not reuse a name. true adds roles/storage.objectUser on the bucket, so re-uploading a re-exported as-of date (dpd runs hourly for the same date) replaces the object; the old one stays restorable as a noncurrent version."
  default     = false
}

variable "extra_consumer_members" {
  type        = list(string)
  description = "Further principals (\"group:risk@example.com\", \"serviceAccount:...\") that may read the exports and pull notifications, like the consumer service account."
  default     = []
}
