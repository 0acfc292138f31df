//! `jobtrace migrate`: brings the original system's `job_traces` documents up to what this
//! system maintains, so that the rules treat them like its own.
//!
//! A document the original wrote has no `attempt`. Migrating it sets `attempt` and `rank`
//! (the key its status implies for the first attempt), a `history` made of what the
//! document shows, `expire_at`, and a `migrated` marker; with `--legacy-offset` it also
//! takes the original's clock offset (it stored Tokyo time labelled UTC) off its
//! timestamps. Each document is one conditional update that sets the marker with
//! everything else, so a run can stop anywhere and be run again: marked documents are
//! skipped, and no document is shifted twice.

use std::collections::BTreeMap;
use std::process::ExitCode;

use bson::{doc, Bson, Document};
use clap::Args;
use job_trace::config::DatabaseConfig;
use job_trace::model::render_time;
use mongodb::options::ClientOptions;
use mongodb::{Client, Collection};

use crate::Failure;

mod plan;

use plan::describe_offset;
pub use plan::{parse_offset, plan, Migration, Plan};

/// The field that marks a migrated document.
pub const MARKER: &str = "migrated";
/// How many documents a dry run describes one by one.
const EXAMPLES: usize = 5;
/// Exit code of a refused run (as for bad usage).
const EXIT_REFUSED: u8 = 2;

#[derive(Args, Debug)]
pub struct MigrateArgs {
    /// Write the changes; without it, a dry run that only reports what it would do.
    #[arg(long)]
    apply: bool,
    /// Take this much off every timestamp of the migrated documents (the original stored
    /// Tokyo time labelled UTC: 9h). Accepts h, m, s and ms, e.g. 9h, 540m, 32400s.
    #[arg(long, value_name = "DURATION", value_parser = parse_offset)]
    legacy_offset: Option<i64>,
    /// Documents read and written per round trip.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    batch_size: u32,
    /// Stop after migrating this many documents (run again to continue).
    #[arg(long, value_name = "N")]
    limit: Option<u64>,
    /// The connection string [default: MONGO_URI, else mongodb://127.0.0.1:27017].
    #[arg(long, value_name = "URI")]
    mongo_uri: Option<String>,
    /// The database [default: MONGO_DATABASE, else mansion_watch].
    #[arg(long, value_name = "NAME")]
    database: Option<String>,
    /// The collection [default: COLLECTION_JOB_TRACES, else job_traces].
    #[arg(long, value_name = "NAME")]
    collection: Option<String>,
}

/// What a run found and did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    pub scanned: u64,
    /// Migrated (or, in a dry run, would be).
    pub migrated: u64,
    pub already_migrated: u64,
    /// Matched no longer when written: changed by someone else since it was read.
    pub changed_meanwhile: u64,
    pub skipped: BTreeMap<String, u64>,
    /// The first few migrations, described.
    pub examples: Vec<String>,
}

impl Summary {
    pub fn skipped_total(&self) -> u64 {
        self.skipped.values().sum()
    }

    fn progress_line(&self) -> String {
        format!(
            "migrate: scanned {}, migrated {}, already migrated {}, skipped {}",
            self.scanned,
            self.migrated,
            self.already_migrated,
            self.skipped_total()
        )
    }
}

/// Why a run did not start.
#[derive(Debug)]
pub enum Refusal {
    /// This system already wrote documents here, and an offset must not touch them.
    WrittenByThisSystem { count: u64, example: String },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::WrittenByThisSystem { count, example } => write!(
                f,
                "refusing --legacy-offset: {count} document(s) here were written by this system \
                 (they have `attempt` and no `{MARKER}` marker; e.g. message_id {example}). Their \
                 times are UTC already, and a document of the original that trace-writer has \
                 since updated mixes both clocks, which no offset can fix. Run the migration with \
                 --legacy-offset before trace-writer writes to this collection, or migrate \
                 without --legacy-offset."
            ),
        }
    }
}

