output "bucket_name" {
  description = "The landing bucket: the VM uploads /var/lib/abaco/exports to gs://<bucket_name>/exports."
  value       = module.bucket.name
}

output "exports_url" {
  description = "gs:// URL of the exports folder in the bucket."
  value       = module.bucket.exports_prefix
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
  description = "Topic that announces every new export object."
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
