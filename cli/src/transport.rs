//! Where `jobtrace` sends messages: the Pub/Sub emulator, real Pub/Sub, or straight to
//! trace-writer as push bodies when there is no Pub/Sub at all.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::Utc;
use google_cloud_auth::credentials::anonymous;
use google_cloud_gax::error::rpc::Code;
use google_cloud_pubsub::client::{Publisher, SubscriptionAdmin, TopicAdmin};
use google_cloud_pubsub::model::{DeadLetterPolicy, ExpirationPolicy, Message, PushConfig};
use job_trace::push::encode::{PushMessage, EVENT_ATTRIBUTE};
use serde_json::Value;

use crate::topology::{self, PushSubscription};
use crate::Failure;

/// The emulator and trace-writer of `make run`.
pub const LOCAL_EMULATOR: &str = "127.0.0.1:8085";
pub const LOCAL_WRITER: &str = "http://127.0.0.1:8081";
/// The emulator's project when none is named (`make run` uses it too).
pub const EMULATOR_PROJECT: &str = "demo";
/// How long a publish may take before we say what is wrong instead of hanging.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(20);

/// Where messages go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The Pub/Sub emulator at `host:port`.
    Emulator { host: String, project: String },
    /// Real Pub/Sub in `project`, with Application Default Credentials.
    Cloud { project: String },
    /// No Pub/Sub: push bodies posted to trace-writer's base URL.
    Direct { writer: String },
}

/// What the command line and environment say about the target.
#[derive(Debug, Clone, Default)]
pub struct TargetChoice {
    pub writer: Option<String>,
    pub emulator: Option<String>,
    pub project: Option<String>,
}

impl TargetChoice {
    /// The first that applies: an explicit trace-writer, an emulator, a project; with none
    /// of them, the local stack of `make run` (its emulator, else its trace-writer).
    pub fn resolve(self) -> Result<Target, Failure> {
        let non_empty = |value: Option<String>| value.filter(|v| !v.trim().is_empty());
        if let Some(writer) = non_empty(self.writer) {
            return Ok(Target::Direct {
                writer: writer.trim_end_matches('/').to_owned(),
            });
        }
        let project = non_empty(self.project);
        if let Some(host) = non_empty(self.emulator) {
            return Ok(Target::Emulator {
                host,
                project: project.unwrap_or_else(|| EMULATOR_PROJECT.into()),
            });
        }
        if let Some(project) = project {
            return Ok(Target::Cloud { project });
        }
        if accepts(LOCAL_EMULATOR) {
            return Ok(Target::Emulator {
                host: LOCAL_EMULATOR.into(),
                project: EMULATOR_PROJECT.into(),
            });
        }
        if accepts(LOCAL_WRITER.trim_start_matches("http://")) {
            return Ok(Target::Direct {
                writer: LOCAL_WRITER.into(),
            });
        }
        Err(Failure::new(format!(
            "nowhere to send messages: no Pub/Sub emulator on {LOCAL_EMULATOR} and no trace-writer on \
             {LOCAL_WRITER}. Start the local stack with `make run`, or set PUBSUB_EMULATOR_HOST \
             (--emulator), GOOGLE_CLOUD_PROJECT (--project) for real Pub/Sub, or JOBTRACE_WRITER \
             (--writer) to post to a trace-writer directly."
        )))
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Emulator { host, project } => {
                write!(f, "the Pub/Sub emulator at {host} (project {project})")
            }
            Target::Cloud { project } => write!(f, "Pub/Sub in project {project}"),
            Target::Direct { writer } => write!(f, "trace-writer at {writer} (no Pub/Sub)"),
        }
    }
}

/// Whether something listens on `host:port` (a quick check that turns a long client retry
/// into a clear message).
pub fn accepts(address: &str) -> bool {
    let Ok(addresses) = address.to_socket_addrs() else {
        return false;
    };
    addresses
        .collect::<Vec<SocketAddr>>()
        .iter()
        .any(|addr| TcpStream::connect_timeout(addr, Duration::from_millis(500)).is_ok())
}

/// Publishes job messages and status events to a [`Target`].
pub enum Sink {
    PubSub {
        jobs: Publisher,
        events: Publisher,
        target: Target,
    },
    Direct {
        http: reqwest::Client,
        writer: String,
    },
}

