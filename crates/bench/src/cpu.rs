//! CPU time and context switches of what serves a target, read from
//! `/proc` (Linux).
//!
//! Why: on a shared machine throughput moves with whatever else runs, but
//! the CPU time a proxy spends per request barely does. Comparing the
//! gateway's and nginx's CPU per request in the same run is the steadiest
//! measure of which does less work. Context switches tell how often a
//! thread went to sleep and was woken (or was preempted): each costs CPU
//! time, and how a proxy hands work to its neighbours decides how often
//! they sleep.

use std::path::Path;
use std::time::Duration;

/// Whose CPU time to add up.
#[derive(Debug, Clone)]
pub enum CpuSource {
    /// Threads of this process whose name starts with the prefix.
    Threads(&'static str),
    /// The children of a process (e.g. nginx's workers under its master).
    ChildrenOf(u32),
}

/// What a source has used so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Time on a CPU.
    pub cpu: Duration,
    /// Context switches, voluntary (went to sleep) and not (preempted).
    pub switches: u64,
}

impl Usage {
    /// What was used between `before` and `self`.
    pub fn since(self, before: Usage) -> Usage {
        Usage {
            cpu: self.cpu.saturating_sub(before.cpu),
            switches: self.switches.saturating_sub(before.switches),
        }
    }

    /// Both added up.
    pub fn plus(self, other: Usage) -> Usage {
        Usage {
            cpu: self.cpu + other.cpu,
            switches: self.switches + other.switches,
        }
    }

    fn add_task(&mut self, dir: &Path) {
        self.cpu += Duration::from_nanos(run_time_ns(dir).unwrap_or(0));
        self.switches += switches(dir).unwrap_or(0);
    }
}

impl CpuSource {
    /// What the source has used so far, or `None` where `/proc` cannot
    /// tell.
    pub fn usage(&self) -> Option<Usage> {
        let mut total = Usage::default();
        match self {
            CpuSource::Threads(prefix) => {
                for task in std::fs::read_dir("/proc/self/task").ok()? {
                    let dir = task.ok()?.path();
                    let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
                    if comm.starts_with(prefix) {
                        total.add_task(&dir);
                    }
                }
            }
            CpuSource::ChildrenOf(parent) => {
                for proc in std::fs::read_dir("/proc").ok()? {
                    let dir = proc.ok()?.path();
                    if parent_of(&dir) == Some(*parent) {
                        total.add_task(&dir);
                    }
                }
            }
        }
        Some(total)
    }
}

/// Nanoseconds on CPU: the first field of `schedstat`.
fn run_time_ns(dir: &Path) -> Option<u64> {
    let s = std::fs::read_to_string(dir.join("schedstat")).ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// Voluntary plus involuntary context switches, from `status`.
fn switches(dir: &Path) -> Option<u64> {
    let s = std::fs::read_to_string(dir.join("status")).ok()?;
    let count = |key: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    Some(count("voluntary_ctxt_switches:")? + count("nonvoluntary_ctxt_switches:")?)
}

/// The parent pid: the field after the state in `stat`, which follows the
/// parenthesised command name (which may itself contain spaces).
fn parent_of(dir: &Path) -> Option<u32> {
    let s = std::fs::read_to_string(dir.join("stat")).ok()?;
    let after = &s[s.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_thread_is_counted() {
        let spin = std::thread::Builder::new()
            .name("cpu-test-spin".into())
            .spawn(|| {
                let end = std::time::Instant::now() + Duration::from_millis(50);
                let mut x = 0u64;
                while std::time::Instant::now() < end {
                    x = x.wrapping_add(1);
                }
                std::hint::black_box(x);
                std::thread::sleep(Duration::from_millis(200));
            })
            .unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let used = CpuSource::Threads("cpu-test-spin").usage();
        spin.join().unwrap();
        if cfg!(target_os = "linux") {
            let used = used.unwrap();
            assert!(used.cpu >= Duration::from_millis(10), "{used:?}");
            // It went to sleep after spinning.
            assert!(used.switches >= 1, "{used:?}");
        }
    }

    #[test]
    fn a_busy_child_of_this_process_is_counted() {
        // Spins for a while, then idles so it is still there to be read.
        let mut child = std::process::Command::new("sh")
            .args([
                "-c",
                "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done; sleep 30",
            ])
            .spawn()
            .unwrap();
        let source = CpuSource::ChildrenOf(std::process::id());
        let deadline = std::time::Instant::now() + Duration::from_secs(25);
        let cpu = || source.usage().map(|u| u.cpu);
        let mut used = cpu();
        while cfg!(target_os = "linux")
            && used.is_none_or(|u| u < Duration::from_millis(10))
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
            used = cpu();
        }
        child.kill().unwrap();
        child.wait().unwrap();
        if cfg!(target_os = "linux") {
            assert!(used.unwrap() >= Duration::from_millis(10), "{used:?}");
        }
    }
}
