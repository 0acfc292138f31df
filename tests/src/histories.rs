//! Random job histories: the messages one job produces (its job message and the worker's
//! status events over one to three attempts), delivered at least once in any order.

use job_trace::ids::{LineUserId, MessageId};
use job_trace::model::{JobStatus, JobType, StoredProgress, TraceDocument};
use job_trace::rules::{self, Change, JobDetails};
use rand::seq::SliceRandom;
use rand::Rng;

/// One job's distinct messages, in the order they were produced.
#[derive(Debug, Clone)]
pub struct History {
    pub message_id: MessageId,
    pub messages: Vec<Change>,
}

const BASE_MILLIS: i64 = 1_785_000_000_000;

/// A job with 1–3 attempts: each attempt may report `processing`; every attempt but the
/// last fails; the last succeeds, fails, finds nothing or is still running. Now and then
/// a rejected message names the job too.
pub fn random_history(rng: &mut impl Rng, message_id: MessageId) -> History {
    let mut at = BASE_MILLIS + rng.random_range(0..86_400_000_i64);
    let mut step = |rng: &mut dyn rand::RngCore| {
        at += rng.random_range(1..20_000);
        bson::DateTime::from_millis(at)
    };
    let published = step(rng);
    let with_url = rng.random_bool(0.8);
    let job = JobDetails {
        job_type: if with_url {
            JobType::PropertyScrape
        } else {
            JobType::BatchCheck
        },
        url: with_url.then(|| format!("https://suumo.jp/ms/chuko/nc_{}/", rng.random::<u32>())),
        line_user_id: Some(LineUserId::parse(format!("U{:04}", rng.random_range(0..50))).unwrap()),
        check_only: !with_url && rng.random_bool(0.5),
    };
    let mut messages = vec![Change::queued(message_id.clone(), published, job)];
    let attempts = rng.random_range(1..=3_u32);
    for attempt in 1..=attempts {
        if rng.random_bool(0.85) {
            messages.push(Change::event(
                message_id.clone(),
                JobStatus::Processing,
                attempt,
                step(rng),
                None,
                None,
            ));
        }
        // Progress reports, some possibly arriving after the attempt ended (a worker's
        // late report) and some for the next attempt before its `processing`.
        for _ in 0..rng.random_range(0..=3) {
            let report_attempt = attempt + u32::from(rng.random_bool(0.1));
            let total = rng.random_range(0..=40_i64);
            let note = rng
                .random_bool(0.5)
                .then(|| format!("物件 {}", rng.random_range(0..5)));
            messages.push(Change::progress(
                message_id.clone(),
                report_attempt,
                step(rng),
                rng.random_range(0..=total),
                total,
                note,
            ));
        }
        let terminal = if attempt < attempts {
            rng.random_bool(0.9).then_some(JobStatus::Failed)
        } else {
            [
                Some(JobStatus::Success),
                Some(JobStatus::Failed),
                Some(JobStatus::NotFound),
                None,
            ][rng.random_range(0..4)]
        };
        if let Some(status) = terminal {
            let error = (status != JobStatus::Success)
                .then(|| format!("attempt {attempt}: HTTP {}", rng.random_range(400..600)));
            let result = (status == JobStatus::Success).then(|| {
                bson::bson!({ "status": "success", "property_info": { "properties": { "name": format!("物件 {attempt}") } } })
            });
            messages.push(Change::event(
                message_id.clone(),
                status,
                attempt,
                step(rng),
                error,
                result,
            ));
        }
    }
    if rng.random_bool(0.1) {
        let at = bson::DateTime::from_millis(
            messages[rng.random_range(0..messages.len())]
                .at
                .timestamp_millis()
                + 1,
        );
        messages.push(Change::rejected(
            message_id.clone(),
            at,
            "message rejected: unknown status \"done\"",
        ));
    }
    History {
        message_id,
        messages,
    }
}

/// Every message delivered one to three times, all shuffled, for the job `message_id`.
pub fn arrival_order(rng: &mut impl Rng, history: &History, message_id: &MessageId) -> Vec<Change> {
    let mut arrivals = Vec::new();
    for message in &history.messages {
        for _ in 0..rng.random_range(1..=3) {
            let mut copy = message.clone();
            copy.message_id = message_id.clone();
            arrivals.push(copy);
        }
    }
    arrivals.shuffle(rng);
    arrivals
}

