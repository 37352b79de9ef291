//! The typed configuration that the rest of Portcullis receives. Built only by
//! [`crate::load`]; every field here has already been validated.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use secrecy::{ExposeSecret, SecretString};
use url::Url;

use crate::reader::Reader;

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
}

/// How the sign-in page looks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Branding {
    /// The page's title and heading.
    pub title: String,
    /// A line under the heading.
    pub message: Option<String>,
    /// An image (SVG, PNG, JPEG, WebP, GIF) shown above the heading, embedded in the page.
    pub logo_file: Option<PathBuf>,
    /// The buttons' colour, `#rrggbb`; the text on them is black or white, whichever
    /// contrasts more.
    pub primary_color: String,
    pub background_color: String,
}

/// A colour as `#rgb` or `#rrggbb`, normalised to `#rrggbb`.
pub fn parse_color(text: &str) -> Option<String> {
    let hex = text.trim().strip_prefix('#')?;
    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    match hex.len() {
        6 => Some(format!("#{}", hex.to_ascii_lowercase())),
        3 => Some(format!(
            "#{}",
            hex.chars()
                .flat_map(|c| [c, c])
                .collect::<String>()
                .to_ascii_lowercase()
        )),
        _ => None,
    }
}

/// WCAG 2.x relative luminance of a `#rrggbb` colour.
fn luminance(color: &str) -> f64 {
    let channel = |i: usize| {
        let v = u8::from_str_radix(&color[i..i + 2], 16).unwrap_or(0) as f64 / 255.0;
        if v <= 0.04045 {
            v / 12.92
        } else {
            ((v + 0.055) / 1.055).powf(2.4)
        }
    };
    0.2126 * channel(1) + 0.7152 * channel(3) + 0.0722 * channel(5)
}

/// WCAG contrast ratio of two `#rrggbb` colours (1 to 21).
pub fn contrast(a: &str, b: &str) -> f64 {
    let (la, lb) = (luminance(a), luminance(b));
    let (hi, lo) = if la > lb { (la, lb) } else { (lb, la) };
    (hi + 0.05) / (lo + 0.05)
}

/// The text colour (black or white) that contrasts more with `background`.
pub fn text_color_on(background: &str) -> &'static str {
    if contrast(background, "#ffffff") >= contrast(background, "#111111") {
        "#ffffff"
    } else {
        "#111111"
    }
}

/// WCAG AA for normal text.
pub const MIN_CONTRAST: f64 = 4.5;

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

fn is_multi_tenant(tenant: &str) -> bool {
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
}

