//! Slow and greedy clients against the real apps served by the real server loop
//! (`job_trace::http::serve_with`), with deadlines read from variables as a deployment sets
//! them, short enough that each test takes seconds:
//!
//! * a request head sent a line at a time is cut at `HEADER_READ_TIMEOUT_SECONDS`;
//! * a kept-alive connection waits for its next request for `IDLE_TIMEOUT_SECONDS` (not
//!   the header timeout), then is closed; the head of that request, once begun, has
//!   `HEADER_READ_TIMEOUT_SECONDS`;
//! * a declared body that does not arrive is answered 408 within
//!   `BODY_READ_TIMEOUT_SECONDS` and the connection closed;
//! * past `MAX_CONNECTIONS` a new connection gets 503 with `Retry-After`, and a place is
//!   free again once a held connection closes;
//! * past `MAX_EVENT_STREAMS` an event stream gets 503 with `Retry-After`, and a closed
//!   stream frees its place;
//! * a client that stops reading its responses is let go after `IDLE_TIMEOUT_SECONDS`.

mod api_common;

use std::time::{Duration, Instant};

use api_common::{apply_all, queued, Api};
use job_trace::config::{from_iter, vars, ConnectionLimits, ServerConfig};
use job_trace::model::JobType;
use job_trace_tests::apps::{serve_limited, Served};
use job_trace_tests::{fixture, fresh_store};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use trace_api::ApiConfig;
use trace_writer::WriterConfig;

/// The limits a deployment with these variables gets.
fn limits(pairs: &[(&str, &str)]) -> ConnectionLimits {
    let server: ServerConfig = from_iter(vars(pairs)).expect("server variables");
    server.limits().expect("usable limits")
}

async fn writer(prefix: &str, limits: ConnectionLimits) -> Served {
    let store = fresh_store(prefix).await;
    serve_limited(
        trace_writer::app(store, WriterConfig::unauthenticated()),
        limits,
    )
    .await
}

async fn connect(served: &Served) -> TcpStream {
    TcpStream::connect(served.addr).await.expect("connect")
}

/// Reads until the server closes the connection or `limit` passes: when it closed (`None`
/// if it had not), and everything it sent.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (Option<Instant>, Vec<u8>) {
    let deadline = tokio::time::Instant::now() + limit;
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Err(_) => return (None, received),
            Ok(Ok(0)) | Ok(Err(_)) => return (Some(Instant::now()), received),
            Ok(Ok(n)) => received.extend_from_slice(&buffer[..n]),
        }
    }
}

/// Reads one response (a body only with `content-length`), leaving the connection open.
async fn read_response(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&received).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if body.len() >= length {
                return text;
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buffer))
            .await
            .expect("a response in time")
            .expect("read");
        assert!(n > 0, "closed before a whole response: {text:?}");
        received.extend_from_slice(&buffer[..n]);
    }
}

