//! `steward serve`: load the configuration, prepare the data directory, show the first
//! administrator's credentials once, listen, and serve until Ctrl-C or SIGTERM.

use std::io::Write;

use anyhow::Context;
use steward_server::{Bootstrap, Config};

use crate::cli::ServeArgs;

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let shutdown = shutdown_signal()?;
    raise_open_files_limit();
    let mut config = Config::load(args.config.as_deref())?;
    if let Some(d) = args.data_dir {
        config.data_dir = d;
    }
    if let Some(l) = args.listen {
        config.listen = l;
    }
    if let Some(c) = args.catalog_dir {
        config.catalog_dir = Some(c);
    }
    if let Some(f) = args.bootstrap_token_file {
        config.bootstrap_token = None;
        config.bootstrap_token_file = Some(f);
    }
    // Instance paths are stored and shown to applications: make them absolute, so they do
    // not depend on the directory `steward serve` was started from.
    config.data_dir = std::path::absolute(&config.data_dir).with_context(|| {
        format!(
            "cannot use the data directory {}",
            config.data_dir.display()
        )
    })?;
    let listen = config.listen;
    let data_dir = config.data_dir.clone();

    // Bind before preparing, so a taken port changes nothing on disk (not even a first
    // start's credentials, which would otherwise be printed and lost).
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| {
            format!("cannot listen on {listen} (set --listen or STEWARD_LISTEN to a free address)")
        })?;
    let addr = listener.local_addr()?;

    let (state, bootstrap) = tokio::task::spawn_blocking(move || steward_server::prepare(config))
        .await
        .context("starting the admin center panicked")??;
    tracing::info!(data_dir = %data_dir.display(), "data directory ready");

    let mut stdout = std::io::stdout().lock();
    if let Some(b) = &bootstrap {
        write!(stdout, "{}", bootstrap_block(b, &addr.to_string()))?;
    }
    writeln!(stdout, "Steward admin center listening on http://{addr}")?;
    stdout.flush()?;
    drop(stdout);

    steward_server::serve(listener, state, shutdown)
        .await
        .context("the admin center stopped with an error")?;
    tracing::info!("stopped");
    Ok(())
}

/// The first start's credentials, printed once: Steward keeps only their hashes.
fn bootstrap_block(b: &Bootstrap, addr: &str) -> String {
    let rule = "=".repeat(78);
    format!(
        "{rule}\n\
         Steward first start: created the System Administrator account.\n\
         These credentials are shown ONLY NOW; Steward keeps only their hashes.\n\
         \n\
         \x20 Username:            {user}\n\
         \x20 One-time password:   {password}\n\
         \x20 API token:           {token}\n\
         \n\
         Sign in to the admin center at http://{addr} with the username and password,\n\
         then change the password (or run `steward user password`).\n\
         Use the API token with the steward CLI or any HTTP client:\n\
         \n\
         \x20 export STEWARD_URL=http://{addr}\n\
         \x20 export STEWARD_TOKEN={token}\n\
         \x20 steward instance list\n\
         {rule}\n",
        user = b.username,
        password = b.password,
        token = b.token,
    )
}

/// Listens for Ctrl-C (SIGINT) and SIGTERM from now on: the handlers are installed before
/// this returns, so a signal that arrives while Steward is still starting is not lost (and
/// does not kill the process mid-migration); the returned future resolves on the first one.
#[cfg(unix)]
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt()).context("cannot listen for Ctrl-C")?;
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
    })
}

#[cfg(not(unix))]
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()> + Send + 'static> {
    Ok(async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
        tracing::info!("shutting down");
    })
}

/// Continuous capture keeps a few files open per instance (the database, its WAL and shared
/// memory, three connections): raise the soft limit on open files to the hard limit, so a
/// fleet of a thousand instances fits in the usual 1024 → 524288 (or similar) allowance.
fn raise_open_files_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain system calls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            let wanted = lim.rlim_max;
            lim.rlim_cur = wanted;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                tracing::warn!("could not raise the open files limit");
            }
        }
    }
}
