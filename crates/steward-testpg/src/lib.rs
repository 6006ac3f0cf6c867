//! A real PostgreSQL server for tests: `initdb` into a temporary directory and `postgres` on
//! a free loopback port, with trust authentication for the user `steward`. The binaries come
//! from `STEWARD_PG_BIN`, `pg_config --bindir`, the `PATH`, or `/usr/lib/postgresql/*/bin`.
//!
//! The server runs under a small shell that holds a pipe from this process: when the test
//! process ends (however it ends), the pipe closes and the shell stops PostgreSQL and deletes
//! its directory, so no server (and no data) outlives its tests. As root (CI), the server runs as the `postgres` user, because
//! PostgreSQL refuses to run as root.

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// One running PostgreSQL server; stopped when dropped.
pub struct PgServer {
    pub port: u16,
    bin: PathBuf,
    data: PathBuf,
    _dir: tempfile::TempDir,
    guard: Option<Child>,
    next_db: AtomicU32,
}

/// The PostgreSQL server this test process shares (started on first use).
pub fn shared() -> &'static PgServer {
    static SERVER: OnceLock<PgServer> = OnceLock::new();
    SERVER.get_or_init(|| PgServer::start().expect("start a test PostgreSQL server"))
}

/// A fresh, empty database on the shared server; its URL.
pub fn fresh_database() -> String {
    shared().create_database()
}

fn find_bin() -> Result<PathBuf, String> {
    if let Ok(dir) = std::env::var("STEWARD_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").exists() {
            return Ok(dir);
        }
    }
    if let Ok(path) = std::env::var("PATH") {
        for d in std::env::split_paths(&path) {
            if d.join("initdb").exists() && d.join("postgres").exists() {
                return Ok(d);
            }
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| rd.flatten().map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    found.sort();
    found
        .pop()
        .filter(|d| d.join("initdb").exists())
        .ok_or_else(|| {
            "PostgreSQL's initdb was not found (install postgresql, or set STEWARD_PG_BIN)".into()
        })
}

fn is_root() -> bool {
    // SAFETY-free check: the effective uid as the `id` program reports it.
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// `program args…`, as the `postgres` user when this process is root.
fn command(program: &Path, args: &[&str]) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program).args(args);
        c
    } else {
        let mut c = Command::new(program);
        c.args(args);
        c
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl PgServer {
    /// Creates a cluster and starts it.
    pub fn start() -> Result<Self, String> {
        let bin = find_bin()?;
        let dir = tempfile::Builder::new()
            .prefix("steward-pg-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let data = dir.path().join("data");
        if is_root() {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if !ok {
                return Err("chown of the test cluster's directory to postgres failed".into());
            }
        }
        let out = command(
            &bin.join("initdb"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "steward",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        )
        .output()
        .map_err(|e| format!("initdb: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let mut server = Self {
            port: 0,
            bin,
            data,
            _dir: dir,
            guard: None,
            next_db: AtomicU32::new(0),
        };
        server.run()?;
        Ok(server)
    }

    /// Starts the server (again) on a new free port... or the same one after [`Self::stop`].
    fn run(&mut self) -> Result<(), String> {
        if self.port == 0 {
            self.port = free_port();
        }
        let postgres = self.bin.join("postgres");
        let script = format!(
            "{pg} -D {data} -p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off \
             -c synchronous_commit=off -c full_page_writes=off -c max_connections=300 \
             -c shared_buffers=32MB >{data}/../server.log 2>&1 & pid=$!; \
             read cmd; kill -INT $pid; wait $pid; [ \"$cmd\" = keep ] || rm -rf {root}",
            pg = postgres.display(),
            data = self.data.display(),
            port = self.port,
            sock = self.data.display(),
            root = self
                .data
                .parent()
                .expect("the cluster's directory")
                .display(),
        );
        let mut c = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", "sh", "-c", &script]);
            c
        } else {
            let mut c = Command::new("sh");
            c.args(["-c", &script]);
            c
        };
        let child = c
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("start postgres: {e}"))?;
        self.guard = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if postgres::Client::connect(&self.url("postgres"), postgres::NoTls).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                let log =
                    std::fs::read_to_string(self.data.join("../server.log")).unwrap_or_default();
                return Err(format!(
                    "postgres did not accept connections in 30 s: {log}"
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The URL of database `db` on this server.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://steward@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates a new empty database; its URL.
    pub fn create_database(&self) -> String {
        let n = self.next_db.fetch_add(1, Ordering::SeqCst);
        let name = format!("steward_test_{}_{n}", std::process::id());
        let mut c = postgres::Client::connect(&self.url("postgres"), postgres::NoTls)
            .expect("connect to the test server");
        c.batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("create a test database");
        self.url(&name)
    }

    /// Stops the server (fast shutdown: sessions are ended); [`Self::restart`] starts it on
    /// the same port with the same data.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.guard.take() {
            if let Some(mut stdin) = child.stdin.take() {
                let _ = stdin.write_all(b"keep\n");
            }
            let _ = child.wait();
        }
    }

    /// Starts a stopped server again.
    pub fn restart(&mut self) -> Result<(), String> {
        self.run()
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
    }
}
