//! `mortar top`: the web dashboard's live view in a terminal — services
//! and instances, request rate and p99 per service, backlog per consumer
//! group (with a trend line), deploys, autoscaling and recent errors —
//! read from the node's dashboard snapshot. On a terminal it redraws in
//! place until `q`, Esc or Ctrl-C; with `--once`, or when stdout is not a
//! terminal, it prints the view once as plain text.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use crossterm::event::{self, Event, KeyCode, KeyEvent, KeyModifiers};
use crossterm::{cursor, execute, queue, terminal};
use mortar_node::client::AdminClient;
use mortar_node::dashboard::Snapshot;

use crate::cli::TopArgs;

pub(crate) async fn run(args: TopArgs) -> anyhow::Result<ExitCode> {
    let client = super::admin_client(&args.target.manifest.file, &args.target.node)?;
    if args.once || !std::io::stdout().is_terminal() {
        let snapshot = client.dashboard_snapshot().await?;
        print!("{}", render(&snapshot, usize::MAX));
        return Ok(ExitCode::SUCCESS);
    }
    live(&client, args.interval).await?;
    Ok(ExitCode::SUCCESS)
}

/// Puts the terminal back as it was, however `live` ends.
struct Screen;

impl Screen {
    fn enter() -> std::io::Result<Screen> {
        terminal::enable_raw_mode()?;
        let screen = Screen;
        execute!(
            std::io::stdout(),
            terminal::EnterAlternateScreen,
            cursor::Hide
        )?;
        Ok(screen)
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let _ = execute!(
            std::io::stdout(),
            cursor::Show,
            terminal::LeaveAlternateScreen
        );
        let _ = terminal::disable_raw_mode();
    }
}

/// Whether a key asks to quit: `q`, Esc or Ctrl-C (raw mode turns Ctrl-C
/// into a key instead of a signal).
fn is_quit(key: &KeyEvent) -> bool {
    matches!(key.code, KeyCode::Char('q') | KeyCode::Esc)
        || (key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL))
}

/// Waits up to `wait` for a key; true when it asks to quit.
fn wait_for_quit(wait: Duration) -> std::io::Result<bool> {
    let deadline = std::time::Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() || !event::poll(left)? {
            return Ok(false);
        }
        if let Event::Key(key) = event::read()?
            && is_quit(&key)
        {
            return Ok(true);
        }
    }
}

async fn live(client: &AdminClient, interval: Duration) -> anyhow::Result<()> {
    let _screen = Screen::enter()?;
    loop {
        let text = match client.dashboard_snapshot().await {
            Ok(snapshot) => {
                let (width, _) = terminal::size().unwrap_or((120, 40));
                render(&snapshot, usize::from(width))
            }
            // The node may be restarting: say so and keep trying.
            Err(e) => format!("mortar top: {e}\n\nretrying every {interval:?}; q quits\n"),
        };
        let (_, height) = terminal::size().unwrap_or((120, 40));
        let mut out = std::io::stdout().lock();
        queue!(
            out,
            cursor::MoveTo(0, 0),
            terminal::Clear(terminal::ClearType::All)
        )?;
        for line in text.lines().take(usize::from(height.saturating_sub(1))) {
            // Raw mode: a newline does not return the carriage.
            write!(out, "{line}\r\n")?;
        }
        write!(out, "q quits")?;
        out.flush()?;
        drop(out);
        if tokio::task::spawn_blocking(move || wait_for_quit(interval)).await?? {
            return Ok(());
        }
    }
}

/// Eight levels of a bar, lowest first.
const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// The last `width` values as a bar per value, scaled to the largest.
fn sparkline(values: &[u64], width: usize) -> String {
    let shown = &values[values.len().saturating_sub(width)..];
    let max = shown.iter().copied().max().unwrap_or(0);
    shown
        .iter()
        .map(|&v| {
            if max == 0 {
                BARS[0]
            } else {
                let level = (v as f64 / max as f64 * (BARS.len() - 1) as f64).round() as usize;
                BARS[level.min(BARS.len() - 1)]
            }
        })
        .collect()
}

fn millis(p99: Option<f64>) -> String {
    match p99 {
        None => "-".to_owned(),
        Some(ms) if ms >= 1000.0 => format!("{:.2} s", ms / 1000.0),
        Some(ms) => format!("{ms:.1} ms"),
    }
}

