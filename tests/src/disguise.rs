//! A TCP proxy in front of the database that disguises its duplicate-key answers: code
//! 11000 becomes 3, and no text says "duplicate" or "E11000" any more (same lengths, so
//! the wire frames stay valid). What a service that answers a unique-index violation in
//! its own words looks like to the store.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub struct Proxy {
    port: u16,
    disguised: Arc<AtomicUsize>,
}

fn replace(bytes: &mut [u8], from: &[u8], to: &[u8]) -> usize {
    let mut found = 0;
    let mut at = 0;
    while at + from.len() <= bytes.len() {
        if &bytes[at..at + from.len()] == from {
            bytes[at..at + from.len()].copy_from_slice(to);
            found += 1;
            at += from.len();
        } else {
            at += 1;
        }
    }
    found
}

fn code(kind: u8, value: i64) -> Vec<u8> {
    let mut bytes = vec![kind];
    bytes.extend_from_slice(b"code\0");
    match kind {
        0x10 => bytes.extend_from_slice(&(value as i32).to_le_bytes()),
        _ => bytes.extend_from_slice(&value.to_le_bytes()),
    }
    bytes
}

fn disguise(message: &mut [u8]) -> usize {
    replace(message, &code(0x10, 11000), &code(0x10, 3))
        + replace(message, &code(0x12, 11000), &code(0x12, 3))
        + replace(message, b"uplicate", b"nhandled")
        + replace(message, b"UPLICATE", b"NHANDLED")
        + replace(message, b"E11000", b"E00003")
}

async fn answers(
    mut server: tokio::net::tcp::OwnedReadHalf,
    mut client: tokio::net::tcp::OwnedWriteHalf,
    count: Arc<AtomicUsize>,
) -> std::io::Result<()> {
    loop {
        let mut length = [0u8; 4];
        server.read_exact(&mut length).await?;
        let total = i32::from_le_bytes(length) as usize;
        let mut message = vec![0u8; total];
        message[..4].copy_from_slice(&length);
        server.read_exact(&mut message[4..]).await?;
        if disguise(&mut message[4..]) > 0 {
            count.fetch_add(1, Ordering::Relaxed);
        }
        client.write_all(&message).await?;
    }
}

impl Proxy {
    pub async fn start(database_port: u16) -> Proxy {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let disguised = Arc::new(AtomicUsize::new(0));
        let count = disguised.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(("127.0.0.1", database_port)).await else {
                    continue;
                };
                let (mut client_read, client_write) = client.into_split();
                let (server_read, mut server_write) = server.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
                });
                tokio::spawn(answers(server_read, client_write, count.clone()));
            }
        });
        Proxy { port, disguised }
    }

    pub fn uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}/?directConnection=true", self.port)
    }

    /// How many answers were disguised.
    pub fn disguised(&self) -> usize {
        self.disguised.load(Ordering::Relaxed)
    }
}
