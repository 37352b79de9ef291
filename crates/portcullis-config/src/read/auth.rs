//! Authentication: the providers in both dialects (the flat `OAUTH_*` one-provider set-up
//! and the nested `auth.openid_connect.<name>`), and the settings every provider shares.

use std::time::Duration;

use url::Url;

use super::DEFAULT_SCOPES;
use crate::model::*;
use crate::reader::Reader;

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
/// the flat `oauth.<field>` names (`OAUTH_CLIENT_ID`) of the one-provider set-up.
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

/// A provider's fields, for accepting those of a provider that is not in use. `kind`
/// exists only in the nested dialect (the flat one names the kind in `oauth.provider`).
fn provider_fields(keys: &ProviderKeys) -> impl Iterator<Item = &'static str> {
    let flat = keys.flat;
    crate::keys::provider_fields()
        .iter()
        .copied()
        .filter(move |f| !(flat && *f == "kind"))
}

/// `kind:` of a nested provider, when the name alone does not say it.
fn read_kind(r: &Reader<'_>, keys: &ProviderKeys, name: &str) -> Family {
    let key = keys.key("kind");
    match r.string(&key).map(|k| k.to_ascii_lowercase()).as_deref() {
        None => family(name),
        Some("oidc" | "generic" | "okta" | "auth0" | "custom") => Family::Generic,
        Some("entra" | "microsoft" | "azure") => Family::Entra,
        Some("github") => Family::GitHub,
        Some("google") => Family::Google,
        Some("adfs") => Family::Adfs,
        Some(other) => {
            r.error(
                &key,
                format!("`{other}` is not a kind of provider"),
                "write oidc (any OpenID Connect provider), entra, github, google or adfs",
            );
            family(name)
        }
    }
}

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
    let auth_url_params = r.string_map(&key("auth_url_params"));
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
    let both = |key: String| {
        let env = crate::tree::env_name(&key.split('.').collect::<Vec<_>>());
        format!("{key} ({env})")
    };
    let location_key = both(location);
    let client_id_key = both(key("client_id"));
    let client_secret_key = both(key("client_secret"));
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
        client_id_key,
        client_secret_key,
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

pub(super) fn read_auth(r: &Reader<'_>, public_url: Option<&Url>) -> AuthConfig {
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
            for field in provider_fields(&keys) {
                r.mark_known(&keys.key(field));
            }
            r.string_map(&keys.key("auth_url_params"));
            continue;
        }
        let fam = read_kind(r, &keys, &name);
        if let Some(p) = read_provider(r, &keys, &name, fam, default_flow) {
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
                for field in provider_fields(&flat) {
                    r.mark_known(&flat.key(field));
                }
                r.string_map(&flat.key("auth_url_params"));
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
        for field in provider_fields(&flat) {
            r.mark_known(&flat.key(field));
        }
        r.string_map(&flat.key("auth_url_params"));
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
        introspection_cache_ttl: r
            .duration("auth.introspection_cache_ttl", Duration::from_secs(30)),
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
