//! `make bench`: both functions, built in release mode, under load against their own
//! SecantusDB with a realistic data set; beside them the same loads sent straight to the
//! database (the ceiling) and the original system's read-then-write pattern. Prints one
//! table and writes `bench/results.json`.
//!
//! Knobs: `BENCH_QUICK=1` (one short run on a small data set, for development),
//! `BENCH_RUNS`, `BENCH_SECONDS`, `BENCH_CONNS` (e.g. `1,8,32`), `BENCH_USERS`.

mod data;
mod direct;
mod procstat;
mod proxy;
mod report;
mod services;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bson::Document;
use futures::{StreamExt, TryStreamExt};
use job_trace::config::DatabaseConfig;
use job_trace::TraceStore;
use mongodb::options::ClientOptions;
use mongodb::{Client, Collection};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::direct::{DirectOp, Inputs};
use crate::services::{function_command, http_status, Binaries, Process};
use job_trace_tests::{free_port, project_root, wait_for_port, Server};

const DATABASE: &str = "job_trace_bench";
const COLLECTION: &str = "job_traces";
const ORIGINAL_COLLECTION: &str = "job_traces_original";
/// How many ETags the revalidation load picks from.
const ETAG_SAMPLE: usize = 2_000;

pub struct Settings {
    pub quick: bool,
    pub runs: usize,
    pub duration: Duration,
    pub warmup: Duration,
    pub conns: Vec<usize>,
    pub users: usize,
    pub jobs_per_user: usize,
    pub cold_starts: usize,
    pub counted: usize,
}

impl Settings {
    fn from_env() -> Settings {
        let quick = std::env::var("BENCH_QUICK").is_ok_and(|v| v == "1");
        let number = |name: &str, default: usize| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(default)
        };
        let conns = std::env::var("BENCH_CONNS")
            .ok()
            .map(|v| {
                v.split(',')
                    .filter_map(|c| c.trim().parse().ok())
                    .collect::<Vec<usize>>()
            })
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| vec![1, 8, 32]);
        Settings {
            quick,
            runs: number("BENCH_RUNS", if quick { 1 } else { 3 }).max(1),
            duration: Duration::from_secs(
                number("BENCH_SECONDS", if quick { 2 } else { 10 }).max(1) as u64,
            ),
            warmup: Duration::from_secs(if quick { 1 } else { 3 }),
            conns,
            users: number("BENCH_USERS", if quick { 100 } else { 1_000 }).max(1),
            jobs_per_user: 50,
            cold_starts: if quick { 5 } else { 20 },
            counted: if quick { 200 } else { 1_000 },
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scenario {
    Status,
    User,
    Revalidate,
    Push,
    CeilingFind,
    CeilingList,
    CeilingUpdate,
    Original,
}

impl Scenario {
    pub const ALL: [Scenario; 8] = [
        Scenario::Status,
        Scenario::CeilingFind,
        Scenario::Revalidate,
        Scenario::User,
        Scenario::CeilingList,
        Scenario::Push,
        Scenario::CeilingUpdate,
        Scenario::Original,
    ];

    pub fn key(self) -> &'static str {
        match self {
            Scenario::Status => "api_status",
            Scenario::User => "api_user_list",
            Scenario::Revalidate => "api_revalidate_304",
            Scenario::Push => "writer_push",
            Scenario::CeilingFind => "direct_find_one",
            Scenario::CeilingList => "direct_user_aggregate",
            Scenario::CeilingUpdate => "direct_conditional_update",
            Scenario::Original => "direct_original_find_then_update",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Scenario::Status => "trace-api status by id",
            Scenario::User => "trace-api user list limit=50",
            Scenario::Revalidate => "trace-api 304 If-None-Match",
            Scenario::Push => "trace-writer push",
            Scenario::CeilingFind => "  direct findOne (ceiling)",
            Scenario::CeilingList => "  direct aggregate (ceiling)",
            Scenario::CeilingUpdate => "  direct cond. update (ceiling)",
            Scenario::Original => "  original find+update",
        }
    }

    /// What the database alone does for the same load.
    pub fn ceiling(self) -> Option<Scenario> {
        match self {
            Scenario::Status | Scenario::Revalidate => Some(Scenario::CeilingFind),
            Scenario::User => Some(Scenario::CeilingList),
            Scenario::Push | Scenario::Original => Some(Scenario::CeilingUpdate),
            _ => None,
        }
    }

    fn direct(self) -> Option<DirectOp> {
        match self {
            Scenario::CeilingFind => Some(DirectOp::Find),
            Scenario::CeilingList => Some(DirectOp::List),
            Scenario::CeilingUpdate => Some(DirectOp::Update),
            Scenario::Original => Some(DirectOp::Original),
            _ => None,
        }
    }

    fn writes(self) -> bool {
        matches!(
            self,
            Scenario::Push | Scenario::CeilingUpdate | Scenario::Original
        )
    }
}

