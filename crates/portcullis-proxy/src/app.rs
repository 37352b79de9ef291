//! The app: what Portcullis does with one request, after the server has accepted it.
//!
//! Every request takes one path: normalize (the target, the host, the path; see
//! [`crate::normalize`]), then either one of Portcullis's own endpoints (the table in
//! [`endpoints`]) or protected traffic, which goes through the one decision
//! ([`decide`]: authenticate, authorize, identity) before it is forwarded
//! ([`proxied`]). Forward-auth asks the same decision about another request
//! ([`forward_auth`]). The submodules, by job:
//!
//! - [`runtime`]: building the app from the configuration;
//! - [`endpoints`]: the table of own paths, their methods (and so `405 Allow`);
//! - [`authn`]: who a request belongs to (session cookie, bearer token, token refresh);
//! - [`decide`]: the decision every entry point shares, and the one refusal log line;
//! - [`proxied`], [`forward_auth`]: the two entry points that use it;
//! - [`login`], [`account`], [`health`]: the login flow, `/me` and logout, health.
//!
//! This module and its children never log tokens, codes, cookies or session ids; they
//! log who and why.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use portcullis_core::trace;
use portcullis_identity::Provider;
use portcullis_policy::{Policy, RouteTable};
use portcullis_session::cookie::{self, CookieSpec};
use portcullis_session::{MemoryStore, SessionId};

use crate::assertion::Assertions;
use crate::body::ProxyBody;
use crate::error::ProxyError;
use crate::forwarding::TrustedProxies;
use crate::inbound::{BodyError, BodyLimits, RequestBody};
use crate::introspection::IntrospectionCache;
use crate::login_state::LoginCookies;
use crate::metrics::Metrics;
use crate::normalize::{self, Malformed, PathRules};
use crate::pages;
use crate::return_to::ReturnRules;
use crate::scim::Scim;
use crate::sessions::Sessions;
use crate::shutdown::Tracker;
use crate::throttle::Throttle;
use crate::upstream::Upstream;

mod account;
mod admin;
mod authn;
mod canary;
mod decide;
pub mod endpoints;
mod ext_authz;
pub(crate) mod forward_auth;
mod health;
mod idp_logout;
mod login;
mod proxied;
mod runtime;
mod signals;

#[cfg(test)]
mod tests;

use endpoints::Own;

