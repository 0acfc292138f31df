//! The functions under test, for real: a router served in-process on a free loopback
//! port, or a built binary run as its own process (start-up, logging and SIGTERM tests).

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use job_trace::config::ConnectionLimits;

use crate::{free_port, project_root, spawn_tied};

/// A router served on `127.0.0.1:<free port>` by the shared HTTP shell, until the test's
/// runtime ends.
pub struct Served {
    pub addr: SocketAddr,
    pub base: String,
}

impl Served {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }
}

/// Serves `router` in this process.
pub async fn serve(router: axum::Router) -> Served {
    serve_limited(router, ConnectionLimits::default()).await
}

/// Serves `router` in this process, its connections held to `limits`.
pub async fn serve_limited(router: axum::Router, limits: ConnectionLimits) -> Served {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .expect("bind a loopback port");
    let addr = listener.local_addr().expect("local address");
    tokio::spawn(job_trace::http::serve_with(
        listener,
        router,
        limits,
        std::future::pending(),
    ));
    Served {
        addr,
        base: format!("http://{addr}"),
    }
}

/// A function's binary running as a child of the test process, its stdout and stderr
/// going to a log file.
pub struct Binary {
    pub port: u16,
    pub child: Child,
    /// When the process was started.
    pub started: Instant,
    log: PathBuf,
}

impl Binary {
    /// Runs `path` with `PORT` set to a free port and the given variables (and nothing
    /// else from the environment but `PATH`).
    pub fn spawn(path: &Path, vars: &[(&str, &str)]) -> Binary {
        let base = project_root().join("target/harness");
        std::fs::create_dir_all(&base).expect("target/harness");
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let log = base.join(format!(
            "binary-{}-{}.log",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let file = std::fs::File::create(&log).expect("binary log");
        let port = free_port();
        let mut command = Command::new(path);
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("PORT", port.to_string())
            .envs(vars.iter().copied())
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log"))
            .stderr(file);
        let started = Instant::now();
        let child = spawn_tied(command).expect("start the binary");
        Binary {
            port,
            child,
            started,
            log,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    /// Everything the process has written so far.
    pub fn output(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = std::fs::File::open(&self.log) {
            let _ = file.read_to_string(&mut text);
        }
        text
    }

    /// The JSON lines of the output (anything else is skipped).
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.output()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// Sends SIGTERM, as Cloud Run does to stop an instance.
    pub fn terminate(&self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
    }

    /// Waits for the process to exit, at most `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}
