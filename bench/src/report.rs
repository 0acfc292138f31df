//! Medians and spreads of the runs, `bench/results.json`, and the printed table.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{json, Value};

use crate::scenarios::{Sample, Scenario};

/// Median, min and max.
fn spread(values: &[f64]) -> Value {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return Value::Null;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    json!({ "median": round(median), "min": round(v[0]), "max": round(v[n - 1]) })
}

fn round(x: f64) -> f64 {
    if x.abs() >= 100.0 {
        x.round()
    } else {
        (x * 1000.0).round() / 1000.0
    }
}

#[allow(clippy::too_many_arguments)]
pub fn build(
    samples: &[Sample],
    machine: Value,
    tools: Value,
    settings: Value,
    memory: Value,
    worst_case_pushes: Value,
    commands: Value,
    cold_api: &[(f64, f64)],
    cold_writer: &[(f64, f64)],
    started_at: chrono::DateTime<chrono::Utc>,
) -> Value {
    let mut groups: BTreeMap<(u64, usize, Scenario), Vec<&Sample>> = BTreeMap::new();
    for s in samples {
        groups
            .entry((s.delay_ms, s.conns, s.scenario))
            .or_default()
            .push(s);
    }
    let find = |scenario: Scenario, delay: u64, conns: usize, run: usize| {
        samples.iter().find(|s| {
            s.scenario == scenario && s.delay_ms == delay && s.conns == conns && s.run == run
        })
    };
    let settings_seen: std::collections::BTreeSet<(u64, usize)> =
        groups.keys().map(|k| (k.0, k.1)).collect();
    let mut loads = Vec::new();
    for &(delay, conns) in &settings_seen {
        for scenario in Scenario::ALL {
            let Some(runs) = groups.get(&(delay, conns, scenario)) else {
                continue;
            };
            let pick =
                |f: fn(&Sample) -> f64| spread(&runs.iter().map(|s| f(s)).collect::<Vec<_>>());
            // Ratios are taken run by run: a service and its ceiling ran back to back.
            let vs_ceiling = scenario.ceiling().map(|ceiling| {
                let ratios: Vec<f64> = runs
                    .iter()
                    .filter_map(|s| find(ceiling, delay, conns, s.run).map(|c| s.rps / c.rps))
                    .collect();
                json!({ "ceiling": ceiling.key(), "throughput_ratio": spread(&ratios) })
            });
            loads.push(json!({
                "load": scenario.key(),
                "label": scenario.label().trim(),
                "database_reply_delay_ms": delay,
                "connections": conns,
                "requests_per_second": pick(|s| s.rps),
                "p50_ms": pick(|s| s.p50_ms),
                "p99_ms": pick(|s| s.p99_ms),
                "p999_ms": pick(|s| s.p999_ms),
                "service_cpu_us_per_request": pick(|s| s.service_cpu_us.unwrap_or(f64::NAN)),
                "client_cpu_us_per_request": pick(|s| s.client_cpu_us.unwrap_or(f64::NAN)),
                "wakeups_per_request": pick(|s| s.wakeups),
                "database_cpu_us_per_request": pick(|s| s.db_cpu_us),
                "errors": runs.iter().map(|s| s.errors).sum::<u64>(),
                "vs_ceiling": vs_ceiling,
                "runs": runs.iter().map(|s| json!({
                    "run": s.run + 1,
                    "requests": s.requests,
                    "errors": s.errors,
                    "requests_per_second": round(s.rps),
                    "p50_ms": round(s.p50_ms),
                    "p99_ms": round(s.p99_ms),
                    "p999_ms": round(s.p999_ms),
                    "service_cpu_us_per_request": s.service_cpu_us.map(round),
                    "client_cpu_us_per_request": s.client_cpu_us.map(round),
                    "wakeups_per_request": round(s.wakeups),
                    "database_cpu_us_per_request": round(s.db_cpu_us),
                })).collect::<Vec<_>>(),
            }));
        }
    }
    let original: Vec<Value> = settings_seen
        .iter()
        .map(|&(delay, conns)| {
            let per_run = |a: Scenario, b: Scenario, f: fn(&Sample) -> f64| {
                let ratios: Vec<f64> = samples
                    .iter()
                    .filter(|s| s.scenario == a && s.delay_ms == delay && s.conns == conns)
                    .filter_map(|s| find(b, delay, conns, s.run).map(|o| f(s) / f(o)))
                    .collect();
                spread(&ratios)
            };
            // A service's CPU per request, or a direct client's per operation.
            let cpu = |s: &Sample| s.service_cpu_us.or(s.client_cpu_us).unwrap_or(f64::NAN);
            json!({
                "database_reply_delay_ms": delay,
                "connections": conns,
                "status_cpu_over_original_read_cpu": per_run(Scenario::Status, Scenario::OriginalRead, cpu),
                "status_cpu_over_floor_cpu": per_run(Scenario::Status, Scenario::FloorFind, cpu),
                "revalidate_cpu_over_original_read_cpu": per_run(Scenario::Revalidate, Scenario::OriginalRead, cpu),
                "one_update_over_original_throughput": per_run(Scenario::CeilingUpdate, Scenario::Original, |s| s.rps),
                "original_over_one_update_p50": per_run(Scenario::Original, Scenario::CeilingUpdate, |s| s.p50_ms),
                "service_push_over_original_throughput": per_run(Scenario::Push, Scenario::Original, |s| s.rps),
            })
        })
        .collect();
    let cold = |runs: &[(f64, f64)]| {
        json!({
            "starts": runs.len(),
            "exec_to_healthz_ms": spread(&runs.iter().map(|r| r.0).collect::<Vec<_>>()),
            "exec_to_first_database_answer_ms": spread(&runs.iter().map(|r| r.1).collect::<Vec<_>>()),
        })
    };
    json!({
        "command": "make bench",
        "started_at": started_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "finished_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "machine": machine,
        "tools": tools,
        "settings": settings,
        "loads": loads,
        "original_comparison": original,
        "memory": memory,
        "worst_case_pushes": worst_case_pushes,
        "cold_start": {
            "trace_api": cold(cold_api),
            "trace_writer": cold(cold_writer),
            "first_database_answer": "trace-api: 200 for GET /api/v1/jobs/status/{id}; trace-writer: 204 for a push",
        },
        "commands_per_operation": commands,
    })
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

/// `1234 (1200–1300)`, or `0.41 (0.40–0.45)`.
fn cell(v: &Value, decimals: usize) -> String {
    if v.is_null() {
        return "-".into();
    }
    format!(
        "{:.d$} ({:.d$}–{:.d$})",
        num(&v["median"]),
        num(&v["min"]),
        num(&v["max"]),
        d = decimals
    )
}

fn median(v: &Value, decimals: usize) -> String {
    if v.is_null() {
        "-".into()
    } else {
        format!("{:.d$}", num(&v["median"]), d = decimals)
    }
}

pub fn table(results: &Value) -> String {
    let m = &results["machine"];
    let s = &results["settings"];
    let mut out = String::new();
    let _ = writeln!(
        out,
        "job trace bench, {}: {} cores ({}), {} GiB, shared (load average {} at start)",
        results["started_at"].as_str().unwrap_or(""),
        m["cores"],
        m["cpu_model"].as_str().unwrap_or(""),
        m["memory_gib"],
        m["load_average_at_start"].as_str().unwrap_or("")
    );
    let _ = writeln!(
        out,
        "{}; {} runs x {} s per figure, median (min–max of runs); data set {} users x {} jobs ({} pushes through the store); wrk keep-alive",
        results["tools"]["database"].as_str().unwrap_or(""),
        s["runs"],
        s["seconds_per_run"],
        s["users"],
        s["jobs_per_user"],
        s["loaded_pushes"]
    );
    if let Some(refused) = results["tools"]["rust_server_refused"].as_str() {
        let _ = writeln!(
            out,
            "NOTE: the SecantusDB Rust server refused the store's write ({refused}); measured on the Python server"
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<31} {:>3}  {:<22} {:>6} {:<20} {:>8} {:>7} {:>5} {:>6}  {:<18}",
        "load",
        "c",
        "req/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "svc µs",
        "wakes",
        "db µs",
        "÷ ceiling"
    );
    let _ = writeln!(
        out,
        "(svc µs: CPU of the service process per request, from /proc; for a direct load, the direct client's own CPU per operation; wakes: its threads' voluntary context switches per request)"
    );
    let mut last = (u64::MAX, 0);
    for load in results["loads"].as_array().into_iter().flatten() {
        let conns = load["connections"].as_u64().unwrap_or(0) as usize;
        let delay = load["database_reply_delay_ms"].as_u64().unwrap_or(0);
        if delay != last.0 {
            let _ = writeln!(out);
            let _ = writeln!(
                out,
                "database replies delayed {delay} ms{}:",
                if delay == 0 {
                    " (no proxy)"
                } else {
                    " (proxy)"
                }
            );
        } else if conns != last.1 {
            let _ = writeln!(out);
        }
        last = (delay, conns);
        let cpu = if load["service_cpu_us_per_request"].is_null() {
            &load["client_cpu_us_per_request"]
        } else {
            &load["service_cpu_us_per_request"]
        };
        let ratio = load["vs_ceiling"]
            .get("throughput_ratio")
            .map_or("".into(), |r| cell(r, 2));
        let errors = load["errors"].as_u64().unwrap_or(0);
        let _ = writeln!(
            out,
            "{:<31} {:>3}  {:<22} {:>6} {:<20} {:>8} {:>7} {:>5} {:>6}  {:<18}{}",
            load["label"].as_str().unwrap_or(""),
            conns,
            cell(&load["requests_per_second"], 0),
            median(&load["p50_ms"], 2),
            cell(&load["p99_ms"], 2),
            median(&load["p999_ms"], 2),
            median(cpu, 0),
            median(&load["wakeups_per_request"], 2),
            median(&load["database_cpu_us_per_request"], 0),
            ratio,
            if errors > 0 {
                format!(" errors {errors}")
            } else {
                String::new()
            }
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "against the original, run by run: trace-api's CPU per status read and per 304 ÷ the original's per status read; its write pattern (find_one + update_one) vs one conditional update, direct client:");
    for row in results["original_comparison"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let _ = writeln!(
            out,
            "  {} ms c={:<3} CPU status ÷ original read {}, 304 ÷ original read {}, status ÷ floor {}; one update ÷ original, req/s {}; original ÷ one update, p50 {}; trace-writer push ÷ original, req/s {}",
            row["database_reply_delay_ms"],
            row["connections"],
            cell(&row["status_cpu_over_original_read_cpu"], 3),
            cell(&row["revalidate_cpu_over_original_read_cpu"], 3),
            cell(&row["status_cpu_over_floor_cpu"], 2),
            cell(&row["one_update_over_original_throughput"], 2),
            cell(&row["original_over_one_update_p50"], 2),
            cell(&row["service_push_over_original_throughput"], 2)
        );
    }
    let mem = &results["memory"];
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "memory MiB: trace-api idle VmRSS {:.1}, peak VmHWM {:.1}; trace-writer idle VmRSS {:.1}, peak VmHWM {:.1}",
        num(&mem["idle_vmrss"]["trace_api_mib"]),
        num(&mem["peak_vmhwm"]["trace_api_mib"]),
        num(&mem["idle_vmrss"]["trace_writer_mib"]),
        num(&mem["peak_vmhwm"]["trace_writer_mib"])
    );
    let worst = &results["worst_case_pushes"];
    let _ = writeln!(
        out,
        "trace-writer with worst-case pushes in flight ({} byte bodies, ~10 MB results of small objects); container {} MiB, push memory {} MiB, {:.1} MiB per worst-case push:",
        worst["push_body_bytes"],
        worst["container_memory_mib"],
        worst["push_memory_mib"],
        num(&worst["budget_per_worst_case_push_mib"]),
    );
    for run in worst["runs"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "  {:<20} {:>3} in flight: peak VmHWM {:>7.1} MiB (idle {:.1}) vs container {} MiB; answers {}; {:.1} s",
            run["build"].as_str().unwrap_or(""),
            run["in_flight"],
            num(&run["peak_vmhwm_mib"]),
            num(&run["idle_vmhwm_mib"]),
            worst["container_memory_mib"],
            run["answers"],
            num(&run["seconds"]),
        );
    }
    for (name, key) in [("trace-api", "trace_api"), ("trace-writer", "trace_writer")] {
        let c = &results["cold_start"][key];
        let _ = writeln!(
            out,
            "cold start {name} (median of {}): exec → 200 /healthz {} ms; exec → first database-backed answer {} ms",
            c["starts"],
            cell(&c["exec_to_healthz_ms"], 1),
            cell(&c["exec_to_first_database_answer_ms"], 1)
        );
    }
    let _ = writeln!(
        out,
        "database commands per operation (counted on the wire; physical limit 1):"
    );
    for (key, row) in results["commands_per_operation"]
        .as_object()
        .into_iter()
        .flatten()
    {
        let names: Vec<String> = row["by_name"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(name, n)| format!("{name} {n}"))
            .collect();
        let _ = writeln!(
            out,
            "  {:<34} {:.2}  ({} over {} operations)",
            key,
            num(&row["commands_per_operation"]),
            names.join(", "),
            row["operations"]
        );
    }
    out
}
