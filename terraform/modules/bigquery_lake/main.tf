/**
 * BigQuery over the lake that `abaco lake` keeps in Cloud Storage (module lake_bucket;
 * docs/lake.md), through a BigLake connection:
 *   <table>          the Delta table gs://BUCKET/<prefix>/lake/tables/<schema>.<table>: the
 *                    source table's current rows as of the last sync (format DELTA_LAKE; BigQuery
 *                    reads the table's newest version from its _delta_log and follows its schema)
 *   <table>_changes  the change log gs://BUCKET/<prefix>/lake/changes/<schema>.<table>/
 *                    commit_date=D/*.parquet: every captured change (_op, _commit_lsn, _xid,
 *                    _commit_time, _seq and the columns), Hive-partitioned on commit_date (DATE,
 *                    from the folder name; the files do not carry it)
 * for every captured table (<table>: schema.table with "_" for ".", core_banking_loans).
 *
 * The connection's own service account reads the bucket (roles/storage.objectViewer on it), so
 * readers need rights on the dataset only, never on the bucket (access delegation). The lake's
 * _state/ and _batches/ are outside every table's URIs.
 */

locals {
  labels = merge({ app = "abaco" }, var.labels)
  # "" or "<prefix>/": object names below the destination gs://BUCKET/<prefix>.
  root = var.prefix == "" ? "" : "${var.prefix}/"
  lake = "gs://${var.bucket_name}/${local.root}lake"
  # BigQuery table id (no dots) -> schema.table.
  tables = { for table in var.tables : replace(table, ".", "_") => table }
}

resource "google_bigquery_connection" "lake" {
  project       = var.project_id
  connection_id = var.connection_id
  location      = var.location
  friendly_name = "abaco lake"
  description   = "BigLake: reads abaco's lake in ${local.lake} for the tables of ${var.dataset_id}."

  cloud_resource {}
}

# The connection reads the lake (Delta logs and data files, change log files) and lists its
# folders; listing is a permission on the bucket, which a condition on object names cannot narrow.
resource "google_storage_bucket_iam_member" "connection_reads_lake" {
  bucket = var.bucket_name
  role   = "roles/storage.objectViewer"
  member = "serviceAccount:${google_bigquery_connection.lake.cloud_resource[0].service_account_id}"
}

resource "google_bigquery_dataset" "lake" {
  project                    = var.project_id
  dataset_id                 = var.dataset_id
  location                   = var.location
  friendly_name              = "abaco lake"
  description                = "BigLake tables over abaco's lake in ${local.lake}: the source tables' current rows (Delta Lake) and their change logs."
  labels                     = local.labels
  delete_contents_on_destroy = false

  dynamic "default_encryption_configuration" {
    for_each = var.kms_key_name == null ? [] : [var.kms_key_name]
    content {
      kms_key_name = default_encryption_configuration.value
    }
  }
}

resource "google_bigquery_table" "current" {
  #checkov:skip=CKV_GCP_80:External table: its data are the Delta table's files in the lake's bucket, encrypted by the bucket's settings; BigQuery stores none of it.
  #checkov:skip=CKV_GCP_121:External table: deleting it deletes no data (the files stay in the bucket) and Terraform recreates it as it was.
  for_each = local.tables

  project             = var.project_id
  dataset_id          = google_bigquery_dataset.lake.dataset_id
  table_id            = each.key
  description         = "${each.value}: the source table's current rows as of the lake's last sync (abaco lake sync; Delta Lake)."
  labels              = merge(local.labels, { abaco_lake_table = each.key })
  deletion_protection = false

  external_data_configuration {
    source_format = "DELTA_LAKE"
    autodetect    = true
    connection_id = google_bigquery_connection.lake.name
    # The Delta table's folder: BigQuery finds its _delta_log/ there.
    source_uris = [
      "${local.lake}/tables/${each.value}",
    ]
  }

  # BigQuery reads the Delta log when the table is created: the connection must be able to.
  depends_on = [google_storage_bucket_iam_member.connection_reads_lake]
}

resource "google_bigquery_table" "changes" {
  #checkov:skip=CKV_GCP_80:External table: its data are the change log's Parquet files in the lake's bucket, encrypted by the bucket's settings; BigQuery stores none of it.
  #checkov:skip=CKV_GCP_121:External table: deleting it deletes no data (the files stay in the bucket) and Terraform recreates it as it was.
  for_each = local.tables

  project             = var.project_id
  dataset_id          = google_bigquery_dataset.lake.dataset_id
  table_id            = "${each.key}_changes"
  description         = "${each.value}: every change the lake captured (_op, _commit_lsn, _xid, _commit_time, _seq, then the columns), partitioned on commit_date."
  labels              = merge(local.labels, { abaco_lake_table = each.key })
  deletion_protection = false

  external_data_configuration {
    source_format = "PARQUET"
    autodetect    = true
    connection_id = google_bigquery_connection.lake.name
    source_uris = [
      "${local.lake}/changes/${each.value}/*",
    ]

    # commit_date lives only in the folder name (commit_date=YYYY-MM-DD), typed DATE: a filter
    # on it reads only the matching folders.
    hive_partitioning_options {
      mode                     = "CUSTOM"
      source_uri_prefix        = "${local.lake}/changes/${each.value}/{commit_date:DATE}"
      require_partition_filter = var.require_partition_filter
    }

    parquet_options {
      enum_as_string        = true
      enable_list_inference = true
    }
  }

  depends_on = [google_storage_bucket_iam_member.connection_reads_lake]
}

resource "google_bigquery_dataset_iam_member" "readers" {
  for_each   = var.reader_members
  project    = var.project_id
  dataset_id = google_bigquery_dataset.lake.dataset_id
  role       = "roles/bigquery.dataViewer"
  member     = each.value
}
