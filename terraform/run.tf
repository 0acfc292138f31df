# The two Cloud Run services, each with its own service account, and who may call them.

resource "google_service_account" "trace_writer" {
  project      = var.project_id
  account_id   = "trace-writer-run"
  display_name = "trace-writer runtime"
  description  = "Runs trace-writer: reads the MONGO_URI secret, publishes completion notifications."

  depends_on = [google_project_service.apis]
}

resource "google_service_account" "trace_api" {
  project      = var.project_id
  account_id   = "trace-api-run"
  display_name = "trace-api runtime"
  description  = "Runs trace-api: reads the MONGO_URI secret (and the API token or LINE secret when used)."

  depends_on = [google_project_service.apis]
}

# The identity Pub/Sub signs push tokens as; trace-writer accepts only this email.
resource "google_service_account" "push" {
  project      = var.project_id
  account_id   = "trace-writer-push"
  display_name = "Pub/Sub push to trace-writer"
  description  = "OIDC identity of the push subscriptions; may only invoke trace-writer."

  depends_on = [google_project_service.apis]
}

locals {
  common_env = {
    MONGO_DATABASE        = local.mongo_database
    COLLECTION_JOB_TRACES = var.collection_job_traces
    ENSURE_INDEXES        = local.ensure_indexes
    DB_TIMEOUT_SECONDS    = tostring(var.db_timeout_seconds)
    STORE_WRITE           = local.store_write
    RUST_LOG              = var.rust_log
    # Names the Cloud Trace project of the log lines' trace IDs (log-to-trace correlation).
    GOOGLE_CLOUD_PROJECT = var.project_id
    # Deadlines of every connection (DESIGN.md, "Connections and deadlines").
    HEADER_READ_TIMEOUT_SECONDS = tostring(var.header_read_timeout_seconds)
    BODY_READ_TIMEOUT_SECONDS   = tostring(var.body_read_timeout_seconds)
    IDLE_TIMEOUT_SECONDS        = tostring(var.idle_timeout_seconds)
  }

  writer_env = merge(local.common_env, {
    PUSH_AUTH             = "oidc"
    PUSH_MEMORY_MIB       = tostring(local.trace_writer_memory_mib - local.writer_base_memory_mib)
    PUSH_AUDIENCE         = var.push_audience
    PUSH_SERVICE_ACCOUNTS = google_service_account.push.email
    MAX_CONNECTIONS       = tostring(local.writer_max_connections)
    # The topic's path, as Pub/Sub names it (the provider's id has this form too).
    COMPLETIONS_TOPIC = "projects/${var.project_id}/topics/${google_pubsub_topic.completions.name}"
  })

  api_env = merge(
    local.common_env,
    {
      CORS_ALLOWED_ORIGINS = var.cors_allowed_origins
      API_AUTH             = var.api_auth
      API_CHANGE_STREAMS   = local.api_change_streams
      MAX_CONNECTIONS      = tostring(local.api_max_connections)
      MAX_EVENT_STREAMS    = tostring(local.api_max_event_streams)
    },
    var.line_channel_id != "" ? { LINE_CHANNEL_ID = var.line_channel_id } : {},
    var.api_auth == "line" && var.line_jwks_url != "" ? { LINE_JWKS_URL = var.line_jwks_url } : {},
  )

  # What one trace-writer instance may hold at once. The code bounds it itself: the pushes
  # in flight hold at most PUSH_MEMORY_MIB together (each reserves the code's per-push
  # bound for its declared size before its body is read; past it a push waits, then gets
  # 503 with Retry-After and is redelivered), so the concurrency need not fit worst-case
  # pushes. PUSH_MEMORY_MIB is the container's memory less what the process keeps for
  # itself, and must hold at least one push of the largest size.
  # tests/tests/terraform_run.rs holds both figures to the code's constants.
  writer_push_memory_mib  = 43
  writer_base_memory_mib  = 64
  trace_writer_memory_mib = endswith(var.trace_writer_memory, "Gi") ? tonumber(trimsuffix(var.trace_writer_memory, "Gi")) * 1024 : tonumber(trimsuffix(var.trace_writer_memory, "Mi"))
  trace_api_memory_mib    = endswith(var.trace_api_memory, "Gi") ? tonumber(trimsuffix(var.trace_api_memory, "Gi")) * 1024 : tonumber(trimsuffix(var.trace_api_memory, "Mi"))

  # MAX_CONNECTIONS, the open connections one instance keeps. Cloud Run sends at most
  # `concurrency` requests at once, each on a connection of its own, and keeps about as many
  # idle for the next ones; 16 more leave room for probes. Memory bounds it as well:
  # connections may take an eighth of the container, at most the code's CONNECTION_BYTES
  # (128 KiB) each. Past the bound a new connection is answered 503 with Retry-After.
  # MAX_EVENT_STREAMS: trace-api's streams, never more than Cloud Run lets arrive at once.
  # tests/tests/terraform_run.rs holds these to the code's constants.
  connection_kib             = 128
  connection_memory_fraction = 8
  writer_connections_by_load = 2 * var.trace_writer_concurrency + 16
  writer_connections_by_mem  = local.trace_writer_memory_mib * 1024 / (local.connection_memory_fraction * local.connection_kib)
  writer_max_connections     = local.writer_connections_by_load < local.writer_connections_by_mem ? local.writer_connections_by_load : local.writer_connections_by_mem
  api_connections_by_load    = 2 * var.trace_api_concurrency + 16
  api_connections_by_mem     = local.trace_api_memory_mib * 1024 / (local.connection_memory_fraction * local.connection_kib)
  api_max_connections        = local.api_connections_by_load < local.api_connections_by_mem ? local.api_connections_by_load : local.api_connections_by_mem
  api_max_event_streams      = var.trace_api_concurrency < local.api_max_connections ? var.trace_api_concurrency : local.api_max_connections

  # An image that is no build of this repository answers pushes it does not record.
  placeholder_images = ["", "us-docker.pkg.dev/cloudrun/container/hello", "gcr.io/cloudrun/hello"]

  # Environment variables read from Secret Manager: name => secret ID.
  writer_secret_env = {
    MONGO_URI = google_secret_manager_secret.mongo_uri.secret_id
  }

  api_secret_env = merge(
    { MONGO_URI = google_secret_manager_secret.mongo_uri.secret_id },
    var.api_auth == "token" ? { API_TOKEN = google_secret_manager_secret.api_token[0].secret_id } : {},
    var.line_channel_secret_enabled ? { LINE_CHANNEL_SECRET = google_secret_manager_secret.line_channel_secret[0].secret_id } : {},
  )
}

