//! Accepting connections: plain TCP or TLS (rustls, ALPN `h2` and `http/1.1`), HTTP/1.1
//! and HTTP/2 on the same port (HTTP/2 over cleartext by prior knowledge), with header
//! size limits and timeouts on every wait a client controls.
//!
//! Plain HTTP/1.1 requests (no body, no upgrade, nearly all of them) are read and answered
//! on the connection by [`h1`]; the first request that is not plain hands the connection,
//! with its unread bytes, to hyper's HTTP/1 server, which serves HTTP/2 connections too.
//!
//! Thread per core, like nginx's workers: each worker thread runs its own single-threaded
//! runtime and accepts from a clone of the one listening socket, and the app gives each
//! worker its own upstream connection pool. A request is then served start to finish on
//! one thread, without work-stealing bookkeeping; in the benchmark this was worth about
//! 8% of throughput against one multi-threaded runtime.
//!
//! What a client cannot do: hold a connection without sending (the first bytes, which
//! tell HTTP/1 from HTTP/2, must arrive within the header timeout, and so must every
//! request head); keep a connection open with nothing in flight past the idle timeout;
//! or open more connections than the cap (derived from the open-files limit), beyond
//! which the workers stop accepting until one closes, instead of failing `accept` in a
//! loop.
//!
//! Shutdown: stop accepting, let in-flight requests finish (idle keep-alive connections
//! are closed, HTTP/2 connections get GOAWAY), wait for upgraded connections, and give up
//! after the grace period.

use std::convert::Infallible;
use std::future::Future;
use std::path::Path;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::{Buf, Bytes};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use crate::app::{App, ConnInfo};
use crate::inbound::RequestBody;
use crate::throttle::Throttle;

mod h1;

#[cfg(feature = "fuzzing")]
pub(crate) use h1::differential::compare as differential_compare;

const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The app as it is now: replaced whole by a reload, while requests in flight finish on
/// the one they started with.
pub type Live = Arc<ArcSwap<App>>;

/// RFC 9113 §3.4: every HTTP/2 connection starts with these 24 octets.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
    pub shutdown_grace: Duration,
    /// Worker threads; at least one.
    pub workers: usize,
    /// Most client connections at once, over all workers; 0 derives it from the
    /// open-files limit.
    pub max_connections: usize,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout: Duration,
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

/// The serving certificate and key, replaceable while serving (a cert-manager
/// rotation): new TLS handshakes use the newest pair, open connections keep theirs.
#[derive(Debug)]
pub struct Certificates {
    current: ArcSwap<CertifiedKey>,
}

/// Reads a PEM certificate chain and private key, checking that they belong together.
fn read_pair(cert_file: &Path, key_file: &Path) -> Result<CertifiedKey, TlsError> {
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
    CertifiedKey::from_der(certs, key, &rustls::crypto::aws_lc_rs::default_provider())
        .map_err(|e| TlsError::Config(e.to_string()))
}

impl Certificates {
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<Arc<Certificates>, TlsError> {
        Ok(Arc::new(Certificates {
            current: ArcSwap::from_pointee(read_pair(cert_file, key_file)?),
        }))
    }

    /// Reads the files again; on any problem the current pair stays.
    pub fn reload(&self, cert_file: &Path, key_file: &Path) -> Result<(), TlsError> {
        self.current
            .store(Arc::new(read_pair(cert_file, key_file)?));
        Ok(())
    }

    /// A server configuration offering HTTP/2 and HTTP/1.1 by ALPN with these
    /// certificates.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// Loads a PEM certificate chain and private key into a server configuration offering
/// HTTP/2 and HTTP/1.1 by ALPN.
pub fn load_tls(cert_file: &Path, key_file: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    Certificates::load(cert_file, key_file)?.server_config()
}

/// The connection cap when none is configured: half of what the open-files limit leaves
/// after a reserve (each proxied connection may hold an upstream connection too).
pub fn default_max_connections() -> usize {
    let soft = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| {
            limits
                .lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|v| v.parse::<usize>().ok())
        })
        .unwrap_or(20_000);
    (soft.saturating_sub(64) / 2).clamp(16, 1_000_000)
}

