# ---------------------------------------------------------------------------------------
# Project and location
# ---------------------------------------------------------------------------------------

variable "project_id" {
  description = "Google Cloud project that holds everything (services, topics, database, secrets)."
  type        = string
}

variable "region" {
  description = "Region of the Cloud Run services and the Artifact Registry repository. Cloud Build's _REGION substitution must match it."
  type        = string
  default     = "asia-northeast1"
}

variable "enable_apis" {
  description = "Enable the service APIs the pair needs (turn off when a platform team manages them)."
  type        = bool
  default     = true
}

# ---------------------------------------------------------------------------------------
# Database
# ---------------------------------------------------------------------------------------

variable "enable_firestore" {
  description = "Create a Firestore database with MongoDB compatibility (Enterprise edition) with the trace index set and the TTL on expire_at. Set false to bring MongoDB Atlas or your own MongoDB: then the services run with ENSURE_INDEXES=true and create the seed's index set themselves at start-up."
  type        = bool
  default     = true
}

variable "firestore_database_id" {
  description = "Firestore database ID (4-63 characters of a-z, 0-9 and '-'). With Firestore it is also MONGO_DATABASE, because one connection reaches one Firestore database."
  type        = string
  default     = "mansion-watch"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,61}[a-z0-9]$", var.firestore_database_id))
    error_message = "firestore_database_id must be 4-63 characters of a-z, 0-9 and '-', starting with a letter and not ending with '-'."
  }
}

variable "firestore_location" {
  description = "Firestore location ID (a region such as asia-northeast1, or a multi-region such as nam5). Empty means the same as region."
  type        = string
  default     = ""
}

variable "firestore_delete_protection" {
  description = "Turn on Firestore delete protection for the database (the database must then be unprotected by hand before it can be deleted)."
  type        = bool
  default     = true
}

variable "mongo_database" {
  description = "MONGO_DATABASE when enable_firestore = false (the database name inside Atlas or your own MongoDB). Ignored with Firestore, which uses firestore_database_id."
  type        = string
  default     = "mansion_watch"
}

variable "collection_job_traces" {
  description = "COLLECTION_JOB_TRACES: the collection that holds the traces. The Firestore indexes and the TTL are declared on this collection group."
  type        = string
  default     = "job_traces"
}

variable "store_write" {
  description = "STORE_WRITE of both services: how a push is written. \"pipeline\" is one update pipeline with upsert (one command per push, MongoDB and Atlas); \"cas\" reads, applies the rules in the service and writes back conditioned on what it read (two commands per push, only plain find/insert/update). Empty picks \"cas\" on Firestore, the strategy certain to work there, and \"pipeline\" otherwise. `jobtrace check-backend` against the database prints the value to deploy with."
  type        = string
  default     = ""

  validation {
    condition     = contains(["", "pipeline", "cas"], var.store_write)
    error_message = "store_write must be pipeline, cas or empty (chosen by enable_firestore)."
  }
}

variable "api_change_streams" {
  description = "API_CHANGE_STREAMS of trace-api: \"auto\" uses a change stream where the database offers one, \"off\" only bounded polling. Empty picks \"off\" on Firestore (it has no change stream unless one is created, see terraform/README.md) and \"auto\" otherwise."
  type        = string
  default     = ""

  validation {
    condition     = contains(["", "auto", "off"], var.api_change_streams)
    error_message = "api_change_streams must be auto, off or empty (chosen by enable_firestore)."
  }
}

variable "db_timeout_seconds" {
  description = "DB_TIMEOUT_SECONDS: bound on every database call in both services. Must stay below ack_deadline_seconds."
  type        = number
  default     = 5

  validation {
    condition     = var.db_timeout_seconds > 0 && var.db_timeout_seconds <= 60
    error_message = "db_timeout_seconds must be in (0, 60]."
  }
}

variable "mongo_uri_secret_id" {
  description = "Secret Manager secret that holds MONGO_URI. Terraform creates the secret only; add its value with `gcloud secrets versions add` so the connection string never lands in Terraform state."
  type        = string
  default     = "job-trace-mongo-uri"
}

# ---------------------------------------------------------------------------------------
# Pub/Sub
# ---------------------------------------------------------------------------------------

variable "create_scrape_jobs_topic" {
  description = "Create the jobs topic. Set false when the scraper's topic already exists (name it in scrape_jobs_topic); trace-writer then only adds its own subscription to it."
  type        = bool
  default     = true
}

variable "scrape_jobs_topic" {
  description = "Name of the topic the API publishes scrape jobs to (created or existing, see create_scrape_jobs_topic). Must be in project_id."
  type        = string
  default     = "scrape-jobs"
}

variable "events_topic" {
  description = "Name of the topic workers publish status events to (publish with ordering key = message_id and attribute trace_event=status)."
  type        = string
  default     = "job-trace-events"
}

