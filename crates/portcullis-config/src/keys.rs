//! Every configuration key, in one place: its dotted name, its default, whether it is a
//! secret (and so may be given as a file with `_file`), and what it does. The lists the
//! loader needs (top-level sections for mapping environment variables, the secret keys,
//! a provider's fields) are derived from here; the reader refuses, in debug builds and
//! tests, to read a key that is not listed; and a test checks that the README's tables
//! and this list name the same keys.
//!
//! A segment in angle brackets stands for a name the operator chooses: `<name>` a login
//! provider (or, under `ssf.transmitters`, a transmitter), `<idp>` a SCIM endpoint, `<param>` an authorization request parameter.

use std::sync::LazyLock;

/// One configuration key.
#[derive(Debug, Clone, Copy)]
pub struct Key {
    /// The dotted YAML path.
    pub name: &'static str,
    /// What applies when it is not set, as the README says it.
    pub default: &'static str,
    /// A secret: never printed, and may be read from a file named by `<key>_file`.
    pub secret: bool,
    /// One line on what it does.
    pub doc: &'static str,
}

const fn key(name: &'static str, default: &'static str, doc: &'static str) -> Key {
    Key {
        name,
        default,
        secret: false,
        doc,
    }
}

const fn secret(name: &'static str, default: &'static str, doc: &'static str) -> Key {
    Key {
        name,
        default,
        secret: true,
        doc,
    }
}