impl ClaimMapping {
    fn standard() -> Self {
        ClaimMapping {
            id: vec!["sub".into()],
            email: vec!["email".into()],
            username: vec!["preferred_username".into()],
            name: vec!["name".into()],
            groups: "groups".into(),
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
            scopes: DEFAULT_SCOPES.iter().map(|s| s.to_string()).collect(),
            auth_url_params: Vec::new(),
            flow: Flow::Code,
            response_mode: ResponseMode::FormPost,
            claims: ClaimMapping::standard(),
            hosted_domain: None,
            audiences: vec![client_id.into()],
            location_key: "discovery_url".into(),
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
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("urls", &format!("[{} redacted]", self.urls.len()))
            .field("cluster", &self.cluster)
            .field("ca_file", &self.ca_file)
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
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

/// Every top-level key, for mapping environment variables.
pub const TOP_LEVEL_KEYS: &[&str] = &[
    "listen_addr",
    "upstream_url",
    "forward_auth_only",
    "upstream",
    "public_url",
    "cookie_secret",
    "cookie_secret_file",
    "tls",
    "trusted_proxies",
    "server",
    "auth",
    "oauth",
    "session",
    "scim",
    "outbound",
    "branding",
    "log_level",
    "log_format",
];

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

    pub(crate) fn read(r: &Reader<'_>) -> Config {
        let upstream_url = r.url(
            "upstream_url",
            "set it to the app's address, such as http://127.0.0.1:3000",
        );
        let public_url = r.url(
            "public_url",
            "set it to the address users type, such as https://app.example.com",
        );
        let cookie_secret = r.secret("cookie_secret");
        let tls = read_tls(r);
        let trusted_proxies = read_cidrs(r, "trusted_proxies");
        let auth = read_auth(r, public_url.as_ref());
        let forward_auth_only = r.bool("forward_auth_only", false);
        if upstream_url.is_none() && !r.is_set("upstream_url") && !forward_auth_only {
            r.error(
                "upstream_url",
                "is missing",
                "set UPSTREAM_URL to the app Portcullis protects, such as http://127.0.0.1:3000 (or FORWARD_AUTH_ONLY=true when a proxy in front asks /api/v1/auth/verify instead)",
            );
        }
        if auth.enabled {
            match &cookie_secret {
                None => r.error(
                    "cookie_secret",
                    "is missing, and authentication is on",
                    "set COOKIE_SECRET (or COOKIE_SECRET_FILE) to at least 32 random bytes, for example the output of `openssl rand -base64 32`",
                ),
                Some(s) if s.expose_secret().len() < MIN_SECRET_BYTES => r.error(
                    "cookie_secret",
                    format!(
                        "is {} bytes long, shorter than the {MIN_SECRET_BYTES} bytes required",
                        s.expose_secret().len()
                    ),
                    "use at least 32 random bytes, for example the output of `openssl rand -base64 32`",
                ),
                Some(_) => {}
            }
        }
        let lifetime = r.duration("session.lifetime", Duration::from_secs(12 * 3600));
        let idle_timeout = r.duration("session.idle_timeout", Duration::from_secs(3600));
        if idle_timeout > lifetime {
            r.error(
                "session.idle_timeout",
                "is longer than session.lifetime",
                "make the idle timeout at most the lifetime",
            );
        }
        let session = SessionConfig {
            store: read_store(r),
            previous_secrets: read_previous_secrets(r),
            cookie_name: read_cookie_name(r),
            cookie_domain: read_cookie_domain(r, &auth, public_url.as_ref()),
            lifetime,
            idle_timeout,
            max_sessions: r.number("session.max_sessions", 200_000) as usize,
        };
        let log = LogConfig {
            level: r.string("log_level").unwrap_or_else(|| "info".into()),
            format: match r.string("log_format").as_deref() {
                None | Some("text") => LogFormat::Text,
                Some("json") => LogFormat::Json,
                Some(other) => {
                    r.error(
                        "log_format",
                        format!("`{other}` is not a log format"),
                        "write text or json",
                    );
                    LogFormat::Text
                }
            },
        };
        Config {
            listen_addr: r.socket_addr("listen_addr", "0.0.0.0:8080"),
            outbound_ca_file: r.string("outbound.ca_file").map(PathBuf::from),
            upstream_url,
            forward_auth_only,
            upstream: UpstreamConfig {
                connect_timeout: r.duration("upstream.connect_timeout", Duration::from_secs(5)),
                response_timeout: r.duration("upstream.response_timeout", Duration::from_secs(60)),
                idle_timeout: r.duration("upstream.idle_timeout", Duration::from_secs(90)),
                max_idle_per_host: r.number("upstream.max_idle_per_host", 256) as usize,
                preserve_host: r.bool("upstream.preserve_host", false),
                allowed_upgrades: read_upgrades(r),
            },
            public_url,
            cookie_secret,
            tls,
            trusted_proxies,
            server: ServerConfig {
                shutdown_grace: r.duration("server.shutdown_grace", Duration::from_secs(25)),
                header_read_timeout: r
                    .duration("server.header_read_timeout", Duration::from_secs(10)),
                max_header_bytes: (r.number("server.max_header_bytes", 64 * 1024) as usize)
                    .max(8192),
                max_body_bytes: r.number("server.max_body_bytes", 1024 * 1024) as usize,
                body_read_timeout: r.duration("server.body_read_timeout", Duration::from_secs(10)),
                max_buffered_body_bytes: r
                    .number("server.max_buffered_body_bytes", 32 * 1024 * 1024)
                    as usize,
                max_connections: r.number("server.max_connections", 0) as usize,
                idle_timeout: r.duration("server.idle_timeout", Duration::from_secs(75)),
                workers: r.number("server.workers", 0) as usize,
            },
            scim: link_scim(r, read_scim(r), &auth),
            branding: read_branding(r),
            auth,
            session,
            log,
        }
    }
}

/// `upstream.allowed_upgrades`: WebSocket unless configured; `h2c` is refused.
fn read_upgrades(r: &Reader<'_>) -> Vec<String> {
    let key = "upstream.allowed_upgrades";
    let list: Vec<String> = r
        .list(key)
        .unwrap_or_else(|| vec!["websocket".into()])
        .into_iter()
        .map(|p| p.to_ascii_lowercase())
        .collect();
    if list.iter().any(|p| p == "h2c") {
        r.error(
            key,
            "lists h2c, which would turn a connection into an HTTP/2 tunnel that no header rule, session check or policy sees",
            "remove h2c; to serve HTTP/2, give Portcullis TLS (tls.cert_file) or have clients speak h2c to it directly",
        );
    }
    list.into_iter().filter(|p| p != "h2c").collect()
}

/// Ties each SCIM endpoint to the login provider whose users it describes, and makes
/// sure `scim.required` leaves no provider's users unchecked.
///
/// An endpoint without `provider` describes the only login provider when there is one
/// (the README's `SCIM__ENDPOINTS__MICROSOFT__TOKEN` beside `OAUTH_PROVIDER=entra`);
/// with several it must be named after one or say which. Every mismatch is an error:
/// an endpoint tied to no provider would let deprovisioned users keep their sessions.
fn link_scim(r: &Reader<'_>, mut scim: ScimConfig, auth: &AuthConfig) -> ScimConfig {
    if !scim.enabled {
        return scim;
    }
    let providers: Vec<&str> = auth.providers.iter().map(|p| p.name.as_str()).collect();
    let list = providers.join(", ");
    let required = r.bool("scim.required", false);
    if !auth.enabled {
        if required {
            r.error(
                "scim.required",
                "is true while authentication is off (open mode): nobody signs in, so nobody is checked",
                "turn authentication on (OAUTH_ENABLED=true or a provider under auth.openid_connect), or set scim.required to false",
            );
        }
        return scim;
    }
    for endpoint in &mut scim.endpoints {
        let key = format!("scim.endpoints.{}.provider", endpoint.name);
        let explicit = r.string(&key);
        endpoint.provider = match (explicit, providers.as_slice()) {
            (Some(p), _) => p,
            (None, [only]) => only.to_string(),
            (None, _) => endpoint.name.clone(),
        };
        if !providers.contains(&endpoint.provider.as_str()) {
            r.error(
                &key,
                format!(
                    "the endpoint `{}` describes the login provider `{}`, which is not configured (configured: {list}); its deprovisioning would end no session",
                    endpoint.name, endpoint.provider
                ),
                format!("set {key} to the login provider whose users this endpoint provisions: one of {list}"),
            );
        }
    }
    for (i, a) in scim.endpoints.iter().enumerate() {
        if let Some(b) = scim.endpoints[..i]
            .iter()
            .find(|b| b.provider == a.provider)
        {
            r.error(
                &format!("scim.endpoints.{}.provider", a.name),
                format!(
                    "the endpoints `{}` and `{}` both describe the login provider `{}`",
                    b.name, a.name, a.provider
                ),
                "give each login provider one SCIM endpoint",
            );
        }
    }
    let exempt = r.list("scim.exempt_providers").unwrap_or_default();
    for name in &exempt {
        if !providers.contains(&name.as_str()) {
            r.error(
                "scim.exempt_providers",
                format!("`{name}` is not a configured login provider (configured: {list})"),
                "list only configured login providers",
            );
        }
    }
    if required {
        for provider in &providers {
            let covered = scim.endpoints.iter().any(|e| e.provider == *provider);
            if !covered && !exempt.iter().any(|e| e == provider) {
                r.error(
                    "scim.required",
                    format!(
                        "is true, but no SCIM endpoint describes the login provider `{provider}`, so its users would be admitted without provisioning"
                    ),
                    format!(
                        "add an endpoint with scim.endpoints.<name>.provider: {provider}, or list {provider} in scim.exempt_providers to admit its users without provisioning"
                    ),
                );
            }
        }
    }
    scim.exempt_providers = exempt;
    scim
}

fn read_branding(r: &Reader<'_>) -> Branding {
    let color = |key: &str, default: &str| match r.string(key) {
        None => default.to_string(),
        Some(text) => parse_color(&text).unwrap_or_else(|| {
            r.error(
                key,
                format!("`{text}` is not a colour"),
                "write it as #rrggbb, such as #1d4ed8",
            );
            default.to_string()
        }),
    };
    let primary = color("branding.primary_color", "#1d4ed8");
    let background = color("branding.background_color", "#f4f4f5");
    let on_primary = text_color_on(&primary);
    if contrast(&primary, on_primary) < MIN_CONTRAST {
        r.error(
            "branding.primary_color",
            format!(
                "{primary} leaves the button text too little contrast ({:.1}:1, at least {MIN_CONTRAST}:1 is needed to be readable)",
                contrast(&primary, on_primary)
            ),
            "pick a darker or a lighter shade",
        );
    }
    if contrast(&background, "#18181b") < MIN_CONTRAST {
        r.error(
            "branding.background_color",
            format!("{background} leaves the page's dark text too little contrast"),
            "pick a lighter background",
        );
    }
    let logo_file = r.string("branding.logo_file").map(PathBuf::from);
    if let Some(path) = &logo_file {
        let known = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| logo_type(e).is_some());
        if !known {
            r.error(
                "branding.logo_file",
                format!(
                    "{} is not an .svg, .png, .jpg, .webp or .gif file",
                    path.display()
                ),
                "use an image in one of those formats",
            );
        }
    }
    Branding {
        title: r
            .string("branding.title")
            .unwrap_or_else(|| "Sign in".into()),
        message: r.string("branding.message"),
        logo_file,
        primary_color: primary,
        background_color: background,
    }
}

/// The media type of a logo by its file extension.
pub fn logo_type(extension: &str) -> Option<&'static str> {
    match extension.to_ascii_lowercase().as_str() {
        "svg" => Some("image/svg+xml"),
        "png" => Some("image/png"),
        "jpg" | "jpeg" => Some("image/jpeg"),
        "webp" => Some("image/webp"),
        "gif" => Some("image/gif"),
        _ => None,
    }
}