variable "event_publishers" {
  description = "Members allowed to publish status events (e.g. [\"serviceAccount:worker@PROJECT.iam.gserviceaccount.com\"] for the scraper worker)."
  type        = list(string)
  default     = []
}

variable "completions_topic" {
  description = "Name of the topic trace-writer publishes a completion notification to for every terminal transition it applies (data: the trace in the seed's JSON; attributes message_id, status, attempt, dedupe_key; ordering key = message_id)."
  type        = string
  default     = "job-trace-completions"
}

variable "completion_subscribers" {
  description = "Members (e.g. serviceAccount:line-bot@P.iam.gserviceaccount.com) that may attach subscriptions to the completions topic and read them (roles/pubsub.subscriber on the topic)."
  type        = list(string)
  default     = []
}

variable "dead_letter_topic" {
  description = "Name of the dead-letter topic for pushes trace-writer could not take after max_delivery_attempts."
  type        = string
  default     = "job-trace-dead-letter"
}

variable "max_delivery_attempts" {
  description = "Delivery attempts before a message goes to the dead-letter topic (Pub/Sub allows 5-100)."
  type        = number
  default     = 10

  validation {
    condition     = var.max_delivery_attempts >= 5 && var.max_delivery_attempts <= 100
    error_message = "max_delivery_attempts must be between 5 and 100."
  }
}

variable "ack_deadline_seconds" {
  description = "Ack deadline of the push subscriptions. Must exceed db_timeout_seconds so that a push answered 503 after a database timeout is redelivered rather than expiring mid-write."
  type        = number
  default     = 30

  validation {
    condition     = var.ack_deadline_seconds >= 10 && var.ack_deadline_seconds <= 600
    error_message = "ack_deadline_seconds must be between 10 and 600."
  }
}

variable "retry_minimum_backoff" {
  description = "Exponential retry policy: first backoff of a nacked push (duration string)."
  type        = string
  default     = "10s"
}

variable "retry_maximum_backoff" {
  description = "Exponential retry policy: largest backoff of a nacked push (duration string, at most 600s)."
  type        = string
  default     = "600s"
}

variable "push_audience" {
  description = "Fixed OIDC audience of the pushes: the subscriptions' oidc_token.audience, trace-writer's PUSH_AUDIENCE and its custom_audiences. A fixed string avoids the Terraform cycle of using the service's own URL."
  type        = string
  default     = "trace-writer"
}

# ---------------------------------------------------------------------------------------
# Cloud Run
# ---------------------------------------------------------------------------------------

variable "trace_writer_image" {
  description = "Image trace-writer is created with: one cloudbuild.yaml built (README, step 4). Later images come from Cloud Build (Terraform ignores image changes). No default: a placeholder would answer 200 to every push, and Pub/Sub would acknowledge and drop every job message and status event until the first real deploy; the service's precondition refuses an empty value or Google's hello sample."
  type        = string
  default     = ""
}

variable "trace_api_image" {
  description = "Image trace-api is created with (see trace_writer_image)."
  type        = string
  default     = ""
}

variable "trace_writer_max_instances" {
  description = "Upper bound of trace-writer instances (it scales to zero). Bounds the concurrent database connections and the cost of a redelivery storm."
  type        = number
  default     = 10
}

variable "trace_api_max_instances" {
  description = "Upper bound of trace-api instances (it scales to zero)."
  type        = number
  default     = 10
}

variable "trace_writer_concurrency" {
  description = "Concurrent pushes per trace-writer instance. Memory does not limit it: the pushes in flight hold at most PUSH_MEMORY_MIB together (trace_writer_memory less 64 MiB), and a push that does not fit waits, then is answered 503 and redelivered."
  type        = number
  default     = 80

  validation {
    condition     = var.trace_writer_concurrency >= 1 && var.trace_writer_concurrency <= 1000
    error_message = "trace_writer_concurrency must be between 1 and 1000."
  }
}

variable "trace_api_concurrency" {
  description = "Concurrent requests per trace-api instance (long-polls and event streams each hold one while they wait). With trace_api_memory it sets MAX_CONNECTIONS and MAX_EVENT_STREAMS."
  type        = number
  default     = 80
}

variable "cpu" {
  description = "CPU limit of each container (allocated only while requests are served: cpu_idle = true)."
  type        = string
  default     = "1"
}

variable "trace_writer_memory" {
  description = "Memory limit of trace-writer's container (Mi or Gi). All but 64 MiB of it is what the pushes in flight may hold together (PUSH_MEMORY_MIB); it must hold one push of the largest size (43 MiB)."
  type        = string
  default     = "256Mi"

  validation {
    condition     = can(regex("^[0-9]+(Mi|Gi)$", var.trace_writer_memory))
    error_message = "trace_writer_memory must be a whole number of Mi or Gi, such as 512Mi."
  }
}

