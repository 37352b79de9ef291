//! One request, one path: route -> normalize -> authenticate -> authorize -> forward (or
//! challenge). Portcullis's own endpoints are matched first; everything else is
//! protected traffic.
//!
//! The auth endpoints live here too: `/api/v1/auth/{status,login,me,logout}` and the
//! callback at the path of the configured redirect URL. This module never logs tokens,
//! codes, cookies or session ids; it logs who and why.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use portcullis_config::{Config, ExposeSecret, Flow, ResponseMode, SessionStoreKind};
use portcullis_core::html::escape;
use portcullis_identity::{IdentityError, LoginStep, Provider};
use portcullis_policy::{Policy, PolicyDecision, Subject};
use portcullis_session::cookie::{self, CookieSpec};
use portcullis_session::{
    AnyStore, MemoryStore, RedisSettings, RedisStore, SessionData, SessionId, SessionLimits,
    SessionStore,
};
use serde_json::json;

use crate::body::ProxyBody;
use crate::error::ProxyError;
use crate::forwarding::{self, TrustedProxies};
use crate::inbound::{BodyError, BodyLimits};
use crate::login_state::{LoginCookies, LoginState, LoginStateError, is_login_cookie};
use crate::metrics::{Metrics, inc};
use crate::normalize::{self, Malformed, PathRules};
use crate::pages::{self, Action};
use crate::return_to::{self, ReturnRules};
use crate::scim::{SCIM_PREFIX, Scim};
use crate::sessions::Sessions;
use crate::shutdown::Tracker;
use crate::throttle::Throttle;
use crate::upstream::{UpgradeRequest, Upstream};
use crate::{hop, redact};

mod authn;
mod forward_auth;

use authn::{Principal, session_tokens};

pub const STATUS_PATH: &str = "/api/v1/auth/status";
pub const LOGIN_PATH: &str = "/api/v1/auth/login";
pub const ME_PATH: &str = "/api/v1/auth/me";
pub const LOGOUT_PATH: &str = "/api/v1/auth/logout";
pub const HEALTHZ_PATH: &str = "/healthz";
pub const READYZ_PATH: &str = "/readyz";
pub const METRICS_PATH: &str = "/metrics";

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
    /// The implicit flow's fragment page, served only when a provider uses it.
    implicit_redirect: Option<(String, String)>,
    sign_in_page: pages::SignInPage,
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
    store_outage: OutageLog,
    /// Limits on the bodies Portcullis reads itself.
    bodies: BodyLimits,
    /// Protocols a client may upgrade to.
    upgrades: Vec<String>,
    paths: PathRules,
}

/// Logs a session-store outage once per interval with the number of requests refused,
/// instead of one line per request.
struct OutageLog(Throttle);

impl Default for OutageLog {
    fn default() -> Self {
        OutageLog(Throttle::new(Duration::from_secs(10)))
    }
}

impl OutageLog {
    fn report(&self, error: &ProxyError) {
        if let Some(refused) = self.0.hit() {
            tracing::error!(
                error = %error,
                refused,
                "session store unavailable: refusing requests that need a session (fail closed)"
            );
        }
    }
}

fn wants_html(headers: &HeaderMap) -> bool {
    if headers.contains_key("x-requested-with") {
        return false;
    }
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"))
}

fn query_param(req: &Request<Incoming>, name: &str) -> Option<String> {
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

fn session_cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    cookie::find(
        headers.get_all(header::COOKIE).iter().map(|v| v.as_bytes()),
        name,
    )
}

/// Joins the `Cookie` fields into one for the HTTP/1.1 upstream and removes
/// Portcullis's own cookies; allocates only when there is something to do.
fn forward_cookies(headers: &mut HeaderMap, session_cookie: Option<&str>) {
    let ours =
        |name: &[u8]| session_cookie.is_some_and(|s| name == s.as_bytes()) || is_login_cookie(name);
    let values = || headers.get_all(header::COOKIE).iter().map(|v| v.as_bytes());
    let Some(joined) = cookie::rewrite(values, ours) else {
        return;
    };
    headers.remove(header::COOKIE);
    if !joined.is_empty()
        && let Ok(v) = HeaderValue::from_bytes(&joined)
    {
        headers.insert(header::COOKIE, v);
    }
}

/// `uri` with its path replaced (the query kept).
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
    let mut resp = match m {
        Malformed::Connect => pages::json_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            m.explain(),
        ),
        _ => pages::json_error(StatusCode::BAD_REQUEST, "bad_request", m.explain()),
    };
    if m == Malformed::Connect {
        resp.headers_mut().insert(
            header::ALLOW,
            HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
        );
    }
    resp
}

