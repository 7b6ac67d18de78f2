//! `mortar bench http`: the gateway against a direct call and against nginx,
//! and the SDK client against a bare hyper client, in one run.
//!
//! Starts `instances` local upstream HTTP servers (small JSON answer), a
//! gateway in front of them and — when nginx is installed — nginx as a
//! keep-alive reverse proxy over the same instances. Then:
//! 1. closed loop: `concurrency` tasks send requests back to back for
//!    `duration` at one instance directly, through the gateway and through
//!    nginx (throughput and latency);
//! 2. paced: `rate` req/s for `duration` at each (added latency at light
//!    load);
//! 3. the resilient [`Client`] against a bare hyper client, closed loop on
//!    one instance (the SDK's throughput overhead).
//!
//! Each run is split into rounds interleaved with the runs it is compared
//! with (direct, gateway, nginx, direct, ...), so that a change in the
//! machine's load weighs on all of them alike.
//!
//! Upstreams, gateway and load generator each get their own tokio runtime,
//! so the load generator never steals the gateway's worker threads.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use mortar_gateway::{Gateway, GatewayConfig, Route};
use mortar_resilience::{Client, ClientConfig, Endpoint, StaticResolver};
use tokio_util::sync::CancellationToken;

use crate::cpu::{CpuSource, Usage};
use crate::stats::Summary;

/// How the upstream instances' runtime names its threads.
const UPSTREAM_THREADS: &str = "upstream";
/// How the load generator's runtime names its threads.
const LOAD_THREADS: &str = "load";

/// How the gateway names its serving threads (`mortar-gateway-<n>`, cut
/// to 15 characters by the kernel).
const GATEWAY_THREAD_PREFIX: &str = "mortar-gateway";

/// The path every upstream answers and the gateway routes.
const PATH: &str = "/v1/item";
/// The service name the gateway and the SDK client resolve.
const SERVICE: &str = "bench";
/// Requests sent before each measured run, to open connections.
const WARM_UP: usize = 200;
/// Rounds each run is split into, interleaved with the runs it is compared
/// with. Ten rather than three (since session 10): this VM's speed drifts
/// within seconds, and shorter slices spread a drift over all targets.
const ROUNDS: u32 = 10;

/// What to run.
#[derive(Debug, Clone)]
pub struct HttpBenchOptions {
    /// Upstream instances behind the gateway and nginx.
    pub instances: usize,
    /// Concurrent requests in the closed-loop runs.
    pub concurrency: usize,
    /// Length of each run.
    pub duration: Duration,
    /// Request rate of the paced (light-load) runs, req/s.
    pub rate: u64,
    /// Whether to compare with nginx (when it is installed).
    pub nginx: bool,
    /// Threads serving the gateway (each its own single-threaded runtime).
    pub gateway_threads: usize,
}

/// What one run measured.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// What was measured (`direct`, `gateway`, `nginx`, ...).
    pub name: String,
    /// Successful requests per second.
    pub per_sec: f64,
    /// Latency of successful requests in microseconds.
    pub latency_us: Summary,
    /// Requests that failed or answered non-2xx.
    pub errors: usize,
    /// CPU time the target's server (upstream, gateway or nginx workers)
    /// spent per successful request, in microseconds, when known.
    pub cpu_us_per_req: Option<f64>,
    /// Context switches of that server per successful request, when known.
    pub switches_per_req: Option<f64>,
    /// What the rest of the path used per successful request: the
    /// upstream instances and the load generator, when measured
    /// (closed-loop runs through a proxy).
    ///
    /// Why: the machine's cores are shared, so what a proxy makes its
    /// neighbours spend (fields to parse, wake-ups) limits throughput as
    /// much as what it spends itself.
    pub rest_per_req: Option<RestUsage>,
}

/// CPU time (µs) and context switches per request of the parts of a path
/// other than the proxy.
#[derive(Debug, Clone, Copy)]
pub struct RestUsage {
    /// The upstream instances' runtime: CPU µs per request.
    pub upstream_us: f64,
    /// The upstream instances' runtime: context switches per request.
    pub upstream_switches: f64,
    /// The load generator's runtime: CPU µs per request.
    pub load_us: f64,
    /// The load generator's runtime: context switches per request.
    pub load_switches: f64,
}

