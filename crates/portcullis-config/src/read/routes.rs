//! Routes (`routes:`, a YAML list) and the identity assertion (`identity_jwt`).
//!
//! Every mistake names the route by its position and name, the key, and the fix. A
//! route must say who may use it (`public: true`, or an `allow`), and what it says must
//! be able to hold: paths are written as Portcullis will match them (normalized), and a
//! named provider must be configured.

use std::path::PathBuf;
use std::time::Duration;

use crate::model::*;
use crate::reader::Reader;

/// The longest an identity assertion may live: the app trusts it until then.
const MAX_ASSERTION_LIFETIME: Duration = Duration::from_secs(300);

pub(super) fn read_routes(r: &Reader<'_>, auth: &mut AuthConfig) -> Vec<RouteConfig> {
    let count = r.items("routes");
    let mut routes = Vec::with_capacity(count);
    for index in 0..count {
        routes.push(read_route(r, index, auth));
    }
    if !routes.is_empty() && !auth.enabled && routes.iter().any(|r| !r.public) {
        r.error(
            "routes",
            "protect paths while authentication is off (open mode): nobody could sign in to use them",
            "turn authentication on (OAUTH_ENABLED=true or a provider under auth.openid_connect), or make the routes public",
        );
    }
    // The claims rules look at must travel with the identity.
    let mut wanted: Vec<String> = routes
        .iter()
        .flat_map(|r| r.allow.claims.iter().chain(&r.deny.claims))
        .map(|(name, _)| name.clone())
        .collect();
    wanted.sort();
    wanted.dedup();
    for provider in &mut auth.providers {
        provider.claims.keep = wanted.clone();
    }
    routes
}

fn read_route(r: &Reader<'_>, index: usize, auth: &AuthConfig) -> RouteConfig {
    let base = format!("routes.{index}");
    let key = |field: &str| format!("{base}.{field}");
    let name = r.string(&key("name"));
    let label = match &name {
        Some(n) => format!("route {index} ({n})"),
        None => format!("route {index}"),
    };
    let host = r.string(&key("match.host")).map(|h| h.to_ascii_lowercase());
    if let Some(h) = &host {
        let bare = h.strip_prefix("*.").unwrap_or(h);
        if bare.is_empty() || bare.contains(['*', '/', ' ', '@', ',']) {
            r.error(
                &key("match.host"),
                format!("{label}: `{h}` is not a host or a `*.domain` pattern"),
                "write app.example.com, or *.example.com for every subdomain",
            );
        }
    }
    let path = read_path(r, &key("match.path"), &label);
    let path_prefix = read_path(r, &key("match.path_prefix"), &label);
    if path.is_some() && path_prefix.is_some() {
        r.error(
            &key("match.path_prefix"),
            format!("{label}: is set together with match.path"),
            "match an exact path or a prefix, not both",
        );
    }
    let methods: Vec<String> = r
        .list(&key("match.methods"))
        .unwrap_or_default()
        .into_iter()
        .map(|m| m.to_ascii_uppercase())
        .collect();
    for m in &methods {
        if !m.bytes().all(|b| b.is_ascii_uppercase()) {
            r.error(
                &key("match.methods"),
                format!("{label}: `{m}` is not an HTTP method"),
                "list methods such as GET, POST",
            );
        }
    }
    if !r.is_set(&key("match")) {
        r.error(
            &key("match"),
            format!("{label}: says nothing about which requests it takes"),
            "add match: with host, path, path_prefix or methods (match: {path_prefix: /} takes everything)",
        );
    }
    let public = r.bool(&key("public"), false);
    let allow = read_rules(r, &key("allow"), &label, true);
    let deny = read_rules(r, &key("deny"), &label, false);
    let max_auth_age = r
        .is_set(&key("max_auth_age"))
        .then(|| r.duration(&key("max_auth_age"), Duration::ZERO));
    let acr_values = r.list(&key("acr_values")).unwrap_or_default();
    let provider = r.string(&key("provider"));
    if let Some(p) = &provider
        && auth.enabled
        && !auth.providers.iter().any(|c| &c.name == p)
    {
        let names: Vec<&str> = auth.providers.iter().map(|c| c.name.as_str()).collect();
        r.error(
            &key("provider"),
            format!("{label}: `{p}` is not a configured login provider"),
            format!("name one of: {}", names.join(", ")),
        );
    }
    if public {
        for (field, set) in [
            ("allow", !allow.is_empty()),
            ("deny", !deny.is_empty()),
            ("max_auth_age", max_auth_age.is_some()),
            ("acr_values", !acr_values.is_empty()),
            ("provider", provider.is_some()),
        ] {
            if set {
                r.error(
                    &key(field),
                    format!("{label}: is public, so nobody signs in and `{field}` cannot apply"),
                    format!("remove `{field}`, or `public: true` to protect the route"),
                );
            }
        }
    } else if allow.is_empty() {
        r.error(
            &key("allow"),
            format!("{label}: does not say who may use it"),
            "add allow: (for example allow: {authenticated: true}, or groups, emails, domains, users, claims), or public: true",
        );
    }
    RouteConfig {
        index,
        name,
        host,
        path,
        path_prefix,
        methods,
        public,
        allow,
        deny,
        max_auth_age,
        acr_values,
        provider,
        upstream_url: r.url(
            &key("upstream_url"),
            "set it to this route's app, such as http://api.internal:8080",
        ),
        audience: r.string(&key("audience")),
        path_parameters: r.bool(&key("path_parameters"), false),
    }
}

