//! A real admin center on 127.0.0.1 port 0 with its own data directory, for integration
//! tests of this crate and others. Not for production use.

use std::path::PathBuf;
use std::sync::Arc;

use steward_core::Clock;
use tokio::sync::oneshot;

use crate::{Config, SharedState};

/// A running server; stopped (gracefully) when dropped.
pub struct TestServer {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    /// The first System Administrator's API token.
    pub token: String,
    /// The first System Administrator's password (`admin`).
    pub admin_password: String,
    pub state: SharedState,
    pub data_dir: PathBuf,
    _dir: Option<tempfile::TempDir>,
    stop: Option<oneshot::Sender<()>>,
}

impl TestServer {
    /// Starts a server in a fresh temporary data directory, without the minute scheduler.
    pub async fn start() -> Self {
        Self::start_with(|_| {}, None).await
    }

    /// Starts a server after `tweak` adjusts its configuration, optionally with a clock.
    pub async fn start_with(
        tweak: impl FnOnce(&mut Config),
        clock: Option<Arc<dyn Clock>>,
    ) -> Self {
        Self::start_inner(tweak, clock, false).await
    }

    /// Starts a server that registers the address it is really reached at as its node's
    /// address (other nodes pass requests and forms on to it there), after `tweak`.
    pub async fn start_node(tweak: impl FnOnce(&mut Config)) -> Self {
        Self::start_inner(tweak, None, true).await
    }

    async fn start_inner(
        tweak: impl FnOnce(&mut Config),
        clock: Option<Arc<dyn Clock>>,
        reachable: bool,
    ) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        // Tests drive scheduled work themselves (`tick_updates`, `schedule_system_backups`,
        // ...) on their clock; a background tick would race them.
        let mut config = Config {
            data_dir: dir.path().join("data"),
            scheduler: false,
            // Tests of continuous capture turn it on; the others keep their instances' files
            // to themselves.
            continuous_capture: false,
            ..Config::default()
        };
        // `STEWARD_TEST_STORE=postgres` runs the same tests on a PostgreSQL control plane: a
        // fresh database on a real server this test process starts (`steward-testpg`).
        if std::env::var("STEWARD_TEST_STORE").as_deref() == Ok("postgres") {
            config.database_url = Some(
                tokio::task::spawn_blocking(steward_testpg::fresh_database)
                    .await
                    .expect("a test PostgreSQL database"),
            );
        }
        // Bound first, so the node registers the address it is really reached at (another
        // node passes forms and requests on to it there).
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        if reachable {
            config.node_address = Some(url.clone());
        }
        tweak(&mut config);
        let data_dir = config.data_dir.clone();
        // The backup repository drives its own small runtime: prepare off the async workers,
        // as `steward serve` does.
        let (state, boot) = tokio::task::spawn_blocking(move || match clock {
            Some(c) => crate::prepare_with_clock(config, c),
            None => crate::prepare(config),
        })
        .await
        .expect("prepare panicked")
        .expect("prepare");
        // A fresh control plane bootstraps an administrator; a second node joining one that
        // has users gets no credentials of its own (empty here).
        let (token, admin_password) = boot.map(|b| (b.token, b.password)).unwrap_or_default();
        let (stop, stopped) = oneshot::channel::<()>();
        let st = state.clone();
        tokio::spawn(async move {
            let _ = crate::serve(listener, st, async {
                let _ = stopped.await;
            })
            .await;
        });
        Self {
            url,
            token,
            admin_password,
            state,
            data_dir,
            _dir: Some(dir),
            stop: Some(stop),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
