/**
 * Announces every run that is uploaded to the bucket, once: the bucket notifies a Pub/Sub topic
 * on OBJECT_FINALIZE of objects under <prefix>/_control/manifests/ only. abaco uploads a run's
 * data files first and its manifest last, with put-if-absent, so the manifest's message says
 * that the run is complete in the bucket, and a replayed upload (which finds the manifest) sends
 * none. The payload (JSON_API_V1) is the manifest object's resource, whose custom metadata holds
 * dataset, as_of_date and run_id. Consumers pull from a subscription, and messages that keep
 * failing go to a dead-letter topic with a subscription of its own.
 */

locals {
  labels = merge({ app = "abaco" }, var.labels)
  # "" or "<prefix>/": object names below the destination gs://BUCKET/<prefix>.
  root = var.prefix == "" ? "" : "${var.prefix}/"
  # The control prefix: outside every BigQuery external table's URIs (<prefix>/exports/...).
  manifests_prefix = "${local.root}_control/manifests/"
}

data "google_project" "this" {
  project_id = var.project_id
}

# The Cloud Storage service agent of the project: it publishes the bucket's notifications.
data "google_storage_project_service_account" "gcs" {
  project = var.project_id
}

resource "google_pubsub_topic" "exports" {
  project      = var.project_id
  name         = var.topic_name
  labels       = local.labels
  kms_key_name = var.kms_key_name
}

resource "google_pubsub_topic_iam_member" "storage_publishes" {
  project = var.project_id
  topic   = google_pubsub_topic.exports.name
  role    = "roles/pubsub.publisher"
  member  = "serviceAccount:${data.google_storage_project_service_account.gcs.email_address}"
}

resource "google_storage_notification" "exports" {
  bucket         = var.bucket_name
  topic          = google_pubsub_topic.exports.id
  payload_format = "JSON_API_V1"
  event_types    = ["OBJECT_FINALIZE"]
  # One message per uploaded run, not one per file.
  object_name_prefix = local.manifests_prefix
  custom_attributes = {
    source = "abaco"
  }

  # The service agent must be allowed to publish before the notification is created.
  depends_on = [google_pubsub_topic_iam_member.storage_publishes]
}

resource "google_pubsub_topic" "dead_letter" {
  project      = var.project_id
  name         = var.dead_letter_topic_name
  labels       = local.labels
  kms_key_name = var.kms_key_name
}

resource "google_pubsub_subscription" "exports" {
  project                    = var.project_id
  name                       = var.subscription_name
  topic                      = google_pubsub_topic.exports.id
  labels                     = local.labels
  ack_deadline_seconds       = var.ack_deadline_seconds
  message_retention_duration = var.message_retention_duration

  expiration_policy {
    ttl = "" # never expires, even when nobody pulls for a while
  }

  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter.id
    max_delivery_attempts = var.max_delivery_attempts
  }
}

resource "google_pubsub_subscription" "dead_letter" {
  project                    = var.project_id
  name                       = var.dead_letter_subscription_name
  topic                      = google_pubsub_topic.dead_letter.id
  labels                     = local.labels
  message_retention_duration = var.message_retention_duration

  expiration_policy {
    ttl = ""
  }
}

# Dead lettering: the Pub/Sub service agent forwards failed messages to the dead-letter topic
# and acknowledges them on the source subscription.
locals {
  pubsub_service_agent = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"
}

resource "google_pubsub_topic_iam_member" "dead_letter_publisher" {
  project = var.project_id
  topic   = google_pubsub_topic.dead_letter.name
  role    = "roles/pubsub.publisher"
  member  = local.pubsub_service_agent
}

resource "google_pubsub_subscription_iam_member" "dead_letter_source_subscriber" {
  project      = var.project_id
  subscription = google_pubsub_subscription.exports.name
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_service_agent
}
