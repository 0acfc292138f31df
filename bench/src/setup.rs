//! Setting the bench up: the binaries, the database (the Rust server when it can run the
//! store's write), the data set loaded through the real store, and the functions.

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

use crate::data;
use crate::services::{function_command, http_status, start_up_allowance, Binaries, Process};
use job_trace_tests::{free_port, wait_for_port, Server};

pub const DATABASE: &str = "job_trace_bench";
pub const COLLECTION: &str = "job_traces";
pub const ORIGINAL_COLLECTION: &str = "job_traces_original";
/// How many ETags the revalidation load picks from.
const ETAG_SAMPLE: usize = 2_000;

pub struct Settings {
    pub quick: bool,
    pub runs: usize,
    pub duration: Duration,
    pub warmup: Duration,
    pub conns: Vec<usize>,
    /// Milliseconds every database reply is held back by the proxy (0: no proxy).
    pub delays_ms: Vec<u64>,
    pub users: usize,
    pub jobs_per_user: usize,
    pub cold_starts: usize,
    pub counted: usize,
}

impl Settings {
    pub fn from_env() -> Settings {
        let quick = std::env::var("BENCH_QUICK").is_ok_and(|v| v == "1");
        let number = |name: &str, default: usize| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(default)
        };
        fn list<T: std::str::FromStr>(name: &str, default: Vec<T>) -> Vec<T> {
            std::env::var(name)
                .ok()
                .map(|v| v.split(',').filter_map(|c| c.trim().parse().ok()).collect())
                .filter(|c: &Vec<T>| !c.is_empty())
                .unwrap_or(default)
        }
        let conns = list("BENCH_CONNS", vec![1, 8, 32]);
        let delays_ms = list("BENCH_DELAYS_MS", vec![0, 2]);
        Settings {
            quick,
            runs: number("BENCH_RUNS", if quick { 1 } else { 3 }).max(1),
            // 6 s: at 1 connection behind the 2 ms proxy that is still ~2,000 requests a
            // run, and both delays fit in about half an hour.
            duration: Duration::from_secs(
                number("BENCH_SECONDS", if quick { 2 } else { 6 }).max(1) as u64,
            ),
            warmup: Duration::from_secs(if quick { 1 } else { 3 }),
            conns,
            delays_ms,
            users: number("BENCH_USERS", if quick { 100 } else { 1_000 }).max(1),
            jobs_per_user: 50,
            cold_starts: if quick { 5 } else { 20 },
            counted: if quick { 200 } else { 1_000 },
        }
    }
}

pub struct Bench {
    pub settings: Settings,
    pub bins: Binaries,
    pub work: PathBuf,
    pub rt: tokio::runtime::Runtime,
    /// The floor's client runs here: one thread, as the functions' runtime.
    pub single: tokio::runtime::Runtime,
    pub rng: StdRng,
    pub db: Process,
    pub db_uri: String,
    pub ids: Arc<Vec<String>>,
    pub users: Arc<Vec<String>>,
    pub ids_file: PathBuf,
    pub users_file: PathBuf,
    pub etags_file: PathBuf,
    /// Pushes per second to size the next push stream for (so that no stream runs out),
    /// through trace-writer and straight to the database.
    pub push_rate: [f64; 2],
    pub server: Server,
    /// Why the Python server was used, when it was.
    pub fallback: Option<String>,
    pub loaded_pushes: usize,
    pub load_time: Duration,
}

pub fn locate_binaries(root: &Path) -> Binaries {
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

pub fn write_lines(path: &Path, lines: impl IntoIterator<Item = String>) {
    let mut text = String::new();
    for line in lines {
        text.push_str(&line);
        text.push('\n');
    }
    std::fs::write(path, text).expect("write a load file");
}

pub fn now_ms() -> i64 {
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

/// The write strategies trace-writer can be started with (`STORE_WRITE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum WriteStrategy {
    Pipeline,
    Cas,
}

impl WriteStrategy {
    pub const ALL: [WriteStrategy; 2] = [WriteStrategy::Pipeline, WriteStrategy::Cas];

    pub fn env_value(self) -> &'static str {
        match self {
            WriteStrategy::Pipeline => "pipeline",
            WriteStrategy::Cas => "cas",
        }
    }
}

/// trace-api, and one trace-writer per write strategy, all on one database.
pub struct Functions {
    pub api: Process,
    pub api_port: u16,
    pub writers: Vec<(WriteStrategy, Process, u16)>,
}