/// Every key, grouped by section.
pub const KEYS: &[Key] = &[
    // The proxy.
    key("listen_addr", "0.0.0.0:8080", "address to listen on"),
    key("upstream_url", "", "the app; a path is used as a prefix"),
    key(
        "forward_auth_only",
        "false",
        "no app of its own: only forward-auth, login, SCIM and health",
    ),
    key(
        "public_url",
        "",
        "the address users type; https makes cookies Secure",
    ),
    secret(
        "cookie_secret",
        "",
        "at least 32 bytes; keys the login-state cookie and sealed records",
    ),
    key(
        "tls.cert_file",
        "",
        "PEM certificate chain; serves HTTPS with HTTP/2 by ALPN",
    ),
    key("tls.key_file", "", "PEM private key of the certificate"),
    key(
        "trusted_proxies",
        "",
        "CIDRs whose X-Forwarded-* headers are believed",
    ),
    key("upstream.connect_timeout", "5s", "connecting to the app"),
    key(
        "upstream.response_timeout",
        "60s",
        "wait for the app's response headers; then 504",
    ),
    key(
        "upstream.idle_timeout",
        "90s",
        "pooled connection idle time",
    ),
    key(
        "upstream.max_idle_per_host",
        "256",
        "pooled connections kept per worker",
    ),
    key(
        "upstream.preserve_host",
        "false",
        "send the client's Host instead of the upstream's",
    ),
    key(
        "upstream.allowed_upgrades",
        "websocket",
        "protocols a client may switch to; h2c is refused",
    ),
    key(
        "server.shutdown_grace",
        "25s",
        "time in-flight requests get after SIGTERM",
    ),
    key(
        "server.header_read_timeout",
        "10s",
        "the first bytes and every request head must arrive within this",
    ),
    key(
        "server.max_header_bytes",
        "65536",
        "larger request headers get 431",
    ),
    key(
        "server.max_body_bytes",
        "1048576",
        "limit for Portcullis's own endpoints",
    ),
    key(
        "server.body_read_timeout",
        "10s",
        "a body for Portcullis's own endpoints must arrive within this",
    ),
    key(
        "server.max_buffered_body_bytes",
        "33554432",
        "such bodies held at once, over all connections",
    ),
    key(
        "server.max_connections",
        "0",
        "client connections at once; 0 derives it from the open-files limit",
    ),
    key(
        "server.idle_timeout",
        "75s",
        "a connection with no request in flight is closed after this",
    ),
    key(
        "server.workers",
        "0",
        "worker threads; 0 means one per available CPU",
    ),
    key("log_level", "info", "or RUST_LOG directives"),
    key("log_format", "text", "text or json"),
    key(
        "outbound.ca_file",
        "",
        "extra CA certificates (PEM) trusted for calls to identity providers",
    ),
    // Authentication, the flat dialect (one provider).
    key("oauth.enabled", "false", "true turns authentication on"),
    key(
        "oauth.provider",
        "",
        "github, entra, oidc, or a provider configured under auth.openid_connect",
    ),
    key("oauth.issuer_url", "", "the provider's issuer"),
    key(
        "oauth.client_id",
        "",
        "the client id registered at the provider",
    ),
    secret(
        "oauth.client_secret",
        "",
        "the client secret; omit for a public client",
    ),
    key(
        "oauth.redirect_url",
        "public_url + /api/v1/auth/callback",
        "the callback registered at the provider",
    ),
    key("oauth.scopes", "openid,email,profile", "scopes asked for"),
    key("oauth.allowed_users", "", "emails or user names admitted"),
    key("oauth.display_name", "", "the name on the sign-in button"),
    key("oauth.flow", "code", "code or implicit"),
    key(
        "oauth.response_mode",
        "form_post",
        "the implicit flow's answer: form_post or fragment",
    ),
    key(
        "oauth.hosted_domain",
        "",
        "Google: only accounts of this Workspace domain",
    ),
    key("oauth.tenant_id", "", "Entra: the directory (tenant) id"),
    key(
        "oauth.allowed_tenants",
        "",
        "Entra, multi-tenant: the tenants whose users may sign in",
    ),
    key(
        "oauth.graph_url",
        "https://graph.microsoft.com",
        "Entra: Microsoft Graph",
    ),
    key(
        "oauth.github_url",
        "https://github.com",
        "GitHub Enterprise: the server",
    ),
    key("oauth.github_api_url", "", "GitHub: the REST API"),
    key(
        "oauth.github_orgs",
        "",
        "GitHub: only members of these organizations",
    ),
    key(
        "oauth.github_teams",
        "",
        "GitHub: only members of these teams",
    ),
    key(
        "oauth.audiences",
        "the client id",
        "bearer tokens: the aud values accepted",
    ),
    key(
        "oauth.id_claim",
        "sub",
        "the claims the user's id comes from",
    ),
    key(
        "oauth.email_claim",
        "email",
        "the claims the email comes from",
    ),
    key(
        "oauth.username_claim",
        "preferred_username",
        "the claims the user name comes from",
    ),
    key(
        "oauth.name_claim",
        "name",
        "the claims the display name comes from",
    ),
    key(
        "oauth.groups_claim",
        "groups",
        "the claim the groups come from",
    ),
    key(
        "oauth.auth_url_params.<param>",
        "",
        "an extra authorization request parameter",
    ),
    // Authentication, the nested dialect (any number of providers).
    key(
        "auth.openid_connect.flow",
        "code",
        "the default flow of every provider",
    ),
    key(
        "auth.openid_connect.<name>.enabled",
        "false",
        "turns the provider on",
    ),
    key(
        "auth.openid_connect.<name>.kind",
        "by its name",
        "oidc, entra, github, google or adfs",
    ),
    key("auth.openid_connect.<name>.client_id", "", "the client id"),
    secret(
        "auth.openid_connect.<name>.client_secret",
        "",
        "the client secret",
    ),
    key(
        "auth.openid_connect.<name>.discovery_url",
        "",
        "the issuer or its discovery document",
    ),
    key(
        "auth.openid_connect.<name>.display_name",
        "by its name",
        "the name on the sign-in button",
    ),
    key(
        "auth.openid_connect.<name>.scopes",
        "openid,email,profile",
        "scopes asked for",
    ),
    key(
        "auth.openid_connect.<name>.flow",
        "auth.openid_connect.flow",
        "code or implicit",
    ),
    key(
        "auth.openid_connect.<name>.response_mode",
        "form_post",
        "form_post or fragment",
    ),
    key(
        "auth.openid_connect.<name>.hosted_domain",
        "",
        "Google: only this Workspace domain",
    ),
    key(
        "auth.openid_connect.<name>.tenant_id",
        "",
        "Entra: the tenant",
    ),
    key(
        "auth.openid_connect.<name>.allowed_tenants",
        "",
        "Entra, multi-tenant: the tenants admitted",
    ),
    key(
        "auth.openid_connect.<name>.graph_url",
        "https://graph.microsoft.com",
        "Entra: Microsoft Graph",
    ),
    key(
        "auth.openid_connect.<name>.web_url",
        "https://github.com",
        "GitHub: the server",
    ),
    key(
        "auth.openid_connect.<name>.api_url",
        "",
        "GitHub: the REST API",
    ),
    key(
        "auth.openid_connect.<name>.orgs",
        "",
        "GitHub: only members of these organizations",
    ),
    key(
        "auth.openid_connect.<name>.teams",
        "",
        "GitHub: only members of these teams",
    ),
    key(
        "auth.openid_connect.<name>.audiences",
        "the client id",
        "bearer tokens: the aud values accepted",
    ),
    key(
        "auth.openid_connect.<name>.claims.id",
        "sub",
        "the claims the user's id comes from",
    ),
    key(
        "auth.openid_connect.<name>.claims.email",
        "email",
        "the claims the email comes from",
    ),
    key(
        "auth.openid_connect.<name>.claims.username",
        "preferred_username",
        "the claims the user name comes from",
    ),
    key(
        "auth.openid_connect.<name>.claims.name",
        "name",
        "the claims the display name comes from",
    ),
    key(
        "auth.openid_connect.<name>.claims.groups",
        "groups",
        "the claim the groups come from",
    ),
    key(
        "auth.openid_connect.<name>.auth_url_params.<param>",
        "",
        "an extra authorization request parameter",
    ),
    // Authentication, every provider.
    key(
        "auth.allowed_groups",
        "",
        "groups or teams whose members are admitted",
    ),
    key(
        "auth.allowed_redirect_hosts",
        "",
        "hosts an absolute return URL may name",
    ),
    key(
        "auth.login_timeout",
        "10m",
        "how long a started login may take",
    ),
    key(
        "auth.bearer_tokens",
        "false",
        "admit Authorization: Bearer JWTs from a configured provider",
    ),
    key(
        "auth.pass_access_token",
        "false",
        "send the access token to the app",
    ),
    key(
        "auth.pass_id_token",
        "false",
        "send the ID token to the app",
    ),
    key(
        "auth.refresh_before",
        "60s",
        "refresh tokens this long before they expire",
    ),
    key(
        "auth.provider_logout",
        "false",
        "logout also ends the session at the provider",
    ),
    key(
        "auth.introspection_cache_ttl",
        "30s",
        "how long an opaque token's introspection is trusted",
    ),
    key(
        "auth.post_logout_redirect_url",
        "the public origin",
        "where the provider sends the browser after its logout",
    ),
    key(
        "auth.implicit_redirect_url",
        "the callback with `redirect` for `callback`",
        "the implicit flow's fragment page",
    ),
    // Sessions.
    key("session.store", "memory", "memory or redis"),
    secret("session.redis.url", "", "redis:// or rediss:// URL"),
    secret(
        "session.redis.cluster_urls",
        "",
        "the seed nodes of a Redis Cluster",
    ),
    key(
        "session.redis.ca_file",
        "system store",
        "CA certificates for rediss://",
    ),
    key(
        "session.redis.key_prefix",
        "portcullis",
        "every Redis key starts with it",
    ),
    key("session.redis.timeout", "2s", "longest wait for Redis"),
    key(
        "session.redis.sentinel.master_name",
        "",
        "Redis Sentinel: the master's name",
    ),
    key(
        "session.redis.sentinel.urls",
        "",
        "the sentinels' redis:// or rediss:// URLs",
    ),
    secret(
        "session.redis.sentinel.password",
        "",
        "the data nodes' password",
    ),
    key("session.redis.sentinel.db", "0", "the database number"),
    secret(
        "session.previous_secrets",
        "",
        "earlier cookie secrets, still accepted for reading",
    ),
    key(
        "session.cookie_name",
        "session_token",
        "the session cookie's name",
    ),
    key(
        "session.cookie_domain",
        "host-only",
        "a parent domain of the public host",
    ),
    key("session.lifetime", "12h", "absolute lifetime"),
    key(
        "session.idle_timeout",
        "1h",
        "a session unused this long ends",
    ),
    key(
        "session.max_sessions",
        "200000",
        "the memory store evicts beyond this",
    ),
    // SCIM.
    key("scim.enabled", "false", "serve the SCIM endpoints"),
    secret(
        "scim.database_url",
        "sqlite://portcullis-scim.db",
        "the directory: SQLite or PostgreSQL",
    ),
    key(
        "scim.required",
        "false",
        "admit only provisioned, active users",
    ),
    key(
        "scim.exempt_providers",
        "",
        "providers whose users need no provisioning",
    ),
    secret(
        "scim.endpoints.<idp>.username",
        "",
        "HTTP Basic user name of the endpoint",
    ),
    secret(
        "scim.endpoints.<idp>.password",
        "",
        "HTTP Basic password of the endpoint",
    ),
    secret(
        "scim.endpoints.<idp>.token",
        "",
        "bearer token of the endpoint",
    ),
    key(
        "scim.endpoints.<idp>.provider",
        "the only login provider, else <idp>",
        "the login provider it describes",
    ),
    key(
        "scim.endpoints.<idp>.required",
        "scim.required",
        "required, for this provider only",
    ),
    // The admin listener.
    key(
        "admin.listen_addr",
        "",
        "serve the admin API, health and metrics here (off when unset)",
    ),
    secret(
        "admin.token",
        "",
        "bearer token of the admin API; at least 32 bytes",
    ),
    // Envoy's gRPC check.
    key(
        "ext_authz.listen_addr",
        "",
        "serve Envoy's ext_authz gRPC check (Authorization/Check) here (off when unset)",
    ),
    key(
        "ext_authz.tls",
        "false",
        "serve it over TLS with the tls.cert_file certificate (else h2c)",
    ),
    // Diagnostics.
    key(
        "diagnostics.canary",
        "false",
        "serve /.well-known/portcullis/canary for `portcullis check --live`",
    ),
    // Shared Signals: transmitters whose events end sessions.
    key(
        "ssf.transmitters.<name>.metadata_url",
        "",
        "the transmitter's /.well-known/ssf-configuration",
    ),
    secret(
        "ssf.transmitters.<name>.push_token",
        "",
        "bearer token the transmitter pushes with",
    ),
    key(
        "ssf.transmitters.<name>.audience",
        "the public URL",
        "aud the events must carry",
    ),
    key(
        "ssf.transmitters.<name>.provider",
        "the only login provider",
        "the login provider whose users it describes",
    ),
    key(
        "ssf.transmitters.<name>.poll_url",
        "",
        "poll this endpoint for events instead (RFC 8936)",
    ),
    secret(
        "ssf.transmitters.<name>.poll_token",
        "",
        "bearer token sent when polling",
    ),
    key(
        "ssf.transmitters.<name>.poll_interval",
        "10s",
        "pause between polls",
    ),
    // Routes: each request is decided by the first route whose `match` holds.
    key(
        "routes.<index>.name",
        "",
        "the route's name in logs and metrics",
    ),
    key(
        "routes.<index>.match.host",
        "",
        "exact host, or *.example.com",
    ),
    key("routes.<index>.match.path", "", "exact path"),
    key(
        "routes.<index>.match.path_prefix",
        "",
        "path prefix, on segment boundaries",
    ),
    key(
        "routes.<index>.match.methods",
        "",
        "the methods it applies to",
    ),
    key(
        "routes.<index>.public",
        "false",
        "no login; client identity headers still removed",
    ),
    key(
        "routes.<index>.allow.authenticated",
        "",
        "admit every signed-in user",
    ),
    key(
        "routes.<index>.allow.users",
        "",
        "admit these emails or user names",
    ),
    key("routes.<index>.allow.emails", "", "admit these emails"),
    key(
        "routes.<index>.allow.domains",
        "",
        "admit emails of these domains",
    ),
    key(
        "routes.<index>.allow.groups",
        "",
        "admit members of these groups or teams",
    ),
    key(
        "routes.<index>.allow.claims.<claim>",
        "",
        "admit users whose claim holds one of these values",
    ),
    key(
        "routes.<index>.deny.users",
        "",
        "refuse these emails or user names",
    ),
    key("routes.<index>.deny.emails", "", "refuse these emails"),
    key(
        "routes.<index>.deny.domains",
        "",
        "refuse emails of these domains",
    ),
    key(
        "routes.<index>.deny.groups",
        "",
        "refuse members of these groups or teams",
    ),
    key(
        "routes.<index>.deny.claims.<claim>",
        "",
        "refuse users whose claim holds one of these values",
    ),
    key(
        "routes.<index>.max_auth_age",
        "",
        "step-up: a login older than this signs in again",
    ),
    key(
        "routes.<index>.acr_values",
        "",
        "step-up: the acr values accepted",
    ),
    key("routes.<index>.provider", "", "this route's login provider"),
    key(
        "routes.<index>.upstream_url",
        "upstream_url",
        "this route's upstream",
    ),
    key(
        "routes.<index>.audience",
        "the upstream's origin",
        "aud of the identity assertion",
    ),
    key(
        "routes.<index>.path_parameters",
        "false",
        "accept ; path parameters on this route",
    ),
    // The identity assertion.
    key(
        "identity_jwt.enabled",
        "false",
        "sign an identity assertion for the app",
    ),
    key(
        "identity_jwt.signing_key_file",
        "",
        "EC P-256 private key (PEM)",
    ),
    key(
        "identity_jwt.previous_key_files",
        "",
        "earlier public keys still published",
    ),
    key(
        "identity_jwt.lifetime",
        "2m",
        "how long an assertion is valid (at most 5m)",
    ),
    // The sign-in page.
    key("branding.title", "Sign in", "the page's title and heading"),
    key("branding.message", "", "a line under the heading"),
    key("branding.logo_file", "", "an image embedded in the page"),
    key("branding.primary_color", "#1d4ed8", "the buttons' colour"),
    key(
        "branding.background_color",
        "#f4f4f5",
        "the page's background",
    ),
];

