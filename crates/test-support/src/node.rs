//! Running `mortar up` as a child process and asking it questions through
//! the `mortar` CLI, as a user would.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

use crate::bins::binary;
use crate::wait::wait_for;

/// A `mortar up` process with its own temporary data directory.
pub struct RunningNode {
    child: Option<Child>,
    manifest: PathBuf,
    data_dir: PathBuf,
    output: Arc<Mutex<Vec<String>>>,
}

fn collect(stream: impl std::io::Read + Send + 'static, into: Arc<Mutex<Vec<String>>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            into.lock().unwrap().push(line);
        }
    });
}

impl RunningNode {
    /// Starts `mortar up -f manifest --data-dir data_dir`.
    pub fn start(manifest: &Path, data_dir: &Path) -> RunningNode {
        RunningNode::start_with_env(manifest, data_dir, &[])
    }

    /// Like [`RunningNode::start`], with extra environment for the node.
    pub fn start_with_env(manifest: &Path, data_dir: &Path, env: &[(&str, &str)]) -> RunningNode {
        let mut child = Command::new(binary("mortar"))
            .envs(env.iter().copied())
            .args(["up", "-f"])
            .arg(manifest)
            .arg("--data-dir")
            .arg(data_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("mortar up starts");
        let output = Arc::new(Mutex::new(Vec::new()));
        collect(child.stdout.take().unwrap(), output.clone());
        collect(child.stderr.take().unwrap(), output.clone());
        RunningNode {
            child: Some(child),
            manifest: manifest.to_owned(),
            data_dir: data_dir.to_owned(),
            output,
        }
    }

    /// The node's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or_default()
    }

    /// Everything the node printed so far (stdout and stderr), one entry per line.
    pub fn output(&self) -> Vec<String> {
        self.output.lock().unwrap().clone()
    }

    /// The output lines that are JSON objects.
    pub fn json_lines(&self) -> Vec<Value> {
        self.output()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(Value::is_object)
            .collect()
    }

    /// Runs a `mortar` subcommand against this node; returns (exit code, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(binary("mortar"))
            .args(args)
            .arg("--file")
            .arg(&self.manifest)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .output()
            .expect("mortar runs");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `mortar status --json`, parsed; `None` while the node does not answer.
    pub fn status(&self) -> Option<Value> {
        let (code, stdout, _) = self.cli(&["status", "--json"]);
        if code != 0 {
            return None;
        }
        serde_json::from_str(&stdout).ok()
    }

    /// The gateway's URL from `mortar status` (`http://127.0.0.1:<port>`).
    pub fn gateway_url(&self) -> String {
        wait_for(
            "the gateway's URL in status",
            Duration::from_secs(30),
            || Some(self.status()?["node"]["gateway_url"].as_str()?.to_owned()),
        )
    }

    /// The instances of a service from `mortar status`.
    pub fn instances(&self, service: &str) -> Vec<Value> {
        self.status()
            .and_then(|s| {
                s["services"]
                    .as_array()?
                    .iter()
                    .find(|x| x["name"] == service)
                    .map(|x| x["instances"].as_array().cloned().unwrap_or_default())
            })
            .unwrap_or_default()
    }

    /// Waits until `count` instances of `service` are ready; returns them.
    pub fn wait_ready(&self, service: &str, count: usize) -> Vec<Value> {
        wait_for(
            &format!("{count} ready instance(s) of {service}"),
            Duration::from_secs(60),
            || {
                let ready: Vec<Value> = self
                    .instances(service)
                    .into_iter()
                    .filter(|i| i["state"] == "ready")
                    .collect();
                (ready.len() == count).then_some(ready)
            },
        )
    }

    /// How many instances of `service` are ready now (0 while the node
    /// does not answer).
    pub fn ready_count(&self, service: &str) -> usize {
        self.instances(service)
            .iter()
            .filter(|i| i["state"] == "ready")
            .count()
    }

    /// Reaps a node the test killed itself, so dropping it sends nothing.
    pub fn forget(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM to the node and waits for it to exit.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("node still running");
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        wait_for("the node to exit", Duration::from_secs(60), || {
            child.try_wait().ok().flatten()
        })
    }
}

impl Drop for RunningNode {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            for _ in 0..500 {
                if child.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl RunningNode {
    /// Calls an instance (a status entry) directly, over mTLS with the
    /// node's own certificate from `<data dir>/tls/node/`, as `mortar
    /// projections` does: instances accept no plain HTTP and no caller
    /// without a certificate from the node's CA.
    pub fn call(
        &self,
        instance: &Value,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Vec<u8>) {
        call_as_node(&self.data_dir, instance, method, path, body)
    }

    /// `GET path` on an instance: status and body as text.
    pub fn get_text(&self, instance: &Value, path: &str) -> (u16, String) {
        let (code, body) = self.call(instance, "GET", path, None);
        (code, String::from_utf8_lossy(&body).into_owned())
    }

    /// `GET path` on an instance: status and body as JSON (null if not).
    pub fn get_json(&self, instance: &Value, path: &str) -> (u16, Value) {
        let (code, body) = self.call(instance, "GET", path, None);
        (code, serde_json::from_slice(&body).unwrap_or_default())
    }

    /// The node's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The admin token the node wrote into its data directory.
    pub fn admin_token(&self) -> String {
        wait_for("the node's admin token", Duration::from_secs(30), || {
            std::fs::read_to_string(self.data_dir.join("admin.token"))
                .ok()
                .filter(|t| !t.trim().is_empty())
                .map(|t| t.trim().to_owned())
        })
    }

    /// The admin API's URL from `mortar status`.
    pub fn admin_url(&self) -> String {
        wait_for("the admin URL in status", Duration::from_secs(30), || {
            Some(self.status()?["node"]["admin_url"].as_str()?.to_owned())
        })
    }

    /// An HTTP client for the node's APIs that sends the admin token, as
    /// the CLI does (the node answers 401 to requests without it).
    pub fn admin_http(&self) -> reqwest::blocking::Client {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {}", self.admin_token()).parse().unwrap(),
        );
        reqwest::blocking::Client::builder()
            .default_headers(headers)
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap()
    }
}

/// Calls an instance of a node whose data directory is `data_dir` with the
/// node's certificate (see [`RunningNode::call`]).
pub fn call_as_node(
    data_dir: &Path,
    instance: &Value,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> (u16, Vec<u8>) {
    let tls = mortar_tls::InstanceTls::from_dir(&data_dir.join("tls").join("node"))
        .expect("the node's certificate is readable");
    let caller = mortar_tls::Caller::new(&tls).expect("a TLS client");
    let service = instance["service"]
        .as_str()
        .expect("instance has a service");
    let url = instance_url(instance);
    let body = body
        .map(|b| serde_json::to_vec(b).expect("JSON"))
        .unwrap_or_default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let (code, bytes) = rt
        .block_on(caller.request(
            service,
            &url,
            method.parse().expect("an HTTP method"),
            path,
            body.into(),
            Duration::from_secs(30),
        ))
        .expect("the instance answers");
    (code.as_u16(), bytes.to_vec())
}

/// A URL of an instance from its status entry.
pub fn instance_url(instance: &Value) -> String {
    format!(
        "http://127.0.0.1:{}",
        instance["port"].as_u64().expect("instance has a port")
    )
}