/// Everything one `mortar bench http` measured.
#[derive(Debug, Clone)]
pub struct HttpBenchReport {
    /// Closed-loop runs: direct, gateway, then nginx if it ran.
    pub closed: Vec<RunReport>,
    /// Paced runs, same order.
    pub paced: Vec<RunReport>,
    /// Why nginx did not run, when it did not.
    pub nginx_skipped: Option<String>,
    /// A bare hyper client on one instance.
    pub bare_client: RunReport,
    /// The resilient SDK client on the same instance.
    pub sdk_client: RunReport,
    /// The gateway's open client connections per serving thread after the
    /// closed-loop runs: how evenly the load generator's connections were
    /// spread.
    pub gateway_connections: Vec<usize>,
}

impl HttpBenchReport {
    /// The run named `name` in `runs`.
    pub fn find<'a>(runs: &'a [RunReport], name: &str) -> Option<&'a RunReport> {
        runs.iter().find(|r| r.name == name)
    }
}

/// Why the bench could not run.
#[derive(Debug, thiserror::Error)]
pub enum HttpBenchError {
    /// Bad options.
    #[error("{0}")]
    Usage(String),
    /// A runtime, socket or server could not be set up.
    #[error("{what}: {source}")]
    Setup {
        /// What was being set up.
        what: &'static str,
        /// Why it failed.
        source: std::io::Error,
    },
    /// A run finished without one successful request.
    #[error("{0}: no request succeeded; is the target up?")]
    NoSamples(String),
}

fn setup(what: &'static str) -> impl FnOnce(std::io::Error) -> HttpBenchError {
    move |source| HttpBenchError::Setup { what, source }
}

impl HttpBenchOptions {
    /// Checks the options before anything starts.
    pub fn validate(&self) -> Result<(), HttpBenchError> {
        let bad = |m: &str| Err(HttpBenchError::Usage(m.to_owned()));
        if self.instances == 0 {
            return bad("--instances must be at least 1");
        }
        if self.concurrency == 0 {
            return bad("--concurrency must be at least 1");
        }
        if self.duration.is_zero() {
            return bad("--duration-secs must be at least 1");
        }
        if self.rate == 0 {
            return bad("--rate must be at least 1 req/s");
        }
        if self.gateway_threads == 0 {
            return bad("the gateway needs at least 1 worker thread");
        }
        Ok(())
    }
}

/// Runs the whole bench. Blocking: builds its own runtimes, so call it
/// outside any tokio runtime.
pub fn run(options: &HttpBenchOptions) -> Result<HttpBenchReport, HttpBenchError> {
    options.validate()?;
    let upstream_rt = runtime(UPSTREAM_THREADS, 1)?;
    // Only waits for the gateway's own serving threads.
    let gateway_rt = runtime("gateway-main", 1)?;
    let load_rt = runtime(LOAD_THREADS, 2)?;

    let addrs = upstream_rt.block_on(start_upstreams(options.instances))?;
    let resolver = Arc::new(StaticResolver::new());
    resolver.set(
        SERVICE,
        addrs
            .iter()
            .enumerate()
            .map(|(i, a)| Endpoint::new(format!("{SERVICE}-{i}"), *a))
            .collect(),
    );
    let stop = CancellationToken::new();
    let (gateway, gw) = gateway_rt.block_on(start_gateway(
        resolver,
        options.gateway_threads,
        stop.clone(),
    ))?;

    let (nginx, nginx_skipped) = if options.nginx {
        match Nginx::start(&addrs) {
            Ok(n) => (Some(n), None),
            Err(why) => (None, Some(why)),
        }
    } else {
        (None, Some("--no-nginx given".to_owned()))
    };

    let first = addrs[0];
    let result = load_rt.block_on(async {
        let bare = bare_client();
        let url = |addr: SocketAddr| Target::Url(Box::new(bare.clone()), uri(addr));
        let mut targets = vec![
            ("direct", url(first), CpuSource::Threads(UPSTREAM_THREADS)),
            (
                "gateway",
                url(gateway),
                CpuSource::Threads(GATEWAY_THREAD_PREFIX),
            ),
        ];
        if let Some(n) = &nginx {
            targets.push(("nginx", url(n.addr), CpuSource::ChildrenOf(n.child.id())));
        }
        // Every comparison runs in interleaved rounds (a, b, c, a, b, c,
        // ...), so a change in the machine's load during the run (the
        // machine is shared) weighs on all of them alike instead of on
        // whichever happened to run then.
        let round = options.duration / ROUNDS;
        let mut closed = vec![Samples::default(); targets.len()];
        let mut paced_runs = vec![Samples::default(); targets.len()];
        for _ in 0..ROUNDS {
            for ((_, t, cpu), acc) in targets.iter().zip(&mut closed) {
                acc.add(closed_loop(t, options.concurrency, round, Some(cpu)).await);
            }
        }
        let gateway_connections = gw.open_connections();
        for _ in 0..ROUNDS {
            for ((_, t, _), acc) in targets.iter().zip(&mut paced_runs) {
                acc.add(paced(t, options.rate, round).await);
            }
        }
        let single = Arc::new(StaticResolver::new());
        single.set(SERVICE, vec![Endpoint::new(format!("{SERVICE}-0"), first)]);
        let sdk = Target::Sdk(Client::new(single, ClientConfig::default()));
        let bare_target = url(first);
        let (mut bare, mut mortar) = (Samples::default(), Samples::default());
        for _ in 0..ROUNDS {
            bare.add(closed_loop(&bare_target, options.concurrency, round, None).await);
            mortar.add(closed_loop(&sdk, options.concurrency, round, None).await);
        }
        let names = targets.iter().map(|(n, _, _)| *n);
        let closed = names
            .clone()
            .zip(&closed)
            .map(|(n, s)| s.report(n))
            .collect::<Result<Vec<_>, _>>()?;
        let paced_runs = names
            .zip(&paced_runs)
            .map(|(n, s)| s.report(n))
            .collect::<Result<Vec<_>, _>>()?;
        let bare_client = bare.report("bare hyper client")?;
        let sdk_client = mortar.report("mortar Client")?;
        Ok(HttpBenchReport {
            closed,
            paced: paced_runs,
            nginx_skipped,
            bare_client,
            sdk_client,
            gateway_connections,
        })
    });
    drop(nginx);
    stop.cancel();
    result
}