impl Sink {
    pub async fn connect(target: &Target) -> Result<Sink, Failure> {
        match target {
            Target::Direct { writer } => Ok(Sink::Direct {
                http: reqwest::Client::builder()
                    .timeout(PUBLISH_TIMEOUT)
                    .build()
                    .map_err(Failure::of)?,
                writer: writer.clone(),
            }),
            Target::Emulator { host, .. } if !accepts(host) => Err(Failure::new(format!(
                "the Pub/Sub emulator at {host} does not answer; is `make run` (or `gcloud beta \
                 emulators pubsub start --host-port={host}`) running?"
            ))),
            _ => Ok(Sink::PubSub {
                jobs: publisher(target, topology::JOBS_TOPIC).await?,
                events: publisher(target, topology::EVENTS_TOPIC).await?,
                target: target.clone(),
            }),
        }
    }

    /// Publishes a job message; returns its `message_id` (Pub/Sub's `messageId`).
    pub async fn publish_job(&self, payload: &Value) -> Result<String, Failure> {
        match self {
            Sink::PubSub { jobs, target, .. } => {
                let message = Message::new().set_data(payload.to_string());
                publish(jobs, message, target, topology::JOBS_TOPIC).await
            }
            Sink::Direct { http, writer } => {
                let message_id = local_message_id();
                let subscription = topology::PUSH_SUBSCRIPTIONS[0].name;
                post(
                    http,
                    writer,
                    push_body(&message_id, payload, None, subscription),
                )
                .await?;
                Ok(message_id)
            }
        }
    }

    /// Publishes a status event of `message_id`, ordered after the job's earlier events.
    pub async fn publish_event(&self, message_id: &str, payload: &Value) -> Result<(), Failure> {
        match self {
            Sink::PubSub { events, target, .. } => {
                let message = Message::new()
                    .set_data(payload.to_string())
                    .set_attributes([EVENT_ATTRIBUTE])
                    .set_ordering_key(message_id);
                publish(events, message, target, topology::EVENTS_TOPIC)
                    .await
                    .map(drop)
            }
            Sink::Direct { http, writer } => {
                let subscription = topology::PUSH_SUBSCRIPTIONS[1].name;
                let body = push_body(&local_message_id(), payload, Some(message_id), subscription);
                post(http, writer, body).await
            }
        }
    }
}

async fn publisher(target: &Target, topic: &str) -> Result<Publisher, Failure> {
    let (project, emulator) = match target {
        Target::Emulator { host, project } => (project, Some(host)),
        Target::Cloud { project } => (project, None),
        Target::Direct { .. } => unreachable!("a direct target has no publisher"),
    };
    let builder = Publisher::builder(format!("projects/{project}/topics/{topic}"))
        .set_delay_threshold(Duration::from_millis(1));
    let builder = match emulator {
        Some(host) => builder
            .with_endpoint(format!("http://{host}"))
            .with_credentials(anonymous::Builder::new().build()),
        None => builder,
    };
    builder.build().await.map_err(|e| {
        Failure::new(format!(
            "cannot create a Pub/Sub publisher for {topic} ({target}): {e}"
        ))
    })
}

async fn publish(
    publisher: &Publisher,
    message: Message,
    target: &Target,
    topic: &str,
) -> Result<String, Failure> {
    match tokio::time::timeout(PUBLISH_TIMEOUT, publisher.publish(message)).await {
        Ok(Ok(message_id)) => Ok(message_id),
        Ok(Err(e)) => Err(Failure::new(format!(
            "publishing to {topic} on {target} failed: {e} (does the topic exist? `jobtrace provision` \
             creates it on the emulator, Terraform in a project)"
        ))),
        Err(_) => Err(Failure::new(format!(
            "publishing to {topic} on {target} took over {} s; is it reachable?",
            PUBLISH_TIMEOUT.as_secs()
        ))),
    }
}

/// A Pub/Sub-like id for a message that never went through Pub/Sub: decimal, unique
/// enough for one machine (microseconds since the epoch).
fn local_message_id() -> String {
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or_default();
    micros.to_string()
}

/// The wrapped body Pub/Sub pushes: a job message, or with `event_of` a status event of
/// that job.
fn push_body(
    message_id: &str,
    payload: &Value,
    event_of: Option<&str>,
    subscription: &str,
) -> Value {
    let mut message = PushMessage::new(message_id, payload.to_string(), Utc::now());
    if let Some(job) = event_of {
        message = message.status_event(job);
    }
    message.wrapped(&format!("projects/local/subscriptions/{subscription}"))
}

