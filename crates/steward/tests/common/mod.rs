//! Helpers shared by the integration tests: the built `steward` binary, `steward serve` as a
//! child process in a temporary data directory, and client commands run against it.

#![allow(dead_code)] // each test crate uses its own subset

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_steward");
pub const TOKEN: &str = "stw_0123456789abcdef0123456789abcdef01234567";

/// A `steward` command with no STEWARD_* variables inherited from whoever runs the tests.
pub fn steward_command() -> Command {
    let mut cmd = Command::new(BIN);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("STEWARD_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// A running `steward serve`, killed when dropped.
pub struct Server {
    pub child: Child,
    pub url: String,
    /// What `serve` printed on stdout up to and including the "listening on" line.
    pub banner: Vec<String>,
    pub stderr: Arc<Mutex<String>>,
}

impl Server {
    /// Starts `steward serve --data-dir DIR --listen 127.0.0.1:0` with the bootstrap token.
    pub fn start(data_dir: &Path) -> Self {
        Self::start_with(data_dir, Some(TOKEN))
    }

    /// The data directory is given relative to the server's working directory (its parent),
    /// as an operator typically does.
    pub fn start_with(data_dir: &Path, bootstrap_token: Option<&str>) -> Self {
        Self::start_full(data_dir, bootstrap_token, &[])
    }

    /// [`Server::start`] with extra STEWARD_* settings, e.g.
    /// `("STEWARD_JOB_STAGE_PAUSE_MS", "3000")`.
    pub fn start_env(data_dir: &Path, env: &[(&str, &str)]) -> Self {
        Self::start_full(data_dir, Some(TOKEN), env)
    }

    fn start_full(data_dir: &Path, bootstrap_token: Option<&str>, env: &[(&str, &str)]) -> Self {
        let mut cmd = steward_command();
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir.file_name().unwrap())
            .current_dir(data_dir.parent().unwrap())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(t) = bootstrap_token {
            cmd.env("STEWARD_BOOTSTRAP_TOKEN", t);
        }
        // Daily system backups start at 23:59 UTC, so they do not run in the middle of a
        // test (a test that wants one sets an earlier time).
        cmd.env("STEWARD_SYSTEM_BACKUP_TIME", "23:59")
            .env("STEWARD_SYSTEM_BACKUP_SPREAD_MINUTES", "0");
        // Continuous capture writes to the repository on its own; the tests of capture turn
        // it on (`STEWARD_CONTINUOUS_CAPTURE=true`), the others count what backups wrote.
        cmd.env("STEWARD_CONTINUOUS_CAPTURE", "false");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start steward serve");
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let (tx, rx) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut banner = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        let url = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    let url = line
                        .strip_prefix("Steward admin center listening on ")
                        .map(str::to_owned);
                    banner.push(line);
                    if let Some(url) = url {
                        break url;
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "steward serve printed no \"listening on\" line; stdout: {banner:?}\nstderr: {}",
                        stderr.lock().unwrap()
                    );
                }
            }
        };
        assert!(url.starts_with("http://127.0.0.1:"), "{url}");
        Self {
            child,
            url,
            banner,
            stderr,
        }
    }

    /// Runs a client command as the bootstrap administrator.
    pub fn run(&self, args: &[&str]) -> Out {
        self.run_as(Some(TOKEN), args, "")
    }

    /// Runs a client command with `token` (or none) and `stdin`.
    pub fn run_as(&self, token: Option<&str>, args: &[&str], stdin: &str) -> Out {
        let mut cmd = steward_command();
        cmd.env("STEWARD_URL", &self.url);
        if let Some(t) = token {
            cmd.env("STEWARD_TOKEN", t);
        }
        run(cmd.args(args), stdin)
    }

    /// Sends SIGTERM and waits (at most 20 s) for the server to exit.
    pub fn terminate(mut self) -> ExitStatus {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(ok.success());
        wait_for(&mut self.child, Duration::from_secs(20)).unwrap_or_else(|| {
            panic!(
                "steward serve did not exit after SIGTERM; stderr: {}",
                self.stderr.lock().unwrap()
            )
        })
    }
}

