/**
 * The landing bucket of abaco's exports: private (uniform bucket-level access, public access
 * prevention enforced), versioned, soft delete on, and lifecycle rules that match the VM's prune
 * retention.
 *
 * No retention policy (Bucket Lock): a re-export of an as-of date replaces that date's objects
 * and the upload deletes objects of the previous run that the new manifest does not name, which
 * a retention policy refuses (and Cloud Storage allows no Object Versioning beside one). History
 * is kept by versioning instead: a replaced or deleted object stays as a noncurrent version for
 * noncurrent_version_days, then in soft delete for soft_delete_days (terraform/README.md).
 */

resource "google_storage_bucket" "exports" {
  project       = var.project_id
  name          = var.name
  location      = var.location
  storage_class = var.storage_class
  labels        = merge({ app = "abaco" }, var.labels)
  force_destroy = var.force_destroy

  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"

  # Every overwrite (a re-exported date, the moved latest pointer) and every delete (objects of a
  # previous run that the new manifest does not name) keeps the old bytes as a noncurrent version.
  versioning {
    enabled = true
  }

  soft_delete_policy {
    retention_duration_seconds = var.soft_delete_days * 86400
  }

  # Exports older than the prune retention go, as `abaco prune --retention 90d` removes them
  # from the VM: the data files under <prefix>/exports/ and each run's manifest under
  # <prefix>/_control/manifests/ (age counts from the upload, so a re-exported date starts again).
  # A pointer under <prefix>/_control/latest/ is replaced by every upload of its dataset.
  lifecycle_rule {
    condition {
      age        = var.retention_days
      with_state = "LIVE"
    }
    action {
      type = "Delete"
    }
  }

  # Previous versions (after an overwrite or a delete) stay restorable for a while: a noncurrent
  # version goes when it has been noncurrent for noncurrent_version_days, or when
  # noncurrent_versions_kept newer versions of the object exist, whichever comes first
  # (runbooks/restore-after-prune.md).
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
