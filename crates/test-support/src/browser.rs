//! A headless Chromium driven over WebDriver, for the browser tests of the
//! pages the node serves (the shop's storefront, the dashboard).
//!
//! Debian's `chromium` and `chromium-driver` packages provide the browser
//! and `chromedriver`; `scripts/install-browser` installs them (CI runs it).
//! Each [`Browser`] starts its own `chromedriver` on a free loopback port and
//! one browser session with a fresh profile, and ends both when dropped.
//! The tests are synchronous, so the async WebDriver client (`fantoccini`)
//! runs on a private current-thread runtime behind a blocking API.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

/// Where `chromedriver` and Chromium are looked for, overridable for other
/// distributions.
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// How long a `wait_*` call waits before failing the test: generous, since
/// the machine is shared and a page waits for services behind the gateway.
pub const WAIT: Duration = Duration::from_secs(30);

/// Directory for test artifacts that CI keeps (screenshots):
/// `<target>/test-output/`, created on first use.
pub fn test_output_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let dir = target.join("test-output");
    std::fs::create_dir_all(&dir).expect("the test-output directory is created");
    dir.canonicalize().unwrap_or(dir)
}

/// A headless Chromium session; see the module documentation.
pub struct Browser {
    runtime: tokio::runtime::Runtime,
    client: Option<Client>,
    driver: Child,
    /// The browser's profile, removed after the session ends.
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless browser, or returns `None` after
    /// printing why when they are not installed here. Under `CI=true` a
    /// missing browser fails the test instead: CI must run the browser tests.
    pub fn launch(test: &str) -> Option<Browser> {
        let driver = std::env::var("MORTAR_CHROMEDRIVER").unwrap_or_else(|_| CHROMEDRIVER.into());
        let chromium = std::env::var("MORTAR_CHROMIUM").unwrap_or_else(|_| CHROMIUM.into());
        let missing: Vec<&str> = [&driver, &chromium]
            .into_iter()
            .filter(|p| !Path::new(p).exists())
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{test}: {} not installed, and CI=true requires the browser tests to run \
                 (scripts/install-browser installs Debian's chromium and chromium-driver)",
                missing.join(" and ")
            );
            eprintln!(
                "skipped {test}: {} not installed (run scripts/install-browser)",
                missing.join(" and ")
            );
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let mut child = Command::new(&driver)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("{test}: cannot start {driver}: {e}"));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for the WebDriver client");
        let profile = tempfile::tempdir().expect("a browser profile directory");
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--window-size=1280,1000",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!("a JSON object literal")
        };
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + WAIT;
        let client = loop {
            let attempt = runtime.block_on(
                ClientBuilder::new(HttpConnector::new())
                    .capabilities(capabilities.clone())
                    .connect(&url),
            );
            match attempt {
                Ok(client) => break client,
                Err(e) if Instant::now() < deadline => {
                    if let Ok(Some(status)) = child.try_wait() {
                        panic!("{test}: chromedriver exited ({status}) before a session: {e}");
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => {
                    let _ = child.kill();
                    panic!("{test}: no browser session from chromedriver at {url}: {e}");
                }
            }
        };
        Some(Browser {
            runtime,
            client: Some(client),
            driver: child,
            _profile: profile,
        })
    }

    fn client(&self) -> &Client {
        self.client
            .as_ref()
            .expect("the session is open until drop")
    }

    /// Opens `url` and waits for the page's load event.
    pub fn goto(&self, url: &str) {
        self.runtime
            .block_on(self.client().goto(url))
            .unwrap_or_else(|e| panic!("opening {url}: {e}"));
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page
    /// and returns its result.
    pub fn execute(&self, script: &str, args: Vec<Value>) -> Value {
        self.runtime
            .block_on(self.client().execute(script, args))
            .unwrap_or_else(|e| panic!("running script in the page: {e}\n{script}"))
    }

    /// Polls `script` until it returns a value that is not `null`/`false`,
    /// and returns it; fails the test with `what` after [`WAIT`].
    pub fn wait_for(&self, what: &str, script: &str) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let value = self.execute(script, vec![]);
            if !matches!(value, Value::Null | Value::Bool(false)) {
                return value;
            }
            if Instant::now() >= deadline {
                let shot = self.screenshot(&format!("timeout-{}", slug(what)));
                panic!(
                    "waited {WAIT:?} for {what}; the page's text was:\n{}\n(screenshot: {})",
                    self.text("body"),
                    shot.display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until an element matches `css` and is displayed.
    pub fn wait_visible(&self, css: &str) {
        let script = format!(
            "const e = document.querySelector({}); \
             return e !== null && e.offsetParent !== null && getComputedStyle(e).visibility !== 'hidden';",
            json!(css)
        );
        self.wait_for(&format!("{css} to be visible"), &script);
    }

    /// The visible text of the first element matching `css`.
    pub fn text(&self, css: &str) -> String {
        self.runtime
            .block_on(async { self.client().find(Locator::Css(css)).await?.text().await })
            .unwrap_or_else(|e| panic!("reading the text of {css}: {e}"))
    }

    /// Types `text` into the input matching `css`, replacing what it held.
    pub fn fill(&self, css: &str, text: &str) {
        self.runtime
            .block_on(async {
                let input = self.client().find(Locator::Css(css)).await?;
                input.clear().await?;
                input.send_keys(text).await
            })
            .unwrap_or_else(|e| panic!("typing into {css}: {e}"));
    }

    /// Clicks the first element matching `css`, as a user would.
    pub fn click(&self, css: &str) {
        self.runtime
            .block_on(async { self.client().find(Locator::Css(css)).await?.click().await })
            .unwrap_or_else(|e| panic!("clicking {css}: {e}"));
    }

    /// Saves a PNG of the window as `<test-output>/<name>.png`; its path.
    pub fn screenshot(&self, name: &str) -> PathBuf {
        let png = self
            .runtime
            .block_on(self.client().screenshot())
            .unwrap_or_else(|e| panic!("taking a screenshot: {e}"));
        let path = test_output_dir().join(format!("{name}.png"));
        std::fs::write(&path, png).expect("the screenshot is written");
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            let _ = self.runtime.block_on(client.close());
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// `what` as a file-name fragment.
fn slug(what: &str) -> String {
    what.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}