impl Functions {
    pub fn writer(&self, strategy: WriteStrategy) -> (&Process, u16) {
        self.writers
            .iter()
            .find(|(s, _, _)| *s == strategy)
            .map(|(_, process, port)| (process, *port))
            .expect("a writer of every strategy")
    }
}

fn wait_ready(port: u16) {
    let deadline = Instant::now() + start_up_allowance();
    while http_status(port, "GET", "/readyz", None) != Some(200) {
        assert!(
            Instant::now() < deadline,
            "a function on port {port} never became ready"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A trace-writer with `STORE_WRITE=strategy` and `extra` environment, once ready.
pub fn start_writer(
    binary: &Path,
    log: &Path,
    mongo_uri: &str,
    strategy: WriteStrategy,
    extra: &[(&str, String)],
) -> (Process, u16) {
    let port = free_port();
    let mut command = function_command(binary, port, mongo_uri, DATABASE);
    command.env("STORE_WRITE", strategy.env_value());
    command.envs(extra.iter().map(|(name, value)| (name, value)));
    let process = Process::spawn("trace-writer", command, log, false);
    wait_ready(port);
    (process, port)
}

pub fn start_functions(bins: &Binaries, work: &Path, mongo_uri: &str, tag: &str) -> Functions {
    let api_port = free_port();
    let api = Process::spawn(
        "trace-api",
        function_command(&bins.api, api_port, mongo_uri, DATABASE),
        &work.join(format!("trace-api{tag}.log")),
        false,
    );
    wait_ready(api_port);
    let writers = WriteStrategy::ALL
        .into_iter()
        .map(|strategy| {
            let log = work.join(format!("trace-writer-{}{tag}.log", strategy.env_value()));
            let (process, port) = start_writer(&bins.writer, &log, mongo_uri, strategy, &[]);
            (strategy, process, port)
        })
        .collect();
    Functions {
        api,
        api_port,
        writers,
    }
}

/// Where one delay's loads reach the database: straight (0 ms) or through the delaying
/// proxy, with the functions, the original's read path and the direct client all on it.
pub struct Endpoint {
    pub delay_ms: u64,
    pub uri: String,
    pub traces: Collection<Document>,
    pub original: Collection<Document>,
    /// The traces through a client of the single-thread runtime (its pool and monitors
    /// live there, so that no wake-up crosses threads).
    pub floor_traces: Collection<Document>,
    /// `bench/original_read.py` on this endpoint, and its port.
    pub original_read: (Process, u16),
    _proxy: Option<Process>,
}

impl Bench {
    /// The endpoint for `delay_ms`; the proxy runs as a process of its own (see
    /// `proxy::serve_as_process`).
    pub fn endpoint(&self, delay_ms: u64) -> Endpoint {
        let (uri, proxy) = if delay_ms == 0 {
            (self.db_uri.clone(), None)
        } else {
            let port = free_port();
            let mut command = Command::new(std::env::current_exe().expect("the bench binary"));
            command.args([
                "proxy".to_owned(),
                self.db_port().to_string(),
                delay_ms.to_string(),
                port.to_string(),
            ]);
            let log = self.work.join(format!("proxy-{delay_ms}ms.log"));
            let proxy = Process::spawn("the delaying proxy", command, &log, false);
            assert!(
                wait_for_port(port, Duration::from_secs(10)),
                "the delaying proxy did not start; see {}",
                log.display()
            );
            (
                format!("mongodb://127.0.0.1:{port}/?directConnection=true"),
                Some(proxy),
            )
        };
        let client = |rt: &tokio::runtime::Runtime| {
            rt.block_on(async {
                let mut options = ClientOptions::parse(&uri).await.expect("database uri");
                options.max_pool_size = Some(64);
                Client::with_options(options).expect("database client")
            })
        };
        let database = client(&self.rt).database(DATABASE);
        let floor = client(&self.single).database(DATABASE);
        Endpoint {
            delay_ms,
            floor_traces: floor.collection(COLLECTION),
            original_read: start_original_read(&self.work, &uri, delay_ms),
            traces: database.collection(COLLECTION),
            original: database.collection(ORIGINAL_COLLECTION),
            uri,
            _proxy: proxy,
        }
    }
}

/// The original's status read (`bench/original_read.py`) on the traces the API serves.
fn start_original_read(work: &Path, mongo_uri: &str, delay_ms: u64) -> (Process, u16) {
    let root = job_trace_tests::project_root();
    job_trace_tests::ensure_venv();
    let port = free_port();
    let mut command = Command::new(root.join(".venv/bin/python"));
    command.arg(root.join("bench/original_read.py")).args([
        port.to_string(),
        mongo_uri.to_owned(),
        DATABASE.to_owned(),
        COLLECTION.to_owned(),
    ]);
    let log = work.join(format!("original-read-{delay_ms}ms.log"));
    let process = Process::spawn("the original's read path", command, &log, false);
    assert!(
        wait_for_port(port, Duration::from_secs(30)),
        "bench/original_read.py did not start; see {}",
        log.display()
    );
    (process, port)
}

impl Bench {
    pub fn db_port(&self) -> u16 {
        self.db_uri
            .trim_start_matches("mongodb://127.0.0.1:")
            .split('/')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("database port in the uri")
    }
}

pub fn machine() -> Value {
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

pub fn tool_version(binary: &Path, arg: &str) -> String {
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

impl Bench {
    /// The database, its indexes and the data set, loaded through the real store.
    pub fn open(settings: Settings, bins: Binaries, work: &Path) -> Bench {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let (db, db_port, server, fallback) = open_database(work, &rt);
        let db_uri = format!("mongodb://127.0.0.1:{db_port}/?directConnection=true");
        let mut rng = StdRng::seed_from_u64(
            std::env::var("BENCH_SEED")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(20260501),
        );

        let store = rt.block_on(async {
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
            store
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

        let ids_file = work.join("ids.txt");
        let users_file = work.join("users.txt");
        let etags_file = work.join("etags.txt");
        write_lines(&ids_file, ids.iter().cloned());
        write_lines(&users_file, users.iter().cloned());

        Bench {
            settings,
            bins,
            work: work.to_owned(),
            rt,
            single: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("single-thread runtime"),
            rng,
            db,
            db_uri: db_uri.clone(),
            ids: Arc::new(ids),
            users: Arc::new(users),
            ids_file,
            users_file,
            etags_file,
            push_rate: [3_000.0, 6_000.0],
            server,
            fallback,
            loaded_pushes,
            load_time,
        }
    }

    /// Reads ETags of a sample of traces through the API itself (for the 304 load), and
    /// checks that the functions answer as the loads expect.
    pub fn tag_and_check(&mut self, functions: &Functions) {
        let http = reqwest::Client::new();
        let sample: Vec<String> = self
            .ids
            .choose_multiple(&mut self.rng, ETAG_SAMPLE)
            .cloned()
            .collect();
        let api_port = functions.api_port;
        let (etags, checks) = self.rt.block_on(async {
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
        for (strategy, _, port) in &functions.writers {
            let push = data::job(&mut self.rng, data::user_id(0xcc, 0), now_ms()).pushes[0].clone();
            assert_eq!(
                http_status(*port, "POST", "/", Some(&push)),
                Some(204),
                "a push is acknowledged ({strategy:?})"
            );
        }
        write_lines(&self.etags_file, etags);
    }
}

impl Bench {
    /// The database and load generator the figures come from.
    pub fn tools_json(&self) -> Value {
        json!({
            "database": match self.server {
                Server::Rust => format!("secantus-mdb ({})", tool_version(&Server::rust_binary(), "--version")),
                Server::Python => "SecantusDB==0.7.0b3 (secantusd-py)".to_owned(),
            },
            "rust_server_refused": self.fallback,
            "load_generator": tool_version(&self.bins.wrk, "-v"),
        })
    }

    pub fn settings_json(&self) -> Value {
        let settings = &self.settings;
        json!({
            "quick": settings.quick,
            "runs": settings.runs,
            "seconds_per_run": settings.duration.as_secs(),
            "connections": settings.conns,
            "database_reply_delays_ms": settings.delays_ms,
            "delay": "the proxy holds every database reply back by the delay (once per round trip; tokio's 1 ms timer makes 2 ms 2–3 ms); 0 ms: no proxy",
            "users": settings.users,
            "jobs_per_user": settings.jobs_per_user,
            "loaded_jobs": self.ids.len(),
            "loaded_pushes": self.loaded_pushes,
            "load_seconds": self.load_time.as_secs_f64(),
            "cold_starts": settings.cold_starts,
            "counted_operations": settings.counted,
        })
    }
}