resource "google_cloud_run_v2_service" "trace_writer" {
  project  = var.project_id
  name     = "trace-writer"
  location = var.region
  ingress  = "INGRESS_TRAFFIC_ALL"

  deletion_protection = var.deletion_protection

  # Cloud Run's own invoker check accepts tokens whose aud is this fixed string (the
  # subscriptions sign for it), besides the service URL.
  custom_audiences = [var.push_audience]

  template {
    service_account                  = google_service_account.trace_writer.email
    max_instance_request_concurrency = var.trace_writer_concurrency
    # Pub/Sub waits for a push answer up to the ack deadline; a minute covers it.
    timeout = "60s"

    scaling {
      min_instance_count = 0
      max_instance_count = var.trace_writer_max_instances
    }

    containers {
      image = var.trace_writer_image

      # Cloud Run passes this as $PORT, which the binary listens on.
      ports {
        container_port = 8080
      }

      resources {
        limits = {
          cpu    = var.cpu
          memory = var.trace_writer_memory
        }
        cpu_idle          = true
        startup_cpu_boost = true
      }

      dynamic "env" {
        for_each = local.writer_env
        content {
          name  = env.key
          value = env.value
        }
      }

      dynamic "env" {
        for_each = local.writer_secret_env
        content {
          name = env.key
          value_source {
            secret_key_ref {
              secret  = env.value
              version = "latest"
            }
          }
        }
      }

      startup_probe {
        period_seconds    = 1
        timeout_seconds   = 1
        failure_threshold = 30
        http_get {
          path = "/health"
        }
      }

      liveness_probe {
        period_seconds    = 30
        timeout_seconds   = 3
        failure_threshold = 3
        http_get {
          path = "/health"
        }
      }
    }
  }

  lifecycle {
    # What `gcloud run deploy` (cloudbuild.yaml) writes into the service: the image, the
    # client and its version, the revision name, and the annotations (user-image,
    # client-name, client-version) and labels it stamps on the template. Terraform owns
    # the rest; without this every apply after a build would roll the image back.
    ignore_changes = [
      template[0].containers[0].image,
      template[0].annotations,
      template[0].labels,
      template[0].revision,
      client,
      client_version,
    ]

    precondition {
      condition     = local.trace_writer_memory_mib - local.writer_base_memory_mib >= local.writer_push_memory_mib
      error_message = "trace_writer_memory (${var.trace_writer_memory}) less the ${local.writer_base_memory_mib} MiB the process keeps for itself cannot hold one push of the largest size (${local.writer_push_memory_mib} MiB): raise the memory, or the largest pushes are answered 503 on every delivery."
    }

    precondition {
      condition     = var.idle_timeout_seconds >= var.header_read_timeout_seconds
      error_message = "idle_timeout_seconds (${var.idle_timeout_seconds}) must not be shorter than header_read_timeout_seconds (${var.header_read_timeout_seconds}); the service would not start."
    }

    precondition {
      condition     = !contains(local.placeholder_images, var.trace_writer_image)
      error_message = "Set trace_writer_image to an image cloudbuild.yaml built (README.md, deployment step 4). A placeholder image would answer 200 to every push, and Pub/Sub would drop those messages."
    }
  }

  depends_on = [
    google_project_service.apis,
    google_secret_manager_secret_iam_member.mongo_uri_writer,
  ]
}