fn runtime(name: &str, threads: usize) -> Result<tokio::runtime::Runtime, HttpBenchError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name(name)
        .enable_all()
        .build()
        .map_err(setup("cannot build a tokio runtime"))
}

fn uri(addr: SocketAddr) -> http::Uri {
    let parts = http::uri::Builder::new()
        .scheme("http")
        .authority(addr.to_string())
        .path_and_query(PATH)
        .build();
    // Built from a socket address and a constant path: always valid.
    parts.unwrap_or_default()
}

/// Upstream instances: small JSON answers, TCP_NODELAY like any tuned server.
async fn start_upstreams(n: usize) -> Result<Vec<SocketAddr>, HttpBenchError> {
    use axum::serve::ListenerExt;
    let mut addrs = Vec::new();
    for i in 0..n {
        let body = format!(r#"{{"id":1,"name":"widget","instance":{i}}}"#);
        let app = axum::Router::new().route(
            PATH,
            axum::routing::get(move || {
                let body = body.clone();
                async move { ([(http::header::CONTENT_TYPE, "application/json")], body) }
            }),
        );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(setup("cannot bind an upstream instance"))?;
        addrs.push(l.local_addr().map_err(setup("upstream address"))?);
        let l = l.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        tokio::spawn(async move { axum::serve(l, app).await });
    }
    Ok(addrs)
}

async fn start_gateway(
    resolver: Arc<StaticResolver>,
    threads: usize,
    stop: CancellationToken,
) -> Result<(SocketAddr, Gateway), HttpBenchError> {
    let gw = Gateway::new(
        resolver,
        GatewayConfig {
            routes: vec![Route::new("/v1", SERVICE, false)],
            rate_limit: None,
            threads,
            ..GatewayConfig::default()
        },
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(setup("cannot bind the gateway"))?;
    let addr = l.local_addr().map_err(setup("gateway address"))?;
    tokio::spawn(gw.clone().serve(l, stop));
    Ok((addr, gw))
}

type Bare = HyperClient<HttpConnector, Full<Bytes>>;

fn bare_client() -> Bare {
    let mut c = HttpConnector::new();
    c.set_nodelay(true);
    HyperClient::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1024)
        .build(c)
}

/// One way of sending the request being measured.
#[derive(Clone)]
enum Target {
    Url(Box<Bare>, http::Uri),
    Sdk(Client),
}

impl Target {
    /// Sends one request and reads the whole answer; true on a 2xx.
    async fn once(&self) -> bool {
        match self {
            Target::Url(c, uri) => {
                let Ok(req) = http::Request::get(uri.clone()).body(Full::new(Bytes::new())) else {
                    return false;
                };
                match c.request(req).await {
                    Ok(r) => r.status().is_success() && r.into_body().collect().await.is_ok(),
                    Err(_) => false,
                }
            }
            Target::Sdk(c) => {
                let Ok(req) = http::Request::get(PATH).body(Bytes::new()) else {
                    return false;
                };
                match c.call(SERVICE, req).await {
                    Ok(r) => r.status().is_success() && r.into_body().collect().await.is_ok(),
                    Err(_) => false,
                }
            }
        }
    }
}

/// What runs of one target measured, added up over rounds.
#[derive(Debug, Clone, Default)]
struct Samples {
    /// Latencies of successful requests in microseconds.
    latencies_us: Vec<f64>,
    errors: usize,
    elapsed: Duration,
    /// What the target's server used during the runs, when measured.
    server: Option<Usage>,
    /// What the upstreams and the load generator used during the runs,
    /// when measured.
    rest: Option<(Usage, Usage)>,
}

impl Samples {
    fn add(&mut self, other: Samples) {
        self.latencies_us.extend(other.latencies_us);
        self.errors += other.errors;
        self.elapsed += other.elapsed;
        self.server = match (self.server, other.server) {
            (Some(a), Some(b)) => Some(a.plus(b)),
            (a, b) => a.or(b),
        };
        self.rest = match (self.rest, other.rest) {
            (Some((u, l)), Some((du, dl))) => Some((u.plus(du), l.plus(dl))),
            (a, b) => a.or(b),
        };
    }

    fn report(&self, name: &str) -> Result<RunReport, HttpBenchError> {
        let latency_us = Summary::of(&self.latencies_us)
            .ok_or_else(|| HttpBenchError::NoSamples(name.to_owned()))?;
        let n = self.latencies_us.len().max(1) as f64;
        let us_per_req = |u: Usage| u.cpu.as_secs_f64() * 1e6 / n;
        let switches_per_req = |u: Usage| u.switches as f64 / n;
        Ok(RunReport {
            name: name.to_owned(),
            per_sec: self.latencies_us.len() as f64 / self.elapsed.as_secs_f64().max(1e-9),
            latency_us,
            errors: self.errors,
            cpu_us_per_req: self.server.map(us_per_req),
            switches_per_req: self.server.map(switches_per_req),
            rest_per_req: self.rest.map(|(upstream, load)| RestUsage {
                upstream_us: us_per_req(upstream),
                upstream_switches: switches_per_req(upstream),
                load_us: us_per_req(load),
                load_switches: switches_per_req(load),
            }),
        })
    }
}

async fn closed_loop(
    target: &Target,
    concurrency: usize,
    duration: Duration,
    cpu: Option<&CpuSource>,
) -> Samples {
    for _ in 0..WARM_UP {
        target.once().await;
    }
    let server_before = cpu.and_then(CpuSource::usage);
    // Through a proxy, the upstreams and the load generator are the rest
    // of the path; calling an instance directly, the upstream is the server.
    let rest = cpu
        .filter(|c| !matches!(c, CpuSource::Threads(UPSTREAM_THREADS)))
        .map(|_| {
            (
                CpuSource::Threads(UPSTREAM_THREADS),
                CpuSource::Threads(LOAD_THREADS),
            )
        });
    let rest_used = |r: &(CpuSource, CpuSource)| r.0.usage().zip(r.1.usage());
    let rest_before = rest.as_ref().and_then(rest_used);
    let start = Instant::now();
    let end = start + duration;
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let t = target.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(100_000);
            let mut errors = 0;
            while Instant::now() < end {
                let s = Instant::now();
                if t.once().await {
                    lat.push(s.elapsed().as_secs_f64() * 1e6);
                } else {
                    errors += 1;
                }
            }
            (lat, errors)
        }));
    }
    let mut all = Samples::default();
    for t in tasks {
        // A load task only panics if the runtime is going away.
        if let Ok((l, e)) = t.await {
            all.latencies_us.extend(l);
            all.errors += e;
        }
    }
    all.elapsed = start.elapsed();
    all.server = cpu
        .and_then(CpuSource::usage)
        .zip(server_before)
        .map(|(after, before)| after.since(before));
    all.rest = rest
        .as_ref()
        .and_then(rest_used)
        .zip(rest_before)
        .map(|((u, l), (u0, l0))| (u.since(u0), l.since(l0)));
    all
}

