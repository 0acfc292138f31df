//! Structured logs in Cloud Logging's JSON shape: one object per line with `severity`,
//! `message`, `time`, the event's fields and the fields of the spans it happened in. A
//! span field named `trace` becomes `logging.googleapis.com/trace`, which groups a
//! request's lines with its Cloud Trace.

use std::cell::RefCell;
use std::io::Write;
use std::ops::Range;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Installs the JSON logger for the process; the level comes from `RUST_LOG` (default
/// `info`). Calling it twice is harmless.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(CloudLoggingLayer::new(std::io::stdout))
        .try_init();
}

/// Writes each event as one Cloud Logging JSON line to the writer `make` returns.
pub struct CloudLoggingLayer<W> {
    make: W,
}

impl<W> CloudLoggingLayer<W> {
    pub fn new(make: W) -> Self {
        CloudLoggingLayer { make }
    }
}

pub fn severity(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARNING",
        Level::INFO => "INFO",
        Level::DEBUG | Level::TRACE => "DEBUG",
    }
}

/// Receives fields as their names and a writer of their JSON values.
trait PutField {
    fn put(&mut self, name: &'static str, value: impl FnOnce(&mut Vec<u8>));
}

/// Records each field as JSON, escaped as `serde_json` escapes a `Value`'s text.
struct JsonVisitor<'a, P>(&'a mut P);

fn json(buffer: &mut Vec<u8>, value: &(impl serde::Serialize + ?Sized)) {
    // Writing scalars into a `Vec` cannot fail.
    let _ = serde_json::to_writer(buffer, value);
}

/// `value`'s text as a JSON string, without holding it in a `String` first.
fn json_text(buffer: &mut Vec<u8>, value: &dyn std::fmt::Display) {
    use serde::Serializer;
    let _ = serde_json::Serializer::new(buffer).collect_str(value);
}