/// The shortest SCIM password or token accepted, in bytes.
pub const MIN_SCIM_SECRET_BYTES: usize = 16;

fn read_scim(r: &Reader<'_>) -> ScimConfig {
    let enabled = r.bool("scim.enabled", false);
    let required = r.bool("scim.required", false);
    let database_url = r
        .secret("scim.database_url")
        .unwrap_or_else(|| SecretString::from("sqlite://portcullis-scim.db"));
    {
        use secrecy::ExposeSecret;
        let url = database_url.expose_secret().to_ascii_lowercase();
        if !(url.starts_with("sqlite://")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            r.error(
                "scim.database_url",
                "is neither a sqlite:// nor a postgres:// URL",
                "write sqlite:///var/lib/portcullis/scim.db (one replica) or postgres://user:password@host/db (several replicas)",
            );
        }
    }
    let mut endpoints = Vec::new();
    for name in r.keys("scim.endpoints") {
        let base = format!("scim.endpoints.{name}");
        let valid_name = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !valid_name {
            r.error(
                &base,
                format!("`{name}` is not a usable endpoint name"),
                "use lowercase letters, digits, - and _ (it becomes /v1/scim/v2/<name>)",
            );
        }
        let username = r.string(&format!("{base}.username"));
        let password = r.secret(&format!("{base}.password"));
        let token = r.secret(&format!("{base}.token"));
        let basic = match (username, password) {
            (Some(u), Some(p)) => Some((u, p)),
            (None, None) => None,
            (Some(_), None) => {
                r.error(
                    &format!("{base}.password"),
                    "is missing while a username is set",
                    "set the provisioning password too (or use a token instead)",
                );
                None
            }
            (None, Some(_)) => {
                r.error(
                    &format!("{base}.username"),
                    "is missing while a password is set",
                    "set the provisioning user name too",
                );
                None
            }
        };
        {
            use secrecy::ExposeSecret;
            if let Some((_, p)) = &basic
                && p.expose_secret().len() < MIN_SCIM_SECRET_BYTES
            {
                r.error(&format!("{base}.password"), format!("is shorter than {MIN_SCIM_SECRET_BYTES} bytes"), "use at least 16 random characters, for example the output of `openssl rand -base64 24`");
            }
            if let Some(t) = &token
                && t.expose_secret().len() < MIN_SCIM_SECRET_BYTES
            {
                r.error(&format!("{base}.token"), format!("is shorter than {MIN_SCIM_SECRET_BYTES} bytes"), "use at least 16 random characters, for example the output of `openssl rand -base64 24`");
            }
        }
        if basic.is_none()
            && token.is_none()
            && !r.is_set(&format!("{base}.password"))
            && !r.is_set(&format!("{base}.username"))
        {
            r.error(&format!("{base}.token"), "is missing: the endpoint has no credential", "set a token (Microsoft Entra uses a bearer token) or a username and password (Okta uses HTTP Basic)");
        }
        r.mark_known(&format!("{base}.provider"));
        endpoints.push(ScimEndpointConfig {
            required: r.bool(&format!("{base}.required"), required),
            // Resolved against the login providers by `link_scim`.
            provider: r
                .string(&format!("{base}.provider"))
                .unwrap_or_else(|| name.clone()),
            basic,
            token,
            name,
        });
    }
    if enabled && endpoints.is_empty() {
        r.error(
            "scim.endpoints",
            "is empty, and scim.enabled is true",
            "configure at least one endpoint, e.g. SCIM__ENDPOINTS__OKTA__USERNAME and SCIM__ENDPOINTS__OKTA__PASSWORD, or SCIM__ENDPOINTS__MICROSOFT__TOKEN",
        );
    }
    if !enabled && !endpoints.is_empty() {
        r.error(
            "scim.enabled",
            "is false while SCIM endpoints are configured",
            "set SCIM__ENABLED=true to serve them, or remove the endpoints",
        );
    }
    r.mark_known("scim.exempt_providers");
    ScimConfig {
        enabled,
        database_url,
        endpoints,
        exempt_providers: Vec::new(),
    }
}

