//! Running one-off `mortar` commands the way a user types them.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::bins::binary;

/// How a `mortar` command ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The exit code (-1 when killed by a signal).
    pub code: i32,
    /// Everything it printed on stdout.
    pub stdout: String,
    /// Everything it printed on stderr.
    pub stderr: String,
}

/// Runs `mortar args…` in `dir` with `env` added and `stdin` as input.
///
/// The test's own `MORTAR_SECRETS_KEY`, `MORTAR_SECRETS_CERT`, `EDITOR`
/// and `VISUAL` are not passed on, so only what the test gives counts.
pub fn run_mortar(dir: &Path, args: &[&str], env: &[(&str, &str)], stdin: &[u8]) -> Outcome {
    let mut child = Command::new(binary("mortar"))
        .args(args)
        .current_dir(dir)
        .env_remove("MORTAR_SECRETS_KEY")
        .env_remove("MORTAR_SECRETS_CERT")
        .env_remove("EDITOR")
        .env_remove("VISUAL")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mortar runs");
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    Outcome {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
