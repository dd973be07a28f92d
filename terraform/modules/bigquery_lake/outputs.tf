output "dataset_id" {
  description = "The BigQuery dataset of the lake's tables."
  value       = google_bigquery_dataset.lake.dataset_id
}

output "connection_id" {
  description = "The BigLake connection (projects/P/locations/L/connections/ID) the tables read through."
  value       = google_bigquery_connection.lake.name
}

output "connection_service_account" {
  description = "The connection's service account, which may read the lake's bucket."
  value       = google_bigquery_connection.lake.cloud_resource[0].service_account_id
}

output "table_ids" {
  description = "Fully qualified ids (project.dataset.table) of the Delta Lake tables, keyed by table id (core_banking_loans)."
  value       = { for key, table in google_bigquery_table.current : key => "${table.project}.${table.dataset_id}.${table.table_id}" }
}

output "change_table_ids" {
  description = "Fully qualified ids of the change-log tables, keyed by table id (core_banking_loans)."
  value       = { for key, table in google_bigquery_table.changes : key => "${table.project}.${table.dataset_id}.${table.table_id}" }
}