/// Protocol settings shared by every connection of a worker.
#[derive(Clone)]
struct Protocols {
    http1: hyper::server::conn::http1::Builder,
    http2: hyper::server::conn::http2::Builder<TokioExecutor>,
}

fn protocols(settings: &ServerSettings) -> Protocols {
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        // The header timeout is the connection's `Watch`, not hyper's: hyper arms a
        // boxed timer for every request head (a clock read, an allocation, and the
        // timer wheel whenever the head is not already in), and it keeps running while
        // a keep-alive connection waits, so it also cut idle connections at the header
        // timeout instead of `server.idle_timeout`.
        .header_read_timeout(None)
        .max_buf_size(settings.max_header_bytes)
        // hyper's default: where the connection takes vectored writes (TCP does), a
        // response head and its body go out in one, the body not copied. Against
        // copying both into one buffer (`writev(false)`), 64 KiB responses cost about
        // 15% less CPU per request relative to nginx, small ones the same. (An earlier
        // measurement favoured the copy only because `Rewind` did not pass vectored
        // writes on, so each buffer took its own system call.)
        .keep_alive(true);
    let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    http2
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(256)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    Protocols { http1, http2 }
}

/// An I/O stream that first yields bytes already read from it (while telling HTTP/1
/// from HTTP/2), then the rest, and tells the connection's `Activity` when bytes arrive.
struct Rewind<I> {
    prefix: Bytes,
    inner: I,
    activity: Arc<Activity>,
}

impl<I: AsyncRead + Unpin> AsyncRead for Rewind<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.prefix.has_remaining() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.received();
        }
        read
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Rewind<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Reads the first bytes of a connection, within `limit`, until they tell the HTTP/2
/// connection preface from an HTTP/1 request line. `None`: the client sent nothing in
/// time, or closed.
async fn sniff<I: AsyncRead + Unpin>(io: &mut I, limit: Duration) -> Option<(bool, Bytes)> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut seen = Vec::with_capacity(H2_PREFACE.len());
    loop {
        let mut chunk = [0u8; 24];
        let want = H2_PREFACE.len() - seen.len();
        let n = match tokio::time::timeout_at(deadline, io.read(&mut chunk[..want])).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => return None,
        };
        seen.extend_from_slice(&chunk[..n]);
        if !H2_PREFACE.starts_with(&seen) {
            return Some((false, Bytes::from(seen)));
        }
        if seen.len() == H2_PREFACE.len() {
            return Some((true, Bytes::from(seen)));
        }
    }
}

/// What a connection is doing, as its watch needs to know: requests in flight, requests
/// begun so far, and whether bytes arrived while none was in flight (the start of the
/// next request head). Counters instead of clock readings: the watch compares them tick
/// by tick, so a request costs no clock read here.
struct Activity {
    in_flight: AtomicUsize,
    begun: AtomicU64,
    head_started: AtomicBool,
}

impl Activity {
    /// A connection whose first bytes have been read: its first head has started.
    fn new() -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            begun: AtomicU64::new(0),
            head_started: AtomicBool::new(true),
        }
    }

    fn begin(self: &Arc<Self>) -> ActivityGuard {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.begun.fetch_add(1, Ordering::AcqRel);
        self.head_started.store(false, Ordering::Release);
        ActivityGuard(self.clone())
    }

    /// Bytes came in from the client.
    fn received(&self) {
        if self.in_flight.load(Ordering::Acquire) == 0 && !self.head_started.load(Ordering::Relaxed)
        {
            self.head_started.store(true, Ordering::Release);
        }
    }
}

struct ActivityGuard(Arc<Activity>);

impl Drop for ActivityGuard {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Why a connection's watch closes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Overdue {
    /// Nothing in flight for `server.idle_timeout`.
    Idle,
    /// A request head started and not complete within `server.header_read_timeout`.
    Head,
    /// The same for the connection's first head. hyper will not close a connection
    /// gracefully before its first request, so this one is dropped; nothing can be in
    /// flight on it.
    FirstHead,
}

