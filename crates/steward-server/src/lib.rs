//! The Steward admin center: services that apply the product's rules (`services`), the REST
//! API (`api`) and the server-rendered web admin center (`web`), wired over the control-plane
//! store, the release catalog and the engines.
//!
//! Invariants: only `api` and `web` know HTTP; every permission decision is
//! `steward_core::policy::authorize`; every change is audited in its own transaction.

pub mod api;
mod backup_repo;
pub mod config;
pub mod error;
pub mod services;
#[doc(hidden)]
pub mod testing;
pub mod web;

use std::future::Future;
use std::sync::Arc;

use steward_core::release::Catalog;
use steward_core::{Clock, SystemClock};
use steward_store::Store;
use tokio::net::TcpListener;

pub use backup_repo::RepoHandle;
pub use config::Config;
pub use error::{ErrorKind, ServiceError};
pub use services::{Actor, Bootstrap, Services};

/// Why the admin center could not start. Each message says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Store(#[from] steward_store::StoreError),
    #[error("the release catalog could not be loaded: {0}")]
    Catalog(String),
    #[error("cannot use the data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("start failed: {0}")]
    Bootstrap(ServiceError),
    #[error("the backup repository cannot be used: {0}")]
    Backups(String),
    /// This node could not register (e.g. another running node has its name).
    #[error(transparent)]
    Node(#[from] services::nodes::RegisterError),
}

/// What every request handler shares.
pub struct AppState {
    pub services: Services,
    pub config: Config,
    /// The work behind each kind of job.
    pub jobs: services::JobHandlers,
}

pub type SharedState = Arc<AppState>;

impl AppState {
    /// Runs a (blocking) service call off the async workers.
    pub async fn run<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Services) -> Result<T, ServiceError> + Send + 'static,
    ) -> Result<T, ServiceError> {
        let state = Arc::clone(self);
        tokio::task::spawn_blocking(move || f(&state.services))
            .await
            .unwrap_or_else(|e| {
                Err(ServiceError::internal(format!(
                    "the operation panicked: {e}"
                )))
            })
    }
}

/// Backup settings from the configuration, checked.
fn backup_settings(c: &Config) -> Result<services::BackupSettings, StartError> {
    let bad = |m: String| StartError::Config(config::ConfigError::new(m));
    for days in [c.system_backup_retention_days, c.on_demand_retention_days] {
        steward_core::backup::check_retention_days(days).map_err(bad)?;
    }
    let system_time = match c.system_backup_time.trim() {
        "off" => None,
        t => Some(chrono::NaiveTime::parse_from_str(t, "%H:%M").map_err(|_| {
            bad(format!(
                "system_backup_time must be HH:MM in UTC, e.g. 02:00, or \"off\" (got {:?})",
                c.system_backup_time
            ))
        })?),
    };
    let minimum_release = c.minimum_backup_release.parse().map_err(|e| {
        bad(format!(
            "minimum_backup_release {:?} is not a release: {e}",
            c.minimum_backup_release
        ))
    })?;
    Ok(services::BackupSettings {
        system_time,
        spread_minutes: c.system_backup_spread_minutes,
        system_retention: chrono::Duration::days(c.system_backup_retention_days.into()),
        on_demand_retention: chrono::Duration::days(c.on_demand_retention_days.into()),
        minimum_release,
        prune_grace: std::time::Duration::from_secs(c.prune_grace_seconds),
    })
}

/// Notification settings from the configuration, checked.
fn notify_settings(c: &Config) -> Result<services::NotifySettings, StartError> {
    use services::notify::{SmtpSecurity, SmtpSettings, check_webhook_url};
    let bad = |m: String| StartError::Config(config::ConfigError::new(m));
    check_webhook_url(&c.public_url).map_err(|_| {
        bad(format!(
            "public_url must be an http(s) URL (got {:?})",
            c.public_url
        ))
    })?;
    let security: SmtpSecurity = c.smtp_security.parse().map_err(bad)?;
    c.smtp_from
        .parse::<lettre::message::Mailbox>()
        .map_err(|e| {
            bad(format!(
                "smtp_from {:?} is not an address: {e}",
                c.smtp_from
            ))
        })?;
    if c.smtp_username.is_some() != c.smtp_password.is_some() {
        return Err(bad("smtp_username and smtp_password go together".into()));
    }
    if c.notify_max_attempts == 0 || c.notify_retry_seconds == 0 {
        return Err(bad(
            "notify_max_attempts and notify_retry_seconds must be at least 1".into(),
        ));
    }
    let smtp = c
        .smtp_host
        .as_ref()
        .filter(|h| !h.trim().is_empty())
        .map(|host| SmtpSettings {
            host: host.trim().to_owned(),
            port: c.smtp_port.unwrap_or(match security {
                SmtpSecurity::None => 25,
                SmtpSecurity::StartTls => 587,
                SmtpSecurity::Tls => 465,
            }),
            security,
            username: c.smtp_username.clone(),
            password: c.smtp_password.clone(),
            from: c.smtp_from.clone(),
        });
    Ok(services::NotifySettings {
        public_url: c.public_url.trim_end_matches('/').to_owned(),
        smtp,
        max_attempts: c.notify_max_attempts.into(),
        retry_base: chrono::Duration::seconds(c.notify_retry_seconds.min(86_400) as i64),
    })
}

