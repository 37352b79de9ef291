//! The typed configuration that the rest of Portcullis receives. Built only by
//! [`crate::load`]; every field here has already been validated.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use secrecy::SecretString;
use url::Url;

use crate::branding::Branding;

/// The path of the callback when only `public_url` is configured.
pub const DEFAULT_CALLBACK_PATH: &str = "/api/v1/auth/callback";

/// The shortest cookie secret accepted, in bytes.
pub const MIN_SECRET_BYTES: usize = 32;

#[derive(Debug, Clone)]
pub struct Config {
    pub listen_addr: SocketAddr,
    /// The app behind Portcullis; `None` only with `forward_auth_only`.
    pub upstream_url: Option<Url>,
    /// Answer forward-auth checks (and serve login, SCIM, health) without proxying to an
    /// app: the deployment behind an ingress's `auth-url`.
    pub forward_auth_only: bool,
    pub upstream: UpstreamConfig,
    /// The externally visible origin of Portcullis (`https://app.example.com`).
    pub public_url: Option<Url>,
    /// Master secret for the login-state cookie; at least 32 bytes.
    pub cookie_secret: Option<SecretString>,
    pub tls: Option<TlsConfig>,
    /// Peers whose `X-Forwarded-*` headers are believed.
    pub trusted_proxies: Vec<IpNet>,
    pub server: ServerConfig,
    pub auth: AuthConfig,
    pub session: SessionConfig,
    pub scim: ScimConfig,
    pub log: LogConfig,
    /// Extra CA certificates (PEM) trusted for calls to identity providers, besides the
    /// system's.
    pub outbound_ca_file: Option<PathBuf>,
    pub branding: Branding,
    /// The route table; empty: every request is decided by the global allow-lists.
    pub routes: Vec<RouteConfig>,
    pub identity_jwt: Option<IdentityJwtConfig>,
    /// The admin listener; `None` when `admin.listen_addr` is not set.
    pub admin: Option<AdminConfig>,
    /// Envoy's gRPC check; `None` when `ext_authz.listen_addr` is not set.
    pub ext_authz: Option<ExtAuthzConfig>,
    /// Shared Signals transmitters.
    pub ssf: Vec<SsfTransmitterConfig>,
    /// Serve the canary that `portcullis check --live` probes through the real chain.
    pub diagnostics_canary: bool,
}

/// The admin listener: the admin API, health and metrics, on an address of its own.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub listen_addr: SocketAddr,
    /// The bearer token of the admin API; at least 32 bytes.
    pub token: SecretString,
}

/// The listener of Envoy's `envoy.service.auth.v3.Authorization/Check` (gRPC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtAuthzConfig {
    pub listen_addr: SocketAddr,
    /// TLS with the public listener's certificate; else h2c.
    pub tls: bool,
}

/// A Shared Signals (SSF 1.0) transmitter whose events Portcullis receives.
#[derive(Debug, Clone)]
pub struct SsfTransmitterConfig {
    /// The configured name: events are pushed to `/api/v1/auth/ssf/<name>`.
    pub name: String,
    /// The transmitter's configuration document (`issuer`, `jwks_uri`).
    pub metadata_url: Url,
    /// Push delivery (RFC 8935): the bearer token the transmitter sends.
    pub push_token: Option<SecretString>,
    /// Poll delivery (RFC 8936).
    pub poll: Option<SsfPollConfig>,
    /// The `aud` events must carry.
    pub audience: String,
    /// The login provider whose users the events describe.
    pub provider: String,
}

/// Where and how often to poll a transmitter.
#[derive(Debug, Clone)]
pub struct SsfPollConfig {
    pub url: Url,
    pub token: Option<SecretString>,
    pub interval: Duration,
}

/// One route: which requests it takes, and who may make them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConfig {
    /// Its position in the table (0-based), for messages.
    pub index: usize,
    pub name: Option<String>,
    /// Lowercase; `*.example.com` for any subdomain.
    pub host: Option<String>,
    pub path: Option<String>,
    pub path_prefix: Option<String>,
    /// Uppercase; empty: any method.
    pub methods: Vec<String>,
    pub public: bool,
    pub allow: RuleSet,
    pub deny: RuleSet,
    pub max_auth_age: Option<Duration>,
    pub acr_values: Vec<String>,
    pub provider: Option<String>,
    pub upstream_url: Option<Url>,
    pub audience: Option<String>,
    /// Accept `;` path parameters on this route.
    pub path_parameters: bool,
}