fn lower<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// The whole view as text, each line cut to `width` characters.
pub(crate) fn render(s: &Snapshot, width: usize) -> String {
    let mut lines = Vec::new();
    lines.push(format!("mortar top · {} · {} · #{}", s.app, s.at, s.seq));
    lines.push(String::new());
    lines.push(format!(
        "{:<24} {:<10} {:>7} {:<14} {:>8} {:>8} {:>10}",
        "SERVICE", "STATE", "READY", "VERSION", "RESTARTS", "REQ/S", "P99"
    ));
    for svc in &s.services {
        lines.push(format!(
            "{:<24} {:<10} {:>7} {:<14} {:>8} {:>8.1} {:>10}",
            svc.name,
            lower(&svc.state),
            format!("{}/{}", svc.ready, svc.desired),
            if svc.versions.is_empty() {
                "-".to_owned()
            } else {
                svc.versions.join(",")
            },
            svc.restarts,
            svc.rps,
            millis(svc.p99_ms)
        ));
        for i in &svc.instances {
            lines.push(format!(
                "  {:<22} {:<10} {:>7} {:<14} {:>8}   pid {}{}",
                i.id,
                lower(&i.state),
                "",
                i.version.as_deref().unwrap_or("-"),
                i.restarts,
                i.pid.map_or_else(|| "-".to_owned(), |p| p.to_string()),
                i.last_exit
                    .as_deref()
                    .map(|e| format!("  last exit: {e}"))
                    .unwrap_or_default()
            ));
        }
    }
    lines.push(String::new());
    lines.push(format!(
        "{:<34} {:>8} {:>6} {:>7} {:>7} {:>5}  TREND",
        "QUEUE (topic → group)", "BACKLOG", "LAG", "PUB/S", "DEL/S", "DEAD"
    ));
    if s.queues.is_empty() {
        lines.push("  (no consumer groups yet)".to_owned());
    }
    for q in &s.queues {
        let backlog: Vec<u64> = q.points.iter().map(|p| p.backlog).collect();
        lines.push(format!(
            "{:<34} {:>8} {:>6} {:>7.1} {:>7.1} {:>5}  {}",
            format!("{} → {}", q.topic, q.group),
            q.backlog,
            q.lag,
            q.published_per_s,
            q.delivered_per_s,
            q.dead_lettered,
            sparkline(&backlog, 30)
        ));
    }
    let deploys: Vec<_> = s.deploys.iter().collect();
    if !deploys.is_empty() {
        lines.push(String::new());
        lines.push("DEPLOYS".to_owned());
        for d in deploys {
            lines.push(format!(
                "  #{} {} {} → {} ({}) {}: {} new ready, {} old running{}",
                d.id,
                d.service,
                d.from,
                d.to,
                d.strategy,
                lower(&d.state),
                d.new_ready,
                d.old_running,
                d.reason
                    .as_deref()
                    .or(d.last_step.as_deref())
                    .map(|m| format!(" — {m}"))
                    .unwrap_or_default()
            ));
        }
    }
    if !s.autoscaling.is_empty() {
        lines.push(String::new());
        lines.push("AUTOSCALING".to_owned());
        for a in &s.autoscaling {
            lines.push(format!(
                "  {:<22} {}/{} backlog {} (target {}/instance) {} ready / {} decided ({}–{}) {}",
                a.service,
                a.topic,
                a.group,
                a.backlog.map_or_else(|| "-".to_owned(), |b| b.to_string()),
                a.target_backlog,
                a.ready,
                a.current,
                a.min,
                a.max,
                if a.in_progress {
                    "scaling"
                } else {
                    a.action.as_deref().unwrap_or("waiting")
                }
            ));
        }
    }
    lines.push(String::new());
    lines.push("RECENT ERRORS AND WARNINGS".to_owned());
    if s.errors.is_empty() {
        lines.push("  (none)".to_owned());
    }
    for e in s.errors.iter().take(10) {
        lines.push(format!(
            "  {} {:<5} {:<18} {}{}",
            e.ts,
            e.level,
            e.instance.as_deref().unwrap_or(&e.service),
            e.msg,
            e.trace_id
                .as_deref()
                .map(|t| format!("  trace {t}"))
                .unwrap_or_default()
        ));
    }
    let mut text = String::new();
    for line in lines {
        text.extend(line.chars().take(width));
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> Snapshot {
        serde_json::from_value(serde_json::json!({
            "app": "shop", "at": "2026-11-28T22:00:00Z", "seq": 3,
            "services": [{
                "name": "catalog", "state": "running", "desired": 1, "ready": 1,
                "restarts": 2, "versions": ["boot"], "rps": 12.5, "p99_ms": 4.25,
                "instances": [{"id": "catalog-1", "state": "ready", "version": "boot",
                    "pid": 42, "restarts": 2, "started_at": null, "last_exit": "exit status: 1"}]
            }],
            "traffic": [],
            "queues": [{"topic": "orders", "group": "history", "backlog": 8, "lag": 8,
                "in_flight": 0, "dead_lettered": 1, "published_per_s": 4.0, "delivered_per_s": 0.0,
                "points": [{"at_ms": 1, "backlog": 0}, {"at_ms": 2, "backlog": 4}, {"at_ms": 3, "backlog": 8}]}],
            "deploys": [], "autoscaling": [],
            "errors": [{"ts": "t", "level": "error", "service": "catalog", "instance": "catalog-1",
                "msg": "db down", "trace_id": "4bf9"}]
        }))
        .unwrap()
    }

    #[test]
    fn the_view_lists_services_queues_and_errors() {
        let text = render(&snapshot(), usize::MAX);
        let service = text.lines().find(|l| l.starts_with("catalog ")).unwrap();
        assert!(
            service.contains("running") && service.contains("1/1"),
            "{service}"
        );
        assert!(
            service.contains("12.5") && service.contains("4.2 ms"),
            "{service}"
        );
        assert!(text.contains("catalog-1") && text.contains("last exit: exit status: 1"));
        let queue = text
            .lines()
            .find(|l| l.starts_with("orders → history"))
            .unwrap();
        assert!(queue.ends_with("▁▅█"), "{queue}");
        assert!(text.contains("db down  trace 4bf9"), "{text}");
    }

    #[test]
    fn lines_are_cut_to_the_width() {
        let text = render(&snapshot(), 20);
        assert!(text.lines().all(|l| l.chars().count() <= 20), "{text}");
    }

    #[test]
    fn sparkline_scales_to_the_largest_value() {
        assert_eq!(sparkline(&[0, 0], 10), "▁▁");
        assert_eq!(sparkline(&[1, 2, 3, 4, 8], 3), "▄▅█");
    }
}