/// Looks at a connection's `Activity` at every beat of its worker and says when it has
/// been idle, or has been reading a head, for too long. Only whole periods between beats
/// are counted: a connection is closed between the limit and the limit plus one period
/// (the header timeout and half of it more, by default), never before.
struct Watch {
    idle_limit: u32,
    /// `None`: heads are not timed here (HTTP/2, whose connection reads frames while
    /// idle and has its own keep-alive).
    head_limit: Option<u32>,
    last_begun: u64,
    was_idle: bool,
    head_was_started: bool,
    idle_ticks: u32,
    head_ticks: u32,
}

impl Watch {
    /// `period`: how often the worker beats (`beat_period`).
    fn new(period: Duration, idle_timeout: Duration, head_timeout: Option<Duration>) -> Self {
        let ticks = |limit: Duration| {
            u32::try_from(limit.as_nanos().div_ceil(period.as_nanos().max(1)))
                .unwrap_or(u32::MAX)
                .max(1)
        };
        Self {
            idle_limit: ticks(idle_timeout),
            head_limit: head_timeout.map(ticks),
            last_begun: 0,
            // The worker's beat is not in step with the connection: its first tick ends
            // a part of a period, which is not counted.
            was_idle: false,
            head_was_started: false,
            idle_ticks: 0,
            head_ticks: 0,
        }
    }

    /// One period has passed: is the connection overdue?
    fn tick(&mut self, activity: &Activity) -> Option<Overdue> {
        let begun = activity.begun.load(Ordering::Acquire);
        let idle = activity.in_flight.load(Ordering::Acquire) == 0;
        let head_started = activity.head_started.load(Ordering::Acquire);
        // Idle for the whole period: nothing in flight at either end, nothing begun.
        let quiet = idle && self.was_idle && begun == self.last_begun;
        if quiet {
            self.idle_ticks = self.idle_ticks.saturating_add(1);
            // The same head was already under way a whole period ago.
            if self.head_was_started && head_started {
                self.head_ticks = self.head_ticks.saturating_add(1);
            } else {
                self.head_ticks = 0;
            }
        } else {
            self.idle_ticks = 0;
            self.head_ticks = 0;
        }
        self.last_begun = begun;
        self.was_idle = idle;
        self.head_was_started = head_started;
        if self
            .head_limit
            .is_some_and(|limit| self.head_ticks >= limit)
        {
            Some(if begun == 0 {
                Overdue::FirstHead
            } else {
                Overdue::Head
            })
        } else if self.idle_ticks >= self.idle_limit {
            Some(Overdue::Idle)
        } else {
            None
        }
    }
}

/// Open connections of the whole server, for the cap and for draining at shutdown.
struct Connections {
    slots: Arc<Semaphore>,
    open: AtomicUsize,
    closed: Notify,
}

struct ConnectionGuard {
    connections: Arc<Connections>,
    _slot: OwnedSemaphorePermit,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        if self.connections.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.connections.closed.notify_waiters();
        }
    }
}

impl Connections {
    /// Waits until every connection has closed, or `limit` passes; whether all did.
    async fn drained(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let closed = self.closed.notified();
            if self.open.load(Ordering::Acquire) == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, closed).await.is_err() {
                return self.open.load(Ordering::Acquire) == 0;
            }
        }
    }
}

/// How often a worker's connections are looked at: half the shorter of the two limits a
/// watch enforces.
fn beat_period(settings: &ServerSettings) -> Duration {
    (settings.header_read_timeout.min(settings.idle_timeout) / 2).max(Duration::from_millis(10))
}

/// Beats for the worker's connections every `period` until the server stops; then drops
/// the sender, which every connection hears as the stop.
async fn beat(beats: watch::Sender<()>, period: Duration, mut stopped: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stopped.wait_for(|stop| *stop) => return,
            _ = tick.tick() => {
                beats.send_replace(());
            }
        }
    }
}

/// What a connection heard from its worker.
#[derive(Debug, PartialEq, Eq)]
enum Heard {
    Tick,
    Stop,
}

