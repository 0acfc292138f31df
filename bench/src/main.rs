//! `make bench`: both functions, built in release mode, under load against their own
//! SecantusDB with a realistic data set; beside them the same loads sent straight to the
//! database (the ceiling) and the original system's read-then-write pattern; trace-writer
//! with each write strategy, and its memory with worst-case pushes in flight. Prints one
//! table and writes `bench/results.json`.
//!
//! Every load runs once per database delay: straight to the database, and through a proxy
//! that holds each reply back (2 ms: the database a network hop away, as in production).
//!
//! Knobs: `BENCH_QUICK=1` (one short run on a small data set, for development),
//! `BENCH_RUNS`, `BENCH_SECONDS`, `BENCH_CONNS` (e.g. `1,8,32`), `BENCH_DELAYS_MS` (e.g.
//! `0,2`), `BENCH_USERS`, `BENCH_WRITER_BEFORE` (an older trace-writer to measure
//! worst-case memory beside).

mod counting;
mod data;
mod direct;
mod instructions;
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
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("proxy") {
        let number = |i: usize| -> u64 {
            args.get(i)
                .and_then(|a| a.parse().ok())
                .expect("bench proxy UPSTREAM DELAY_MS PORT")
        };
        proxy::serve_as_process(
            number(2) as u16,
            Duration::from_millis(number(3)),
            number(4) as u16,
        );
    }
    if args.get(1).map(String::as_str) == Some("floor") {
        let (Some(uri), Some(ids), Some(seconds)) = (args.get(2), args.get(3), args.get(4)) else {
            panic!("bench floor URI IDS_FILE SECONDS");
        };
        instructions::floor_client(uri, ids.as_ref(), seconds.parse().expect("SECONDS"));
    }
    let settings = Settings::from_env();
    let root = project_root();
    let bins = locate_binaries(&root);
    let work = root.join("target/bench-run");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).expect("work directory");
    if args.get(1).map(String::as_str) == Some("instructions") {
        let before = std::env::var_os("BENCH_INSTRUCTIONS_BEFORE").map(Into::into);
        instructions::main(Bench::open(settings, bins, &work), before);
        return;
    }
    let machine = machine();
    let started_at = chrono::Utc::now();
    eprintln!(
        "bench: {} runs x {:?} at connections {:?}, database replies delayed {:?} ms; data set {} users x {} jobs{}",
        settings.runs,
        settings.duration,
        settings.conns,
        settings.delays_ms,
        settings.users,
        settings.jobs_per_user,
        if settings.quick { " (BENCH_QUICK)" } else { "" }
    );

    let mut bench = Bench::open(settings, bins, &work);
    let functions = start_functions(&bench.bins, &work, &bench.db_uri.clone(), "");
    std::thread::sleep(Duration::from_secs(1));
    let idle = memory::idle(&functions);
    bench.tag_and_check(&functions);

    let mut samples = Vec::new();
    let mut largest_rss = std::collections::BTreeMap::new();
    let mut functions = Some(functions);
    for delay_ms in bench.settings.delays_ms.clone() {
        let endpoint = bench.endpoint(delay_ms);
        let delayed = match functions.take() {
            Some(direct) if delay_ms == 0 => direct,
            _ => start_functions(&bench.bins, &work, &endpoint.uri, &format!("-{delay_ms}ms")),
        };
        eprintln!("bench: database replies delayed {delay_ms} ms");
        let (mut measured, rss) = bench.measure(&delayed, &endpoint);
        samples.append(&mut measured);
        for (name, mib) in rss {
            let peak: &mut f64 = largest_rss.entry(name).or_default();
            *peak = peak.max(mib);
        }
        // The peak of the functions that ran longest: the last ones.
        functions = Some(delayed);
    }
    let functions = functions.expect("functions ran");
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