impl RouteConfig {
    /// `route 2 (admin)` or `route 2`, for messages.
    pub fn label(&self) -> String {
        match &self.name {
            Some(name) => format!("route {} ({name})", self.index),
            None => format!("route {}", self.index),
        }
    }
}

/// Conditions of a route's `allow` (any one admits) or `deny` (any one refuses).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleSet {
    pub authenticated: bool,
    /// Lowercase emails or user names.
    pub users: Vec<String>,
    /// Lowercase.
    pub emails: Vec<String>,
    /// Lowercase, without `@`.
    pub domains: Vec<String>,
    pub groups: Vec<String>,
    /// Claim name and the values that match.
    pub claims: Vec<(String, Vec<String>)>,
}

impl RuleSet {
    pub fn is_empty(&self) -> bool {
        !self.authenticated
            && self.users.is_empty()
            && self.emails.is_empty()
            && self.domains.is_empty()
            && self.groups.is_empty()
            && self.claims.is_empty()
    }
}

/// The signed identity assertion for the app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityJwtConfig {
    pub signing_key_file: PathBuf,
    pub previous_key_files: Vec<PathBuf>,
    pub lifetime: Duration,
}

/// SCIM provisioning.
#[derive(Debug, Clone)]
pub struct ScimConfig {
    pub enabled: bool,
    /// `sqlite://<path>` (default) or `postgres://...`; may hold a password.
    pub database_url: SecretString,
    pub endpoints: Vec<ScimEndpointConfig>,
    /// With `scim.required`, the login providers whose users need no provisioning.
    pub exempt_providers: Vec<String>,
}

/// One SCIM root (`/v1/scim/v2/<name>`) and its credential.
#[derive(Debug, Clone)]
pub struct ScimEndpointConfig {
    pub name: String,
    /// HTTP Basic user name and password (Okta).
    pub basic: Option<(String, SecretString)>,
    /// Static bearer token (Entra).
    pub token: Option<SecretString>,
    /// Admit at login only users provisioned here and active.
    pub required: bool,
    /// The login provider whose users this directory describes.
    pub provider: String,
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub connect_timeout: Duration,
    /// Longest wait for the upstream's response headers before answering 504.
    pub response_timeout: Duration,
    /// How long an idle pooled connection is kept.
    pub idle_timeout: Duration,
    pub max_idle_per_host: usize,
    /// Send the client's `Host` to the upstream instead of the upstream's own authority.
    pub preserve_host: bool,
    /// Protocols a client may upgrade to (lowercase); never `h2c`.
    pub allowed_upgrades: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// After SIGTERM, how long in-flight requests may take before the process exits.
    pub shutdown_grace: Duration,
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
    /// Largest body accepted by Portcullis's own endpoints (the callback form, SCIM).
    pub max_body_bytes: usize,
    /// Longest time a body for Portcullis's own endpoints may take to arrive.
    pub body_read_timeout: Duration,
    /// Most bytes of such bodies held at once, over all connections; beyond it a
    /// request gets 503 instead of memory.
    pub max_buffered_body_bytes: usize,
    /// Most client connections open at once; 0: derived from the open-files limit.
    pub max_connections: usize,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout: Duration,
    /// Worker threads serving connections; 0 means one per available CPU.
    pub workers: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Authorization code with PKCE: the default.
    Code,
    /// `response_type=id_token`, answered by `form_post` or, for providers that only
    /// return a fragment, through the page at the implicit redirect path.
    Implicit,
}

/// How the provider returns the implicit flow's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseMode {
    /// A form the browser posts to the callback (the default).
    FormPost,
    /// The URL fragment of the redirect page, which posts it to the callback.
    Fragment,
}

/// How a provider is talked to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderKind {
    /// Any OpenID Connect provider found by discovery (Okta, Auth0, Google, ADFS, custom).
    Oidc { discovery_url: Url },
    /// Microsoft Entra ID: OpenID Connect with tenant checks and group overage.
    Entra(EntraConfig),
    /// GitHub or GitHub Enterprise: OAuth 2.0 and the REST API (not OpenID Connect).
    GitHub(GitHubConfig),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntraConfig {
    pub discovery_url: Url,
    /// A tenant id or domain, or `common` / `organizations` (multi-tenant).
    pub tenant: String,
    /// For a multi-tenant app: the tenants (`tid`) whose users may sign in.
    pub allowed_tenants: Vec<String>,
    /// Microsoft Graph, for the groups of a user in too many to fit the token.
    pub graph_url: Url,
}

