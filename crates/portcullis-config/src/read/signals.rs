//! The admin listener and the Shared Signals transmitters: how the identity provider and
//! the operators end sessions from outside.

use std::net::SocketAddr;
use std::time::Duration;

use secrecy::ExposeSecret;
use url::Url;

use crate::model::*;
use crate::reader::Reader;

/// The shortest admin token accepted, in bytes.
pub(crate) const MIN_ADMIN_TOKEN_BYTES: usize = 32;
/// The shortest push or poll token accepted, in bytes.
const MIN_SSF_TOKEN_BYTES: usize = 16;

pub(super) fn read_admin(r: &Reader<'_>, public: SocketAddr) -> Option<AdminConfig> {
    let token = r.secret("admin.token");
    if !r.is_set("admin.listen_addr") {
        if token.is_some() {
            r.error(
                "admin.listen_addr",
                "is not set, while admin.token is",
                "set ADMIN__LISTEN_ADDR (such as 127.0.0.1:9090) to serve the admin API, or remove the token",
            );
        }
        return None;
    }
    let listen_addr = r.socket_addr("admin.listen_addr", "127.0.0.1:9090");
    if listen_addr == public
        || (listen_addr.port() == public.port() && public.ip().is_unspecified())
    {
        r.error(
            "admin.listen_addr",
            format!("{listen_addr} is the public listener's address"),
            "give the admin listener a port of its own, such as 127.0.0.1:9090: nothing of it is served to the public",
        );
    }
    let Some(token) = token else {
        r.error(
            "admin.token",
            "is missing, and admin.listen_addr is set",
            "set ADMIN__TOKEN (or ADMIN__TOKEN_FILE) to at least 32 random bytes, for example the output of `openssl rand -base64 32`",
        );
        return None;
    };
    if token.expose_secret().len() < MIN_ADMIN_TOKEN_BYTES {
        r.error(
            "admin.token",
            format!(
                "is {} bytes long, shorter than the {MIN_ADMIN_TOKEN_BYTES} bytes required",
                token.expose_secret().len()
            ),
            "use at least 32 random bytes, for example the output of `openssl rand -base64 32`",
        );
    }
    Some(AdminConfig { listen_addr, token })
}

/// Envoy's gRPC check. Like the admin listener it belongs on an address of its own, where
/// only the gateway reaches it: its caller is trusted to describe the request truly.
pub(super) fn read_ext_authz(
    r: &Reader<'_>,
    public: SocketAddr,
    admin: Option<&AdminConfig>,
    has_tls: bool,
) -> Option<ExtAuthzConfig> {
    let tls = r.bool("ext_authz.tls", false);
    if !r.is_set("ext_authz.listen_addr") {
        if tls {
            r.error(
                "ext_authz.tls",
                "is true, while ext_authz.listen_addr is not set",
                "set EXT_AUTHZ__LISTEN_ADDR (such as 0.0.0.0:9001) to serve Envoy's gRPC check, or remove ext_authz.tls",
            );
        }
        return None;
    }
    let listen_addr = r.socket_addr("ext_authz.listen_addr", "0.0.0.0:9001");
    let clashes = |other: SocketAddr| {
        listen_addr == other
            || (listen_addr.port() == other.port()
                && (other.ip().is_unspecified() || listen_addr.ip().is_unspecified()))
    };
    if clashes(public) {
        r.error(
            "ext_authz.listen_addr",
            format!("{listen_addr} is the public listener's address"),
            "give the gRPC check a port of its own, such as 0.0.0.0:9001, reachable by the gateway only",
        );
    }
    if let Some(admin) = admin.filter(|a| clashes(a.listen_addr)) {
        r.error(
            "ext_authz.listen_addr",
            format!(
                "{listen_addr} is the admin listener's address ({})",
                admin.listen_addr
            ),
            "give the gRPC check a port of its own, such as 0.0.0.0:9001",
        );
    }
    if tls && !has_tls {
        r.error(
            "ext_authz.tls",
            "is true, but no certificate is configured",
            "set tls.cert_file and tls.key_file (TLS__CERT_FILE, TLS__KEY_FILE), or set ext_authz.tls to false for h2c",
        );
    }
    Some(ExtAuthzConfig { listen_addr, tls })
}