/// One measured run of one load.
#[derive(Clone, Debug)]
pub struct Sample {
    pub scenario: Scenario,
    pub conns: usize,
    pub run: usize,
    pub requests: u64,
    pub errors: u64,
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub service_cpu_us: Option<f64>,
    pub db_cpu_us: f64,
}

struct Bench {
    settings: Settings,
    bins: Binaries,
    work: PathBuf,
    rt: tokio::runtime::Runtime,
    rng: StdRng,
    db: Process,
    db_uri: String,
    traces: Collection<Document>,
    original: Collection<Document>,
    ids: Arc<Vec<String>>,
    users: Arc<Vec<String>>,
    ids_file: PathBuf,
    users_file: PathBuf,
    etags_file: PathBuf,
    /// Pushes per second to size the next push stream for (so that no stream runs out),
    /// through trace-writer and straight to the database.
    push_rate: [f64; 2],
}

fn locate_binaries(root: &Path) -> Binaries {
    let release = std::env::var_os("BENCH_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map_or_else(|| root.join("target"), PathBuf::from);
            root.join(target).join("release")
        });
    let bins = Binaries {
        writer: release.join("trace-writer"),
        api: release.join("trace-api"),
        wrk: PathBuf::from(std::env::var_os("WRK_BIN").unwrap_or_else(|| "wrk".into())),
    };
    for (what, path) in [
        ("trace-writer (cargo build --release)", &bins.writer),
        ("trace-api (cargo build --release)", &bins.api),
    ] {
        assert!(path.exists(), "{what} not found at {}", path.display());
    }
    bins
}

fn start_database(work: &Path, server: Server) -> (Process, u16) {
    let port = free_port();
    let name = match server {
        Server::Rust => "secantusd-rs",
        Server::Python => "secantusd-py",
    };
    let storage = work.join(name);
    std::fs::create_dir_all(&storage).expect("database directory");
    let log = work.join(format!("{name}.log"));
    let mut db = Process::spawn("database", server.command(port, &storage), &log, true);
    assert!(
        wait_for_port(port, Duration::from_secs(60)) && db.alive(),
        "SecantusDB did not start; see {}",
        log.display()
    );
    (db, port)
}

