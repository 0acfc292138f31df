//! `jobtrace sweep`: marks stalled jobs failed, so that the people waiting on them stop
//! waiting. A job is stalled when it is queued or processing and nothing has been
//! recorded for it (no status, no progress) for longer than `--stalled-for`.
//!
//! Dry run by default. Each write is conditional ([`job_trace::TraceStore::sweep`]): a
//! job that moved since it was listed is left alone, and a real event that arrives later
//! (the same attempt's `success`, or any event of a later attempt) still overrides the
//! sweep, as the rules say.

use std::process::ExitCode;

use clap::{Args, ValueEnum};
use job_trace::config::DatabaseConfig;
use job_trace::model::{render_time, JobStatus, TraceDocument};
use job_trace::rules::{describe_seconds, stored_key, Change};
use job_trace::store::ops::JobsQuery;
use job_trace::TraceStore;

use crate::migrate::parse_offset;
use crate::Failure;

/// Jobs listed per round trip.
const PAGE: u32 = 100;

#[derive(Clone, Copy, Debug, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum StalledStatus {
    Queued,
    Processing,
}

#[derive(Args, Debug)]
pub struct SweepArgs {
    /// Sweep jobs with nothing recorded for longer than this: h, m, s (30m, 2h, 90s), at
    /// least 1s.
    #[arg(long, value_name = "DURATION", value_parser = parse_threshold)]
    stalled_for: u64,
    /// Write the changes; without it, a dry run that only says what it would do.
    #[arg(long)]
    apply: bool,
    /// Only jobs with this status.
    #[arg(long)]
    status: Option<StalledStatus>,
    /// At most this many jobs, the longest stalled first (run again for more).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    limit: u64,
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

/// A duration in whole seconds, at least one.
fn parse_threshold(raw: &str) -> Result<u64, String> {
    let millis = parse_offset(raw)?;
    let seconds = u64::try_from(millis / 1000).unwrap_or(0);
    if seconds == 0 || millis % 1000 != 0 {
        return Err(format!("{raw:?}: expected whole seconds, at least 1s"));
    }
    Ok(seconds)
}

/// What happened to each listed job.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub stalled: u64,
    pub swept: u64,
    /// Moved on between the listing and the write: left as it is.
    pub changed: u64,
    /// Nothing but progress reports so far: no status a sweep could hold on to.
    pub skipped: u64,
}

fn describe(doc: &TraceDocument) -> String {
    let (attempt, _) = stored_key(doc);
    format!(
        "{} ({}, attempt {attempt}, user {}, last recorded {})",
        doc.message_id,
        doc.status,
        doc.line_user_id.as_deref().unwrap_or("-"),
        doc.updated_at.map_or_else(|| "never".into(), render_time),
    )
}

/// The stalled jobs, the longest stalled first, up to `limit`: listed whole before any
/// write, since every sweep takes a job out of the listing.
async fn stalled(
    store: &TraceStore,
    query: JobsQuery,
    limit: u64,
) -> Result<Vec<TraceDocument>, Failure> {
    let mut jobs = Vec::new();
    let mut query = query;
    loop {
        let page = store.list_jobs(&query).await.map_err(Failure::of)?;
        let got = page.jobs.len() as u64;
        jobs.extend(page.jobs);
        query.skip += got;
        if got < u64::from(query.limit) || jobs.len() as u64 >= limit {
            jobs.truncate(limit as usize);
            return Ok(jobs);
        }
    }
}

/// Lists the stalled jobs and sweeps them (with `apply`), printing a line for each.
pub async fn sweep(store: &TraceStore, args: &SweepArgs) -> Result<Summary, Failure> {
    let now = bson::DateTime::now();
    let since =
        bson::DateTime::from_millis(now.timestamp_millis() - args.stalled_for as i64 * 1000);
    let statuses = match args.status {
        None => Vec::new(),
        Some(StalledStatus::Queued) => vec![JobStatus::Queued],
        Some(StalledStatus::Processing) => vec![JobStatus::Processing],
    };
    let query = JobsQuery {
        stalled_before: Some(since),
        statuses,
        job_type: None,
        limit: PAGE,
        skip: 0,
    };
    let jobs = stalled(store, query, args.limit).await?;
    let mut summary = Summary {
        stalled: jobs.len() as u64,
        ..Summary::default()
    };
    for doc in &jobs {
        let Some(change) = Change::swept(doc, args.stalled_for, now) else {
            summary.skipped += 1;
            println!(
                "skip {}: only progress reported, no status to sweep",
                describe(doc)
            );
            continue;
        };
        if !args.apply {
            summary.swept += 1;
            println!("would sweep {}", describe(doc));
        } else if store.sweep(&change).await.map_err(Failure::of)? {
            summary.swept += 1;
            println!("swept {}", describe(doc));
        } else {
            summary.changed += 1;
            println!("left {}: it changed since it was listed", describe(doc));
        }
    }
    Ok(summary)
}

/// The closing lines.
pub fn report(summary: &Summary, args: &SweepArgs) -> String {
    let threshold = describe_seconds(args.stalled_for);
    let mut lines = Vec::new();
    if !args.apply {
        lines.push("dry run: nothing was written (--apply writes)".to_owned());
    }
    lines.push(format!(
        "stalled (nothing recorded for over {threshold}): {}",
        summary.stalled
    ));
    lines.push(format!(
        "{}: {}",
        if args.apply { "swept" } else { "would sweep" },
        summary.swept
    ));
    if summary.changed > 0 {
        lines.push(format!("changed since listed, left: {}", summary.changed));
    }
    if summary.skipped > 0 {
        lines.push(format!("skipped (progress only): {}", summary.skipped));
    }
    if summary.stalled as u128 >= u128::from(args.limit) {
        lines.push(format!(
            "stopped at --limit {}; run again for more",
            args.limit
        ));
    }
    lines.join("\n")
}

/// `jobtrace sweep`.
pub async fn main(args: SweepArgs) -> Result<ExitCode, Failure> {
    let mut config = DatabaseConfig::from_env().map_err(Failure::of)?;
    if let Some(uri) = args.mongo_uri.clone() {
        config.mongo_uri = uri;
    }
    if let Some(database) = args.database.clone() {
        config.mongo_database = database;
    }
    if let Some(collection) = args.collection.clone() {
        config.collection_job_traces = collection;
    }
    let store = TraceStore::connect(&config)
        .await
        .map_err(|e| Failure::new(format!("database {}: {e}", config.mongo_database)))?;
    eprintln!(
        "jobtrace: {} {}.{} (STORE_WRITE={})",
        if args.apply {
            "sweeping"
        } else {
            "dry run over"
        },
        config.mongo_database,
        config.collection_job_traces,
        config.store_write.as_str(),
    );
    let summary = sweep(&store, &args).await?;
    println!("{}", report(&summary, &args));
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_are_whole_seconds() {
        assert_eq!(parse_threshold("30m"), Ok(1800));
        assert_eq!(parse_threshold("1h30m"), Ok(5400));
        assert_eq!(parse_threshold("2s"), Ok(2));
        assert!(parse_threshold("0s").is_err());
        assert!(parse_threshold("1500ms").is_err());
        assert!(parse_threshold("soon").is_err());
    }
}
