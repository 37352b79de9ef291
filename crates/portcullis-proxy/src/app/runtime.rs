//! Building the app from a validated configuration: the upstream pools (one per worker),
//! the session store, the providers, the login cookies and return-path rules, SCIM.

use std::sync::Arc;
use std::time::Duration;

use portcullis_config::{Config, ExposeSecret, Flow, ResponseMode, SessionStoreKind};
use portcullis_identity::Provider;
use portcullis_policy::{Policy, RouteTable};
use portcullis_session::cookie::CookieSpec;
use portcullis_session::{
    AnyStore, MemoryStore, RedisSettings, RedisStore, SentinelSettings, SessionLimits,
};

use super::{App, AppError, Auth};
use crate::assertion::Assertions;
use crate::forwarding::TrustedProxies;
use crate::inbound::BodyLimits;
use crate::introspection::IntrospectionCache;
use crate::login_state::LoginCookies;
use crate::metrics::{Metrics, StoreLatency};
use crate::normalize::PathRules;
use crate::pages;
use crate::return_to::ReturnRules;
use crate::scim::Scim;
use crate::sessions::Sessions;
use crate::shutdown::Tracker;
use crate::throttle::Throttle;
use crate::upstream::Upstream;

/// What identifies a session store's settings: the same fingerprint after a reload
/// means the sessions carry over.
pub(super) type StoreFingerprint = [u8; 32];

