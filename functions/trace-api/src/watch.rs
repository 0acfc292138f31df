//! How waiting requests (long-polls, event streams) learn that a trace changed, without
//! holding a database connection each.
//!
//! One [`Watcher`] per process. Requests [`Watcher::subscribe`] to a `message_id` and get
//! a [`Subscription`] that wakes up when that trace may have changed; they then read it
//! again (one `find`) and compare ETags, so a spurious wake-up costs one read and never
//! a wrong answer. Behind it runs one background task, started on the first
//! subscription and stopped after a while without any:
//!
//! * a change stream on the collection (one cursor for the whole process), where the
//!   database offers one. Every time the stream is (re)opened every subscriber is woken,
//!   which covers whatever happened while it was not open;
//! * else, and while a broken stream is retried, bounded polling: one `find` over all
//!   watched ids per interval for the whole process, waking the subscribers whose
//!   document changed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use job_trace::store::{ChangeFeed, Fingerprint};
use job_trace::TraceStore;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use crate::config::ChangeStreams;

/// The task stops after this long without subscribers.
const IDLE_STOP: Duration = Duration::from_secs(30);
/// After a change stream could not be opened, poll this long before trying again.
const STREAM_RETRY: Duration = Duration::from_secs(30);
/// How often the stream loop looks up from the cursor (to notice it is idle).
const TICK: Duration = Duration::from_secs(1);
/// Ids per polling query.
const POLL_CHUNK: usize = 500;

/// What the background task is doing, for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Stopped,
    Starting,
    Streaming,
    Polling,
}

#[derive(Clone)]
pub struct Watcher {
    inner: Arc<Inner>,
}

struct Inner {
    store: TraceStore,
    streams: ChangeStreams,
    poll_interval: Duration,
    shared: Mutex<Shared>,
    /// The event streams that may be open at once (`MAX_EVENT_STREAMS`).
    open_streams: Arc<Semaphore>,
    max_streams: usize,
}

/// One open event stream's place under `MAX_EVENT_STREAMS`; dropping it frees the place.
pub struct StreamSlot {
    _permit: OwnedSemaphorePermit,
}

struct Shared {
    slots: HashMap<String, Slot>,
    running: bool,
    mode: Mode,
}

struct Slot {
    tx: watch::Sender<u64>,
    users: usize,
    /// What polling last saw of the document, `None` when absent or unknown.
    seen: Option<Fingerprint>,
}

/// Wakes up when the watched trace may have changed. Dropping it unsubscribes.
pub struct Subscription {
    inner: Arc<Inner>,
    key: String,
    rx: watch::Receiver<u64>,
}

impl Subscription {
    /// Resolves at the next possible change after the last call (or the subscription).
    pub async fn changed(&mut self) {
        if self.rx.changed().await.is_err() {
            // The slot keeps its sender while we exist; never busy-loop regardless.
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut shared = self.inner.shared.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = shared.slots.get_mut(&self.key) {
            slot.users -= 1;
            if slot.users == 0 {
                shared.slots.remove(&self.key);
            }
        }
    }
}

impl Watcher {
    pub fn new(
        store: TraceStore,
        streams: ChangeStreams,
        poll_interval: Duration,
        max_streams: usize,
    ) -> Self {
        Watcher {
            inner: Arc::new(Inner {
                store,
                streams,
                poll_interval,
                open_streams: Arc::new(Semaphore::new(max_streams)),
                max_streams,
                shared: Mutex::new(Shared {
                    slots: HashMap::new(),
                    running: false,
                    mode: Mode::Stopped,
                }),
            }),
        }
    }

    pub fn mode(&self) -> Mode {
        self.inner.lock().mode
    }

    /// A place for one more event stream, or `None` when `MAX_EVENT_STREAMS` are open.
    pub fn open_stream(&self) -> Option<StreamSlot> {
        let permit = self.inner.open_streams.clone().try_acquire_owned().ok()?;
        Some(StreamSlot { _permit: permit })
    }

    /// The bound [`Watcher::open_stream`] holds streams to.
    pub fn max_streams(&self) -> usize {
        self.inner.max_streams
    }

