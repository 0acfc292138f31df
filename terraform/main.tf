provider "google" {
  project = var.project_id
  region  = var.region
}

data "google_project" "this" {
  project_id = var.project_id
}

locals {
  services = toset([
    "artifactregistry.googleapis.com",
    "cloudbuild.googleapis.com",
    # gcloud and Terraform read the project through it (IAM bindings, `gcloud builds submit`).
    "cloudresourcemanager.googleapis.com",
    "firestore.googleapis.com",
    "iam.googleapis.com",
    "iamcredentials.googleapis.com",
    "pubsub.googleapis.com",
    "run.googleapis.com",
    "secretmanager.googleapis.com",
  ])

  firestore_location = var.firestore_location != "" ? var.firestore_location : var.region

  # With Firestore, MONGO_DATABASE is the Firestore database (one connection reaches one
  # database); otherwise it is the database inside Atlas or the self-hosted MongoDB.
  mongo_database = var.enable_firestore ? var.firestore_database_id : var.mongo_database

  # Terraform owns Firestore's indexes; a plain MongoDB gets the seed's index set from the
  # services at start-up.
  ensure_indexes = var.enable_firestore ? "false" : "true"

  # Firestore's MongoDB-compatible API is not documented to take an update pipeline;
  # "cas" uses only find, insert and update with $set, which it documents.
  store_write = var.store_write != "" ? var.store_write : (var.enable_firestore ? "cas" : "pipeline")

  # Firestore has no change stream until one is created (Preview); without one trace-api
  # would retry the stream every 30 s per instance, and polling serves the same answers.
  api_change_streams = var.api_change_streams != "" ? var.api_change_streams : (var.enable_firestore ? "off" : "auto")

  # The Pub/Sub service agent: forwards to the dead-letter topic and mints push tokens.
  pubsub_service_agent = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"

  scrape_jobs_topic_id = var.create_scrape_jobs_topic ? google_pubsub_topic.scrape_jobs[0].id : "projects/${var.project_id}/topics/${var.scrape_jobs_topic}"
}

resource "google_project_service" "apis" {
  for_each = var.enable_apis ? local.services : toset([])

  project = var.project_id
  service = each.value

  # Turning an API off on destroy would break anything else in the project that uses it.
  disable_on_destroy = false
}
