//! `portcullis serve`: load the configuration, build the app, listen, run until SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use arc_swap::ArcSwap;
use portcullis_config::{Config, LoadError, Sources};
use portcullis_identity::http::{OutboundSettings, ProxyEnv};
use portcullis_proxy::{App, Certificates, Live, ServerSettings};
use std::net::TcpListener;

use crate::cli::ServeArgs;
use crate::logging;
use crate::reload::{LoadAgain, Reloader};

/// Loads the configuration, printing problems the way an operator needs them.
pub(crate) fn load_config(
    file: Option<PathBuf>,
    env: Vec<(String, String)>,
    defaults: Vec<(&'static str, String)>,
    flags: Vec<(&'static str, &'static str, String)>,
) -> Result<Config, ExitCode> {
    let sources = Sources {
        file,
        env,
        defaults,
        flags,
    };
    portcullis_config::load(&sources).map_err(|e| {
        match e {
            LoadError::File(e) => eprintln!("portcullis: {e}"),
            LoadError::Invalid(errors) => eprint!("portcullis: {errors}"),
        }
        ExitCode::from(2)
    })
}

pub(crate) fn env_vars() -> Vec<(String, String)> {
    std::env::vars().collect()
}

pub(crate) fn outbound_client(
    config: &Config,
) -> anyhow::Result<portcullis_identity::http::HttpClient> {
    let vars = env_vars();
    let settings = OutboundSettings {
        proxies: ProxyEnv::from_vars(vars.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
        ca_file: config.outbound_ca_file.clone(),
        ..OutboundSettings::default()
    };
    portcullis_identity::http::client(&settings).context("cannot build the outbound HTTP client")
}

pub(crate) async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let mut flags = Vec::new();
    if let Some(listen) = args.listen {
        flags.push(("listen_addr", "--listen", listen));
    }
    if let Some(upstream) = args.upstream {
        flags.push(("upstream_url", "--upstream", upstream));
    }
    let file = args.config;
    let config = match load_config(file.clone(), env_vars(), Vec::new(), flags.clone()) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    logging::init(&config.log)?;
    let listener = bind(&config)?;
    // A reload reads the same sources again (files anew; the environment is the
    // process's).
    let sources = Sources {
        file: file.clone(),
        env: env_vars(),
        defaults: Vec::new(),
        flags,
    };
    let load: LoadAgain = Box::new(move || portcullis_config::load(&sources));
    run_with(config, listener, Some((load, file))).await
}

pub(crate) fn bind(config: &Config) -> anyhow::Result<TcpListener> {
    TcpListener::bind(config.listen_addr).with_context(|| {
        format!(
            "cannot listen on {} (listen_addr / LISTEN_ADDR): is another process using the port?",
            config.listen_addr
        )
    })
}

/// Runs the proxy on `listener` until a shutdown signal; with `reload` (how to read the
/// configuration again, and its file), reloads it on SIGHUP and file changes.
pub(crate) async fn run_with(
    config: Config,
    listener: TcpListener,
    reload: Option<(LoadAgain, Option<PathBuf>)>,
) -> anyhow::Result<ExitCode> {
    // Traces, when the OTEL_* environment asks for them; flushed when this returns.
    let _tracing = crate::telemetry::start()?;
    let workers = match config.server.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let app = App::new(&config, outbound_client(&config)?, workers)
        .await
        .context("cannot start")?;
    let certificates = match &config.tls {
        Some(t) => Some(Certificates::load(&t.cert_file, &t.key_file)?),
        None => None,
    };
    let tls = match &certificates {
        Some(c) => Some(c.server_config()?),
        None => None,
    };
    if !app.auth_enabled() {
        tracing::warn!(
            "OPEN MODE: authentication is off, every request is forwarded without a login. Set OAUTH_ENABLED=true (or enable a provider) to protect the app"
        );
    }
    let addr = listener.local_addr()?;
    tracing::info!(
        addr = %addr,
        tls = tls.is_some(),
        workers,
        upstream = %config.upstream_url.as_ref().map(|u| u.as_str()).unwrap_or("none (forward-auth only)"),
        "listening on {}", addr
    );
    app.start_background();
    let settings = ServerSettings {
        header_read_timeout: config.server.header_read_timeout,
        max_header_bytes: config.server.max_header_bytes,
        shutdown_grace: config.server.shutdown_grace,
        workers,
        max_connections: config.server.max_connections,
        idle_timeout: config.server.idle_timeout,
    };
    let app = Arc::new(app);
    App::start_polling(&app);
    let live: Live = Arc::new(ArcSwap::new(app));
    if let Some(admin) = &config.admin {
        let listener = TcpListener::bind(admin.listen_addr).with_context(|| {
            format!(
                "cannot listen on {} (admin.listen_addr / ADMIN__LISTEN_ADDR): is another process using the port?",
                admin.listen_addr
            )
        })?;
        tracing::info!(addr = %admin.listen_addr, "admin listener on {}", admin.listen_addr);
        let (live, timeout) = (live.clone(), config.server.header_read_timeout);
        tokio::spawn(async move {
            if let Err(e) = portcullis_proxy::serve_admin(live, listener, timeout).await {
                tracing::error!(error = %e, "the admin listener stopped");
            }
        });
    }
    if let Some(ext) = &config.ext_authz {
        let listener = TcpListener::bind(ext.listen_addr).with_context(|| {
            format!(
                "cannot listen on {} (ext_authz.listen_addr / EXT_AUTHZ__LISTEN_ADDR): is another process using the port?",
                ext.listen_addr
            )
        })?;
        let tls = match (&certificates, ext.tls) {
            (Some(c), true) => Some(c.server_config()?),
            _ => None,
        };
        tracing::info!(addr = %ext.listen_addr, tls = ext.tls, "Envoy gRPC check (ext_authz) on {}", ext.listen_addr);
        let (live, timeout) = (live.clone(), config.server.header_read_timeout);
        tokio::spawn(async move {
            if let Err(e) = portcullis_proxy::serve_ext_authz(live, listener, tls, timeout).await {
                tracing::error!(error = %e, "the ext_authz listener stopped");
            }
        });
    }
    if let Some((load, file)) = reload {
        let reloader = Reloader {
            load,
            live: live.clone(),
            current: config,
            workers,
            certificates,
        };
        tokio::spawn(reloader.run(file));
    }
    portcullis_proxy::serve(live, listener, tls, settings, shutdown_signal())
        .await
        .context("cannot start the server workers")?;
    Ok(ExitCode::SUCCESS)
}

/// Resolves on SIGTERM (Kubernetes) or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received"),
        () = term => tracing::info!("SIGTERM received"),
    }
}
