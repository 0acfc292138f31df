//! `jobtrace check-backend`: tries every database feature the functions rely on against
//! the database a deployment will use, in a scratch collection it removes afterwards
//! (never the traces collection), and says which `STORE_WRITE` and
//! `API_CHANGE_STREAMS` to deploy with.

use std::time::Duration;

use job_trace::config::{DatabaseConfig, StoreWrite};
use job_trace::ids::{LineUserId, MessageId};
use job_trace::indexes::seed_index_set;
use job_trace::model::{JobStatus, JobType};
use job_trace::rules::{self, Change, JobDetails};
use job_trace::store::check::Scratch;
use job_trace::store::ops::JobsQuery;
use job_trace::store::{StoreError, UserQuery};
use job_trace::TraceStore;
use serde_json::json;

use crate::Failure;

/// How long a change may take to come out of the change feed.
const FEED_PATIENCE: Duration = Duration::from_secs(10);
/// First writers racing for one trace in the duplicate-key check.
const RACERS: usize = 8;

/// One feature: whether it works, and what the functions do without it.
#[derive(Debug, Clone)]
pub struct Check {
    pub feature: String,
    pub outcome: Result<(), String>,
    pub without: &'static str,
}

#[derive(Debug, Clone)]
pub struct Report {
    pub scratch: String,
    pub checks: Vec<Check>,
    /// The first strategy whose write and duplicate-key answer both work.
    pub store_write: Option<StoreWrite>,
    pub change_streams: bool,
    /// The recommended configuration works: a write strategy, readiness and the list.
    pub ok: bool,
}

fn id(raw: &str) -> MessageId {
    MessageId::parse(raw).expect("a valid id")
}

fn user() -> LineUserId {
    LineUserId::parse("Ujobtrace-check-backend").expect("a valid user id")
}

/// A short history with a redelivery and a reopened attempt: enough to tell a strategy
/// that gets the rules wrong.
fn history(message_id: &str) -> Vec<Change> {
    let at = |seconds: i64| bson::DateTime::from_millis(1_785_000_000_000 + seconds * 1000);
    let event = |status, attempt, seconds| {
        let error = (status == JobStatus::Failed).then(|| "HTTP 503".to_owned());
        Change::event(id(message_id), status, attempt, at(seconds), error, None)
    };
    vec![
        event(JobStatus::Processing, 1, 5),
        Change::queued(
            id(message_id),
            at(0),
            JobDetails {
                job_type: JobType::PropertyScrape,
                url: Some("https://suumo.jp/ms/chuko/nc_1/".into()),
                line_user_id: Some(user()),
                check_only: false,
            },
        ),
        event(JobStatus::Failed, 1, 9),
        event(JobStatus::Processing, 2, 20),
        event(JobStatus::Success, 2, 30),
        event(JobStatus::Processing, 1, 5),
    ]
}

fn describe(error: StoreError) -> String {
    error.to_string()
}

async fn write_history(store: &TraceStore, message_id: &str) -> Result<(), String> {
    let changes = history(message_id);
    for change in &changes {
        store.apply(change).await.map_err(describe)?;
    }
    let mut stored = store
        .get(&id(message_id))
        .await
        .map_err(describe)?
        .ok_or("the trace was not stored")?;
    stored.id = None;
    if Some(&stored) == rules::replay(&changes).as_ref() {
        Ok(())
    } else {
        Err(format!(
            "the stored trace differs from the rules' (status {}, attempt {:?})",
            stored.status, stored.attempt
        ))
    }
}

async fn race_first_writes(scratch: &Scratch, write: StoreWrite) -> Result<(), String> {
    let message_id = format!("check-race-{}", write.as_str());
    let store = scratch.store(write);
    let racers: Vec<_> = (0..RACERS)
        .map(|n| {
            let store = store.clone();
            let change = history(&message_id)[n % 2].clone();
            tokio::spawn(async move { store.apply(&change).await })
        })
        .collect();
    for racer in racers {
        racer
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("a racing first write failed: {e}"))?;
    }
    match scratch.count(&id(&message_id)).await.map_err(describe)? {
        1 => Ok(()),
        n => Err(format!("{RACERS} racing first writes made {n} documents")),
    }
}

async fn list_query(store: &TraceStore) -> Result<(), String> {
    let page = store
        .list_by_user(&UserQuery {
            line_user_id: user(),
            statuses: vec![JobStatus::Success],
            job_type: None,
            limit: 10,
            skip: 0,
        })
        .await
        .map_err(describe)?;
    if page.total_count >= 1 && !page.jobs.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the user's stored trace was not listed (total {})",
            page.total_count
        ))
    }
}