variable "trace_api_memory" {
  description = "Memory limit of trace-api's container (a read API of small documents; a stripped binary of about 10 MB). With trace_api_concurrency it sets MAX_CONNECTIONS and MAX_EVENT_STREAMS."
  type        = string
  default     = "256Mi"

  validation {
    condition     = can(regex("^[0-9]+(Mi|Gi)$", var.trace_api_memory))
    error_message = "trace_api_memory must be a whole number of Mi or Gi, such as 512Mi."
  }
}

variable "header_read_timeout_seconds" {
  description = "HEADER_READ_TIMEOUT_SECONDS of both services: from a new connection, or the first byte of a request on a kept-alive one, to the end of the request head; past it the connection is closed."
  type        = number
  default     = 10

  validation {
    condition     = var.header_read_timeout_seconds > 0 && var.header_read_timeout_seconds <= 60
    error_message = "header_read_timeout_seconds must be in (0, 60]."
  }
}

variable "body_read_timeout_seconds" {
  description = "BODY_READ_TIMEOUT_SECONDS of both services: a request body must arrive within this many seconds of its first read, else 408 and the connection is closed. Must stay below trace-writer's 60 s request timeout."
  type        = number
  default     = 30

  validation {
    condition     = var.body_read_timeout_seconds > 0 && var.body_read_timeout_seconds < 60
    error_message = "body_read_timeout_seconds must be in (0, 60)."
  }
}

variable "idle_timeout_seconds" {
  description = "IDLE_TIMEOUT_SECONDS of both services: how long a kept-alive connection waits for its next request, and a response for the client to take more of it. At least header_read_timeout_seconds."
  type        = number
  default     = 60

  validation {
    condition     = var.idle_timeout_seconds > 0 && var.idle_timeout_seconds <= 3600
    error_message = "idle_timeout_seconds must be in (0, 3600]."
  }
}

variable "rust_log" {
  description = "RUST_LOG of both services (tracing-subscriber filter)."
  type        = string
  default     = "info"
}

variable "trace_api_public" {
  description = "Let allUsers invoke trace-api, as the original API was public. The frontend can then poll without credentials, but anyone who learns a message_id or a LINE user ID can read that trace. Set false to require IAM (roles/run.invoker) on every call, e.g. from a backend or an API gateway."
  type        = bool
  default     = true
}

variable "cors_allowed_origins" {
  description = "CORS_ALLOWED_ORIGINS of trace-api: comma-separated origins, or * (the original's behaviour)."
  type        = string
  default     = "*"
}

variable "api_auth" {
  description = "API_AUTH of trace-api: none, token (a bearer token from Secret Manager, API_TOKEN) or line (LINE ID tokens checked against LINE_CHANNEL_ID)."
  type        = string
  default     = "none"

  validation {
    condition     = contains(["none", "token", "line"], var.api_auth)
    error_message = "api_auth must be none, token or line."
  }
}

variable "api_token_secret_id" {
  description = "Secret Manager secret holding API_TOKEN; created only when api_auth = \"token\". Its value is added with gcloud, never through Terraform."
  type        = string
  default     = "trace-api-token"
}

variable "line_channel_id" {
  description = "LINE_CHANNEL_ID of trace-api (the LINE Login channel whose ID tokens are accepted when api_auth = \"line\")."
  type        = string
  default     = ""
}

variable "line_jwks_url" {
  description = "LINE_JWKS_URL of trace-api: LINE's key set for ES256 ID tokens (api_auth = \"line\"). Empty turns ES256 off; then line_channel_secret_enabled must be true (HS256 with the channel secret)."
  type        = string
  default     = "https://api.line.me/oauth2/v2.1/certs"

  validation {
    condition     = var.line_jwks_url == "" || startswith(var.line_jwks_url, "https://")
    error_message = "line_jwks_url must be an https:// URL, or empty."
  }
}

variable "line_channel_secret_enabled" {
  description = "Create a Secret Manager secret for LINE_CHANNEL_SECRET and pass it to trace-api (optional; its value is added with gcloud)."
  type        = bool
  default     = false
}

variable "line_channel_secret_id" {
  description = "Secret Manager secret holding LINE_CHANNEL_SECRET, when line_channel_secret_enabled."
  type        = string
  default     = "trace-api-line-channel-secret"
}

variable "deletion_protection" {
  description = "Cloud Run deletion protection of both services (they are stateless, so it is off by default)."
  type        = bool
  default     = false
}

# ---------------------------------------------------------------------------------------
# Images and builds
# ---------------------------------------------------------------------------------------

variable "artifact_repository" {
  description = "Artifact Registry Docker repository the images are pushed to. Cloud Build's _REPOSITORY substitution must match it."
  type        = string
  default     = "job-trace"
}

variable "build_service_account_id" {
  description = "Account ID of the service account Cloud Build runs as (push to Artifact Registry, deploy both services)."
  type        = string
  default     = "job-trace-build"
}
