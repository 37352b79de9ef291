//! Forwarding to the upstream app over a pooled client.
//!
//! Bodies stream both ways frame by frame; nothing is buffered. A request that arrived
//! over HTTP/2 is sent as HTTP/1.1 (the upstream pool speaks HTTP/1.1), with the `Host`
//! rule of [`crate::forwarding`]. WebSocket (and any HTTP/1.1 `Upgrade`) requests are
//! forwarded with their upgrade headers; when the upstream answers `101`, the two
//! upgraded connections are spliced together in a task the server tracks, so shutdown
//! knows about it.

use std::time::Duration;

use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use portcullis_config::{UpstreamConfig, Url};

use crate::body::ProxyBody;
use crate::error::ProxyError;
use crate::hop;
use crate::shutdown::Tracker;

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

pub struct Upstream {
    client: Client<Connector, Incoming>,
    scheme: Scheme,
    authority: Authority,
    authority_header: HeaderValue,
    /// The upstream URL's path without a trailing slash ("" for the root).
    base_path: String,
    response_timeout: Duration,
    preserve_host: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamSetupError {
    #[error("the upstream URL {0} has no host")]
    NoHost(String),
    #[error("the upstream URL {url} is not usable: {reason}")]
    Invalid { url: String, reason: String },
}

impl Upstream {
    pub fn new(url: &Url, config: &UpstreamConfig) -> Result<Self, UpstreamSetupError> {
        let host = url
            .host_str()
            .ok_or_else(|| UpstreamSetupError::NoHost(url.to_string()))?;
        let authority_text = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        };
        let invalid = |reason: String| UpstreamSetupError::Invalid {
            url: url.to_string(),
            reason,
        };
        let authority: Authority = authority_text
            .parse()
            .map_err(|e: http::uri::InvalidUri| invalid(e.to_string()))?;
        let authority_header =
            HeaderValue::from_str(&authority_text).map_err(|e| invalid(e.to_string()))?;
        let scheme = if url.scheme() == "https" {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        };

        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(config.connect_timeout));
        http.set_nodelay(true);
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::aws_lc_rs::default_provider())
            .map_err(|e| invalid(e.to_string()))?
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(config.idle_timeout)
            .pool_max_idle_per_host(config.max_idle_per_host)
            .build(connector);

        Ok(Upstream {
            client,
            scheme,
            authority,
            authority_header,
            base_path: url.path().trim_end_matches('/').to_string(),
            response_timeout: config.response_timeout,
            preserve_host: config.preserve_host,
        })
    }

    fn target(&self, original: &Uri) -> Result<Uri, ProxyError> {
        let pq = original
            .path_and_query()
            .map(PathAndQuery::as_str)
            .unwrap_or("/");
        let path_and_query: PathAndQuery = if self.base_path.is_empty() {
            pq.parse()
        } else {
            format!("{}{pq}", self.base_path).parse()
        }
        .map_err(|_| ProxyError::NotFound)?;
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path_and_query)
            .build()
            .map_err(|_| ProxyError::NotFound)
    }

    /// Sends `req` (headers already prepared by the caller, hop-by-hop fields removed) to
    /// the upstream and streams the answer back. `upgrade` is the protocol the client
    /// asked to switch to, if any; `client_host` is the host the client addressed.
    pub async fn forward(
        &self,
        mut req: Request<Incoming>,
        upgrade: Option<HeaderValue>,
        client_host: Option<&HeaderValue>,
        tracker: &Tracker,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        *req.uri_mut() = self.target(req.uri())?;
        let client_version = req.version();
        *req.version_mut() = Version::HTTP_11;
        let host = match (self.preserve_host, client_host) {
            (true, Some(h)) => h.clone(),
            _ => self.authority_header.clone(),
        };
        req.headers_mut().insert(header::HOST, host);

        // Only HTTP/1.1 clients can upgrade this way (HTTP/2 uses extended CONNECT).
        let client_upgrade = match upgrade {
            Some(protocol) if client_version == Version::HTTP_11 => {
                let headers = req.headers_mut();
                headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                headers.insert(header::UPGRADE, protocol);
                Some(hyper::upgrade::on(&mut req))
            }
            _ => None,
        };

        let response =
            match tokio::time::timeout(self.response_timeout, self.client.request(req)).await {
                Err(_) => return Err(ProxyError::UpstreamTimeout),
                Ok(Err(e)) => return Err(ProxyError::UpstreamUnreachable(describe(&e))),
                Ok(Ok(response)) => response,
            };

        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            let Some(client_upgrade) = client_upgrade else {
                return Err(ProxyError::UpstreamUnreachable(
                    "the upstream switched protocols without being asked".into(),
                ));
            };
            return Ok(splice(response, client_upgrade, tracker));
        }

        let (mut parts, body) = response.into_parts();
        hop::strip_hop_by_hop(&mut parts.headers);
        // HTTP/1.1 responses may carry their version; the client's own is used instead.
        parts.version = client_version;
        Ok(Response::from_parts(parts, ProxyBody::Stream(body)))
    }
}

/// Answers the client's upgrade with the upstream's `101` and splices the two upgraded
/// connections in a tracked task.
fn splice(
    mut upstream_response: Response<Incoming>,
    client_upgrade: hyper::upgrade::OnUpgrade,
    tracker: &Tracker,
) -> Response<ProxyBody> {
    let upstream_upgrade = hyper::upgrade::on(&mut upstream_response);
    tracker.spawn(async move {
        let (client, upstream) = match tokio::join!(client_upgrade, upstream_upgrade) {
            (Ok(c), Ok(u)) => (c, u),
            (Err(e), _) | (_, Err(e)) => {
                tracing::debug!(error = %e, "upgrade did not complete");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let mut upstream = TokioIo::new(upstream);
        if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            tracing::debug!(error = %e, "upgraded connection ended with an error");
        }
    });
    let (parts, _) = upstream_response.into_parts();
    let mut response = Response::from_parts(parts, ProxyBody::empty());
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

fn describe(e: &hyper_util::client::legacy::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
