/**
 * The landing bucket of abaco's exports: private (uniform bucket-level access, public access
 * prevention enforced), versioned, soft delete on, lifecycle rules that match the VM's prune
 * retention, and an optional retention policy (Bucket Lock).
 */

locals {
  retention_policy_enabled = var.retention_policy_days > 0
}

resource "google_storage_bucket" "exports" {
  project       = var.project_id
  name          = var.name
  location      = var.location
  storage_class = var.storage_class
  labels        = merge({ app = "abaco" }, var.labels)
  force_destroy = var.force_destroy

  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"

  # Cloud Storage refuses Object Versioning on a bucket with a retention policy; with one, the
  # policy itself keeps every object unchanged for its period. (Written out, not as a local, so
  # that checkov can evaluate it.)
  versioning {
    enabled = var.retention_policy_days == 0
  }

  soft_delete_policy {
    retention_duration_seconds = var.soft_delete_days * 86400
  }

  # Exports older than the prune retention go, as `abaco prune --retention 90d` removes them
  # from the VM.
  lifecycle_rule {
    condition {
      age        = var.retention_days
      with_state = "LIVE"
    }
    action {
      type = "Delete"
    }
  }

  # Previous versions (after an overwrite or a delete) stay restorable for a while.
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

  dynamic "retention_policy" {
    for_each = local.retention_policy_enabled ? [1] : []
    content {
      retention_period = var.retention_policy_days * 86400
      is_locked        = var.lock_retention_policy
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

  lifecycle {
    precondition {
      condition     = var.retention_policy_days <= var.retention_days
      error_message = "retention_policy_days must not exceed retention_days: the lifecycle could never delete what the policy protects."
    }
    precondition {
      condition     = !var.lock_retention_policy || var.retention_policy_days > 0
      error_message = "lock_retention_policy needs retention_policy_days > 0."
    }
  }
}