async fn paced(target: &Target, rate: u64, duration: Duration) -> Samples {
    for _ in 0..WARM_UP {
        target.once().await;
    }
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    while start.elapsed() < duration {
        tick.tick().await;
        let t = target.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let s = Instant::now();
            let ok = t.once().await;
            let _ = tx.send((ok, s.elapsed()));
        });
    }
    drop(tx);
    let mut all = Samples::default();
    while let Some((ok, l)) = rx.recv().await {
        if ok {
            all.latencies_us.push(l.as_secs_f64() * 1e6);
        } else {
            all.errors += 1;
        }
    }
    all.elapsed = start.elapsed();
    all
}

/// nginx as a keep-alive reverse proxy over the upstreams, as its own
/// process in a scratch directory; stopped (QUIT) on drop.
///
/// It passes on the client's `Host` and adds the client's address to
/// `X-Forwarded-For`, as nginx's documentation shows and as the gateway
/// does: a service behind a proxy needs to know who called. (Before
/// session 11 it sent neither, so the upstreams parsed fewer fields behind
/// nginx than behind the gateway.)
struct Nginx {
    child: std::process::Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

fn find_nginx() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .and_then(|p| std::env::split_paths(&p).find(|d| d.join("nginx").is_file()))
        .map(|d| d.join("nginx"));
    on_path.or_else(|| {
        let sbin = Path::new("/usr/sbin/nginx");
        sbin.is_file().then(|| sbin.to_path_buf())
    })
}

