# Where the images live and the identity Cloud Build deploys them with.

resource "google_artifact_registry_repository" "images" {
  project       = var.project_id
  location      = var.region
  repository_id = var.artifact_repository
  format        = "DOCKER"
  description   = "trace-writer and trace-api images, tagged with the commit SHA"

  depends_on = [google_project_service.apis]
}

resource "google_service_account" "build" {
  project      = var.project_id
  account_id   = var.build_service_account_id
  display_name = "job-trace Cloud Build"
  description  = "Runs cloudbuild.yaml: pushes both images and deploys them to Cloud Run."

  depends_on = [google_project_service.apis]
}

# Push images to the repository.
resource "google_artifact_registry_repository_iam_member" "build_pushes" {
  project    = var.project_id
  location   = google_artifact_registry_repository.images.location
  repository = google_artifact_registry_repository.images.name
  role       = "roles/artifactregistry.writer"
  member     = google_service_account.build.member
}

# Deploy new revisions (`gcloud run deploy` also reads operations at project level).
resource "google_project_iam_member" "build_deploys" {
  project = var.project_id
  role    = "roles/run.developer"
  member  = google_service_account.build.member
}

# Write build logs (a user-chosen build account needs this; cloudbuild.yaml logs to
# Cloud Logging only).
resource "google_project_iam_member" "build_logs" {
  project = var.project_id
  role    = "roles/logging.logWriter"
  member  = google_service_account.build.member
}

# Deploying a revision that runs as a service account requires actAs on that account.
resource "google_service_account_iam_member" "build_acts_as_writer" {
  service_account_id = google_service_account.trace_writer.name
  role               = "roles/iam.serviceAccountUser"
  member             = google_service_account.build.member
}

resource "google_service_account_iam_member" "build_acts_as_api" {
  service_account_id = google_service_account.trace_api.name
  role               = "roles/iam.serviceAccountUser"
  member             = google_service_account.build.member
}

# `gcloud builds submit` uploads the source to gs://PROJECT_cloudbuild (creating the bucket
# on first use), and a build running as this account fetches it from there. Granted at
# project level with a condition on that bucket, so it holds before the bucket exists.
resource "google_project_iam_member" "build_reads_submitted_source" {
  project = var.project_id
  role    = "roles/storage.objectViewer"
  member  = google_service_account.build.member

  condition {
    title       = "submitted-source-only"
    description = "Only the bucket gcloud builds submit uploads the source to."
    expression  = "resource.name == \"projects/_/buckets/${var.project_id}_cloudbuild\" || resource.name.startsWith(\"projects/_/buckets/${var.project_id}_cloudbuild/\")"
  }
}