/// What trace-writer does with `COMPLETIONS_TOPIC` set: a terminal change written and
/// read back in one command (`findAndModify`; with `pipeline`, an update pipeline), its
/// pending notification removed with `$pull`.
async fn completion_writes(store: &TraceStore, message_id: &str) -> Result<(), String> {
    let changes = history(message_id);
    store
        .apply_returning(&changes[1].clone().notifying(bson::DateTime::now()))
        .await
        .map_err(describe)?;
    let ended = changes[2].clone().notifying(bson::DateTime::now());
    let owed = ended
        .completion()
        .ok_or("a failed event owes a notification")?;
    let written = store.apply_returning(&ended).await.map_err(describe)?;
    if !written
        .pending_completions
        .iter()
        .any(|p| p.dedupe_key == owed.dedupe_key)
    {
        return Err("the written trace does not hold the notification it owes".to_owned());
    }
    store
        .settle_completions(&id(message_id), &[owed.dedupe_key])
        .await
        .map_err(describe)?;
    let settled = store
        .get(&id(message_id))
        .await
        .map_err(describe)?
        .ok_or("the trace was not stored")?;
    if settled.pending_completions.is_empty() {
        Ok(())
    } else {
        Err("$pull left the published notification in the trace".to_owned())
    }
}

/// The operators' views and the sweep: a job queued long ago is listed as stalled
/// (`find` sorted on `updated_at`), counted by the stats `aggregate`, and swept by the
/// sweep's conditional write.
async fn operator_views(store: &TraceStore) -> Result<(), String> {
    let message_id = format!("check-stalled-{}", store.write_strategy().as_str());
    store
        .apply(&history(&message_id)[1])
        .await
        .map_err(describe)?;
    let now = bson::DateTime::now();
    let stalled = store
        .list_jobs(&JobsQuery {
            stalled_before: Some(now),
            statuses: Vec::new(),
            job_type: None,
            limit: 50,
            skip: 0,
        })
        .await
        .map_err(describe)?;
    let Some(trace) = stalled
        .jobs
        .iter()
        .find(|trace| trace.message_id == message_id)
    else {
        return Err("a job queued long ago was not listed as stalled".to_owned());
    };
    let stats = store
        .stats(bson::DateTime::from_millis(0))
        .await
        .map_err(describe)?;
    if stats.jobs == 0 {
        return Err("the stats aggregate counted no jobs".to_owned());
    }
    let sweep = Change::swept(trace, 60, now).ok_or("a queued job cannot be swept")?;
    if !store.sweep(&sweep).await.map_err(describe)? {
        return Err("the sweep's conditional write did not apply".to_owned());
    }
    match store.get(&id(&message_id)).await.map_err(describe)? {
        Some(swept) if swept.status == JobStatus::Failed => Ok(()),
        _ => Err("the swept job is not failed".to_owned()),
    }
}

async fn change_feed(store: &TraceStore) -> Result<(), String> {
    let mut feed = store
        .change_feed(Duration::from_secs(1))
        .await
        .map_err(describe)?;
    let message_id = "check-feed";
    store
        .apply(&history(message_id)[0])
        .await
        .map_err(describe)?;
    let seen = tokio::time::timeout(FEED_PATIENCE, async {
        loop {
            match feed.next().await {
                Some(Ok(Some(changed))) if changed == message_id => return Ok(()),
                Some(Ok(_)) => continue,
                Some(Err(error)) => return Err(describe(error)),
                None => return Err("the change feed ended".to_owned()),
            }
        }
    })
    .await;
    seen.unwrap_or_else(|_| Err(format!("no change arrived within {FEED_PATIENCE:?}")))
}

fn check(
    checks: &mut Vec<Check>,
    feature: impl Into<String>,
    outcome: Result<(), String>,
    without: &'static str,
) -> bool {
    let works = outcome.is_ok();
    checks.push(Check {
        feature: feature.into(),
        outcome,
        without,
    });
    works
}

