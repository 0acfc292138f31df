//! The test harness: real processes on free loopback ports, started by the tests
//! themselves and gone when the test process ends.
//!
//! * [`Database`]: a SecantusDB server (MongoDB wire protocol over WiredTiger) from the
//!   pinned Python package in the project's `.venv`, installed on first use; with
//!   `JOBTRACE_DATABASE=rust`, SecantusDB's much faster Rust server, which
//!   `bench/ensure-tools.sh` builds into `.bench-tools/` (the long runs use it).
//! * [`histories`]: random job histories and their messages, for convergence tests.
//! * [`legacy`]: the original system's documents and indexes, as its code wrote them.
//! * [`pubsub`]: the Google Pub/Sub emulator and `google-cloud-pubsub` clients of it.
//! * [`apps`]: the functions served in-process, or their binaries run as processes.
//! * [`jwks`]: key-set endpoints for the token verifiers.

pub mod apps;
pub mod disguise;
pub mod firestore_limits;
#[cfg(feature = "terraform")]
pub mod hcl;
pub mod histories;
pub mod jwks;
pub mod legacy;
pub mod node;
#[cfg(feature = "pubsub")]
pub mod pubsub;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use job_trace::config::{DatabaseConfig, StoreWrite};
use job_trace::TraceStore;
use mongodb::event::command::CommandEvent;
use mongodb::event::EventHandler;
use mongodb::options::ClientOptions;
use mongodb::Client;

/// The workspace root.
pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
        .to_path_buf()
}

/// A file of the repo's `fixtures/`.
pub fn fixture(name: &str) -> Vec<u8> {
    let path = project_root().join("fixtures").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

/// A JSON file of the repo's `fixtures/`.
pub fn fixture_json(name: &str) -> serde_json::Value {
    serde_json::from_slice(&fixture(name)).expect("fixture JSON")
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind(("127.0.0.1", 0))
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free loopback port")
}

/// Waits until something accepts connections on `port`.
pub fn wait_for_port(port: u16, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200))
            .is_ok()
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Installs the pinned SecantusDB into `.venv` (once; concurrent callers wait).
pub fn ensure_venv() -> PathBuf {
    let root = project_root();
    let status = Command::new("bash")
        .arg(root.join("scripts/ensure-venv.sh"))
        .status()
        .expect("run scripts/ensure-venv.sh");
    assert!(status.success(), "installing SecantusDB into .venv failed");
    root.join(".venv/bin/secantusd-py")
}

/// Children started through here die with the test process: a dedicated thread spawns
/// them (Linux ties PR_SET_PDEATHSIG to the spawning thread) and lives as long as the
/// process does.
pub fn spawn_tied(mut command: Command) -> std::io::Result<Child> {
    type Request = (Command, mpsc::Sender<std::io::Result<Child>>);
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Request>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("harness-spawner".into())
            .spawn(move || {
                for (mut command, reply) in rx {
                    let _ = reply.send(command.spawn());
                }
                std::thread::park();
            })
            .expect("spawner thread");
        Mutex::new(tx)
    });
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let (reply_tx, reply_rx) = mpsc::channel();
    spawner
        .lock()
        .unwrap()
        .send((command, reply_tx))
        .expect("spawner alive");
    reply_rx.recv().expect("spawner replies")
}

/// A SecantusDB server of this test process, with its data in a directory of its own so
/// that it can be stopped and started again with the data intact (outage tests).
pub struct Database {
    pub port: u16,
    storage: PathBuf,
    child: Mutex<Option<Child>>,
    log: PathBuf,
}

