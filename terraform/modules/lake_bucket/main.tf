/**
 * The lake's bucket: where `abaco lake` keeps its change log and Delta tables
 * (ABACO_LAKE__DESTINATION = gs://BUCKET/<prefix> on the VM; docs/lake.md):
 *   <prefix>/lake/_state/lake.json                      the last committed LSN (compare-and-swap)
 *   <prefix>/lake/_batches/<start>_<end>.json           one manifest per batch, create-only
 *   <prefix>/lake/changes/<schema>.<table>/commit_date=D/changes_<start>_<end>.parquet
 *   <prefix>/lake/tables/<schema>.<table>/              a Delta table (_delta_log/ and its files)
 *
 * A bucket of its own, not the exports' bucket: that one deletes objects older than the prune
 * retention (90 days), and a Delta table's current version keeps using files of any age (the
 * initial load stays live for as long as its rows do not change). So no lifecycle rule here
 * deletes a live object: the lake's own `abaco lake compact` removes the files no version younger
 * than 7 days needs (Delta vacuum). Private (uniform bucket-level access, public access prevention
 * enforced), versioned and with soft delete, so a file removed by vacuum, a bug or a person stays
 * restorable for noncurrent_version_days, then soft_delete_days.
 *
 * The writer (the VM's exporter service account) may read and list the whole bucket and create,
 * overwrite and delete objects under <prefix>/lake/ only (an IAM condition): the state is moved by
 * compare-and-swap, a sync that crashed leaves files the next one removes, and vacuum deletes.
 */

locals {
  labels = merge({ app = "abaco" }, var.labels)
  # "" or "<prefix>/": object names below the destination gs://BUCKET/<prefix>.
  root = var.prefix == "" ? "" : "${var.prefix}/"
  # IAM conditions see an object as projects/_/buckets/<bucket>/objects/<object name>.
  objects     = "projects/_/buckets/${var.name}/objects/"
  lake_prefix = "${local.root}lake/"
}

resource "google_storage_bucket" "lake" {
  project       = var.project_id
  name          = var.name
  location      = var.location
  storage_class = var.storage_class
  labels        = local.labels
  force_destroy = var.force_destroy

  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"

  # Every overwrite (the state's compare-and-swap, a batch written again after a crash) and every
  # delete (vacuum, a crashed batch's files) keeps the old bytes as a noncurrent version.
  versioning {
    enabled = true
  }

  soft_delete_policy {
    retention_duration_seconds = var.soft_delete_days * 86400
  }

  # No rule deletes live objects: a Delta table's current version may use files of any age.
  # Noncurrent versions go after noncurrent_version_days, or once noncurrent_versions_kept newer
  # versions of the object exist (the state is replaced by every sync, every 5 minutes).
  lifecycle_rule {
    condition {
      days_since_noncurrent_time = var.noncurrent_version_days
      with_state                 = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      num_newer_versions = var.noncurrent_versions_kept
      with_state         = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }

  # Uploads that never completed.
  lifecycle_rule {
    condition {
      age = 7
    }
    action {
      type = "AbortIncompleteMultipartUpload"
    }
  }

  dynamic "encryption" {
    for_each = var.kms_key_name == null ? [] : [var.kms_key_name]
    content {
      default_kms_key_name = encryption.value
    }
  }

  dynamic "logging" {
    for_each = var.access_log_bucket == null ? [] : [var.access_log_bucket]
    content {
      log_bucket        = logging.value
      log_object_prefix = var.name
    }
  }
}

# Read and list: deltalake lists a table's _delta_log/ and the lake lists its batches; listing is
# a permission on the bucket, which a condition on object names cannot narrow.
resource "google_storage_bucket_iam_member" "writer_reads_objects" {
  bucket = google_storage_bucket.lake.name
  role   = "roles/storage.objectViewer"
  member = var.writer_member
}

# Create, overwrite and delete under <prefix>/lake/ only.
resource "google_storage_bucket_iam_member" "writer_writes_lake" {
  bucket = google_storage_bucket.lake.name
  role   = "roles/storage.objectUser"
  member = var.writer_member

  condition {
    title       = "abaco-write-lake"
    description = "Create, overwrite and delete objects under ${local.lake_prefix} only."
    expression  = "resource.name.startsWith(\"${local.objects}${local.lake_prefix}\")"
  }
}
