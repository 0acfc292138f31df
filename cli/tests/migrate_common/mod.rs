//! What the `migrate` tests share: the database holding the original's documents, the
//! built binary run over it, and readers of what it prints.

use std::process::Output;
use std::time::Duration;

use bson::{doc, Document};
use futures::TryStreamExt;
use job_trace::config::DatabaseConfig;
use job_trace::ids::MessageId;
use job_trace::model::JobStatus;
use job_trace::TraceStore;
use job_trace_tests::legacy::{self, LegacyJob};
use job_trace_tests::{unique_name, Database};
use mongodb::Collection;
use tokio::process::Command;

pub const BINARY: &str = env!("CARGO_BIN_EXE_jobtrace");
pub const DAY_MILLIS: i64 = 24 * 60 * 60 * 1000;

pub struct Migration {
    pub config: DatabaseConfig,
    pub traces: Collection<Document>,
    pub store: TraceStore,
}

impl Migration {
    pub async fn new(prefix: &str) -> Migration {
        let config = Database::shared().config(&unique_name(prefix));
        Migration {
            traces: legacy::collection(&config).await,
            store: TraceStore::connect(&config).await.expect("store"),
            config,
        }
    }

    /// `jobtrace migrate ARGS` with the database from the environment, as in production.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(BINARY);
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("MONGO_URI", &self.config.mongo_uri)
            .env("MONGO_DATABASE", &self.config.mongo_database)
            .arg("migrate")
            .args(args)
            .kill_on_drop(true);
        command
    }

    pub async fn run(&self, args: &[&str]) -> Output {
        finish(self.command(args), args).await
    }

    /// Runs and expects success; returns stdout.
    pub async fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args).await;
        assert!(
            output.status.success(),
            "migrate {args:?}: {:?}\nstdout: {}\nstderr: {}",
            output.status,
            text(&output.stdout),
            text(&output.stderr)
        );
        text(&output.stdout)
    }

    /// Every document, in `_id` order.
    pub async fn snapshot(&self) -> Vec<Document> {
        self.traces
            .find(doc! {})
            .sort(doc! { "_id": 1 })
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap()
    }

    pub async fn raw(&self, message_id: &str) -> Document {
        self.traces
            .find_one(doc! { "message_id": message_id })
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("no document for {message_id}"))
    }
}

pub async fn finish(mut command: Command, args: &[&str]) -> Output {
    tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .unwrap_or_else(|_| panic!("migrate {args:?} did not finish in 120 s"))
        .expect("run jobtrace")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The number on the summary line `name: N`.
pub fn count(stdout: &str, name: &str) -> u64 {
    let prefix = format!("{name}: ");
    stdout
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {name:?} line in:\n{stdout}"))
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{name:?} is not a number in:\n{stdout}"))
}

/// A real instant of the test's jobs: 2024-03-01T00:00:00Z plus `seconds`.
pub fn real(seconds: i64) -> bson::DateTime {
    bson::DateTime::from_millis(1_709_251_200_000 + seconds * 1000)
}

pub fn mid(raw: &str) -> MessageId {
    MessageId::parse(raw).unwrap()
}

/// One job of `user` per status, created a minute apart; returns (status, message_id).
pub async fn one_job_per_status(m: &Migration, user: &str) -> Vec<(JobStatus, String)> {
    let mut jobs = Vec::new();
    for (n, status) in JobStatus::ALL.into_iter().enumerate() {
        let job = LegacyJob::scrape(&format!("{user}-{status}"), user);
        legacy::job_at(&m.traces, &job, status, real(60 * n as i64)).await;
        jobs.push((status, job.message_id));
    }
    jobs
}

/// `count` queued jobs of the original, created a second apart.
pub async fn queued_jobs(m: &Migration, user: &str, count: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for n in 0..count {
        let job = LegacyJob::scrape(&format!("{user}-{n}"), user);
        legacy::job_at(&m.traces, &job, JobStatus::Queued, real(n as i64)).await;
        ids.push(job.message_id);
    }
    ids
}