pub(super) fn read_ssf(
    r: &Reader<'_>,
    auth: &AuthConfig,
    public_url: Option<&Url>,
) -> Vec<SsfTransmitterConfig> {
    let mut transmitters = Vec::new();
    for name in r.keys("ssf.transmitters") {
        let base = format!("ssf.transmitters.{name}");
        let valid_name = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !valid_name {
            r.error(
                &base,
                format!("`{name}` is not a usable transmitter name"),
                "use lowercase letters, digits, - and _ (it becomes /api/v1/auth/ssf/<name>)",
            );
        }
        let metadata_url = r.url(
            &format!("{base}.metadata_url"),
            "set it to the transmitter's configuration document, such as https://idp.example.com/.well-known/ssf-configuration",
        );
        if metadata_url.is_none() && !r.is_set(&format!("{base}.metadata_url")) {
            r.error(
                &format!("{base}.metadata_url"),
                "is missing",
                "set it to the transmitter's configuration document (its issuer and keys come from there), such as https://idp.example.com/.well-known/ssf-configuration",
            );
        }
        let push_token = r.secret(&format!("{base}.push_token"));
        let poll_url = r.url(
            &format!("{base}.poll_url"),
            "set it to the transmitter's poll endpoint for this stream",
        );
        let poll_token = r.secret(&format!("{base}.poll_token"));
        let interval = r.duration(&format!("{base}.poll_interval"), Duration::from_secs(10));
        for (key, token) in [("push_token", &push_token), ("poll_token", &poll_token)] {
            if let Some(t) = token
                && t.expose_secret().len() < MIN_SSF_TOKEN_BYTES
            {
                r.error(
                    &format!("{base}.{key}"),
                    format!("is shorter than {MIN_SSF_TOKEN_BYTES} bytes"),
                    "use at least 16 random characters, for example the output of `openssl rand -base64 24`",
                );
            }
        }
        match (&push_token, &poll_url) {
            (None, None) if !r.is_set(&format!("{base}.poll_url")) => r.error(
                &format!("{base}.push_token"),
                "is missing, and no poll_url is set: no event could arrive",
                "set push_token to the bearer token the transmitter will push with (and register /api/v1/auth/ssf/<name> as its endpoint), or poll_url to poll it",
            ),
            (Some(_), Some(_)) => r.error(
                &format!("{base}.poll_url"),
                "is set together with push_token",
                "choose one delivery: push (push_token) or poll (poll_url)",
            ),
            _ => {}
        }
        if poll_url.is_none() && poll_token.is_some() {
            r.error(
                &format!("{base}.poll_token"),
                "is set without poll_url",
                "set poll_url too, or remove the poll token",
            );
        }
        let audience = match r.string(&format!("{base}.audience")) {
            Some(a) => a,
            None => match public_url {
                Some(u) => u.origin().ascii_serialization(),
                None => {
                    r.error(
                        &format!("{base}.audience"),
                        "is missing, and there is no public_url to default to",
                        "set the audience the transmitter puts in its events (usually the public URL), or set public_url",
                    );
                    String::new()
                }
            },
        };
        let provider = match r.string(&format!("{base}.provider")) {
            Some(p) => {
                if !auth.providers.iter().any(|c| c.name == p) {
                    r.error(
                        &format!("{base}.provider"),
                        format!("names `{p}`, which is not a configured login provider"),
                        format!(
                            "use one of: {}",
                            auth.providers
                                .iter()
                                .map(|c| c.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    );
                }
                p
            }
            None => match auth.providers.as_slice() {
                [only] => only.name.clone(),
                [] => {
                    r.error(
                        &base,
                        "is configured, but no login provider is",
                        "shared signals describe the users of a login provider: configure one (and auth), or remove the transmitter",
                    );
                    String::new()
                }
                _ => {
                    r.error(
                        &format!("{base}.provider"),
                        "is missing, and several login providers are configured",
                        "name the provider whose users this transmitter describes",
                    );
                    String::new()
                }
            },
        };
        if let Some(metadata_url) = metadata_url {
            transmitters.push(SsfTransmitterConfig {
                name,
                metadata_url,
                push_token,
                poll: poll_url.map(|url| SsfPollConfig {
                    url,
                    token: poll_token,
                    interval,
                }),
                audience,
                provider,
            });
        }
    }
    transmitters
}
