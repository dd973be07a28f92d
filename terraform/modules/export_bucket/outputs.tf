output "name" {
  description = "The bucket's name."
  value       = google_storage_bucket.exports.name
}

output "url" {
  description = "gs:// URL of the bucket."
  value       = google_storage_bucket.exports.url
}

output "exports_prefix" {
  description = "Where the runtime tree's exports/ folder goes: gs://BUCKET/exports (same layout as /var/lib/abaco/exports)."
  value       = "${google_storage_bucket.exports.url}/exports"
}

output "versioning_enabled" {
  description = "Whether Object Versioning is on (off only when a retention policy is set)."
  value       = google_storage_bucket.exports.versioning[0].enabled
}
