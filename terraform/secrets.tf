# Secrets are declared here, valued outside Terraform: `gcloud secrets versions add`
# (see README.md). No secret value is ever a Terraform literal, so none lands in state.
# The services read version "latest"; a new version takes effect on the next revision
# (or instance start).

resource "google_secret_manager_secret" "mongo_uri" {
  project   = var.project_id
  secret_id = var.mongo_uri_secret_id

  labels = {
    app = "job-trace"
  }

  # MONGO_URI for Firestore with MongoDB compatibility must carry loadBalanced=true,
  # tls=true and retryWrites=false (Firestore has no retryable writes), e.g.
  # mongodb://USER:PASSWORD@UID.LOCATION.firestore.goog:443/DATABASE?loadBalanced=true&tls=true&retryWrites=false&authMechanism=SCRAM-SHA-256
  # (output firestore_connection_string_base gives the part without credentials).
  replication {
    auto {}
  }

  depends_on = [google_project_service.apis]
}

resource "google_secret_manager_secret" "api_token" {
  count = var.api_auth == "token" ? 1 : 0

  project   = var.project_id
  secret_id = var.api_token_secret_id

  labels = {
    app = "job-trace"
  }

  replication {
    auto {}
  }

  depends_on = [google_project_service.apis]
}

resource "google_secret_manager_secret" "line_channel_secret" {
  count = var.line_channel_secret_enabled ? 1 : 0

  project   = var.project_id
  secret_id = var.line_channel_secret_id

  labels = {
    app = "job-trace"
  }

  replication {
    auto {}
  }

  depends_on = [google_project_service.apis]
}

# Each service reads only the secrets it uses.
resource "google_secret_manager_secret_iam_member" "mongo_uri_writer" {
  project   = var.project_id
  secret_id = google_secret_manager_secret.mongo_uri.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.trace_writer.member
}

resource "google_secret_manager_secret_iam_member" "mongo_uri_api" {
  project   = var.project_id
  secret_id = google_secret_manager_secret.mongo_uri.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.trace_api.member
}

resource "google_secret_manager_secret_iam_member" "api_token_api" {
  count = var.api_auth == "token" ? 1 : 0

  project   = var.project_id
  secret_id = google_secret_manager_secret.api_token[0].secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.trace_api.member
}

resource "google_secret_manager_secret_iam_member" "line_channel_secret_api" {
  count = var.line_channel_secret_enabled ? 1 : 0

  project   = var.project_id
  secret_id = google_secret_manager_secret.line_channel_secret[0].secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.trace_api.member
}
