variable "project_id" {
  type        = string
  description = "Project of the topics and subscriptions (the bucket's project)."
}

variable "bucket_name" {
  type        = string
  description = "The landing bucket whose new objects are announced."
}

variable "topic_name" {
  type        = string
  description = "Topic the bucket notifies once per uploaded run (its manifest finalized)."
  default     = "abaco-exports"
}

variable "prefix" {
  type        = string
  description = "Folder of abaco's objects in the bucket, without slashes at the ends: the <prefix> of the VM's destination gs://BUCKET/<prefix> (ABACO_UPLOAD__DESTINATION); \"\" for the bucket's root. Only manifests, <prefix>/_control/manifests/..., are announced."
  default     = ""

  validation {
    condition     = var.prefix == "" || (can(regex("^[A-Za-z0-9._=-]+(/[A-Za-z0-9._=-]+)*$", var.prefix)) && alltrue([for segment in split("/", var.prefix) : segment != "." && segment != ".."]))
    error_message = "prefix must be \"\" or folder names separated by single slashes, without a slash at either end and without . or .. (e.g. \"prod\")."
  }
}

variable "subscription_name" {
  type        = string
  description = "Pull subscription of the consumers."
  default     = "abaco-exports-consumer"
}

variable "ack_deadline_seconds" {
  type        = number
  description = "Seconds a consumer has to acknowledge a message before it is redelivered."
  default     = 60
}

variable "message_retention_duration" {
  type        = string
  description = "How long unacknowledged messages are kept, e.g. \"604800s\" (7 days, the maximum)."
  default     = "604800s"
}

variable "max_delivery_attempts" {
  type        = number
  description = "Deliveries of one message before it goes to the dead-letter topic (5 to 100)."
  default     = 10

  validation {
    condition     = var.max_delivery_attempts >= 5 && var.max_delivery_attempts <= 100
    error_message = "max_delivery_attempts must be between 5 and 100."
  }
}

variable "dead_letter_topic_name" {
  type        = string
  description = "Topic that receives messages no consumer could handle."
  default     = "abaco-exports-dead-letter"
}

variable "dead_letter_subscription_name" {
  type        = string
  description = "Subscription that keeps dead letters for inspection and replay."
  default     = "abaco-exports-dead-letter"
}

variable "kms_key_name" {
  type        = string
  description = "Optional Cloud KMS key for the topics (CMEK); null uses Google-managed encryption. The Pub/Sub service agent needs roles/cloudkms.cryptoKeyEncrypterDecrypter on it."
  default     = null
}

variable "labels" {
  type        = map(string)
  description = "Labels on the topics and subscriptions."
  default     = {}
}
