//! What every browser test shares: chromedriver with headless Chromium (Debian's
//! `/usr/bin/chromium` and `/usr/bin/chromedriver`; `CHROMIUM` and `CHROMEDRIVER` override
//! the paths), and `Ui`, the browser pointed at one test server with the helpers scenarios
//! use. Include with `mod browser_support;`.
#![allow(dead_code)]

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

pub const CSRF_MESSAGE: &str =
    "This form has expired or did not come from Steward. Reload the page and try again.";
pub const WAIT: Duration = Duration::from_secs(15);
/// How long a backup or restore may take to finish in the browser scenarios.
pub const JOB_WAIT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------
// chromedriver and the browser
// ---------------------------------------------------------------------------------------

/// A chromedriver on a free port, in its own process group so that it and the browsers it
/// started are all stopped when this is dropped (also when a test fails).
pub struct Driver {
    child: Child,
    pub url: String,
    _profile: tempfile::TempDir,
}

impl Driver {
    pub async fn start() -> Self {
        let exe = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(&exe)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {exe} (apt-get install chromium-driver): {e}")
            });
        let driver = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _profile: tempfile::tempdir().expect("profile dir"),
        };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + WAIT;
        loop {
            let ready = http
                .get(format!("{}/status", driver.url))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return driver;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not answer on {}",
                driver.url
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn browser(&self) -> Client {
        let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let profile = format!("--user-data-dir={}", self._profile.path().display());
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--no-first-run", "--window-size=1280,900", profile,
                ],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&self.url)
            .await
            .expect("chromedriver starts a Chromium session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The whole process group this driver leads: chromedriver and its browsers.
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        std::thread::sleep(Duration::from_millis(200));
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
    }
}

/// The browser pointed at one test server, with the helpers the scenarios share.
#[derive(Clone)]
pub struct Ui {
    pub c: Client,
    pub base: String,
}

impl Ui {
    pub async fn goto(&self, path: &str) {
        self.c
            .goto(&format!("{}{path}", self.base))
            .await
            .expect("navigate");
    }

    pub async fn path(&self) -> String {
        let u = self.c.current_url().await.expect("url");
        match u.query() {
            Some(q) => format!("{}?{q}", u.path()),
            None => u.path().to_owned(),
        }
    }

    /// Waits until the page's path is `path`.
    pub async fn wait_path(&self, path: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let now = self.path().await;
            if now == path {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "expected to reach {path}, still on {now}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.c
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css}: {e}"))
    }

    /// The text of `css`, finding it again if a submitted form's answer replaced the page.
    pub async fn text(&self, css: &str) -> String {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            match self.find(css).await.text().await {
                Ok(t) => return t,
                Err(e)
                    if e.to_string().contains("stale element")
                        && std::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("text of {css}: {e}"),
            }
        }
    }

    /// Whether `css` matches anything on the page now (no waiting).
    pub async fn exists(&self, css: &str) -> bool {
        !self
            .c
            .find_all(Locator::Css(css))
            .await
            .expect("find_all")
            .is_empty()
    }

    pub async fn fill(&self, css: &str, value: &str) {
        let e = self.find(css).await;
        e.clear().await.expect("clear");
        e.send_keys(value).await.expect("type");
    }

    /// Clicks `css`, finding it again if a submitted form's answer replaced the page first.
    pub async fn click(&self, css: &str) {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            match self.find(css).await.click().await {
                Ok(_) => return,
                Err(e)
                    if e.to_string().contains("stale element")
                        && std::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("click {css}: {e}"),
            }
        }
    }

    /// Signs in with the form and waits for its answer (the next page, or the form again
    /// with an error), so the next navigation carries the session.
    pub async fn sign_in(&self, username: &str, password: &str) {
        self.goto("/login").await;
        self.fill("#username", username).await;
        self.fill("#password", password).await;
        let form = self.find("#login-form").await;
        self.click("#sign-in").await;
        let deadline = Instant::now() + WAIT;
        loop {
            match form.attr("id").await {
                Err(e) if e.to_string().contains("stale element") => return,
                _ => {}
            }
            assert!(
                Instant::now() < deadline,
                "the sign-in form was not answered"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The notice banner after a redirect.
    pub async fn notice(&self) -> String {
        self.text("#notice").await
    }

    /// The text of `css` now, if it matches anything (no waiting).
    pub async fn text_now(&self, css: &str) -> Option<String> {
        let found = self.c.find_all(Locator::Css(css)).await.expect("find_all");
        match found.first() {
            Some(e) => e.text().await.ok(),
            None => None,
        }
    }

    /// Reloads `path` until the text of `css` satisfies `done` (at most [`JOB_WAIT`]).
    pub async fn poll_text(&self, path: &str, css: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + JOB_WAIT;
        loop {
            self.goto(path).await;
            let now = self.text_now(css).await;
            if let Some(t) = &now
                && done(t)
            {
                return t.clone();
            }
            assert!(
                Instant::now() < deadline,
                "{css} on {path} never got there; last: {now:?}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Selects `value` in the `<select>` `css`. A page that a form just submitted to may still
    /// be replaced by its own answer (same path), which leaves the element found first stale:
    /// then it is found again on the new page.
    pub async fn select(&self, css: &str, value: &str) {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            match self.find(css).await.select_by_value(value).await {
                Ok(()) => return,
                Err(e)
                    if e.to_string().contains("stale element")
                        && std::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("select {value} in {css}: {e}"),
            }
        }
    }

    /// Saves what the browser shows as `NAME.png` in the directory `STEWARD_SCREENSHOTS`
    /// names, for people reviewing the pages; nothing without it.
    pub async fn save_screenshot(&self, name: &str) {
        let Some(dir) = std::env::var_os("STEWARD_SCREENSHOTS") else {
            return;
        };
        let shot = self.c.screenshot().await.expect("screenshot");
        let dir = std::path::PathBuf::from(dir);
        std::fs::create_dir_all(&dir).expect("screenshot directory");
        std::fs::write(dir.join(format!("{name}.png")), shot).expect("save screenshot");
    }

    pub async fn signed_out(&self) {
        self.c.delete_all_cookies().await.expect("delete cookies");
    }
}

/// What a `datetime-local` input with `step="1"` holds for a UTC moment, as the browser
/// normalises it: seconds are left out when they are zero ("2026-12-03T08:58", not
/// "2026-12-03T08:58:00").
pub fn datetime_local(t: chrono::DateTime<chrono::Utc>) -> String {
    use chrono::Timelike;
    if t.second() == 0 {
        t.format("%Y-%m-%dT%H:%M").to_string()
    } else {
        t.format("%Y-%m-%dT%H:%M:%S").to_string()
    }
}
