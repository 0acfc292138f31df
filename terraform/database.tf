# Firestore with MongoDB compatibility: the database, the trace index set and the TTL.
#
# The index set is defined once, in shared/src/indexes.rs (job_trace::indexes::
# seed_index_set). Every non-TTL index of it is declared here as a google_firestore_index;
# the two TTL indexes of the seed (created_at + 7 d, completed_at + 3 d) become the single
# TTL field Firestore allows per collection, expire_at, which the writer keeps at
# min(created_at + 7 d, completed_at + 3 d). tests/tests/terraform_firestore.rs fails
# when this file and the code disagree: keep the index resources literal (no for_each or
# dynamic blocks) so the test can read them.
#
# enable_firestore = false switches all of this off (MongoDB Atlas or self-hosted MongoDB:
# the services then create the seed's index set themselves with ENSURE_INDEXES=true).

resource "google_firestore_database" "traces" {
  count = var.enable_firestore ? 1 : 0

  project          = var.project_id
  name             = var.firestore_database_id
  location_id      = local.firestore_location
  type             = "FIRESTORE_NATIVE"
  database_edition = "ENTERPRISE"

  delete_protection_state = var.firestore_delete_protection ? "DELETE_PROTECTION_ENABLED" : "DELETE_PROTECTION_DISABLED"
  # `terraform destroy` leaves the data in place; delete the database by hand if meant.
  deletion_policy = "ABANDON"

  depends_on = [google_project_service.apis]
}

# unique { message_id: 1 }: one trace per job (the upsert key).
resource "google_firestore_index" "message_id_asc_unique" {
  count = var.enable_firestore ? 1 : 0

  project     = var.project_id
  database    = google_firestore_database.traces[0].name
  collection  = var.collection_job_traces
  api_scope   = "MONGODB_COMPATIBLE_API"
  query_scope = "COLLECTION_GROUP"
  density     = "DENSE"
  unique      = true

  fields {
    field_path = "message_id"
    order      = "ASCENDING"
  }
}

# { line_user_id: 1 }: a user's traces.
resource "google_firestore_index" "line_user_id_asc" {
  count = var.enable_firestore ? 1 : 0

  project     = var.project_id
  database    = google_firestore_database.traces[0].name
  collection  = var.collection_job_traces
  api_scope   = "MONGODB_COMPATIBLE_API"
  query_scope = "COLLECTION_GROUP"
  density     = "DENSE"

  fields {
    field_path = "line_user_id"
    order      = "ASCENDING"
  }
}

# { status: 1 }: operators' queries by state.
resource "google_firestore_index" "status_asc" {
  count = var.enable_firestore ? 1 : 0

  project     = var.project_id
  database    = google_firestore_database.traces[0].name
  collection  = var.collection_job_traces
  api_scope   = "MONGODB_COMPATIBLE_API"
  query_scope = "COLLECTION_GROUP"
  density     = "DENSE"

  fields {
    field_path = "status"
    order      = "ASCENDING"
  }
}

# { created_at: -1 }: newest first.
resource "google_firestore_index" "created_at_desc" {
  count = var.enable_firestore ? 1 : 0

  project     = var.project_id
  database    = google_firestore_database.traces[0].name
  collection  = var.collection_job_traces
  api_scope   = "MONGODB_COMPATIBLE_API"
  query_scope = "COLLECTION_GROUP"
  density     = "DENSE"

  fields {
    field_path = "created_at"
    order      = "DESCENDING"
  }
}

# { updated_at: -1 }: recently changed traces.
resource "google_firestore_index" "updated_at_desc" {
  count = var.enable_firestore ? 1 : 0

  project     = var.project_id
  database    = google_firestore_database.traces[0].name
  collection  = var.collection_job_traces
  api_scope   = "MONGODB_COMPATIBLE_API"
  query_scope = "COLLECTION_GROUP"
  density     = "DENSE"

  fields {
    field_path = "updated_at"
    order      = "DESCENDING"
  }
}

# { status: 1, updated_at: 1 }: the operators' listings across users (stalled jobs oldest
# first, recent failures newest first; GET /api/v1/jobs).
resource "google_firestore_index" "status_asc_updated_at_asc" {
  count = var.enable_firestore ? 1 : 0

  project     = var.project_id
  database    = google_firestore_database.traces[0].name
  collection  = var.collection_job_traces
  api_scope   = "MONGODB_COMPATIBLE_API"
  query_scope = "COLLECTION_GROUP"
  density     = "DENSE"

  fields {
    field_path = "status"
    order      = "ASCENDING"
  }
  fields {
    field_path = "updated_at"
    order      = "ASCENDING"
  }
}

# The one TTL of the collection: a trace is deleted once expire_at has passed (Firestore
# deletes expired documents within about a day, not at the second).
resource "google_firestore_field" "expire_at_ttl" {
  count = var.enable_firestore ? 1 : 0

  project    = var.project_id
  database   = google_firestore_database.traces[0].name
  collection = var.collection_job_traces
  field      = "expire_at"

  ttl_config {}
}
