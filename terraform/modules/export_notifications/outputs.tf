output "topic_id" {
  description = "Topic the bucket notifies once per uploaded run (projects/P/topics/T)."
  value       = google_pubsub_topic.exports.id
}

output "subscription_id" {
  description = "Consumers' pull subscription (projects/P/subscriptions/S)."
  value       = google_pubsub_subscription.exports.id
}

output "subscription_name" {
  description = "Short name of the consumers' subscription."
  value       = google_pubsub_subscription.exports.name
}

output "dead_letter_topic_id" {
  description = "Dead-letter topic."
  value       = google_pubsub_topic.dead_letter.id
}

output "dead_letter_subscription_id" {
  description = "Subscription that keeps the dead letters."
  value       = google_pubsub_subscription.dead_letter.id
}

output "notification_id" {
  description = "The bucket notification."
  value       = google_storage_notification.exports.notification_id
}

output "object_name_prefix" {
  description = "The notification's filter: manifests only, <prefix>/_control/manifests/."
  value       = google_storage_notification.exports.object_name_prefix
}
