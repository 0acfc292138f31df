terraform {
  # 1.5: `import` blocks and the validation/precondition features used here.
  required_version = ">= 1.5.0"

  required_providers {
    google = {
      source = "hashicorp/google"
      # 7.x: google_firestore_database.database_edition, google_firestore_index.api_scope =
      # "MONGODB_COMPATIBLE_API", density and multikey (since 6.30) and
      # google_firestore_index.unique (7.x only; absent from 6.50). Pinned to a 7.x release
      # whose schema is known to carry every attribute used here.
      version = ">= 7.33.0, < 8.0.0"
    }
  }
}
