//! The loads: what each scenario sends, through wrk (the functions) or the direct client
//! (the database alone), and the samples they give.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use serde_json::Value;

use crate::data;
use crate::direct::{self, DirectOp, Inputs};
use crate::procstat;
use crate::services::{function_command, http_status, Process};
use crate::setup::{now_ms, write_lines, Bench, Endpoint, Functions, WriteStrategy, DATABASE};
use job_trace_tests::{free_port, project_root};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scenario {
    Status,
    User,
    Revalidate,
    Push,
    PushCas,
    CeilingFind,
    /// `findOne` from a client on one thread, as the functions run: the floor of CPU any
    /// service pays per read with this driver, whatever it does around it.
    FloorFind,
    CeilingList,
    CeilingUpdate,
    Original,
    /// The original's status read (`bench/original_read.py`), measured as trace-api is.
    OriginalRead,
}

impl Scenario {
    pub const ALL: [Scenario; 11] = [
        Scenario::Status,
        Scenario::CeilingFind,
        Scenario::FloorFind,
        Scenario::Revalidate,
        Scenario::OriginalRead,
        Scenario::User,
        Scenario::CeilingList,
        Scenario::Push,
        Scenario::PushCas,
        Scenario::CeilingUpdate,
        Scenario::Original,
    ];

    pub fn key(self) -> &'static str {
        match self {
            Scenario::Status => "api_status",
            Scenario::User => "api_user_list",
            Scenario::Revalidate => "api_revalidate_304",
            Scenario::Push => "writer_push",
            Scenario::PushCas => "writer_push_cas",
            Scenario::CeilingFind => "direct_find_one",
            Scenario::FloorFind => "direct_find_one_single_thread",
            Scenario::CeilingList => "direct_user_aggregate",
            Scenario::CeilingUpdate => "direct_conditional_update",
            Scenario::Original => "direct_original_find_then_update",
            Scenario::OriginalRead => "original_status_read",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Scenario::Status => "trace-api status by id",
            Scenario::User => "trace-api user list limit=50",
            Scenario::Revalidate => "trace-api 304 If-None-Match",
            Scenario::Push => "trace-writer push",
            Scenario::PushCas => "trace-writer push (cas)",
            Scenario::CeilingFind => "  direct findOne (ceiling)",
            Scenario::FloorFind => "  direct findOne, 1 thread (floor)",
            Scenario::CeilingList => "  direct aggregate (ceiling)",
            Scenario::CeilingUpdate => "  direct cond. update (ceiling)",
            Scenario::Original => "  original find+update",
            Scenario::OriginalRead => "  original status read (Python)",
        }
    }

    /// What the database alone does for the same load.
    pub fn ceiling(self) -> Option<Scenario> {
        match self {
            Scenario::Status | Scenario::Revalidate | Scenario::OriginalRead => {
                Some(Scenario::CeilingFind)
            }
            Scenario::User => Some(Scenario::CeilingList),
            Scenario::Push | Scenario::PushCas | Scenario::Original => {
                Some(Scenario::CeilingUpdate)
            }
            _ => None,
        }
    }

    pub fn direct(self) -> Option<DirectOp> {
        match self {
            Scenario::CeilingFind | Scenario::FloorFind => Some(DirectOp::Find),
            Scenario::CeilingList => Some(DirectOp::List),
            Scenario::CeilingUpdate => Some(DirectOp::Update),
            Scenario::Original => Some(DirectOp::Original),
            _ => None,
        }
    }

    /// Whether its database commands are counted: the original's read path is not ours,
    /// and it and the floor send what a status read and the ceiling send.
    pub fn counted(self) -> bool {
        !matches!(self, Scenario::OriginalRead | Scenario::FloorFind)
    }

    pub fn writes(self) -> bool {
        matches!(
            self,
            Scenario::Push | Scenario::PushCas | Scenario::CeilingUpdate | Scenario::Original
        )
    }

    /// The trace-writer a push load goes to.
    pub fn write_strategy(self) -> Option<WriteStrategy> {
        match self {
            Scenario::Push => Some(WriteStrategy::Pipeline),
            Scenario::PushCas => Some(WriteStrategy::Cas),
            _ => None,
        }
    }

    /// One request of this load (HTTP loads only), the `i`-th push of `pushes` for a
    /// push load.
    pub fn request(
        self,
        functions: &Functions,
        inputs: &RequestInputs,
        i: usize,
        rng: &mut StdRng,
    ) -> Request {
        let api = |path: String| format!("http://127.0.0.1:{}{path}", functions.api_port);
        match self {
            Scenario::Status => Request::Get {
                url: api(format!(
                    "/api/v1/jobs/status/{}",
                    inputs.ids.choose(rng).expect("ids")
                )),
                if_none_match: None,
            },
            Scenario::Revalidate => {
                let (id, tag) = inputs.etags.choose(rng).expect("etags");
                Request::Get {
                    url: api(format!("/api/v1/jobs/status/{id}")),
                    if_none_match: Some(tag.clone()),
                }
            }
            Scenario::User => Request::Get {
                url: api(format!(
                    "/api/v1/jobs/user/{}?limit=50",
                    inputs.users.choose(rng).expect("users")
                )),
                if_none_match: None,
            },
            _ => {
                let strategy = self.write_strategy().expect("an HTTP load");
                Request::Push {
                    url: format!("http://127.0.0.1:{}/", functions.writer(strategy).1),
                    body: inputs.pushes[i % inputs.pushes.len()].clone(),
                }
            }
        }
    }
}

