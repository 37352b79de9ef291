//! The upstream connection pool of one server worker.
//!
//! HTTP/1.1 keep-alive connections, most recently used first. A connection is owned by
//! the request using it and comes back when its response body has been read to the end
//! (see [`super::h1`]); one the upstream has closed, or that has bytes to read nobody
//! asked for, or that idled longer than the idle timeout, is passed over at checkout
//! and closed by the prune.
//!
//! Each worker thread owns one pool, so a connection is always used on the thread that
//! opened it; the mutex is therefore uncontended and only there because futures must be
//! `Send`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use super::h1::{Conn, Io};

/// Where and how to connect.
pub(super) struct Endpoint {
    pub(super) host: String,
    pub(super) port: u16,
    /// TLS client configuration when the upstream is https.
    pub(super) tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    pub(super) connect_timeout: Duration,
}

struct Idle {
    conn: Conn,
    since: Instant,
}

pub(super) struct Pool {
    endpoint: Endpoint,
    idle: Mutex<VecDeque<Idle>>,
    max_idle: usize,
    idle_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub(super) enum ConnectError {
    #[error("cannot connect to {0}: {1}")]
    Io(String, std::io::Error),
    #[error("connecting to {0} timed out")]
    Timeout(String),
    #[error("TLS handshake with {0} failed: {1}")]
    Tls(String, std::io::Error),
}

impl Pool {
    pub(super) fn new(endpoint: Endpoint, max_idle: usize, idle_timeout: Duration) -> Arc<Pool> {
        Arc::new(Pool {
            endpoint,
            idle: Mutex::new(VecDeque::new()),
            max_idle,
            idle_timeout,
        })
    }

    /// The most recently used idle connection that can carry a request `now`, if any.
    pub(super) fn checkout(&self, now: Instant) -> Option<Conn> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        // What idled too long is at the cold end.
        while idle
            .front()
            .is_some_and(|e| now.duration_since(e.since) > self.idle_timeout)
        {
            idle.pop_front();
        }
        while let Some(mut entry) = idle.pop_back() {
            if entry.conn.is_usable() {
                return Some(entry.conn);
            }
        }
        None
    }

    /// Closes the idle connections that are of no more use: closed by the upstream, or
    /// idle past the idle timeout. Checkouts pass over those too, but only when there is
    /// traffic: each worker also prunes its pools on a timer, so a quiet proxy does not
    /// keep a burst's connections open for as long as the upstream allows.
    pub(super) fn prune(&self) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        // Dropping a connection closes it.
        idle.retain_mut(|e| now.duration_since(e.since) <= self.idle_timeout && e.conn.is_usable());
    }

    /// Takes back a connection whose last response was read to its end.
    pub(super) fn checkin(&self, conn: Conn) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() >= self.max_idle {
            return;
        }
        idle.push_back(Idle {
            conn,
            since: Instant::now(),
        });
    }

    /// Opens a new connection and starts its task on the current worker.
    pub(super) async fn connect(&self) -> Result<Io, ConnectError> {
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
            None => Ok(Io::Plain(tcp)),
            Some((connector, server_name)) => {
                let tls = tokio::time::timeout(
                    e.connect_timeout,
                    connector.connect(server_name.clone(), tcp),
                )
                .await
                .map_err(|_| ConnectError::Timeout(name.clone()))?
                .map_err(|err| ConnectError::Tls(name.clone(), err))?;
                Ok(Io::Tls(Box::new(tls)))
            }
        }
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

        let old = Conn::new(pool.connect().await.unwrap());
        let (mut old_end, _) = upstream.accept().await.unwrap();
        pool.checkin(old);
        tokio::time::sleep(idle_timeout + Duration::from_millis(100)).await;
        let recent = Conn::new(pool.connect().await.unwrap());
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