/// Runs every check in a scratch collection of `config`'s database, and removes it.
pub async fn run(config: &DatabaseConfig) -> Result<Report, Failure> {
    let scratch = Scratch::create(config)
        .await
        .map_err(|e| Failure::new(format!("MONGO_URI is not usable: {e}")))?;
    let mut checks = Vec::new();
    let store = scratch.store(StoreWrite::Pipeline);
    let ready = check(
        &mut checks,
        "readiness query (find on the collection)",
        store.ready().await.map_err(describe),
        "/ready answers 503, so probes and load balancers take the instance out",
    );
    check(
        &mut checks,
        "unique and TTL index creation",
        store
            .create_indexes(seed_index_set())
            .await
            .map_err(describe),
        "ENSURE_INDEXES=true fails (logged); create the index set another way (Terraform does for Firestore)",
    );
    let mut store_write = None;
    for write in StoreWrite::ALL {
        let writes = check(
            &mut checks,
            format!("STORE_WRITE={} (a history against rules::replay)", write.as_str()),
            write_history(&scratch.store(write), &format!("check-{}", write.as_str())).await,
            match write {
                StoreWrite::Pipeline => "use STORE_WRITE=cas",
                StoreWrite::Cas => "no fallback: without a working strategy every push is answered 503 and redelivered",
            },
        );
        let races = check(
            &mut checks,
            format!(
                "duplicate key answer ({RACERS} racing first writes, {})",
                write.as_str()
            ),
            race_first_writes(&scratch, write).await,
            "racing first writes of one job fail (503, redelivered) or make two documents",
        );
        check(
            &mut checks,
            format!(
                "completion notifications: findAndModify and $pull ({})",
                write.as_str()
            ),
            completion_writes(
                &scratch.store(write),
                &format!("check-completion-{}", write.as_str()),
            )
            .await,
            "leave COMPLETIONS_TOPIC unset with this STORE_WRITE: every push owing a notification would be answered 503",
        );
        check(
            &mut checks,
            format!(
                "operators' listing, stats aggregate and sweep ({})",
                write.as_str()
            ),
            operator_views(&scratch.store(write)).await,
            "GET /api/v1/jobs and /api/v1/jobs/stats answer 503; jobtrace sweep fails",
        );
        if writes && races && store_write.is_none() {
            store_write = Some(write);
        }
    }
    let listed = check(
        &mut checks,
        "$facet list query (list_by_user)",
        list_query(&store).await,
        "GET /api/v1/jobs/user/{id} and /job/user/{id} answer 503",
    );
    let change_streams = check(
        &mut checks,
        "change stream (one change within 10 s)",
        change_feed(&store).await,
        "use API_CHANGE_STREAMS=off: long-polls and event streams poll (one query per API_POLL_INTERVAL_MS for all waiting requests)",
    );
    let name = scratch.name().to_owned();
    check(
        &mut checks,
        "removing the scratch collection",
        scratch.remove().await.map_err(describe),
        "nothing: drop the scratch collection by hand",
    );
    Ok(Report {
        scratch: name,
        ok: store_write.is_some() && ready && listed,
        checks,
        store_write,
        change_streams,
    })
}

impl Report {
    pub fn recommended_store_write(&self) -> &'static str {
        self.store_write.map_or("none works", StoreWrite::as_str)
    }

    pub fn recommended_change_streams(&self) -> &'static str {
        if self.change_streams {
            "auto"
        } else {
            "off"
        }
    }

    pub fn table(&self) -> String {
        let rows: Vec<[String; 3]> = self
            .checks
            .iter()
            .map(|check| {
                [
                    check.feature.clone(),
                    match &check.outcome {
                        Ok(()) => "works".to_owned(),
                        Err(error) => format!("FAILS: {error}"),
                    },
                    check.without.to_owned(),
                ]
            })
            .collect();
        let header = [
            "feature".to_owned(),
            "result".to_owned(),
            "without it".to_owned(),
        ];
        let width = |column: usize| {
            rows.iter()
                .chain([&header])
                .map(|row| row[column].chars().count())
                .max()
                .unwrap_or(0)
        };
        let (first, second) = (width(0), width(1));
        let mut out = String::new();
        for row in [&header].into_iter().chain(&rows) {
            out.push_str(&format!(
                "{:first$} | {:second$} | {}\n",
                row[0], row[1], row[2]
            ));
        }
        out.push_str(&format!(
            "\nscratch collection: {}\nrecommended: STORE_WRITE={} API_CHANGE_STREAMS={}\n",
            self.scratch,
            self.recommended_store_write(),
            self.recommended_change_streams()
        ));
        out.push_str(if self.ok {
            "the recommended configuration works\n"
        } else {
            "the recommended configuration does NOT work with this database\n"
        });
        out
    }

    pub fn json(&self) -> serde_json::Value {
        json!({
            "ok": self.ok,
            "scratch_collection": self.scratch,
            "checks": self.checks.iter().map(|check| json!({
                "feature": check.feature,
                "works": check.outcome.is_ok(),
                "error": check.outcome.as_ref().err(),
                "without": check.without,
            })).collect::<Vec<_>>(),
            "recommended": {
                "STORE_WRITE": self.store_write.map(StoreWrite::as_str),
                "API_CHANGE_STREAMS": self.recommended_change_streams(),
            },
        })
    }
}