/// The answer when a body Portcullis reads itself was refused.
fn body_refused(e: BodyError, html: bool) -> Response<ProxyBody> {
    match e {
        BodyError::TooLarge => ProxyError::PayloadTooLarge.into_response(html, LOGIN_PATH),
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

impl App {
    /// Builds the application from a validated configuration for `workers` server
    /// workers. `http` is the outbound client for identity-provider calls.
    pub async fn new(
        config: &Config,
        http: portcullis_identity::http::HttpClient,
        workers: usize,
    ) -> Result<App, AppError> {
        let upstreams = match &config.upstream_url {
            Some(url) => (0..workers.max(1))
                .map(|_| Upstream::new(url, &config.upstream))
                .collect::<Result<Vec<_>, _>>()?,
            None if config.forward_auth_only => Vec::new(),
            None => return Err(AppError::Missing("upstream_url")),
        };
        let auth = if config.auth.enabled {
            Some(Self::build_auth(config, http)?)
        } else {
            None
        };
        let bodies = BodyLimits::new(
            config.server.max_body_bytes,
            config.server.max_buffered_body_bytes,
            config.server.body_read_timeout,
        );
        let scim = if config.scim.enabled {
            let sessions = auth.as_ref().map(|a| a.sessions.clone());
            Some(
                Scim::open(config, sessions, bodies.clone())
                    .await
                    .map_err(AppError::Setup)?,
            )
        } else {
            None
        };
        Ok(App {
            upstreams,
            trusted: TrustedProxies::new(config.trusted_proxies.clone()),
            auth,
            scim,
            tracker: Tracker::default(),
            metrics: Metrics::default(),
            store_outage: OutageLog::default(),
            bodies,
            upgrades: config.upstream.allowed_upgrades.clone(),
            paths: PathRules::default(),
        })
    }

    fn build_auth(
        config: &Config,
        http: portcullis_identity::http::HttpClient,
    ) -> Result<Auth, AppError> {
        let secret = config
            .cookie_secret
            .as_ref()
            .ok_or(AppError::Missing("cookie_secret"))?;
        let redirect = config
            .auth
            .redirect_url
            .as_ref()
            .ok_or(AppError::Missing("oauth.redirect_url"))?;
        let limits = SessionLimits {
            lifetime: config.session.lifetime,
            idle_timeout: config.session.idle_timeout,
        };
        let secrets: Vec<&[u8]> = std::iter::once(secret.expose_secret().as_bytes())
            .chain(
                config
                    .session
                    .previous_secrets
                    .iter()
                    .map(|s| s.expose_secret().as_bytes()),
            )
            .collect();
        let (sessions, memory) = match &config.session.store {
            SessionStoreKind::Memory => {
                let memory = Arc::new(MemoryStore::new(limits, config.session.max_sessions));
                (
                    Sessions::new(AnyStore::Memory(memory.clone())),
                    Some(memory),
                )
            }
            SessionStoreKind::Redis(redis) => {
                let ca_pem = match &redis.ca_file {
                    Some(path) => Some(std::fs::read(path).map_err(|e| {
                        AppError::Setup(format!(
                            "cannot read session.redis.ca_file {}: {e}",
                            path.display()
                        ))
                    })?),
                    None => None,
                };
                let settings = RedisSettings {
                    urls: redis.urls.clone(),
                    cluster: redis.cluster,
                    ca_pem,
                    key_prefix: redis.key_prefix.clone(),
                    timeout: redis.timeout,
                };
                let store = RedisStore::new(&settings, &secrets, limits)
                    .map_err(|e| AppError::Setup(format!("session.redis: {e}")))?;
                (Sessions::new(AnyStore::Redis(Arc::new(store))), None)
            }
        };
        let secure = config.secure_cookies();
        let callback_path = config.callback_path();
        let callback_alias = match callback_path.strip_suffix('/') {
            Some(without) if !without.is_empty() => without.to_string(),
            _ => format!("{callback_path}/"),
        };
        let mut allowed_hosts = config.auth.allowed_redirect_hosts.clone();
        if let Some(domain) = &config.session.cookie_domain {
            // The session cookie reaches every host under the domain anyway.
            allowed_hosts.push(domain.clone());
            allowed_hosts.push(format!(".{domain}"));
        }
        if let Some(origin) = config.public_origin()
            && let Some(host) = origin.host_str()
        {
            allowed_hosts.push(match origin.port() {
                Some(p) => format!("{}:{p}", host.to_ascii_lowercase()),
                None => host.to_ascii_lowercase(),
            });
        }
        let providers = config
            .auth
            .providers
            .iter()
            .map(|p| {
                tracing::info!(provider = %p.name, "OAuth enabled with provider: {}", p.name);
                Arc::new(Provider::new(p.clone(), http.clone()))
            })
            .collect();
        Ok(Auth {
            providers,
            sessions,
            memory,
            policy: Policy::new(&config.auth.allowed_users, &config.auth.allowed_groups),
            session_cookie: CookieSpec {
                name: config.session.cookie_name.clone(),
                secure,
                max_age: config.session.lifetime,
                domain: config.session.cookie_domain.clone(),
            },
            login: LoginCookies::new(&secrets, secure, &callback_path, config.auth.login_timeout),
            redirect_url: redirect.to_string(),
            callback_path,
            callback_alias,
            return_rules: ReturnRules { allowed_hosts },
            lifetime: config.session.lifetime,
            public_origin: config.public_origin(),
            bearer_tokens: config.auth.bearer_tokens,
            pass_access_token: config.auth.pass_access_token,
            pass_id_token: config.auth.pass_id_token,
            refresh_before: config.auth.refresh_before,
            provider_logout: config.auth.provider_logout,
            post_logout_redirect: config
                .auth
                .post_logout_redirect_url
                .as_ref()
                .or(config.public_origin().as_ref())
                .map(|u| u.to_string()),
            sign_in_page: pages::SignInPage::new(&config.branding).map_err(AppError::Setup)?,
            implicit_redirect: config
                .auth
                .providers
                .iter()
                .any(|p| p.flow == Flow::Implicit && p.response_mode == ResponseMode::Fragment)
                .then_some(config.auth.implicit_redirect_url.as_ref())
                .flatten()
                .map(|u| (u.to_string(), u.path().to_string())),
        })
    }

    /// Starts the background work: provider discovery and key refresh, session sweeping.
    pub fn start_background(&self) {
        if let Some(auth) = &self.auth {
            for p in &auth.providers {
                p.spawn_maintenance();
            }
            if let Some(memory) = &auth.memory {
                memory.spawn_sweeper(Duration::from_secs(60));
            }
        }
    }

    pub fn tracker(&self) -> &Tracker {
        &self.tracker
    }

    pub fn auth_enabled(&self) -> bool {
        self.auth.is_some()
    }

    /// Handles one request. Never fails: every error becomes a response here.
    pub async fn handle(&self, conn: &ConnInfo, req: Request<Incoming>) -> Response<ProxyBody> {
        let (mut parts, body) = req.into_parts();
        if let Err(m) = normalize::check_request(&parts) {
            return malformed(m);
        }
        match normalize::normalize_path(parts.uri.path(), self.paths) {
            Ok(std::borrow::Cow::Borrowed(_)) => {}
            Ok(std::borrow::Cow::Owned(path)) => match with_path(&parts.uri, &path) {
                Some(uri) => parts.uri = uri,
                None => return malformed(Malformed::Target),
            },
            Err(m) if self.scim.is_some() && parts.uri.path().starts_with(SCIM_PREFIX) => {
                return crate::scim::refused(m.explain());
            }
            Err(m) => return malformed(m),
        }
        let req = Request::from_parts(parts, body);
        let path = req.uri().path();
        let method = req.method();
        let read_only = method == Method::GET || method == Method::HEAD;
        if let Some(scim) = &self.scim
            && path.starts_with(SCIM_PREFIX)
        {
            let origin =
                forwarding::resolve(conn.peer, conn.tls, req.headers(), req.uri(), &self.trusted);
            let host = origin
                .host
                .as_ref()
                .and_then(|h| h.to_str().ok())
                .unwrap_or("localhost")
                .to_string();
            return scim
                .handle(req, &format!("{}://{host}", origin.proto))
                .await;
        }
        if forward_auth::is_verify_path(path) {
            return self.verify(conn, req).await;
        }
        let result = match path {
            HEALTHZ_PATH if read_only => Ok(pages::text(StatusCode::OK, "ok\n")),
            READYZ_PATH if read_only => Ok(self.readyz().await),
            METRICS_PATH if read_only => Ok(self.metrics()),
            STATUS_PATH if read_only => Ok(pages::json(
                StatusCode::OK,
                &json!({"enabled": self.auth.is_some()}),
            )),
            LOGIN_PATH if read_only => self.login(&req).await,
            ME_PATH if read_only => self.me(&req).await,
            LOGOUT_PATH if method == Method::POST => self.logout(conn, &req).await,
            LOGOUT_PATH if read_only => Ok(logout_page()),
            HEALTHZ_PATH | READYZ_PATH | METRICS_PATH | STATUS_PATH | LOGIN_PATH | ME_PATH => {
                Err(ProxyError::MethodNotAllowed("GET, HEAD"))
            }
            LOGOUT_PATH => Err(ProxyError::MethodNotAllowed("GET, HEAD, POST")),
            p if self.is_implicit_redirect(p) => {
                if read_only {
                    return implicit_redirect_page(
                        self.auth
                            .as_ref()
                            .map(|a| a.callback_path.as_str())
                            .unwrap_or("/"),
                    );
                }
                Err(ProxyError::MethodNotAllowed("GET, HEAD"))
            }
            p if self.is_callback(p) => {
                if read_only || method == Method::POST {
                    return self.callback(req).await;
                }
                Err(ProxyError::MethodNotAllowed("GET, POST"))
            }
            _ => return self.protected(conn, req).await,
        };
        result.unwrap_or_else(|e| e.into_response(wants_html(req.headers()), LOGIN_PATH))
    }

    fn is_implicit_redirect(&self, path: &str) -> bool {
        self.auth
            .as_ref()
            .and_then(|a| a.implicit_redirect.as_ref())
            .is_some_and(|(_, p)| p == path)
    }

    fn is_callback(&self, path: &str) -> bool {
        self.auth
            .as_ref()
            .is_some_and(|a| path == a.callback_path || path == a.callback_alias)
    }

    async fn readyz(&self) -> Response<ProxyBody> {
        let mut checks = serde_json::Map::new();
        let mut ready = true;
        if let Some(auth) = &self.auth {
            for p in &auth.providers {
                let ok = p.is_ready();
                ready &= ok;
                checks.insert(
                    format!("provider:{}", p.name()),
                    json!(if ok { "ok" } else { "metadata not loaded" }),
                );
            }
            match auth.sessions.ready().await {
                Ok(()) => {
                    checks.insert("sessions".into(), json!("ok"));
                }
                Err(e) => {
                    ready = false;
                    checks.insert("sessions".into(), json!(e.to_string()));
                }
            }
        }
        if let Some(scim) = &self.scim {
            match scim.ready().await {
                Ok(()) => {
                    checks.insert("directory".into(), json!("ok"));
                }
                Err(e) => {
                    ready = false;
                    checks.insert("directory".into(), json!(e));
                }
            }
        }
        let status = if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        pages::json(status, &json!({"ready": ready, "checks": checks}))
    }

    fn metrics(&self) -> Response<ProxyBody> {
        let sessions = self
            .auth
            .as_ref()
            .and_then(|a| a.memory.as_ref())
            .map(|m| m.len());
        let mut resp = Response::new(ProxyBody::full(self.metrics.render(sessions)));
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        resp
    }

    async fn protected(&self, conn: &ConnInfo, mut req: Request<Incoming>) -> Response<ProxyBody> {
        let html = wants_html(req.headers());
        if self.upstreams.is_empty() {
            return pages::json_error(
                StatusCode::NOT_FOUND,
                "not_found",
                "this Portcullis answers forward-auth only (/api/v1/auth/verify); it proxies to no app",
            );
        }
        let origin =
            forwarding::resolve(conn.peer, conn.tls, req.headers(), req.uri(), &self.trusted);
        let mut who: Option<Principal> = None;
        if let Some(auth) = &self.auth {
            match self.authenticate(auth, req.headers()).await {
                Ok(Some(principal)) => who = Some(principal),
                Ok(None) => {
                    inc(&self.metrics.challenged);
                    return self.challenge(auth, &req, html).await;
                }
                Err(e) => return self.authentication_failed(e, html),
            }
            if let Some(principal) = &who
                && let PolicyDecision::Deny(reason) = auth.policy.decide(&Subject {
                    identity: principal.identity(),
                    teams: principal.teams(),
                    provisioning: principal.provisioning(),
                })
            {
                inc(&self.metrics.denied);
                let user = principal.identity().display();
                tracing::warn!(user = %user, client = %origin.client_ip, "User not allowed: {user}");
                return denied_response(&reason.to_string(), html);
            }
        }

        let upgrade =
            hop::upgrade_protocol(req.headers(), &self.upgrades).map(|protocol| UpgradeRequest {
                protocol,
                until: self.tunnel_lifetime(req.headers()),
            });
        let headers = req.headers_mut();
        hop::strip_hop_by_hop(headers);
        redact::strip_identity_headers(headers);
        forwarding::apply(headers, &origin);
        forward_cookies(
            headers,
            self.auth.as_ref().map(|a| a.session_cookie.name.as_str()),
        );
        if let Some(principal) = &who {
            redact::set_identity_headers(
                headers,
                &redact::FORWARDED,
                principal.identity(),
                principal.all_groups(),
            );
            if let Some(auth) = &self.auth
                && (auth.pass_access_token || auth.pass_id_token)
                && let Some(tokens) = principal.tokens()
            {
                redact::set_token_headers(
                    headers,
                    auth.pass_access_token
                        .then_some(tokens.access_token.as_str()),
                    tokens.id_token.as_deref().filter(|_| auth.pass_id_token),
                );
            }
        }
        let upstream = &self.upstreams[conn.worker % self.upstreams.len()];
        match upstream
            .forward(req, upgrade, origin.host.as_ref(), &self.tracker)
            .await
        {
            Ok(resp) => {
                inc(&self.metrics.forwarded);
                resp
            }
            Err(e) => {
                inc(&self.metrics.upstream_errors);
                tracing::warn!(error = %e, client = %origin.client_ip, "upstream request failed");
                e.into_response(html, LOGIN_PATH)
            }
        }
    }

    /// What ends a tunnel opened on this request: the end of its session. Without a
    /// session (open mode, a bearer token) only the client or the upstream ends it.
    fn tunnel_lifetime(
        &self,
        headers: &HeaderMap,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        let session = self.auth.as_ref().and_then(|auth| {
            let id = session_cookie_value(headers, &auth.session_cookie.name)
                .and_then(SessionId::parse)?;
            Some(auth.sessions.ended_for(id))
        });
        match session {
            Some(ended) => Box::pin(ended),
            None => Box::pin(std::future::pending()),
        }
    }

    /// The answer when authenticating could not be done: a refused bearer token, or a
    /// session store that cannot be reached (fail closed).
    fn authentication_failed(&self, e: ProxyError, html: bool) -> Response<ProxyBody> {
        match e {
            ProxyError::BadBearer(ref reason) => {
                inc(&self.metrics.challenged);
                // Debug only: anyone can send junk tokens; the client gets the reason.
                tracing::debug!(reason = %reason, "bearer token refused");
            }
            ProxyError::Store(_) => {
                inc(&self.metrics.store_errors);
                self.store_outage.report(&e);
            }
            _ => {}
        }
        e.into_response(html, LOGIN_PATH)
    }

    /// What an unauthenticated request gets: a browser is sent to log in, anything else
    /// gets a 401.
    async fn challenge(
        &self,
        auth: &Auth,
        req: &Request<Incoming>,
        html: bool,
    ) -> Response<ProxyBody> {
        let had_cookie = session_cookie_value(req.headers(), &auth.session_cookie.name).is_some();
        let return_to = req
            .uri()
            .path_and_query()
            .and_then(|pq| return_to::validate(pq.as_str(), &auth.return_rules))
            .unwrap_or_else(|| "/".into());
        let navigates = req.method() == Method::GET || req.method() == Method::HEAD;
        let mut resp = if html && navigates {
            match auth.providers.as_slice() {
                [only] => self
                    .start_login(auth, only, return_to)
                    .await
                    .unwrap_or_else(|e| e.into_response(true, LOGIN_PATH)),
                _ => pages::redirect(&login_link(None, &return_to)),
            }
        } else if html {
            unauthenticated(true, &login_link(None, &return_to))
        } else {
            unauthenticated(false, LOGIN_PATH)
        };
        if had_cookie {
            resp = with_cookie(resp, &auth.session_cookie.clear());
        }
        resp
    }

    async fn start_login(
        &self,
        auth: &Auth,
        provider: &Provider,
        return_to: String,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let config = provider.config();
        let implicit = config.flow == Flow::Implicit;
        let redirect_uri = match (&auth.implicit_redirect, implicit, config.response_mode) {
            (Some((url, _)), true, ResponseMode::Fragment) => url.as_str(),
            _ => auth.redirect_url.as_str(),
        };
        let form_post = implicit && config.response_mode == ResponseMode::FormPost;
        let request = provider.authorization_request(redirect_uri).await?;
        let state = LoginState {
            state: request.state,
            nonce: request.nonce,
            pkce_verifier: request.pkce_verifier,
            provider: provider.name().to_string(),
            return_to,
            issued_at: portcullis_core::time::unix_now(),
        };
        Ok(with_cookie(
            pages::redirect(&request.url),
            &auth.login.set(&state, form_post),
        ))
    }

    async fn login(&self, req: &Request<Incoming>) -> Result<Response<ProxyBody>, ProxyError> {
        let Some(auth) = &self.auth else {
            return Ok(pages::json_error(
                StatusCode::NOT_FOUND,
                "auth_disabled",
                "authentication is disabled",
            ));
        };
        let return_to = query_param(req, "rd")
            .and_then(|rd| return_to::validate(&rd, &auth.return_rules))
            .unwrap_or_else(|| "/".into());
        let chosen = match query_param(req, "provider") {
            Some(name) => match auth.providers.iter().find(|p| p.name() == name) {
                Some(p) => p,
                None => return Ok(self.provider_choice(auth, &return_to, StatusCode::BAD_REQUEST)),
            },
            None => match auth.providers.as_slice() {
                [only] => only,
                _ => return Ok(self.provider_choice(auth, &return_to, StatusCode::OK)),
            },
        };
        self.start_login(auth, chosen, return_to).await
    }

    /// The page offering one sign-in button per provider.
    fn provider_choice(
        &self,
        auth: &Auth,
        return_to: &str,
        status: StatusCode,
    ) -> Response<ProxyBody> {
        let buttons: Vec<(String, String)> = auth
            .providers
            .iter()
            .map(|p| {
                (
                    format!("Log in with {}", p.display_name()),
                    login_link(Some(p.name()), return_to),
                )
            })
            .collect();
        auth.sign_in_page.render(status, &buttons)
    }

    async fn callback(&self, req: Request<Incoming>) -> Response<ProxyBody> {
        let Some(auth) = &self.auth else {
            return ProxyError::NotFound.into_response(true, LOGIN_PATH);
        };
        let headers = req.headers().clone();
        let params: Vec<(String, String)> = if req.method() == Method::POST {
            // Only a browser that started a login here has a login cookie; nobody else
            // gets to make Portcullis hold a body.
            if !auth.login.any_open(&headers) {
                return ProxyError::BadLogin(LoginStateError::Missing.explain().to_string())
                    .into_response(true, LOGIN_PATH);
            }
            match self.bodies.read(&headers, req.into_body()).await {
                Ok(body) => parse_form(&body.bytes),
                Err(e) => return body_refused(e, true),
            }
        } else {
            parse_form(req.uri().query().unwrap_or("").as_bytes())
        };
        let state = param(&params, "state").unwrap_or("");
        let clear_login = auth.login.clear(state);
        let mut resp = match self.finish_login(auth, &headers, state, &params).await {
            Ok(resp) => {
                inc(&self.metrics.logins_succeeded);
                resp
            }
            Err(e) => {
                if matches!(
                    e,
                    ProxyError::ProviderRefused(_) | ProxyError::Denied { .. }
                ) {
                    inc(&self.metrics.logins_refused);
                } else {
                    inc(&self.metrics.logins_failed);
                }
                e.into_response(true, LOGIN_PATH)
            }
        };
        if let Some(clear) = clear_login {
            resp = with_cookie(resp, &clear);
        }
        resp
    }

    async fn finish_login(
        &self,
        auth: &Auth,
        headers: &HeaderMap,
        state: &str,
        params: &[(String, String)],
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let param = |name: &str| param(params, name);
        if let Some(error) = param("error") {
            let description = param("error_description").unwrap_or("");
            tracing::warn!(error, description, "identity provider refused the login");
            let why = if description.is_empty() {
                error.to_string()
            } else {
                format!("{error} ({description})")
            };
            return Err(ProxyError::ProviderRefused(why));
        }
        let login = auth.login.take(headers, state).map_err(|e| {
            tracing::warn!(reason = ?e, "login callback refused: state does not match a login started in this browser");
            ProxyError::BadLogin(e.explain().to_string())
        })?;
        let provider = auth
            .providers
            .iter()
            .find(|p| p.name() == login.provider)
            .ok_or_else(|| {
                ProxyError::BadLogin(
                    "The sign-in was started with a provider that is no longer configured.".into(),
                )
            })?;
        // The answer must be the one this provider's flow produces: never a code for an
        // implicit login or an ID token for a code-flow login.
        let implicit = provider.config().flow == Flow::Implicit;
        let (identity, tokens) = if implicit {
            let id_token = param("id_token").filter(|t| !t.is_empty()).ok_or_else(|| {
                ProxyError::BadLogin("The identity provider sent no ID token.".into())
            })?;
            let identity = provider
                .finish_implicit(id_token, &login.nonce)
                .await
                .map_err(|e| self.login_failed(provider, LoginStep::Identity, e))?;
            (identity, None)
        } else {
            let code = param("code").filter(|c| !c.is_empty()).ok_or_else(|| {
                ProxyError::BadLogin("The identity provider sent no authorization code.".into())
            })?;
            let (identity, tokens) = provider
                .finish_login(code, &login.pkce_verifier, &auth.redirect_url, &login.nonce)
                .await
                .map_err(|(step, e)| self.login_failed(provider, step, e))?;
            (identity, Some(tokens))
        };
        let (provisioning, directory_user, teams) = self.directory_view(&identity).await?;
        if let PolicyDecision::Deny(reason) = auth.policy.decide(&Subject {
            identity: &identity,
            teams: &teams,
            provisioning,
        }) {
            tracing::warn!(user = %identity.display(), provider = %identity.provider, reason = %reason, "User not allowed: {}", identity.display());
            return Err(ProxyError::Denied {
                who: identity.display().to_string(),
                reason: reason.to_string(),
            });
        }
        // A fresh session every login; any session the browser had ends.
        if let Some(old) =
            session_cookie_value(headers, &auth.session_cookie.name).and_then(SessionId::parse)
        {
            let _ = auth.sessions.delete(&old).await;
        }
        let who = identity.display().to_string();
        let mut data = SessionData::new(identity, auth.lifetime);
        data.directory_user = directory_user;
        data.teams = teams;
        data.tokens = tokens.as_ref().and_then(|t| session_tokens(auth, t));
        let id = auth.sessions.create(data).await?;
        tracing::info!(user = %who, provider = %provider.name(), "login succeeded");
        Ok(with_cookie(
            pages::redirect(&login.return_to),
            &auth.session_cookie.set(id.expose()),
        ))
    }

    /// Logs a failed login under the message the design documents name for its step,
    /// and turns a provider-level refusal into a denial.
    fn login_failed(&self, provider: &Provider, step: LoginStep, e: IdentityError) -> ProxyError {
        let name = provider.name();
        match e {
            _ if step == LoginStep::TokenExchange => {
                tracing::warn!(provider = %name, "OAuth token exchange failed: {e}")
            }
            IdentityError::TokenExchange { .. } => {
                tracing::warn!(provider = %name, "OAuth token exchange failed: {e}")
            }
            IdentityError::InvalidToken(ref reason) => {
                tracing::warn!(provider = %name, "ID token rejected: {reason}")
            }
            IdentityError::NotAllowed { who, reason } => {
                tracing::warn!(provider = %name, user = %who, reason = %reason, "User not allowed: {who}");
                return ProxyError::Denied { who, reason };
            }
            IdentityError::ProviderUnavailable { .. } | IdentityError::UserInfo(_) => {
                tracing::warn!(provider = %name, "Failed to get user info: {e}")
            }
        }
        ProxyError::Identity(e)
    }

    async fn me(&self, req: &Request<Incoming>) -> Result<Response<ProxyBody>, ProxyError> {
        let principal = match &self.auth {
            Some(auth) => self.authenticate(auth, req.headers()).await?,
            None => None,
        };
        Ok(match principal {
            Some(p) => pages::json(StatusCode::OK, &principal_json(&p)),
            None => pages::json_error(StatusCode::UNAUTHORIZED, "unauthenticated", "no session"),
        })
    }

    async fn logout(
        &self,
        conn: &ConnInfo,
        req: &Request<Incoming>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let Some(auth) = &self.auth else {
            return Ok(pages::json(
                StatusCode::OK,
                &json!({"message": "Logged out successfully"}),
            ));
        };
        if !self.same_site_post(auth, conn, req) {
            tracing::warn!("logout refused: the request came from another site");
            return Err(ProxyError::CrossSite);
        }
        // `?everywhere=true` ends every session of the user, on every device and replica.
        let everywhere = query_param(req, "everywhere").is_some_and(|v| v == "true" || v == "1");
        let mut ended = 0;
        let mut provider_logout = None;
        if let Some(id) = session_cookie_value(req.headers(), &auth.session_cookie.name)
            .and_then(SessionId::parse)
        {
            if let Some(session) = auth.sessions.load(&id).await? {
                if everywhere {
                    ended = auth
                        .sessions
                        .revoke_user(&session.identity.user_key())
                        .await?;
                    tracing::info!(user = %session.identity.display(), sessions = ended, "logged out everywhere");
                } else {
                    auth.sessions.delete(&id).await?;
                    ended = 1;
                }
                if auth.provider_logout {
                    provider_logout = self.provider_logout_url(auth, &session).await;
                }
            }
            inc(&self.metrics.logouts);
        }
        let mut body = json!({"message": "Logged out successfully", "sessions_ended": ended});
        if let Some(url) = &provider_logout {
            body["logout_url"] = json!(url);
        }
        let resp = match (&provider_logout, wants_html(req.headers())) {
            // A browser's sign-out form: on to the provider, which comes back after.
            (Some(url), true) => {
                let mut r = pages::redirect(url);
                *r.status_mut() = StatusCode::SEE_OTHER;
                r
            }
            (None, true) => pages::page(
                StatusCode::OK,
                "Signed out",
                "You are signed out.",
                Some(Action {
                    label: "Sign in again",
                    href: LOGIN_PATH,
                }),
            ),
            (_, false) => pages::json(StatusCode::OK, &body),
        };
        Ok(with_cookie(resp, &auth.session_cookie.clear()))
    }

    /// Whether a state-changing POST comes from a page of this application, not from
    /// another site (login CSRF's sibling: a link that logs users out everywhere). A
    /// browser names the page's origin in `Origin` (and says `Sec-Fetch-Site`); it must
    /// be the host the request was sent to or one Portcullis may send users back to.
    /// Clients that are not browsers send neither and are let through.
    fn same_site_post(&self, auth: &Auth, conn: &ConnInfo, req: &Request<Incoming>) -> bool {
        let headers = req.headers();
        let site = headers
            .get("sec-fetch-site")
            .and_then(|v| v.to_str().ok())
            .map(str::to_ascii_lowercase);
        let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
            return site.is_none_or(|s| s == "same-origin" || s == "none");
        };
        if site.as_deref() == Some("same-origin") {
            return true;
        }
        let here = forwarding::resolve(conn.peer, conn.tls, headers, req.uri(), &self.trusted);
        let own = here
            .host
            .as_ref()
            .and_then(|h| h.to_str().ok())
            .map(|h| format!("{}://{h}", here.proto));
        if own
            .as_deref()
            .is_some_and(|o| o.eq_ignore_ascii_case(origin))
        {
            return true;
        }
        origin != "null" && return_to::validate(&format!("{origin}/"), &auth.return_rules).is_some()
    }

    /// OpenID Connect RP-Initiated Logout 1.0: the provider's `end_session_endpoint`
    /// with the session's ID token as hint, our client id, and where to come back to.
    async fn provider_logout_url(&self, auth: &Auth, session: &SessionData) -> Option<String> {
        let provider = auth
            .providers
            .iter()
            .find(|p| p.name() == session.identity.provider)?;
        let endpoint = provider.end_session_endpoint().await?;
        let mut url = url::Url::parse(&endpoint).ok()?;
        {
            let mut q = url.query_pairs_mut();
            if let Some(hint) = session.tokens.as_ref().and_then(|t| t.id_token.as_deref()) {
                q.append_pair("id_token_hint", hint);
            }
            q.append_pair("client_id", &provider.config().client_id);
            if let Some(back) = &auth.post_logout_redirect {
                q.append_pair("post_logout_redirect_uri", back);
            }
        }
        Some(url.into())
    }
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn parse_form(bytes: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(bytes).into_owned().collect()
}

/// `/api/v1/auth/login?provider=...&rd=...`
fn login_link(provider: Option<&str>, return_to: &str) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    if let Some(p) = provider {
        query.append_pair("provider", p);
    }
    query.append_pair("rd", return_to);
    format!("{LOGIN_PATH}?{}", query.finish())
}

/// What `/api/v1/auth/me` answers: the identity, with the provider's groups and the
/// directory's teams together under `groups`.
fn principal_json(principal: &Principal) -> serde_json::Value {
    let who = principal.identity();
    json!({
        "id": who.id,
        "email": who.email,
        "name": who.name,
        "username": who.username,
        "provider": who.provider,
        "groups": principal.all_groups().collect::<Vec<_>>(),
    })
}

/// `401` for a request without a session that is not sent to log in: a page with a
/// sign-in link for browsers, JSON naming the login URL for anything else.
fn unauthenticated(html: bool, login_href: &str) -> Response<ProxyBody> {
    if html {
        return pages::page(
            StatusCode::UNAUTHORIZED,
            "Sign in required",
            "You need to sign in to continue.",
            Some(Action {
                label: "Sign in",
                href: login_href,
            }),
        );
    }
    let mut r = pages::json(
        StatusCode::UNAUTHORIZED,
        &json!({"error": "unauthenticated", "message": "sign in required", "login_url": login_href}),
    );
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"portcullis\""),
    );
    r
}

