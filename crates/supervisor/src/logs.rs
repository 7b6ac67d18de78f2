//! One merged stream of JSON log lines from the node and every instance.
//!
//! Lines are written to the node's stdout as they arrive, kept in a bounded
//! ring for `mortar logs`, and broadcast to followers (`mortar logs -f`).

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};
use tokio::sync::broadcast;

/// How many recent lines the hub keeps for `mortar logs`.
pub const DEFAULT_CAPACITY: usize = 10_000;

/// A merged log line, already serialized as one JSON object.
#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    /// The service that wrote it (`mortar` for the node itself).
    pub service: String,
    /// The JSON text, without a trailing newline.
    pub json: Arc<str>,
}

/// Where every log line of the node goes.
#[derive(Clone)]
pub struct LogHub {
    inner: Arc<Inner>,
}

struct Inner {
    recent: Mutex<VecDeque<LogLine>>,
    capacity: usize,
    followers: broadcast::Sender<LogLine>,
    echo: bool,
}

impl std::fmt::Debug for LogHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogHub")
            .field("capacity", &self.inner.capacity)
            .finish()
    }
}

impl LogHub {
    /// A hub that echoes every line to stdout.
    pub fn stdout() -> Self {
        Self::new(DEFAULT_CAPACITY, true)
    }

    /// A hub with a ring of `capacity` lines; `echo` writes lines to stdout.
    pub fn new(capacity: usize, echo: bool) -> Self {
        let (followers, _) = broadcast::channel(4096);
        LogHub {
            inner: Arc::new(Inner {
                recent: Mutex::new(VecDeque::with_capacity(capacity.min(1024))),
                capacity,
                followers,
                echo,
            }),
        }
    }

    /// Publishes one line that is already a JSON object with a `service` field.
    pub fn publish(&self, line: LogLine) {
        if self.inner.echo {
            let mut out = std::io::stdout().lock();
            // Nowhere to report a closed stdout; the ring and followers still work.
            let _ = out
                .write_all(line.json.as_bytes())
                .and_then(|()| out.write_all(b"\n"))
                .and_then(|()| out.flush());
        }
        if let Ok(mut recent) = self.inner.recent.lock() {
            if recent.len() == self.inner.capacity {
                recent.pop_front();
            }
            recent.push_back(line.clone());
        }
        let _ = self.inner.followers.send(line);
    }

    /// Takes one raw line an instance printed and publishes it as JSON,
    /// tagged with its service and instance.
    ///
    /// A JSON object keeps its fields (the SDK already sets the identity);
    /// anything else, such as a panic message on stderr, is wrapped.
    pub fn publish_raw(&self, service: &str, instance: &str, stream: Stream, raw: &str) {
        let mut object = match serde_json::from_str::<Value>(raw) {
            Ok(Value::Object(map)) => map,
            _ => {
                let mut map = Map::new();
                map.insert("ts".into(), mortar_sdk::logging::now_rfc3339().into());
                map.insert("level".into(), stream.default_level().into());
                map.insert("msg".into(), raw.trim_end().into());
                map
            }
        };
        object.insert("service".into(), service.into());
        object.insert("instance".into(), instance.into());
        if stream == Stream::Stderr {
            object.insert("stream".into(), "stderr".into());
        }
        let json = serde_json::to_string(&Value::Object(object)).unwrap_or_default();
        self.publish(LogLine {
            service: service.to_owned(),
            json: json.into(),
        });
    }

    /// The most recent lines, oldest first, optionally of one service only.
    pub fn recent(&self, service: Option<&str>, limit: usize) -> Vec<LogLine> {
        let Ok(recent) = self.inner.recent.lock() else {
            return Vec::new();
        };
        let mut lines: Vec<LogLine> = recent
            .iter()
            .rev()
            .filter(|l| service.is_none_or(|s| l.service == s))
            .take(limit)
            .cloned()
            .collect();
        lines.reverse();
        lines
    }

    /// A receiver of every line published from now on.
    pub fn follow(&self) -> broadcast::Receiver<LogLine> {
        self.inner.followers.subscribe()
    }

    /// A writer for the node's own tracing logger: each flushed line is
    /// published as a line of the `mortar` service.
    pub fn writer(&self) -> HubWriter {
        HubWriter {
            hub: self.clone(),
            buf: Vec::new(),
        }
    }
}

/// Which output stream of an instance a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output: where the SDK writes its JSON lines.
    Stdout,
    /// Standard error: panics and plain-text errors.
    Stderr,
}

impl Stream {
    fn default_level(self) -> &'static str {
        match self {
            Stream::Stdout => "info",
            Stream::Stderr => "error",
        }
    }
}

/// Buffers bytes until flush, then publishes whole lines to the hub.
#[derive(Debug)]
pub struct HubWriter {
    hub: LogHub,
    buf: Vec<u8>,
}

impl Write for HubWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let text = String::from_utf8_lossy(&self.buf).into_owned();
        self.buf.clear();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            self.hub.publish(LogLine {
                service: "mortar".to_owned(),
                json: line.into(),
            });
        }
        Ok(())
    }
}

impl Drop for HubWriter {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            let _ = self.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_wrapped_and_json_is_tagged() {
        let hub = LogHub::new(10, false);
        hub.publish_raw(
            "catalog",
            "catalog-1",
            Stream::Stderr,
            "thread 'main' panicked",
        );
        hub.publish_raw(
            "catalog",
            "catalog-2",
            Stream::Stdout,
            r#"{"ts":"t","level":"info","msg":"listening","service":"catalog","instance":"catalog-2"}"#,
        );
        let lines = hub.recent(None, 10);
        let first: Value = serde_json::from_str(&lines[0].json).unwrap();
        assert_eq!(first["msg"], "thread 'main' panicked");
        assert_eq!(first["level"], "error");
        assert_eq!(first["stream"], "stderr");
        assert_eq!(first["instance"], "catalog-1");
        let second: Value = serde_json::from_str(&lines[1].json).unwrap();
        assert_eq!(second["msg"], "listening");
        assert_eq!(second["instance"], "catalog-2");
    }

    #[test]
    fn ring_is_bounded_and_filterable() {
        let hub = LogHub::new(3, false);
        for i in 0..5 {
            let service = if i % 2 == 0 { "a" } else { "b" };
            hub.publish_raw(service, "x", Stream::Stdout, &format!("line {i}"));
        }
        let all = hub.recent(None, 100);
        assert_eq!(all.len(), 3);
        assert!(all[0].json.contains("line 2"));
        let only_a = hub.recent(Some("a"), 100);
        assert_eq!(only_a.len(), 2);
        assert_eq!(hub.recent(None, 1).len(), 1);
    }

    #[tokio::test]
    async fn followers_see_new_lines_and_writer_publishes_node_lines() {
        let hub = LogHub::new(10, false);
        let mut rx = hub.follow();
        let mut w = hub.writer();
        w.write_all(b"{\"msg\":\"node up\",\"service\":\"mortar\"}\n")
            .unwrap();
        w.flush().unwrap();
        let line = rx.recv().await.unwrap();
        assert_eq!(line.service, "mortar");
        assert!(line.json.contains("node up"));
    }
}
