//! `mortar chaos` against the whole shop: the default scenario (instance
//! kills, a bus outage, a pause of the single writer, latency at the
//! gateway, kills of both bus consumers, a rolling deploy) under load from
//! clients that never retry. Its scorecard is printed in the CI
//! log; nothing acknowledged may be lost or duplicated.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use mortar_test_support::shop;

#[test]
fn the_default_chaos_scenario_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let node = shop::start(dir.path(), "chaosshop");
    let (code, out, err) = node.cli(&["chaos", "run"]);
    println!("{out}{err}");
    assert_eq!(code, 0, "{out}{err}");
    let value = |label: &str| -> u64 {
        let line = out
            .lines()
            .find(|l| l.trim_start().starts_with(label))
            .unwrap_or_else(|| panic!("no {label:?} line in {out}"));
        line[line.find(label).unwrap() + label.len()..]
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no number in {line:?}"))
    };
    assert_eq!(value("lost"), 0, "{out}");
    assert_eq!(value("duplicates"), 0, "{out}");
    assert_eq!(value("requests failed (client, no retry)"), 0, "{out}");
    let acknowledged = value("orders acknowledged");
    assert!(acknowledged > 20, "{out}");
    assert_eq!(value("orders in the read model"), acknowledged, "{out}");
    assert_eq!(value("orders notified"), acknowledged, "{out}");
    assert_eq!(out.matches("  fault ").count(), 7, "{out}");
    for step in [
        "kill -9 catalog-",
        "bus outage for 3000 ms",
        "pause ordering-",
        "latency +150 ms on 50% of catalog",
        "kill -9 notifier-",
        "rolling deploy of catalog",
        "kill -9 order-history-",
    ] {
        assert!(out.contains(step), "no {step:?} in {out}");
    }
    // The outage reached the SDK: ordering's relay lost its connection
    // (its publishes went to its outbox meanwhile) and connected again.
    let lines = node.json_lines();
    let ordering_says = |msg: &str| -> Vec<usize> {
        let said = |l: &serde_json::Value| l["service"] == "ordering" && l["msg"] == msg;
        (0..lines.len()).filter(|i| said(&lines[*i])).collect()
    };
    let lost = ordering_says("bus client: connection lost; reconnecting");
    let connected = ordering_says("bus client: connected");
    assert!(!lost.is_empty(), "ordering never lost the bus");
    assert!(
        connected.iter().any(|c| *c > lost[0]),
        "ordering did not connect again after the outage"
    );
    // The deploy went through: catalog runs a release now.
    let versions: Vec<String> = node
        .instances("catalog")
        .iter()
        .map(|i| i["version"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(versions.iter().all(|v| v != "boot"), "{versions:?}");
    assert!(out.contains("nothing acknowledged was lost"), "{out}");

    // Bad input: one line naming the fix, exit 1.
    let (code, _, err) = node.cli(&["chaos", "run", "nope"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("unknown scenario \"nope\"; known: default"),
        "{err}"
    );
    let (code, _, err) = node.cli(&["chaos", "kill", "ghost-9"]);
    assert_eq!(code, 1);
    assert!(err.contains("no running instance \"ghost-9\""), "{err}");
}