/// `arrivals` with an operator's sweeps between them: now and then, the sweep
/// (`jobtrace sweep --stalled-for 10m`) of the trace as it stands at that point, when it
/// is unfinished; run a little before or after the threshold is reached, so that some
/// apply and some find the trace not stalled yet.
pub fn with_sweeps(rng: &mut impl Rng, arrivals: &[Change]) -> Vec<Change> {
    const THRESHOLD_SECONDS: u64 = 600;
    let mut with = Vec::new();
    let mut doc: Option<TraceDocument> = None;
    for change in arrivals {
        if let Some(current) = doc.as_ref().filter(|_| rng.random_bool(0.3)) {
            let updated = current.updated_at.map_or(0, |t| t.timestamp_millis());
            let at = bson::DateTime::from_millis(
                updated + THRESHOLD_SECONDS as i64 * 1000 + rng.random_range(-5_000..5_000),
            );
            if let Some(sweep) = Change::swept(current, THRESHOLD_SECONDS, at) {
                doc = rules::apply_to(Some(current), &sweep);
                with.push(sweep);
            }
        }
        doc = rules::apply_to(doc.as_ref(), change);
        with.push(change.clone());
    }
    with
}

/// What DESIGN.md's rules say the converged trace must show, derived from the history
/// directly (not through the reducer): the status of the greatest key, its attempt, the
/// current attempt's times, the earliest and latest times and the job's fields.
pub fn check_semantics(history: &History, doc: &TraceDocument) -> Result<(), String> {
    let current = current_status(history);
    let job = history
        .messages
        .iter()
        .find_map(|m| m.job.as_ref())
        .expect("a history has its job message");
    let attempt = current.key.attempt;
    let time_of = |rank: u8| {
        statuses(history)
            .filter(|m| m.key.attempt == attempt && m.key.rank == rank)
            .map(|m| m.at)
            .min()
    };
    let mut problems = Vec::new();
    let mut expect = |what: &str, same: bool, detail: String| {
        if !same {
            problems.push(format!("{what}: {detail}"));
        }
    };
    expect(
        "status",
        doc.status == current.status,
        format!("{:?} != {:?}", doc.status, current.status),
    );
    expect(
        "attempt",
        doc.attempt == Some(i64::from(attempt)),
        format!("{:?} != {attempt}", doc.attempt),
    );
    expect(
        "started_at",
        doc.started_at == (if attempt == 0 { None } else { time_of(1) }),
        format!("{:?}", doc.started_at),
    );
    expect(
        "completed_at",
        doc.completed_at == current.status.is_terminal().then_some(current.at),
        format!("{:?}", doc.completed_at),
    );
    expect(
        "error",
        doc.error == current.error,
        format!("{:?} != {:?}", doc.error, current.error),
    );
    expect(
        "created_at",
        doc.created_at == history.messages.iter().map(|m| m.at).min(),
        format!("{:?}", doc.created_at),
    );
    expect(
        "updated_at",
        doc.updated_at == history.messages.iter().map(|m| m.at).max(),
        format!("{:?}", doc.updated_at),
    );
    expect(
        "url",
        doc.url == job.url,
        format!("{:?} != {:?}", doc.url, job.url),
    );
    expect(
        "line_user_id",
        doc.line_user_id.as_deref() == job.line_user_id.as_ref().map(|u| u.as_str()),
        format!("{:?}", doc.line_user_id),
    );
    expect(
        "job_type",
        doc.job_type == Some(job.job_type),
        format!("{:?}", doc.job_type),
    );
    expect(
        "check_only",
        doc.check_only == Some(job.check_only),
        format!("{:?}", doc.check_only),
    );
    let progress = expected_progress(history, current);
    expect(
        "progress",
        doc.progress == progress,
        format!("{:?} != {progress:?}", doc.progress),
    );
    let mut distinct: Vec<_> = statuses(history).map(Change::history_entry).collect();
    distinct.dedup();
    expect(
        "history",
        doc.history.len() == distinct.len(),
        format!(
            "{} entries, {} distinct messages",
            doc.history.len(),
            distinct.len()
        ),
    );
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// The history's status changes (every message but the progress reports).
fn statuses(history: &History) -> impl Iterator<Item = &Change> {
    history.messages.iter().filter(|m| m.progress.is_none())
}

/// The status change with the greatest key: what the trace must show.
fn current_status(history: &History) -> &Change {
    statuses(history)
        .max_by_key(|m| m.key)
        .expect("a history has messages")
}

/// The latest report (by time, then counts and note) that the final key still admits:
/// one of a later attempt, or of the current attempt while it runs.
fn expected_progress(history: &History, current: &Change) -> Option<StoredProgress> {
    let (attempt, rank) = (i64::from(current.key.attempt), current.key.rank);
    history
        .messages
        .iter()
        .filter_map(|m| m.progress.clone())
        .filter(|p| p.attempt > attempt || (p.attempt == attempt && rank < 2))
        .max_by(|a, b| {
            (a.attempt, a.at, a.done, a.total, &a.note)
                .cmp(&(b.attempt, b.at, b.done, b.total, &b.note))
        })
}

/// A random history whose events happen from `events_from` on (after its job message,
/// whose time Pub/Sub sets when it is published), without rejected messages (their time
/// is Pub/Sub's too, not known in advance).
pub fn shifted_history(rng: &mut impl Rng, events_from: i64) -> History {
    let mut history = random_history(rng, MessageId::parse("placeholder").unwrap());
    let origin = history.messages[0].at.timestamp_millis();
    history.messages.retain(|m| {
        m.key
            != job_trace::model::TraceKey {
                attempt: 0,
                rank: 2,
            }
    });
    for message in history.messages.iter_mut().skip(1) {
        message.at =
            bson::DateTime::from_millis(events_from + message.at.timestamp_millis() - origin);
        if let Some(progress) = &mut message.progress {
            progress.at = message.at;
        }
    }
    history
}

/// The rules' verdict on `doc`, a trace of `history` whose job message was published
/// between `published.0` and `published.1` (ms, the test's clock around the call): its
/// `created_at` is the publishTime Pub/Sub stamped, which must fall in that window.
pub fn check_published(
    history: &History,
    published: (i64, i64),
    doc: &TraceDocument,
) -> Result<(), String> {
    let (before, after) = published;
    let created = doc.created_at.ok_or("no created_at")?.timestamp_millis();
    // publishTime is the emulator's clock, on this machine, in milliseconds.
    if !(before - 1000..=after + 1000).contains(&created) {
        return Err(format!(
            "created_at {created} outside the publish window {before}..{after}"
        ));
    }
    let mut history = history.clone();
    history.messages[0].at = bson::DateTime::from_millis(created);
    check_semantics(&history, doc)?;
    let current = current_status(&history);
    if doc.result != current.result {
        return Err(format!("result {:?} != {:?}", doc.result, current.result));
    }
    Ok(())
}

/// A trace as the original system left it: a status with its times and the job's
/// fields, but no `attempt`, `rank`, `history` or `expire_at` (it kept none), dated a
/// little before the random histories.
pub fn legacy_trace(rng: &mut impl Rng, message_id: &MessageId) -> TraceDocument {
    let status = JobStatus::ALL[rng.random_range(0..JobStatus::ALL.len())];
    let at = |offset: i64| Some(bson::DateTime::from_millis(BASE_MILLIS - offset));
    TraceDocument {
        id: None,
        message_id: message_id.to_string(),
        job_type: Some(JobType::PropertyScrape),
        status,
        url: Some(format!(
            "https://suumo.jp/ms/chuko/nc_{}/",
            rng.random::<u32>()
        )),
        line_user_id: Some(format!("U{:04}", rng.random_range(0..50))),
        check_only: Some(false),
        created_at: at(600_000),
        updated_at: at(rng.random_range(0..500_000)),
        started_at: (status != JobStatus::Queued).then(|| at(550_000)).flatten(),
        completed_at: status.is_terminal().then(|| at(500_000)).flatten(),
        error: (status == JobStatus::Failed).then(|| "scrape failed".to_owned()),
        result: None,
        attempt: None,
        rank: None,
        history: Vec::new(),
        expire_at: None,
        progress: None,
        pending_completions: Vec::new(),
    }
}

/// `doc` as the original system stored it: the fields it never wrote are absent, not
/// `null`.
pub fn legacy_document(doc: &TraceDocument) -> bson::Document {
    let mut stored = bson::to_document(doc).expect("a trace is a document");
    for absent in ["attempt", "rank", "history", "expire_at", "progress"] {
        stored.remove(absent);
    }
    stored
}

/// What the rules say of a legacy trace `start` after `history`: at the key its status
/// implies for attempt 1, so only a later attempt's message (or, for a `queued` one,
/// any greater key) moves its status.
pub fn check_legacy_semantics(
    start: &TraceDocument,
    history: &History,
    doc: &TraceDocument,
) -> Result<(), String> {
    let implied = job_trace::model::TraceKey::implied_by_legacy(start.status);
    let greatest = current_status(history);
    let expected = if greatest.key > implied {
        greatest.status
    } else {
        start.status
    };
    if doc.status != expected {
        return Err(format!(
            "a legacy {} trace after messages up to {:?} is {}, not {expected}",
            start.status, greatest.key, doc.status
        ));
    }
    Ok(())
}