/// Whether the server runs the store's write: secantus-mdb 0.5.3-beta.196 refuses `$add`
/// on a date (the pipeline's `expire_at`), and then nothing could be measured against it.
async fn store_write_works(uri: &str) -> Result<(), String> {
    let config = DatabaseConfig::checked(DatabaseConfig {
        mongo_uri: uri.to_owned(),
        mongo_database: "job_trace_probe".into(),
        collection_job_traces: COLLECTION.into(),
        ensure_indexes: false,
        db_timeout_seconds: 30.0,
        store_write: Default::default(),
    })
    .map_err(|e| e.0)?;
    let store = TraceStore::connect(&config)
        .await
        .map_err(|e| e.to_string())?;
    let mut rng = StdRng::seed_from_u64(1);
    let job = data::job(&mut rng, data::user_id(0xdd, 0), now_ms());
    for body in &job.pushes {
        store
            .apply(&data::change_of(body))
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The Rust server when it can run the store's write, else the Python server, with why.
fn open_database(
    work: &Path,
    rt: &tokio::runtime::Runtime,
) -> (Process, u16, Server, Option<String>) {
    let forced = std::env::var("BENCH_DB").ok();
    if forced.as_deref() != Some("py") {
        let (mut db, port) = start_database(work, Server::Rust);
        let uri = format!("mongodb://127.0.0.1:{port}/?directConnection=true");
        match rt.block_on(store_write_works(&uri)) {
            Ok(()) => return (db, port, Server::Rust, None),
            Err(error) => {
                // The driver's error ends in the raw reply; the server's message is enough.
                let error = error
                    .split(", labels:")
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                eprintln!(
                    "bench: the Rust server refuses the store's write ({error}); \
                     falling back to the Python server (secantusd-py)"
                );
                db.stop();
                let (db, port) = start_database(work, Server::Python);
                return (db, port, Server::Python, Some(error));
            }
        }
    }
    let (db, port) = start_database(work, Server::Python);
    (db, port, Server::Python, Some("BENCH_DB=py".into()))
}

fn write_lines(path: &Path, lines: impl IntoIterator<Item = String>) {
    let mut text = String::new();
    for line in lines {
        text.push_str(&line);
        text.push('\n');
    }
    std::fs::write(path, text).expect("write a load file");
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The data set: `users` users with `jobs_per_user` jobs each, created over the last 40
/// hours (inside both TTLs, so the server's sweeper leaves them alone), every push of
/// every lifecycle applied through the real store.
async fn load_data_set(
    store: &TraceStore,
    rng: &mut StdRng,
    users: usize,
    jobs_per_user: usize,
) -> (Vec<String>, Vec<String>, usize, Duration) {
    let now = now_ms();
    let user_ids: Vec<String> = (0..users).map(|u| data::user_id(0x01, u)).collect();
    let mut jobs = Vec::with_capacity(users * jobs_per_user);
    for user in &user_ids {
        for _ in 0..jobs_per_user {
            let created = now - rng.random_range(3_600_000..40 * 3_600_000);
            jobs.push(data::job(rng, user.clone(), created));
        }
    }
    let ids: Vec<String> = jobs.iter().map(|j| j.message_id.clone()).collect();
    let pushes: usize = jobs.iter().map(|j| j.pushes.len()).sum();
    let started = Instant::now();
    futures::stream::iter(jobs)
        .map(|job| async move {
            for body in &job.pushes {
                store.apply(&data::change_of(body)).await?;
            }
            Ok::<_, job_trace::store::StoreError>(())
        })
        .buffer_unordered(32)
        .try_collect::<()>()
        .await
        .expect("loading the data set");
    (ids, user_ids, pushes, started.elapsed())
}

struct FunctionPair {
    api: Process,
    api_port: u16,
    writer: Process,
    writer_port: u16,
}

fn start_functions(bins: &Binaries, work: &Path, mongo_uri: &str, tag: &str) -> FunctionPair {
    let api_port = free_port();
    let writer_port = free_port();
    let api = Process::spawn(
        "trace-api",
        function_command(&bins.api, api_port, mongo_uri, DATABASE),
        &work.join(format!("trace-api{tag}.log")),
        false,
    );
    let writer = Process::spawn(
        "trace-writer",
        function_command(&bins.writer, writer_port, mongo_uri, DATABASE),
        &work.join(format!("trace-writer{tag}.log")),
        false,
    );
    for port in [api_port, writer_port] {
        let deadline = Instant::now() + Duration::from_secs(30);
        while http_status(port, "GET", "/readyz", None) != Some(200) {
            assert!(
                Instant::now() < deadline,
                "a function on port {port} never became ready"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    FunctionPair {
        api,
        api_port,
        writer,
        writer_port,
    }
}

/// What wrk's `done` printed.
fn parse_wrk(output: &str) -> Value {
    let line = output
        .lines()
        .find_map(|l| l.strip_prefix("BENCH "))
        .unwrap_or_else(|| panic!("wrk printed no result:\n{output}"));
    serde_json::from_str(line).expect("wrk result is JSON")
}

impl Bench {
    fn fresh_push_stream(&mut self, duration: Duration, direct: bool) -> Vec<String> {
        // ~3.3 pushes per job; size for the fastest rate seen so far, with headroom.
        let rate = self.push_rate[usize::from(direct)];
        let pushes = (rate * duration.as_secs_f64() * 1.5).max(2_000.0);
        let jobs = (pushes / 3.3) as usize + 1;
        data::push_stream(&mut self.rng, jobs, 1_000, now_ms())
    }

    fn run_wrk(
        &mut self,
        scenario: Scenario,
        conns: usize,
        duration: Duration,
        pair: &FunctionPair,
    ) -> Sample {
        let mut lines = usize::MAX;
        let (mode, file, port, pid) = match scenario {
            Scenario::Status => (
                "status",
                self.ids_file.clone(),
                pair.api_port,
                pair.api.pid(),
            ),
            Scenario::User => (
                "user",
                self.users_file.clone(),
                pair.api_port,
                pair.api.pid(),
            ),
            Scenario::Revalidate => (
                "revalidate",
                self.etags_file.clone(),
                pair.api_port,
                pair.api.pid(),
            ),
            Scenario::Push => {
                let stream = self.fresh_push_stream(duration, false);
                lines = stream.len();
                let file = self.work.join("pushes.txt");
                write_lines(&file, stream);
                ("push", file, pair.writer_port, pair.writer.pid())
            }
            _ => unreachable!("direct loads do not use wrk"),
        };
        let threads = conns.clamp(1, 2);
        let script = project_root().join("bench/requests.lua");
        let svc_before = procstat::cpu_micros(pid).unwrap_or(0.0);
        let db_before = procstat::cpu_micros(self.db.pid()).unwrap_or(0.0);
        let output = Command::new(&self.bins.wrk)
            .arg(format!("-t{threads}"))
            .arg(format!("-c{conns}"))
            .arg(format!("-d{}s", duration.as_secs()))
            .arg("--timeout")
            .arg("10s")
            .arg("-s")
            .arg(&script)
            .arg(format!("http://127.0.0.1:{port}"))
            .arg("--")
            .arg(mode)
            .arg(&file)
            .arg(threads.to_string())
            .output()
            .expect("run wrk");
        let svc_cpu = procstat::cpu_micros(pid).unwrap_or(0.0) - svc_before;
        let db_cpu = procstat::cpu_micros(self.db.pid()).unwrap_or(0.0) - db_before;
        let text = String::from_utf8_lossy(&output.stdout);
        let result = parse_wrk(&text);
        let number = |k: &str| result[k].as_f64().unwrap_or(0.0);
        let requests = number("requests") as u64;
        let seconds = number("duration_us") / 1e6;
        let errors = [
            "connect_errors",
            "read_errors",
            "write_errors",
            "status_errors",
            "timeouts",
        ]
        .iter()
        .map(|k| number(k) as u64)
        .sum();
        let rps = requests as f64 / seconds;
        if scenario == Scenario::Push {
            self.push_rate[0] = self.push_rate[0].max(rps);
            if requests as usize > lines {
                eprintln!(
                    "bench: the push stream ran out ({lines} pushes); the rest were redeliveries"
                );
            }
        }
        Sample {
            scenario,
            conns,
            run: 0,
            requests,
            errors,
            rps,
            p50_ms: number("p50_us") / 1000.0,
            p99_ms: number("p99_us") / 1000.0,
            p999_ms: number("p999_us") / 1000.0,
            service_cpu_us: Some(svc_cpu / requests.max(1) as f64),
            db_cpu_us: db_cpu / requests.max(1) as f64,
        }
    }

    fn run_direct(&mut self, scenario: Scenario, conns: usize, duration: Duration) -> Sample {
        let op = scenario.direct().expect("a direct load");
        let changes = if scenario.writes() {
            self.fresh_push_stream(duration, true)
                .iter()
                .map(|body| data::change_of(body))
                .collect()
        } else {
            Vec::new()
        };
        let inputs = Arc::new(Inputs {
            ids: self.ids.clone(),
            users: self.users.clone(),
            changes: Arc::new(changes),
        });
        let db_before = procstat::cpu_micros(self.db.pid()).unwrap_or(0.0);
        let outcome = self.rt.block_on(direct::run(
            op,
            self.traces.clone(),
            self.original.clone(),
            inputs,
            conns,
            duration,
        ));
        let db_cpu = procstat::cpu_micros(self.db.pid()).unwrap_or(0.0) - db_before;
        let rps = outcome.requests as f64 / outcome.elapsed.as_secs_f64();
        if scenario.writes() {
            self.push_rate[1] = self.push_rate[1].max(rps);
        }
        Sample {
            scenario,
            conns,
            run: 0,
            requests: outcome.requests,
            errors: outcome.errors,
            rps,
            p50_ms: direct::percentile_ms(&outcome.latencies, 50.0),
            p99_ms: direct::percentile_ms(&outcome.latencies, 99.0),
            p999_ms: direct::percentile_ms(&outcome.latencies, 99.9),
            service_cpu_us: None,
            db_cpu_us: db_cpu / outcome.requests.max(1) as f64,
        }
    }

    fn run(
        &mut self,
        scenario: Scenario,
        conns: usize,
        duration: Duration,
        pair: &FunctionPair,
    ) -> Sample {
        if scenario.direct().is_some() {
            self.run_direct(scenario, conns, duration)
        } else {
            self.run_wrk(scenario, conns, duration, pair)
        }
    }
}

/// Exec to the first `200 /healthz`, and to the first answer that needed the database.
fn cold_starts(bench: &mut Bench, api: bool, n: usize) -> Vec<(f64, f64)> {
    let known_id = bench.ids[0].clone();
    (0..n)
        .map(|i| {
            let port = free_port();
            let (binary, name) = if api {
                (&bench.bins.api, "trace-api")
            } else {
                (&bench.bins.writer, "trace-writer")
            };
            let command = function_command(binary, port, &bench.db_uri, DATABASE);
            let push =
                data::job(&mut bench.rng, data::user_id(0xcc, i), now_ms()).pushes[0].clone();
            let log = bench.work.join(format!("cold-{name}.log"));
            let started = Instant::now();
            let mut process = Process::spawn(name, command, &log, false);
            let wait = |what: &str, ok: &dyn Fn() -> bool| {
                while !ok() {
                    assert!(
                        started.elapsed() < Duration::from_secs(30),
                        "{name} gave no {what} within 30 s"
                    );
                    std::thread::sleep(Duration::from_micros(250));
                }
                started.elapsed().as_secs_f64() * 1000.0
            };
            let health = wait("healthz", &|| {
                http_status(port, "GET", "/healthz", None) == Some(200)
            });
            let path = format!("/api/v1/jobs/status/{known_id}");
            let first = if api {
                wait("status 200", &|| {
                    http_status(port, "GET", &path, None) == Some(200)
                })
            } else {
                wait("push 204", &|| {
                    http_status(port, "POST", "/", Some(&push)) == Some(204)
                })
            };
            process.stop();
            (health, first)
        })
        .collect()
}

/// Database commands for `n` of each operation, counted on the wire.
fn count_commands(bench: &mut Bench) -> Value {
    let counts = proxy::Counts::default();
    let proxy_port = bench
        .rt
        .block_on(proxy::start(bench.db_port(), counts.clone()));
    let proxy_uri = format!("mongodb://127.0.0.1:{proxy_port}/?directConnection=true");
    let pair = start_functions(&bench.bins, &bench.work, &proxy_uri, "-counted");
    let n = bench.settings.counted;
    let http = reqwest::Client::new();
    let etags: Vec<(String, String)> = std::fs::read_to_string(&bench.etags_file)
        .expect("etags file")
        .lines()
        .filter_map(|l| l.split_once(' ').map(|(a, b)| (a.to_owned(), b.to_owned())))
        .collect();
    let pushes = data::push_stream(&mut bench.rng, n / 3 + 1, 100, now_ms());
    let direct_client = bench.rt.block_on(async {
        Client::with_options(ClientOptions::parse(&proxy_uri).await.expect("proxy uri"))
            .expect("client through the proxy")
    });
    let traces = direct_client
        .database(DATABASE)
        .collection::<Document>(COLLECTION);
    let original = direct_client
        .database(DATABASE)
        .collection::<Document>(ORIGINAL_COLLECTION);
    let changes: Vec<_> = data::push_stream(&mut bench.rng, n / 3 + 1, 100, now_ms())
        .iter()
        .map(|b| data::change_of(b))
        .collect();
    let inputs = Inputs {
        ids: bench.ids.clone(),
        users: bench.users.clone(),
        changes: Arc::new(changes),
    };

    let mut rows = serde_json::Map::new();
    let kinds = [
        ("api_status", Scenario::Status),
        ("api_revalidate_304", Scenario::Revalidate),
        ("api_user_list", Scenario::User),
        ("writer_push", Scenario::Push),
        ("direct_find_one", Scenario::CeilingFind),
        ("direct_user_aggregate", Scenario::CeilingList),
        ("direct_conditional_update", Scenario::CeilingUpdate),
        ("direct_original_find_then_update", Scenario::Original),
    ];
    for (key, scenario) in kinds {
        let rng = &mut bench.rng;
        let ids = bench.ids.clone();
        let users = bench.users.clone();
        let one = |i: usize, rng: &mut StdRng| -> (String, String, Option<(String, String)>) {
            match scenario {
                Scenario::Status => (
                    "GET".into(),
                    format!(
                        "http://127.0.0.1:{}/api/v1/jobs/status/{}",
                        pair.api_port,
                        ids.choose(rng).expect("ids")
                    ),
                    None,
                ),
                Scenario::Revalidate => {
                    let (id, tag) = etags.choose(rng).expect("etags");
                    (
                        "GET".into(),
                        format!("http://127.0.0.1:{}/api/v1/jobs/status/{id}", pair.api_port),
                        Some(("If-None-Match".into(), tag.clone())),
                    )
                }
                Scenario::User => (
                    "GET".into(),
                    format!(
                        "http://127.0.0.1:{}/api/v1/jobs/user/{}?limit=50",
                        pair.api_port,
                        users.choose(rng).expect("users")
                    ),
                    None,
                ),
                _ => (
                    "POST".into(),
                    format!("http://127.0.0.1:{}/", pair.writer_port),
                    Some(("body".into(), pushes[i % pushes.len()].clone())),
                ),
            }
        };
        let send =
            |http: &reqwest::Client,
             (method, url, extra): (String, String, Option<(String, String)>)| {
                let http = http.clone();
                async move {
                    let mut request = if method == "POST" {
                        http.post(url).header("Content-Type", "application/json")
                    } else {
                        http.get(url)
                    };
                    if let Some((name, value)) = extra {
                        request = if name == "body" {
                            request.body(value)
                        } else {
                            request.header(name, value)
                        };
                    }
                    request
                        .send()
                        .await
                        .map(|r| r.status().as_u16())
                        .unwrap_or(0)
                }
            };
        let (delta, statuses) = if let Some(op) = scenario.direct() {
            bench.rt.block_on(async {
                direct::run_count(op, &traces, &original, &inputs, 5).await;
                let before = counts.snapshot();
                let errors = direct::run_count(op, &traces, &original, &inputs, n).await;
                (
                    proxy::delta(&before, &counts.snapshot()),
                    json!({ "errors": errors }),
                )
            })
        } else {
            let warm: Vec<_> = (0..20).map(|i| one(i + n, rng)).collect();
            let measured: Vec<_> = (0..n).map(|i| one(i, rng)).collect();
            bench.rt.block_on(async {
                for request in warm {
                    send(&http, request).await;
                }
                let before = counts.snapshot();
                let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
                for request in measured {
                    *statuses
                        .entry(send(&http, request).await.to_string())
                        .or_default() += 1;
                }
                (proxy::delta(&before, &counts.snapshot()), json!(statuses))
            })
        };
        let work: u64 = delta
            .iter()
            .filter(|(name, _)| !proxy::is_monitoring(name))
            .map(|(_, n)| n)
            .sum();
        let limit = if scenario == Scenario::Original {
            2.0
        } else {
            1.0
        };
        rows.insert(
            key.into(),
            json!({
                "operations": n,
                "commands_per_operation": work as f64 / n as f64,
                "by_name": delta,
                "physical_limit": 1.0,
                "pattern_needs": limit,
                "answers": statuses,
            }),
        );
    }
    drop(pair);
    Value::Object(rows)
}

impl Bench {
    fn db_port(&self) -> u16 {
        self.db_uri
            .trim_start_matches("mongodb://127.0.0.1:")
            .split('/')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("database port in the uri")
    }
}

fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|r| r.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kib| (kib / 1024.0 / 1024.0 * 10.0).round() / 10.0);
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    json!({
        "cores": cores,
        "cpu_model": model,
        "memory_gib": memory_gib,
        "kernel": kernel.trim(),
        "load_average_at_start": loadavg.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
        "shared": "yes: the 2 cores are shared with other developers' builds and tests, and wrk, the functions and the database all run on them",
    })
}

fn tool_version(binary: &Path, arg: &str) -> String {
    Command::new(binary)
        .arg(arg)
        .output()
        .map(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned()
                + &String::from_utf8_lossy(&o.stderr);
            text.lines().next().unwrap_or("").trim().to_owned()
        })
        .unwrap_or_default()
}

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

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let (db, db_port, server, fallback) = open_database(&work, &rt);
    let db_uri = format!("mongodb://127.0.0.1:{db_port}/?directConnection=true");
    let mut rng = StdRng::seed_from_u64(
        std::env::var("BENCH_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(20260501),
    );

    let (client, store) = rt.block_on(async {
        let mut options = ClientOptions::parse(&db_uri).await.expect("database uri");
        options.max_pool_size = Some(64);
        let client = Client::with_options(options).expect("database client");
        let config = DatabaseConfig::checked(DatabaseConfig {
            mongo_uri: db_uri.clone(),
            mongo_database: DATABASE.into(),
            collection_job_traces: COLLECTION.into(),
            ensure_indexes: true,
            db_timeout_seconds: 30.0,
            store_write: Default::default(),
        })
        .expect("database config");
        let store = TraceStore::with_client(client.clone(), &config).expect("store");
        store.ensure_indexes().await.expect("index set");
        let original = TraceStore::with_client(
            client.clone(),
            &DatabaseConfig {
                collection_job_traces: ORIGINAL_COLLECTION.into(),
                ..config
            },
        )
        .expect("store");
        original
            .ensure_indexes()
            .await
            .expect("original's index set");
        (client, store)
    });
    eprintln!("bench: loading the data set through the store");
    let (ids, users, loaded_pushes, load_time) = rt.block_on(load_data_set(
        &store,
        &mut rng,
        settings.users,
        settings.jobs_per_user,
    ));
    eprintln!(
        "bench: {} jobs from {loaded_pushes} pushes in {:.1} s",
        ids.len(),
        load_time.as_secs_f64()
    );

    let traces = client.database(DATABASE).collection::<Document>(COLLECTION);
    let original = client
        .database(DATABASE)
        .collection::<Document>(ORIGINAL_COLLECTION);
    let ids_file = work.join("ids.txt");
    let users_file = work.join("users.txt");
    let etags_file = work.join("etags.txt");
    write_lines(&ids_file, ids.iter().cloned());
    write_lines(&users_file, users.iter().cloned());

    let mut bench = Bench {
        settings,
        bins,
        work: work.clone(),
        rt,
        rng,
        db,
        db_uri: db_uri.clone(),
        traces,
        original,
        ids: Arc::new(ids),
        users: Arc::new(users),
        ids_file,
        users_file,
        etags_file,
        push_rate: [3_000.0, 6_000.0],
    };

    let pair = start_functions(&bench.bins, &work, &db_uri, "");
    std::thread::sleep(Duration::from_secs(1));
    let idle = json!({
        "trace_api_mib": procstat::rss_mib(pair.api.pid()),
        "trace_writer_mib": procstat::rss_mib(pair.writer.pid()),
    });

    // Tags of a sample of traces, read through the API itself, for the 304 load.
    let http = reqwest::Client::new();
    let sample: Vec<String> = bench
        .ids
        .choose_multiple(&mut bench.rng, ETAG_SAMPLE)
        .cloned()
        .collect();
    let api_port = pair.api_port;
    let writer_port = pair.writer_port;
    let (etags, checks) = bench.rt.block_on(async {
        let mut etags = Vec::new();
        for id in &sample {
            let response = http
                .get(format!(
                    "http://127.0.0.1:{api_port}/api/v1/jobs/status/{id}"
                ))
                .send()
                .await
                .expect("status read");
            assert_eq!(response.status(), 200, "status of a loaded job");
            let tag = response.headers()["etag"]
                .to_str()
                .expect("etag")
                .to_owned();
            etags.push(format!("{id} {tag}"));
        }
        let (id, tag) = etags[0].split_once(' ').expect("id and tag");
        let revalidated = http
            .get(format!(
                "http://127.0.0.1:{api_port}/api/v1/jobs/status/{id}"
            ))
            .header("If-None-Match", tag)
            .send()
            .await
            .expect("revalidation")
            .status()
            .as_u16();
        let page: Value = http
            .get(format!(
                "http://127.0.0.1:{api_port}/api/v1/jobs/user/{}?limit=50",
                data::user_id(0x01, 0)
            ))
            .send()
            .await
            .expect("user list")
            .json()
            .await
            .expect("user list JSON");
        (
            etags,
            (revalidated, page["jobs"].as_array().map_or(0, Vec::len)),
        )
    });
    assert_eq!(
        checks.0, 304,
        "If-None-Match with the current tag must answer 304"
    );
    assert_eq!(checks.1, 50, "a user's first page holds 50 jobs");
    let push = data::job(&mut bench.rng, data::user_id(0xcc, 0), now_ms()).pushes[0].clone();
    assert_eq!(
        http_status(writer_port, "POST", "/", Some(&push)),
        Some(204),
        "a push is acknowledged"
    );
    write_lines(&bench.etags_file, etags);

    // Warm each load once (pages, pools, allocator), unmeasured.
    let warmup = bench.settings.warmup;
    for scenario in Scenario::ALL {
        bench.run(scenario, 8, warmup, &pair);
    }

    let mut samples = Vec::new();
    let mut peak_rss: BTreeMap<&str, f64> = BTreeMap::new();
    let conns = bench.settings.conns.clone();
    let runs = bench.settings.runs;
    // Runs interleave the loads, so that a burst of someone else's work on the shared
    // cores lands on a service and its ceiling alike, and their ratio stays fair.
    for run in 0..runs {
        for &c in &conns {
            for scenario in Scenario::ALL {
                let mut sample = bench.run(scenario, c, bench.settings.duration, &pair);
                sample.run = run;
                eprintln!(
                    "bench: run {} c={c:<3} {:<34} {:>9.0} req/s  p50 {:>7.2} ms  p99 {:>7.2} ms{}",
                    run + 1,
                    scenario.label().trim(),
                    sample.rps,
                    sample.p50_ms,
                    sample.p99_ms,
                    if sample.errors > 0 {
                        format!("  ERRORS {}", sample.errors)
                    } else {
                        String::new()
                    }
                );
                for (name, process) in [
                    ("trace_api_mib", &pair.api),
                    ("trace_writer_mib", &pair.writer),
                ] {
                    if let Some(rss) = procstat::rss_mib(process.pid()) {
                        let peak = peak_rss.entry(name).or_default();
                        *peak = peak.max(rss);
                    }
                }
                samples.push(sample);
            }
        }
    }
    let memory = json!({
        "idle_vmrss": idle,
        "after_load_vmrss": {
            "trace_api_mib": procstat::rss_mib(pair.api.pid()),
            "trace_writer_mib": procstat::rss_mib(pair.writer.pid()),
        },
        "peak_vmhwm": {
            "trace_api_mib": procstat::hwm_mib(pair.api.pid()),
            "trace_writer_mib": procstat::hwm_mib(pair.writer.pid()),
        },
        "largest_vmrss_seen_between_runs": peak_rss,
    });
    drop(pair);

    eprintln!("bench: counting database commands per operation");
    let commands = count_commands(&mut bench);
    eprintln!("bench: cold starts");
    let starts = bench.settings.cold_starts;
    let cold_api = cold_starts(&mut bench, true, starts);
    let cold_writer = cold_starts(&mut bench, false, starts);

    let tools = json!({
        "database": match server {
            Server::Rust => format!("secantus-mdb ({})", tool_version(&Server::rust_binary(), "--version")),
            Server::Python => "SecantusDB==0.7.0b3 (secantusd-py)".to_owned(),
        },
        "rust_server_refused": fallback,
        "load_generator": tool_version(&bench.bins.wrk, "-v"),
    });
    let settings_json = json!({
        "quick": bench.settings.quick,
        "runs": bench.settings.runs,
        "seconds_per_run": bench.settings.duration.as_secs(),
        "connections": bench.settings.conns,
        "users": bench.settings.users,
        "jobs_per_user": bench.settings.jobs_per_user,
        "loaded_jobs": bench.ids.len(),
        "loaded_pushes": loaded_pushes,
        "load_seconds": load_time.as_secs_f64(),
        "cold_starts": bench.settings.cold_starts,
        "counted_operations": bench.settings.counted,
    });
    let results = report::build(
        &samples,
        machine,
        tools,
        settings_json,
        memory,
        commands,
        &cold_api,
        &cold_writer,
        started_at,
    );
    let table = report::table(&results);
    println!("{table}");
    let path = root.join("bench/results.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&results).expect("results JSON") + "\n",
    )
    .expect("write bench/results.json");
    eprintln!("bench: wrote {}", path.display());
}