impl Database {
    /// The server shared by every test in this process.
    pub fn shared() -> &'static Arc<Database> {
        static SHARED: OnceLock<Arc<Database>> = OnceLock::new();
        SHARED.get_or_init(|| Arc::new(Database::start_new()))
    }

    /// A server of its own (for tests that stop it).
    pub fn start_new() -> Database {
        let base = project_root().join("target/harness");
        std::fs::create_dir_all(&base).expect("target/harness");
        remove_stale_dirs(&base);
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "secantus-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let storage = base.join(&name);
        let database = Database {
            port: free_port(),
            log: base.join(format!("{name}.log")),
            storage,
            child: Mutex::new(None),
        };
        database.spawn();
        database
    }

    fn spawn(&self) {
        let log = std::fs::File::create(&self.log).expect("database log file");
        let mut command = Server::from_env().command(self.port, &self.storage);
        command
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        let mut child = spawn_tied(command).expect("start SecantusDB");
        if !wait_for_port(self.port, Duration::from_secs(60)) {
            let _ = child.kill();
            panic!(
                "SecantusDB did not accept connections on {} within 60 s; log: {}",
                self.port,
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
        *self.child.lock().unwrap() = Some(child);
    }

    pub fn uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}/?directConnection=true", self.port)
    }

    /// Kills the server (as a crash would); its data stays on disk.
    pub fn stop(&self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and data.
    pub fn start(&self) {
        if self.child.lock().unwrap().is_none() {
            self.spawn();
        }
    }

    /// A configuration pointing at a database of its own on this server.
    pub fn config(&self, database: &str) -> DatabaseConfig {
        DatabaseConfig {
            mongo_uri: self.uri(),
            mongo_database: database.into(),
            collection_job_traces: "job_traces".into(),
            ensure_indexes: false,
            db_timeout_seconds: 10.0,
            store_write: Default::default(),
        }
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.storage);
        let _ = std::fs::remove_file(self.storage.with_extension("toml"));
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Which SecantusDB server: the pinned Python package (the tests' default), or the much
/// faster Rust server that `bench/ensure-tools.sh` builds into `.bench-tools/` (the bench
/// and the long runs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Server {
    Python,
    Rust,
}

impl Server {
    /// `JOBTRACE_DATABASE`: `python` (the default) or `rust`.
    pub fn from_env() -> Server {
        match std::env::var("JOBTRACE_DATABASE").as_deref() {
            Ok("rust") => Server::Rust,
            Ok("python") | Err(std::env::VarError::NotPresent) => Server::Python,
            Ok(other) => panic!("JOBTRACE_DATABASE={other}: expected python or rust"),
            Err(e) => panic!("JOBTRACE_DATABASE: {e}"),
        }
    }

    /// Where the Rust server is: `SECANTUS_BIN`, else where `bench/ensure-tools.sh` puts it.
    pub fn rust_binary() -> PathBuf {
        std::env::var_os("SECANTUS_BIN").map_or_else(
            || project_root().join(".bench-tools/bin/secantusd-rs"),
            PathBuf::from,
        )
    }

    /// The server on `127.0.0.1:port` with its data in `storage`, logging warnings and
    /// worse.
    pub fn command(self, port: u16, storage: &Path) -> Command {
        let mut command = match self {
            Server::Python => Command::new(ensure_venv()),
            Server::Rust => {
                let binary = Server::rust_binary();
                assert!(
                    binary.exists(),
                    "the Rust SecantusDB server is not at {}: run bash bench/ensure-tools.sh",
                    binary.display()
                );
                // An empty config file: otherwise the server would read a secantusd.toml
                // it finds in the working or home directory.
                let config = storage.with_extension("toml");
                std::fs::write(&config, "").expect("database config file");
                let mut command = Command::new(binary);
                command.arg("--config").arg(config);
                command
            }
        };
        command
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .arg("--storage-path")
            .arg(storage)
            .args(["--log-level", "WARNING"]);
        command
    }
}

fn remove_stale_dirs(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("secantus-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let path = entry.path();
            let _ = if path.is_dir() {
                std::fs::remove_dir_all(path)
            } else {
                std::fs::remove_file(path)
            };
        }
    }
}

/// A database name no other test uses.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A store on a fresh database of the shared server.
pub async fn fresh_store(prefix: &str) -> TraceStore {
    let config = Database::shared().config(&unique_name(prefix));
    TraceStore::connect(&config).await.expect("store")
}

/// A store on a fresh database of the shared server, writing with `write`.
pub async fn fresh_store_writing(prefix: &str, write: StoreWrite) -> TraceStore {
    fresh_store(&format!("{}_{prefix}", write.as_str()))
        .await
        .with_strategy(write)
}

/// Counts the commands a client sends, by name.
#[derive(Clone, Default)]
pub struct CommandCounter(Arc<Mutex<Vec<String>>>);

impl CommandCounter {
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut self.0.lock().unwrap())
    }
}

/// A store whose client reports every command it starts to the returned counter.
pub async fn counted_store(prefix: &str) -> (TraceStore, CommandCounter) {
    let config = Database::shared().config(&unique_name(prefix));
    let counter = CommandCounter::default();
    let sink = counter.clone();
    let mut options = ClientOptions::parse(&config.mongo_uri).await.expect("uri");
    options.command_event_handler = Some(EventHandler::callback(move |event| {
        if let CommandEvent::Started(started) = event {
            sink.0.lock().unwrap().push(started.command_name.clone());
        }
    }));
    let client = Client::with_options(options).expect("client");
    (
        TraceStore::with_client(client, &config).expect("store"),
        counter,
    )
}
