//! SCIM: the directory, its endpoints and their credentials, and how each endpoint is
//! tied to a login provider.

use secrecy::SecretString;

use crate::model::*;
use crate::reader::Reader;

/// The shortest SCIM password or token accepted, in bytes.
pub(super) const MIN_SCIM_SECRET_BYTES: usize = 16;

pub(super) fn read_scim(r: &Reader<'_>) -> ScimConfig {
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

/// Ties each SCIM endpoint to the login provider whose users it describes, and makes
/// sure `scim.required` leaves no provider's users unchecked.
///
/// An endpoint without `provider` describes the only login provider when there is one
/// (the README's `SCIM__ENDPOINTS__MICROSOFT__TOKEN` beside `OAUTH_PROVIDER=entra`);
/// with several it must be named after one or say which. Every mismatch is an error:
/// an endpoint tied to no provider would let deprovisioned users keep their sessions.
pub(super) fn link_scim(r: &Reader<'_>, mut scim: ScimConfig, auth: &AuthConfig) -> ScimConfig {
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
