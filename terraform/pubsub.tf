# Topics, the two push subscriptions into trace-writer, dead-lettering, the IAM the
# Pub/Sub service agent needs for both, and the completions topic trace-writer publishes to.

# The jobs topic the API publishes to (or an existing one: create_scrape_jobs_topic).
resource "google_pubsub_topic" "scrape_jobs" {
  count = var.create_scrape_jobs_topic ? 1 : 0

  project = var.project_id
  name    = var.scrape_jobs_topic

  depends_on = [google_project_service.apis]
}

# Status events from the workers: ordering key = message_id, attribute trace_event=status.
resource "google_pubsub_topic" "events" {
  project = var.project_id
  name    = var.events_topic

  depends_on = [google_project_service.apis]
}

# The workers' identities may publish status events.
resource "google_pubsub_topic_iam_member" "event_publishers" {
  for_each = toset(var.event_publishers)

  project = var.project_id
  topic   = google_pubsub_topic.events.name
  role    = "roles/pubsub.publisher"
  member  = each.value
}

# Completion notifications: trace-writer publishes one per terminal transition it applies
# (ordering key = message_id). Subscribers attach their own subscriptions.
resource "google_pubsub_topic" "completions" {
  project = var.project_id
  name    = var.completions_topic

  depends_on = [google_project_service.apis]
}

# trace-writer publishes them, and may do nothing else on the topic.
resource "google_pubsub_topic_iam_member" "writer_publishes_completions" {
  project = var.project_id
  topic   = google_pubsub_topic.completions.name
  role    = "roles/pubsub.publisher"
  member  = "serviceAccount:${google_service_account.trace_writer.email}"
}

resource "google_pubsub_topic_iam_member" "completion_subscribers" {
  for_each = toset(var.completion_subscribers)

  project = var.project_id
  topic   = google_pubsub_topic.completions.name
  role    = "roles/pubsub.subscriber"
  member  = each.value
}

# Where a push ends after max_delivery_attempts failures.
resource "google_pubsub_topic" "dead_letter" {
  project = var.project_id
  name    = var.dead_letter_topic

  depends_on = [google_project_service.apis]
}

# A topic without subscriptions drops what it receives: this one keeps dead letters for a
# week so that operators can inspect and replay them.
resource "google_pubsub_subscription" "dead_letter" {
  project = var.project_id
  name    = "${var.dead_letter_topic}-hold"
  topic   = google_pubsub_topic.dead_letter.id

  ack_deadline_seconds       = 60
  message_retention_duration = "604800s"

  expiration_policy {
    ttl = ""
  }
}

# Job messages -> trace-writer: each records the job as queued under its messageId.
resource "google_pubsub_subscription" "scrape_jobs_to_writer" {
  project = var.project_id
  name    = "trace-writer-scrape-jobs"
  topic   = local.scrape_jobs_topic_id

  ack_deadline_seconds       = var.ack_deadline_seconds
  message_retention_duration = "604800s"

  push_config {
    push_endpoint = "${google_cloud_run_v2_service.trace_writer.uri}/"

    oidc_token {
      service_account_email = google_service_account.push.email
      audience              = var.push_audience
    }
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter.id
    max_delivery_attempts = var.max_delivery_attempts
  }

  # Exponential backoff between redeliveries of a nacked (503) push.
  retry_policy {
    minimum_backoff = var.retry_minimum_backoff
    maximum_backoff = var.retry_maximum_backoff
  }

  # Never expire for inactivity (a quiet week must not delete the subscription).
  expiration_policy {
    ttl = ""
  }

  lifecycle {
    precondition {
      condition     = var.ack_deadline_seconds > var.db_timeout_seconds
      error_message = "ack_deadline_seconds must exceed db_timeout_seconds."
    }
  }

  depends_on = [
    google_cloud_run_v2_service_iam_member.push_invokes_writer,
    google_service_account_iam_member.pubsub_mints_push_tokens,
    google_pubsub_topic_iam_member.pubsub_publishes_dead_letters,
  ]
}

# Status events -> trace-writer, in order per job (ordering key = message_id).
resource "google_pubsub_subscription" "events_to_writer" {
  project = var.project_id
  name    = "trace-writer-job-trace-events"
  topic   = google_pubsub_topic.events.id

  ack_deadline_seconds       = var.ack_deadline_seconds
  message_retention_duration = "604800s"
  enable_message_ordering    = true

  push_config {
    push_endpoint = "${google_cloud_run_v2_service.trace_writer.uri}/"

    oidc_token {
      service_account_email = google_service_account.push.email
      audience              = var.push_audience
    }
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter.id
    max_delivery_attempts = var.max_delivery_attempts
  }

  retry_policy {
    minimum_backoff = var.retry_minimum_backoff
    maximum_backoff = var.retry_maximum_backoff
  }

  expiration_policy {
    ttl = ""
  }

  lifecycle {
    precondition {
      condition     = var.ack_deadline_seconds > var.db_timeout_seconds
      error_message = "ack_deadline_seconds must exceed db_timeout_seconds."
    }
  }

  depends_on = [
    google_cloud_run_v2_service_iam_member.push_invokes_writer,
    google_service_account_iam_member.pubsub_mints_push_tokens,
    google_pubsub_topic_iam_member.pubsub_publishes_dead_letters,
  ]
}

# Dead-lettering: the service agent publishes to the dead-letter topic ...
resource "google_pubsub_topic_iam_member" "pubsub_publishes_dead_letters" {
  project = var.project_id
  topic   = google_pubsub_topic.dead_letter.name
  role    = "roles/pubsub.publisher"
  member  = local.pubsub_service_agent
}

# ... and acknowledges the forwarded message on the source subscriptions.
resource "google_pubsub_subscription_iam_member" "pubsub_acks_scrape_jobs" {
  project      = var.project_id
  subscription = google_pubsub_subscription.scrape_jobs_to_writer.name
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_service_agent
}

resource "google_pubsub_subscription_iam_member" "pubsub_acks_events" {
  project      = var.project_id
  subscription = google_pubsub_subscription.events_to_writer.name
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_service_agent
}

# Authenticated push: the service agent mints OIDC tokens as the push account.
resource "google_service_account_iam_member" "pubsub_mints_push_tokens" {
  service_account_id = google_service_account.push.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = local.pubsub_service_agent
}