async fn post(http: &reqwest::Client, writer: &str, body: Value) -> Result<(), Failure> {
    let url = format!("{writer}{}", topology::PUSH_PATH);
    let response = http
        .post(&url)
        .json(&body)
        .send()
        .await
        .map_err(|e| Failure::new(format!("cannot reach trace-writer at {url}: {e}")))?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let text = response.text().await.unwrap_or_default();
    Err(Failure::new(format!(
        "trace-writer at {url} answered {status}: {}",
        text.trim()
    )))
}

/// Creates the topics and subscriptions of [`topology`] on the emulator at `host`, each
/// push subscription pointing at `writer` (trace-writer's base URL). What exists already
/// is kept, with its push endpoint moved to `writer`, so this can run at every start.
pub async fn provision(host: &str, project: &str, writer: &str) -> Result<Vec<String>, Failure> {
    if !accepts(host) {
        return Err(Failure::new(format!(
            "the Pub/Sub emulator at {host} does not answer; start it first (`make run` does)"
        )));
    }
    let topics = topic_admin(host).await?;
    let subscriptions = SubscriptionAdmin::builder()
        .with_endpoint(format!("http://{host}"))
        .with_credentials(anonymous::Builder::new().build())
        .build()
        .await
        .map_err(Failure::of)?;
    let topic_path = |name: &str| format!("projects/{project}/topics/{name}");
    let subscription_path = |name: &str| format!("projects/{project}/subscriptions/{name}");
    let mut done = Vec::new();

    for name in topology::TOPICS {
        let created = topics
            .create_topic()
            .set_name(topic_path(name))
            .send()
            .await;
        done.push(outcome("topic", name, created.map(drop))?);
    }

    let hold = subscriptions
        .create_subscription()
        .set_name(subscription_path(topology::DEAD_LETTER_HOLD))
        .set_topic(topic_path(topology::DEAD_LETTER_TOPIC))
        .set_ack_deadline_seconds(60)
        .set_expiration_policy(ExpirationPolicy::new())
        .send()
        .await;
    done.push(outcome(
        "subscription",
        topology::DEAD_LETTER_HOLD,
        hold.map(drop),
    )?);

    // So that `jobtrace completions` shows every notification since the start, not only
    // those after it first ran.
    let completions = subscriptions
        .create_subscription()
        .set_name(subscription_path(topology::COMPLETIONS_SUBSCRIPTION))
        .set_topic(topic_path(topology::COMPLETIONS_TOPIC))
        .set_ack_deadline_seconds(30)
        .set_enable_message_ordering(true)
        .set_expiration_policy(ExpirationPolicy::new())
        .send()
        .await;
    done.push(outcome(
        "subscription",
        topology::COMPLETIONS_SUBSCRIPTION,
        completions.map(drop),
    )?);

    let push_endpoint = format!("{}{}", writer.trim_end_matches('/'), topology::PUSH_PATH);
    for PushSubscription {
        name,
        topic,
        ordering,
    } in topology::PUSH_SUBSCRIPTIONS
    {
        // No retry policy: the emulator stops redelivering a message after its third
        // failed push when one is set, which would drop messages during a local database
        // restart. Real Pub/Sub gets Terraform's exponential backoff.
        let created = subscriptions
            .create_subscription()
            .set_name(subscription_path(name))
            .set_topic(topic_path(topic))
            .set_push_config(PushConfig::new().set_push_endpoint(&push_endpoint))
            .set_ack_deadline_seconds(topology::ACK_DEADLINE_SECONDS)
            .set_enable_message_ordering(ordering)
            .set_dead_letter_policy(
                DeadLetterPolicy::new()
                    .set_dead_letter_topic(topic_path(topology::DEAD_LETTER_TOPIC))
                    .set_max_delivery_attempts(topology::MAX_DELIVERY_ATTEMPTS),
            )
            .set_expiration_policy(ExpirationPolicy::new())
            .send()
            .await;
        if already_exists(&created) {
            subscriptions
                .modify_push_config()
                .set_subscription(subscription_path(name))
                .set_push_config(PushConfig::new().set_push_endpoint(&push_endpoint))
                .send()
                .await
                .map_err(|e| {
                    Failure::new(format!("cannot point {name} at {push_endpoint}: {e}"))
                })?;
        }
        done.push(format!(
            "{} -> {push_endpoint}",
            outcome("subscription", name, created.map(drop))?
        ));
    }
    Ok(done)
}