/// The connection a request arrived on.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub tls: bool,
    /// The server worker (thread) serving the connection.
    pub worker: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Upstream(#[from] crate::upstream::UpstreamSetupError),
    #[error("authentication is on but {0} is not configured")]
    Missing(&'static str),
    #[error("{0}")]
    Setup(String),
}

/// Everything needed when authentication is on.
struct Auth {
    providers: Vec<Arc<Provider>>,
    sessions: Sessions,
    memory: Option<Arc<MemoryStore>>,
    /// The store's settings, hashed: a reload with the same keeps the sessions.
    store_fingerprint: runtime::StoreFingerprint,
    /// Whether this app opened its store (else it carried it over from before a reload,
    /// with its sweeper).
    fresh_store: bool,
    policy: Policy,
    session_cookie: CookieSpec,
    login: LoginCookies,
    redirect_url: String,
    callback_path: String,
    /// The callback path with the trailing slash toggled, accepted too.
    callback_alias: String,
    return_rules: ReturnRules,
    lifetime: Duration,
    /// Where users reach Portcullis (`public_url`, else the redirect URL's origin).
    public_origin: Option<url::Url>,
    bearer_tokens: bool,
    pass_access_token: bool,
    pass_id_token: bool,
    refresh_before: Duration,
    provider_logout: bool,
    post_logout_redirect: Option<String>,
    /// The implicit flow's fragment page (URL, path), served only when a provider uses it.
    implicit_redirect: Option<(String, String)>,
    sign_in_page: pages::SignInPage,
    /// Introspected opaque bearer tokens.
    introspection: IntrospectionCache,
    /// Shared Signals transmitters.
    signals: Vec<signals::Receiver>,
    /// Providers whose token endpoint failed or stalled, and until when refreshes with
    /// them are not tried (requests go on with the tokens they have).
    refresh_paused: std::sync::Mutex<Vec<(String, std::time::Instant)>>,
}

pub struct App {
    /// SCIM provisioning, when enabled.
    scim: Option<Scim>,
    /// One upstream client (and connection pool) per server worker, so a pooled
    /// connection is always driven by the thread that uses it. Empty when Portcullis
    /// only answers forward-auth.
    upstreams: Vec<Upstream>,
    trusted: TrustedProxies,
    auth: Option<Auth>,
    tracker: Tracker,
    metrics: Metrics,
    /// Session-store outages, logged once per interval.
    store_outage: Throttle,
    /// Forward-auth checks that could not be decided (no original URL with routes).
    forward_auth_blind: Throttle,
    /// Limits on the bodies Portcullis reads itself.
    bodies: BodyLimits,
    /// Protocols a client may upgrade to.
    upgrades: Vec<String>,
    paths: PathRules,
    /// The route table; empty without `routes`.
    routes: RouteTable,
    /// The routes' own upstreams, each one per worker, as `Route::upstream` indexes them.
    route_upstreams: Vec<Vec<Upstream>>,
    /// The `aud` of each route's identity assertion, by route index, and without a route.
    audiences: Vec<String>,
    default_audience: String,
    assertions: Option<Assertions>,
    /// The admin API's bearer token, with `admin.listen_addr`.
    admin_token: Option<portcullis_config::SecretString>,
    /// `diagnostics.canary`: serve the canary of `portcullis check --live`.
    canary: bool,
}

impl App {
    /// Closes worker `worker`'s idle upstream connections that are past the idle timeout
    /// or closed by the upstream.
    pub(crate) fn prune_upstreams(&self, worker: usize) {
        let pools = std::iter::once(&self.upstreams).chain(&self.route_upstreams);
        for pools in pools.filter(|p| !p.is_empty()) {
            pools[worker % pools.len()].prune();
        }
    }

    /// Starts the background work: provider discovery and key refresh, session sweeping.
    pub fn start_background(&self) {
        if let Some(auth) = &self.auth {
            for p in &auth.providers {
                p.spawn_maintenance();
            }
            if let Some(memory) = &auth.memory
                && auth.fresh_store
            {
                memory.spawn_sweeper(Duration::from_secs(60));
            }
        }
    }

    /// Counts a configuration reload: applied, or refused (the old configuration kept).
    pub fn count_reload(&self, applied: bool) {
        if applied {
            crate::metrics::inc(&self.metrics.reloads_succeeded);
        } else {
            crate::metrics::inc(&self.metrics.reload_failures);
        }
    }

    pub fn tracker(&self) -> &Tracker {
        &self.tracker
    }

    pub fn auth_enabled(&self) -> bool {
        self.auth.is_some()
    }

    /// Handles one request. Never fails: every error becomes a response here.
    /// Serves `req`. Taken by reference, like everything on its way down: a request
    /// taken by value is kept twice in the future (as the argument and as the local the
    /// body works on), and the whole future is copied into hyper's connection per request.
    pub async fn handle(
        &self,
        conn: &ConnInfo,
        req: &mut Request<RequestBody>,
    ) -> Response<ProxyBody> {
        if !trace::enabled() {
            return self.handle_request(conn, req).await;
        }
        // Small: it holds the request's future boxed.
        self.handle_traced(conn, req).await
    }

    async fn handle_traced(
        &self,
        conn: &ConnInfo,
        req: &mut Request<RequestBody>,
    ) -> Response<ProxyBody> {
        // The request's span: continues the client's trace (traceparent) or starts one.
        // Its attributes name the method, the path (never the query, which may hold a
        // code or a token), the host and the client; then the status.
        let attributes = || {
            let mut attributes = vec![
                trace::KeyValue::new("http.request.method", req.method().as_str().to_string()),
                trace::KeyValue::new("url.path", req.uri().path().to_string()),
                trace::KeyValue::new("client.address", conn.peer.ip().to_string()),
            ];
            if let Some(host) = req
                .headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
            {
                attributes.push(trace::KeyValue::new("server.address", host.to_string()));
            }
            attributes
        };
        let Some(cx) = trace::server_span(span_name(req.method()), req.headers(), attributes)
        else {
            return Box::pin(self.handle_request(conn, req)).await;
        };
        // The request's own future is boxed once; the wrappers hold only the box.
        let resp = trace::within(cx.clone(), Box::pin(self.handle_request(conn, req))).await;
        trace::finish(&cx, resp.status().as_u16());
        resp
    }

    /// Serves `req`, held by reference down to the upstream: moved from future to future
    /// (each keeps its own copy of what it was given), it would be copied at each step.
    async fn handle_request(
        &self,
        conn: &ConnInfo,
        req: &mut Request<RequestBody>,
    ) -> Response<ProxyBody> {
        if let Err(m) = normalize::check_request(req) {
            return malformed(m);
        }
        if crate::forwarding::unparsable_chain(conn.peer, req.headers(), &self.trusted) {
            tracing::debug!(peer = %conn.peer, "a trusted proxy's X-Forwarded-For is not a list of addresses: refused");
            return pages::json_error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "X-Forwarded-For from a trusted proxy is not a list of addresses",
            );
        }
        match normalize::normalize_path(req.uri().path(), self.paths) {
            Ok(std::borrow::Cow::Borrowed(_)) => {}
            Ok(std::borrow::Cow::Owned(path)) => match with_path(req.uri(), &path) {
                Some(uri) => *req.uri_mut() = uri,
                None => return malformed(Malformed::Target),
            },
            Err(m) if self.scim.is_some() && endpoints::SCIM.matches(req.uri().path()) => {
                return crate::scim::refused(m.explain());
            }
            Err(m) => return malformed(m),
        }
        let Some((own, endpoint)) = self.own_endpoint(req.uri().path()) else {
            return self.proxied(conn, req).await;
        };
        if !endpoint.allows(req.method()) {
            return ProxyError::MethodNotAllowed(endpoint.allow)
                .into_response(wants_html(req.headers()), endpoints::LOGIN.path);
        }
        // Each endpoint's future is boxed: awaited in place, the largest of them (a login,
        // a callback, SCIM) would set the size of every request's future, which is
        // copied at each await on the way up.
        let result = match own {
            Own::Scim => return Box::pin(self.scim(conn, taken(req))).await,
            Own::Verify => return Box::pin(self.verify(conn, taken(req))).await,
            Own::Callback => return Box::pin(self.callback(conn, taken(req))).await,
            Own::ImplicitRedirect => return self.implicit_redirect(),
            Own::Jwks => Ok(self.jwks()),
            Own::Healthz => Ok(pages::text(StatusCode::OK, "ok\n")),
            Own::Readyz => Ok(Box::pin(self.readyz()).await),
            Own::Status => Ok(self.status()),
            Own::Login => Box::pin(self.login(req)).await,
            Own::Me => Box::pin(self.me(req)).await,
            Own::Logout if req.method() == Method::POST => Box::pin(self.logout(conn, req)).await,
            Own::Logout => Ok(pages::logout_form(endpoints::LOGOUT.path)),
            Own::BackchannelLogout => return Box::pin(self.backchannel_logout(taken(req))).await,
            Own::FrontchannelLogout => return Box::pin(self.frontchannel_logout(req)).await,
            Own::Ssf => return Box::pin(self.ssf_push(taken(req))).await,
            // Proxying: decided and prepared like the app's requests, then echoed.
            Own::Canary if !self.upstreams.is_empty() => return self.proxied(conn, req).await,
            // Forward-auth only: the front proxy sends it here in place of the app.
            Own::Canary => {
                let origin = self.origin(conn, req.headers(), req.uri());
                return canary::echo(req, origin.client_ip, "forward-auth");
            }
        };
        result.unwrap_or_else(|e| e.into_response(wants_html(req.headers()), endpoints::LOGIN.path))
    }

    /// Which of Portcullis's own endpoints `path` is, if any: the fixed table, then the
    /// paths taken from the configuration (the callback and the implicit flow's page).
    fn own_endpoint(&self, path: &str) -> Option<(Own, &'static endpoints::Endpoint)> {
        if let Some(found) = endpoints::find(path) {
            return match found.0 {
                Own::Scim if self.scim.is_none() => None,
                Own::Jwks if self.assertions.is_none() => None,
                Own::BackchannelLogout | Own::FrontchannelLogout if self.auth.is_none() => None,
                Own::Ssf if self.auth.as_ref().is_none_or(|a| a.signals.is_empty()) => None,
                Own::Canary if !self.canary => None,
                _ => Some(found),
            };
        }
        let auth = self.auth.as_ref()?;
        if auth
            .implicit_redirect
            .as_ref()
            .is_some_and(|(_, p)| p == path)
        {
            return Some((Own::ImplicitRedirect, &endpoints::IMPLICIT_REDIRECT));
        }
        (path == auth.callback_path || path == auth.callback_alias)
            .then_some((Own::Callback, &endpoints::CALLBACK))
    }

    /// Where the request comes from and was addressed to, believing forwarding headers
    /// from trusted proxies only.
    fn origin(
        &self,
        conn: &ConnInfo,
        headers: &HeaderMap,
        uri: &http::Uri,
    ) -> crate::forwarding::Origin {
        crate::forwarding::resolve(conn.peer, conn.tls, headers, uri, &self.trusted)
    }

    /// SCIM requests, for the endpoint named in the path.
    async fn scim(&self, conn: &ConnInfo, req: Request<RequestBody>) -> Response<ProxyBody> {
        let Some(scim) = &self.scim else {
            return ProxyError::NotFound.into_response(false, endpoints::LOGIN.path);
        };
        let origin = self.origin(conn, req.headers(), req.uri());
        let host = origin
            .host
            .as_ref()
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost")
            .to_string();
        scim.handle(req, &format!("{}://{host}", origin.proto))
            .await
    }

    /// The identity assertion's public keys, for apps to verify it (cacheable for a
    /// short while: a rotation publishes the new key before it signs).
    fn jwks(&self) -> Response<ProxyBody> {
        let Some(assertions) = &self.assertions else {
            return ProxyError::NotFound.into_response(false, endpoints::LOGIN.path);
        };
        let mut resp = Response::new(ProxyBody::full(assertions.jwks()));
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/jwk-set+json"),
        );
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=300"),
        );
        resp
    }

    fn implicit_redirect(&self) -> Response<ProxyBody> {
        let callback = self
            .auth
            .as_ref()
            .map(|a| a.callback_path.as_str())
            .unwrap_or("/");
        pages::implicit_redirect(callback)
    }
}

