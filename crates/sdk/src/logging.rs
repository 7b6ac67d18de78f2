//! Logs as an event stream (twelve-factor XI): one JSON object per line on
//! stdout, written whole and unbuffered so that a supervisor or collector
//! reading the pipe never sees half a line.
//!
//! Every line has `ts`, `level`, `msg`, `service` and `instance`, then the
//! fields of the enclosing spans (outermost first, inner ones win) and the
//! event's own fields.

use std::io::Write;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber, span};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// A tracing layer that writes flat JSON lines to a writer (stdout by default).
pub struct JsonLines<W = fn() -> std::io::Stdout> {
    service: String,
    instance: String,
    make_writer: W,
}

impl JsonLines {
    /// A layer writing to stdout with the given identity on every line.
    pub fn stdout(service: &str, instance: &str) -> Self {
        JsonLines {
            service: service.to_owned(),
            instance: instance.to_owned(),
            make_writer: std::io::stdout,
        }
    }
}

impl<W, O> JsonLines<W>
where
    W: Fn() -> O,
    O: Write,
{
    /// A layer writing to a custom writer; used by tests.
    pub fn with_writer(service: &str, instance: &str, make_writer: W) -> Self {
        JsonLines {
            service: service.to_owned(),
            instance: instance.to_owned(),
            make_writer,
        }
    }

    fn render(&self, event: &Event<'_>, spans: Map<String, Value>) -> Vec<u8> {
        let mut fields = FieldMap::default();
        event.record(&mut fields);
        let mut line = Map::new();
        line.insert("ts".into(), now_rfc3339().into());
        line.insert(
            "level".into(),
            event
                .metadata()
                .level()
                .as_str()
                .to_ascii_lowercase()
                .into(),
        );
        let msg = fields
            .0
            .remove("message")
            .unwrap_or(Value::String(String::new()));
        line.insert("msg".into(), msg);
        line.insert("service".into(), self.service.clone().into());
        line.insert("instance".into(), self.instance.clone().into());
        line.insert("target".into(), event.metadata().target().into());
        for (k, v) in spans.into_iter().chain(fields.0) {
            // The identity fields are the contract; a field must not overwrite them.
            if !matches!(k.as_str(), "ts" | "level" | "msg" | "service" | "instance") {
                line.insert(k, v);
            }
        }
        let mut bytes = serde_json::to_vec(&Value::Object(line)).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }
}

/// Span fields, stored in the span's extensions when it is created.
struct SpanFields(Map<String, Value>);

impl<S, W, O> Layer<S> for JsonLines<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: Fn() -> O + 'static,
    O: Write,
{
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        let mut fields = FieldMap::default();
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanFields(fields.0));
        }
    }

    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            let mut ext = span.extensions_mut();
            if let Some(SpanFields(map)) = ext.get_mut::<SpanFields>() {
                let mut fields = FieldMap(std::mem::take(map));
                values.record(&mut fields);
                *map = fields.0;
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut spans = Map::new();
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(SpanFields(map)) = span.extensions().get::<SpanFields>() {
                    spans.extend(map.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
            }
        }
        let bytes = self.render(event, spans);
        let mut out = (self.make_writer)();
        // A logger has nowhere to report its own failure; a closed stdout
        // must not take the service down.
        let _ = out.write_all(&bytes).and_then(|()| out.flush());
    }
}

#[derive(Default)]
struct FieldMap(Map<String, Value>);

impl Visit for FieldMap {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.insert(field.name().into(), value.to_string().into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
}

/// The current UTC time as RFC 3339 with microseconds.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string()
}

/// Checks a tracing filter such as `info` or `debug,hyper=warn`.
pub fn validate_filter(filter: &str) -> Result<(), String> {
    EnvFilter::try_new(filter)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Installs the JSON-lines logger on stdout as the global subscriber.
///
/// `filter` is a tracing filter (`info`, `debug,hyper=warn`); it was validated
/// when configuration was read. Calling this twice is harmless: the second
/// call leaves the first logger in place.
pub fn init(service: &str, instance: &str, filter: &str) {
    init_with_writer(service, instance, filter, std::io::stdout);
}

/// Installs the JSON-lines logger writing to a custom writer, such as the
/// node's log hub, which merges its own lines with its instances' lines.
pub fn init_with_writer<W, O>(service: &str, instance: &str, filter: &str, make_writer: W)
where
    W: Fn() -> O + Send + Sync + 'static,
    O: Write,
{
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::registry()
        .with(JsonLines::with_writer(service, instance, make_writer).with_filter(filter))
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_are_flat_json_with_identity_and_span_fields() {
        let buf = Buf::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::registry().with(JsonLines::with_writer(
            "catalog",
            "catalog-1",
            move || writer.clone(),
        ));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("request", method = "GET", path = "/x");
            let _g = span.enter();
            tracing::warn!(status = 503u64, service = "spoofed", "upstream slow");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1);
        let v: Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(v["level"], "warn");
        assert_eq!(v["msg"], "upstream slow");
        assert_eq!(v["service"], "catalog");
        assert_eq!(v["instance"], "catalog-1");
        assert_eq!(v["method"], "GET");
        assert_eq!(v["path"], "/x");
        assert_eq!(v["status"], 503);
        assert!(v["ts"].as_str().unwrap().ends_with('Z'));
    }
}
