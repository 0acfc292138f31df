output "trace_writer_url" {
  description = "URL of trace-writer (private: only the push account may invoke it)."
  value       = google_cloud_run_v2_service.trace_writer.uri
}

output "trace_api_url" {
  description = "URL of trace-api (the frontend's base URL for /api/v1/jobs/... and /job/...)."
  value       = google_cloud_run_v2_service.trace_api.uri
}

output "scrape_jobs_topic" {
  description = "Topic the API publishes scrape jobs to."
  value       = local.scrape_jobs_topic_id
}

output "events_topic" {
  description = "Topic workers publish status events to (ordering key = message_id, attribute trace_event=status)."
  value       = google_pubsub_topic.events.id
}

output "completions_topic" {
  description = "Topic of the completion notifications trace-writer publishes (attach a subscription to it, e.g. a LINE bot's)."
  value       = google_pubsub_topic.completions.id
}

output "dead_letter_topic" {
  description = "Dead-letter topic of both push subscriptions; its -hold subscription keeps them for a week."
  value       = google_pubsub_topic.dead_letter.id
}

output "database_name" {
  description = "MONGO_DATABASE the services use (the Firestore database ID with Firestore)."
  value       = local.mongo_database
}

output "collection" {
  description = "COLLECTION_JOB_TRACES."
  value       = var.collection_job_traces
}

output "firestore_connection_string_base" {
  description = "Firestore MongoDB connection string without credentials (null without Firestore). Add credentials and authMechanism, then store it with `gcloud secrets versions add`."
  value       = var.enable_firestore ? "mongodb://${google_firestore_database.traces[0].uid}.${google_firestore_database.traces[0].location_id}.firestore.goog:443/${google_firestore_database.traces[0].name}?loadBalanced=true&tls=true&retryWrites=false" : null
}

output "mongo_uri_secret" {
  description = "Secret Manager secret to put MONGO_URI in."
  value       = google_secret_manager_secret.mongo_uri.secret_id
}

output "secrets" {
  description = "Every Secret Manager secret the services read in this configuration. Each needs a version (`gcloud secrets versions add`) before the services are created: Cloud Run refuses a revision that names a secret without one."
  value = concat(
    [google_secret_manager_secret.mongo_uri.secret_id],
    google_secret_manager_secret.api_token[*].secret_id,
    google_secret_manager_secret.line_channel_secret[*].secret_id,
  )
}

output "store_write" {
  description = "STORE_WRITE both services run with (check it with `jobtrace check-backend`)."
  value       = local.store_write
}

output "api_change_streams" {
  description = "API_CHANGE_STREAMS trace-api runs with."
  value       = local.api_change_streams
}

output "image_repository" {
  description = "Docker repository prefix of both images."
  value       = "${google_artifact_registry_repository.images.location}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.images.repository_id}"
}

output "build_service_account" {
  description = "Service account to run Cloud Build (triggers or `gcloud builds submit`) as."
  value       = google_service_account.build.id
}

output "push_service_account" {
  description = "Identity of the authenticated pushes (trace-writer's PUSH_SERVICE_ACCOUNTS)."
  value       = google_service_account.push.email
}
