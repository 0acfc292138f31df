//! Node.js scripts as test drivers: the JavaScript client (`clients/js`) and the status
//! page's headless Chromium run (`tests/browser`, installed by
//! `scripts/ensure-browser.sh`).
//!
//! Without `node` (or, for the browser, without Chromium and playwright-core), [`node`]
//! and [`browser`] say so loudly and return `None` (the test returns early); under
//! `CI=true` they panic instead, so CI never passes by skipping.
//!
//! A script talks to its test through its standard output, one line per event: the test
//! waits for a line ([`NodeScript::expect_line`]) before it changes the trace, so that
//! the script sees each change as a change rather than as one final state.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::{project_root, spawn_tied};

/// Where the status page test expects Debian's Chromium.
pub const CHROMIUM: &str = "/usr/bin/chromium";

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|value| value == "true" || value == "1")
}

/// `None` with a NOT RUN message outside CI, a panic under `CI=true`.
fn unavailable<T>(test: &str, reason: &str, remedy: &str) -> Option<T> {
    if in_ci() {
        panic!("{test}: required under CI=true: {reason}");
    }
    // Straight to stderr, past the test harness's capture: a skip must be seen.
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "\n!!!!!!!! {test}: NOT RUN: {reason}.\n!!!!!!!! {remedy}\n"
    );
    None
}

/// The `node` binary (version 20 or newer), or `None` after a loud NOT RUN message.
pub fn node(test: &str) -> Option<PathBuf> {
    let version = Command::new("node")
        .arg("--version")
        .stderr(Stdio::null())
        .output();
    let reason = match version {
        Ok(output) if output.status.success() => {
            let text = String::from_utf8_lossy(&output.stdout).trim().to_owned();
            let major = text
                .trim_start_matches('v')
                .split('.')
                .next()
                .and_then(|major| major.parse::<u32>().ok());
            match major {
                Some(major) if major >= 20 => return Some(PathBuf::from("node")),
                _ => format!("node {text} is older than 20"),
            }
        }
        _ => "node is not installed".to_owned(),
    };
    unavailable(
        test,
        &reason,
        "Install Node.js 20 or newer (Debian: `apt-get install nodejs npm`).",
    )
}

/// What the status page test needs: node, Chromium and playwright-core.
pub struct Browser {
    pub node: PathBuf,
    pub chromium: PathBuf,
    /// `tests/browser`, whose `node_modules` holds playwright-core.
    pub dir: PathBuf,
}

/// Runs `scripts/ensure-browser.sh` (once per process; it is quick when all is there) and
/// returns the browser tooling, or `None` after a loud NOT RUN message.
pub fn browser(test: &str) -> Option<Browser> {
    let node = node(test)?;
    let root = project_root();
    let status = Command::new("bash")
        .arg(root.join("scripts/ensure-browser.sh"))
        .status();
    if !status.is_ok_and(|status| status.success()) {
        return unavailable(
            test,
            "scripts/ensure-browser.sh failed",
            "Run `make browser` and read its output.",
        );
    }
    let dir = root.join("tests/browser");
    let chromium = PathBuf::from(CHROMIUM);
    if !chromium.exists() {
        return unavailable(
            test,
            &format!("{CHROMIUM} is missing"),
            "Run `make browser` as root (it installs Debian's chromium).",
        );
    }
    if !dir
        .join("node_modules/playwright-core/package.json")
        .exists()
    {
        return unavailable(
            test,
            "playwright-core is not installed in tests/browser",
            "Run `make browser` (npm ci in tests/browser).",
        );
    }
    Some(Browser {
        node,
        chromium,
        dir,
    })
}

/// A running Node script whose stdout lines the test reads as they come. It dies with
/// the test process ([`spawn_tied`]) and is killed when dropped.
pub struct NodeScript {
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    /// Every stdout line read so far, for failure messages and final assertions.
    pub transcript: Vec<String>,
    stderr: Arc<Mutex<String>>,
}

impl NodeScript {
    /// Runs `node script` in the project root with `vars` added to the environment.
    pub fn spawn(node: &Path, script: &Path, vars: &[(&str, &str)]) -> NodeScript {
        let mut command = Command::new(node);
        command
            .arg(script)
            .current_dir(project_root())
            .envs(vars.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = spawn_tied(command)
            .unwrap_or_else(|error| panic!("start node {}: {error}", script.display()));
        let (tx, lines) = mpsc::unbounded_channel();
        let stdout = child.stdout.take().expect("piped stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let mut pipe = child.stderr.take().expect("piped stderr");
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok(read) = pipe.read(&mut buffer) {
                if read == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buffer[..read]));
            }
        });
        NodeScript {
            child,
            lines,
            transcript: Vec::new(),
            stderr,
        }
    }

    /// What the script wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn explain(&self, what: &str) -> String {
        format!(
            "{what}\n--- stdout so far:\n{}\n--- stderr:\n{}",
            self.transcript.join("\n"),
            self.stderr()
        )
    }

    /// Waits for the next line that satisfies `wanted`, at most `limit`; returns it.
    /// Panics (with everything the script said) when the script ends or time runs out.
    pub async fn expect_line(&mut self, wanted: impl Fn(&str) -> bool, limit: Duration) -> String {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) => {
                    self.transcript.push(line.clone());
                    if wanted(&line) {
                        return line;
                    }
                }
                Ok(None) => panic!(
                    "{}",
                    self.explain("the script ended before the expected line")
                ),
                Err(_) => panic!(
                    "{}",
                    self.explain(&format!("no expected line within {limit:?}"))
                ),
            }
        }
    }

    /// Waits for the script to exit (at most `limit`, then kills it) and returns its exit
    /// status, its whole stdout transcript and its stderr.
    pub async fn finish(mut self, limit: Duration) -> (ExitStatus, Vec<String>, String) {
        let deadline = tokio::time::Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait for node") {
                break status;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "{}",
                    self.explain(&format!("the script did not exit within {limit:?}"))
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        // The reader thread forwards what was left in the pipe, then closes the channel.
        while let Some(line) = self.lines.recv().await {
            self.transcript.push(line);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let stderr = self.stderr();
        (status, std::mem::take(&mut self.transcript), stderr)
    }
}

impl Drop for NodeScript {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
