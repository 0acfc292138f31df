//! `jobtrace completions`: the completion notifications trace-writer publishes, printed
//! as they arrive from a pull subscription on the completions topic.

use google_cloud_auth::credentials::anonymous;
use google_cloud_pubsub::client::{Subscriber, SubscriptionAdmin};
use google_cloud_pubsub::model::Message;
use job_trace::completions::{
    ATTRIBUTE_ATTEMPT, ATTRIBUTE_DEDUPE_KEY, ATTRIBUTE_MESSAGE_ID, ATTRIBUTE_STATUS,
};
use serde_json::{json, Value};

use crate::topology::COMPLETIONS_TOPIC;
use crate::transport::{accepts, already_exists, Target};
use crate::Failure;

/// One notification as received.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    pub message_id: String,
    pub status: String,
    pub attempt: String,
    pub dedupe_key: String,
    /// The trace in the seed's JSON shape, as it stood when published.
    pub trace: Value,
}

impl Received {
    pub fn of(message: &Message) -> Received {
        let attribute = |name: &str| message.attributes.get(name).cloned().unwrap_or_default();
        Received {
            message_id: attribute(ATTRIBUTE_MESSAGE_ID),
            status: attribute(ATTRIBUTE_STATUS),
            attempt: attribute(ATTRIBUTE_ATTEMPT),
            dedupe_key: attribute(ATTRIBUTE_DEDUPE_KEY),
            trace: serde_json::from_slice(&message.data).unwrap_or(Value::Null),
        }
    }

    /// The line `jobtrace completions` prints: one JSON object.
    pub fn line(&self) -> String {
        json!({
            "message_id": self.message_id,
            "status": self.status,
            "attempt": self.attempt,
            "dedupe_key": self.dedupe_key,
            "trace": self.trace,
        })
        .to_string()
    }
}

/// The project and emulator host of `target`.
fn endpoint(target: &Target) -> Result<(&str, Option<&str>), Failure> {
    match target {
        Target::Emulator { host, project } => {
            if !accepts(host) {
                return Err(Failure::new(format!(
                    "the Pub/Sub emulator at {host} does not answer; is `make run` running?"
                )));
            }
            Ok((project, Some(host)))
        }
        Target::Cloud { project } => Ok((project, None)),
        Target::Direct { writer } => Err(Failure::new(format!(
            "completion notifications go through Pub/Sub; {writer} is a trace-writer without \
             it. Set PUBSUB_EMULATOR_HOST (--emulator) or GOOGLE_CLOUD_PROJECT (--project)."
        ))),
    }
}

/// Creates the pull subscription `name` on the completions topic (ordered per job) unless
/// it exists; returns its path.
pub async fn ensure_subscription(target: &Target, name: &str) -> Result<String, Failure> {
    let (project, emulator) = endpoint(target)?;
    let builder = SubscriptionAdmin::builder();
    let builder = match emulator {
        Some(host) => builder
            .with_endpoint(format!("http://{host}"))
            .with_credentials(anonymous::Builder::new().build()),
        None => builder,
    };
    let admin = builder.build().await.map_err(Failure::of)?;
    let path = format!("projects/{project}/subscriptions/{name}");
    let created = admin
        .create_subscription()
        .set_name(&path)
        .set_topic(format!("projects/{project}/topics/{COMPLETIONS_TOPIC}"))
        .set_ack_deadline_seconds(30)
        .set_enable_message_ordering(true)
        .send()
        .await;
    if !already_exists(&created) {
        created.map_err(|e| {
            Failure::new(format!(
                "cannot create the subscription {name} on {COMPLETIONS_TOPIC}: {e} (does the \
                 topic exist? `make run` and Terraform create it)"
            ))
        })?;
    }
    Ok(path)
}

/// Receives from the subscription `path` until `on_notification` says stop (returns
/// `false`) or the stream ends, acknowledging each notification once handled.
pub async fn follow(
    target: &Target,
    path: &str,
    mut on_notification: impl FnMut(Received) -> bool,
) -> Result<(), Failure> {
    let (_, emulator) = endpoint(target)?;
    let builder = Subscriber::builder();
    let builder = match emulator {
        Some(host) => builder
            .with_endpoint(format!("http://{host}"))
            .with_credentials(anonymous::Builder::new().build()),
        None => builder,
    };
    let subscriber = builder.build().await.map_err(Failure::of)?;
    let mut stream = subscriber.subscribe(path).build();
    while let Some(next) = stream.next().await {
        let (message, handler) =
            next.map_err(|e| Failure::new(format!("receiving from {path}: {e}")))?;
        let more = on_notification(Received::of(&message));
        handler.ack();
        if !more {
            break;
        }
    }
    Ok(())
}