impl EntraConfig {
    /// Whether the app accepts several tenants (so `tid` is checked against a list).
    pub fn multi_tenant(&self) -> bool {
        is_multi_tenant(&self.tenant)
    }
}

pub(crate) fn is_multi_tenant(tenant: &str) -> bool {
    matches!(
        tenant.to_ascii_lowercase().as_str(),
        "common" | "organizations" | "consumers"
    )
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitHubConfig {
    /// Where browsers authorize (`https://github.com`, or the Enterprise server).
    pub web_url: Url,
    /// The REST API (`https://api.github.com/`, or `<server>/api/v3/`).
    pub api_url: Url,
    /// Members of any of these organizations are admitted (empty: no restriction).
    pub orgs: Vec<String>,
    /// Members of any of these teams (`org:team`, by slug) are admitted.
    pub teams: Vec<String>,
}

/// Which claims an identity's fields come from, each a list tried in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimMapping {
    pub id: Vec<String>,
    pub email: Vec<String>,
    pub username: Vec<String>,
    pub name: Vec<String>,
    pub groups: String,
    /// Further claims to keep with the identity, because a rule looks at them (the
    /// `claims` of routes).
    pub keep: Vec<String>,
}

impl ClaimMapping {
    pub(crate) fn standard() -> Self {
        ClaimMapping {
            id: vec!["sub".into()],
            email: vec!["email".into()],
            username: vec!["preferred_username".into()],
            name: vec!["name".into()],
            groups: "groups".into(),
            keep: Vec::new(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ProviderConfig {
    /// The name used in config, in `?provider=` and in `X-Forwarded-Provider`.
    pub name: String,
    pub display_name: String,
    pub kind: ProviderKind,
    pub client_id: String,
    pub client_secret: Option<SecretString>,
    pub scopes: Vec<String>,
    /// Extra authorization request parameters (`audience` for Auth0).
    pub auth_url_params: Vec<(String, String)>,
    pub flow: Flow,
    /// For the implicit flow.
    pub response_mode: ResponseMode,
    pub claims: ClaimMapping,
    /// Google: only accounts of this Workspace domain (`hd` claim).
    pub hosted_domain: Option<String>,
    /// Audiences a bearer token from this provider may be issued for (`aud`); the
    /// client id when not configured.
    pub audiences: Vec<String>,
    /// The key that says where the provider is (its discovery URL, or GitHub's API), in
    /// both spellings, for messages: `oauth.issuer_url (OAUTH_ISSUER_URL)`.
    pub location_key: String,
    /// The keys of its client id and secret, the same way:
    /// `oauth.client_secret (OAUTH_CLIENT_SECRET)`.
    pub client_id_key: String,
    pub client_secret_key: String,
}

impl ProviderConfig {
    /// A generic OpenID Connect provider with the standard claims.
    pub fn oidc(name: &str, display_name: &str, discovery_url: Url, client_id: &str) -> Self {
        ProviderConfig {
            name: name.into(),
            display_name: display_name.into(),
            kind: ProviderKind::Oidc { discovery_url },
            client_id: client_id.into(),
            client_secret: None,
            scopes: crate::read::DEFAULT_SCOPES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            auth_url_params: Vec::new(),
            flow: Flow::Code,
            response_mode: ResponseMode::FormPost,
            claims: ClaimMapping::standard(),
            hosted_domain: None,
            audiences: vec![client_id.into()],
            location_key: "discovery_url".into(),
            client_id_key: "client_id".into(),
            client_secret_key: "client_secret".into(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub enabled: bool,
    pub providers: Vec<ProviderConfig>,
    /// The callback URL registered at the provider; its path is the callback route.
    pub redirect_url: Option<Url>,
    /// Emails or user names admitted; with `allowed_groups` empty too, every
    /// authenticated user is admitted.
    pub allowed_users: Vec<String>,
    /// Groups (from the provider) or teams (from SCIM) whose members are admitted.
    pub allowed_groups: Vec<String>,
    /// Hosts (besides the public one) that an absolute post-login return URL may name.
    pub allowed_redirect_hosts: Vec<String>,
    /// How long a started login may take before its state cookie expires.
    pub login_timeout: Duration,
    /// Admit requests carrying `Authorization: Bearer <JWT>` from a configured provider.
    pub bearer_tokens: bool,
    /// Pass the session's access token to the upstream as `X-Forwarded-Access-Token`.
    pub pass_access_token: bool,
    /// Pass the session's ID token to the upstream as `Authorization: Bearer`.
    pub pass_id_token: bool,
    /// Refresh a session's tokens this long before the access token expires.
    pub refresh_before: Duration,
    /// On logout, also end the session at the provider (RP-initiated logout).
    pub provider_logout: bool,
    /// How long an introspected opaque token's answer is kept.
    pub introspection_cache_ttl: Duration,
    /// Where the provider sends the browser after its logout; the public origin when
    /// not set.
    pub post_logout_redirect_url: Option<Url>,
    /// The page that posts an implicit-flow fragment to the callback (register it at
    /// providers with `response_mode: fragment`).
    pub implicit_redirect_url: Option<Url>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionStoreKind {
    /// In this process: lost on restart, not shared between replicas.
    Memory,
    /// In Redis, shared by every replica.
    Redis(RedisConfig),
}

/// Where the Redis session store is. `Debug` never prints the URLs (they may hold a
/// password).
#[derive(Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// `redis://` or `rediss://`; one URL, or the seed nodes of a cluster.
    pub urls: Vec<String>,
    pub cluster: bool,
    /// CA certificates (PEM) to trust for `rediss://` instead of the system store.
    pub ca_file: Option<PathBuf>,
    pub key_prefix: String,
    /// Longest wait for Redis before a request fails closed.
    pub timeout: Duration,
    /// Redis Sentinel (then `urls` are the sentinels').
    pub sentinel: Option<SentinelConfig>,
}

/// The master a set of sentinels watches.
#[derive(Clone)]
pub struct SentinelConfig {
    pub master_name: String,
    /// The data nodes' password.
    pub password: Option<SecretString>,
    pub db: i64,
}

impl PartialEq for SentinelConfig {
    fn eq(&self, other: &Self) -> bool {
        use secrecy::ExposeSecret;
        self.master_name == other.master_name
            && self.db == other.db
            && self.password.as_ref().map(|p| p.expose_secret())
                == other.password.as_ref().map(|p| p.expose_secret())
    }
}

impl Eq for SentinelConfig {}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("urls", &format!("[{} redacted]", self.urls.len()))
            .field("cluster", &self.cluster)
            .field("ca_file", &self.ca_file)
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .field(
                "sentinel",
                &self.sentinel.as_ref().map(|s| s.master_name.as_str()),
            )
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub store: SessionStoreKind,
    /// Earlier cookie secrets, still accepted for reading sealed records and login state
    /// (the current `cookie_secret` seals). For rotating the secret without logging
    /// everyone out.
    pub previous_secrets: Vec<SecretString>,
    pub cookie_name: String,
    /// `Domain` of the session cookie, for one Portcullis serving the apps of several
    /// subdomains through forward-auth; `None`: host-only.
    pub cookie_domain: Option<String>,
    /// Absolute lifetime of a session.
    pub lifetime: Duration,
    /// A session unused for this long ends.
    pub idle_timeout: Duration,
    /// The in-memory store holds at most this many sessions.
    pub max_sessions: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub level: String,
    pub format: LogFormat,
}

impl Config {
    /// Whether cookies must carry `Secure`: whenever the public URL is https.
    pub fn secure_cookies(&self) -> bool {
        self.public_origin().is_some_and(|u| u.scheme() == "https")
    }

    /// The origin users reach Portcullis at: `public_url`, else the redirect URL's origin.
    pub fn public_origin(&self) -> Option<Url> {
        let base = self
            .public_url
            .as_ref()
            .or(self.auth.redirect_url.as_ref())?;
        let mut origin = base.clone();
        origin.set_path("/");
        origin.set_query(None);
        origin.set_fragment(None);
        Some(origin)
    }

    /// The path the callback is served at, taken from the redirect URL.
    pub fn callback_path(&self) -> String {
        self.auth
            .redirect_url
            .as_ref()
            .map(|u| u.path().to_string())
            .unwrap_or_else(|| DEFAULT_CALLBACK_PATH.to_string())
    }
}
