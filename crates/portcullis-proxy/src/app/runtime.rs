//! Building the app from a validated configuration: the upstream pools (one per worker),
//! the session store, the providers, the login cookies and return-path rules, SCIM.

use std::sync::Arc;
use std::time::Duration;

use portcullis_config::{Config, ExposeSecret, Flow, ResponseMode, SessionStoreKind};
use portcullis_identity::Provider;
use portcullis_policy::{Policy, RouteTable};
use portcullis_session::cookie::CookieSpec;
use portcullis_session::{AnyStore, MemoryStore, RedisSettings, RedisStore, SessionLimits};

use super::{App, AppError, Auth};
use crate::assertion::Assertions;
use crate::forwarding::TrustedProxies;
use crate::inbound::BodyLimits;
use crate::introspection::IntrospectionCache;
use crate::login_state::LoginCookies;
use crate::metrics::{Metrics, RouteMetrics};
use crate::normalize::PathRules;
use crate::pages;
use crate::return_to::ReturnRules;
use crate::scim::Scim;
use crate::sessions::Sessions;
use crate::shutdown::Tracker;
use crate::throttle::Throttle;
use crate::upstream::Upstream;

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
        let metrics = Metrics {
            routes: RouteMetrics::new(routes.routes().iter().map(|r| r.label()).collect()),
            ..Metrics::default()
        };
        Ok(App {
            upstreams,
            trusted: TrustedProxies::new(config.trusted_proxies.clone()),
            auth,
            scim,
            tracker: Tracker::default(),
            metrics,
            store_outage: Throttle::new(Duration::from_secs(10)),
            forward_auth_blind: Throttle::new(Duration::from_secs(60)),
            bodies,
            upgrades: config.upstream.allowed_upgrades.clone(),
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
        let signals = config
            .ssf
            .iter()
            .map(|t| super::signals::Receiver::new(t.clone(), http.clone()))
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
            introspection: IntrospectionCache::new(config.auth.introspection_cache_ttl),
            signals,
        })
    }
}
