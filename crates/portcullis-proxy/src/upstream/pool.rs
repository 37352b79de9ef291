//! The upstream connection pool of one server worker.
//!
//! HTTP/1.1 keep-alive connections, most recently used first. A connection goes back to
//! the pool when the response body it carried is finished and dropped. A body abandoned
//! mid-stream (the client went away) closes its connection instead: the rest of that
//! response would have to be read and thrown away before the connection could carry
//! another request. (hyper tracks message framing itself and never reports a connection
//! ready while a response is unfinished, so reuse cannot mix responses up.) Connections
//! the upstream closed, that idled longer than the idle timeout, or that are still busy
//! are passed over at checkout.
//!
//! Each worker thread owns one pool, so a connection's task always runs on the thread that
//! uses it; the mutex is therefore uncontended and only there because futures must be
//! `Send`.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};

use crate::inbound::RequestBody;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

/// Where and how to connect.
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    /// TLS client configuration when the upstream is https.
    pub tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    pub connect_timeout: Duration,
}

struct Idle {
    sender: SendRequest<RequestBody>,
    since: Instant,
}

pub struct Pool {
    endpoint: Endpoint,
    idle: Mutex<VecDeque<Idle>>,
    max_idle: usize,
    idle_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot connect to {0}: {1}")]
    Io(String, std::io::Error),
    #[error("connecting to {0} timed out")]
    Timeout(String),
    #[error("TLS handshake with {0} failed: {1}")]
    Tls(String, std::io::Error),
    #[error("HTTP handshake with {0} failed: {1}")]
    Http(String, hyper::Error),
}

impl Pool {
    pub fn new(endpoint: Endpoint, max_idle: usize, idle_timeout: Duration) -> Arc<Pool> {
        Arc::new(Pool {
            endpoint,
            idle: Mutex::new(VecDeque::new()),
            max_idle,
            idle_timeout,
        })
    }

    /// A ready pooled connection, if there is one.
    pub fn checkout(&self) -> Option<SendRequest<RequestBody>> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        // Drop what is dead or stale from the cold end first.
        while idle.front().is_some_and(|e| self.is_spent(e, now)) {
            idle.pop_front();
        }
        let mut i = idle.len();
        while i > 0 {
            i -= 1;
            let entry = &idle[i];
            if entry.sender.is_closed() {
                idle.remove(i);
            } else if entry.sender.is_ready() {
                return idle.remove(i).map(|e| e.sender);
            }
        }
        None
    }

    /// Closes the idle connections that the upstream closed or that idled past the idle
    /// timeout. Checkouts pass over those too, but only when there is traffic: each
    /// worker also prunes its pools on a timer, so a quiet proxy does not keep a burst's
    /// connections open for as long as the upstream allows.
    pub fn prune(&self) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        // Dropping a sender closes its idle connection.
        idle.retain(|e| !self.is_spent(e, now));
    }

    /// Closed by the upstream, or idle past the idle timeout.
    fn is_spent(&self, e: &Idle, now: Instant) -> bool {
        e.sender.is_closed() || now.duration_since(e.since) > self.idle_timeout
    }

    fn checkin(&self, sender: SendRequest<RequestBody>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() >= self.max_idle {
            // Dropping the sender lets the connection close once idle.
            return;
        }
        idle.push_back(Idle {
            sender,
            since: Instant::now(),
        });
    }

    /// Opens a new connection and starts its task on the current worker.
    pub async fn connect(&self) -> Result<SendRequest<RequestBody>, ConnectError> {
        let e = &self.endpoint;
        let name = format!("{}:{}", e.host, e.port);
        let tcp = tokio::time::timeout(
            e.connect_timeout,
            TcpStream::connect((e.host.as_str(), e.port)),
        )
        .await
        .map_err(|_| ConnectError::Timeout(name.clone()))?
        .map_err(|err| ConnectError::Io(name.clone(), err))?;
        let _ = tcp.set_nodelay(true);
        match &e.tls {
            None => handshake(TokioIo::new(tcp), &name).await,
            Some((connector, server_name)) => {
                let tls = tokio::time::timeout(
                    e.connect_timeout,
                    connector.connect(server_name.clone(), tcp),
                )
                .await
                .map_err(|_| ConnectError::Timeout(name.clone()))?
                .map_err(|err| ConnectError::Tls(name.clone(), err))?;
                handshake(TokioIo::new(tls), &name).await
            }
        }
    }
}