/// The emulator numbers messages 1, 2, 3... from every start, while `make run` keeps the
/// database: a new job would take the `message_id` of an old trace. Publishing to a topic
/// nobody reads moves the emulator's counter past `highest`, the largest numeric
/// `message_id` stored. Returns how many messages that took.
pub async fn advance_message_ids(host: &str, project: &str, highest: u64) -> Result<u64, Failure> {
    const SCRATCH_TOPIC: &str = "jobtrace-message-id-advance";
    const BATCH: u32 = 1000;
    let topic = format!("projects/{project}/topics/{SCRATCH_TOPIC}");
    let created = topic_admin(host)
        .await?
        .create_topic()
        .set_name(&topic)
        .send()
        .await;
    outcome("topic", SCRATCH_TOPIC, created.map(drop))?;
    let publisher = Publisher::builder(&topic)
        .with_endpoint(format!("http://{host}"))
        .with_credentials(anonymous::Builder::new().build())
        .set_message_count_threshold(BATCH)
        .set_delay_threshold(Duration::from_millis(5))
        .build()
        .await
        .map_err(Failure::of)?;
    let mut published = 0u64;
    loop {
        let batch: Vec<_> = (0..BATCH)
            .map(|_| publisher.publish(Message::new().set_data("advance")))
            .collect();
        let mut last = 0u64;
        for future in batch {
            let id = future
                .await
                .map_err(|e| Failure::new(format!("advancing the emulator's message ids: {e}")))?;
            last = last.max(id.parse().unwrap_or(0));
        }
        published += u64::from(BATCH);
        // Ids that are not numbers mean an emulator that does not count: nothing to do.
        if last == 0 || last > highest {
            return Ok(published);
        }
    }
}

async fn topic_admin(host: &str) -> Result<TopicAdmin, Failure> {
    TopicAdmin::builder()
        .with_endpoint(format!("http://{host}"))
        .with_credentials(anonymous::Builder::new().build())
        .build()
        .await
        .map_err(Failure::of)
}

pub fn already_exists<T>(result: &Result<T, google_cloud_pubsub::Error>) -> bool {
    matches!(result, Err(e) if e.status().is_some_and(|s| s.code == Code::AlreadyExists))
}

fn outcome(
    kind: &str,
    name: &str,
    result: Result<(), google_cloud_pubsub::Error>,
) -> Result<String, Failure> {
    if already_exists(&result) {
        return Ok(format!("{kind} {name} (existed)"));
    }
    result
        .map(|()| format!("{kind} {name} (created)"))
        .map_err(|e| Failure::new(format!("cannot create {kind} {name}: {e}")))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn choice(writer: Option<&str>, emulator: Option<&str>, project: Option<&str>) -> TargetChoice {
        TargetChoice {
            writer: writer.map(str::to_owned),
            emulator: emulator.map(str::to_owned),
            project: project.map(str::to_owned),
        }
    }

    #[test]
    fn an_explicit_writer_wins_then_the_emulator_then_the_project() {
        assert_eq!(
            choice(Some("http://w:1/"), Some("e:2"), Some("p")).resolve(),
            Ok(Target::Direct {
                writer: "http://w:1".into()
            })
        );
        assert_eq!(
            choice(None, Some("e:2"), Some("p")).resolve(),
            Ok(Target::Emulator {
                host: "e:2".into(),
                project: "p".into()
            })
        );
        assert_eq!(
            choice(None, Some("e:2"), None).resolve(),
            Ok(Target::Emulator {
                host: "e:2".into(),
                project: EMULATOR_PROJECT.into()
            })
        );
        assert_eq!(
            choice(Some(" "), None, Some("p")).resolve(),
            Ok(Target::Cloud {
                project: "p".into()
            })
        );
    }

    #[test]
    fn a_direct_push_body_is_what_trace_writer_decodes() {
        let event = json!({"message_id": "7", "status": "success", "attempt": 1});
        let body = push_body("99", &event, Some("7"), "s");
        let bytes = serde_json::to_vec(&body).unwrap();
        let push = job_trace::push::decode_push(&Default::default(), &bytes, bson::DateTime::now())
            .expect("decodes");
        let job_trace::push::Outcome::Record(change) = push.outcome else {
            panic!("not recorded: {push:?}");
        };
        assert_eq!(change.message_id.as_str(), "7");
        assert_eq!(change.status, job_trace::model::JobStatus::Success);
        assert_eq!(push.meta.pubsub_message_id.as_deref(), Some("99"));
    }
}
