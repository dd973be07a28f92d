output "name" {
  description = "The bucket's name."
  value       = google_storage_bucket.exports.name
}

output "url" {
  description = "gs:// URL of the bucket."
  value       = google_storage_bucket.exports.url
}

output "versioning_enabled" {
  description = "Whether Object Versioning is on (always: it keeps what a re-export replaces)."
  value       = google_storage_bucket.exports.versioning[0].enabled
}
