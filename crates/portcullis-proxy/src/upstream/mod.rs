//! Forwarding to the upstream app.
//!
//! Bodies stream both ways frame by frame; nothing is buffered. A request that arrived
//! over HTTP/2 is sent as HTTP/1.1 (spoken by [`h1`]) with the `Host` rule of
//! [`crate::forwarding`]. WebSocket requests (and other allowed HTTP/1.1 upgrades, never
//! `h2c`) go over a fresh connection with their upgrade headers; when the upstream
//! answers `101` for that same protocol, the two upgraded connections are spliced
//! together in a task the server tracks, so shutdown knows about it, and which ends when
//! the session behind it does. A `101` the client did not ask for, or for another
//! protocol, is a 502: it would open a tunnel nothing inspects.

mod h1;
mod pool;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::TokioIo;
use portcullis_config::{UpstreamConfig, Url};
use rustls::pki_types::ServerName;
use tokio::io::AsyncWriteExt;

use crate::hop;
use crate::inbound::RequestBody;
use crate::shutdown::Tracker;
#[cfg(feature = "fuzzing")]
pub use h1::read_response;
use h1::{Answer, Conn, Io};
pub(crate) use h1::{ReadError, UpstreamBody};
use pool::{Endpoint, Pool};

/// Fields Portcullis adds to a request on its way upstream (forwarding, identity, the
/// assertion), written after the client's own. Whoever adds one first removes any field
/// of that name from the request, so adding is setting; kept apart from the request's
/// header map, which would otherwise grow and hash for each of them. Text that lives as
/// long as the request (the session's identity) is held borrowed and copied once, into
/// the request's head, instead of into a header value of its own first.
#[derive(Debug, Default)]
pub(crate) struct Added<'a>(Vec<(HeaderName, FieldValue<'a>)>);

/// The value of an added field; text is checked to be a valid field value when added.
#[derive(Debug)]
pub(crate) enum FieldValue<'a> {
    Value(HeaderValue),
    Borrowed(&'a str),
    Owned(String),
}

impl FieldValue<'_> {
    pub(crate) fn as_bytes(&self) -> &[u8] {
        match self {
            FieldValue::Value(v) => v.as_bytes(),
            FieldValue::Borrowed(t) => t.as_bytes(),
            FieldValue::Owned(t) => t.as_bytes(),
        }
    }
}

impl<'a> Added<'a> {
    pub(crate) fn with_capacity(n: usize) -> Self {
        Added(Vec::with_capacity(n))
    }

    pub(crate) fn push(&mut self, name: HeaderName, value: HeaderValue) {
        self.0.push((name, FieldValue::Value(value)));
    }

    /// Sets them in `headers` instead (for a view of the request as it would go).
    pub(crate) fn apply_to(self, headers: &mut http::HeaderMap) {
        for (name, value) in self.0 {
            let value = match value {
                FieldValue::Value(v) => v,
                other => HeaderValue::from_bytes(other.as_bytes())
                    .expect("added text is checked to be a field value"),
            };
            headers.insert(name, value);
        }
    }

    pub(crate) fn fields(&self) -> &[(HeaderName, FieldValue<'a>)] {
        &self.0
    }
}

impl<'a> crate::redact::SetField<'a> for Added<'a> {
    fn set(&mut self, name: HeaderName, value: HeaderValue) {
        self.push(name, value);
    }

    fn set_text(&mut self, name: HeaderName, text: &'a str) -> bool {
        self.push_text(name, FieldValue::Borrowed(text))
    }

    fn set_owned(&mut self, name: HeaderName, text: String) -> bool {
        self.push_text(name, FieldValue::Owned(text))
    }
}

impl<'a> Added<'a> {
    /// Adds text that is a valid field value; `false` (and nothing added) otherwise.
    fn push_text(&mut self, name: HeaderName, text: FieldValue<'a>) -> bool {
        let valid = crate::redact::is_field_value(text.as_bytes());
        if valid {
            self.0.push((name, text));
        }
        valid
    }
}

