//! The outbound HTTP client for every call to an identity provider (discovery, JWKS, token,
//! userinfo, the GitHub API and Microsoft Graph).
//!
//! Proxies: `GLOBAL_AGENT_HTTPS_PROXY` first (the name Node's global-agent and the
//! charts built on it use), then `HTTPS_PROXY`/`https_proxy`; likewise for plain http and
//! `NO_PROXY`. Redirects are never followed (a provider endpoint that redirects is a
//! misconfiguration, and following it could leak a client secret). Every call has a
//! timeout.

use std::path::PathBuf;

/// The client every identity-provider call goes through.
pub use reqwest::Client as HttpClient;
use std::time::Duration;

/// Settings for the outbound client.
#[derive(Debug, Clone)]
pub struct OutboundSettings {
    pub connect_timeout: Duration,
    /// Whole-request timeout.
    pub timeout: Duration,
    /// Extra trusted CA certificates (PEM bundle), added to the system roots.
    pub ca_file: Option<PathBuf>,
    pub proxies: ProxyEnv,
}

impl Default for OutboundSettings {
    fn default() -> Self {
        OutboundSettings {
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(15),
            ca_file: None,
            proxies: ProxyEnv::default(),
        }
    }
}

/// Proxy settings as read from the environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyEnv {
    pub https: Option<String>,
    pub http: Option<String>,
    pub no_proxy: Option<String>,
}

impl ProxyEnv {
    /// Reads the proxy variables from `vars` (usually `std::env::vars()`).
    pub fn from_vars<'a>(vars: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let vars: Vec<(&str, &str)> = vars.into_iter().filter(|(_, v)| !v.is_empty()).collect();
        let first = |names: &[&str]| {
            names.iter().find_map(|name| {
                vars.iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.to_string())
            })
        };
        ProxyEnv {
            https: first(&["GLOBAL_AGENT_HTTPS_PROXY", "HTTPS_PROXY", "https_proxy"]),
            http: first(&["GLOBAL_AGENT_HTTP_PROXY", "HTTP_PROXY", "http_proxy"]),
            no_proxy: first(&["GLOBAL_AGENT_NO_PROXY", "NO_PROXY", "no_proxy"]),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    #[error("the proxy URL {url} is not usable: {reason}")]
    Proxy { url: String, reason: String },
    #[error("cannot read the CA bundle {path}: {reason}")]
    CaBundle { path: PathBuf, reason: String },
    #[error("cannot build the HTTP client: {0}")]
    Build(String),
}

/// Builds the client. Environment proxy detection of the HTTP library is turned off and
/// replaced by [`ProxyEnv`], so exactly the documented variables apply.
pub fn client(settings: &OutboundSettings) -> Result<reqwest::Client, OutboundError> {
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("portcullis/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(settings.connect_timeout)
        .timeout(settings.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy();
    let no_proxy = settings
        .proxies
        .no_proxy
        .as_deref()
        .and_then(reqwest::NoProxy::from_string);
    if let Some(url) = &settings.proxies.https {
        let proxy = reqwest::Proxy::https(url.as_str()).map_err(|e| OutboundError::Proxy {
            url: url.clone(),
            reason: e.to_string(),
        })?;
        builder = builder.proxy(proxy.no_proxy(no_proxy.clone()));
    }
    if let Some(url) = &settings.proxies.http {
        let proxy = reqwest::Proxy::http(url.as_str()).map_err(|e| OutboundError::Proxy {
            url: url.clone(),
            reason: e.to_string(),
        })?;
        builder = builder.proxy(proxy.no_proxy(no_proxy));
    }
    if let Some(path) = &settings.ca_file {
        let pem = std::fs::read(path).map_err(|e| OutboundError::CaBundle {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let certs =
            reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| OutboundError::CaBundle {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        if certs.is_empty() {
            return Err(OutboundError::CaBundle {
                path: path.clone(),
                reason: "no PEM certificates found".into(),
            });
        }
        builder = builder.tls_certs_merge(certs);
    }
    builder
        .build()
        .map_err(|e| OutboundError::Build(e.to_string()))
}

/// Sends an outbound request (to an identity provider, Microsoft Graph, GitHub or a
/// shared-signals transmitter) in a client span `name` that continues the current
/// request's trace; with tracing off, just sends it.
pub(crate) async fn send(
    name: &'static str,
    request: reqwest::RequestBuilder,
) -> reqwest::Result<reqwest::Response> {
    use portcullis_core::trace;
    if !trace::enabled() {
        return request.send().await;
    }
    trace::in_span_result(name, trace::Kind::Client, async move {
        let (client, request) = request.build_split();
        let mut request = request?;
        trace::inject(request.headers_mut());
        client.execute(request).await
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn global_agent_proxy_wins_over_https_proxy() {
        let env = ProxyEnv::from_vars([
            ("HTTPS_PROXY", "http://corp:3128"),
            ("GLOBAL_AGENT_HTTPS_PROXY", "http://agent:3128"),
            ("NO_PROXY", "localhost,.internal"),
            ("http_proxy", ""),
        ]);
        assert_eq!(env.https.as_deref(), Some("http://agent:3128"));
        assert_eq!(env.http, None);
        assert_eq!(env.no_proxy.as_deref(), Some("localhost,.internal"));
    }

    #[test]
    fn a_missing_ca_bundle_is_a_clear_error() {
        let settings = OutboundSettings {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..OutboundSettings::default()
        };
        let err = client(&settings).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }
}
