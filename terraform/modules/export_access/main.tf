/**
 * Least privilege around the landing bucket. The exporter (the VM) uploads abaco's runs under
 * <prefix>/ (the destination gs://BUCKET/<prefix> that ABACO_UPLOAD__DESTINATION names):
 *
 *   <prefix>/exports/...                 data files, mirroring the runtime tree: create,
 *                                        overwrite and delete (a re-export replaces a date)
 *   <prefix>/_control/latest/<ds>.json   the remote pointers: create and overwrite (moved by
 *                                        compare-and-swap)
 *   <prefix>/_control/manifests/...      one manifest per run: create only, never overwrite
 *                                        or delete
 *   the whole bucket                     read and list (a replayed upload reads the manifest
 *                                        it finds; `abaco audit verify --remote`)
 *
 * Overwriting an object needs storage.objects.delete besides storage.objects.create, so
 * roles/storage.objectCreator alone is create-only; roles/storage.objectUser (which has delete)
 * is granted only on object names that start with the two replaceable prefixes, by IAM
 * conditions (the bucket has uniform bucket-level access, which conditions need). Every
 * replaced or deleted object stays a noncurrent version, then soft-deleted (export_bucket).
 *
 * A consumer may read objects and pull the notifications. Every grant is on the bucket or the
 * subscription, never on the project.
 */

resource "google_service_account" "exporter" {
  project      = var.project_id
  account_id   = var.exporter_account_id
  display_name = "abaco exporter"
  description  = "The VM that runs abaco: uploads runs to gs://${var.bucket_name}/${local.root}, nothing else."
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

  # "" or "<prefix>/": object names below the destination.
  root = var.prefix == "" ? "" : "${var.prefix}/"
  # IAM conditions see an object as projects/_/buckets/<bucket>/objects/<object name>.
  objects          = "projects/_/buckets/${var.bucket_name}/objects/"
  exports_prefix   = "${local.root}exports/"
  latest_prefix    = "${local.root}_control/latest/"
  manifests_prefix = "${local.root}_control/manifests/"
}

# Create anywhere: the data files, the pointers and the manifests (a manifest is uploaded with
# put-if-absent, so an existing one is never replaced; without delete it could not be anyway).
resource "google_storage_bucket_iam_member" "exporter_creates_objects" {
  bucket = var.bucket_name
  role   = "roles/storage.objectCreator"
  member = local.exporter_member
}

# Read and list: listing is a permission on the bucket, which a condition on object names cannot
# narrow. The exporter reads only what it uploaded: a manifest that a replayed upload finds
# (to reconcile instead of writing twice), the pointer it compares and swaps, and every object
# `abaco audit verify --remote` checks against its manifest.
resource "google_storage_bucket_iam_member" "exporter_reads_objects" {
  bucket = var.bucket_name
  role   = "roles/storage.objectViewer"
  member = local.exporter_member
}

# Overwrite and delete data files: a re-export of a date replaces that date's objects, and the
# objects of the previous run that the new manifest does not name are deleted.
resource "google_storage_bucket_iam_member" "exporter_replaces_exports" {
  bucket = var.bucket_name
  role   = "roles/storage.objectUser"
  member = local.exporter_member

  condition {
    title       = "abaco-replace-exports"
    description = "Overwrite and delete objects under ${local.exports_prefix} only (a re-exported date)."
    expression  = "resource.name.startsWith(\"${local.objects}${local.exports_prefix}\")"
  }
}

# Move the remote pointers (compare-and-swap on the object's generation).
resource "google_storage_bucket_iam_member" "exporter_moves_latest" {
  bucket = var.bucket_name
  role   = "roles/storage.objectUser"
  member = local.exporter_member

  condition {
    title       = "abaco-move-latest"
    description = "Overwrite objects under ${local.latest_prefix} only (the latest pointers)."
    expression  = "resource.name.startsWith(\"${local.objects}${local.latest_prefix}\")"
  }
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
