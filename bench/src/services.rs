//! The processes under test: the database and the two functions, each started on a free
//! loopback port and stopped when the bench ends, however it ends.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use job_trace_tests::spawn_tied;

/// A child that dies with the bench: the harness's parent-death signal covers a panic or
/// a Ctrl-C, and Drop covers the ordinary end.
pub struct Process {
    child: Child,
}

impl Process {
    /// `keep_stdout: false` discards stdout: the functions still format their one JSON
    /// line per request (that cost is theirs), but gigabytes of it would only load the disk.
    pub fn spawn(name: &str, mut command: Command, log: &Path, keep_stdout: bool) -> Process {
        let log = std::fs::File::create(log).expect("create a log file");
        let stdout = if keep_stdout {
            Stdio::from(log.try_clone().expect("log handle"))
        } else {
            Stdio::null()
        };
        command.stdin(Stdio::null()).stdout(stdout).stderr(log);
        let child = spawn_tied(command).unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Process { child }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it is still running (a crash shows up here rather than as timeouts).
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, then SIGKILL after a grace period.
    pub fn stop(&mut self) {
        if !self.alive() {
            return;
        }
        // SAFETY: kill only signals our own child, whose pid we still hold.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if !self.alive() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One HTTP/1.1 request on a new connection; the status code, or None when nothing
/// answered (yet). Plain sockets: the cold-start loop must not measure a client's pool.
pub fn http_status(port: u16, method: &str, path: &str, body: Option<&str>) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    stream.set_nodelay(true).ok()?;
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// Where the bench's builds and tools are (the database server: `Server::rust_binary`).
pub struct Binaries {
    pub writer: PathBuf,
    pub api: PathBuf,
    pub wrk: PathBuf,
}

/// Where callgrind writes, once `bench instructions` has the functions run under it.
static CALLGRIND_DIR: OnceLock<PathBuf> = OnceLock::new();

/// From now on the functions run under callgrind, writing into `dir`.
pub fn count_instructions_into(dir: PathBuf) {
    CALLGRIND_DIR.set(dir).expect("set once");
}

/// How long a function may take to become ready: under callgrind, start-up is slow.
pub fn start_up_allowance() -> Duration {
    Duration::from_secs(if CALLGRIND_DIR.get().is_some() {
        180
    } else {
        30
    })
}

/// The two functions' environment, as README's configuration table has it.
pub fn function_command(binary: &Path, port: u16, mongo_uri: &str, database: &str) -> Command {
    let mut command = match CALLGRIND_DIR.get() {
        Some(dir) => {
            let mut valgrind = Command::new("valgrind");
            valgrind
                .arg("--tool=callgrind")
                .arg(format!(
                    "--callgrind-out-file={}/callgrind.%p",
                    dir.display()
                ))
                .arg(binary);
            valgrind
        }
        None => Command::new(binary),
    };
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("PORT", port.to_string())
        .env("MONGO_URI", mongo_uri)
        .env("MONGO_DATABASE", database)
        .env("PUSH_AUTH", "none")
        .env("RUST_LOG", "info");
    // The runtime's own knob, passed on to compare worker counts with the same bench.
    if let Some(workers) = std::env::var_os("TOKIO_WORKER_THREADS") {
        command.env("TOKIO_WORKER_THREADS", workers);
    }
    command
}