fn read_store(r: &Reader<'_>) -> SessionStoreKind {
    let redis_settings_given =
        r.is_set("session.redis.url") || r.is_set("session.redis.cluster_urls");
    match r.string("session.store").as_deref() {
        None | Some("memory") => {
            for key in ["url", "cluster_urls", "ca_file", "key_prefix", "timeout"] {
                r.mark_known(&format!("session.redis.{key}"));
            }
            if redis_settings_given {
                r.error(
                    "session.store",
                    "is memory (the default) while session.redis is configured",
                    "set SESSION__STORE=redis to use Redis, or remove the Redis settings",
                );
            }
            SessionStoreKind::Memory
        }
        Some("redis") => {
            let single = r.string("session.redis.url");
            let cluster = r
                .list("session.redis.cluster_urls")
                .filter(|l| !l.is_empty());
            let (urls, is_cluster, key) = match (single, cluster) {
                (Some(url), None) => (vec![url], false, "session.redis.url"),
                (None, Some(urls)) => (urls, true, "session.redis.cluster_urls"),
                (Some(_), Some(_)) => {
                    r.error(
                        "session.redis.cluster_urls",
                        "is set together with session.redis.url",
                        "set session.redis.url for one Redis server, or session.redis.cluster_urls for the seed nodes of a Redis Cluster, not both",
                    );
                    (Vec::new(), false, "session.redis.url")
                }
                (None, None) => {
                    r.error(
                        "session.redis.url",
                        "is missing, and session.store is redis",
                        "set SESSION__REDIS__URL to redis://[user:password@]host:6379[/db] (rediss:// for TLS), or SESSION__REDIS__CLUSTER_URLS to the cluster's seed nodes",
                    );
                    (Vec::new(), false, "session.redis.url")
                }
            };
            for url in &urls {
                // Never echo the URL: it may carry a password.
                let scheme_ok = url.starts_with("redis://") || url.starts_with("rediss://");
                if !scheme_ok
                    || crate::Url::parse(url)
                        .map(|u| u.host().is_none())
                        .unwrap_or(true)
                {
                    r.error(
                        key,
                        "holds a value that is not a redis:// or rediss:// URL with a host",
                        "write redis://[user:password@]host:port[/db], or rediss:// for TLS",
                    );
                }
            }
            SessionStoreKind::Redis(RedisConfig {
                urls,
                cluster: is_cluster,
                ca_file: r.string("session.redis.ca_file").map(PathBuf::from),
                key_prefix: r
                    .string("session.redis.key_prefix")
                    .unwrap_or_else(|| "portcullis".into()),
                timeout: r.duration("session.redis.timeout", Duration::from_secs(2)),
            })
        }
        Some(other) => {
            r.error(
                "session.store",
                format!("`{other}` is not a session store"),
                "write memory (one replica) or redis (several replicas)",
            );
            SessionStoreKind::Memory
        }
    }
}

