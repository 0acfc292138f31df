//! The publisher of completion notifications ([`job_trace::completions`]): one per
//! process, built on first use and kept.

use std::time::Duration;

use google_cloud_auth::credentials::anonymous;
use google_cloud_pubsub::client::Publisher;
use google_cloud_pubsub::model::Message;
use job_trace::completions::Notification;
use job_trace::model::{PendingCompletion, TraceDocument};
use tokio::sync::OnceCell;

use crate::config::CompletionsTarget;

/// How long one publish may take. Well below the push subscriptions' ack deadline (30 s),
/// so that a push whose publish hangs is answered 503 before Pub/Sub gives up on it and
/// redelivers it anyway.
pub const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("cannot create a publisher for {topic}: {reason}")]
    Publisher { topic: String, reason: String },
    #[error("publishing {dedupe_key} to {topic} failed: {reason}")]
    Publish {
        topic: String,
        dedupe_key: String,
        reason: String,
    },
}

pub struct Completions {
    target: CompletionsTarget,
    publisher: OnceCell<Publisher>,
}

impl Completions {
    pub fn new(target: CompletionsTarget) -> Self {
        Completions {
            target,
            publisher: OnceCell::new(),
        }
    }

    pub fn topic(&self) -> &str {
        &self.target.topic
    }

    /// The publisher, built on first use: building it needs the runtime, and a failed
    /// build (no credentials yet) is tried again by the next push instead of stopping
    /// the process.
    async fn publisher(&self) -> Result<&Publisher, PublishError> {
        self.publisher
            .get_or_try_init(|| async {
                // Every publish is awaited before its push is answered, so batching would
                // only delay the answer.
                let builder = Publisher::builder(&self.target.topic)
                    .set_delay_threshold(Duration::from_millis(1));
                let builder = match &self.target.emulator_host {
                    Some(host) => builder
                        .with_endpoint(format!("http://{host}"))
                        .with_credentials(anonymous::Builder::new().build()),
                    None => builder,
                };
                builder.build().await.map_err(|e| PublishError::Publisher {
                    topic: self.target.topic.clone(),
                    reason: e.to_string(),
                })
            })
            .await
    }

    /// Publishes the notifications `owed` for `trace`, all at once, each with the job's
    /// `message_id` as ordering key, and waits for every result. Returns the dedupe keys
    /// that were published, and the first failure if any was not: the caller removes the
    /// former from the trace and leaves the rest for the push's redelivery.
    pub async fn publish(
        &self,
        trace: &TraceDocument,
        owed: &[&PendingCompletion],
    ) -> (Vec<String>, Option<PublishError>) {
        let publisher = match self.publisher().await {
            Ok(publisher) => publisher,
            Err(error) => return (Vec::new(), Some(error)),
        };
        let sent: Vec<_> = owed
            .iter()
            .map(|owed| {
                let notification = Notification::of(trace, owed);
                let message = Message::new()
                    .set_data(notification.data)
                    .set_attributes(notification.attributes)
                    .set_ordering_key(notification.ordering_key);
                (
                    notification.dedupe_key,
                    tokio::time::timeout(PUBLISH_TIMEOUT, publisher.publish(message)),
                )
            })
            .collect();
        let mut published = Vec::new();
        let mut failure = None;
        for (dedupe_key, result) in sent {
            let reason = match result.await {
                Ok(Ok(_)) => {
                    published.push(dedupe_key);
                    continue;
                }
                Ok(Err(error)) => error.to_string(),
                Err(_) => format!("no answer within {PUBLISH_TIMEOUT:?}"),
            };
            failure.get_or_insert(PublishError::Publish {
                topic: self.target.topic.clone(),
                dedupe_key,
                reason,
            });
        }
        if failure.is_some() {
            // A failed publish pauses its ordering key in the client; the redelivered
            // push publishes on it again, in order, since nothing after it was sent.
            publisher.resume_publish(trace.message_id.clone());
        }
        (published, failure)
    }
}
