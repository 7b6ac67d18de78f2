//! CPU time used by what serves a target, read from `/proc` (Linux).
//!
//! Why: on a shared machine throughput moves with whatever else runs, but
//! the CPU time a proxy spends per request barely does. Comparing the
//! gateway's and nginx's CPU per request in the same run is the steadiest
//! measure of which does less work.

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

impl CpuSource {
    /// CPU time used so far, or `None` where `/proc` cannot tell.
    pub fn used(&self) -> Option<Duration> {
        match self {
            CpuSource::Threads(prefix) => {
                let mut total = 0;
                for task in std::fs::read_dir("/proc/self/task").ok()? {
                    let dir = task.ok()?.path();
                    let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
                    if comm.starts_with(prefix) {
                        total += run_time_ns(&dir).unwrap_or(0);
                    }
                }
                Some(Duration::from_nanos(total))
            }
            CpuSource::ChildrenOf(parent) => {
                let mut total = 0;
                for proc in std::fs::read_dir("/proc").ok()? {
                    let dir = proc.ok()?.path();
                    if parent_of(&dir) == Some(*parent) {
                        total += run_time_ns(&dir).unwrap_or(0);
                    }
                }
                Some(Duration::from_nanos(total))
            }
        }
    }
}

/// Nanoseconds on CPU: the first field of `schedstat`.
fn run_time_ns(dir: &Path) -> Option<u64> {
    let s = std::fs::read_to_string(dir.join("schedstat")).ok()?;
    s.split_whitespace().next()?.parse().ok()
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
        let used = CpuSource::Threads("cpu-test-spin").used();
        spin.join().unwrap();
        if cfg!(target_os = "linux") {
            assert!(used.unwrap() >= Duration::from_millis(10), "{used:?}");
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
        let mut used = source.used();
        while cfg!(target_os = "linux")
            && used.is_none_or(|u| u < Duration::from_millis(10))
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
            used = source.used();
        }
        child.kill().unwrap();
        child.wait().unwrap();
        if cfg!(target_os = "linux") {
            assert!(used.unwrap() >= Duration::from_millis(10), "{used:?}");
        }
    }
}
