//! Deadlines and the connection bound of the server loop (see DESIGN.md, "Connections and
//! deadlines").
//!
//! * the request head: hyper's own timer bounds how long a connection waits for a head
//!   (set to the idle timeout); [`Deadlined`] holds the head itself to the stricter header
//!   timeout, counted from the accept for a new connection and from the first byte for a
//!   kept-alive one, as Go's `ReadHeaderTimeout` and `IdleTimeout` do;
//! * the request body: [`DeadlineBody`] errors once the body has been read for longer than
//!   the body timeout, and [`serve_connection`] answers such a request 408 and closes;
//! * the response: a write that makes no progress for the idle timeout (a client that
//!   stopped reading) closes the connection;
//! * the instance: past `max_connections` a new connection gets a fixed 503 with
//!   `Retry-After` and is closed, without being parsed ([`refuse`]); after a burst the
//!   memory its connections freed is given back to the system ([`Trim`]).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue, Request, Response, StatusCode};
use axum::Router;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{sleep, Sleep};
use tower::ServiceExt;

use crate::config::ConnectionLimits;

/// hyper's default lets one request head grow its read buffer to about 400 KiB; 64 KiB
/// holds any head a client of ours sends (trace-api refuses queries over 8 KiB itself)
/// and keeps what one connection can make the instance hold small.
pub const MAX_READ_BUFFER_BYTES: usize = 64 * 1024;

/// What one open connection may cost at most (its read buffer, hyper's write buffer and
/// the task): the figure Terraform divides memory by to bound connections.
pub const CONNECTION_BYTES: usize = 2 * MAX_READ_BUFFER_BYTES;

const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\n\
retry-after: 1\r\n\
connection: close\r\n\
content-length: 56\r\n\
\r\n\
{\"error\":\"too many open connections; retry in a moment\"}";

/// How long a refused connection is given to take the 503 and close its side. Reading what
/// it sent until then keeps the kernel from answering unread data with a reset that would
/// throw the 503 away before the client reads it.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);
const REFUSAL_DRAIN_BYTES: usize = 16 * 1024;

/// Answers a connection past the bound with the fixed 503 and closes it.
pub(super) async fn refuse(mut stream: TcpStream) {
    let _ = tokio::time::timeout(REFUSAL_LINGER, async {
        stream.write_all(BUSY).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 1024];
        let mut drained = 0;
        while drained < REFUSAL_DRAIN_BYTES {
            match stream.read(&mut sink).await? {
                0 => break,
                n => drained += n,
            }
        }
        Ok::<(), io::Error>(())
    })
    .await;
}

/// Requests started and answered on one connection: it waits for a head exactly when the
/// two are equal.
#[derive(Default)]
struct RequestClock {
    started: AtomicU64,
    finished: AtomicU64,
}

/// Counts a request finished when dropped: with the response body after hyper has written
/// it, or with the request when the connection goes first.
struct Finished(Arc<RequestClock>);

impl Drop for Finished {
    fn drop(&mut self) {
        self.0.finished.fetch_add(1, Ordering::AcqRel);
    }
}

/// The connection's socket, with the header and write-stall deadlines.
struct Deadlined {
    stream: TcpStream,
    clock: Arc<RequestClock>,
    limits: ConnectionLimits,
    /// The head deadline, and the request count it was set at (a request started since
    /// means that head arrived).
    head: Option<(u64, Pin<Box<Sleep>>)>,
    write_stall: Option<Pin<Box<Sleep>>>,
}

impl Deadlined {
    fn new(stream: TcpStream, clock: Arc<RequestClock>, limits: ConnectionLimits) -> Self {
        let head = Some((0, Box::pin(sleep(limits.header_read_timeout))));
        Deadlined {
            stream,
            clock,
            limits,
            head,
            write_stall: None,
        }
    }
}

fn timed_out(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, what)
}

impl AsyncRead for Deadlined {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let started = this.clock.started.load(Ordering::Acquire);
        let awaiting_head = started == this.clock.finished.load(Ordering::Acquire);
        if this.head.as_ref().is_some_and(|(at, _)| *at != started) {
            this.head = None;
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if awaiting_head && this.head.is_none() && buf.filled().len() > before {
                    let deadline = Box::pin(sleep(this.limits.header_read_timeout));
                    this.head = Some((started, deadline));
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                let expired = match &mut this.head {
                    Some((_, deadline)) if awaiting_head => deadline.as_mut().poll(cx).is_ready(),
                    _ => false,
                };
                if expired {
                    Poll::Ready(Err(timed_out("request head not received in time")))
                } else {
                    Poll::Pending
                }
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
        }
    }
}