/// A connection's ear on its worker's beat. Listening costs one atomic load per poll of
/// the connection: the task is registered with the channel once per beat, instead of a
/// timer and a stop signal each polled (and re-registered) on every wake-up, which cost
/// more than a thousand instructions per request.
struct Beat {
    seen: watch::Receiver<()>,
    /// Registered with the channel until the next beat.
    wait: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl Beat {
    fn new(beats: watch::Receiver<()>) -> Self {
        Self {
            seen: beats,
            wait: None,
        }
    }

    /// Whether the server is stopping (the beat's sender is gone).
    fn stopped(&self) -> bool {
        self.seen.has_changed().is_err()
    }

    /// What came since the last call, if anything; otherwise the task is woken when
    /// something does.
    fn poll_heard(&mut self, cx: &mut Context<'_>) -> Option<Heard> {
        loop {
            match self.seen.has_changed() {
                Err(_) => return Some(Heard::Stop),
                Ok(true) => {
                    self.seen.mark_unchanged();
                    self.wait = None;
                    return Some(Heard::Tick);
                }
                Ok(false) if self.wait.is_some() => return None,
                Ok(false) => {
                    let mut beats = self.seen.clone();
                    let mut wait = Box::pin(async move {
                        let _ = beats.changed().await;
                    });
                    if wait.as_mut().poll(cx).is_pending() {
                        self.wait = Some(wait);
                        return None;
                    }
                    // A beat came between the check and the registration: look again.
                }
            }
        }
    }
}

/// Serves one accepted connection until it ends, is idle too long, or the server stops.
async fn serve_connection<I>(
    mut io: I,
    protocols: Protocols,
    app: Live,
    conn: ConnInfo,
    settings: Arc<ServerSettings>,
    beats: watch::Receiver<()>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Some((h2, prefix)) = sniff(&mut io, settings.header_read_timeout).await else {
        tracing::debug!(peer = %conn.peer, "connection closed: nothing received in time");
        return;
    };
    let activity = Arc::new(Activity::new());
    let result = if h2 {
        serve_hyper(
            io, prefix, true, protocols, app, conn, settings, beats, activity,
        )
        .await
    } else {
        h1::serve(io, prefix, protocols, app, conn, settings, beats, activity).await
    };
    if let Err(e) = result {
        tracing::debug!(peer = %conn.peer, error = %e, "connection ended with an error");
    }
}

/// Serves a connection with hyper, HTTP/2 or HTTP/1 (`h2`), from its bytes read so far
/// (`prefix`) on.
#[allow(clippy::too_many_arguments)]
async fn serve_hyper<I>(
    io: I,
    prefix: Bytes,
    h2: bool,
    protocols: Protocols,
    app: Live,
    conn: ConnInfo,
    settings: Arc<ServerSettings>,
    beats: watch::Receiver<()>,
    activity: Arc<Activity>,
) -> Result<(), hyper::Error>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(Rewind {
        prefix,
        inner: io,
        activity: activity.clone(),
    });
    let tracked = activity.clone();
    let service = service_fn(move |req| {
        // The app in force when the request arrived serves it to the end, even if a
        // reload replaces it meanwhile.
        let app = app.load_full();
        let guard = tracked.begin();
        let mut req = req.map(RequestBody::from);
        async move {
            let resp = app.handle(&conn, &mut req).await;
            drop(guard);
            Ok::<_, Infallible>(resp)
        }
    });
    if h2 {
        let connection = protocols.http2.serve_connection(io, service);
        let watch = Watch::new(beat_period(&settings), settings.idle_timeout, None);
        drive(pin!(connection), &activity, watch, Beat::new(beats), |c| {
            c.graceful_shutdown()
        })
        .await
    } else {
        let connection = protocols
            .http1
            .serve_connection(io, service)
            .with_upgrades();
        let watch = Watch::new(
            beat_period(&settings),
            settings.idle_timeout,
            Some(settings.header_read_timeout),
        );
        drive(pin!(connection), &activity, watch, Beat::new(beats), |c| {
            c.graceful_shutdown()
        })
        .await
    }
}