impl Server {
    /// Kills the server with SIGKILL, as a crash or `kill -KILL` would: no handler runs.
    pub fn kill(mut self) {
        let ok = Command::new("kill")
            .args(["-KILL", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(ok.success());
        let status = self.child.wait().expect("wait for the killed server");
        assert!(!status.success(), "{status:?}");
    }

    /// What the server logged on stderr so far.
    pub fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits for `child` to exit, at most `timeout`; kills it and returns `None` after that.
pub fn wait_for(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The result of one finished command.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(self.code, 0, "command failed: {self:#?}");
        self
    }

    #[track_caller]
    pub fn fails(self, code: i32, message: &str) -> Self {
        assert_eq!(self.code, code, "wrong exit code: {self:#?}");
        assert!(self.stderr.starts_with("error: "), "{self:#?}");
        assert!(
            self.stderr.contains(message),
            "stderr should contain {message:?}: {self:#?}"
        );
        self
    }

    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {self:#?}"))
    }
}

pub fn run(cmd: &mut Command, stdin: &str) -> Out {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run steward");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().expect("wait for steward");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

pub fn data_dir(tmp: &tempfile::TempDir) -> PathBuf {
    tmp.path().join("data")
}

/// A user with the Viewer role and an API token of theirs.
pub fn viewer_token(s: &Server) -> String {
    s.run_as(
        Some(TOKEN),
        &[
            "user",
            "create",
            "vera",
            "--role",
            "viewer",
            "--password-stdin",
        ],
        "correct horse battery\n",
    )
    .ok();
    let login = s
        .run_as(
            None,
            &["token", "login", "vera", "--json"],
            "correct horse battery\n",
        )
        .ok()
        .json();
    login["secret"].as_str().unwrap().to_owned()
}

/// Polls `what` (with a short pause) until `done` holds for it; fails after `timeout` with
/// the last value and the server's log.
#[track_caller]
pub fn poll(
    s: &Server,
    timeout: Duration,
    mut what: impl FnMut() -> Value,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let v = what();
        if done(&v) {
            return v;
        }
        if Instant::now() > deadline {
            panic!(
                "gave up waiting after {timeout:?}; last answer: {v:#}\nserver log:\n{}",
                s.log()
            );
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// `steward instance show NAME --json`.
pub fn instance(s: &Server, name: &str) -> Value {
    s.run(&["instance", "show", name, "--json"]).ok().json()
}

/// `steward job show ID --json`.
pub fn job(s: &Server, id: i64) -> Value {
    s.run(&["job", "show", &id.to_string(), "--json"])
        .ok()
        .json()
}

/// A connection to an instance's database file, as an application would open it.
pub fn open(db: &Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn
}

/// Everything in a database, to compare before and after: the integrity check (must be ok),
/// then every table's definition and rows in a stable order.
pub fn dump(db: &Path) -> Vec<String> {
    let conn = open(db);
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok", "{}", db.display());
    let tables: Vec<(String, String)> = conn
        .prepare("SELECT name, sql FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut out = Vec::new();
    for (name, sql) in tables {
        out.push(sql);
        let mut stmt = conn
            .prepare(&format!("SELECT * FROM \"{name}\" ORDER BY rowid"))
            .or_else(|_| conn.prepare(&format!("SELECT * FROM \"{name}\"")))
            .unwrap();
        let cols = stmt.column_count();
        let rows: Vec<String> = stmt
            .query_map([], |r| {
                Ok((0..cols)
                    .map(|i| format!("{:?}", r.get_ref(i).unwrap()))
                    .collect::<Vec<_>>()
                    .join("|"))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        out.extend(rows.into_iter().map(|r| format!("{name}: {r}")));
    }
    out
}

/// Files beside an instance's database whose name contains `suffix` (`.restoring`,
/// `.updating`, `.refreshing`): the staging copy of a running job and its `-wal`/`-shm`.
pub fn staged_files(db: &Path, suffix: &str) -> Vec<PathBuf> {
    std::fs::read_dir(db.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains(suffix))
        .collect()
}