/// One measured run of one load.
#[derive(Clone, Debug)]
pub struct Sample {
    pub scenario: Scenario,
    pub delay_ms: u64,
    pub conns: usize,
    pub run: usize,
    pub requests: u64,
    pub errors: u64,
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub service_cpu_us: Option<f64>,
    /// The direct client's own CPU per operation: the floor any service pays for talking
    /// to the database, whatever it does around it.
    pub client_cpu_us: Option<f64>,
    /// Wake-ups per request of the measured process (the service, or the direct
    /// client's): [`procstat::wakeups`].
    pub wakeups: f64,
    pub db_cpu_us: f64,
}

/// What the HTTP loads pick their requests from.
pub struct RequestInputs {
    pub ids: Arc<Vec<String>>,
    pub users: Arc<Vec<String>>,
    /// `(message_id, etag)` of traces as the API last rendered them.
    pub etags: Vec<(String, String)>,
    pub pushes: Vec<String>,
}

/// One HTTP request of a load.
pub enum Request {
    Get {
        url: String,
        if_none_match: Option<String>,
    },
    Push {
        url: String,
        body: String,
    },
}

impl Request {
    /// Sends it; the status code, or 0 when nothing answered.
    pub async fn send(self, http: &reqwest::Client) -> u16 {
        let request = match self {
            Request::Get { url, if_none_match } => {
                let request = http.get(url);
                match if_none_match {
                    Some(tag) => request.header("If-None-Match", tag),
                    None => request,
                }
            }
            Request::Push { url, body } => http
                .post(url)
                .header("Content-Type", "application/json")
                .body(body),
        };
        request
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
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
        functions: &Functions,
        endpoint: &Endpoint,
    ) -> Sample {
        let mut lines = usize::MAX;
        let api =
            |mode, file: &PathBuf| (mode, file.clone(), functions.api_port, functions.api.pid());
        let (mode, file, port, pid) = match scenario {
            Scenario::Status => api("status", &self.ids_file),
            Scenario::User => api("user", &self.users_file),
            Scenario::Revalidate => api("revalidate", &self.etags_file),
            Scenario::OriginalRead => (
                "status",
                self.ids_file.clone(),
                endpoint.original_read.1,
                endpoint.original_read.0.pid(),
            ),
            Scenario::Push | Scenario::PushCas => {
                let stream = self.fresh_push_stream(duration, false);
                lines = stream.len();
                let file = self.work.join("pushes.txt");
                write_lines(&file, stream);
                let strategy = scenario.write_strategy().expect("a push load");
                let (writer, port) = functions.writer(strategy);
                ("push", file, port, writer.pid())
            }
            _ => unreachable!("direct loads do not use wrk"),
        };
        let threads = conns.clamp(1, 2);
        let script = project_root().join("bench/requests.lua");
        let svc_before = procstat::cpu_micros(pid).unwrap_or(0.0);
        let wakeups_before = procstat::wakeups(pid).unwrap_or(0);
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
        let wakeups = procstat::wakeups(pid).unwrap_or(0) - wakeups_before;
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
        if scenario.write_strategy().is_some() {
            self.push_rate[0] = self.push_rate[0].max(rps);
            if requests as usize > lines {
                eprintln!(
                    "bench: the push stream ran out ({lines} pushes); the rest were redeliveries"
                );
            }
        }
        Sample {
            scenario,
            delay_ms: endpoint.delay_ms,
            conns,
            run: 0,
            requests,
            errors,
            rps,
            p50_ms: number("p50_us") / 1000.0,
            p99_ms: number("p99_us") / 1000.0,
            p999_ms: number("p999_us") / 1000.0,
            service_cpu_us: Some(svc_cpu / requests.max(1) as f64),
            client_cpu_us: None,
            wakeups: wakeups as f64 / requests.max(1) as f64,
            db_cpu_us: db_cpu / requests.max(1) as f64,
        }
    }