/// Polls a connection to its end, asking it to close gracefully when its watch finds it
/// idle or reading a head for too long, or the server is stopping. (Closing gracefully
/// ends a connection at once unless a response is under way, which it lets finish.)
async fn drive<C>(
    mut connection: Pin<&mut C>,
    activity: &Activity,
    mut watch: Watch,
    mut beat: Beat,
    close: impl Fn(Pin<&mut C>),
) -> Result<(), hyper::Error>
where
    C: Future<Output = Result<(), hyper::Error>>,
{
    let mut closing = false;
    std::future::poll_fn(|cx| {
        loop {
            if let Poll::Ready(result) = connection.as_mut().poll(cx) {
                return Poll::Ready(result);
            }
            if closing {
                return Poll::Pending;
            }
            match beat.poll_heard(cx) {
                None => return Poll::Pending,
                Some(Heard::Tick) => match watch.tick(activity) {
                    None => continue,
                    Some(Overdue::FirstHead) => {
                        tracing::debug!(overdue = ?Overdue::FirstHead, "closing a connection");
                        return Poll::Ready(Ok(()));
                    }
                    Some(overdue) => tracing::debug!(?overdue, "closing a connection"),
                },
                Some(Heard::Stop) => {}
            }
            // Closing takes effect when the connection is next polled: at once.
            closing = true;
            close(connection.as_mut());
        }
    })
    .await
}

