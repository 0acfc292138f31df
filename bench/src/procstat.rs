//! CPU time and memory of a process, from /proc.

use std::sync::OnceLock;

fn ticks_per_second() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    // SAFETY: sysconf reads a constant of the system and touches no memory of ours.
    *TICKS.get_or_init(|| match unsafe { libc::sysconf(libc::_SC_CLK_TCK) } {
        n if n > 0 => n as f64,
        _ => 100.0,
    })
}

/// utime + stime of `pid`, in microseconds.
pub fn cpu_micros(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields count from its last `)`.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split(' ').collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / ticks_per_second() * 1e6)
}

/// Times `pid`'s threads went to sleep waiting (voluntary context switches, summed over
/// the threads): each is a wake-up paid when what it waited for arrives. Unlike CPU
/// time, the count hardly depends on what else the machine is doing.
pub fn wakeups(pid: u32) -> Option<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    Some(
        tasks
            .flatten()
            .filter_map(|task| std::fs::read_to_string(task.path().join("status")).ok())
            .filter_map(|status| {
                status.lines().find_map(|line| {
                    line.strip_prefix("voluntary_ctxt_switches:")?
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
            })
            .sum(),
    )
}

/// A `Vm*` line of /proc/PID/status, in KiB.
fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        rest.trim().trim_end_matches("kB").trim().parse().ok()
    })
}

/// Resident memory now, in MiB.
pub fn rss_mib(pid: u32) -> Option<f64> {
    status_kib(pid, "VmRSS").map(|kib| kib as f64 / 1024.0)
}

/// The most resident memory the process ever had, in MiB.
pub fn hwm_mib(pid: u32) -> Option<f64> {
    status_kib(pid, "VmHWM").map(|kib| kib as f64 / 1024.0)
}