impl<P: PutField> Visit for JsonVisitor<'_, P> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.put(field.name(), |b| json(b, value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.put(field.name(), |b| json(b, &value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.put(field.name(), |b| json(b, &value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        // A non-finite number becomes `null`, as `Value::from` makes it.
        self.0.put(field.name(), |b| json(b, &value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.put(field.name(), |b| json(b, &value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.put(field.name(), |b| json_text(b, &value));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .put(field.name(), |b| json_text(b, &format_args!("{value:?}")));
    }
}

/// A span's fields, each value already JSON: written into every line of the span as is.
#[derive(Default)]
struct SpanFields(Vec<(&'static str, Vec<u8>)>);

impl PutField for SpanFields {
    fn put(&mut self, name: &'static str, value: impl FnOnce(&mut Vec<u8>)) {
        let mut json = Vec::new();
        value(&mut json);
        match self.0.iter_mut().find(|(key, _)| *key == name) {
            Some((_, old)) => *old = json,
            None => self.0.push((name, json)),
        }
    }
}

/// A JSON object's members as an ordered map whose values are ranges of one buffer. It
/// keeps `serde_json::Map`'s order rules (the feature `preserve_order` is on), on which a
/// line's bytes depend: a new name is appended, an old one keeps its place and takes the
/// new value, a removed one's place goes to the last member.
#[derive(Default)]
struct Members(Vec<(&'static str, Range<usize>)>);

impl Members {
    fn insert(&mut self, name: &'static str, value: Range<usize>) {
        match self.0.iter_mut().find(|(key, _)| *key == name) {
            Some((_, old)) => *old = value,
            None => self.0.push((name, value)),
        }
    }

    fn swap_remove(&mut self, name: &str) -> Option<Range<usize>> {
        let at = self.0.iter().position(|(key, _)| *key == name)?;
        Some(self.0.swap_remove(at).1)
    }
}

/// What one line is built in; kept per thread so that a line costs no allocation.
#[derive(Default)]
struct Scratch {
    /// The values' JSON.
    values: Vec<u8>,
    line: Members,
    event: Members,
    /// The line as written.
    text: Vec<u8>,
}

impl Scratch {
    /// Larger buffers than this are not kept after a line.
    const KEPT_BYTES: usize = 64 * 1024;

    fn value(&mut self, write: impl FnOnce(&mut Vec<u8>)) -> Range<usize> {
        let start = self.values.len();
        write(&mut self.values);
        start..self.values.len()
    }

    fn clear(&mut self) {
        if self.values.capacity() > Self::KEPT_BYTES || self.text.capacity() > Self::KEPT_BYTES {
            *self = Scratch::default();
        }
        self.values.clear();
        self.line.0.clear();
        self.event.0.clear();
        self.text.clear();
    }

    /// The line as `{"name":value,...}` and a newline.
    fn write_text(&mut self) {
        self.text.push(b'{');
        for (n, (name, value)) in self.line.0.iter().enumerate() {
            if n > 0 {
                self.text.push(b',');
            }
            json(&mut self.text, *name);
            self.text.push(b':');
            self.text.extend_from_slice(&self.values[value.clone()]);
        }
        self.text.extend_from_slice(b"}\n");
    }
}

/// An event's own fields, into the scratch's event members.
struct EventFields<'a>(&'a mut Scratch);

impl PutField for EventFields<'_> {
    fn put(&mut self, name: &'static str, value: impl FnOnce(&mut Vec<u8>)) {
        let value = self.0.value(value);
        self.0.event.insert(name, value);
    }
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

impl<S, W> Layer<S> for CloudLoggingLayer<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + 'static,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = SpanFields::default();
        attrs.record(&mut JsonVisitor(&mut fields));
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(fields);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            if let Some(fields) = span.extensions_mut().get_mut::<SpanFields>() {
                values.record(&mut JsonVisitor(fields));
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        // A line logged while one is being written (by the writer, say) gets its own.
        let _ = SCRATCH.try_with(|scratch| match scratch.try_borrow_mut() {
            Ok(mut scratch) => self.write_line(&mut scratch, event, &ctx),
            Err(_) => self.write_line(&mut Scratch::default(), event, &ctx),
        });
    }
}

impl<W> CloudLoggingLayer<W>
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + 'static,
{
    /// The line `serde_json` would print of a `Map` given, in this order: the severity and
    /// time, the fields of each span from the root, the event's fields, its message and
    /// target; then `trace` renamed.
    fn write_line<S>(&self, scratch: &mut Scratch, event: &Event<'_>, ctx: &Context<'_, S>)
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        scratch.clear();
        let severity = scratch.value(|b| json(b, severity(event.metadata().level())));
        scratch.line.insert("severity", severity);
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let time = scratch.value(|b| json(b, &now));
        scratch.line.insert("time", time);
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(fields) = span.extensions().get::<SpanFields>() {
                    for (name, json) in &fields.0 {
                        let value = scratch.value(|b| b.extend_from_slice(json));
                        scratch.line.insert(name, value);
                    }
                }
            }
        }
        event.record(&mut JsonVisitor(&mut EventFields(scratch)));
        let message = match scratch.event.swap_remove("message") {
            Some(message) => message,
            None => scratch.value(|b| json(b, "")),
        };
        let Scratch {
            line, event: own, ..
        } = scratch;
        for (name, value) in own.0.drain(..) {
            line.insert(name, value);
        }
        line.insert("message", message);
        let target = scratch.value(|b| json(b, event.metadata().target()));
        scratch.line.insert("target", target);
        if let Some(trace) = scratch.line.swap_remove("trace") {
            scratch.line.insert("logging.googleapis.com/trace", trace);
        }
        scratch.write_text();
        let _ = self.make.make_writer().write_all(&scratch.text);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use serde_json::Value;

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// What `events` logged through the layer, as text.
    fn logged(events: impl FnOnce()) -> String {
        let captured = Captured::default();
        let sink = captured.clone();
        let subscriber =
            tracing_subscriber::registry().with(CloudLoggingLayer::new(move || sink.clone()));
        tracing::subscriber::with_default(subscriber, events);
        let text = captured.0.lock().unwrap().clone();
        String::from_utf8(text).unwrap()
    }

    #[test]
    fn events_become_cloud_logging_json_lines() {
        let text = logged(|| {
            let span = tracing::info_span!("push", trace = "projects/p/traces/abc");
            let _entered = span.enter();
            tracing::warn!(message_id = "42", attempt = 3_u64, "message rejected");
        });
        let line: Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(line["severity"], "WARNING");
        assert_eq!(line["message"], "message rejected");
        assert_eq!(line["message_id"], "42");
        assert_eq!(line["attempt"], 3);
        assert_eq!(
            line["logging.googleapis.com/trace"],
            "projects/p/traces/abc"
        );
        assert!(line["time"].as_str().unwrap().ends_with('Z'));
    }

    /// The exact bytes of a line (as the `serde_json::Map` it was once built in printed it) whose fields meet: span fields in span order, an inner
    /// span's and the event's value winning, `trace` renamed, escapes and odd numbers.
    #[test]
    fn a_line_keeps_its_members_order_and_values() {
        let text = logged(|| {
            let outer = tracing::info_span!(
                "request",
                trace = "projects/p/traces/abc",
                shared = 1_u64,
                kept = -2_i64
            );
            let _outer = outer.enter();
            let inner = tracing::info_span!("inner", shared = "inner wins", note = "x\"y/\u{1}é");
            let _inner = inner.enter();
            tracing::warn!(message_id = "42", shared = true, latency_ms = 1.5_f64, ratio = f64::NAN, reason = %"a\nb", "rejected {}", 7);
        });
        let time = text.find("\"time\":\"").unwrap() + 8;
        let end = time + text[time..].find('"').unwrap();
        let text = format!("{}TIME{}", &text[..time], &text[end..]);
        assert_eq!(
            text,
            concat!(
                r#"{"severity":"WARNING","time":"TIME","target":"job_trace::telemetry::tests","#,
                r#""shared":true,"kept":-2,"note":"x\"y/\u0001é","reason":"a\nb","message_id":"42","#,
                r#""latency_ms":1.5,"ratio":null,"message":"rejected 7","#,
                r#""logging.googleapis.com/trace":"projects/p/traces/abc"}"#,
                "\n"
            )
        );
    }
}
