//! The Google Pub/Sub emulator, started by the tests on a free loopback port, and clients
//! of the `google-cloud-pubsub` crate pointed at it.
//!
//! The emulator is `gcloud beta emulators pubsub start`: a Python wrapper that starts a
//! Java server. It runs in a process group of its own under a small shell that kills the
//! whole group as soon as its standard input closes, which happens when the test process
//! ends however it ends; so no emulator outlives its tests.
//!
//! Without `gcloud`, [`emulator`] says so loudly and returns `None` (the test returns
//! early); under `CI=true` it panics instead, so CI never passes by skipping.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use google_cloud_auth::credentials::anonymous;
use google_cloud_pubsub::client::{Publisher, SubscriptionAdmin, TopicAdmin};
use google_cloud_pubsub::model::{Message, PushConfig, RetryPolicy};
use job_trace::model::render_time;
use job_trace::rules::{Change, JobDetails};
use serde_json::json;

use crate::{free_port, project_root, wait_for_port};

/// The emulator's project.
pub const PROJECT: &str = "demo";

/// A running emulator.
pub struct Emulator {
    pub port: u16,
    log: PathBuf,
    data_dir: PathBuf,
    /// Closing this ends the emulator (see the module docs).
    lifeline: Mutex<Option<ChildStdin>>,
    shell: Mutex<Option<Child>>,
}

/// Whether `gcloud` with the Pub/Sub emulator component is installed.
pub fn gcloud_available() -> bool {
    Command::new("gcloud")
        .arg("--version")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|output| {
            output.status.success()
                && String::from_utf8_lossy(&output.stdout).contains("pubsub-emulator")
        })
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|value| value == "true" || value == "1")
}

/// The emulator shared by the tests of this process, started on first use. `None` (with
/// a loud message) when `gcloud` is missing outside CI; a panic under `CI=true`.
pub fn emulator(test: &str) -> Option<&'static Emulator> {
    static SHARED: OnceLock<Result<Emulator, String>> = OnceLock::new();
    let shared = SHARED.get_or_init(|| {
        if !gcloud_available() {
            return Err("gcloud with the pubsub-emulator component is not installed".into());
        }
        Emulator::start()
    });
    match shared {
        Ok(emulator) => Some(emulator),
        Err(reason) if in_ci() => {
            panic!("{test}: the Pub/Sub emulator is required under CI=true: {reason}")
        }
        Err(reason) => {
            // Straight to stderr, past the test harness's capture: a skip must be seen.
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "\n!!!!!!!! {test}: NOT RUN: the Pub/Sub emulator is unavailable: {reason}.\n\
                 !!!!!!!! Install the Google Cloud SDK with `gcloud components install \
                 pubsub-emulator` (or the Debian package google-cloud-cli-pubsub-emulator).\n"
            );
            None
        }
    }
}

impl Emulator {
    /// Starts an emulator of its own and waits until it accepts connections.
    pub fn start() -> Result<Emulator, String> {
        let base = project_root().join("target/harness");
        std::fs::create_dir_all(&base).map_err(|e| e.to_string())?;
        remove_stale(&base);
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "pubsub-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let data_dir = base.join(&name);
        std::fs::create_dir_all(&data_dir).map_err(|e| e.to_string())?;
        let log = base.join(format!("{name}.log"));
        let port = free_port();
        // `set -m` gives the emulator a process group of its own; `cat` returns when the
        // test process closes (or loses) the pipe, and the group goes with it.
        let script = r#"set -m
gcloud beta emulators pubsub start --host-port="127.0.0.1:$PORT" --project="$PROJECT" --data-dir="$DATA_DIR" >"$LOG" 2>&1 &
child=$!
cat >/dev/null
kill -TERM -- "-$child" 2>/dev/null
for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 -- "-$child" 2>/dev/null || exit 0; sleep 0.2; done
kill -KILL -- "-$child" 2>/dev/null
exit 0
"#;
        let mut shell = Command::new("bash")
            .arg("-c")
            .arg(script)
            .env("PORT", port.to_string())
            .env("PROJECT", PROJECT)
            .env("DATA_DIR", &data_dir)
            .env("LOG", &log)
            .env("CLOUDSDK_CORE_DISABLE_PROMPTS", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run bash: {e}"))?;
        let lifeline = shell.stdin.take();
        let emulator = Emulator {
            port,
            log,
            data_dir,
            lifeline: Mutex::new(lifeline),
            shell: Mutex::new(Some(shell)),
        };
        let started = Instant::now();
        if !wait_for_port(port, Duration::from_secs(90)) {
            return Err(format!(
                "the emulator did not listen on {port} within 90 s; log:\n{}",
                emulator.log_text()
            ));
        }
        eprintln!(
            "pubsub emulator on 127.0.0.1:{port} after {:.1} s",
            started.elapsed().as_secs_f64()
        );
        Ok(emulator)
    }

    pub fn log_text(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = std::fs::File::open(&self.log) {
            let _ = file.read_to_string(&mut text);
        }
        text
    }

    /// `http://127.0.0.1:PORT`, what the clients are given (they do not read
    /// `PUBSUB_EMULATOR_HOST`).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn topic_path(name: &str) -> String {
        format!("projects/{PROJECT}/topics/{name}")
    }

    pub fn subscription_path(name: &str) -> String {
        format!("projects/{PROJECT}/subscriptions/{name}")
    }

    pub async fn topic_admin(&self) -> TopicAdmin {
        TopicAdmin::builder()
            .with_endpoint(self.endpoint())
            .with_credentials(anonymous::Builder::new().build())
            .build()
            .await
            .expect("topic admin client")
    }