/// Settings of one run.
#[derive(Debug, Clone)]
pub struct Settings {
    pub apply: bool,
    pub offset_millis: i64,
    pub batch_size: u32,
    pub limit: Option<u64>,
}

/// Migrates `traces` batch by batch in `_id` order; `progress` sees the summary after
/// every batch.
pub async fn migrate(
    traces: &Collection<Document>,
    settings: &Settings,
    mut progress: impl FnMut(&Summary),
) -> Result<Result<Summary, Refusal>, Failure> {
    if settings.offset_millis != 0 {
        let theirs = doc! { "attempt": { "$exists": true }, MARKER: { "$exists": false } };
        let count = traces
            .count_documents(theirs.clone())
            .await
            .map_err(stopped)?;
        if count > 0 {
            let example = traces
                .find_one(theirs)
                .await
                .map_err(stopped)?
                .and_then(|found| found.get_str("message_id").ok().map(str::to_owned))
                .unwrap_or_else(|| "(none)".into());
            return Ok(Err(Refusal::WrittenByThisSystem { count, example }));
        }
    }
    let now = bson::DateTime::now();
    let mut summary = Summary::default();
    let mut last_id: Option<Bson> = None;
    'batches: loop {
        let filter = last_id
            .as_ref()
            .map_or_else(Document::new, |id| doc! { "_id": { "$gt": id.clone() } });
        let batch: Vec<Document> = {
            use futures::TryStreamExt;
            traces
                .find(filter)
                .sort(doc! { "_id": 1 })
                .limit(i64::from(settings.batch_size))
                .await
                .map_err(stopped)?
                .try_collect()
                .await
                .map_err(stopped)?
        };
        let Some(last) = batch.last() else {
            break;
        };
        last_id = last.get("_id").cloned();
        let mut updates = Vec::new();
        let mut at_limit = false;
        for document in &batch {
            if settings
                .limit
                .is_some_and(|limit| summary.migrated + updates.len() as u64 >= limit)
            {
                at_limit = true;
                break;
            }
            summary.scanned += 1;
            match plan(document, settings.offset_millis, now) {
                Plan::AlreadyMigrated => summary.already_migrated += 1,
                Plan::Skip(reason) => *summary.skipped.entry(reason).or_default() += 1,
                Plan::Migrate(migration) => {
                    if summary.examples.len() < EXAMPLES {
                        summary
                            .examples
                            .push(describe(&migration, settings.offset_millis));
                    }
                    updates.push(migration);
                }
            }
        }
        if settings.apply && !updates.is_empty() {
            let matched = write(traces, &updates).await?;
            summary.migrated += matched;
            summary.changed_meanwhile += updates.len() as u64 - matched;
        } else {
            summary.migrated += updates.len() as u64;
        }
        progress(&summary);
        if at_limit {
            break 'batches;
        }
    }
    Ok(Ok(summary))
}

fn stopped(error: mongodb::error::Error) -> Failure {
    Failure::new(format!("migration stopped: {error}"))
}

/// One `update` command for the whole batch; returns how many documents matched, that is
/// were still as they were read.
pub async fn write(traces: &Collection<Document>, updates: &[Migration]) -> Result<u64, Failure> {
    let database = traces.client().database(&traces.namespace().db);
    let statements: Vec<Document> = updates
        .iter()
        .map(|m| doc! { "q": m.filter.clone(), "u": { "$set": m.set.clone() }, "multi": false, "upsert": false })
        .collect();
    let reply = database
        .run_command(doc! {
            "update": traces.name(),
            "updates": statements,
            "ordered": false,
        })
        .await
        .map_err(stopped)?;
    if let Ok(errors) = reply.get_array("writeErrors") {
        if let Some(first) = errors.first() {
            return Err(Failure::new(format!(
                "{} of {} updates failed; the first: {first}",
                errors.len(),
                updates.len()
            )));
        }
    }
    Ok(match reply.get("n") {
        Some(Bson::Int32(n)) => *n as u64,
        Some(Bson::Int64(n)) => *n as u64,
        Some(Bson::Double(n)) => *n as u64,
        _ => 0,
    })
}

