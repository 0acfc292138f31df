//! `make bench`: both functions, built in release mode, under load against their own
//! SecantusDB with a realistic data set; beside them the same loads sent straight to the
//! database (the ceiling) and the original system's read-then-write pattern; trace-writer
//! with each write strategy, and its memory with worst-case pushes in flight. Prints one
//! table and writes `bench/results.json`.
//!
//! Knobs: `BENCH_QUICK=1` (one short run on a small data set, for development),
//! `BENCH_RUNS`, `BENCH_SECONDS`, `BENCH_CONNS` (e.g. `1,8,32`), `BENCH_USERS`,
//! `BENCH_WRITER_BEFORE` (an older trace-writer to measure worst-case memory beside).

mod counting;
mod data;
mod direct;
mod memory;
mod procstat;
mod proxy;
mod report;
mod scenarios;
mod services;
mod setup;

use std::time::Duration;

use job_trace_tests::project_root;

use crate::scenarios::cold_starts;
use crate::setup::{locate_binaries, machine, start_functions, Bench, Settings};

fn main() {
    let settings = Settings::from_env();
    let root = project_root();
    let bins = locate_binaries(&root);
    let work = root.join("target/bench-run");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).expect("work directory");
    let machine = machine();
    let started_at = chrono::Utc::now();
    eprintln!(
        "bench: {} runs x {:?} at connections {:?}; data set {} users x {} jobs{}",
        settings.runs,
        settings.duration,
        settings.conns,
        settings.users,
        settings.jobs_per_user,
        if settings.quick { " (BENCH_QUICK)" } else { "" }
    );

    let mut bench = Bench::open(settings, bins, &work);
    let functions = start_functions(&bench.bins, &work, &bench.db_uri.clone(), "");
    std::thread::sleep(Duration::from_secs(1));
    let idle = memory::idle(&functions);
    bench.tag_and_check(&functions);

    let (samples, largest_rss) = bench.measure(&functions);
    let memory = memory::under_load(idle, &functions, largest_rss);
    drop(functions);

    eprintln!("bench: counting database commands per operation");
    let commands = counting::count_commands(&mut bench);
    eprintln!("bench: trace-writer's memory with worst-case pushes in flight");
    let worst_case = memory::worst_case_pushes(&bench);
    eprintln!("bench: cold starts");
    let starts = bench.settings.cold_starts;
    let cold_api = cold_starts(&mut bench, true, starts);
    let cold_writer = cold_starts(&mut bench, false, starts);

    let results = report::build(
        &samples,
        machine,
        bench.tools_json(),
        bench.settings_json(),
        memory,
        worst_case,
        commands,
        &cold_api,
        &cold_writer,
        started_at,
    );
    println!("{}", report::table(&results));
    let path = root.join("bench/results.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&results).expect("results JSON") + "\n",
    )
    .expect("write bench/results.json");
    eprintln!("bench: wrote {}", path.display());
}