/// Whether the pattern segment `p` (maybe a `<placeholder>`) matches `s`; `<index>`
/// matches a list position.
fn segment_matches(p: &str, s: &str) -> bool {
    match p {
        "<index>" => !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()),
        _ => (p.starts_with('<') && p.ends_with('>')) || p == s,
    }
}

/// The registered key a dotted path is, if any.
pub fn lookup(path: &str) -> Option<&'static Key> {
    let parts: Vec<&str> = path.split('.').collect();
    KEYS.iter().find(|k| {
        let pattern: Vec<&str> = k.name.split('.').collect();
        pattern.len() == parts.len()
            && pattern
                .iter()
                .zip(&parts)
                .all(|(p, s)| segment_matches(p, s))
    })
}

/// Whether `path` is a key or a section some key lies under.
pub fn is_known_or_section(path: &str) -> bool {
    if lookup(path).is_some() {
        return true;
    }
    let parts: Vec<&str> = path.split('.').collect();
    KEYS.iter().any(|k| {
        let pattern: Vec<&str> = k.name.split('.').collect();
        pattern.len() > parts.len()
            && pattern
                .iter()
                .zip(&parts)
                .all(|(p, s)| segment_matches(p, s))
    })
}

/// Whether `path` holds a structured value (a list of mappings), which an environment
/// variable gives as YAML or JSON text.
pub fn is_structured(path: &str) -> bool {
    path == "routes"
}

