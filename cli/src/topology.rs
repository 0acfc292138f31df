//! The Pub/Sub resources of job trace, as `terraform/pubsub.tf` declares them with its
//! default variables. `jobtrace provision` creates them on the emulator; a test in
//! `tests/tests/terraform_pubsub.rs` holds this module and the Terraform to each other.

/// The topic the API publishes scrape jobs to.
pub const JOBS_TOPIC: &str = "scrape-jobs";
/// The topic workers publish status events to (ordering key = `message_id`).
pub const EVENTS_TOPIC: &str = "job-trace-events";
/// The topic trace-writer publishes completion notifications to (`COMPLETIONS_TOPIC`).
pub const COMPLETIONS_TOPIC: &str = "job-trace-completions";
/// The pull subscription `jobtrace completions` reads by default (local runs only;
/// Terraform leaves subscriptions on the completions topic to their consumers).
pub const COMPLETIONS_SUBSCRIPTION: &str = "jobtrace-completions";
/// Where a push ends after [`MAX_DELIVERY_ATTEMPTS`] failures.
pub const DEAD_LETTER_TOPIC: &str = "job-trace-dead-letter";
/// A pull subscription that keeps dead letters for inspection.
pub const DEAD_LETTER_HOLD: &str = "job-trace-dead-letter-hold";
/// Terraform's `max_delivery_attempts` default.
pub const MAX_DELIVERY_ATTEMPTS: i32 = 10;
/// Terraform's `ack_deadline_seconds` default (above trace-writer's database timeout).
pub const ACK_DEADLINE_SECONDS: i32 = 30;
/// Both subscriptions push to trace-writer's root path.
pub const PUSH_PATH: &str = "/";

/// A push subscription into trace-writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushSubscription {
    pub name: &'static str,
    pub topic: &'static str,
    pub ordering: bool,
}

/// Job messages, then status events (ordered per job).
pub const PUSH_SUBSCRIPTIONS: [PushSubscription; 2] = [
    PushSubscription {
        name: "trace-writer-scrape-jobs",
        topic: JOBS_TOPIC,
        ordering: false,
    },
    PushSubscription {
        name: "trace-writer-job-trace-events",
        topic: EVENTS_TOPIC,
        ordering: true,
    },
];

/// Every topic, in creation order.
pub const TOPICS: [&str; 4] = [
    JOBS_TOPIC,
    EVENTS_TOPIC,
    COMPLETIONS_TOPIC,
    DEAD_LETTER_TOPIC,
];
