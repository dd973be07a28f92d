output "exporter_email" {
  description = "Attach this service account to the VM that runs abaco (no key needed)."
  value       = google_service_account.exporter.email
}

output "exporter_member" {
  description = "IAM member string of the exporter."
  value       = local.exporter_member
}

output "consumer_email" {
  description = "Service account of the consumers (dashboard, analysts' jobs)."
  value       = google_service_account.consumer.email
}

output "consumer_member" {
  description = "IAM member string of the consumer."
  value       = local.consumer_member
}

output "consumer_members" {
  description = "Every principal given consumer access (the service account and extra_consumer_members)."
  value       = concat([local.consumer_member], var.extra_consumer_members)
}

output "exporter_prefixes" {
  description = "Where the exporter may do what, as object-name prefixes: replace (overwrite and delete) and create_only."
  value = {
    replace     = [local.exports_prefix, local.latest_prefix]
    create_only = [local.manifests_prefix]
  }
}