/// Whether the client is a browser that wants a page (not an API call).
fn wants_html(headers: &HeaderMap) -> bool {
    if headers.contains_key("x-requested-with") {
        return false;
    }
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"))
}

fn query_param<B>(req: &Request<B>, name: &str) -> Option<String> {
    form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn with_cookie(mut resp: Response<ProxyBody>, set_cookie: &str) -> Response<ProxyBody> {
    if let Ok(v) = HeaderValue::from_str(set_cookie) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

/// The session id the request's cookie `name` holds, if it has the shape of one.
fn session_id(headers: &HeaderMap, name: &str) -> Option<SessionId> {
    let value = cookie::find_bytes(
        headers.get_all(header::COOKIE).iter().map(|v| v.as_bytes()),
        name,
    )?;
    SessionId::from_bytes(value)
}

fn session_cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    cookie::find(
        headers.get_all(header::COOKIE).iter().map(|v| v.as_bytes()),
        name,
    )
}

/// `uri` with its path replaced (the query kept).
/// The request, for an endpoint that takes it whole; an empty body is left behind.
fn taken(req: &mut Request<RequestBody>) -> Request<RequestBody> {
    std::mem::replace(req, Request::new(RequestBody::empty()))
}

fn with_path(uri: &http::Uri, path: &str) -> Option<http::Uri> {
    let mut parts = uri.clone().into_parts();
    let pq = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    parts.path_and_query = Some(pq.parse().ok()?);
    http::Uri::from_parts(parts).ok()
}

/// The answer to a request refused before routing.
fn malformed(m: Malformed) -> Response<ProxyBody> {
    if m == Malformed::Connect {
        let mut resp = pages::json_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            m.explain(),
        );
        resp.headers_mut().insert(
            header::ALLOW,
            HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
        );
        return resp;
    }
    pages::json_error(StatusCode::BAD_REQUEST, "bad_request", m.explain())
}

/// The answer when a body Portcullis reads itself was refused.
fn body_refused(e: BodyError, html: bool) -> Response<ProxyBody> {
    match e {
        BodyError::TooLarge => {
            ProxyError::PayloadTooLarge.into_response(html, endpoints::LOGIN.path)
        }
        BodyError::Timeout => pages::json_error(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            "the request body did not arrive in time",
        ),
        BodyError::Busy => {
            let mut r = pages::json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "too many requests are sending bodies at once; try again",
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            r
        }
        BodyError::Aborted => pages::json_error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "the request body was cut off",
        ),
    }
}

/// The name of a request's span: its method (a fixed set of names, so no span name is
/// built from what a client sent).
fn span_name(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "HTTP",
    }
}
