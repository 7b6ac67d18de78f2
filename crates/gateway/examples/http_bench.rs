//! HTTP benchmark of the gateway and the resilient client.
//!
//! Starts N local upstream instances (axum, small JSON), a gateway in front
//! of them, and — when `nginx` is on PATH — nginx as a keep-alive reverse
//! proxy over the same instances. Then drives closed-loop load (concurrency
//! C for D seconds) at one instance directly, through the gateway and
//! through nginx; and a paced run at R req/s for added latency at moderate
//! load; and the SDK client against a bare hyper client.
//!
//! `cargo run --release -p mortar-gateway --example http_bench -- \
//!   --instances 3 --concurrency 32 --duration 5 --rate 1000 [--only gateway|nginx|direct|sdk]`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
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

struct Args {
    instances: usize,
    concurrency: usize,
    duration: Duration,
    rate: u64,
    only: Option<String>,
}

fn args() -> Args {
    let mut a = Args {
        instances: 3,
        concurrency: 32,
        duration: Duration::from_secs(5),
        rate: 1000,
        only: None,
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    for pair in v.chunks(2) {
        let val = pair.get(1).map(String::as_str).unwrap_or("");
        match pair[0].as_str() {
            "--instances" => a.instances = val.parse().expect("--instances N"),
            "--concurrency" => a.concurrency = val.parse().expect("--concurrency N"),
            "--duration" => {
                a.duration = Duration::from_secs(val.parse().expect("--duration SECONDS"))
            }
            "--rate" => a.rate = val.parse().expect("--rate REQ_PER_SEC"),
            "--only" => a.only = Some(val.to_owned()),
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

fn runtime(name: &str, threads: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name(name)
        .enable_all()
        .build()
        .unwrap()
}

/// Latency summary of one run.
struct Summary {
    requests: usize,
    errors: usize,
    rps: f64,
    p50: Duration,
    p99: Duration,
}

fn summarize(mut lat: Vec<Duration>, errors: usize, elapsed: Duration) -> Summary {
    lat.sort_unstable();
    let pick = |q: f64| {
        lat.get(((lat.len() as f64 * q) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    Summary {
        requests: lat.len(),
        errors,
        rps: lat.len() as f64 / elapsed.as_secs_f64(),
        p50: pick(0.50),
        p99: pick(0.99),
    }
}

fn print(name: &str, s: &Summary) {
    println!(
        "{name:<28} {:>9.0} req/s  p50 {:>7.1} µs  p99 {:>8.1} µs  ({} ok, {} errors)",
        s.rps,
        s.p50.as_secs_f64() * 1e6,
        s.p99.as_secs_f64() * 1e6,
        s.requests,
        s.errors
    );
}

type Bare = HyperClient<HttpConnector, Full<Bytes>>;

fn bare_client() -> Bare {
    let mut c = HttpConnector::new();
    c.set_nodelay(true);
    HyperClient::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1024)
        .build(c)
}

/// One request through whichever way is being measured.
#[derive(Clone)]
enum Target {
    Url(Box<Bare>, http::Uri),
    Sdk(Client),
}

impl Target {
    async fn once(&self) -> bool {
        match self {
            Target::Url(c, uri) => {
                let req = http::Request::get(uri.clone())
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                match c.request(req).await {
                    Ok(r) => r.status().is_success() && r.into_body().collect().await.is_ok(),
                    Err(_) => false,
                }
            }
            Target::Sdk(c) => {
                let req = http::Request::get("/v1/item").body(Bytes::new()).unwrap();
                match c.call("bench", req).await {
                    Ok(r) => r.status().is_success() && r.into_body().collect().await.is_ok(),
                    Err(_) => false,
                }
            }
        }
    }
}

async fn closed_loop(target: Target, concurrency: usize, duration: Duration) -> Summary {
    for _ in 0..200 {
        target.once().await;
    }
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
                    lat.push(s.elapsed());
                } else {
                    errors += 1;
                }
            }
            (lat, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.unwrap();
        all.extend(l);
        errors += e;
    }
    summarize(all, errors, start.elapsed())
}

async fn paced(target: Target, rate: u64, duration: Duration) -> Summary {
    for _ in 0..200 {
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
    let mut lat = Vec::new();
    let mut errors = 0;
    while let Some((ok, l)) = rx.recv().await {
        if ok {
            lat.push(l);
        } else {
            errors += 1;
        }
    }
    summarize(lat, errors, start.elapsed())
}

/// nginx as a keep-alive reverse proxy over `upstreams`, if installed.
struct Nginx {
    child: std::process::Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Nginx {
    fn start(upstreams: &[SocketAddr]) -> Option<Nginx> {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join("nginx").is_file()))
            .unwrap_or(false)
            || std::path::Path::new("/usr/sbin/nginx").is_file();
        if !found {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
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
               keepalive_requests 100000;\n\
               upstream bench {{\n{servers}    keepalive 256;\n  }}\n\
               server {{\n    listen {addr} reuseport;\n    location / {{\n      proxy_pass http://bench;\n\
                   proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n    }}\n  }}\n}}\n"
        );
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, conf).unwrap();
        let nginx = if std::path::Path::new("/usr/sbin/nginx").is_file() {
            "/usr/sbin/nginx"
        } else {
            "nginx"
        };
        let child = std::process::Command::new(nginx)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&path)
            .args(["-g", "daemon off;"])
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(Nginx {
            child,
            addr,
            _dir: dir,
        })
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .arg("-QUIT")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

fn main() {
    let a = args();
    let upstream_rt = runtime("upstream", 1);
    let gw_threads = std::env::var("GW_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let gateway_rt = runtime("gateway", gw_threads);
    let load_rt = runtime("load", 2);

    let addrs: Vec<SocketAddr> = upstream_rt.block_on(async {
        let mut addrs = Vec::new();
        for i in 0..a.instances {
            let app = axum::Router::new().route(
                "/v1/item",
                axum::routing::get(move || async move {
                    axum::Json(serde_json::json!({"id": 1, "name": "widget", "instance": i}))
                }),
            );
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            addrs.push(l.local_addr().unwrap());
            tokio::spawn(async move { axum::serve(l, app).await });
        }
        addrs
    });

    let resolver = Arc::new(StaticResolver::new());
    resolver.set(
        "bench",
        addrs
            .iter()
            .enumerate()
            .map(|(i, a)| Endpoint::new(format!("bench-{i}"), *a))
            .collect(),
    );
    let single = Arc::new(StaticResolver::new());
    single.set("bench", vec![Endpoint::new("bench-0", addrs[0])]);

    let stop = CancellationToken::new();
    let gw_addr: SocketAddr = gateway_rt.block_on(async {
        let gw = Gateway::new(
            resolver.clone(),
            GatewayConfig {
                routes: vec![Route::new("/v1", "bench", false)],
                rate_limit: None,
                ..GatewayConfig::default()
            },
        );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(gw.serve(l, stop.clone()));
        addr
    });
    let nginx = Nginx::start(&addrs);

    println!(
        "instances {}, concurrency {}, duration {:?}, paced rate {}/s, nginx: {}",
        a.instances,
        a.concurrency,
        a.duration,
        a.rate,
        if nginx.is_some() { "yes" } else { "not found" }
    );
    load_rt.block_on(async {
        let bare = bare_client();
        let url = |addr: SocketAddr| {
            Target::Url(
                Box::new(bare.clone()),
                format!("http://{addr}/v1/item").parse().unwrap(),
            )
        };
        let mut targets = vec![
            ("direct (one instance)", url(addrs[0])),
            ("gateway", url(gw_addr)),
        ];
        if let Some(n) = &nginx {
            targets.push(("nginx", url(n.addr)));
        }
        if let Some(only) = &a.only {
            targets.retain(|(name, _)| name.starts_with(only.as_str()));
        }
        println!("-- closed loop");
        for (name, t) in &targets {
            print(
                name,
                &closed_loop(t.clone(), a.concurrency, a.duration).await,
            );
        }
        println!("-- paced at {}/s", a.rate);
        let mut direct_paced = None;
        for (name, t) in &targets {
            let s = paced(t.clone(), a.rate, a.duration).await;
            print(name, &s);
            match &direct_paced {
                None => direct_paced = Some((s.p50, s.p99)),
                Some((p50, p99)) => println!(
                    "{:<28} added p50 {:>7.1} µs, added p99 {:>8.1} µs",
                    format!("  {name} over direct"),
                    (s.p50.as_secs_f64() - p50.as_secs_f64()) * 1e6,
                    (s.p99.as_secs_f64() - p99.as_secs_f64()) * 1e6
                ),
            }
        }
        if a.only.as_deref().is_some_and(|o| o != "sdk") {
            return;
        }
        println!("-- SDK client vs bare hyper client, same single instance, closed loop");
        let bare_s = closed_loop(url(addrs[0]), a.concurrency, a.duration).await;
        print("bare hyper client", &bare_s);
        let sdk = Client::new(single.clone(), ClientConfig::default());
        let sdk_s = closed_loop(Target::Sdk(sdk), a.concurrency, a.duration).await;
        print("mortar Client", &sdk_s);
        println!(
            "SDK throughput overhead: {:.1}%",
            (1.0 - sdk_s.rps / bare_s.rps) * 100.0
        );
    });
    drop(nginx);
    stop.cancel();
}