    /// Subscribes to one trace. Subscribe *before* reading the trace, so that no change
    /// between the read and the wait is missed.
    pub fn subscribe(&self, message_id: &str) -> Subscription {
        let mut shared = self.inner.lock();
        let slot = shared
            .slots
            .entry(message_id.to_owned())
            .or_insert_with(|| Slot {
                tx: watch::channel(0).0,
                users: 0,
                seen: None,
            });
        slot.users += 1;
        let rx = slot.tx.subscribe();
        if !shared.running {
            shared.running = true;
            shared.mode = Mode::Starting;
            tokio::spawn(run(self.inner.clone()));
        }
        Subscription {
            inner: self.inner.clone(),
            key: message_id.to_owned(),
            rx,
        }
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_mode(&self, mode: Mode) {
        self.lock().mode = mode;
    }

    fn notify(&self, message_id: &str) {
        if let Some(slot) = self.lock().slots.get(message_id) {
            slot.tx.send_modify(|v| *v = v.wrapping_add(1));
        }
    }

    fn notify_all(&self) {
        for slot in self.lock().slots.values() {
            slot.tx.send_modify(|v| *v = v.wrapping_add(1));
        }
    }

    /// Stops the task (under the lock, so a concurrent subscribe starts a new one) when
    /// nobody has been subscribed for [`IDLE_STOP`].
    fn should_stop(&self, idle_since: &mut Option<Instant>) -> bool {
        let mut shared = self.lock();
        if !shared.slots.is_empty() {
            *idle_since = None;
            return false;
        }
        if idle_since.get_or_insert_with(Instant::now).elapsed() < IDLE_STOP {
            return false;
        }
        shared.running = false;
        shared.mode = Mode::Stopped;
        true
    }

    /// Follows the stream until it fails, ends, or the task should stop (then `true`).
    async fn follow(&self, mut feed: ChangeFeed, idle_since: &mut Option<Instant>) -> bool {
        loop {
            if self.should_stop(idle_since) {
                return true;
            }
            // The cursor keeps an interrupted getMore and resumes it on the next call.
            match tokio::time::timeout(TICK, feed.next()).await {
                Err(_) => continue,
                Ok(Some(Ok(Some(message_id)))) => self.notify(&message_id),
                // A delete (TTL), or an update the server could not look up.
                Ok(Some(Ok(None))) => self.notify_all(),
                Ok(Some(Err(error))) => {
                    tracing::warn!(%error, "change stream failed; reopening");
                    return false;
                }
                Ok(None) => {
                    tracing::info!("change stream ended; reopening");
                    return false;
                }
            }
        }
    }

    /// One polling round: one query per [`POLL_CHUNK`] watched ids, each bounded by the
    /// store's timeout.
    async fn poll_once(&self) {
        let ids: Vec<String> = self.lock().slots.keys().cloned().collect();
        for chunk in ids.chunks(POLL_CHUNK) {
            let now = match self.store.fingerprints(chunk).await {
                Ok(now) => now,
                Err(error) => {
                    tracing::warn!(%error, "polling for changes failed");
                    return;
                }
            };
            let mut shared = self.lock();
            for id in chunk {
                if let Some(slot) = shared.slots.get_mut(id) {
                    let print = now.get(id).copied();
                    if print != slot.seen {
                        slot.seen = print;
                        slot.tx.send_modify(|v| *v = v.wrapping_add(1));
                    }
                }
            }
        }
    }
}

async fn run(inner: Arc<Inner>) {
    let mut idle_since = None;
    let mut stream_failed_at: Option<Instant> = None;
    loop {
        if inner.should_stop(&mut idle_since) {
            tracing::debug!("change watcher stopped: nobody waiting");
            return;
        }
        let try_stream = inner.streams == ChangeStreams::Auto
            && stream_failed_at.is_none_or(|at| at.elapsed() >= STREAM_RETRY);
        if try_stream {
            match inner.store.change_feed(TICK).await {
                Ok(stream) => {
                    stream_failed_at = None;
                    inner.set_mode(Mode::Streaming);
                    // Whatever changed while no stream was open: everyone reads again.
                    inner.notify_all();
                    if inner.follow(stream, &mut idle_since).await {
                        return;
                    }
                    continue;
                }
                Err(error) => {
                    tracing::warn!(%error, "no change stream; polling for changes instead");
                    stream_failed_at = Some(Instant::now());
                }
            }
        }
        if inner.lock().mode != Mode::Polling {
            inner.set_mode(Mode::Polling);
        }
        inner.poll_once().await;
        tokio::time::sleep(inner.poll_interval).await;
    }
}
