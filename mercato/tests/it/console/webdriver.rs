//! A small W3C WebDriver client over reqwest, driving headless Chromium through chromedriver:
//! just what the console's browser tests use.

use std::path::Path;
use std::process::Stdio;

use base64::Engine as _;
use mercato_testkit::{PATIENCE, eventually};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

use crate::support::free_port;

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// The W3C name of an element reference in answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A chromedriver process and one browser session, both ended on drop.
pub struct Browser {
    driver: Child,
    base: String,
    http: reqwest::Client,
    /// Chromium's own process: ending the session does not always end it.
    chromium: Option<u32>,
    _profile: tempfile::TempDir,
}

impl Browser {
    pub async fn start(width: u32, height: u32) -> Self {
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver starts");
        let http = reqwest::Client::builder().timeout(PATIENCE).build().unwrap();
        let driver_url = format!("http://127.0.0.1:{port}");
        eventually(PATIENCE, "chromedriver to answer", || async {
            let status: Value = http
                .get(format!("{driver_url}/status"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            status["value"]["ready"].as_bool().filter(|r| *r)
        })
        .await;
        let profile = tempfile::tempdir().unwrap();
        let args = json!([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            format!("--user-data-dir={}", profile.path().display()),
            format!("--window-size={width},{height}"),
        ]);
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
        }}});
        let answer: Value = http
            .post(format!("{driver_url}/session"))
            .json(&capabilities)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no browser session: {answer}"));
        let chromium = answer["value"]["capabilities"]["goog:processID"]
            .as_u64()
            .and_then(|pid| u32::try_from(pid).ok());
        Self {
            base: format!("{driver_url}/session/{id}"),
            driver,
            http,
            chromium,
            _profile: profile,
        }
    }

    async fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let request = self.http.request(method, format!("{}{path}", self.base));
        let request = match body {
            Some(body) => request.json(&body),
            None => request,
        };
        let answer: Value = request.send().await.unwrap().json().await.unwrap();
        answer["value"].clone()
    }

    pub async fn goto(&self, url: &str) {
        self.command(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    /// The element `css` finds, once it is there.
    pub async fn find(&self, css: &str) -> String {
        eventually(PATIENCE, &format!("an element {css}"), || async {
            let found = self
                .command(
                    reqwest::Method::POST,
                    "/element",
                    Some(json!({"using": "css selector", "value": css})),
                )
                .await;
            found[ELEMENT].as_str().map(str::to_owned)
        })
        .await
    }

    pub async fn click(&self, css: &str) {
        let element = self.find(css).await;
        self.command(
            reqwest::Method::POST,
            &format!("/element/{element}/click"),
            Some(json!({})),
        )
        .await;
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        self.command(
            reqwest::Method::POST,
            &format!("/element/{element}/value"),
            Some(json!({"text": text})),
        )
        .await;
    }

    /// Runs `script` in the page and returns what it returns.
    pub async fn run(&self, script: &str) -> Value {
        self.command(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    /// The visible text of the page's main part.
    pub async fn text(&self) -> String {
        self.run("return document.body.innerText")
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Waits until the page's text contains each of `wanted`.
    pub async fn shows(&self, wanted: &[&str]) {
        eventually(PATIENCE, &format!("the page to show {wanted:?}"), || async {
            let text = self.text().await;
            wanted.iter().all(|w| text.contains(w)).then_some(())
        })
        .await;
    }

    /// Waits until `script` returns true; one that never does fails with what the page shows
    /// (an error banner, the sign-in form, another page), which says why.
    pub async fn until(&self, what: &str, script: &str) {
        let waited = tokio::time::timeout(PATIENCE, async {
            while self.run(script).await != json!(true) {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        })
        .await;
        if waited.is_err() {
            let shown = self.text().await;
            panic!("timed out after {PATIENCE:?} waiting for {what}; the page shows:\n{shown}");
        }
    }

    /// A PNG of the window, written to `path`.
    pub async fn screenshot(&self, path: &Path) {
        let shot = self.command(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot.as_str().unwrap())
            .unwrap();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, png).unwrap();
    }

    /// Ends the browser session, Chromium and the driver.
    pub async fn close(self) {
        let _ = self.http.delete(&self.base).send().await;
    }

    /// Removes the cookie `name` the current page sees, `HttpOnly` or not.
    pub async fn delete_cookie(&self, name: &str) {
        self.command(reqwest::Method::DELETE, &format!("/cookie/{name}"), None)
            .await;
    }

    pub async fn resize(&self, width: u32, height: u32) {
        self.command(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        )
        .await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Also on a failed test: Chromium by its own process id, then its driver.
        if let Some(pid) = self.chromium {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        let _ = self.driver.start_kill();
    }
}

/// Where a screenshot goes: the directory `MERCATO_SCREENSHOTS` names (`docs/console` refreshes
/// the README's), else the tests' scratch directory, so a test run leaves the tree as it was.
pub fn screenshot_path(name: &str) -> std::path::PathBuf {
    let dir = std::env::var_os("MERCATO_SCREENSHOTS").map_or_else(
        || Path::new(env!("CARGO_TARGET_TMPDIR")).join("console"),
        |dir| Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(dir),
    );
    dir.join(format!("{name}.png"))
}