/// `timeout` after `start`; a timeout too long for the clock (a configured
/// `response_timeout` of many years) is thirty years, which no request outlives.
fn deadline(start: Instant, timeout: Duration) -> tokio::time::Instant {
    const FAR: Duration = Duration::from_secs(30 * 365 * 86_400);
    tokio::time::Instant::from_std(start.checked_add(timeout.min(FAR)).unwrap_or(start))
}

/// A client's request to switch protocols, already checked against the allow-list.
pub(crate) struct UpgradeRequest {
    pub protocol: HeaderValue,
    /// Resolves when the tunnel must close (the session behind it ended).
    pub until: Pin<Box<dyn Future<Output = ()> + Send>>,
}

pub(crate) struct Upstream {
    pool: Arc<Pool>,
    authority_header: HeaderValue,
    /// The upstream URL's path without a trailing slash ("" for the root).
    base_path: String,
    response_timeout: Duration,
    preserve_host: bool,
}

/// Why a request could not be forwarded; the error page says which.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    #[error("upstream unreachable: {0}")]
    Unreachable(String),
    #[error("upstream did not answer in time")]
    Timeout,
    /// The path could not be joined to the upstream's own path.
    #[error("the request target cannot be forwarded")]
    Target,
}

/// What the upstream answered: a response whose body streams through, or its `101`
/// for an upgrade, after which the two connections are spliced.
pub(crate) enum Forwarded {
    Response(Response<UpstreamBody>),
    Switched(Response<()>),
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamSetupError {
    #[error("the upstream URL {0} has no host")]
    NoHost(String),
    #[error("the upstream URL {url} is not usable: {reason}")]
    Invalid { url: String, reason: String },
}

fn tls_connector(host: &str) -> Result<(tokio_rustls::TlsConnector, ServerName<'static>), String> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = ServerName::try_from(host.to_string()).map_err(|e| e.to_string())?;
    Ok((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
}

impl Upstream {
    pub(crate) fn new(url: &Url, config: &UpstreamConfig) -> Result<Self, UpstreamSetupError> {
        let host = url
            .host_str()
            .ok_or_else(|| UpstreamSetupError::NoHost(url.to_string()))?;
        let invalid = |reason: String| UpstreamSetupError::Invalid {
            url: url.to_string(),
            reason,
        };
        let authority = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        };
        let authority_header =
            HeaderValue::from_str(&authority).map_err(|e| invalid(e.to_string()))?;
        let port = url
            .port_or_known_default()
            .ok_or_else(|| invalid("no port".into()))?;
        // `[::1]` in a URL is `::1` to connect to.
        let connect_host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let tls = if url.scheme() == "https" {
            Some(tls_connector(&connect_host).map_err(invalid)?)
        } else {
            None
        };
        let endpoint = Endpoint {
            host: connect_host,
            port,
            tls,
            connect_timeout: config.connect_timeout,
        };
        Ok(Upstream {
            pool: Pool::new(endpoint, config.max_idle_per_host, config.idle_timeout),
            authority_header,
            base_path: url.path().trim_end_matches('/').to_string(),
            response_timeout: config.response_timeout,
            preserve_host: config.preserve_host,
        })
    }

    /// Closes this pool's idle connections past the idle timeout.
    pub(crate) fn prune(&self) {
        self.pool.prune();
    }

    /// The origin-form request target at the upstream.
    fn target(&self, original: &Uri) -> Result<Uri, UpstreamError> {
        let path_and_query = match (original.path_and_query(), self.base_path.is_empty()) {
            // The client's own, shared rather than parsed again.
            (Some(pq), true) => pq.clone(),
            (None, true) => PathAndQuery::from_static("/"),
            (pq, false) => {
                let pq = pq.map_or("/", PathAndQuery::as_str);
                format!("{}{pq}", self.base_path)
                    .parse()
                    .map_err(|_| UpstreamError::Target)?
            }
        };
        Ok(Uri::from(path_and_query))
    }

    /// Sends on a pooled connection, or a new one. A request without a body and with an
    /// idempotent method that got nothing back on a reused connection (the upstream
    /// closed it as it was being reused) is sent once more, on a fresh one.
    async fn send(
        &self,
        head: &Request<RequestBody>,
        added: &Added<'_>,
        body: RequestBody,
        now: Instant,
    ) -> Result<(Answer, Conn), UpstreamError> {
        let mut body = Some(body);
        loop {
            let (mut conn, reused) = match self.pool.checkout(now) {
                Some(conn) => (conn, true),
                // Boxed: a connection (a TLS handshake) is made once for many requests,
                // and its future would otherwise set the size of every request's.
                None => (Conn::new(Box::pin(self.connect()).await?), false),
            };
            let body = body.take().unwrap_or_else(RequestBody::empty);
            match conn.exchange(head, added.fields(), body).await {
                Ok(answer) => return Ok((answer, conn)),
                Err(failure) if reused && failure.retryable => continue,
                Err(failure) => return Err(UpstreamError::Unreachable(failure.reason)),
            }
        }
    }

    async fn connect(&self) -> Result<Io, UpstreamError> {
        self.pool
            .connect()
            .await
            .map_err(|e| UpstreamError::Unreachable(e.to_string()))
    }

    /// Sends `req` (headers already prepared by the caller, hop-by-hop fields removed) to
    /// the upstream and streams the answer back. `upgrade` is the protocol the client
    /// asked to switch to, if any; `client_host` is the host the client addressed.
    pub(crate) async fn forward(
        &self,
        req: &mut Request<RequestBody>,
        added: Added<'_>,
        upgrade: Option<UpgradeRequest>,
        client_host: Option<&HeaderValue>,
        tracker: &Tracker,
        asked: Instant,
    ) -> Result<Forwarded, UpstreamError> {
        *req.uri_mut() = self.target(req.uri())?;
        let client_version = req.version();
        *req.version_mut() = Version::HTTP_11;
        let host = match (self.preserve_host, client_host) {
            (true, Some(h)) => h.clone(),
            _ => self.authority_header.clone(),
        };
        req.headers_mut().insert(header::HOST, host);

        // Only HTTP/1.1 clients can upgrade this way (HTTP/2 uses extended CONNECT).
        // Boxed: the rare upgrade's future would otherwise set every request's size.
        if let Some(upgrade) = upgrade.filter(|_| client_version == Version::HTTP_11) {
            return Box::pin(self.forward_upgrade(req, added, upgrade, tracker)).await;
        }

        let body = std::mem::replace(req.body_mut(), RequestBody::empty());
        // The response timeout counts from when the upstream was asked, a clock read the
        // caller already made.
        let deadline = deadline(asked, self.response_timeout);
        let (answer, conn) = tokio::time::timeout_at(deadline, self.send(req, &added, body, asked))
            .await
            .map_err(|_| UpstreamError::Timeout)??;
        if answer.status() == StatusCode::SWITCHING_PROTOCOLS {
            return Err(UpstreamError::Unreachable(
                "the upstream switched protocols on a request that asked for no upgrade".into(),
            ));
        }
        Ok(Forwarded::Response(respond(
            answer,
            conn,
            Some(self.pool.clone()),
            client_version,
        )))
    }

    /// Asks the upstream to switch protocols on a fresh connection; on its `101` the two
    /// connections are spliced, on any other answer that answer is passed on.
    async fn forward_upgrade(
        &self,
        req: &mut Request<RequestBody>,
        added: Added<'_>,
        upgrade: UpgradeRequest,
        tracker: &Tracker,
    ) -> Result<Forwarded, UpstreamError> {
        let headers = req.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, upgrade.protocol.clone());
        let client_upgrade = hyper::upgrade::on(&mut *req);
        let body = std::mem::replace(req.body_mut(), RequestBody::empty());
        let exchange = async {
            let mut conn = Conn::new(self.connect().await?);
            match conn.exchange(req, added.fields(), body).await {
                Ok(answer) => Ok((answer, conn)),
                Err(failure) => Err(UpstreamError::Unreachable(failure.reason)),
            }
        };
        let (answer, conn) = tokio::time::timeout(self.response_timeout, exchange)
            .await
            .map_err(|_| UpstreamError::Timeout)??;
        if answer.status() == StatusCode::SWITCHING_PROTOCOLS {
            let (response, io, early) = answer.switched(conn);
            if !hop::upgrade_accepted(response.headers(), &upgrade.protocol) {
                return Err(UpstreamError::Unreachable(
                    "the upstream switched to another protocol than the one asked for".into(),
                ));
            }
            return Ok(Forwarded::Switched(splice(
                response,
                (io, early),
                client_upgrade,
                upgrade.until,
                tracker,
            )));
        }
        // A connection that was asked to upgrade is not reused.
        Ok(Forwarded::Response(respond(
            answer,
            conn,
            None,
            Version::HTTP_11,
        )))
    }
}

/// The upstream's answer as the client gets it: without hop-by-hop fields (most were left
/// out as its head was read), in the client's own protocol version. `pool` takes the
/// connection back once the body has been read.
fn respond(
    answer: Answer,
    conn: Conn,
    pool: Option<Arc<Pool>>,
    client_version: Version,
) -> Response<UpstreamBody> {
    let strip = answer.hop_fields_kept();
    let mut response = answer.into_response(conn, pool);
    if strip {
        hop::strip_hop_by_hop(response.headers_mut());
    }
    *response.version_mut() = client_version;
    response
}

/// Answers the client's upgrade with the upstream's `101` and splices the two upgraded
/// connections in a tracked task, which ends when either side closes or `until` resolves.
/// `upstream` is the upstream's socket and what it sent past its `101`.
fn splice(
    response: Response<()>,
    upstream: (Io, Bytes),
    client_upgrade: hyper::upgrade::OnUpgrade,
    until: Pin<Box<dyn Future<Output = ()> + Send>>,
    tracker: &Tracker,
) -> Response<()> {
    let (mut upstream, early) = upstream;
    tracker.spawn(async move {
        let client = match client_upgrade.await {
            Ok(client) => client,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade did not complete");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let tunnel = async {
            client.write_all(&early).await?;
            tokio::io::copy_bidirectional(&mut client, &mut upstream).await
        };
        tokio::select! {
            copied = tunnel => {
                if let Err(e) = copied {
                    tracing::debug!(error = %e, "upgraded connection ended with an error");
                }
            }
            () = until => tracing::info!("upgraded connection closed: its session ended"),
        }
    });
    let mut response = response;
    // The 101 keeps its `Connection: upgrade` and `Upgrade`; other hop-by-hop fields go.
    let keep_upgrade = response.headers().get(header::UPGRADE).cloned();
    hop::strip_hop_by_hop(response.headers_mut());
    if let Some(protocol) = keep_upgrade {
        response.headers_mut().insert(header::UPGRADE, protocol);
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_timeout_counts_from_when_the_upstream_was_asked_and_never_overflows() {
        let asked = Instant::now();
        let d = deadline(asked, Duration::from_secs(30));
        assert_eq!(d.into_std() - asked, Duration::from_secs(30));
        // What the config reader accepts: up to u64::MAX seconds, and days of u32::MAX.
        for huge in [
            Duration::MAX,
            Duration::from_secs(u64::MAX),
            Duration::from_secs(86_400 * u64::from(u32::MAX)),
        ] {
            let d = deadline(asked, huge).into_std();
            assert!(
                d - asked > Duration::from_secs(29 * 365 * 86_400),
                "{huge:?}"
            );
        }
    }
}
