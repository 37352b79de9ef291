//! Accepting connections: plain TCP or TLS (rustls, ALPN `h2` and `http/1.1`), HTTP/1.1
//! and HTTP/2 on the same port (HTTP/2 over cleartext by prior knowledge), with header
//! size limits and a header-read timeout.
//!
//! Thread per core, like nginx's workers: each worker thread runs its own single-threaded
//! runtime and accepts from a clone of the one listening socket, and the app gives each
//! worker its own upstream connection pool. A request is then served start to finish on
//! one thread, without work-stealing bookkeeping; in the benchmark this was worth about
//! 8% of throughput against one multi-threaded runtime.
//!
//! Shutdown: stop accepting, let in-flight requests finish (idle keep-alive connections
//! are closed, HTTP/2 connections get GOAWAY), wait for upgraded connections, and give up
//! after the grace period.

use std::convert::Infallible;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::app::{App, ConnInfo};

const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
    pub shutdown_grace: Duration,
    /// Worker threads; at least one.
    pub workers: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the TLS certificate file {path}: {reason}")]
    Cert { path: String, reason: String },
    #[error("cannot read the TLS key file {path}: {reason}")]
    Key { path: String, reason: String },
    #[error("the TLS certificate and key do not work together: {0}")]
    Config(String),
}

/// Loads a PEM certificate chain and private key into a server configuration offering
/// HTTP/2 and HTTP/1.1 by ALPN.
pub fn load_tls(cert_file: &Path, key_file: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| TlsError::Cert {
            path: cert_file.display().to_string(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Cert {
            path: cert_file.display().to_string(),
            reason: "no certificate found".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| TlsError::Key {
        path: key_file.display().to_string(),
        reason: e.to_string(),
    })?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| TlsError::Config(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn builder(settings: &ServerSettings) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .max_buf_size(settings.max_header_bytes)
        // Copying a response head and a small body into one buffer and writing it once
        // beat vectored writes by several percent in the benchmark's small-body case.
        .writev(false)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(256)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    builder
}

fn serve_connection<I>(
    builder: auto::Builder<TokioExecutor>,
    io: I,
    app: Arc<App>,
    conn: ConnInfo,
    watcher: Watcher,
) -> impl Future<Output = ()> + use<I>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| {
        let app = app.clone();
        async move { Ok::<_, Infallible>(app.handle(&conn, req).await) }
    });
    let connection = builder
        .serve_connection_with_upgrades(TokioIo::new(io), service)
        .into_owned();
    let watched = watcher.watch(connection);
    async move {
        if let Err(e) = watched.await {
            tracing::debug!(peer = %conn.peer, error = %e, "connection ended with an error");
        }
    }
}

/// Serves on `settings.workers` threads until `shutdown` resolves, then drains within the
/// grace period.
pub async fn serve(
    app: Arc<App>,
    listener: std::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    settings: ServerSettings,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let (stop, stopped) = watch::channel(false);
    let mut threads = Vec::new();
    for worker in 0..settings.workers.max(1) {
        let listener = listener.try_clone()?;
        let (app, tls, settings, stopped) =
            (app.clone(), tls.clone(), settings.clone(), stopped.clone());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let thread = std::thread::Builder::new()
            .name(format!("portcullis-worker-{worker}"))
            .spawn(move || {
                runtime.block_on(async move {
                    match TcpListener::from_std(listener) {
                        Ok(listener) => run_worker(app, listener, tls, settings, worker, stopped).await,
                        Err(e) => tracing::error!(worker, error = %e, "worker cannot use the listening socket"),
                    }
                });
            })?;
        threads.push(thread);
    }
    drop(listener);
    shutdown.await;
    let _ = stop.send(true);
    let _ = tokio::task::spawn_blocking(move || {
        for thread in threads {
            let _ = thread.join();
        }
    })
    .await;
    tracing::info!("shutdown complete");
    Ok(())
}

async fn run_worker(
    app: Arc<App>,
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    settings: ServerSettings,
    worker: usize,
    mut stopped: watch::Receiver<bool>,
) {
    let builder = builder(&settings);
    let acceptor = tls.map(TlsAcceptor::from);
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            _ = stopped.wait_for(|stop| *stop) => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let watcher = graceful.watcher();
        let app = app.clone();
        let builder = builder.clone();
        match &acceptor {
            None => {
                let conn = ConnInfo {
                    peer,
                    tls: false,
                    worker,
                };
                tokio::spawn(serve_connection(builder, stream, app, conn, watcher));
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                    {
                        Ok(Ok(tls_stream)) => {
                            let conn = ConnInfo {
                                peer,
                                tls: true,
                                worker,
                            };
                            serve_connection(builder, tls_stream, app, conn, watcher).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(peer = %peer, error = %e, "TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(peer = %peer, "TLS handshake timed out"),
                    }
                });
            }
        }
    }
    drop(listener);
    let started = Instant::now();
    if worker == 0 {
        tracing::info!(
            grace_secs = settings.shutdown_grace.as_secs(),
            "shutting down: no new connections, finishing in-flight requests"
        );
    }
    if tokio::time::timeout(settings.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            worker,
            "grace period over with requests still in flight; exiting anyway"
        );
        return;
    }
    let left = settings.shutdown_grace.saturating_sub(started.elapsed());
    if !app.tracker().wait(left).await {
        tracing::warn!(
            worker,
            upgraded = app.tracker().running(),
            "grace period over with upgraded connections still open; closing them"
        );
    }
}