fn describe(migration: &Migration, offset_millis: i64) -> String {
    let history: Vec<&str> = migration
        .set
        .get_array("history")
        .map(|entries| {
            entries
                .iter()
                .filter_map(|entry| entry.as_document()?.get_str("status").ok())
                .collect()
        })
        .unwrap_or_default();
    let (before, after) = migration.created;
    let created = if offset_millis == 0 {
        render_time(after)
    } else {
        format!("{} -> {}", render_time(before), render_time(after))
    };
    format!(
        "{} ({}): attempt {}, rank {}, history {}, created_at {created}",
        migration.message_id,
        migration.status,
        migration.set.get_i64("attempt").unwrap_or_default(),
        migration.set.get_i32("rank").unwrap_or_default(),
        history.join(" > "),
    )
}

/// The summary as printed on stdout.
pub fn report(summary: &Summary, settings: &Settings) -> String {
    let mut lines = Vec::new();
    let verb = if settings.apply {
        "migrated"
    } else {
        lines.push("dry run: nothing was written (--apply writes)".to_owned());
        "would migrate"
    };
    if settings.offset_millis != 0 {
        lines.push(format!(
            "legacy offset: {} taken off created_at, updated_at, started_at, completed_at",
            describe_offset(settings.offset_millis)
        ));
    }
    for example in &summary.examples {
        lines.push(format!("{verb} {example}"));
    }
    lines.push(format!("scanned: {}", summary.scanned));
    lines.push(format!("{verb}: {}", summary.migrated));
    lines.push(format!("already migrated: {}", summary.already_migrated));
    if summary.changed_meanwhile > 0 {
        lines.push(format!(
            "changed meanwhile (left as they are; run again): {}",
            summary.changed_meanwhile
        ));
    }
    lines.push(format!("skipped: {}", summary.skipped_total()));
    for (reason, count) in &summary.skipped {
        lines.push(format!("  {reason}: {count}"));
    }
    if let Some(limit) = settings.limit.filter(|&limit| summary.migrated >= limit) {
        lines.push(format!("stopped at --limit {limit}; run again to continue"));
    }
    lines.join("\n")
}

/// `jobtrace migrate`.
pub async fn main(args: MigrateArgs) -> Result<ExitCode, Failure> {
    let mut config = match DatabaseConfig::from_env() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("jobtrace: {error}");
            return Ok(ExitCode::from(EXIT_REFUSED));
        }
    };
    if let Some(uri) = args.mongo_uri {
        config.mongo_uri = uri;
    }
    if let Some(database) = args.database {
        config.mongo_database = database;
    }
    if let Some(collection) = args.collection {
        config.collection_job_traces = collection;
    }
    let settings = Settings {
        apply: args.apply,
        offset_millis: args.legacy_offset.unwrap_or(0),
        batch_size: args.batch_size,
        limit: args.limit,
    };
    let mut options = ClientOptions::parse(&config.mongo_uri)
        .await
        .map_err(|e| Failure::new(format!("bad connection string: {}", e.kind)))?;
    options
        .app_name
        .get_or_insert_with(|| "jobtrace-migrate".into());
    options.server_selection_timeout = Some(config.timeout());
    options.connect_timeout.get_or_insert(config.timeout());
    let traces: Collection<Document> = Client::with_options(options)
        .map_err(Failure::of)?
        .database(&config.mongo_database)
        .collection(&config.collection_job_traces);
    eprintln!(
        "jobtrace: {} {}.{}",
        if settings.apply {
            "migrating"
        } else {
            "dry run over"
        },
        config.mongo_database,
        config.collection_job_traces
    );
    let outcome = migrate(&traces, &settings, |summary| {
        eprintln!("{}", summary.progress_line())
    })
    .await?;
    match outcome {
        Ok(summary) => {
            println!("{}", report(&summary, &settings));
            Ok(ExitCode::SUCCESS)
        }
        Err(refusal) => {
            eprintln!("jobtrace: {refusal}");
            Ok(ExitCode::from(EXIT_REFUSED))
        }
    }
}
