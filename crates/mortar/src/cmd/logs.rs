//! `mortar logs`: the merged JSON log stream of the running node, filtered
//! by service (on the node), trace id and minimum level (here), printed
//! raw when piped and rendered readably, coloured by level, on a terminal.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use serde_json::Value;

use crate::cli::LogsArgs;

pub(crate) async fn run(args: LogsArgs) -> anyhow::Result<ExitCode> {
    let min_level = match args.level.as_deref() {
        None => None,
        Some(l) => Some(rank(l).ok_or_else(|| {
            anyhow::anyhow!("unknown level {l:?}; expected one of trace, debug, info, warn, error")
        })?),
    };
    let client = super::admin_client(&args.file, &args.node)?;
    let stdout = std::io::stdout();
    let pretty = stdout.is_terminal();
    let trace = args.trace.clone();
    client
        .logs(args.service.as_deref(), args.tail, args.follow, |line| {
            if !keep(line, trace.as_deref(), min_level) {
                return;
            }
            let text = if pretty {
                render(line)
            } else {
                line.to_owned()
            };
            let mut out = stdout.lock();
            let _ = writeln!(out, "{text}").and_then(|()| out.flush());
        })
        .await?;
    Ok(ExitCode::SUCCESS)
}

/// The order of levels: a higher rank is more severe.
fn rank(level: &str) -> Option<u8> {
    match level.to_ascii_lowercase().as_str() {
        "trace" => Some(0),
        "debug" => Some(1),
        "info" => Some(2),
        "warn" | "warning" => Some(3),
        "error" => Some(4),
        _ => None,
    }
}

/// Whether a line passes the filters: its `trace_id` is `trace`, and its
/// level is at least `min_level`. A line that is not JSON (a program's
/// stray output) passes only when no filter is set.
fn keep(line: &str, trace: Option<&str>, min_level: Option<u8>) -> bool {
    if trace.is_none() && min_level.is_none() {
        return true;
    }
    let Ok(v) = serde_json::from_str::<Value>(line) else {
        return false;
    };
    if let Some(trace) = trace
        && v["trace_id"].as_str() != Some(trace)
    {
        return false;
    }
    if let Some(min) = min_level {
        let level = v["level"].as_str().and_then(rank).unwrap_or(2);
        if level < min {
            return false;
        }
    }
    true
}

/// A line for a terminal: time, level (coloured), instance, message, then
/// the other fields as `key=value`; the raw line when it is not JSON.
fn render(line: &str) -> String {
    let Ok(Value::Object(map)) = serde_json::from_str::<Value>(line) else {
        return line.to_owned();
    };
    let s = |k: &str| map.get(k).and_then(Value::as_str).unwrap_or("");
    let level = s("level");
    let colour = match level {
        "error" => "\x1b[31m",
        "warn" => "\x1b[33m",
        "info" => "\x1b[32m",
        "debug" => "\x1b[36m",
        _ => "\x1b[2m",
    };
    let who = if s("instance").is_empty() {
        s("service")
    } else {
        s("instance")
    };
    let mut out = format!(
        "\x1b[2m{}\x1b[0m {colour}{:<5}\x1b[0m \x1b[1m{who}\x1b[0m {}",
        s("ts"),
        level.to_uppercase(),
        s("msg")
    );
    for (k, v) in &map {
        if matches!(
            k.as_str(),
            "ts" | "level" | "msg" | "service" | "instance" | "target"
        ) {
            continue;
        }
        let v = match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        out.push_str(&format!(" \x1b[2m{k}=\x1b[0m{v}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = r#"{"ts":"2026-11-28T20:00:00Z","level":"warn","msg":"request failed","service":"ordering","instance":"ordering-1","target":"mortar_sdk","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","status":503}"#;

    #[test]
    fn filters_by_trace_and_minimum_level() {
        let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
        assert!(keep(LINE, Some(trace), None));
        assert!(!keep(LINE, Some("0af7651916cd43dd8448eb211c80319c"), None));
        assert!(keep(LINE, None, rank("info")));
        assert!(keep(LINE, None, rank("WARN")));
        assert!(!keep(LINE, None, rank("error")));
        assert!(keep("not json", None, None));
        assert!(!keep("not json", Some(trace), None));
        assert_eq!(rank("loud"), None);
    }

    #[test]
    fn renders_a_readable_coloured_line() {
        let text = render(LINE);
        assert!(text.contains("\x1b[33mWARN"), "{text}");
        assert!(text.contains("ordering-1"), "{text}");
        assert!(text.contains("request failed"), "{text}");
        assert!(
            text.contains("trace_id=\x1b[0m4bf92f3577b34da6a3ce929d0e0e4736"),
            "{text}"
        );
        assert!(text.contains("status=\x1b[0m503"), "{text}");
        assert!(!text.contains("mortar_sdk"), "{text}");
        assert_eq!(render("plain"), "plain");
    }
}
