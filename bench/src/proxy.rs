//! A loopback proxy in front of the database that counts the commands clients send, by
//! name. Counting on the wire sees what the services really send (their drivers are in
//! other processes, out of reach of command monitoring), and works whatever counters the
//! server keeps.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

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
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
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

/// Listens on a free loopback port and forwards to `upstream`; returns the port.
pub async fn start(upstream: u16, counts: Counts) -> u16 {
    let listener = TcpListener::bind(("127.0.0.1", 0))
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
                let (client_read, mut client_write) = client.into_split();
                let (mut server_read, server_write) = server.into_split();
                let replies = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
                });
                let _ = pump_requests(client_read, server_write, counts).await;
                replies.abort();
            });
        }
    });
    port
}
