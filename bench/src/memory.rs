//! trace-writer's peak memory with worst-case pushes in flight at once, beside the
//! container it is deployed in: Terraform's `memory` and trace-writer `concurrency`.
//!
//! A worst-case push is a status event whose `result` is about 10 MB of small JSON
//! objects, as large as Pub/Sub carries. `BENCH_WRITER_BEFORE=/path/to/trace-writer`
//! measures an older build beside this one (8 in flight only: without a bound it takes
//! hundreds of MiB per push, and `concurrency` of them would take the machine).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use job_trace::push::{MAX_MESSAGE_DATA_BYTES, PUSH_MEMORY_BUDGET_BYTES};
use job_trace_tests::project_root;
use serde_json::{json, Value};
use trace_writer::config::default_push_memory;

use crate::data;
use crate::procstat;
use crate::setup::{now_ms, start_writer, Bench, Functions, WriteStrategy};

const MIB: usize = 1024 * 1024;
/// The in-flight counts measured besides Terraform's `concurrency`.
const FEW_IN_FLIGHT: usize = 8;

/// A variable's default in terraform/variables.tf, as written (quotes removed).
fn terraform_default(name: &str) -> String {
    let path = project_root().join("terraform/variables.tf");
    let text = std::fs::read_to_string(&path).expect("terraform/variables.tf");
    let block = text
        .split(&format!("variable \"{name}\""))
        .nth(1)
        .unwrap_or_else(|| panic!("variable {name} in {}", path.display()));
    block
        .lines()
        .find_map(|line| line.trim().strip_prefix("default"))
        .and_then(|rest| rest.trim().strip_prefix('='))
        .map(|value| value.trim().trim_matches('"').to_owned())
        .unwrap_or_else(|| panic!("variable {name} has no default"))
}

/// `256Mi`, `1Gi` or a plain number of bytes, in bytes.
fn kubernetes_quantity(raw: &str) -> usize {
    let (number, unit) = raw.split_at(raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len()));
    let number: usize = number.parse().expect("a memory figure");
    number
        * match unit {
            "" => 1,
            "Ki" => 1024,
            "Mi" => MIB,
            "Gi" => 1024 * MIB,
            other => panic!("memory unit {other:?}"),
        }
}

/// One status event with a result of small objects, its data just under Pub/Sub's limit.
fn worst_case_push() -> String {
    let job = data::next_id();
    let mut result = String::from("[");
    let mut i = 0;
    // Base64 of the data must stay under the data limit once decoded; leave the rest of
    // the event a few hundred bytes.
    while result.len() < MAX_MESSAGE_DATA_BYTES - 1_000 {
        if i > 0 {
            result.push(',');
        }
        result.push_str(&format!(r#"{{"i":{i},"ok":true,"v":"ab"}}"#));
        i += 1;
    }
    result.push(']');
    let event = format!(r#"{{"message_id":"{job}","status":"success","result":{result}}}"#);
    data::wrap(&data::next_id(), &event, now_ms(), Some(&job))
}

/// Sends `in_flight` copies of `body` at once to a fresh writer; its VmHWM after all
/// have been answered, and the answers.
fn peak_with(
    bench: &Bench,
    binary: &Path,
    push_memory_mib: usize,
    in_flight: usize,
    body: &Bytes,
) -> Value {
    let log = bench
        .work
        .join(format!("trace-writer-memory-{in_flight}.log"));
    let (writer, port) = start_writer(
        binary,
        &log,
        &bench.db_uri,
        WriteStrategy::Pipeline,
        &[("PUSH_MEMORY_MIB", push_memory_mib.to_string())],
    );
    let idle = procstat::hwm_mib(writer.pid());
    let started = Instant::now();
    let answers = bench.rt.block_on(async {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .expect("http client");
        let sends = (0..in_flight).map(|_| {
            http.post(format!("http://127.0.0.1:{port}/"))
                .header("Content-Type", "application/json")
                .body(body.clone())
                .send()
        });
        let mut answers = std::collections::BTreeMap::<String, u64>::new();
        for answer in futures::future::join_all(sends).await {
            let status = answer.map_or(0, |r| r.status().as_u16());
            *answers.entry(status.to_string()).or_default() += 1;
        }
        answers
    });
    let seconds = started.elapsed().as_secs_f64();
    json!({
        "in_flight": in_flight,
        "idle_vmhwm_mib": idle,
        "peak_vmhwm_mib": procstat::hwm_mib(writer.pid()),
        "answers": answers,
        "seconds": seconds,
    })
}

pub fn worst_case_pushes(bench: &Bench) -> Value {
    let memory = terraform_default("trace_writer_memory");
    let container_bytes = kubernetes_quantity(&memory);
    let concurrency: usize = terraform_default("trace_writer_concurrency")
        .parse()
        .expect("trace_writer_concurrency is a number");
    // What trace-writer would give its pushes in that container.
    let push_memory_mib = default_push_memory(Some(container_bytes)) / MIB;
    let body = Bytes::from(worst_case_push());
    let mut builds: Vec<(&str, PathBuf, Vec<usize>)> = vec![(
        "this build",
        bench.bins.writer.clone(),
        vec![FEW_IN_FLIGHT, concurrency],
    )];
    if let Some(before) = std::env::var_os("BENCH_WRITER_BEFORE") {
        builds.insert(
            0,
            ("BENCH_WRITER_BEFORE", before.into(), vec![FEW_IN_FLIGHT]),
        );
    }
    let rows: Vec<Value> = builds
        .into_iter()
        .flat_map(|(build, binary, counts)| {
            counts.into_iter().map(move |n| (build, binary.clone(), n))
        })
        .map(|(build, binary, in_flight)| {
            eprintln!("bench: {in_flight} worst-case pushes at once into trace-writer ({build})");
            let mut row = peak_with(bench, &binary, push_memory_mib, in_flight, &body);
            row["build"] = json!(build);
            row
        })
        .collect();
    json!({
        "container_memory": memory,
        "container_memory_mib": container_bytes / MIB,
        "trace_writer_concurrency": concurrency,
        "push_memory_mib": push_memory_mib,
        "budget_per_worst_case_push_mib": PUSH_MEMORY_BUDGET_BYTES as f64 / MIB as f64,
        "push_body_bytes": body.len(),
        "runs": rows,
    })
}

/// Both functions' memory around the throughput loads: idle, after, and the largest.
pub fn under_load(
    idle: Value,
    functions: &Functions,
    largest_between_runs: BTreeMap<&'static str, f64>,
) -> Value {
    let (writer, _) = functions.writer(WriteStrategy::Pipeline);
    json!({
        "idle_vmrss": idle,
        "after_load_vmrss": {
            "trace_api_mib": procstat::rss_mib(functions.api.pid()),
            "trace_writer_mib": procstat::rss_mib(writer.pid()),
        },
        "peak_vmhwm": {
            "trace_api_mib": procstat::hwm_mib(functions.api.pid()),
            "trace_writer_mib": procstat::hwm_mib(writer.pid()),
        },
        "largest_vmrss_seen_between_runs": largest_between_runs,
    })
}

/// Both functions' VmRSS now.
pub fn idle(functions: &Functions) -> Value {
    let (writer, _) = functions.writer(WriteStrategy::Pipeline);
    json!({
        "trace_api_mib": procstat::rss_mib(functions.api.pid()),
        "trace_writer_mib": procstat::rss_mib(writer.pid()),
    })
}
