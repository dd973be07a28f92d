/**
 * One environment of abaco's landing zone on Google Cloud: the exports bucket, its
 * notifications (one message per uploaded run, with dead letters), the exporter and consumer
 * service accounts, and BigQuery external tables over the Parquet exports. The VM uploads to
 * gs://<bucket>/<prefix> (output upload_destination: ABACO_UPLOAD__DESTINATION on the VM):
 * data files under <prefix>/exports/, manifests and pointers under <prefix>/_control/.
 */

locals {
  bucket_name = coalesce(var.bucket_name, "${var.project_id}-abaco-exports-${var.environment}")
  labels = {
    environment = var.environment
  }
  # Deterministic, so that it is known at plan time (for_each keys and values below).
  consumer_member = "serviceAccount:abaco-consumer-${var.environment}@${var.project_id}.iam.gserviceaccount.com"
  # "" or "<prefix>/": object names below the destination.
  root = var.prefix == "" ? "" : "${var.prefix}/"
}

module "bucket" {
  source = "../../modules/export_bucket"

  project_id     = var.project_id
  name           = local.bucket_name
  location       = var.region
  retention_days = var.retention_days
  labels         = local.labels
}

module "notifications" {
  source = "../../modules/export_notifications"

  project_id                    = var.project_id
  bucket_name                   = module.bucket.name
  prefix                        = var.prefix
  topic_name                    = "abaco-exports-${var.environment}"
  subscription_name             = "abaco-exports-consumer-${var.environment}"
  dead_letter_topic_name        = "abaco-exports-dead-letter-${var.environment}"
  dead_letter_subscription_name = "abaco-exports-dead-letter-${var.environment}"
  labels                        = local.labels
}

module "access" {
  source = "../../modules/export_access"

  project_id             = var.project_id
  bucket_name            = module.bucket.name
  prefix                 = var.prefix
  subscription_name      = module.notifications.subscription_name
  exporter_account_id    = "abaco-exporter-${var.environment}"
  consumer_account_id    = "abaco-consumer-${var.environment}"
  extra_consumer_members = var.extra_consumer_members
}

module "bigquery" {
  source = "../../modules/bigquery_exports"

  project_id        = var.project_id
  dataset_id        = "abaco_exports_${var.environment}"
  location          = var.region
  bucket_name       = module.bucket.name
  prefix            = var.prefix
  hive_partitioning = var.hive_partitioning
  reader_members = merge(
    { consumer = local.consumer_member },
    { for member in var.extra_consumer_members : member => member },
  )
  labels = local.labels

  depends_on = [module.access]
}
