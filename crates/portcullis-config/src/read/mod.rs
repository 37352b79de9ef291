//! Reading the configuration tree into the typed [`Config`], one module per section.
//! Every getter names its key, and every problem is recorded with the key and the fix;
//! reading never stops at the first problem.

mod auth;
mod branding;
mod routes;
mod scim;
mod session;
mod signals;

use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use secrecy::ExposeSecret;

use crate::model::*;
use crate::reader::Reader;

/// The scopes asked for when none are configured.
pub(crate) const DEFAULT_SCOPES: &[&str] = &["openid", "email", "profile"];

impl Config {
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
        let mut auth = auth::read_auth(r, public_url.as_ref());
        let routes = routes::read_routes(r, &mut auth);
        let identity_jwt = routes::read_identity_jwt(r);
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
            store: session::read_store(r),
            previous_secrets: session::read_previous_secrets(r),
            cookie_name: session::read_cookie_name(r),
            cookie_domain: session::read_cookie_domain(r, &auth, public_url.as_ref()),
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
        let listen_addr = r.socket_addr("listen_addr", "0.0.0.0:8080");
        let ssf = signals::read_ssf(r, &auth, public_url.as_ref());
        let admin = signals::read_admin(r, listen_addr);
        let ext_authz = signals::read_ext_authz(r, listen_addr, admin.as_ref(), tls.is_some());
        Config {
            listen_addr,
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
            scim: scim::link_scim(r, scim::read_scim(r), &auth),
            branding: branding::read_branding(r),
            routes,
            identity_jwt,
            admin,
            ext_authz,
            ssf,
            diagnostics_canary: r.bool("diagnostics.canary", false),
            auth,
            session,
            log,
        }
    }
}

/// `upstream.allowed_upgrades`: WebSocket unless configured; `h2c` is refused.
pub(super) fn read_upgrades(r: &Reader<'_>) -> Vec<String> {
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

pub(super) fn read_tls(r: &Reader<'_>) -> Option<TlsConfig> {
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

pub(super) fn read_cidrs(r: &Reader<'_>, key: &str) -> Vec<IpNet> {
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