/// Serves on `settings.workers` threads until `shutdown` resolves, then drains within the
/// grace period.
pub async fn serve(
    app: Live,
    listener: std::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    mut settings: ServerSettings,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    if settings.max_connections == 0 {
        settings.max_connections = default_max_connections();
    }
    tracing::debug!(
        max_connections = settings.max_connections,
        "connection limit"
    );
    let settings = Arc::new(settings);
    let connections = Arc::new(Connections {
        slots: Arc::new(Semaphore::new(settings.max_connections)),
        open: AtomicUsize::new(0),
        closed: Notify::new(),
    });
    let accept_errors = Arc::new(Throttle::new(Duration::from_secs(10)));
    let (stop, stopped) = watch::channel(false);
    let mut threads = Vec::new();
    for worker in 0..settings.workers.max(1) {
        let listener = listener.try_clone()?;
        let (app, tls, settings, stopped, connections, accept_errors) = (
            app.clone(),
            tls.clone(),
            settings.clone(),
            stopped.clone(),
            connections.clone(),
            accept_errors.clone(),
        );
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let thread = std::thread::Builder::new()
            .name(format!("portcullis-worker-{worker}"))
            .spawn(move || {
                runtime.block_on(async move {
                    match TcpListener::from_std(listener) {
                        Ok(listener) => {
                            let worker = Worker {
                                app,
                                tls: tls.map(TlsAcceptor::from),
                                settings,
                                index: worker,
                                connections,
                                accept_errors,
                            };
                            worker.run(listener, stopped).await
                        }
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

/// A listener of a side port (the admin listener, the gRPC check): at most `max`
/// connections at once, an accept failure (descriptors exhausted) logged at most every
/// 10 s and retried after a pause.
pub(crate) struct SideListener {
    listener: TcpListener,
    slots: Arc<Semaphore>,
    errors: Throttle,
    name: &'static str,
}

impl SideListener {
    pub(crate) fn new(
        listener: std::net::TcpListener,
        max: usize,
        name: &'static str,
    ) -> std::io::Result<Self> {
        listener.set_nonblocking(true)?;
        Ok(SideListener {
            listener: TcpListener::from_std(listener)?,
            slots: Arc::new(Semaphore::new(max)),
            errors: Throttle::new(Duration::from_secs(10)),
            name,
        })
    }

    /// The next connection and the slot it holds until dropped; waits for a free slot
    /// first. `None` only if the slots were closed, which nothing does.
    pub(crate) async fn next(
        &self,
    ) -> Option<(
        tokio::net::TcpStream,
        std::net::SocketAddr,
        OwnedSemaphorePermit,
    )> {
        let slot = self.slots.clone().acquire_owned().await.ok()?;
        loop {
            match self.listener.accept().await {
                Ok((stream, peer)) => return Some((stream, peer, slot)),
                Err(e) => {
                    if let Some(count) = self.errors.hit() {
                        tracing::warn!(error = %e, failures = count, "{} listener: accept failed", self.name);
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// Connections the admin listener serves at once.
const ADMIN_MAX_CONNECTIONS: usize = 64;
/// The longest an admin connection is kept.
const ADMIN_CONNECTION_LIMIT: Duration = Duration::from_secs(300);

/// Serves the admin listener (HTTP/1.1, a few connections) on the current runtime; runs
/// until the process ends.
pub async fn serve_admin(
    app: Live,
    listener: std::net::TcpListener,
    header_read_timeout: Duration,
) -> std::io::Result<()> {
    let side = SideListener::new(listener, ADMIN_MAX_CONNECTIONS, "admin")?;
    while let Some((stream, peer, slot)) = side.next().await {
        let app = app.clone();
        tokio::spawn(async move {
            let conn = ConnInfo {
                peer,
                tls: false,
                worker: 0,
            };
            let service = service_fn(move |req| {
                let app = app.load_full();
                async move {
                    Ok::<_, Infallible>(app.handle_admin(&conn, req.map(RequestBody::from)).await)
                }
            });
            let mut http1 = hyper::server::conn::http1::Builder::new();
            http1
                .timer(TokioTimer::new())
                .header_read_timeout(header_read_timeout)
                .max_buf_size(16 * 1024);
            let served = http1.serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(ADMIN_CONNECTION_LIMIT, served).await;
            drop(slot);
        });
    }
    Ok(())
}

struct Worker {
    app: Live,
    tls: Option<TlsAcceptor>,
    settings: Arc<ServerSettings>,
    index: usize,
    connections: Arc<Connections>,
    accept_errors: Arc<Throttle>,
}

/// How often a worker closes its pooled upstream connections that idled past
/// `upstream.idle_timeout`.
const PRUNE_EVERY: Duration = Duration::from_secs(5);

/// Prunes worker `worker`'s upstream pools until the server stops.
async fn prune_upstreams(app: Live, worker: usize, mut stopped: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(PRUNE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stopped.wait_for(|stop| *stop) => return,
            _ = tick.tick() => app.load().prune_upstreams(worker),
        }
    }
}

impl Worker {
    async fn run(self, listener: TcpListener, mut stopped: watch::Receiver<bool>) {
        let protocols = protocols(&self.settings);
        // On this worker's runtime, beside the connections whose pools it prunes.
        tokio::spawn(prune_upstreams(
            self.app.clone(),
            self.index,
            stopped.clone(),
        ));
        let (beats, listening) = watch::channel(());
        tokio::spawn(beat(beats, beat_period(&self.settings), stopped.clone()));
        tokio::spawn(h1::date::keep(stopped.clone()));
        loop {
            // A free slot first: at the cap, connections wait in the listen backlog.
            let slot = tokio::select! {
                biased;
                _ = stopped.wait_for(|stop| *stop) => break,
                slot = self.connections.slots.clone().acquire_owned() => match slot {
                    Ok(slot) => slot,
                    Err(_) => break,
                },
            };
            let (stream, peer) = tokio::select! {
                biased;
                _ = stopped.wait_for(|stop| *stop) => break,
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of
                        // spinning, and say so once in a while, not once per attempt.
                        if let Some(count) = self.accept_errors.hit() {
                            tracing::warn!(error = %e, failures = count, "accept failed");
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            self.connections.open.fetch_add(1, Ordering::AcqRel);
            let guard = ConnectionGuard {
                connections: self.connections.clone(),
                _slot: slot,
            };
            let (app, settings, beats, protocols) = (
                self.app.clone(),
                self.settings.clone(),
                listening.clone(),
                protocols.clone(),
            );
            let worker = self.index;
            match &self.tls {
                None => {
                    let conn = ConnInfo {
                        peer,
                        tls: false,
                        worker,
                    };
                    tokio::spawn(async move {
                        serve_connection(stream, protocols, app, conn, settings, beats).await;
                        drop(guard);
                    });
                }
                Some(acceptor) => {
                    let acceptor = acceptor.clone();
                    tokio::spawn(async move {
                        match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                            .await
                        {
                            Ok(Ok(tls_stream)) => {
                                let conn = ConnInfo {
                                    peer,
                                    tls: true,
                                    worker,
                                };
                                serve_connection(tls_stream, protocols, app, conn, settings, beats)
                                    .await;
                            }
                            Ok(Err(e)) => {
                                tracing::debug!(peer = %peer, error = %e, "TLS handshake failed")
                            }
                            Err(_) => tracing::debug!(peer = %peer, "TLS handshake timed out"),
                        }
                        drop(guard);
                    });
                }
            }
        }
        drop(listener);
        self.drain().await;
    }

    async fn drain(&self) {
        let started = Instant::now();
        let grace = self.settings.shutdown_grace;
        if self.index == 0 {
            tracing::info!(
                grace_secs = grace.as_secs(),
                "shutting down: no new connections, finishing in-flight requests"
            );
        }
        // Connections on every worker see the stop signal and close once their requests
        // are answered; each worker waits for them all (the last to finish releases all).
        if !self.connections.drained(grace).await {
            tracing::warn!(
                worker = self.index,
                "grace period over with requests still in flight; exiting anyway"
            );
            return;
        }
        let left = grace.saturating_sub(started.elapsed());
        let tracker = self.app.load().tracker().clone();
        if !tracker.wait(left).await {
            tracing::warn!(
                worker = self.index,
                upgraded = tracker.running(),
                "grace period over with upgraded connections still open; closing them"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sniffing_tells_http2_from_http1_and_gives_the_bytes_back() {
        let (mut client, mut server) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut client, H2_PREFACE)
            .await
            .unwrap();
        let (h2, prefix) = sniff(&mut server, Duration::from_secs(1)).await.unwrap();
        assert!(h2);
        assert_eq!(&prefix[..], H2_PREFACE);

        let (mut client, server) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut client, b"GET / HTTP/1.1\r\n")
            .await
            .unwrap();
        let mut server = server;
        let (h2, prefix) = sniff(&mut server, Duration::from_secs(1)).await.unwrap();
        assert!(!h2);
        let mut rewound = Rewind {
            prefix,
            inner: server,
            activity: Arc::new(Activity::new()),
        };
        let mut line = vec![0u8; 16];
        rewound.read_exact(&mut line).await.unwrap();
        assert_eq!(&line, b"GET / HTTP/1.1\r\n");
    }

    #[tokio::test]
    async fn a_client_that_sends_nothing_or_half_a_preface_is_dropped() {
        let (_client, mut server) = tokio::io::duplex(64);
        assert!(
            sniff(&mut server, Duration::from_millis(50))
                .await
                .is_none()
        );
        let (mut client, mut server) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut client, b"PRI * HT")
            .await
            .unwrap();
        assert!(
            sniff(&mut server, Duration::from_millis(50))
                .await
                .is_none()
        );
    }

    /// Ticks `watch` `n` times with `activity` unchanged; the first verdict, if any.
    fn ticks(watch: &mut Watch, activity: &Activity, n: u32) -> Option<(u32, Overdue)> {
        (1..=n).find_map(|i| watch.tick(activity).map(|o| (i, o)))
    }

    fn settings(header: u64, idle: u64) -> ServerSettings {
        ServerSettings {
            header_read_timeout: Duration::from_secs(header),
            idle_timeout: Duration::from_secs(idle),
            max_header_bytes: 0,
            shutdown_grace: Duration::ZERO,
            workers: 1,
            max_connections: 0,
        }
    }

    /// A watch as a worker with these settings makes it for HTTP/1 (heads timed) or 2.
    fn watch(header: u64, idle: u64, heads: bool) -> Watch {
        let s = settings(header, idle);
        let head = heads.then_some(s.header_read_timeout);
        Watch::new(beat_period(&s), s.idle_timeout, head)
    }

    #[test]
    fn connections_are_looked_at_every_half_of_the_shorter_limit() {
        assert_eq!(beat_period(&settings(10, 75)), Duration::from_secs(5));
        let w = watch(10, 75, true);
        assert_eq!((w.idle_limit, w.head_limit), (15, Some(2)));
        assert_eq!(beat_period(&settings(10, 2)), Duration::from_secs(1));
        let w = watch(10, 2, true);
        assert_eq!((w.idle_limit, w.head_limit), (2, Some(10)));
        assert_eq!(watch(10, 2, false).head_limit, None);
    }

    #[test]
    fn a_head_that_does_not_complete_is_overdue_after_the_header_timeout() {
        // A beat every 0.5 s; a head may take 2 of them, an idle connection 20.
        let activity = Arc::new(Activity::new());
        let mut w = watch(1, 10, true);
        // The first head started with the connection's first bytes. The first beat ends
        // a part of a period, not counted; two whole periods later it is overdue.
        assert_eq!(ticks(&mut w, &activity, 5), Some((3, Overdue::FirstHead)));

        // After a request, an idle connection is not timed as a head...
        let activity = Arc::new(Activity::new());
        let mut w = watch(1, 10, true);
        drop(activity.begin());
        assert_eq!(ticks(&mut w, &activity, 5), None);
        // ...until bytes come: the beat that first sees them does not count, the next
        // two do (the head has then been under way for at least two whole periods).
        activity.received();
        assert_eq!(ticks(&mut w, &activity, 5), Some((3, Overdue::Head)));
    }

    #[test]
    fn a_head_that_completes_is_not_overdue() {
        let activity = Arc::new(Activity::new());
        let mut w = watch(1, 10, true);
        for _ in 0..50 {
            assert_eq!(w.tick(&activity), None);
            // The head completes and its request is answered within the period.
            drop(activity.begin());
            activity.received();
        }
        // Bytes that arrive while a request is in flight are not a head.
        let guard = activity.begin();
        activity.received();
        assert_eq!(ticks(&mut w, &activity, 30), None);
        drop(guard);
        // The beat after it ended does not count: it was in flight for part of it.
        assert_eq!(ticks(&mut w, &activity, 20), None);
        assert_eq!(w.tick(&activity), Some(Overdue::Idle));
    }

    #[test]
    fn only_whole_idle_periods_count() {
        // HTTP/2: heads not timed; a beat every 1 s, idle after 2.
        let activity = Arc::new(Activity::new());
        let mut w = watch(10, 2, false);
        assert_eq!(ticks(&mut w, &activity, 5), Some((3, Overdue::Idle)));

        // A beat every 0.5 s, idle after 4 of them.
        let (mut w, activity) = (watch(1, 2, false), Arc::new(Activity::new()));
        // A request that outlives many periods keeps the connection open.
        let guard = activity.begin();
        assert_eq!(ticks(&mut w, &activity, 100), None);
        drop(guard);
        assert_eq!(ticks(&mut w, &activity, 4), None);
        assert_eq!(w.tick(&activity), Some(Overdue::Idle));

        // A request begun and ended between two beats restarts the count.
        let (mut w, activity) = (watch(1, 2, false), Arc::new(Activity::new()));
        assert_eq!(ticks(&mut w, &activity, 3), None);
        drop(activity.begin());
        assert_eq!(ticks(&mut w, &activity, 4), None);
        assert_eq!(w.tick(&activity), Some(Overdue::Idle));
    }

    #[tokio::test]
    async fn a_connection_hears_each_beat_once_and_the_stop() {
        use std::task::Wake;
        struct Count(AtomicUsize);
        impl Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let woken = Arc::new(Count(AtomicUsize::new(0)));
        let waker = std::task::Waker::from(woken.clone());
        let mut cx = Context::from_waker(&waker);
        let (beats, listening) = watch::channel(());
        let mut beat = Beat::new(listening);
        assert_eq!(beat.poll_heard(&mut cx), None);
        assert_eq!(beat.poll_heard(&mut cx), None);
        beats.send_replace(());
        // The beat wakes the task once, and is heard once.
        assert_eq!(woken.0.load(Ordering::SeqCst), 1);
        assert_eq!(beat.poll_heard(&mut cx), Some(Heard::Tick));
        assert_eq!(beat.poll_heard(&mut cx), None);
        // Two beats before the connection is polled again are one.
        beats.send_replace(());
        beats.send_replace(());
        assert_eq!(woken.0.load(Ordering::SeqCst), 2);
        assert_eq!(beat.poll_heard(&mut cx), Some(Heard::Tick));
        assert_eq!(beat.poll_heard(&mut cx), None);
        // The worker stopping drops the sender: heard, and the task woken for it.
        drop(beats);
        assert_eq!(woken.0.load(Ordering::SeqCst), 3);
        assert_eq!(beat.poll_heard(&mut cx), Some(Heard::Stop));
    }

    #[test]
    fn the_default_connection_cap_leaves_room_under_the_files_limit() {
        let cap = default_max_connections();
        assert!(cap >= 16);
    }
}
