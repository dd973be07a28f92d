output "name" {
  description = "The lake's bucket."
  value       = google_storage_bucket.lake.name
}

output "destination" {
  description = "Set ABACO_LAKE__DESTINATION to this in /etc/abaco/abaco.env on the VM (gs://BUCKET or gs://BUCKET/<prefix>)."
  value       = trimsuffix("gs://${google_storage_bucket.lake.name}/${var.prefix}", "/")
}

output "lake_url" {
  description = "gs:// URL of the lake itself (its state, batches, change log and Delta tables)."
  value       = "gs://${google_storage_bucket.lake.name}/${local.root}lake"
}