/// The store's kind and address, its sealing secrets and its limits, hashed.
fn store_fingerprint(config: &Config, secrets: &[&[u8]]) -> StoreFingerprint {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut part = |bytes: &[u8]| {
        ctx.update(&(bytes.len() as u64).to_be_bytes());
        ctx.update(bytes);
    };
    match &config.session.store {
        SessionStoreKind::Memory => part(b"memory"),
        SessionStoreKind::Redis(redis) => {
            part(b"redis");
            for url in &redis.urls {
                part(url.as_bytes());
            }
            part(&[u8::from(redis.cluster)]);
            part(redis.key_prefix.as_bytes());
            part(format!("{:?}", redis.ca_file).as_bytes());
            part(&redis.timeout.as_millis().to_be_bytes());
            if let Some(s) = &redis.sentinel {
                part(s.master_name.as_bytes());
                part(
                    s.password
                        .as_ref()
                        .map(|p| p.expose_secret().as_bytes())
                        .unwrap_or_default(),
                );
                part(&s.db.to_be_bytes());
            }
        }
    }
    for secret in secrets {
        part(secret);
    }
    part(&config.session.lifetime.as_secs().to_be_bytes());
    part(&config.session.idle_timeout.as_secs().to_be_bytes());
    part(&config.session.max_sessions.to_be_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

impl App {
    /// Builds the application from a validated configuration for `workers` server
    /// workers. `http` is the outbound client for identity-provider calls.
    pub async fn new(
        config: &Config,
        http: portcullis_identity::http::HttpClient,
        workers: usize,
    ) -> Result<App, AppError> {
        Self::build(config, http, workers, None).await
    }

    /// Builds the app that replaces `previous` after a configuration reload. What must
    /// outlive the swap carries over: the sessions (when the store's settings are
    /// unchanged), the tracking of upgraded connections, the reload counters.
    pub async fn reloaded(
        config: &Config,
        http: portcullis_identity::http::HttpClient,
        workers: usize,
        previous: &App,
    ) -> Result<App, AppError> {
        Self::build(config, http, workers, Some(previous)).await
    }

    async fn build(
        config: &Config,
        http: portcullis_identity::http::HttpClient,
        workers: usize,
        previous: Option<&App>,
    ) -> Result<App, AppError> {
        let upstreams = match &config.upstream_url {
            Some(url) => (0..workers.max(1))
                .map(|_| Upstream::new(url, &config.upstream))
                .collect::<Result<Vec<_>, _>>()?,
            None if config.forward_auth_only => Vec::new(),
            None => return Err(AppError::Missing("upstream_url")),
        };
        // Each distinct route upstream gets its pools, one per worker.
        let mut route_urls: Vec<url::Url> = Vec::new();
        for route in &config.routes {
            if let Some(url) = &route.upstream_url
                && !route_urls.contains(url)
            {
                route_urls.push(url.clone());
            }
        }
        let route_upstreams = route_urls
            .iter()
            .map(|url| {
                (0..workers.max(1))
                    .map(|_| Upstream::new(url, &config.upstream))
                    .collect::<Result<Vec<_>, _>>()
            })
            .collect::<Result<Vec<_>, _>>()?;
        let routes = RouteTable::new(&config.routes, |r| {
            r.upstream_url
                .as_ref()
                .and_then(|u| route_urls.iter().position(|known| known == u))
        });
        let providers: Vec<String> = config
            .auth
            .providers
            .iter()
            .map(|p| p.name.clone())
            .collect();
        let metrics = Metrics::new(
            &routes
                .routes()
                .iter()
                .map(|r| r.label())
                .collect::<Vec<_>>(),
            &providers,
            previous.map(|p| p.metrics.reload_counters()),
        );
        let kept = previous
            .and_then(|p| p.auth.as_ref())
            .map(|a| (a.store_fingerprint, &a.sessions, &a.memory));
        let auth = if config.auth.enabled {
            Some(Self::build_auth(config, http, metrics.store.clone(), kept)?)
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
        // `aud` of the assertion: the route's audience, else its upstream's origin.
        let origin = |u: &url::Url| u.origin().ascii_serialization();
        let default_audience = config
            .upstream_url
            .as_ref()
            .map(origin)
            .or_else(|| config.public_origin().map(|u| origin(&u)))
            .unwrap_or_default();
        let audiences = config
            .routes
            .iter()
            .map(|r| {
                r.audience
                    .clone()
                    .or_else(|| r.upstream_url.as_ref().map(origin))
                    .unwrap_or_else(|| default_audience.clone())
            })
            .collect();
        let assertions = match &config.identity_jwt {
            Some(jwt) => {
                let issuer = config
                    .public_origin()
                    .map(|u| u.origin().ascii_serialization())
                    .unwrap_or_default();
                Some(Assertions::load(jwt, issuer, workers).map_err(AppError::Setup)?)
            }
            None => None,
        };
        Ok(App {
            upstreams,
            trusted: TrustedProxies::new(config.trusted_proxies.clone()),
            auth,
            scim,
            tracker: previous.map_or_else(Tracker::default, |p| p.tracker.clone()),
            metrics,
            store_outage: Throttle::new(Duration::from_secs(10)),
            forward_auth_blind: Throttle::new(Duration::from_secs(60)),
            bodies,
            upgrades: config.upstream.allowed_upgrades.clone(),
            canary: config.diagnostics_canary,
            // Without routes every path is decided alike, so `;` parameters (a session id
            // in the path, say) pass; with routes, only where a route accepts them.
            paths: PathRules {
                allow_semicolon: routes.is_empty() || routes.any_path_parameters(),
            },
            routes,
            route_upstreams,
            audiences,
            default_audience,
            assertions,
            admin_token: config.admin.as_ref().map(|a| a.token.clone()),
        })
    }

    /// Opens the configured session store.
    fn open_store(
        config: &Config,
        secrets: &[&[u8]],
        store_latency: StoreLatency,
    ) -> Result<(Sessions, Option<Arc<MemoryStore>>), AppError> {
        let limits = SessionLimits {
            lifetime: config.session.lifetime,
            idle_timeout: config.session.idle_timeout,
        };
        Ok(match &config.session.store {
            SessionStoreKind::Memory => {
                let memory = Arc::new(MemoryStore::new(limits, config.session.max_sessions));
                (
                    Sessions::new(AnyStore::Memory(memory.clone()), store_latency),
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
                    sentinel: redis.sentinel.as_ref().map(|s| SentinelSettings {
                        master_name: s.master_name.clone(),
                        password: s.password.as_ref().map(|p| p.expose_secret().to_string()),
                        db: s.db,
                        tls: redis.urls.iter().any(|u| u.starts_with("rediss://")),
                    }),
                    ca_pem,
                    key_prefix: redis.key_prefix.clone(),
                    timeout: redis.timeout,
                };
                let store = RedisStore::new(&settings, secrets, limits)
                    .map_err(|e| AppError::Setup(format!("session.redis: {e}")))?;
                (
                    Sessions::new(AnyStore::Redis(Arc::new(store)), store_latency),
                    None,
                )
            }
        })
    }

    fn build_auth(
        config: &Config,
        http: portcullis_identity::http::HttpClient,
        store_latency: StoreLatency,
        kept: Option<(StoreFingerprint, &Sessions, &Option<Arc<MemoryStore>>)>,
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
        let secrets: Vec<&[u8]> = std::iter::once(secret.expose_secret().as_bytes())
            .chain(
                config
                    .session
                    .previous_secrets
                    .iter()
                    .map(|s| s.expose_secret().as_bytes()),
            )
            .collect();
        let fingerprint = store_fingerprint(config, &secrets);
        let (sessions, memory, fresh_store) = match kept {
            // The same store settings: the sessions live on across the reload.
            Some((kept_fingerprint, sessions, memory)) if kept_fingerprint == fingerprint => {
                (sessions.with_latency(store_latency), memory.clone(), false)
            }
            kept => {
                if kept.is_some() {
                    tracing::warn!(
                        "the session store's settings changed: sessions start afresh (on the memory store, everyone signs in again)"
                    );
                }
                let (sessions, memory) = Self::open_store(config, &secrets, store_latency)?;
                (sessions, memory, true)
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
        let signals = config
            .ssf
            .iter()
            .map(|t| super::signals::Receiver::new(t.clone(), http.clone()))
            .collect();
        Ok(Auth {
            providers,
            sessions,
            memory,
            store_fingerprint: fingerprint,
            fresh_store,
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
            introspection: IntrospectionCache::new(config.auth.introspection_cache_ttl),
            signals,
            refresh_paused: std::sync::Mutex::default(),
        })
    }
}