    pub async fn subscription_admin(&self) -> SubscriptionAdmin {
        SubscriptionAdmin::builder()
            .with_endpoint(self.endpoint())
            .with_credentials(anonymous::Builder::new().build())
            .build()
            .await
            .expect("subscription admin client")
    }

    /// Creates the topic `name`; returns its full path.
    pub async fn create_topic(&self, name: &str) -> String {
        let path = Self::topic_path(name);
        self.topic_admin()
            .await
            .create_topic()
            .set_name(&path)
            .send()
            .await
            .unwrap_or_else(|e| panic!("create topic {path}: {e}"));
        path
    }

    /// Creates a subscription `name` on `topic` pushing to `push_endpoint`, or holding
    /// its messages (a pull subscription) while `push_endpoint` is `None`.
    pub async fn create_push_subscription(
        &self,
        name: &str,
        topic: &str,
        push_endpoint: Option<&str>,
        options: PushOptions,
    ) -> String {
        let path = Self::subscription_path(name);
        let mut request = self.subscription_admin().await.create_subscription();
        if let Some((minimum, maximum)) = options.retry_backoff {
            request = request.set_retry_policy(
                RetryPolicy::new()
                    .set_minimum_backoff(
                        google_cloud_wkt::Duration::try_from(minimum).expect("backoff"),
                    )
                    .set_maximum_backoff(
                        google_cloud_wkt::Duration::try_from(maximum).expect("backoff"),
                    ),
            );
        }
        request
            .set_name(&path)
            .set_topic(Self::topic_path(topic))
            .set_push_config(PushConfig::new().set_push_endpoint(push_endpoint.unwrap_or_default()))
            .set_ack_deadline_seconds(options.ack_deadline_seconds)
            .set_enable_message_ordering(options.ordering)
            .send()
            .await
            .unwrap_or_else(|e| panic!("create subscription {path}: {e}"));
        path
    }

    /// Points the subscription `path` at `push_endpoint` (it then delivers its backlog).
    pub async fn set_push_endpoint(&self, path: &str, push_endpoint: &str) {
        self.subscription_admin()
            .await
            .modify_push_config()
            .set_subscription(path)
            .set_push_config(PushConfig::new().set_push_endpoint(push_endpoint))
            .send()
            .await
            .unwrap_or_else(|e| panic!("modify push config of {path}: {e}"));
    }

    /// A batching publisher for the topic `name`.
    pub async fn publisher(&self, name: &str) -> Publisher {
        Publisher::builder(Self::topic_path(name))
            .with_endpoint(self.endpoint())
            .with_credentials(anonymous::Builder::new().build())
            .set_delay_threshold(Duration::from_millis(5))
            .build()
            .await
            .expect("publisher")
    }

    /// Stops the emulator now (it also stops when the test process ends).
    pub fn stop(&self) {
        drop(self.lifeline.lock().unwrap().take());
        if let Some(mut shell) = self.shell.lock().unwrap().take() {
            let _ = shell.wait();
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.data_dir);
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Data directories and logs of emulators whose test process is gone (a shared emulator
/// lives in a static, which is never dropped).
fn remove_stale(base: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("pubsub-")
            .and_then(|rest| rest.split(['-', '.']).next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let path = entry.path();
            let _ = if path.is_dir() {
                std::fs::remove_dir_all(path)
            } else {
                std::fs::remove_file(path)
            };
        }
    }
}

/// How a push subscription delivers.
#[derive(Debug, Clone, Copy)]
pub struct PushOptions {
    pub ordering: bool,
    pub ack_deadline_seconds: i32,
    /// A retry policy's `(minimum, maximum)` backoff. `None` by default, and best left
    /// so: the emulator (0.8.20) redelivers a failed push about every second without a
    /// retry policy, but with one it stops redelivering a message after its third failed
    /// push (seen with 1 s / 5 s), which would lose messages in outage tests.
    pub retry_backoff: Option<(Duration, Duration)>,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions {
            ordering: false,
            ack_deadline_seconds: 10,
            retry_backoff: None,
        }
    }
}

/// A job message's payload, as the API publishes it.
pub fn job_message(job: &JobDetails) -> Message {
    let mut data = json!({
        "timestamp": chrono::Utc::now().to_rfc3339(),
        "line_user_id": job.line_user_id.as_ref().map(|u| u.as_str()),
        "check_only": job.check_only,
    });
    if let Some(url) = &job.url {
        data["url"] = json!(url);
    }
    Message::new().set_data(data.to_string())
}

/// A worker's status event for the job `id`, with `id` as its ordering key when `ordered`.
pub fn event_message(change: &Change, id: &str, ordered: bool) -> Message {
    let mut data = json!({
        "message_id": id,
        "status": change.status.as_str(),
        "attempt": change.key.attempt,
        "occurred_at": render_time(change.at),
    });
    if let Some(progress) = &change.progress {
        data["status"] = json!(job_trace::push::PROGRESS_STATUS);
        data["done"] = json!(progress.done);
        data["total"] = json!(progress.total);
        if let Some(note) = &progress.note {
            data["note"] = json!(note);
        }
    }
    if let Some(error) = &change.error {
        data["error"] = json!(error);
    }
    if let Some(result) = &change.result {
        data["result"] = result.clone().into_relaxed_extjson();
    }
    let message = Message::new()
        .set_data(data.to_string())
        .set_attributes([("trace_event", "status")]);
    if ordered {
        message.set_ordering_key(id)
    } else {
        message
    }
}