impl AsyncWrite for Deadlined {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.stream).poll_write(cx, buf) {
            Poll::Pending => {
                let idle = this.limits.idle_timeout;
                let stall = this
                    .write_stall
                    .get_or_insert_with(|| Box::pin(sleep(idle)));
                ready!(stall.as_mut().poll(cx));
                Poll::Ready(Err(timed_out("client stopped reading the response")))
            }
            done => {
                this.write_stall = None;
                done
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
struct BodyTimedOut(Duration);

/// A request body that must arrive whole within the body timeout of its first read (not of
/// the request's start: trace-writer may wait for push memory before it reads).
struct DeadlineBody {
    inner: Incoming,
    timeout: Duration,
    deadline: Option<Pin<Box<Sleep>>>,
    expired: Arc<AtomicBool>,
}

impl http_body::Body for DeadlineBody {
    type Data = hyper::body::Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let timeout = this.timeout;
        let deadline = this
            .deadline
            .get_or_insert_with(|| Box::pin(sleep(timeout)));
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => {
                ready!(deadline.as_mut().poll(cx));
                this.expired.store(true, Ordering::Release);
                Poll::Ready(Some(Err(BodyTimedOut(timeout).into())))
            }
            Poll::Ready(frame) => Poll::Ready(frame.map(|frame| frame.map_err(Into::into))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that counts its request finished when hyper is done with it.
struct Counted {
    inner: Body,
    _finished: Finished,
}

impl http_body::Body for Counted {
    type Data = hyper::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

fn body_too_slow(timeout: Duration) -> Response<Body> {
    let body = json!({ "error": BodyTimedOut(timeout).to_string() });
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = StatusCode::REQUEST_TIMEOUT;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Serves one accepted connection with `router` until it closes or the shutdown drains it.
pub(super) fn serve_connection(
    stream: TcpStream,
    router: Router,
    limits: ConnectionLimits,
    graceful: &GracefulShutdown,
) -> impl Future<Output = ()> + Send + 'static {
    let clock = Arc::new(RequestClock::default());
    let io = TokioIo::new(Deadlined::new(stream, clock.clone(), limits));
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        clock.started.fetch_add(1, Ordering::AcqRel);
        let finished = Finished(clock.clone());
        let expired = Arc::new(AtomicBool::new(false));
        let request = request.map(|inner| {
            Body::new(DeadlineBody {
                inner,
                timeout: limits.body_read_timeout,
                deadline: None,
                expired: expired.clone(),
            })
        });
        let router = router.clone();
        async move {
            let response = match router.oneshot(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            let response = if expired.load(Ordering::Acquire) {
                tracing::warn!(
                    timeout_seconds = limits.body_read_timeout.as_secs_f64(),
                    "request body did not arrive in time; answered 408 and closed"
                );
                body_too_slow(limits.body_read_timeout)
            } else {
                response
            };
            Ok::<_, std::convert::Infallible>(response.map(|inner| {
                Body::new(Counted {
                    inner,
                    _finished: finished,
                })
            }))
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.idle_timeout)
        .max_buf_size(MAX_READ_BUFFER_BYTES);
    let connection = graceful.watch(builder.serve_connection(io, service));
    async move {
        // Closing is all there is to do when a client breaks a deadline or goes away.
        let _ = connection.await;
    }
}

/// A burst of connections (or event streams) leaves its memory free but kept by glibc's
/// allocator: the per-thread arenas it was taken from shrink only from their top, so the
/// process stayed at its peak after the clients left (trace-api: 12 MiB idle, 117 MiB with
/// 2,000 streams and still 117 MiB after they closed; `malloc_trim` brought it back to
/// 15 MiB). After the open connections fall to half of their peak, the freed pages are
/// given back, off the runtime's threads.
pub(super) struct Trim {
    peak: AtomicUsize,
}

/// Peaks below this are not worth a trim: idle, an instance holds about 10 MiB.
const TRIM_AFTER_CONNECTIONS: usize = 64;

impl Trim {
    pub(super) fn new() -> Self {
        Trim {
            peak: AtomicUsize::new(0),
        }
    }

    pub(super) fn opened(&self, open: usize) {
        self.peak.fetch_max(open, Ordering::Relaxed);
    }

    pub(super) fn closed(&self, open: usize) {
        let peak = self.peak.load(Ordering::Relaxed);
        if peak >= TRIM_AFTER_CONNECTIONS
            && open <= peak / 2
            && self
                .peak
                .compare_exchange(peak, open, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tokio::task::spawn_blocking(release_freed_memory);
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn release_freed_memory() {
    extern "C" {
        fn malloc_trim(pad: usize) -> std::ffi::c_int;
    }
    // SAFETY: glibc's malloc_trim only returns free pages to the kernel; it takes its own
    // locks and is safe to call from any thread at any time.
    let released = unsafe { malloc_trim(0) };
    tracing::debug!(
        released = released != 0,
        "returned freed memory after a burst"
    );
}

/// Other allocators (musl's) return memory on their own terms.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_freed_memory() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fixed_busy_answer_is_well_formed() {
        let text = std::str::from_utf8(BUSY).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 "));
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        assert!(head.contains("retry-after: 1"), "{head}");
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert!(body["error"].as_str().unwrap().contains("connections"));
    }
}
