//! A loopback proxy in front of the database that counts the commands clients send, by
//! name, and can hold every reply back for a while. Counting on the wire sees what the
//! services really send (their drivers are in other processes, out of reach of command
//! monitoring), and works whatever counters the server keeps. The delay puts the database
//! a network hop away, as Firestore or Atlas are from Cloud Run: what a request then costs
//! is a full park-and-wake cycle of the service around a slow reply, which a database on
//! the same host (replies in 0.2 ms) hides.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

const OP_MSG: i32 = 2013;
const OP_QUERY: i32 = 2004;

#[derive(Clone, Default)]
pub struct Counts(Arc<Mutex<BTreeMap<String, u64>>>);

impl Counts {
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0.lock().expect("counts lock").clone()
    }

    fn add(&self, name: String) {
        *self.0.lock().expect("counts lock").entry(name).or_default() += 1;
    }
}

/// Commands in `after` that were not in `before`, by name.
pub fn delta(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .filter_map(|(name, n)| {
            let d = n - before.get(name).copied().unwrap_or(0);
            (d > 0).then(|| (name.clone(), d))
        })
        .collect()
}

/// Handshakes and server monitoring: the driver's, on their own schedule, not the work
/// of any request.
pub fn is_monitoring(name: &str) -> bool {
    matches!(
        name,
        "hello" | "isMaster" | "ismaster" | "legacy-handshake" | "endSessions"
    )
}

/// The first key of a BSON document: the command's name.
fn first_key(doc: &[u8]) -> Option<String> {
    let rest = doc.get(5..)?;
    let end = rest.iter().position(|b| *b == 0)?;
    Some(String::from_utf8_lossy(&rest[..end]).into_owned())
}

/// The command an OP_MSG body carries (its kind-0 section), skipping document sequences.
fn command_name(body: &[u8]) -> Option<String> {
    let mut at = 4; // flagBits
    while at < body.len() {
        let kind = body[at];
        at += 1;
        let size = i32::from_le_bytes(body.get(at..at + 4)?.try_into().ok()?) as usize;
        if kind == 0 {
            return first_key(body.get(at..at + size)?);
        }
        at += size;
    }
    None
}

async fn pump_requests(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    counts: Counts,
) -> std::io::Result<()> {
    let mut header = [0u8; 16];
    loop {
        from.read_exact(&mut header).await?;
        let length = i32::from_le_bytes(header[0..4].try_into().expect("4 bytes")) as usize;
        let op = i32::from_le_bytes(header[12..16].try_into().expect("4 bytes"));
        let mut body = vec![0u8; length.saturating_sub(16)];
        from.read_exact(&mut body).await?;
        let name = match op {
            OP_MSG => command_name(&body).unwrap_or_else(|| "unreadable".into()),
            OP_QUERY => "legacy-handshake".into(),
            other => format!("opcode-{other}"),
        };
        counts.add(name);
        to.write_all(&header).await?;
        to.write_all(&body).await?;
    }
}

/// Server to client, each chunk written `delay` after it arrived. The delay is added to
/// the reply rather than the request so that a round trip pays it once, and chunks queue
/// rather than wait in turn, so that pipelined or concurrent replies overlap as they would
/// on a long wire.
async fn pump_replies(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, delay: Duration) {
    if delay.is_zero() {
        let _ = tokio::io::copy(&mut from, &mut to).await;
        return;
    }
    let (chunks, mut due) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let writer = tokio::spawn(async move {
        while let Some((at, chunk)) = due.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
    });
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if chunks
                    .send((Instant::now() + delay, buffer[..n].to_vec()))
                    .is_err()
                {
                    break;
                }
            }
        }
    }
    drop(chunks);
    let _ = writer.await;
}

/// Listens on loopback port `listen` (0: a free one) and forwards to `upstream`, each
/// reply `delay` late; returns the port.
pub async fn start(listen: u16, upstream: u16, counts: Counts, delay: Duration) -> u16 {
    let listener = TcpListener::bind(("127.0.0.1", listen))
        .await
        .expect("bind the counting proxy");
    let port = listener.local_addr().expect("proxy address").port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let counts = counts.clone();
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                    return;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                let replies = tokio::spawn(pump_replies(server_read, client_write, delay));
                let _ = pump_requests(client_read, server_write, counts).await;
                replies.abort();
            });
        }
    });
    port
}

/// `bench proxy UPSTREAM DELAY_MS PORT`: the delaying proxy as a process of its own, so
/// that its CPU is not counted as the direct client's (the bench's own process) and it
/// does not share the client's runtime. Serves until its parent dies.
pub fn serve_as_process(upstream: u16, delay: Duration, listen: u16) -> ! {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("proxy runtime");
    rt.block_on(async {
        start(listen, upstream, Counts::default(), delay).await;
        std::future::pending::<()>().await
    });
    unreachable!("the proxy serves until it is killed")
}