    fn run_direct(
        &mut self,
        scenario: Scenario,
        conns: usize,
        duration: Duration,
        endpoint: &Endpoint,
    ) -> Sample {
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
        // The bench's own process is the direct client: the proxy and wrk run apart.
        let me = std::process::id();
        let client_before = procstat::cpu_micros(me).unwrap_or(0.0);
        let wakeups_before = procstat::wakeups(me).unwrap_or(0);
        let db_before = procstat::cpu_micros(self.db.pid()).unwrap_or(0.0);
        let (rt, traces) = if scenario == Scenario::FloorFind {
            (&self.single, &endpoint.floor_traces)
        } else {
            (&self.rt, &endpoint.traces)
        };
        let outcome = rt.block_on(direct::run(
            op,
            traces.clone(),
            endpoint.original.clone(),
            inputs,
            conns,
            duration,
        ));
        let db_cpu = procstat::cpu_micros(self.db.pid()).unwrap_or(0.0) - db_before;
        let client_cpu = procstat::cpu_micros(me).unwrap_or(0.0) - client_before;
        let wakeups = procstat::wakeups(me).unwrap_or(0) - wakeups_before;
        let rps = outcome.requests as f64 / outcome.elapsed.as_secs_f64();
        if scenario.writes() {
            self.push_rate[1] = self.push_rate[1].max(rps);
        }
        Sample {
            scenario,
            delay_ms: endpoint.delay_ms,
            conns,
            run: 0,
            requests: outcome.requests,
            errors: outcome.errors,
            rps,
            p50_ms: direct::percentile_ms(&outcome.latencies, 50.0),
            p99_ms: direct::percentile_ms(&outcome.latencies, 99.0),
            p999_ms: direct::percentile_ms(&outcome.latencies, 99.9),
            service_cpu_us: None,
            client_cpu_us: Some(client_cpu / outcome.requests.max(1) as f64),
            wakeups: wakeups as f64 / outcome.requests.max(1) as f64,
            db_cpu_us: db_cpu / outcome.requests.max(1) as f64,
        }
    }

    pub fn run(
        &mut self,
        scenario: Scenario,
        conns: usize,
        duration: Duration,
        functions: &Functions,
        endpoint: &Endpoint,
    ) -> Sample {
        if scenario.direct().is_some() {
            self.run_direct(scenario, conns, duration, endpoint)
        } else {
            self.run_wrk(scenario, conns, duration, functions, endpoint)
        }
    }
}

/// Exec to the first `200 /healthz`, and to the first answer that needed the database.
pub fn cold_starts(bench: &mut Bench, api: bool, n: usize) -> Vec<(f64, f64)> {
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

impl Bench {
    /// Every load at every connection count, `runs` times, after one unmeasured warm-up
    /// of each (pages, pools, allocator); with the largest VmRSS each function showed
    /// between loads.
    pub fn measure(
        &mut self,
        functions: &Functions,
        endpoint: &Endpoint,
    ) -> (Vec<Sample>, BTreeMap<&'static str, f64>) {
        let warmup = self.settings.warmup;
        // `BENCH_LOADS=api_status,original_status_read`: only those loads, for development.
        let only = std::env::var("BENCH_LOADS").ok();
        let loads: Vec<Scenario> = Scenario::ALL
            .into_iter()
            .filter(|s| {
                only.as_deref()
                    .is_none_or(|o| o.split(',').any(|k| k == s.key()))
            })
            .collect();
        for &scenario in &loads {
            self.run(scenario, 8, warmup, functions, endpoint);
        }
        let mut samples = Vec::new();
        let mut peak_rss: BTreeMap<&'static str, f64> = BTreeMap::new();
        let conns = self.settings.conns.clone();
        let (writer, _) = functions.writer(WriteStrategy::Pipeline);
        // Runs interleave the loads, so that a burst of someone else's work on the shared
        // cores lands on a service and its ceiling alike, and their ratio stays fair.
        for run in 0..self.settings.runs {
            for &c in &conns {
                for &scenario in &loads {
                    let mut sample =
                        self.run(scenario, c, self.settings.duration, functions, endpoint);
                    sample.run = run;
                    eprintln!(
                        "bench: {} ms run {} c={c:<3} {:<34} {:>9.0} req/s  p50 {:>7.2} ms  p99 {:>7.2} ms  cpu {:>5.0} µs  wakes {:>5.2}{}",
                        endpoint.delay_ms,
                        run + 1,
                        scenario.label().trim(),
                        sample.rps,
                        sample.p50_ms,
                        sample.p99_ms,
                        sample.service_cpu_us.or(sample.client_cpu_us).unwrap_or(f64::NAN),
                        sample.wakeups,
                        if sample.errors > 0 {
                            format!("  ERRORS {}", sample.errors)
                        } else {
                            String::new()
                        }
                    );
                    for (name, process) in [
                        ("trace_api_mib", &functions.api),
                        ("trace_writer_mib", writer),
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
        (samples, peak_rss)
    }
}
