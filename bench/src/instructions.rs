//! `make bench-instructions`: the instructions each request costs in user space, counted
//! by callgrind. CPU time per request moves with whatever else the machine is doing (the
//! bench's cores are shared); an instruction count does not, so builds can be compared
//! on a busy machine: the functions as built now, optionally the binaries of another
//! build beside them (`BENCH_INSTRUCTIONS_BEFORE=DIR` holding `trace-api` and
//! `trace-writer`), and the floor: a client doing nothing but `findOne` on one thread.
//! The kernel's part (wake-ups, sockets) is not counted; the main bench's `wakes` column
//! counts the wake-ups.
//!
//! Every load runs at 1 connection behind the 2 ms proxy, as the functions run in
//! production; the counters are zeroed after a warm-up and dumped after the load
//! (`callgrind_control`), so start-up is not counted.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::direct::{self, DirectOp, Inputs};
use crate::scenarios::Scenario;
use crate::services::{count_instructions_into, Binaries};
use crate::setup::{start_functions, Bench, COLLECTION, DATABASE};

/// The loads measured, each on the process that serves it.
const LOADS: [Scenario; 5] = [
    Scenario::Status,
    Scenario::Revalidate,
    Scenario::User,
    Scenario::Push,
    Scenario::PushCas,
];

const DELAY_MS: u64 = 2;

/// What callgrind counted in `pid` since the last zeroing: dumps it and reads the total.
fn dump_instructions(dir: &Path, pid: u32) -> u64 {
    let status = Command::new("callgrind_control")
        .args(["--dump", &pid.to_string()])
        .output()
        .expect("run callgrind_control (valgrind)");
    assert!(status.status.success(), "callgrind_control --dump {pid}");
    let newest = std::fs::read_dir(dir)
        .expect("callgrind directory")
        .flatten()
        .filter(|f| {
            f.file_name()
                .to_string_lossy()
                .starts_with(&format!("callgrind.{pid}."))
        })
        .max_by_key(|f| f.metadata().and_then(|m| m.modified()).ok())
        .unwrap_or_else(|| panic!("callgrind wrote no dump for {pid}"));
    total_instructions(&std::fs::read_to_string(newest.path()).expect("read a callgrind dump"))
}

/// The `summary:` (or `totals:`) line of a callgrind dump: instructions executed.
fn total_instructions(dump: &str) -> u64 {
    dump.lines()
        .find_map(|l| l.strip_prefix("summary:").or(l.strip_prefix("totals:")))
        .and_then(|n| n.split_whitespace().next()?.parse().ok())
        .expect("a callgrind dump names its total")
}

fn zero(pid: u32) {
    let status = Command::new("callgrind_control")
        .args(["--zero", &pid.to_string()])
        .output()
        .expect("run callgrind_control (valgrind)");
    assert!(status.status.success(), "callgrind_control --zero {pid}");
}

/// Instructions per request of each load, for the functions in `bins`.
fn measure_functions(bench: &mut Bench, bins: &Binaries, dir: &Path, build: &str) -> Vec<Value> {
    let endpoint = bench.endpoint(DELAY_MS);
    let functions = start_functions(bins, &bench.work.clone(), &endpoint.uri, build);
    bench.tag_and_check(&functions);
    let duration = bench.settings.duration;
    LOADS
        .iter()
        .map(|&scenario| {
            let pid = match scenario.write_strategy() {
                Some(strategy) => functions.writer(strategy).0.pid(),
                None => functions.api.pid(),
            };
            bench.run(scenario, 1, bench.settings.warmup, &functions, &endpoint);
            zero(pid);
            let sample = bench.run(scenario, 1, duration, &functions, &endpoint);
            let instructions = dump_instructions(dir, pid);
            let per_request = instructions as f64 / sample.requests.max(1) as f64;
            eprintln!(
                "bench: {build:<8} {:<34} {:>6} requests  {:>9.0} instructions per request",
                scenario.label().trim(),
                sample.requests,
                per_request
            );
            json!({
                "build": build,
                "load": scenario.key(),
                "label": scenario.label().trim(),
                "requests": sample.requests,
                "errors": sample.errors,
                "instructions_per_request": per_request.round(),
            })
        })
        .collect()
}

