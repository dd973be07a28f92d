output "dataset_id" {
  description = "The BigQuery dataset."
  value       = google_bigquery_dataset.exports.dataset_id
}

output "table_ids" {
  description = "Fully qualified ids (project.dataset.table) of the external tables, keyed by table id."
  value       = { for key, table in google_bigquery_table.exports : key => "${table.project}.${table.dataset_id}.${table.table_id}" }
}