/// Opens the data directory, migrates the store, loads the catalog and, on first start,
/// creates the first System Administrator (returned so the caller can show it once).
pub fn prepare(config: Config) -> Result<(SharedState, Option<Bootstrap>), StartError> {
    prepare_with_clock(config, Arc::new(SystemClock))
}

/// [`prepare`] with an injected clock (tests move time with it).
pub fn prepare_with_clock(
    mut config: Config,
    clock: Arc<dyn Clock>,
) -> Result<(SharedState, Option<Bootstrap>), StartError> {
    // Stored paths (the database applications open) must not depend on the working directory.
    config.data_dir =
        std::path::absolute(&config.data_dir).map_err(|source| StartError::DataDir {
            path: config.data_dir.display().to_string(),
            source,
        })?;
    // Where backups go, checked before anything is written: a bad `backup_url` changes nothing.
    let backup_target = config.backup_target()?;
    let data_dir = &config.data_dir;
    std::fs::create_dir_all(data_dir).map_err(|source| StartError::DataDir {
        path: data_dir.display().to_string(),
        source,
    })?;
    let catalog = match &config.catalog_dir {
        Some(dir) => Catalog::load_dir(dir).map_err(|e| StartError::Catalog(e.to_string()))?,
        None => Catalog::builtin(),
    };
    // This node's name and address, checked before the store is touched.
    let node = services::nodes::settings(&config)?;
    let store = Store::connect(config.database_url.as_deref(), &data_dir.join("steward.db"))?;
    let settings = backup_settings(&config)?;
    let notify = notify_settings(&config)?;
    let key = match &config.backup_key_file {
        Some(f) => {
            Some(steward_repo::Key::from_file(f).map_err(|e| StartError::Backups(e.to_string()))?)
        }
        None => None,
    };
    // A local directory or S3 (`backup_url`), opened now if it answers, else at first use.
    let repo = backup_repo::RepoHandle::start(backup_target, key, node.name.as_str())?;
    let mut services = Services::new(
        store,
        catalog,
        clock,
        data_dir,
        config.session_hours,
        repo,
        settings,
    );
    services.stage_pause = std::time::Duration::from_millis(config.job_stage_pause_ms);
    services.login = services::login_limits(&config)?;
    services.notify = notify;
    services.updates = services::updates::settings(&config)?;
    services.workitems = services::workitems::settings(&config)?;
    services.drills.settings = services::drills::settings(&config)?;
    services.capture.settings = services::capture::settings(&config)?;
    // Register this node before anything else is written: a running node with the same name
    // stops this start with nothing changed.
    services.node = services::nodes::Node::new(node);
    services.register_node()?;
    let token = config.bootstrap_token()?;
    let bootstrap = services.bootstrap(token).map_err(StartError::Bootstrap)?;
    let mut jobs = services::JobHandlers::default();
    services::backups::register(&mut jobs);
    services::updates::register(&mut jobs);
    services::workitems::register(&mut jobs);
    services::verify::register(&mut jobs);
    services::capture::register(&mut jobs);
    let recovered = services
        .recover_jobs(&jobs)
        .map_err(StartError::Bootstrap)?;
    if recovered > 0 {
        tracing::warn!(recovered, "recovered jobs interrupted by the last stop");
    }
    services.recover_drills().map_err(StartError::Bootstrap)?;
    Ok((
        Arc::new(AppState {
            services,
            config,
            jobs,
        }),
        bootstrap,
    ))
}

/// The whole HTTP surface: `/healthz`, `/api/v1/...` and the admin center.
pub fn router(state: SharedState) -> axum::Router {
    axum::Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .merge(api::router(state.clone()))
        .merge(web::router(state))
}