fn read_previous_secrets(r: &Reader<'_>) -> Vec<SecretString> {
    let secrets = r.list("session.previous_secrets").unwrap_or_default();
    if secrets.iter().any(|s| s.len() < MIN_SECRET_BYTES) {
        r.error(
            "session.previous_secrets",
            format!("holds a secret shorter than {MIN_SECRET_BYTES} bytes"),
            "list the earlier cookie secrets exactly as they were (each at least 32 bytes)",
        );
    }
    secrets.into_iter().map(SecretString::from).collect()
}

fn read_cookie_name(r: &Reader<'_>) -> String {
    let name = r
        .string("session.cookie_name")
        .unwrap_or_else(|| "session_token".into());
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !valid {
        r.error(
            "session.cookie_name",
            format!("`{name}` is not a valid cookie name"),
            "use letters, digits, `-`, `_` and `.` only",
        );
        return "session_token".into();
    }
    name
}

/// `session.cookie_domain`: a parent domain of the public host (a browser ignores a
/// cookie whose domain does not cover the host that set it).
fn read_cookie_domain(
    r: &Reader<'_>,
    auth: &AuthConfig,
    public_url: Option<&Url>,
) -> Option<String> {
    let raw = r.string("session.cookie_domain")?;
    let domain = raw.trim().trim_start_matches('.').to_ascii_lowercase();
    let well_formed = domain.contains('.')
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if !well_formed {
        r.error(
            "session.cookie_domain",
            format!("`{raw}` is not a domain name"),
            "write the parent domain of your apps, such as example.com",
        );
        return None;
    }
    let public_host = public_url
        .or(auth.redirect_url.as_ref())
        .and_then(|u| u.host_str())
        .map(str::to_ascii_lowercase);
    if let Some(host) = public_host
        && host != domain
        && !host.ends_with(&format!(".{domain}"))
    {
        r.error(
            "session.cookie_domain",
            format!("`{domain}` does not contain the public host {host}, so browsers would drop the cookie"),
            format!("use {host} or one of its parent domains"),
        );
        return None;
    }
    Some(domain)
}

fn read_tls(r: &Reader<'_>) -> Option<TlsConfig> {
    let cert = r.string("tls.cert_file");
    let key = r.string("tls.key_file");
    match (cert, key) {
        (Some(cert), Some(key)) => Some(TlsConfig {
            cert_file: cert.into(),
            key_file: key.into(),
        }),
        (None, None) => None,
        (Some(_), None) => {
            r.error(
                "tls.key_file",
                "is missing while tls.cert_file is set",
                "set both to PEM files, or neither to serve plain HTTP",
            );
            None
        }
        (None, Some(_)) => {
            r.error(
                "tls.cert_file",
                "is missing while tls.key_file is set",
                "set both to PEM files, or neither to serve plain HTTP",
            );
            None
        }
    }
}

fn read_cidrs(r: &Reader<'_>, key: &str) -> Vec<IpNet> {
    let mut out = Vec::new();
    for item in r.list(key).unwrap_or_default() {
        let parsed = item
            .parse::<IpNet>()
            .or_else(|_| item.parse::<std::net::IpAddr>().map(IpNet::from));
        match parsed {
            Ok(net) => out.push(net),
            Err(_) => r.error(
                key,
                format!("`{item}` is not an IP address or CIDR range"),
                "write addresses such as 10.0.0.0/8 or 127.0.0.1",
            ),
        }
    }
    out
}

const DEFAULT_SCOPES: &[&str] = &["openid", "email", "profile"];
const GITHUB_SCOPES: &[&str] = &["read:user", "user:email"];

fn read_flow(r: &Reader<'_>, key: &str, default: Flow) -> Flow {
    match r.string(key).map(|s| s.to_ascii_lowercase()).as_deref() {
        None => default,
        Some("code") => Flow::Code,
        Some("implicit") => Flow::Implicit,
        Some(other) => {
            r.error(
                key,
                format!("`{other}` is not a login flow"),
                "write code (authorization code with PKCE, recommended) or implicit",
            );
            default
        }
    }
}

/// What a provider's name says about how to talk to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    GitHub,
    Entra,
    Google,
    Adfs,
    Generic,
}

fn family(name: &str) -> Family {
    match name {
        "github" => Family::GitHub,
        "microsoft" | "entra" | "azure" => Family::Entra,
        "google" => Family::Google,
        "adfs" => Family::Adfs,
        _ => Family::Generic,
    }
}

/// Where a provider's settings are: `auth.openid_connect.<name>.<field>` (nested), or
/// the flat `oauth.<field>` names of the design documents.
struct ProviderKeys {
    prefix: String,
    flat: bool,
}

impl ProviderKeys {
    fn key(&self, field: &str) -> String {
        if !self.flat {
            return format!("{}.{field}", self.prefix);
        }
        let flat = match field {
            "discovery_url" => "issuer_url".to_string(),
            "web_url" => "github_url".into(),
            "api_url" => "github_api_url".into(),
            "orgs" => "github_orgs".into(),
            "teams" => "github_teams".into(),
            other => match other.strip_prefix("claims.") {
                Some(claim) => format!("{claim}_claim"),
                None => other.into(),
            },
        };
        format!("oauth.{flat}")
    }
}