/// Sends a header line every 250 ms (10 s of them) after the head begun on `stream`, and
/// returns when the server closes the connection; panics if it is still open after 8 s.
async fn trickle_until_closed(stream: TcpStream) -> Instant {
    let (mut reader, mut writer) = stream.into_split();
    let trickle = tokio::spawn(async move {
        for i in 0..40 {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let line = format!("X-Slow-{i}: y\r\n");
            if writer.write_all(line.as_bytes()).await.is_err() {
                return;
            }
        }
    });
    let mut buffer = [0u8; 1024];
    let closed = tokio::time::timeout(Duration::from_secs(8), async {
        loop {
            match reader.read(&mut buffer).await {
                Ok(0) | Err(_) => return Instant::now(),
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("the connection is closed long before its head could end (10 s of lines)");
    trickle.abort();
    closed
}

const HEALTH: &[u8] = b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n";

fn status_line(response: &str) -> &str {
    response.lines().next().unwrap_or("")
}

#[tokio::test]
async fn a_head_sent_a_line_at_a_time_is_cut_at_the_header_timeout() {
    let served = writer(
        "slow_head",
        limits(&[
            ("HEADER_READ_TIMEOUT_SECONDS", "1"),
            ("IDLE_TIMEOUT_SECONDS", "30"),
        ]),
    )
    .await;
    // Whole heads are served under the same limits.
    let mut prompt = connect(&served).await;
    prompt.write_all(HEALTH).await.unwrap();
    let response = read_response(&mut prompt).await;
    assert_eq!(status_line(&response), "HTTP/1.1 200 OK", "{response}");

    let mut slow = connect(&served).await;
    let connected = Instant::now();
    slow.write_all(b"POST / HTTP/1.1\r\nHost: test\r\n")
        .await
        .unwrap();
    let closed = trickle_until_closed(slow).await;
    let held = closed - connected;
    println!("a head sent a line every 250 ms was held {held:?}");
    assert!(
        held >= Duration::from_millis(900) && held < Duration::from_secs(3),
        "held {held:?} with a header timeout of 1 s"
    );
}

#[tokio::test]
async fn a_kept_alive_connection_waits_for_the_idle_timeout_not_the_header_timeout() {
    let served = writer(
        "slow_idle",
        limits(&[
            ("HEADER_READ_TIMEOUT_SECONDS", "1"),
            ("IDLE_TIMEOUT_SECONDS", "3"),
        ]),
    )
    .await;
    let mut stream = connect(&served).await;
    stream.write_all(HEALTH).await.unwrap();
    let first = read_response(&mut stream).await;
    assert_eq!(status_line(&first), "HTTP/1.1 200 OK", "{first}");
    // Idle past the header timeout: the next request is still served.
    tokio::time::sleep(Duration::from_millis(1_800)).await;
    stream.write_all(HEALTH).await.unwrap();
    let second = read_response(&mut stream).await;
    assert_eq!(status_line(&second), "HTTP/1.1 200 OK", "{second}");
    let answered = Instant::now();
    let (closed, rest) = read_until_closed(&mut stream, Duration::from_secs(10)).await;
    let idle = closed.expect("an idle connection is closed") - answered;
    println!("an idle kept-alive connection was closed after {idle:?}");
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    assert!(
        idle >= Duration::from_millis(2_700) && idle < Duration::from_secs(6),
        "closed after {idle:?} idle with an idle timeout of 3 s"
    );
}

#[tokio::test]
async fn a_slow_head_on_a_kept_alive_connection_is_cut_at_the_header_timeout() {
    let served = writer(
        "slow_next_head",
        limits(&[
            ("HEADER_READ_TIMEOUT_SECONDS", "1"),
            ("IDLE_TIMEOUT_SECONDS", "5"),
        ]),
    )
    .await;
    let mut stream = connect(&served).await;
    stream.write_all(HEALTH).await.unwrap();
    let first = read_response(&mut stream).await;
    assert_eq!(status_line(&first), "HTTP/1.1 200 OK", "{first}");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    // The idle timeout would end this connection 3.5 s after the head's first byte; the
    // header timeout, counted from that byte, ends it after 1 s.
    stream.write_all(b"GET /health HTTP/1.1\r\n").await.unwrap();
    let first_byte = Instant::now();
    let closed = trickle_until_closed(stream).await;
    let held = closed - first_byte;
    println!("a slow second head was held {held:?} from its first byte");
    assert!(
        held >= Duration::from_millis(900) && held < Duration::from_millis(2_500),
        "held {held:?} from the first byte with a header timeout of 1 s"
    );
}

#[tokio::test]
async fn a_body_that_does_not_arrive_is_answered_408_and_the_connection_closed() {
    let served = writer("slow_body", limits(&[("BODY_READ_TIMEOUT_SECONDS", "1")])).await;
    // A whole push is recorded under the same limits.
    let push = fixture("push-job-message.json");
    let mut prompt = connect(&served).await;
    let head = format!(
        "POST / HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        push.len()
    );
    prompt.write_all(head.as_bytes()).await.unwrap();
    prompt.write_all(&push).await.unwrap();
    let response = read_response(&mut prompt).await;
    assert_eq!(
        status_line(&response),
        "HTTP/1.1 204 No Content",
        "{response}"
    );

    let mut stream = connect(&served).await;
    stream
        .write_all(
            b"POST / HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
              Content-Length: 10000000\r\n\r\n{\"message\":",
        )
        .await
        .unwrap();
    let sent = Instant::now();
    let (closed, received) = read_until_closed(&mut stream, Duration::from_secs(10)).await;
    let held = closed.expect("the connection is closed") - sent;
    let text = String::from_utf8_lossy(&received);
    println!("a 10 MB body that never came was answered after {held:?}: {text}");
    assert_eq!(status_line(&text), "HTTP/1.1 408 Request Timeout", "{text}");
    assert!(
        text.to_ascii_lowercase().contains("connection: close"),
        "{text}"
    );
    assert!(text.contains("did not arrive within"), "{text}");
    assert!(
        held >= Duration::from_millis(900) && held < Duration::from_secs(4),
        "held {held:?} with a body timeout of 1 s"
    );
}

#[tokio::test]
async fn past_max_connections_a_new_one_gets_503_until_a_place_frees() {
    let served = writer(
        "slow_bound",
        limits(&[
            ("MAX_CONNECTIONS", "4"),
            ("HEADER_READ_TIMEOUT_SECONDS", "30"),
            ("IDLE_TIMEOUT_SECONDS", "30"),
        ]),
    )
    .await;
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut stream = connect(&served).await;
        stream
            .write_all(b"POST / HTTP/1.1\r\nHost: te")
            .await
            .unwrap();
        held.push(stream);
    }
    // The server takes connections in order; give it the four before the fifth.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut refused = connect(&served).await;
    refused.write_all(HEALTH).await.unwrap();
    let (closed, received) = read_until_closed(&mut refused, Duration::from_secs(5)).await;
    let text = String::from_utf8_lossy(&received);
    assert!(
        closed.is_some(),
        "the refused connection stays open: {text}"
    );
    assert_eq!(
        status_line(&text),
        "HTTP/1.1 503 Service Unavailable",
        "{text}"
    );
    assert!(text.contains("retry-after: 1"), "{text}");
    assert!(text.contains("too many open connections"), "{text}");

    held.pop();
    let mut answer = String::new();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut stream = connect(&served).await;
        stream.write_all(HEALTH).await.unwrap();
        let (_, received) = read_until_closed(&mut stream, Duration::from_millis(500)).await;
        answer = String::from_utf8_lossy(&received).into_owned();
        if answer.starts_with("HTTP/1.1 200") {
            break;
        }
    }
    assert_eq!(status_line(&answer), "HTTP/1.1 200 OK", "{answer}");
}

async fn open_stream(api: &Api, path: &str) -> reqwest::Response {
    api.http
        .get(api.url(path))
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("request")
}

#[tokio::test]
async fn past_max_event_streams_a_stream_gets_503_and_a_closed_one_frees_its_place() {
    let config = ApiConfig {
        max_event_streams: 2,
        ..ApiConfig::default()
    };
    let api = Api::start("slow_streams", config).await;
    apply_all(
        &api.store,
        &[queued("sb1", "Ustreams", JobType::PropertyScrape, 0)],
    )
    .await;
    let path = "/api/v1/jobs/status/sb1/events";
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut response = open_stream(&api, path).await;
        assert_eq!(response.status(), 200);
        let first = response.chunk().await.unwrap().expect("the first event");
        assert!(String::from_utf8_lossy(&first).contains("event: status"));
        open.push(response);
    }
    let refused = open_stream(&api, path).await;
    assert_eq!(refused.status(), 503);
    assert_eq!(
        refused
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let body: serde_json::Value = refused.json().await.unwrap();
    assert!(body["detail"].is_string(), "{body}");
    // Ordinary reads are not streams and still go through.
    let (status, _) = api.json("/api/v1/jobs/status/sb1").await;
    assert_eq!(status, 200);

    drop(open.pop());
    let mut status = 0;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let response = open_stream(&api, path).await;
        status = response.status().as_u16();
        if status == 200 {
            break;
        }
    }
    assert_eq!(status, 200, "a closed stream did not free its place");
}

#[tokio::test]
async fn a_client_that_stops_reading_is_let_go_after_the_idle_timeout() {
    let store = fresh_store("slow_reader").await;
    let served = serve_limited(
        trace_api::app(store, ApiConfig::default()),
        limits(&[
            ("HEADER_READ_TIMEOUT_SECONDS", "1"),
            ("IDLE_TIMEOUT_SECONDS", "1"),
        ]),
    )
    .await;
    // Far more response bytes than loopback's socket buffers hold, asked for at once.
    const REQUESTS: usize = 2_000;
    let request = b"GET /openapi.json HTTP/1.1\r\nHost: test\r\n\r\n";
    let mut stream = connect(&served).await;
    for _ in 0..REQUESTS {
        stream.write_all(request).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (closed, received) = read_until_closed(&mut stream, Duration::from_secs(30)).await;
    assert!(closed.is_some(), "the connection was not closed");
    let answered = received
        .windows(b"HTTP/1.1 200 OK".len())
        .filter(|window| window == b"HTTP/1.1 200 OK")
        .count();
    println!(
        "a client that stopped reading got {answered} of {REQUESTS} responses ({} bytes) before it was let go",
        received.len()
    );
    // Without the bound the server would wait for as long as the client cares to, and
    // every response would arrive once it read.
    assert!(answered < REQUESTS, "{answered} of {REQUESTS} responses");
}
