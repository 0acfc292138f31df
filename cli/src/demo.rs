//! `jobtrace demo`: a few jobs, a worker played by the CLI, and their traces followed live
//! until each reaches the final state it was driven to.

use std::time::Duration;

use job_trace::model::JobStatus;
use serde_json::{json, Value};

use crate::messages::{job_message, StatusReport};
use crate::transport::Sink;
use crate::watch::{describe, status_of, transition_key, Api};
use crate::Failure;

/// One job of the demo and what the worker does with it.
struct Script {
    label: &'static str,
    url: Option<&'static str>,
    steps: Vec<(JobStatus, u32, Option<&'static str>)>,
}

impl Script {
    fn expected(&self) -> JobStatus {
        self.steps
            .last()
            .map(|step| step.0)
            .unwrap_or(JobStatus::Queued)
    }

    fn final_attempt(&self) -> u64 {
        self.steps.last().map(|step| u64::from(step.1)).unwrap_or(0)
    }
}

fn scripts() -> Vec<Script> {
    use JobStatus::*;
    vec![
        Script {
            label: "scrape, succeeds",
            url: Some("https://suumo.jp/ms/chuko/tokyo/sc_shinjuku/nc_98142765/"),
            steps: vec![(Processing, 1, None), (Success, 1, None)],
        },
        Script {
            label: "scrape, fails",
            url: Some("https://suumo.jp/ms/chuko/tokyo/sc_shibuya/nc_12345678/"),
            steps: vec![
                (Processing, 1, None),
                (Failed, 1, Some("HTTP 503 from suumo.jp")),
            ],
        },
        Script {
            label: "scrape, listing gone",
            url: Some("https://suumo.jp/ms/chuko/tokyo/sc_meguro/nc_00000000/"),
            steps: vec![(Processing, 1, None), (NotFound, 1, None)],
        },
        Script {
            label: "batch check, retried",
            url: None,
            steps: vec![
                (Processing, 1, None),
                (Failed, 1, Some("timeout after 30 s")),
                (Processing, 2, None),
                (Success, 2, None),
            ],
        },
    ]
}

/// Runs the demo for `user`, one worker step every `pace`. Returns whether every job
/// ended in the state it was driven to.
pub async fn run(sink: &Sink, api: &Api, user: &str, pace: Duration) -> Result<bool, Failure> {
    let scripts = scripts();
    let mut ids = Vec::new();
    for script in &scripts {
        let id = sink
            .publish_job(&job_message(script.url, user, script.url.is_none()))
            .await?;
        println!("enqueued  {id}  {}", script.label);
        ids.push(id);
    }
    println!(
        "\nwatch them on the status page: {}/?q={user}\n",
        api.base()
    );

    let followers: Vec<_> = scripts
        .iter()
        .zip(&ids)
        .map(|(script, id)| {
            let (api, id, label) = (api.clone(), id.clone(), script.label);
            let (expected, attempt) = (script.expected(), script.final_attempt());
            // The demo knows its worker's plan, so a failure it will retry is not the end.
            let done = move |trace: &Value| {
                status_of(trace) == Some(expected)
                    && trace.get("attempt").and_then(Value::as_u64) == Some(attempt)
            };
            tokio::spawn(async move {
                let mut last = None;
                let show = |trace: &Value| {
                    let key = transition_key(trace);
                    if last.as_ref() != Some(&key) {
                        println!("{label:<22} {}", describe(trace));
                        last = Some(key);
                    }
                };
                api.follow_until(&id, Duration::from_secs(60), show, done)
                    .await
            })
        })
        .collect();

    // The worker: every job's next step in turn, so the traces move side by side.
    let longest = scripts.iter().map(|s| s.steps.len()).max().unwrap_or(0);
    for step in 0..longest {
        tokio::time::sleep(pace).await;
        for (script, id) in scripts.iter().zip(&ids) {
            let Some(&(status, attempt, error)) = script.steps.get(step) else {
                continue;
            };
            let mut report = StatusReport::new(id, status, attempt);
            report.error = error.map(str::to_owned);
            if status == JobStatus::Success {
                report.result = Some(result_for(script));
            }
            sink.publish_event(id, &report.payload()).await?;
        }
    }

    let mut all_converged = true;
    println!();
    for ((script, id), follower) in scripts.iter().zip(&ids).zip(followers) {
        let outcome = tokio::time::timeout(Duration::from_secs(90), follower).await;
        let final_trace: Result<Value, Failure> = match outcome {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => Err(Failure::new(format!("follower stopped: {e}"))),
            Err(_) => Err(Failure::new("no terminal status within 90 s".to_owned())),
        };
        let expected = script.expected();
        match final_trace {
            Ok(trace) if status_of(&trace) == Some(expected) => {
                println!("ok        {id}  {:<22} {}", script.label, expected.as_str());
            }
            Ok(trace) => {
                all_converged = false;
                println!(
                    "WRONG     {id}  {:<22} expected {}, got {}",
                    script.label,
                    expected.as_str(),
                    describe(&trace)
                );
            }
            Err(e) => {
                all_converged = false;
                println!("MISSING   {id}  {:<22} {e}", script.label);
            }
        }
    }
    Ok(all_converged)
}

fn result_for(script: &Script) -> Value {
    match script.url {
        Some(url) => json!({"url": url, "properties_found": 1, "price_jpy": 45_800_000}),
        None => json!({"checked": 12, "changed": 2}),
    }
}