/// Whether `path` is a secret key (and so may be given as `<path>_file`).
pub fn is_secret(path: &str) -> bool {
    lookup(path).is_some_and(|k| k.secret)
}

/// The top-level names, for mapping environment variables: each section and key, and
/// the `_file` form of each top-level secret.
pub fn top_level() -> &'static [&'static str] {
    static TOP: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
        let mut top: Vec<&'static str> = Vec::new();
        for k in KEYS {
            let first = k.name.split('.').next().unwrap_or(k.name);
            if !top.contains(&first) {
                top.push(first);
            }
        }
        top.push("cookie_secret_file");
        top
    });
    &TOP
}

/// A provider's fields (below `auth.openid_connect.<name>.`), except `enabled` and the
/// free-form `auth_url_params`.
pub fn provider_fields() -> &'static [&'static str] {
    static FIELDS: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
        KEYS.iter()
            .filter_map(|k| k.name.strip_prefix("auth.openid_connect.<name>."))
            .filter(|f| *f != "enabled" && !f.starts_with("auth_url_params"))
            .collect()
    });
    &FIELDS
}

/// The environment variable of a key: nested by `__`, the flat dialect as `OAUTH_*`.
pub fn env_name(name: &str) -> String {
    crate::tree::env_name(&name.split('.').collect::<Vec<_>>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_is_listed_once_and_secrets_are_marked() {
        let mut names: Vec<&str> = KEYS.iter().map(|k| k.name).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len(), "a key is listed twice");
        assert!(is_secret("cookie_secret"));
        assert!(is_secret("auth.openid_connect.okta.client_secret"));
        assert!(is_secret("scim.endpoints.okta.token"));
        assert!(!is_secret("upstream_url"));
        assert!(lookup("auth.openid_connect.okta.claims.email").is_some());
        assert!(lookup("auth.openid_connect.okta.claims").is_none());
        assert!(is_known_or_section("auth.openid_connect.okta.claims"));
        assert!(!is_known_or_section("auth.frobnicate"));
    }

    #[test]
    fn the_derived_lists_follow_the_registry() {
        assert!(top_level().contains(&"scim") && top_level().contains(&"cookie_secret_file"));
        assert!(provider_fields().contains(&"client_secret"));
        assert!(provider_fields().contains(&"claims.groups"));
        assert!(!provider_fields().contains(&"enabled"));
        assert_eq!(env_name("oauth.client_id"), "OAUTH_CLIENT_ID");
        assert_eq!(
            env_name("auth.openid_connect.<name>.client_id"),
            "AUTH__OPENID_CONNECT__<NAME>__CLIENT_ID"
        );
    }

    /// The keys named in the README's configuration tables.
    fn readme_keys() -> Vec<String> {
        let readme =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
                .expect("the README");
        let start = readme
            .find("\n## Configuration")
            .expect("a Configuration section");
        let end = readme[start..]
            .find("\n## Endpoints")
            .map_or(readme.len(), |e| start + e);
        let mut keys = Vec::new();
        // Rows of the tables whose first column is `key` (other tables list calls or
        // events).
        let mut in_key_table = false;
        for line in readme[start..end].lines() {
            if line.starts_with("| key |") {
                in_key_table = true;
            } else if !line.starts_with('|') {
                in_key_table = false;
            }
            if !in_key_table {
                continue;
            }
            let Some(cell) = line.strip_prefix("| `") else {
                continue;
            };
            let first = cell.split(" |").next().unwrap_or("");
            for part in first.split(", ") {
                let k = part.trim().trim_matches('`');
                if !k.is_empty() && k != "key" {
                    keys.push(k.to_string());
                }
            }
        }
        keys
    }

    #[test]
    fn the_readme_tables_and_the_registry_name_the_same_keys() {
        let documented = readme_keys();
        for k in &documented {
            assert!(
                KEYS.iter().any(|r| r.name == k),
                "the README documents `{k}`, which is not a key"
            );
        }
        for k in KEYS {
            assert!(
                documented.iter().any(|d| d == k.name),
                "`{}` is a key the README's tables do not document",
                k.name
            );
        }
    }
}