const PROVIDER_FIELDS: &[&str] = &[
    "client_id",
    "client_secret",
    "discovery_url",
    "display_name",
    "scopes",
    "flow",
    "hosted_domain",
    "tenant_id",
    "allowed_tenants",
    "graph_url",
    "web_url",
    "api_url",
    "orgs",
    "teams",
    "claims.id",
    "claims.email",
    "claims.username",
    "claims.name",
    "claims.groups",
    "audiences",
    "response_mode",
];

fn read_provider(
    r: &Reader<'_>,
    keys: &ProviderKeys,
    name: &str,
    fam: Family,
    default_flow: Flow,
) -> Option<ProviderConfig> {
    let key = |field: &str| keys.key(field);
    let client_id = r.required_string(
        &key("client_id"),
        "set it to the client id the provider issued for Portcullis",
    );
    let client_secret = r.secret(&key("client_secret"));
    let explicit_scopes = r.list(&key("scopes"));
    let display_name = r
        .string(&key("display_name"))
        .unwrap_or_else(|| default_display_name(name));
    let flow = read_flow(r, &key("flow"), default_flow);
    let response_mode = match r
        .string(&key("response_mode"))
        .map(|m| m.to_ascii_lowercase())
        .as_deref()
    {
        None | Some("form_post") => ResponseMode::FormPost,
        Some("fragment") => ResponseMode::Fragment,
        Some(other) => {
            r.error(
                &key("response_mode"),
                format!("`{other}` is not a response mode for the implicit flow"),
                "write form_post (the default) or fragment",
            );
            ResponseMode::FormPost
        }
    };
    let auth_url_params = if keys.flat {
        Vec::new()
    } else {
        r.string_map(&key("auth_url_params"))
    };
    let claims = read_claims(r, keys, fam);
    let hosted_domain = r
        .string(&key("hosted_domain"))
        .map(|d| d.trim().to_ascii_lowercase());
    if hosted_domain.is_some() && fam != Family::Google {
        r.error(
            &key("hosted_domain"),
            "applies to Google only",
            "remove it, or restrict users with oauth.allowed_users / auth.allowed_groups",
        );
    }
    let discovery_fix = "set it to the provider's issuer or discovery URL, such as https://example.okta.com/.well-known/openid-configuration";
    let discovery_url = r.url(&key("discovery_url"), discovery_fix);
    let kind = match fam {
        Family::GitHub => {
            if flow == Flow::Implicit {
                r.error(
                    &key("flow"),
                    "is implicit, which GitHub does not offer",
                    "remove it: GitHub logins use the code flow",
                );
            }
            let web_url = r
                .url(
                    &key("web_url"),
                    "set it to your GitHub Enterprise server, such as https://github.example.com",
                )
                .unwrap_or_else(|| Url::parse("https://github.com").expect("valid"));
            let api_url = r
                .url(
                    &key("api_url"),
                    "set it to the REST API base, such as https://github.example.com/api/v3",
                )
                .unwrap_or_else(|| default_github_api(&web_url));
            let orgs: Vec<String> = r
                .list(&key("orgs"))
                .unwrap_or_default()
                .into_iter()
                .map(|o| o.to_ascii_lowercase())
                .collect();
            let mut teams = Vec::new();
            for team in r.list(&key("teams")).unwrap_or_default() {
                match team.split_once([':', '/']) {
                    Some((org, slug)) if !org.is_empty() && !slug.is_empty() => {
                        teams.push(format!("{}:{}", org, slug).to_ascii_lowercase())
                    }
                    _ => r.error(
                        &key("teams"),
                        format!("`{team}` does not name an organization and a team"),
                        "write each team as org:team-slug (or org/team-slug)",
                    ),
                }
            }
            ProviderKind::GitHub(GitHubConfig {
                web_url: with_trailing_slash(web_url),
                api_url: with_trailing_slash(api_url),
                orgs,
                teams,
            })
        }
        Family::Entra => {
            // The tenant: configured, else read from a login.microsoftonline.com-style
            // discovery URL (`/<tenant>/v2.0/...`).
            let tenant = r.string(&key("tenant_id")).or_else(|| {
                discovery_url
                    .as_ref()
                    .and_then(|u| u.path_segments()?.next().map(str::to_string))
                    .filter(|t| !t.is_empty() && !t.starts_with('.'))
            });
            if tenant.is_none() && discovery_url.is_none() && !r.is_set(&key("discovery_url")) {
                r.error(
                    &key("tenant_id"),
                    "is missing",
                    "set it to your directory (tenant) id from the Entra app registration's overview page",
                );
            }
            let tenant = tenant.unwrap_or_default();
            let allowed_tenants: Vec<String> = r
                .list(&key("allowed_tenants"))
                .unwrap_or_default()
                .into_iter()
                .map(|t| t.to_ascii_lowercase())
                .collect();
            if is_multi_tenant(&tenant) && allowed_tenants.is_empty() {
                r.error(
                    &key("allowed_tenants"),
                    format!("is empty, and the tenant is `{tenant}`, which would admit users of every Microsoft tenant"),
                    "list the tenant ids whose users may sign in, or set the tenant id to your own tenant",
                );
            }
            let discovery_url = discovery_url.unwrap_or_else(|| {
                Url::parse(&format!(
                    "https://login.microsoftonline.com/{tenant}/v2.0/.well-known/openid-configuration"
                ))
                .unwrap_or_else(|_| Url::parse("https://login.microsoftonline.com/invalid/v2.0").expect("valid"))
            });
            let graph_url = r
                .url(
                    &key("graph_url"),
                    "set it to Microsoft Graph's base URL, such as https://graph.microsoft.com",
                )
                .unwrap_or_else(|| Url::parse("https://graph.microsoft.com/").expect("valid"));
            ProviderKind::Entra(EntraConfig {
                discovery_url,
                tenant,
                allowed_tenants,
                graph_url: with_trailing_slash(graph_url),
            })
        }
        Family::Google => ProviderKind::Oidc {
            discovery_url: discovery_url
                .unwrap_or_else(|| Url::parse("https://accounts.google.com").expect("valid")),
        },
        Family::Adfs | Family::Generic => {
            if discovery_url.is_none() && !r.is_set(&key("discovery_url")) {
                r.error(&key("discovery_url"), "is missing", discovery_fix);
            }
            ProviderKind::Oidc {
                discovery_url: discovery_url?,
            }
        }
    };
    for field in ["tenant_id", "allowed_tenants", "graph_url"] {
        if fam != Family::Entra && r.is_set(&key(field)) {
            r.error(&key(field), "applies to Microsoft Entra only", "remove it");
        }
    }
    for field in ["web_url", "api_url", "orgs", "teams"] {
        if fam != Family::GitHub && r.is_set(&key(field)) {
            r.error(&key(field), "applies to GitHub only", "remove it");
        }
    }
    let scopes = match (explicit_scopes, &kind) {
        (Some(scopes), _) => scopes,
        (None, ProviderKind::GitHub(gh)) => {
            let mut s: Vec<String> = GITHUB_SCOPES.iter().map(|s| s.to_string()).collect();
            if !gh.orgs.is_empty() || !gh.teams.is_empty() {
                s.push("read:org".into());
            }
            s
        }
        (None, _) => DEFAULT_SCOPES.iter().map(|s| s.to_string()).collect(),
    };
    let location = key(if fam == Family::GitHub {
        "api_url"
    } else {
        "discovery_url"
    });
    let location_key = format!(
        "{location} ({})",
        crate::tree::env_name(&location.split('.').collect::<Vec<_>>())
    );
    let client_id = client_id?;
    let audiences = r
        .list(&key("audiences"))
        .unwrap_or_else(|| vec![client_id.clone()]);
    Some(ProviderConfig {
        name: name.to_string(),
        display_name,
        kind,
        audiences,
        location_key,
        response_mode,
        client_id,
        client_secret,
        scopes,
        auth_url_params,
        flow,
        claims,
        hosted_domain,
    })
}

