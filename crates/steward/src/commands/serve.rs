//! `steward serve`: load the configuration, prepare the data directory, show the first
//! administrator's credentials once, listen, and serve until Ctrl-C or SIGTERM.

use std::io::Write;

use anyhow::Context;
use steward_server::{Bootstrap, Config};

use crate::cli::ServeArgs;

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
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

    steward_server::serve(listener, state, shutdown_signal())
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

/// Resolves on Ctrl-C or SIGTERM; in-flight requests then finish.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutting down");
}
