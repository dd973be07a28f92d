/**
 * One environment of abaco's landing zone on Google Cloud: the exports bucket, its
 * notifications (one message per uploaded run, with dead letters), the exporter and consumer
 * service accounts, and BigQuery external tables over the Parquet exports. The VM uploads to
 * gs://<bucket>/<prefix> (output upload_destination: ABACO_UPLOAD__DESTINATION on the VM):
 * data files under <prefix>/exports/, manifests and pointers under <prefix>/_control/.
 * The lake (abaco lake, docs/lake.md) has a bucket of its own (output lake_destination:
 * ABACO_LAKE__DESTINATION on the VM), and BigQuery tables over it once it exists
 * (lake_in_bigquery = true after `abaco lake init`).
 */

locals {
  bucket_name      = coalesce(var.bucket_name, "${var.project_id}-abaco-exports-${var.environment}")
  lake_bucket_name = coalesce(var.lake_bucket_name, "${var.project_id}-abaco-lake-${var.environment}")
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

# The lake's own bucket: the exports' bucket deletes objects after retention_days, which would
# break a Delta table (its current version uses files of any age).
module "lake_bucket" {
  source = "../../modules/lake_bucket"

  project_id    = var.project_id
  name          = local.lake_bucket_name
  location      = var.region
  prefix        = var.lake_prefix
  writer_member = "serviceAccount:${module.access.exporter_email}"
  labels        = local.labels
}

# BigQuery reads each Delta table's log and the change log's files when it creates the tables:
# create them once `abaco lake init` has written the lake (lake_in_bigquery = true).
module "bigquery_lake" {
  source = "../../modules/bigquery_lake"
  count  = var.lake_in_bigquery ? 1 : 0

  project_id    = var.project_id
  location      = var.region
  bucket_name   = module.lake_bucket.name
  prefix        = var.lake_prefix
  tables        = var.lake_tables
  dataset_id    = "abaco_lake_${var.environment}"
  connection_id = "abaco-lake-${var.environment}"
  reader_members = merge(
    { consumer = local.consumer_member },
    { for member in var.extra_consumer_members : member => member },
  )
  labels = local.labels

  depends_on = [module.access]
}