fn default_github_api(web: &Url) -> Url {
    if web.host_str() == Some("github.com") {
        Url::parse("https://api.github.com/").expect("valid")
    } else {
        with_trailing_slash(web.clone())
            .join("api/v3/")
            .expect("a relative path joins")
    }
}

fn with_trailing_slash(mut url: Url) -> Url {
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    url
}

fn read_claims(r: &Reader<'_>, keys: &ProviderKeys, fam: Family) -> ClaimMapping {
    let mut m = ClaimMapping::standard();
    let list = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    match fam {
        // Entra: `oid` is the user's id across every app of the tenant (`sub` differs per
        // app); the email is often only in `preferred_username` or `upn`.
        Family::Entra => {
            m.id = list(&["oid", "sub"]);
            m.email = list(&["email", "preferred_username", "upn"]);
            m.username = list(&["preferred_username", "upn"]);
        }
        // ADFS issues `upn` (and `unique_name`) rather than the standard claims.
        Family::Adfs => {
            m.email = list(&["email", "upn"]);
            m.username = list(&["upn", "unique_name", "preferred_username"]);
            m.name = list(&["name", "unique_name"]);
        }
        _ => {}
    }
    if let Some(v) = r.list(&keys.key("claims.id")) {
        m.id = v;
    }
    if let Some(v) = r.list(&keys.key("claims.email")) {
        m.email = v;
    }
    if let Some(v) = r.list(&keys.key("claims.username")) {
        m.username = v;
    }
    if let Some(v) = r.list(&keys.key("claims.name")) {
        m.name = v;
    }
    if let Some(v) = r.string(&keys.key("claims.groups")) {
        m.groups = v;
    }
    m
}