resource "google_cloud_run_v2_service" "trace_api" {
  project  = var.project_id
  name     = "trace-api"
  location = var.region
  ingress  = "INGRESS_TRAFFIC_ALL"

  deletion_protection = var.deletion_protection

  template {
    service_account                  = google_service_account.trace_api.email
    max_instance_request_concurrency = var.trace_api_concurrency
    # The event stream lives STREAM_LIFETIME (270 s) and a long-poll MAX_WAIT_SECONDS (30 s)
    # plus its reads; Cloud Run cuts a request at this timeout, so it must be longer
    # (tests/tests/terraform_run.rs holds it to the code's constants).
    timeout = "300s"

    scaling {
      min_instance_count = 0
      max_instance_count = var.trace_api_max_instances
    }

    containers {
      image = var.trace_api_image

      ports {
        container_port = 8080
      }

      resources {
        limits = {
          cpu    = var.cpu
          memory = var.trace_api_memory
        }
        cpu_idle          = true
        startup_cpu_boost = true
      }

      dynamic "env" {
        for_each = local.api_env
        content {
          name  = env.key
          value = env.value
        }
      }

      dynamic "env" {
        for_each = local.api_secret_env
        content {
          name = env.key
          value_source {
            secret_key_ref {
              secret  = env.value
              version = "latest"
            }
          }
        }
      }

      startup_probe {
        period_seconds    = 1
        timeout_seconds   = 1
        failure_threshold = 30
        http_get {
          path = "/health"
        }
      }

      liveness_probe {
        period_seconds    = 30
        timeout_seconds   = 3
        failure_threshold = 3
        http_get {
          path = "/health"
        }
      }
    }
  }

  lifecycle {
    ignore_changes = [
      template[0].containers[0].image,
      template[0].annotations,
      template[0].labels,
      template[0].revision,
      client,
      client_version,
    ]

    precondition {
      condition     = var.idle_timeout_seconds >= var.header_read_timeout_seconds
      error_message = "idle_timeout_seconds (${var.idle_timeout_seconds}) must not be shorter than header_read_timeout_seconds (${var.header_read_timeout_seconds}); the service would not start."
    }

    precondition {
      condition     = !contains(local.placeholder_images, var.trace_api_image)
      error_message = "Set trace_api_image to an image cloudbuild.yaml built (README.md, deployment step 4)."
    }

    precondition {
      condition     = var.api_auth != "line" || var.line_channel_id != ""
      error_message = "api_auth = \"line\" needs line_channel_id (the LINE Login channel whose ID tokens are accepted)."
    }

    precondition {
      condition     = var.api_auth != "line" || var.line_jwks_url != "" || var.line_channel_secret_enabled
      error_message = "api_auth = \"line\" needs a key to check ID tokens with: line_jwks_url (ES256, LINE's key set by default) or line_channel_secret_enabled = true (HS256)."
    }
  }

  depends_on = [
    google_project_service.apis,
    google_secret_manager_secret_iam_member.mongo_uri_api,
    google_secret_manager_secret_iam_member.api_token_api,
    google_secret_manager_secret_iam_member.line_channel_secret_api,
  ]
}

# trace-writer is private: only the push identity may invoke it (no allUsers binding).
resource "google_cloud_run_v2_service_iam_member" "push_invokes_writer" {
  project  = var.project_id
  location = var.region
  name     = google_cloud_run_v2_service.trace_writer.name
  role     = "roles/run.invoker"
  member   = google_service_account.push.member
}

# trace-api is public by default, like the original (see trace_api_public).
resource "google_cloud_run_v2_service_iam_member" "api_public" {
  count = var.trace_api_public ? 1 : 0

  project  = var.project_id
  location = var.region
  name     = google_cloud_run_v2_service.trace_api.name
  role     = "roles/run.invoker"
  member   = "allUsers"
}