/// A path as requests will be matched: starting with `/`, already normalized.
fn read_path(r: &Reader<'_>, key: &str, label: &str) -> Option<String> {
    let path = r.string(key)?;
    let normalized = path.starts_with('/')
        && !path.contains("//")
        && !path.split('/').any(|s| s == "." || s == "..")
        && !path.contains(['\\', '?', '#', ' ']);
    if !normalized {
        r.error(
            key,
            format!("{label}: `{path}` is not a path as requests are matched (normalized, starting with /)"),
            "write it without dot segments, `//`, `\\`, query or fragment, such as /admin",
        );
    }
    Some(path)
}

fn read_rules(r: &Reader<'_>, key: &str, label: &str, allow: bool) -> RuleSet {
    let lower = |field: &str| -> Vec<String> {
        r.list(&format!("{key}.{field}"))
            .unwrap_or_default()
            .into_iter()
            .map(|v| v.to_lowercase())
            .collect()
    };
    let authenticated = if allow {
        let k = format!("{key}.authenticated");
        let set = r.is_set(&k);
        let value = r.bool(&k, false);
        if set && !value {
            r.error(
                &k,
                format!("{label}: `authenticated: false` admits nobody"),
                "remove it, or write authenticated: true to admit every signed-in user",
            );
        }
        value
    } else {
        false
    };
    let domains: Vec<String> = lower("domains")
        .into_iter()
        .map(|d| d.trim_start_matches('@').to_string())
        .collect();
    let mut claims = Vec::new();
    for claim in r.keys(&format!("{key}.claims")) {
        let values = r.list(&format!("{key}.claims.{claim}")).unwrap_or_default();
        if values.is_empty() {
            r.error(
                &format!("{key}.claims.{claim}"),
                format!("{label}: lists no value for the claim `{claim}`"),
                "list the values that match, such as [eng, sre], or true",
            );
        }
        claims.push((claim, values));
    }
    RuleSet {
        authenticated,
        users: lower("users"),
        emails: lower("emails"),
        domains,
        groups: r.list(&format!("{key}.groups")).unwrap_or_default(),
        claims,
    }
}

pub(super) fn read_identity_jwt(r: &Reader<'_>) -> Option<IdentityJwtConfig> {
    let enabled = r.bool("identity_jwt.enabled", false);
    let key_file = r.string("identity_jwt.signing_key_file").map(PathBuf::from);
    let previous: Vec<PathBuf> = r
        .list("identity_jwt.previous_key_files")
        .unwrap_or_default()
        .into_iter()
        .map(PathBuf::from)
        .collect();
    let lifetime = r.duration("identity_jwt.lifetime", Duration::from_secs(120));
    if !enabled {
        return None;
    }
    if lifetime > MAX_ASSERTION_LIFETIME || lifetime < Duration::from_secs(10) {
        r.error(
            "identity_jwt.lifetime",
            format!(
                "is {}s; an assertion must live between 10 seconds and 5 minutes",
                lifetime.as_secs()
            ),
            "use 2m (the default) or another value in that range",
        );
    }
    let Some(signing_key_file) = key_file else {
        r.error(
            "identity_jwt.signing_key_file",
            "is missing, and identity_jwt.enabled is true",
            "set it to an EC P-256 private key in PEM, such as the output of `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256`",
        );
        return None;
    };
    Some(IdentityJwtConfig {
        signing_key_file,
        previous_key_files: previous,
        lifetime,
    })
}