/// The HTTP/1.1 handshake on an open connection; its task runs on the current worker.
async fn handshake<I>(io: I, name: &str) -> Result<SendRequest<RequestBody>, ConnectError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let mut builder = http1::Builder::new();
    // One contiguous write per request head beat vectored writes in the benchmark.
    builder.writev(false);
    let (sender, conn) = builder
        .handshake(io)
        .await
        .map_err(|err| ConnectError::Http(name.to_string(), err))?;
    tokio::spawn(async move {
        if let Err(err) = conn.with_upgrades().await {
            tracing::debug!(error = %err, "upstream connection ended with an error");
        }
    });
    Ok(sender)
}

/// An upstream response body that returns its connection to the pool once it has been
/// read to the end.
pub struct PooledBody {
    body: Incoming,
    connection: Option<(SendRequest<RequestBody>, Arc<Pool>)>,
    /// The body yielded its end. (`Incoming::is_end_stream` only knows this for bodies
    /// with a `Content-Length`; a chunked body ends when it yields `None`.)
    finished: bool,
}

impl PooledBody {
    pub fn new(body: Incoming, sender: SendRequest<RequestBody>, pool: Arc<Pool>) -> Self {
        PooledBody {
            body,
            connection: Some((sender, pool)),
            finished: false,
        }
    }

    /// A body whose connection must not be reused (after an upgrade).
    pub fn unpooled(body: Incoming) -> Self {
        PooledBody {
            body,
            connection: None,
            finished: false,
        }
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        if let Some((sender, pool)) = self.connection.take()
            && (self.finished || self.body.is_end_stream())
        {
            pool.checkin(sender);
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.finished = true,
            // An error means the connection is unusable: never return it.
            Poll::Ready(Some(Err(_))) => self.connection = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    /// Whether the upstream's end of a connection sees it closed (EOF) within `wait`.
    async fn closed_within(socket: &mut TcpStream, wait: Duration) -> bool {
        let mut byte = [0u8; 1];
        matches!(
            tokio::time::timeout(wait, socket.read(&mut byte)).await,
            Ok(Ok(0) | Err(_))
        )
    }

    #[tokio::test]
    async fn a_prune_closes_the_connections_idle_past_the_timeout_and_keeps_the_others() {
        let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = Endpoint {
            host: "127.0.0.1".into(),
            port: upstream.local_addr().unwrap().port(),
            tls: None,
            connect_timeout: Duration::from_secs(5),
        };
        let idle_timeout = Duration::from_millis(200);
        let pool = Pool::new(endpoint, 8, idle_timeout);

        let old = pool.connect().await.unwrap();
        let (mut old_end, _) = upstream.accept().await.unwrap();
        pool.checkin(old);
        tokio::time::sleep(idle_timeout + Duration::from_millis(100)).await;
        let recent = pool.connect().await.unwrap();
        let (mut recent_end, _) = upstream.accept().await.unwrap();
        pool.checkin(recent);

        pool.prune();
        assert!(
            closed_within(&mut old_end, Duration::from_secs(5)).await,
            "the connection idle past the timeout was closed"
        );
        assert!(
            !closed_within(&mut recent_end, Duration::from_millis(300)).await,
            "the recent one stays open"
        );
        assert_eq!(pool.idle.lock().unwrap().len(), 1, "and stays in the pool");
    }
}
