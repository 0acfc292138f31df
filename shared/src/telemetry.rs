//! Structured logs in Cloud Logging's JSON shape: one object per line with `severity`,
//! `message`, `time`, the event's fields and the fields of the spans it happened in. A
//! span field named `trace` becomes `logging.googleapis.com/trace`, which groups a
//! request's lines with its Cloud Trace.

use std::io::Write;

use serde_json::{Map, Value};
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

struct JsonFields(Map<String, Value>);

impl Visit for JsonFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0
            .insert(field.name().into(), Value::from(value.to_string()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().into(), Value::from(format!("{value:?}")));
    }
}

impl<S, W> Layer<S> for CloudLoggingLayer<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + 'static,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = JsonFields(Map::new());
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(fields);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            if let Some(fields) = span.extensions_mut().get_mut::<JsonFields>() {
                values.record(fields);
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut line = Map::new();
        line.insert(
            "severity".into(),
            Value::from(severity(event.metadata().level())),
        );
        line.insert(
            "time".into(),
            Value::from(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
        );
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(fields) = span.extensions().get::<JsonFields>() {
                    for (key, value) in &fields.0 {
                        line.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        let mut fields = JsonFields(Map::new());
        event.record(&mut fields);
        let message = fields.0.remove("message").unwrap_or(Value::from(""));
        line.extend(fields.0);
        line.insert("message".into(), message);
        line.insert("target".into(), Value::from(event.metadata().target()));
        if let Some(trace) = line.remove("trace") {
            line.insert("logging.googleapis.com/trace".into(), trace);
        }
        let mut text = Value::Object(line).to_string();
        text.push('\n');
        let _ = self.make.make_writer().write_all(text.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

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

    #[test]
    fn events_become_cloud_logging_json_lines() {
        let captured = Captured::default();
        let sink = captured.clone();
        let subscriber =
            tracing_subscriber::registry().with(CloudLoggingLayer::new(move || sink.clone()));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("push", trace = "projects/p/traces/abc");
            let _entered = span.enter();
            tracing::warn!(message_id = "42", attempt = 3_u64, "message rejected");
        });
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
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
}
