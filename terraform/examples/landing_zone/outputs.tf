output "bucket_name" {
  description = "The landing bucket: the VM uploads its runs to gs://<bucket_name>/<prefix> (upload_destination)."
  value       = module.bucket.name
}

output "upload_destination" {
  description = "Set ABACO_UPLOAD__DESTINATION to this in /etc/abaco/abaco.env on the VM (deploy/abaco.env.example)."
  value       = trimsuffix("gs://${module.bucket.name}/${var.prefix}", "/")
}

output "exports_url" {
  description = "gs:// URL of the data files in the bucket (the runtime tree's exports/ folder); the BigQuery tables read the Parquet files below it."
  value       = "gs://${module.bucket.name}/${local.root}exports"
}

output "manifests_url" {
  description = "gs:// URL of the runs' manifests (one per uploaded run, create-only); each one that lands is announced on notification_topic."
  value       = "gs://${module.bucket.name}/${local.root}_control/manifests"
}

output "exporter_service_account" {
  description = "Attach this service account to the VM that runs abaco (gcloud compute instances set-service-account ... --scopes=cloud-platform)."
  value       = module.access.exporter_email
}

output "consumer_service_account" {
  description = "Service account of the consumers (dashboard, analysts' jobs)."
  value       = module.access.consumer_email
}

output "notification_topic" {
  description = "Topic that announces every uploaded run once (its manifest, with dataset, as_of_date and run_id in the object's metadata)."
  value       = module.notifications.topic_id
}

output "consumer_subscription" {
  description = "Subscription the consumers pull."
  value       = module.notifications.subscription_id
}

output "dead_letter_subscription" {
  description = "Where undeliverable notifications wait for inspection."
  value       = module.notifications.dead_letter_subscription_id
}

output "bigquery_tables" {
  description = "External tables over the Parquet exports."
  value       = module.bigquery.table_ids
}

output "lake_destination" {
  description = "Set ABACO_LAKE__DESTINATION to this in /etc/abaco/abaco.env on the VM, then run `abaco lake init` (deploy/README.md, \"The lake\")."
  value       = module.lake_bucket.destination
}

output "lake_bucket_name" {
  description = "The lake's bucket: its change log and Delta tables under <lake_prefix>/lake/."
  value       = module.lake_bucket.name
}

output "lake_tables" {
  description = "BigQuery tables over the lake's Delta tables (empty until lake_in_bigquery = true)."
  value       = try(module.bigquery_lake[0].table_ids, {})
}

output "lake_change_tables" {
  description = "BigQuery tables over the lake's change log (empty until lake_in_bigquery = true)."
  value       = try(module.bigquery_lake[0].change_table_ids, {})
}
