/**
 * Least privilege around the landing bucket: the exporter (the VM) may create objects in the
 * bucket and nothing else; a consumer may read objects and pull the notifications. Every grant
 * is on the bucket or the subscription, never on the project.
 */

resource "google_service_account" "exporter" {
  project      = var.project_id
  account_id   = var.exporter_account_id
  display_name = "abaco exporter"
  description  = "The VM that runs abaco: uploads exports to gs://${var.bucket_name}, nothing else."
}

resource "google_service_account" "consumer" {
  project      = var.project_id
  account_id   = var.consumer_account_id
  display_name = "abaco consumer"
  description  = "Reads abaco's exports from gs://${var.bucket_name} and pulls their notifications."
}

locals {
  exporter_member = "serviceAccount:${google_service_account.exporter.email}"
  consumer_member = "serviceAccount:${google_service_account.consumer.email}"
  # Known at plan time (for_each needs that); the consumer service account is granted apart.
  extra_consumers = toset(var.extra_consumer_members)
}

resource "google_storage_bucket_iam_member" "exporter_creates_objects" {
  bucket = var.bucket_name
  role   = "roles/storage.objectCreator"
  member = local.exporter_member
}

resource "google_storage_bucket_iam_member" "exporter_replaces_objects" {
  count  = var.exporter_may_replace ? 1 : 0
  bucket = var.bucket_name
  role   = "roles/storage.objectUser"
  member = local.exporter_member
}

resource "google_storage_bucket_iam_member" "consumer_reads_objects" {
  bucket = var.bucket_name
  role   = "roles/storage.objectViewer"
  member = local.consumer_member
}

resource "google_pubsub_subscription_iam_member" "consumer_subscribes" {
  project      = var.project_id
  subscription = var.subscription_name
  role         = "roles/pubsub.subscriber"
  member       = local.consumer_member
}

resource "google_storage_bucket_iam_member" "extra_consumers_read_objects" {
  for_each = local.extra_consumers
  bucket   = var.bucket_name
  role     = "roles/storage.objectViewer"
  member   = each.value
}

resource "google_pubsub_subscription_iam_member" "extra_consumers_subscribe" {
  for_each     = local.extra_consumers
  project      = var.project_id
  subscription = var.subscription_name
  role         = "roles/pubsub.subscriber"
  member       = each.value
}