fn denied_response(reason: &str, html: bool) -> Response<ProxyBody> {
    if html {
        pages::page(
            StatusCode::FORBIDDEN,
            "Access denied",
            &format!(
                "You are signed in, but {reason}. Ask an administrator for access, or sign out and use another account."
            ),
            Some(Action {
                label: "Sign out",
                href: LOGOUT_PATH,
            }),
        )
    } else {
        pages::json_error(StatusCode::FORBIDDEN, "forbidden", reason)
    }
}

/// The implicit flow's fragment page: the provider put the answer in the URL fragment,
/// which only the browser sees; this page posts it to the callback on its own origin (a
/// fixed relative path, never a URL taken from the answer) and drops it from history.
fn implicit_redirect_page(callback_path: &str) -> Response<ProxyBody> {
    let nonce = portcullis_core::random::token();
    let script = "var f=document.getElementById('answer');\
new URLSearchParams(location.hash.slice(1)).forEach(function(v,k){\
var i=document.createElement('input');i.type='hidden';i.name=k;i.value=v;f.appendChild(i);});\
history.replaceState(null,'',location.pathname);f.submit();";
    let inner = format!(
        "<h1>Signing you in</h1>\n<form id=\"answer\" method=\"post\" action=\"{}\"></form>\n<noscript><p>Signing in with this provider needs JavaScript to pass the answer on. Turn it on, or ask the administrator to use the form_post response mode.</p></noscript>\n<script nonce=\"{nonce}\">{script}</script>",
        escape(callback_path)
    );
    let mut resp = pages::raw_html(StatusCode::OK, pages::html_document("Signing in", &inner));
    if let Ok(v) = HeaderValue::from_str(&format!(
        "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"
    )) {
        resp.headers_mut().insert(
            header::HeaderName::from_static("content-security-policy"),
            v,
        );
    }
    resp.headers_mut().insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

fn logout_page() -> Response<ProxyBody> {
    let inner = format!(
        "<h1>Sign out</h1>\n<p>End your session on this application?</p>\n<form method=\"post\" action=\"{LOGOUT_PATH}\"><button type=\"submit\">Sign out</button></form>"
    );
    pages::raw_html(StatusCode::OK, pages::html_document("Sign out", &inner))
}
