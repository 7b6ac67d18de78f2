//! Launching one instance process and signalling it.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{ExitStatus, Stdio};

use futures::StreamExt;
use mortar_secrets::Secrets;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::AsyncRead;
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};

use crate::logs::{LogHub, Stream};

/// The longest output line kept; longer ones are replaced by a notice, so a
/// runaway instance cannot exhaust the node's memory.
const MAX_LINE: usize = 1 << 20;

/// A launched process and the tasks that copy its output into the hub.
pub(crate) struct Process {
    pub(crate) child: Child,
    pub(crate) pid: u32,
    pumps: Vec<JoinHandle<()>>,
    /// The write end of the instance's stdin, never written: when the node
    /// dies, even by SIGKILL, the OS closes it, the instance reads EOF and
    /// drains (see `MORTAR_EXIT_WITH_NODE` in the SDK) instead of lingering.
    _lifeline: Option<tokio::process::ChildStdin>,
}

/// What to launch.
pub(crate) struct LaunchSpec<'a> {
    pub(crate) program: &'a Path,
    pub(crate) args: &'a [String],
    pub(crate) cwd: &'a Path,
    pub(crate) env: &'a BTreeMap<String, String>,
    /// Set after `env`; their values appear nowhere but in the child's
    /// environment.
    pub(crate) secrets: &'a Secrets,
    pub(crate) service: &'a str,
    pub(crate) instance: &'a str,
}

impl Process {
    /// Starts the process in its own process group (so a Ctrl-C in the
    /// terminal reaches only the node, which then stops services in order).
    pub(crate) fn spawn(spec: &LaunchSpec<'_>, hub: &LogHub) -> std::io::Result<Process> {
        // Names only: `env` may carry credentials in URLs, and `Secrets`
        // prints every value as <redacted>.
        tracing::debug!(
            program = %spec.program.display(),
            args = ?spec.args,
            env = ?spec.env.keys().collect::<Vec<_>>(),
            secrets = ?spec.secrets,
            "launching instance"
        );
        let mut command = Command::new(spec.program);
        command
            .args(spec.args)
            .current_dir(spec.cwd)
            .env_clear()
            .envs(spec.env)
            .envs(
                spec.secrets
                    .iter()
                    .map(|(name, value)| (name, value.expose())),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = command.spawn()?;
        let pid = child.id().unwrap_or_default();
        let lifeline = child.stdin.take();
        let mut pumps = Vec::with_capacity(2);
        if let Some(out) = child.stdout.take() {
            pumps.push(pump(out, Stream::Stdout, hub, spec));
        }
        if let Some(err) = child.stderr.take() {
            pumps.push(pump(err, Stream::Stderr, hub, spec));
        }
        Ok(Process {
            child,
            pid,
            pumps,
            _lifeline: lifeline,
        })
    }

    /// Sends a signal to the instance's whole process group.
    pub(crate) fn signal(&self, signal: Signal) {
        if let Ok(pgid) = i32::try_from(self.pid) {
            // ESRCH just means it is already gone.
            let _ = killpg(Pid::from_raw(pgid), signal);
        }
    }

    /// Waits for the process to exit, then for its last output lines.
    pub(crate) async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        let status = self.child.wait().await?;
        for pump in self.pumps.drain(..) {
            // Output still buffered in the pipe is copied before we report
            // the exit; a grandchild holding the pipe open must not stall us.
            let _ = tokio::time::timeout(std::time::Duration::from_millis(500), pump).await;
        }
        Ok(status)
    }
}

fn pump<R>(reader: R, stream: Stream, hub: &LogHub, spec: &LaunchSpec<'_>) -> JoinHandle<()>
where
    R: AsyncRead + Unpin + Send + 'static,
{
    let hub = hub.clone();
    let service = spec.service.to_owned();
    let instance = spec.instance.to_owned();
    tokio::spawn(async move {
        let mut lines = FramedRead::new(reader, LinesCodec::new_with_max_length(MAX_LINE));
        while let Some(line) = lines.next().await {
            match line {
                Ok(line) => hub.publish_raw(&service, &instance, stream, &line),
                Err(LinesCodecError::MaxLineLengthExceeded) => hub.publish_raw(
                    &service,
                    &instance,
                    Stream::Stderr,
                    &format!("(a line longer than {MAX_LINE} bytes was dropped)"),
                ),
                Err(LinesCodecError::Io(_)) => break,
            }
        }
    })
}

/// Describes how a process ended, for logs and status.
pub(crate) fn describe_exit(status: &ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => match Signal::try_from(sig) {
            Ok(name) => format!("killed by signal {sig} ({name})"),
            Err(_) => format!("killed by signal {sig}"),
        },
        _ => "ended".to_owned(),
    }
}