fn read_auth(r: &Reader<'_>, public_url: Option<&Url>) -> AuthConfig {
    let flat_enabled = r.bool("oauth.enabled", false);
    let default_flow = read_flow(r, "auth.openid_connect.flow", Flow::Code);
    let mut providers = Vec::new();

    // The nested dialect: AUTH__OPENID_CONNECT__<NAME>__<KEY>.
    for name in r.keys("auth.openid_connect") {
        if name == "flow" {
            continue;
        }
        let keys = ProviderKeys {
            prefix: format!("auth.openid_connect.{name}"),
            flat: false,
        };
        if !r.bool(&keys.key("enabled"), false) {
            // Read (and so accept) the other keys of a disabled provider.
            for field in PROVIDER_FIELDS {
                r.mark_known(&keys.key(field));
            }
            r.string_map(&keys.key("auth_url_params"));
            continue;
        }
        if let Some(p) = read_provider(r, &keys, &name, family(&name), default_flow) {
            providers.push(p);
        }
    }

    // The flat dialect: OAUTH_*.
    let flat_provider = r.string("oauth.provider").map(|p| p.to_ascii_lowercase());
    let flat = ProviderKeys {
        prefix: "oauth".into(),
        flat: true,
    };
    if flat_enabled {
        let chosen = flat_provider
            .clone()
            .or_else(|| r.is_set("oauth.issuer_url").then(|| "oidc".to_string()));
        match chosen.as_deref() {
            None => r.error(
                "oauth.provider",
                "is missing, and OAUTH_ENABLED is true",
                "set OAUTH_PROVIDER to github, entra, or oidc (with OAUTH_ISSUER_URL)",
            ),
            Some(named) if providers.iter().any(|p| p.name == named) => {
                // A provider enabled in the nested dialect: the flat keys add nothing.
                for field in PROVIDER_FIELDS {
                    r.mark_known(&flat.key(field));
                }
            }
            Some(name @ ("github" | "entra" | "oidc")) => {
                let fam = match name {
                    "oidc" => Family::Generic,
                    other => family(other),
                };
                if let Some(mut p) = read_provider(r, &flat, name, fam, default_flow) {
                    if name == "oidc" && !r.is_set("oauth.display_name") {
                        p.display_name = "OpenID Connect".into();
                    }
                    providers.push(p);
                }
            }
            Some(other) => r.error(
                "oauth.provider",
                format!("`{other}` is not a provider this build knows"),
                "write github, entra or oidc (with OAUTH_ISSUER_URL), or name a provider enabled under auth.openid_connect",
            ),
        }
    } else {
        for field in PROVIDER_FIELDS {
            r.mark_known(&flat.key(field));
        }
    }

    let enabled = flat_enabled || !providers.is_empty();
    let redirect_url = r
        .url(
            "oauth.redirect_url",
            "set it to the callback URL registered at the provider, such as https://app.example.com/api/v1/auth/callback",
        )
        .or_else(|| public_url.and_then(|p| p.join(DEFAULT_CALLBACK_PATH).ok()));
    if enabled && redirect_url.is_none() && !r.is_set("oauth.redirect_url") {
        r.error(
            "oauth.redirect_url",
            "is missing, and authentication is on",
            "set OAUTH_REDIRECT_URL to the callback URL registered at the provider (such as https://app.example.com/api/v1/auth/callback), or set PUBLIC_URL",
        );
    }
    let mut names = std::collections::BTreeSet::new();
    for p in &providers {
        if !names.insert(p.name.clone()) {
            r.error(
                "oauth.provider",
                format!("the provider name `{}` is configured twice", p.name),
                "configure each provider once",
            );
        }
    }
    AuthConfig {
        enabled,
        providers,
        allowed_users: r.list("oauth.allowed_users").unwrap_or_default(),
        allowed_groups: r.list("auth.allowed_groups").unwrap_or_default(),
        allowed_redirect_hosts: r
            .list("auth.allowed_redirect_hosts")
            .unwrap_or_default()
            .into_iter()
            .map(|h| h.to_ascii_lowercase())
            .collect(),
        login_timeout: r.duration("auth.login_timeout", Duration::from_secs(600)),
        bearer_tokens: r.bool("auth.bearer_tokens", false),
        pass_access_token: r.bool("auth.pass_access_token", false),
        pass_id_token: r.bool("auth.pass_id_token", false),
        refresh_before: r.duration("auth.refresh_before", Duration::from_secs(60)),
        provider_logout: r.bool("auth.provider_logout", false),
        post_logout_redirect_url: r.url(
            "auth.post_logout_redirect_url",
            "set it to where the provider should send the browser after logging out, such as https://app.example.com/",
        ),
        implicit_redirect_url: read_implicit_redirect(r, redirect_url.as_ref()),
        redirect_url,
    }
}

/// The implicit flow's fragment page: configured, else beside the callback (the design
/// documents register `/v1/oauth/redirect/` next to `/v1/oauth/callback/`).
fn read_implicit_redirect(r: &Reader<'_>, callback: Option<&Url>) -> Option<Url> {
    let key = "auth.implicit_redirect_url";
    let configured = r.url(
        key,
        "set it to the fragment page's URL on this host, such as https://app.example.com/v1/oauth/redirect/",
    );
    let callback = callback?;
    if let Some(url) = configured {
        if url.origin() != callback.origin() {
            r.error(
                key,
                "is on another origin than the callback",
                "use a path on the callback's host: the page posts the answer to the callback on its own origin only",
            );
        }
        return Some(url);
    }
    let path = callback.path();
    let derived = match path.rfind("callback") {
        Some(i) => format!("{}redirect{}", &path[..i], &path[i + "callback".len()..]),
        None => "/api/v1/auth/redirect".into(),
    };
    callback.join(&derived).ok()
}

fn default_display_name(name: &str) -> String {
    match name {
        "auth0" => "Auth0".into(),
        "google" => "Google".into(),
        "okta" => "Okta".into(),
        "microsoft" | "entra" | "azure" => "Microsoft".into(),
        "github" => "GitHub".into(),
        "adfs" => "ADFS".into(),
        "custom" => "Custom OAuth".into(),
        other => {
            let mut chars = other.chars();
            match chars.next() {
                Some(first) => first.to_uppercase().chain(chars).collect(),
                None => other.into(),
            }
        }
    }
}