/// `bench floor URI IDS_FILE SECONDS`: `findOne` by random id on one thread for SECONDS;
/// prints how many. Run under callgrind by [`measure_floor`].
pub fn floor_client(uri: &str, ids_file: &Path, seconds: u64) -> ! {
    let ids: Vec<String> = std::fs::read_to_string(ids_file)
        .expect("ids file")
        .lines()
        .map(str::to_owned)
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let outcome = rt.block_on(async {
        let client = mongodb::Client::with_uri_str(uri)
            .await
            .expect("database uri");
        let traces = client.database(DATABASE).collection(COLLECTION);
        let inputs = Arc::new(Inputs {
            ids: Arc::new(ids),
            users: Arc::new(Vec::new()),
            changes: Arc::new(Vec::new()),
        });
        direct::run(
            DirectOp::Find,
            traces.clone(),
            traces,
            inputs,
            1,
            Duration::from_secs(seconds),
        )
        .await
    });
    println!("{}", outcome.requests);
    std::process::exit(0)
}

/// The floor's instructions per `findOne`: two whole runs of different lengths, so that
/// start-up cancels out of their difference.
fn measure_floor(bench: &Bench, dir: &Path) -> Value {
    let endpoint = bench.endpoint(DELAY_MS);
    let run = |seconds: u64| -> (u64, u64) {
        let out = dir.join(format!("floor-{seconds}.callgrind"));
        let output = Command::new("valgrind")
            .arg("--tool=callgrind")
            .arg(format!("--callgrind-out-file={}", out.display()))
            .arg(std::env::current_exe().expect("the bench binary"))
            .args(["floor", &endpoint.uri])
            .arg(&bench.ids_file)
            .arg(seconds.to_string())
            .output()
            .expect("run the floor client under valgrind");
        assert!(output.status.success(), "the floor client failed");
        let finds: u64 = String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .expect("the floor client prints its count");
        let dump = std::fs::read_to_string(&out).expect("read the floor's callgrind output");
        (finds, total_instructions(&dump))
    };
    let short = run(2);
    let long = run(2 + bench.settings.duration.as_secs());
    let per_find = (long.1 as f64 - short.1 as f64) / (long.0 as f64 - short.0 as f64).max(1.0);
    eprintln!(
        "bench: floor    direct findOne, 1 thread           {:>6} finds     {per_find:>9.0} instructions per find",
        long.0 - short.0
    );
    json!({
        "build": "floor",
        "load": "direct_find_one_single_thread",
        "label": "direct findOne, 1 thread (floor)",
        "requests": long.0 - short.0,
        "instructions_per_request": per_find.round(),
    })
}

pub fn main(mut bench: Bench, before: Option<PathBuf>) {
    let dir = bench.work.join("callgrind");
    std::fs::create_dir_all(&dir).expect("callgrind directory");
    count_instructions_into(dir.clone());
    let started = Instant::now();
    let mut rows = Vec::new();
    if let Some(before) = before {
        let bins = Binaries {
            api: before.join("trace-api"),
            writer: before.join("trace-writer"),
            wrk: bench.bins.wrk.clone(),
        };
        rows.extend(measure_functions(&mut bench, &bins, &dir, "before"));
    }
    let bins = Binaries {
        api: bench.bins.api.clone(),
        writer: bench.bins.writer.clone(),
        wrk: bench.bins.wrk.clone(),
    };
    rows.extend(measure_functions(&mut bench, &bins, &dir, "now"));
    rows.push(measure_floor(&bench, &dir));
    let results = json!({
        "command": "make bench-instructions",
        "database_reply_delay_ms": DELAY_MS,
        "connections": 1,
        "seconds_per_load": bench.settings.duration.as_secs(),
        "counted_by": "valgrind --tool=callgrind (user-space instructions of the process; the kernel is not counted)",
        "loads": rows,
        "took_seconds": started.elapsed().as_secs(),
    });
    println!("{}", serde_json::to_string_pretty(&results).expect("JSON"));
    let path = job_trace_tests::project_root().join("bench/instructions.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&results).expect("JSON") + "\n",
    )
    .expect("write bench/instructions.json");
    eprintln!("bench: wrote {}", path.display());
}