impl Nginx {
    /// Starts nginx, or says why it did not.
    fn start(upstreams: &[SocketAddr]) -> Result<Nginx, String> {
        let nginx = find_nginx().ok_or("nginx is not on PATH (nor /usr/sbin/nginx)")?;
        let dir = tempfile::tempdir().map_err(|e| format!("no scratch directory: {e}"))?;
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?;
        let d = dir.path().display();
        let servers: String = upstreams
            .iter()
            .map(|a| format!("    server {a};\n"))
            .collect();
        let conf = format!(
            "worker_processes auto;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
               fastcgi_temp_path {d}/fcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
               keepalive_requests 100000;\n  tcp_nodelay on;\n\
               upstream bench {{\n{servers}    keepalive 256;\n  }}\n\
               server {{\n    listen {addr} reuseport;\n    location / {{\n      proxy_pass http://bench;\n\
                   proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n\
                   proxy_set_header Host $host;\n\
                   proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n    }}\n  }}\n}}\n"
        );
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, conf).map_err(|e| format!("cannot write nginx.conf: {e}"))?;
        let child = std::process::Command::new(&nginx)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&path)
            .args(["-g", "daemon off;"])
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", nginx.display()))?;
        let mut nginx = Nginx {
            child,
            addr,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            if Instant::now() > deadline {
                return Err("nginx did not listen within 10 s".to_owned());
            }
            if let Ok(Some(status)) = nginx.child.try_wait() {
                return Err(format!("nginx exited: {status}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(nginx)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        if nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGQUIT).is_err() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> HttpBenchOptions {
        HttpBenchOptions {
            instances: 2,
            concurrency: 2,
            duration: Duration::from_millis(300),
            rate: 200,
            nginx: false,
            gateway_threads: 2,
        }
    }

    #[test]
    fn bad_options_are_named() {
        let o = HttpBenchOptions {
            instances: 0,
            ..options()
        };
        let e = o.validate().unwrap_err().to_string();
        assert!(e.contains("--instances"), "{e}");
    }

    #[test]
    fn a_short_run_measures_every_path_without_errors() {
        let r = run(&options()).unwrap();
        let names: Vec<&str> = r.closed.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["direct", "gateway"]);
        assert_eq!(r.nginx_skipped.as_deref(), Some("--no-nginx given"));
        for run in r.closed.iter().chain(&r.paced) {
            assert!(run.latency_us.count > 0, "{run:?}");
            assert_eq!(run.errors, 0, "{run:?}");
        }
        assert_eq!(r.sdk_client.errors, 0);
        assert_eq!(r.bare_client.errors, 0);
        // Through the gateway, the upstreams and the load generator are
        // measured apart from the proxy; direct, the upstream is the server.
        let gateway = HttpBenchReport::find(&r.closed, "gateway").unwrap();
        let rest = gateway.rest_per_req.unwrap();
        assert!(rest.upstream_us > 0.0 && rest.load_us > 0.0, "{rest:?}");
        // A thread waiting for answers sleeps now and then.
        assert!(rest.load_switches > 0.0, "{rest:?}");
        assert!(
            gateway.switches_per_req.is_some_and(|s| s > 0.0),
            "{gateway:?}"
        );
        // The load generator's connections are dealt to both threads.
        assert_eq!(r.gateway_connections.len(), 2);
        assert!(r.gateway_connections.iter().all(|&n| n > 0), "{r:?}");
        let direct = HttpBenchReport::find(&r.closed, "direct").unwrap();
        assert!(direct.rest_per_req.is_none(), "{direct:?}");
        assert!(direct.cpu_us_per_req.is_some_and(|c| c > 0.0), "{direct:?}");
    }
}