/// Serves until `shutdown` resolves, then finishes in-flight requests. The job runner works
/// beside the HTTP server.
pub async fn serve(
    listener: TcpListener,
    state: SharedState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let runner = tokio::spawn(run_jobs(state.clone()));
    let scheduler = state
        .config
        .scheduler
        .then(|| tokio::spawn(run_schedule(state.clone())));
    let notifier = tokio::spawn(services::notify::deliver::run(state.clone()));
    // Restore drills have their own worker, never the user job queue.
    let driller = tokio::spawn(run_drills(state.clone()));
    let heartbeat = tokio::spawn(run_heartbeat(state.clone()));
    // Continuous capture has its own thread: it holds each instance's database open.
    let capturer = state.services.capture.settings.enabled.then(|| {
        let st = state.clone();
        std::thread::Builder::new()
            .name("capture".into())
            .spawn(move || services::capture::CaptureWorker::run(&st.services))
            .expect("spawn the capture thread")
    });
    // With each connection's peer address, for the per-address sign-in limit.
    let kept = state.clone();
    let app = router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    runner.abort();
    if let Some(s) = scheduler {
        s.abort();
    }
    notifier.abort();
    driller.abort();
    heartbeat.abort();
    if let Some(c) = capturer {
        // Ends the chains it extends ("Steward was stopped"), so the range says so.
        kept.services
            .capture
            .stop
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = tokio::task::spawn_blocking(move || c.join()).await;
    }
    // A clean stop: the fleet sees this node as stopped rather than down.
    let st = kept.clone();
    match tokio::task::spawn_blocking(move || st.services.stop_node()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "could not mark this node stopped"),
        Err(e) => tracing::error!(error = %e, "marking this node stopped panicked"),
    }
    served
}

/// Records this node's heartbeat every `node_heartbeat_seconds`, off the async workers (the
/// PostgreSQL client blocks).
async fn run_heartbeat(state: SharedState) {
    let mut tick = tokio::time::interval(state.services.node.settings.heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let st = state.clone();
        match tokio::task::spawn_blocking(move || st.services.node_heartbeat()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "could not record this node's heartbeat"),
            Err(e) => tracing::error!(error = %e, "the heartbeat panicked"),
        }
    }
}

/// Runs queued restore drills one at a time, beside (never in) the job queue: waking when one
/// is queued, or every few seconds to retry one that gave way to a user's restore.
async fn run_drills(state: SharedState) {
    loop {
        loop {
            let st = state.clone();
            match tokio::task::spawn_blocking(move || st.services.run_next_drill()).await {
                Ok(Ok(true)) => continue,
                Ok(Ok(false)) => break,
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "the drill worker could not reach the store");
                    break;
                }
                Err(e) => {
                    tracing::error!(error = %e, "the drill worker panicked");
                    break;
                }
            }
        }
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            state.services.drills.wakeup.notified(),
        )
        .await;
    }
}

/// Runs queued jobs one at a time, waking when one is queued or every few seconds.
async fn run_jobs(state: SharedState) {
    loop {
        loop {
            let st = state.clone();
            match tokio::task::spawn_blocking(move || st.services.run_next_job(&st.jobs)).await {
                Ok(Ok(true)) => continue,
                Ok(Ok(false)) => break,
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "the job runner could not reach the store");
                    break;
                }
                Err(e) => {
                    tracing::error!(error = %e, "the job runner panicked");
                    break;
                }
            }
        }
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            state.services.job_wakeup.notified(),
        )
        .await;
    }
}

/// Once a minute: queue due system backups, start due updates and work items, send due
/// reminders; once an hour: expire old backups and prune. Each part runs even if another
/// failed.
async fn run_schedule(state: SharedState) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
    loop {
        tick.tick().await;
        let st = state.clone();
        let r = tokio::task::spawn_blocking(move || {
            let s = &st.services;
            // Each node records what its own instances' files use, for every node to show.
            if let Err(e) = s.record_storage(None) {
                tracing::warn!(error = %e, "recording the instances' storage failed");
            }
            // Fleet-wide work runs once per minute (and maintenance once per hour) across
            // all the nodes sharing the control plane: the node that claims the tick first.
            let (minute, hour) = match s.claim_scheduled_work() {
                Ok(claimed) => claimed,
                Err(e) => {
                    tracing::error!(error = %e, "claiming this minute's scheduled work failed");
                    return;
                }
            };
            if !minute {
                tracing::debug!("another node runs this minute's scheduled work");
                return;
            }
            let parts: [(&str, Result<(), ServiceError>); 4] = [
                ("system backups", s.schedule_system_backups().map(drop)),
                ("updates", s.tick_updates()),
                ("work items", s.tick_workitems()),
                (
                    "backup maintenance",
                    if hour {
                        s.expire_and_prune().map(drop)
                    } else {
                        Ok(())
                    },
                ),
            ];
            for (what, r) in parts {
                if let Err(e) = r {
                    tracing::error!(error = %e, "scheduled {what} work failed");
                }
            }
            // Queue due restore drills; the drill worker runs them.
            if let Err(e) = s.schedule_drills() {
                tracing::error!(error = %e, "scheduling restore drills failed");
            }
        })
        .await;
        if let Err(e) = r {
            tracing::error!(error = %e, "scheduled work panicked");
        }
    }
}
