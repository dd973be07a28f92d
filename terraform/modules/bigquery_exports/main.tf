/**
 * A BigQuery dataset with one external table per exported table, over the Hive-style layout
 * of the runtime tree in the landing bucket:
 *   gs://BUCKET/<prefix>/exports/<dataset>/<table>/as_of_date=D/<dataset>_<table>_D.parquet
 * External tables hold no data: BigQuery reads the Parquet files at query time, so a new as-of
 * date is queryable as soon as its file lands. With hive_partitioning (the default), as_of_date
 * comes from the as_of_date=D folder name (the Parquet files do not carry it as a column), and a
 * filter on it reads only the matching folders. Manifests and pointers live under
 * <prefix>/_control/, which no table reads.
 */

locals {
  labels = merge({ app = "abaco" }, var.labels)
  # "" or "<prefix>/": object names below the destination gs://BUCKET/<prefix>.
  root    = var.prefix == "" ? "" : "${var.prefix}/"
  exports = "gs://${var.bucket_name}/${local.root}exports"
}

resource "google_bigquery_dataset" "exports" {
  project                    = var.project_id
  dataset_id                 = var.dataset_id
  location                   = var.location
  friendly_name              = "abaco exports"
  description                = "External tables over abaco's exports in ${local.exports}."
  labels                     = local.labels
  delete_contents_on_destroy = false

  dynamic "default_encryption_configuration" {
    for_each = var.kms_key_name == null ? [] : [var.kms_key_name]
    content {
      kms_key_name = default_encryption_configuration.value
    }
  }
}

resource "google_bigquery_table" "exports" {
  #checkov:skip=CKV_GCP_80:External table: its data are the Parquet files in the bucket, encrypted by the bucket's settings; BigQuery stores none of it.
  #checkov:skip=CKV_GCP_121:External table: deleting it deletes no data (the files stay in the bucket) and Terraform recreates it as it was.
  for_each = var.tables

  project             = var.project_id
  dataset_id          = google_bigquery_dataset.exports.dataset_id
  table_id            = each.key
  description         = each.value.description
  labels              = merge(local.labels, { abaco_dataset = each.value.dataset })
  deletion_protection = false

  external_data_configuration {
    source_format = "PARQUET"
    autodetect    = true
    # Only the Parquet files: CSV and JSON of the same run sit beside them.
    source_uris = [
      "${local.exports}/${each.value.dataset}/${each.value.table}/*.parquet",
    ]

    # The partition key lives only in the folder name: BigQuery refuses a key that is also a
    # column inside the files, so this stays off for Parquet files that still carry as_of_date.
    dynamic "hive_partitioning_options" {
      for_each = var.hive_partitioning ? [1] : []
      content {
        mode                     = "CUSTOM"
        source_uri_prefix        = "${local.exports}/${each.value.dataset}/${each.value.table}/{as_of_date:DATE}"
        require_partition_filter = var.require_partition_filter
      }
    }

    parquet_options {
      enum_as_string        = true
      enable_list_inference = true
    }
  }
}

resource "google_bigquery_dataset_iam_member" "readers" {
  for_each   = var.reader_members
  project    = var.project_id
  dataset_id = google_bigquery_dataset.exports.dataset_id
  role       = "roles/bigquery.dataViewer"
  member     = each.value
}
