//! The most recent warn and error lines of the merged log stream, with
//! their trace ids, so the dashboard links a failure to `mortar logs
//! --trace`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use mortar_supervisor::LogHub;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// How many lines are kept.
pub const KEEP: usize = 50;

/// One warn or error line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorLine {
    /// When it was logged (RFC 3339), as the line says.
    pub ts: String,
    /// `warn` or `error`.
    pub level: String,
    /// The service that logged it (`mortar` for the node).
    pub service: String,
    /// The instance, when an instance logged it.
    pub instance: Option<String>,
    /// The message.
    pub msg: String,
    /// The trace it belongs to, when it has one.
    pub trace_id: Option<String>,
}

/// Reads a merged log line; `Some` when it is at warn or error.
pub fn parse(json: &str) -> Option<ErrorLine> {
    // Most lines are info or debug: skip them without parsing.
    let mentions = |word: &[u8]| {
        json.as_bytes()
            .windows(word.len())
            .any(|w| w.eq_ignore_ascii_case(word))
    };
    if !(mentions(b"warn") || mentions(b"error")) {
        return None;
    }
    let Value::Object(map) = serde_json::from_str::<Value>(json).ok()? else {
        return None;
    };
    let level = map.get("level")?.as_str()?.to_ascii_lowercase();
    let level = match level.as_str() {
        "warn" | "warning" => "warn",
        "error" => "error",
        _ => return None,
    };
    let text = |key: &str| map.get(key).and_then(Value::as_str).map(str::to_owned);
    Some(ErrorLine {
        ts: text("ts").unwrap_or_default(),
        level: level.to_owned(),
        service: text("service").unwrap_or_else(|| "mortar".to_owned()),
        instance: text("instance"),
        msg: text("msg").unwrap_or_default(),
        trace_id: text("trace_id"),
    })
}

/// The latest [`KEEP`] warn/error lines, newest last.
#[derive(Debug, Clone, Default)]
pub struct RecentErrors {
    lines: Arc<Mutex<VecDeque<ErrorLine>>>,
}

impl RecentErrors {
    /// Follows `hub` until `stop`, starting with the lines it holds.
    pub fn follow(hub: &LogHub, stop: CancellationToken) -> RecentErrors {
        let recent = RecentErrors::default();
        let mut rx = hub.follow();
        for line in hub.recent(None, mortar_supervisor::logs::DEFAULT_CAPACITY) {
            recent.offer(&line.json);
        }
        let keeper = recent.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    line = rx.recv() => match line {
                        Ok(line) => keeper.offer(&line.json),
                        // Lines were missed under load; later ones still count.
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    },
                }
            }
        });
        recent
    }

    /// Keeps `json` if it is a warn or error line.
    pub fn offer(&self, json: &str) {
        if let Some(line) = parse(json) {
            let mut lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
            if lines.len() == KEEP {
                lines.pop_front();
            }
            lines.push_back(line);
        }
    }

    /// The lines kept, newest first.
    pub fn newest_first(&self) -> Vec<ErrorLine> {
        let lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        lines.iter().rev().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_warn_and_error_lines_are_kept_newest_first() {
        let recent = RecentErrors::default();
        recent.offer(r#"{"ts":"t1","level":"info","msg":"no error here","service":"a"}"#);
        recent.offer(r#"{"ts":"t2","level":"error","msg":"payment failed","service":"ordering","instance":"ordering-1","trace_id":"4bf9"}"#);
        recent.offer(r#"{"ts":"t3","level":"WARN","msg":"slow","service":"catalog"}"#);
        recent.offer("error: not json at all");
        let lines = recent.newest_first();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].msg, "slow");
        assert_eq!(lines[0].level, "warn");
        assert_eq!(lines[0].trace_id, None);
        assert_eq!(lines[1].service, "ordering");
        assert_eq!(lines[1].instance.as_deref(), Some("ordering-1"));
        assert_eq!(lines[1].trace_id.as_deref(), Some("4bf9"));
        for i in 0..KEEP + 5 {
            recent.offer(&format!(r#"{{"level":"error","msg":"e{i}"}}"#));
        }
        let lines = recent.newest_first();
        assert_eq!(lines.len(), KEEP);
        assert_eq!(lines[0].msg, format!("e{}", KEEP + 4));
    }
}
