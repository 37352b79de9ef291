//! Loading scenarios: each dialect alone, layering, secrets from files, and the errors an
//! operator sees for the common mistakes.
#![allow(clippy::unwrap_used, unreachable_pub)]

use super::*;
use std::time::Duration;

const SECRET: &str = "0123456789abcdef0123456789abcdef";

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn flat_oidc() -> Vec<(&'static str, &'static str)> {
    vec![
        ("OAUTH_ENABLED", "true"),
        ("OAUTH_PROVIDER", "oidc"),
        ("OAUTH_ISSUER_URL", "https://idp.example.com"),
        ("OAUTH_CLIENT_ID", "0123"),
        ("OAUTH_CLIENT_SECRET", "shh"),
        (
            "OAUTH_REDIRECT_URL",
            "https://app.example.com/api/v1/auth/callback",
        ),
        ("OAUTH_SCOPES", "openid,email"),
        ("OAUTH_ALLOWED_USERS", "Alice@Example.com"),
        ("UPSTREAM_URL", "http://127.0.0.1:3000"),
        ("LISTEN_ADDR", "127.0.0.1:4180"),
        ("COOKIE_SECRET", SECRET),
        ("PATH", "/usr/bin"),
        ("SESSION_MANAGER", "local/unix:@/tmp/.ICE-unix/1"),
    ]
}

fn load_env(pairs: &[(&str, &str)]) -> Result<Config, LoadError> {
    load(&Sources {
        env: env(pairs),
        ..Sources::default()
    })
}

fn errors(result: Result<Config, LoadError>) -> Vec<ConfigError> {
    match result {
        Err(LoadError::Invalid(ConfigErrors(e))) => e,
        Err(other) => panic!("expected validation errors, got {other}"),
        Ok(_) => panic!("expected validation errors, got a valid config"),
    }
}

fn temp_file(contents: &str) -> tempfile_lite::TempFile {
    tempfile_lite::TempFile::new(contents)
}

/// A minimal temporary file helper, to avoid a dev-dependency for four tests.
mod tempfile_lite {
    use std::path::{Path, PathBuf};

    pub struct TempFile(PathBuf);

    impl TempFile {
        pub fn new(contents: &str) -> Self {
            let path = std::env::temp_dir().join(format!(
                "portcullis-config-test-{}-{}",
                std::process::id(),
                portcullis_unique()
            ));
            std::fs::write(&path, contents).expect("write temp file");
            TempFile(path)
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn portcullis_unique() -> u64 {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        NEXT.fetch_add(1, Ordering::Relaxed)
    }
}

#[test]
fn flat_dialect_alone_configures_a_generic_oidc_provider() {
    let config = load_env(&flat_oidc()).expect("valid");
    assert!(config.auth.enabled);
    assert_eq!(config.listen_addr.to_string(), "127.0.0.1:4180");
    assert_eq!(config.auth.providers.len(), 1);
    let p = &config.auth.providers[0];
    assert_eq!(p.name, "oidc");
    // A client id with a leading zero keeps it.
    assert_eq!(p.client_id, "0123");
    assert_eq!(p.scopes, vec!["openid", "email"]);
    assert_eq!(
        p.kind,
        ProviderKind::Oidc {
            discovery_url: Url::parse("https://idp.example.com").unwrap()
        }
    );
    assert_eq!(config.auth.allowed_users, vec!["Alice@Example.com"]);
    assert_eq!(config.callback_path(), "/api/v1/auth/callback");
    assert!(config.secure_cookies());
}

#[test]
fn open_mode_is_the_default() {
    let config = load_env(&[("UPSTREAM_URL", "http://127.0.0.1:3000")]).expect("valid");
    assert!(!config.auth.enabled);
    assert!(config.auth.providers.is_empty());
    assert_eq!(config.listen_addr.to_string(), "0.0.0.0:8080");
    assert_eq!(config.session.cookie_name, "session_token");
}

#[test]
fn oauth_enabled_false_is_open_mode_even_with_other_settings() {
    let mut vars = flat_oidc();
    vars[0] = ("OAUTH_ENABLED", "false");
    let config = load_env(&vars).expect("valid");
    assert!(!config.auth.enabled);
}

#[test]
fn nested_dialect_alone_configures_named_providers() {
    let config = load_env(&[
        ("AUTH__OPENID_CONNECT__OKTA__ENABLED", "true"),
        ("AUTH__OPENID_CONNECT__OKTA__CLIENT_ID", "okta-id"),
        ("AUTH__OPENID_CONNECT__OKTA__CLIENT_SECRET", "okta-secret"),
        (
            "AUTH__OPENID_CONNECT__OKTA__DISCOVERY_URL",
            "https://example.okta.com/.well-known/openid-configuration",
        ),
        (
            "AUTH__OPENID_CONNECT__OKTA__AUTH_URL_PARAMS__AUDIENCE",
            "api://default",
        ),
        ("AUTH__OPENID_CONNECT__CUSTOM__ENABLED", "false"),
        ("AUTH__OPENID_CONNECT__CUSTOM__DISPLAY_NAME", "Corp SSO"),
        ("AUTH__OPENID_CONNECT__FLOW", "code"),
        ("PUBLIC_URL", "https://houston.example.com"),
        ("UPSTREAM_URL", "http://127.0.0.1:3000"),
        ("COOKIE_SECRET", SECRET),
    ])
    .expect("valid");
    assert!(config.auth.enabled);
    assert_eq!(config.auth.providers.len(), 1);
    let okta = &config.auth.providers[0];
    assert_eq!(okta.name, "okta");
    assert_eq!(okta.display_name, "Okta");
    assert_eq!(
        okta.auth_url_params,
        vec![("audience".to_string(), "api://default".to_string())]
    );
    assert_eq!(okta.flow, Flow::Code);
    assert_eq!(
        config.auth.redirect_url.as_ref().map(Url::as_str),
        Some("https://houston.example.com/api/v1/auth/callback")
    );
}

#[test]
fn yaml_in_the_design_documents_camel_case_is_understood() {
    let file = temp_file(
        "upstreamUrl: http://127.0.0.1:3000\ncookieSecret: 0123456789abcdef0123456789abcdef\npublicUrl: https://houston.example.com\nauth:\n  openidConnect:\n    flow: code\n    okta:\n      enabled: true\n      clientId: abc\n      clientSecret: xyz\n      discoveryUrl: https://example.okta.com\n      authUrlParams:\n        audience: GetFromYourOktaAdmin\n",
    );
    let config = load(&Sources {
        file: Some(file.path().to_path_buf()),
        ..Sources::default()
    })
    .expect("valid");
    assert_eq!(config.auth.providers[0].client_id, "abc");
    assert_eq!(
        config.auth.providers[0].auth_url_params,
        vec![("audience".into(), "GetFromYourOktaAdmin".into())]
    );
}

#[test]
fn yaml_configures_every_provider_kind_side_by_side() {
    let file = temp_file(
        r#"upstreamUrl: http://127.0.0.1:3000
cookieSecret: 0123456789abcdef0123456789abcdef
publicUrl: https://houston.example.com
auth:
  openidConnect:
    flow: implicit
    github:
      enabled: true
      clientId: gh
      clientSecret: ghs
      flow: code
      webUrl: https://github.example.com
      orgs: [Acme]
      teams: [acme/platform]
    microsoft:
      enabled: true
      clientId: ms
      discoveryURL: https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0/.well-known/openid-configuration
      flow: code
    google:
      enabled: true
      clientId: go
      hostedDomain: example.com
      responseMode: fragment
    custom:
      enabled: true
      clientId: cu
      displayName: Custom OAuth
      discoveryUrl: https://sso.example.com
      claims:
        email: [mail, email]
"#,
    );
    let config = load(&Sources {
        file: Some(file.path().to_path_buf()),
        ..Sources::default()
    })
    .expect("valid");
    let by = |name: &str| {
        config
            .auth
            .providers
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("{name} configured"))
    };
    let ProviderKind::GitHub(gh) = &by("github").kind else {
        panic!("github is GitHub")
    };
    assert_eq!(gh.api_url.as_str(), "https://github.example.com/api/v3/");
    assert_eq!(gh.orgs, vec!["acme"]);
    assert_eq!(gh.teams, vec!["acme:platform"]);
    assert_eq!(
        by("github").scopes,
        vec!["read:user", "user:email", "read:org"]
    );
    let ProviderKind::Entra(ms) = &by("microsoft").kind else {
        panic!("microsoft is Entra")
    };
    // The tenant is read from the discovery URL.
    assert_eq!(ms.tenant, "72f988bf-86f1-41af-91ab-2d7cd011db47");
    assert_eq!(by("microsoft").claims.id, vec!["oid", "sub"]);
    assert_eq!(by("google").hosted_domain.as_deref(), Some("example.com"));
    assert_eq!(by("google").flow, Flow::Implicit);
    assert_eq!(by("google").response_mode, ResponseMode::Fragment);
    assert_eq!(
        by("google").kind,
        ProviderKind::Oidc {
            discovery_url: Url::parse("https://accounts.google.com").unwrap()
        }
    );
    assert_eq!(by("custom").display_name, "Custom OAuth");
    assert_eq!(by("custom").claims.email, vec!["mail", "email"]);
}

#[test]
fn provider_settings_in_the_wrong_place_are_named() {
    let base = [
        ("UPSTREAM_URL", "http://127.0.0.1:3000"),
        ("COOKIE_SECRET", "0123456789abcdef0123456789abcdef"),
        (
            "OAUTH_REDIRECT_URL",
            "https://app.example.com/api/v1/auth/callback",
        ),
        ("OAUTH_ENABLED", "true"),
        ("OAUTH_CLIENT_ID", "c"),
    ];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut v = base.to_vec();
        v.extend_from_slice(extra);
        errors(load_env(&v))
    };
    let errs = with(&[("OAUTH_PROVIDER", "github"), ("OAUTH_TENANT_ID", "t")]);
    assert_eq!(errs[0].env, "OAUTH_TENANT_ID");
    assert!(errs[0].problem.contains("Entra only"));
    let errs = with(&[("OAUTH_PROVIDER", "github"), ("OAUTH_FLOW", "implicit")]);
    assert!(
        errs[0].problem.contains("GitHub does not offer"),
        "{}",
        errs[0].problem
    );
    let errs = with(&[
        ("OAUTH_PROVIDER", "github"),
        ("OAUTH_GITHUB_TEAMS", "platform"),
    ]);
    assert!(errs[0].fix.contains("org:team-slug"), "{}", errs[0].fix);
    let errs = with(&[("OAUTH_PROVIDER", "entra")]);
    assert_eq!(errs[0].env, "OAUTH_TENANT_ID");
    let errs = with(&[
        ("OAUTH_PROVIDER", "oidc"),
        ("OAUTH_ISSUER_URL", "https://idp.example.com"),
        ("OAUTH_HOSTED_DOMAIN", "example.com"),
    ]);
    assert!(
        errs[0].problem.contains("Google only"),
        "{}",
        errs[0].problem
    );
    let errs = with(&[("OAUTH_PROVIDER", "okta")]);
    assert!(
        errs[0].fix.contains("github, entra or oidc"),
        "{}",
        errs[0].fix
    );
}

#[test]
fn environment_overrides_the_file() {
    let file = temp_file("upstream_url: http://127.0.0.1:1\nlisten_addr: 127.0.0.1:1111\n");
    let config = load(&Sources {
        file: Some(file.path().to_path_buf()),
        env: env(&[("LISTEN_ADDR", "127.0.0.1:2222")]),
        ..Sources::default()
    })
    .expect("valid");
    assert_eq!(config.listen_addr.to_string(), "127.0.0.1:2222");
    assert_eq!(config.upstream_url.unwrap().as_str(), "http://127.0.0.1:1/");
}

#[test]
fn flags_override_the_environment() {
    let config = load(&Sources {
        env: env(&[("UPSTREAM_URL", "http://127.0.0.1:1")]),
        flags: vec![("upstream_url", "--upstream", "http://127.0.0.1:2".into())],
        ..Sources::default()
    })
    .expect("valid");
    assert_eq!(config.upstream_url.unwrap().as_str(), "http://127.0.0.1:2/");
}

#[test]
fn secrets_come_from_files_with_the_trailing_newline_dropped() {
    let secret = temp_file(&format!("{SECRET}\n"));
    let client = temp_file("client-secret\n");
    let mut vars: Vec<(&str, &str)> = flat_oidc()
        .into_iter()
        .filter(|(k, _)| *k != "COOKIE_SECRET" && *k != "OAUTH_CLIENT_SECRET")
        .collect();
    let secret_path = secret.path().to_str().unwrap().to_string();
    let client_path = client.path().to_str().unwrap().to_string();
    vars.push(("COOKIE_SECRET_FILE", &secret_path));
    vars.push(("OAUTH_CLIENT_SECRET_FILE", &client_path));
    let config = load_env(&vars).expect("valid");
    assert_eq!(config.cookie_secret.unwrap().expose_secret(), SECRET);
    assert_eq!(
        config.auth.providers[0]
            .client_secret
            .as_ref()
            .unwrap()
            .expose_secret(),
        "client-secret"
    );
}

#[test]
fn env_secret_file_overrides_a_secret_in_the_yaml_file() {
    let secret = temp_file(SECRET);
    let file = temp_file("upstream_url: http://127.0.0.1:1\ncookie_secret: from-the-file\n");
    let config = load(&Sources {
        file: Some(file.path().to_path_buf()),
        env: env(&[("COOKIE_SECRET_FILE", secret.path().to_str().unwrap())]),
        ..Sources::default()
    })
    .expect("valid");
    assert_eq!(config.cookie_secret.unwrap().expose_secret(), SECRET);
}

#[test]
fn an_unreadable_secret_file_names_the_key() {
    let mut vars = flat_oidc();
    vars.retain(|(k, _)| *k != "COOKIE_SECRET");
    vars.push(("COOKIE_SECRET_FILE", "/nonexistent/secret"));
    let errs = errors(load_env(&vars));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].env, "COOKIE_SECRET_FILE");
    assert!(errs[0].problem.contains("/nonexistent/secret"));
}

#[test]
fn each_common_mistake_is_named_with_its_fix() {
    let errs = errors(load_env(&[
        ("OAUTH_ENABLED", "true"),
        ("OAUTH_PROVIDER", "oidc"),
        ("OAUTH_ISSUER_URL", "https://idp.example.com"),
        ("OAUTH_REDIRECT_URL", "ftp://app.example.com/cb"),
        ("COOKIE_SECRET", "too-short"),
        ("UPSTREAM_URL", "http://127.0.0.1:3000"),
    ]));
    let keys: Vec<&str> = errs.iter().map(|e| e.env.as_str()).collect();
    assert!(keys.contains(&"OAUTH_CLIENT_ID"), "{errs:#?}");
    assert!(keys.contains(&"OAUTH_REDIRECT_URL"), "{errs:#?}");
    assert!(keys.contains(&"COOKIE_SECRET"), "{errs:#?}");
    let secret = errs.iter().find(|e| e.env == "COOKIE_SECRET").unwrap();
    assert!(secret.problem.contains("9 bytes"), "{secret:?}");
    assert!(secret.fix.contains("openssl rand"), "{secret:?}");
    let redirect = errs.iter().find(|e| e.env == "OAUTH_REDIRECT_URL").unwrap();
    assert!(
        redirect.problem.contains("not an http(s) URL"),
        "{redirect:?}"
    );
    assert_eq!(
        redirect.origin,
        Some(Origin::Env("OAUTH_REDIRECT_URL".into()))
    );
}

#[test]
fn a_single_underscore_where_a_double_is_needed_is_an_error() {
    let errs = errors(load_env(&[
        ("UPSTREAM_URL", "http://127.0.0.1:3000"),
        ("SESSION_IDLE_TIMEOUT", "5m"),
    ]));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].fix.contains("SESSION__IDLE_TIMEOUT"),
        "{:?}",
        errs[0]
    );
}

#[test]
fn an_unknown_nested_key_is_an_error_not_ignored() {
    let errs = errors(load_env(&[
        ("UPSTREAM_URL", "http://127.0.0.1:3000"),
        ("SESSION__LIFETYME", "5m"),
    ]));
    assert_eq!(errs[0].key, "session.lifetyme");
    assert!(errs[0].fix.contains("lifetime"), "{:?}", errs[0]);
}

#[test]
fn upstream_url_is_required() {
    let errs = errors(load_env(&[]));
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].env, "UPSTREAM_URL");
    assert!(errs[0].fix.contains("FORWARD_AUTH_ONLY"), "{:?}", errs[0]);
}

#[test]
fn forward_auth_only_needs_no_upstream() {
    let mut vars = flat_oidc();
    vars.retain(|(k, _)| *k != "UPSTREAM_URL");
    vars.push(("FORWARD_AUTH_ONLY", "true"));
    let config = load_env(&vars).expect("valid");
    assert!(config.forward_auth_only);
    assert!(config.upstream_url.is_none());
}

#[test]
fn the_cookie_domain_must_cover_the_public_host() {
    let mut vars = flat_oidc();
    vars.push(("SESSION__COOKIE_DOMAIN", ".Example.com"));
    vars.retain(|(k, _)| *k != "OAUTH_REDIRECT_URL");
    vars.push((
        "OAUTH_REDIRECT_URL",
        "https://auth.example.com/api/v1/auth/callback",
    ));
    let config = load_env(&vars).expect("valid");
    assert_eq!(config.session.cookie_domain.as_deref(), Some("example.com"));

    vars.retain(|(k, _)| *k != "SESSION__COOKIE_DOMAIN");
    vars.push(("SESSION__COOKIE_DOMAIN", "example.org"));
    let errs = errors(load_env(&vars));
    assert_eq!(errs[0].key, "session.cookie_domain");
    assert!(errs[0].fix.contains("auth.example.com"), "{:?}", errs[0]);

    vars.retain(|(k, _)| *k != "SESSION__COOKIE_DOMAIN");
    vars.push(("SESSION__COOKIE_DOMAIN", "localhost; Secure"));
    assert_eq!(errors(load_env(&vars))[0].key, "session.cookie_domain");
}

#[test]
fn a_one_item_list_of_digits_stays_a_list() {
    let mut vars = flat_oidc();
    vars.retain(|(k, _)| *k != "OAUTH_ALLOWED_USERS");
    vars.push(("OAUTH_ALLOWED_USERS", "42"));
    let config = load_env(&vars).expect("valid");
    assert_eq!(config.auth.allowed_users, vec!["42"]);
}

#[test]
fn a_provider_this_build_does_not_know_is_refused_by_name() {
    let mut vars = flat_oidc();
    vars.retain(|(k, _)| *k != "OAUTH_PROVIDER" && *k != "OAUTH_ISSUER_URL");
    vars.push(("OAUTH_PROVIDER", "myspace"));
    let errs = errors(load_env(&vars));
    assert_eq!(errs[0].env, "OAUTH_PROVIDER");
    assert!(errs[0].problem.contains("myspace"));
}

#[test]
fn errors_never_print_secret_values() {
    let mut vars = flat_oidc();
    vars.retain(|(k, _)| *k != "COOKIE_SECRET");
    vars.push(("COOKIE_SECRET", "hunter2-short"));
    let text = match load_env(&vars) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("short secret accepted"),
    };
    assert!(!text.contains("hunter2"), "{text}");
    let config = load_env(&flat_oidc()).unwrap();
    assert!(!format!("{config:?}").contains(SECRET));
}

#[test]
fn yaml_syntax_errors_are_reported_with_the_file() {
    let file = temp_file("upstream_url: [http://x\n");
    let err = load(&Sources {
        file: Some(file.path().to_path_buf()),
        ..Sources::default()
    })
    .unwrap_err();
    assert!(matches!(err, LoadError::File(_)), "{err}");
}

#[test]
fn the_implicit_flow_is_chosen_globally_or_per_provider_with_its_redirect_page() {
    let config = load_env(&[
        ("UPSTREAM_URL", "http://127.0.0.1:3000"),
        ("COOKIE_SECRET", "0123456789abcdef0123456789abcdef"),
        ("AUTH__OPENID_CONNECT__FLOW", "implicit"),
        ("AUTH__OPENID_CONNECT__OKTA__ENABLED", "true"),
        ("AUTH__OPENID_CONNECT__OKTA__CLIENT_ID", "o"),
        (
            "AUTH__OPENID_CONNECT__OKTA__DISCOVERY_URL",
            "https://x.okta.com",
        ),
        ("AUTH__OPENID_CONNECT__AZ__ENABLED", "true"),
        ("AUTH__OPENID_CONNECT__AZ__CLIENT_ID", "a"),
        ("AUTH__OPENID_CONNECT__AZ__FLOW", "code"),
        (
            "AUTH__OPENID_CONNECT__AZ__DISCOVERY_URL",
            "https://az.example.com",
        ),
        ("AUTH__OPENID_CONNECT__OKTA__RESPONSE_MODE", "fragment"),
        (
            "OAUTH_REDIRECT_URL",
            "https://houston.example.com/v1/oauth/callback/",
        ),
    ])
    .expect("valid");
    let okta = config
        .auth
        .providers
        .iter()
        .find(|p| p.name == "okta")
        .unwrap();
    assert_eq!(okta.flow, Flow::Implicit);
    assert_eq!(okta.response_mode, ResponseMode::Fragment);
    let az = config
        .auth
        .providers
        .iter()
        .find(|p| p.name == "az")
        .unwrap();
    assert_eq!(az.flow, Flow::Code);
    // The fragment page sits beside the callback (`/v1/oauth/redirect/` beside
    // `/v1/oauth/callback/`), where providers are told to send fragment answers.
    assert_eq!(
        config.auth.implicit_redirect_url.unwrap().as_str(),
        "https://houston.example.com/v1/oauth/redirect/"
    );

    let errs = errors(load_env(&[
        ("UPSTREAM_URL", "http://127.0.0.1:3000"),
        ("AUTH__OPENID_CONNECT__FLOW", "hybrid"),
    ]));
    assert_eq!(errs[0].env, "AUTH__OPENID_CONNECT__FLOW");
    assert!(errs[0].fix.contains("implicit"));
}

#[test]
fn the_redis_store_is_configured_by_url_or_cluster_seeds() {
    let config = load_env(&[
        ("UPSTREAM_URL", "http://127.0.0.1:3000"),
        ("SESSION__STORE", "redis"),
        (
            "SESSION__REDIS__URL",
            "rediss://portcullis:pw@redis.internal:6380/2",
        ),
    ])
    .expect("valid");
    let SessionStoreKind::Redis(redis) = &config.session.store else {
        panic!("not redis: {:?}", config.session.store);
    };
    assert_eq!(
        redis.urls,
        vec!["rediss://portcullis:pw@redis.internal:6380/2"]
    );
    assert!(!redis.cluster);
    assert_eq!(redis.key_prefix, "portcullis");
    assert!(
        !format!("{config:?}").contains("pw@"),
        "the Redis password reached Debug"
    );

    let config = load_env(&[
        ("UPSTREAM_URL", "http://127.0.0.1:3000"),
        ("SESSION__STORE", "redis"),
        (
            "SESSION__REDIS__CLUSTER_URLS",
            "redis://a:7000,redis://b:7001",
        ),
    ])
    .expect("valid");
    let SessionStoreKind::Redis(redis) = &config.session.store else {
        panic!("not redis");
    };
    assert!(redis.cluster);
    assert_eq!(redis.urls.len(), 2);
}

#[test]
fn redis_mistakes_are_named_without_printing_the_url() {
    let errs = errors(load_env(&[
        ("UPSTREAM_URL", "http://127.0.0.1:3000"),
        ("SESSION__STORE", "redis"),
        ("SESSION__REDIS__URL", "http://user:hunter2@redis:6379"),
    ]));
    assert_eq!(errs[0].env, "SESSION__REDIS__URL");
    assert!(!errs[0].to_string().contains("hunter2"), "{}", errs[0]);
    let errs = errors(load_env(&[
        ("UPSTREAM_URL", "http://127.0.0.1:3000"),
        ("SESSION__STORE", "redis"),
    ]));
    assert_eq!(errs[0].env, "SESSION__REDIS__URL");
    assert!(errs[0].fix.contains("redis://"));
    let errs = errors(load_env(&[
        ("UPSTREAM_URL", "http://127.0.0.1:3000"),
        ("SESSION__REDIS__URL", "redis://redis:6379"),
    ]));
    assert_eq!(errs[0].env, "SESSION__STORE", "{errs:?}");
}

#[test]
fn sentinel_settings_are_read_and_their_mistakes_named() {
    let config = load_env(&[
        ("UPSTREAM_URL", "http://127.0.0.1:3000"),
        ("SESSION__STORE", "redis"),
        ("SESSION__REDIS__SENTINEL__MASTER_NAME", "mymaster"),
        (
            "SESSION__REDIS__SENTINEL__URLS",
            "redis://s0:26379,redis://s1:26379",
        ),
        ("SESSION__REDIS__SENTINEL__PASSWORD", "data-node-password"),
    ])
    .unwrap();
    let SessionStoreKind::Redis(redis) = &config.session.store else {
        panic!("not redis");
    };
    assert_eq!(redis.urls.len(), 2);
    let sentinel = redis.sentinel.as_ref().unwrap();
    assert_eq!(sentinel.master_name, "mymaster");
    assert!(!format!("{redis:?}").contains("data-node-password"));
    // Sentinel and a plain URL together, sentinels without a master name, a master name
    // without sentinels.
    for (pairs, key) in [
        (
            vec![
                ("SESSION__REDIS__SENTINEL__MASTER_NAME", "m"),
                ("SESSION__REDIS__SENTINEL__URLS", "redis://s0:26379"),
                ("SESSION__REDIS__URL", "redis://r:6379"),
            ],
            "SESSION__REDIS__SENTINEL__MASTER_NAME",
        ),
        (
            vec![("SESSION__REDIS__SENTINEL__URLS", "redis://s0:26379")],
            "SESSION__REDIS__SENTINEL__MASTER_NAME",
        ),
        (
            vec![("SESSION__REDIS__SENTINEL__MASTER_NAME", "m")],
            "SESSION__REDIS__SENTINEL__URLS",
        ),
    ] {
        let mut all = vec![
            ("UPSTREAM_URL", "http://127.0.0.1:3000"),
            ("SESSION__STORE", "redis"),
        ];
        all.extend(pairs);
        let errs = errors(load_env(&all));
        assert!(errs.iter().any(|e| e.env == key), "{key}: {errs:?}");
    }
}

#[test]
fn previous_secrets_come_from_a_file_one_per_line() {
    let file =
        temp_file("0123456789abcdef0123456789abcdef-old1\n0123456789abcdef0123456789abcdef-old2\n");
    let config = load_env(&[
        ("UPSTREAM_URL", "http://127.0.0.1:3000"),
        (
            "SESSION__PREVIOUS_SECRETS_FILE",
            file.path().to_str().unwrap(),
        ),
    ])
    .expect("valid");
    assert_eq!(config.session.previous_secrets.len(), 2);
    let errs = errors(load_env(&[
        ("UPSTREAM_URL", "http://127.0.0.1:3000"),
        ("SESSION__PREVIOUS_SECRETS", "short"),
    ]));
    assert_eq!(errs[0].env, "SESSION__PREVIOUS_SECRETS");
}

/// Okta (nested) and Microsoft Entra (nested, `microsoft`) side by side.
fn two_providers() -> Vec<(&'static str, &'static str)> {
    vec![
        ("UPSTREAM_URL", "http://127.0.0.1:3000"),
        ("COOKIE_SECRET", SECRET),
        ("PUBLIC_URL", "https://app.example.com"),
        ("AUTH__OPENID_CONNECT__OKTA__ENABLED", "true"),
        ("AUTH__OPENID_CONNECT__OKTA__CLIENT_ID", "okta-client"),
        (
            "AUTH__OPENID_CONNECT__OKTA__DISCOVERY_URL",
            "https://example.okta.com",
        ),
        ("AUTH__OPENID_CONNECT__MICROSOFT__ENABLED", "true"),
        ("AUTH__OPENID_CONNECT__MICROSOFT__CLIENT_ID", "entra-client"),
        (
            "AUTH__OPENID_CONNECT__MICROSOFT__TENANT_ID",
            "contoso.onmicrosoft.com",
        ),
        ("SCIM__ENABLED", "true"),
    ]
}

#[test]
fn scim_endpoints_come_from_the_documented_variables_and_files() {
    let password = temp_file("okta-provisioning-password\n");
    let mut vars = two_providers();
    let path = password.path().to_str().unwrap().to_string();
    vars.extend([
        ("SCIM__DATABASE_URL", "postgres://portcullis:pw@db/scim"),
        ("SCIM__REQUIRED", "true"),
        ("SCIM__ENDPOINTS__OKTA__USERNAME", "okta-provisioner"),
        ("SCIM__ENDPOINTS__OKTA__PASSWORD_FILE", path.as_str()),
        (
            "SCIM__ENDPOINTS__MICROSOFT__TOKEN",
            "0123456789abcdef-entra-token",
        ),
        ("SCIM__ENDPOINTS__MICROSOFT__REQUIRED", "false"),
        ("AUTH__ALLOWED_GROUPS", "Platform,SRE"),
    ]);
    let config = load_env(&vars).expect("valid");
    assert!(config.scim.enabled);
    let okta = config
        .scim
        .endpoints
        .iter()
        .find(|e| e.name == "okta")
        .unwrap();
    assert_eq!(okta.basic.as_ref().unwrap().0, "okta-provisioner");
    assert_eq!(
        okta.basic.as_ref().unwrap().1.expose_secret(),
        "okta-provisioning-password"
    );
    assert!(okta.required);
    assert_eq!(okta.provider, "okta");
    let ms = config
        .scim
        .endpoints
        .iter()
        .find(|e| e.name == "microsoft")
        .unwrap();
    assert!(ms.token.is_some() && !ms.required);
    assert_eq!(ms.provider, "microsoft");
    assert_eq!(config.auth.allowed_groups, vec!["Platform", "SRE"]);
    assert!(!format!("{config:?}").contains("entra-token"));
    assert!(!format!("{config:?}").contains("pw@db"));
}

#[test]
fn an_endpoint_describes_the_only_provider_whatever_its_name() {
    // The README's Entra set-up: the flat dialect names the provider `entra`, the SCIM
    // endpoint is named after the identity provider.
    let config = load_env(&[
        ("OAUTH_ENABLED", "true"),
        ("OAUTH_PROVIDER", "entra"),
        ("OAUTH_TENANT_ID", "contoso.onmicrosoft.com"),
        ("OAUTH_CLIENT_ID", "entra-client"),
        (
            "OAUTH_REDIRECT_URL",
            "https://app.example.com/api/v1/auth/callback",
        ),
        ("COOKIE_SECRET", SECRET),
        ("UPSTREAM_URL", "http://127.0.0.1:3000"),
        ("SCIM__ENABLED", "true"),
        ("SCIM__REQUIRED", "true"),
        (
            "SCIM__ENDPOINTS__MICROSOFT__TOKEN",
            "0123456789abcdef-entra-token",
        ),
    ])
    .expect("valid");
    assert_eq!(config.scim.endpoints[0].provider, "entra");
    assert!(config.scim.endpoints[0].required);
}

#[test]
fn an_endpoint_tied_to_no_configured_provider_is_an_error() {
    let mut vars = two_providers();
    vars.push((
        "SCIM__ENDPOINTS__ENTRA__TOKEN",
        "0123456789abcdef-entra-token",
    ));
    let errs = errors(load_env(&vars));
    assert_eq!(errs[0].env, "SCIM__ENDPOINTS__ENTRA__PROVIDER", "{errs:#?}");
    assert!(errs[0].problem.contains("`entra`"), "{}", errs[0].problem);
    assert!(errs[0].fix.contains("okta") && errs[0].fix.contains("microsoft"));
    vars.push(("SCIM__ENDPOINTS__ENTRA__PROVIDER", "microsoft"));
    let config = load_env(&vars).expect("valid once the provider is named");
    assert_eq!(config.scim.endpoints[0].provider, "microsoft");
    // Two endpoints for one provider.
    vars.push((
        "SCIM__ENDPOINTS__MICROSOFT__TOKEN",
        "0123456789abcdef-other-token",
    ));
    let errs = errors(load_env(&vars));
    assert!(errs[0].problem.contains("both describe"), "{errs:#?}");
}

#[test]
fn required_provisioning_must_cover_every_provider_or_name_the_exempt() {
    let mut vars = two_providers();
    vars.push(("SCIM__REQUIRED", "true"));
    vars.push((
        "SCIM__ENDPOINTS__OKTA__TOKEN",
        "0123456789abcdef-okta-token",
    ));
    let errs = errors(load_env(&vars));
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert_eq!(errs[0].env, "SCIM__REQUIRED");
    assert!(
        errs[0].problem.contains("`microsoft`"),
        "{}",
        errs[0].problem
    );
    assert!(errs[0].fix.contains("scim.exempt_providers"));
    vars.push(("SCIM__EXEMPT_PROVIDERS", "microsoft"));
    let config = load_env(&vars).expect("valid with microsoft exempt");
    assert_eq!(config.scim.exempt_providers, vec!["microsoft"]);
    // Required in open mode checks nobody.
    let errs = errors(load_env(&[
        ("UPSTREAM_URL", "http://127.0.0.1:3000"),
        ("SCIM__ENABLED", "true"),
        ("SCIM__REQUIRED", "true"),
        (
            "SCIM__ENDPOINTS__OKTA__TOKEN",
            "0123456789abcdef-okta-token",
        ),
    ]));
    assert_eq!(errs[0].env, "SCIM__REQUIRED");
    assert!(errs[0].problem.contains("open mode"));
}

#[test]
fn scim_mistakes_are_named() {
    let errs = errors(load_env(&[
        ("UPSTREAM_URL", "http://127.0.0.1:3000"),
        ("SCIM__ENABLED", "true"),
        ("SCIM__ENDPOINTS__OKTA__USERNAME", "okta"),
        ("SCIM__ENDPOINTS__MICROSOFT__TOKEN", "short"),
        ("SCIM__DATABASE_URL", "mysql://x"),
    ]));
    let keys: Vec<&str> = errs.iter().map(|e| e.env.as_str()).collect();
    assert!(
        keys.contains(&"SCIM__ENDPOINTS__OKTA__PASSWORD"),
        "{errs:#?}"
    );
    assert!(
        keys.contains(&"SCIM__ENDPOINTS__MICROSOFT__TOKEN"),
        "{errs:#?}"
    );
    assert!(keys.contains(&"SCIM__DATABASE_URL"), "{errs:#?}");
    let errs = errors(load_env(&[
        ("UPSTREAM_URL", "http://127.0.0.1:3000"),
        ("SCIM__ENABLED", "true"),
    ]));
    assert_eq!(errs[0].env, "SCIM__ENDPOINTS");
}

#[test]
fn branding_colours_are_checked_for_contrast() {
    let base = [("UPSTREAM_URL", "http://127.0.0.1:3000")];
    let config = load_env(&base).expect("valid");
    assert_eq!(config.branding.title, "Sign in");
    assert!(
        contrast(
            &config.branding.primary_color,
            text_color_on(&config.branding.primary_color)
        ) >= MIN_CONTRAST
    );
    let mut vars = base.to_vec();
    vars.push(("BRANDING__PRIMARY_COLOR", "#0A0"));
    vars.push(("BRANDING__TITLE", "Acme internal tools"));
    let config = load_env(&vars).expect("valid");
    assert_eq!(config.branding.primary_color, "#00aa00");
    // A mid grey leaves neither black nor white text readable.
    let errs = errors(load_env(&[base[0], ("BRANDING__PRIMARY_COLOR", "#7a7a7a")]));
    assert_eq!(errs[0].env, "BRANDING__PRIMARY_COLOR");
    assert!(errs[0].problem.contains("contrast"), "{}", errs[0].problem);
    let errs = errors(load_env(&[base[0], ("BRANDING__PRIMARY_COLOR", "blue")]));
    assert!(errs[0].fix.contains("#rrggbb"));
    let errs = errors(load_env(&[base[0], ("BRANDING__LOGO_FILE", "/etc/passwd")]));
    assert_eq!(errs[0].env, "BRANDING__LOGO_FILE");
}

#[test]
fn deeply_nested_or_alias_bombed_yaml_is_refused_without_recursing() {
    for text in [
        format!(
            "upstream_url: {}1{}\n",
            "[".repeat(100_000),
            "]".repeat(100_000)
        ),
        format!("x: {}\n", "{a: ".repeat(5_000)),
        // Nine levels of tenfold aliases: a billion values from a few lines.
        {
            let mut t = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
            for i in 1..10 {
                let p = i - 1;
                t.push_str(&format!(
                    "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
                ));
            }
            t
        },
    ] {
        let file = temp_file(&text);
        let result = load(&Sources {
            file: Some(file.path().to_path_buf()),
            ..Sources::default()
        });
        match result {
            Err(LoadError::File(e)) => {
                let message = e.to_string();
                assert!(
                    message.contains("nested")
                        || message.contains("values")
                        || message.contains("recursion limit"),
                    "{message}"
                );
            }
            other => panic!("expected a file error, got {:?}", other.map(|_| ())),
        }
    }
}

#[test]
fn h2c_can_never_be_an_allowed_upgrade() {
    let config = load_env(&[("UPSTREAM_URL", "http://127.0.0.1:3000")]).expect("valid");
    assert_eq!(config.upstream.allowed_upgrades, vec!["websocket"]);
    let errs = errors(load_env(&[
        ("UPSTREAM_URL", "http://127.0.0.1:3000"),
        ("UPSTREAM__ALLOWED_UPGRADES", "websocket,h2c"),
    ]));
    assert_eq!(errs[0].env, "UPSTREAM__ALLOWED_UPGRADES");
    assert!(errs[0].problem.contains("h2c"));
}

#[test]
fn a_provider_kind_can_be_named_and_flat_parameters_nest() {
    let config = load_env(&[
        ("UPSTREAM_URL", "http://127.0.0.1:3000"),
        ("COOKIE_SECRET", SECRET),
        ("PUBLIC_URL", "https://app.example.com"),
        ("AUTH__OPENID_CONNECT__CORP__ENABLED", "true"),
        ("AUTH__OPENID_CONNECT__CORP__KIND", "entra"),
        ("AUTH__OPENID_CONNECT__CORP__CLIENT_ID", "c"),
        (
            "AUTH__OPENID_CONNECT__CORP__TENANT_ID",
            "contoso.onmicrosoft.com",
        ),
    ])
    .expect("valid");
    assert!(matches!(
        config.auth.providers[0].kind,
        ProviderKind::Entra(_)
    ));
    let errs = errors(load_env(&[
        ("UPSTREAM_URL", "http://127.0.0.1:3000"),
        ("COOKIE_SECRET", SECRET),
        ("PUBLIC_URL", "https://app.example.com"),
        ("AUTH__OPENID_CONNECT__CORP__ENABLED", "true"),
        ("AUTH__OPENID_CONNECT__CORP__KIND", "keycloak"),
        ("AUTH__OPENID_CONNECT__CORP__CLIENT_ID", "c"),
        (
            "AUTH__OPENID_CONNECT__CORP__DISCOVERY_URL",
            "https://idp.example.com",
        ),
    ]));
    assert_eq!(errs[0].env, "AUTH__OPENID_CONNECT__CORP__KIND");
    let mut flat = flat_oidc();
    flat.push(("OAUTH_AUTH_URL_PARAMS__AUDIENCE", "https://api.example.com"));
    let config = load_env(&flat).expect("valid");
    assert_eq!(
        config.auth.providers[0].auth_url_params,
        vec![(
            "audience".to_string(),
            "https://api.example.com".to_string()
        )]
    );
}

fn load_yaml(yaml: &str, env: &[(&str, &str)]) -> Result<Config, LoadError> {
    let file = temp_file(yaml);
    load(&Sources {
        file: Some(file.path().to_path_buf()),
        env: self::env(env),
        ..Sources::default()
    })
}

const ROUTES_YAML: &str = r#"
upstream_url: http://127.0.0.1:3000
cookie_secret: 0123456789abcdef0123456789abcdef
public_url: https://app.example.com
auth:
  openid_connect:
    okta: {enabled: true, client_id: c, discovery_url: "https://example.okta.com"}
routes:
  - name: health
    match: {path: /status}
    public: true
  - name: admin
    match: {host: App.Example.com, path_prefix: /admin, methods: [get, POST]}
    allow: {groups: [admins]}
    deny: {emails: [Contractor@Example.com]}
    max_auth_age: 15m
    acr_values: [urn:example:mfa]
  - name: api
    match: {path_prefix: /api/}
    allow: {domains: ["@example.com"], claims: {Department: [eng, sre], contractor: false}}
    provider: okta
    upstream_url: http://api.internal:8080
    audience: https://api.example.com
  - match: {path_prefix: /}
    allow: {authenticated: true}
"#;

#[test]
fn routes_are_read_in_order_with_their_rules() {
    let config = load_yaml(ROUTES_YAML, &[]).expect("valid");
    let r = &config.routes;
    assert_eq!(r.len(), 4);
    assert!(r[0].public && r[0].path.as_deref() == Some("/status"));
    assert_eq!(r[1].host.as_deref(), Some("app.example.com"));
    assert_eq!(r[1].methods, vec!["GET", "POST"]);
    assert_eq!(r[1].deny.emails, vec!["contractor@example.com"]);
    assert_eq!(r[1].max_auth_age, Some(Duration::from_secs(900)));
    assert_eq!(r[2].allow.domains, vec!["example.com"]);
    // Claim names are kept exactly as written; values as strings.
    assert_eq!(
        r[2].allow.claims,
        vec![
            (
                "Department".to_string(),
                vec!["eng".to_string(), "sre".to_string()]
            ),
            ("contractor".to_string(), vec!["false".to_string()]),
        ]
    );
    assert_eq!(r[2].provider.as_deref(), Some("okta"));
    assert!(r[3].allow.authenticated);
    // The claims rules look at travel with the identity.
    assert_eq!(
        config.auth.providers[0].claims.keep,
        vec!["Department".to_string(), "contractor".to_string()]
    );
}

#[test]
fn route_mistakes_name_the_route_the_key_and_the_fix() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "routes:\n  - name: open\n    match: {path: /x}\n    public: true\n    allow: {groups: [a]}\n",
            "routes.0.allow",
            "route 0 (open)",
        ),
        (
            "routes:\n  - match: {path: /x}\n",
            "routes.0.allow",
            "route 0",
        ),
        (
            "routes:\n  - name: a\n    allow: {authenticated: true}\n",
            "routes.0.match",
            "route 0 (a)",
        ),
        (
            "routes:\n  - match: {path: /a/../b}\n    allow: {authenticated: true}\n",
            "routes.0.match.path",
            "not a path",
        ),
        (
            "routes:\n  - name: x\n    match: {path: /x}\n    allow: {authenticated: true}\n    provider: github\n",
            "routes.0.provider",
            "not a configured login provider",
        ),
        (
            "routes:\n  - match: {path: /x}\n    allow: {groups: [a]}\n    frobnicate: 1\n",
            "routes.0.frobnicate",
            "",
        ),
        (
            "routes:\n  - match: {path: /x, path_prefix: /y}\n    allow: {authenticated: true}\n",
            "routes.0.match.path_prefix",
            "together",
        ),
    ];
    let base = "upstream_url: http://127.0.0.1:3000\ncookie_secret: 0123456789abcdef0123456789abcdef\npublic_url: https://app.example.com\nauth:\n  openid_connect:\n    okta: {enabled: true, client_id: c, discovery_url: \"https://example.okta.com\"}\n";
    for (yaml, key, text) in cases {
        let errs = errors(load_yaml(&format!("{base}{yaml}"), &[]));
        let found = errs.iter().find(|e| e.key == *key);
        assert!(
            found.is_some(),
            "{yaml}: expected an error at {key}, got {errs:#?}"
        );
        let e = found.unwrap();
        assert!(
            e.problem.contains(text) || e.fix.contains(text),
            "{key}: {e:?}"
        );
    }
    // Rules need authentication.
    let errs = errors(load_yaml(
        "upstream_url: http://127.0.0.1:3000\nroutes:\n  - match: {path: /x}\n    allow: {authenticated: true}\n",
        &[],
    ));
    assert_eq!(errs[0].key, "routes");
    assert!(errs[0].problem.contains("open mode"));
}

#[test]
fn the_identity_assertion_needs_a_key_and_a_short_lifetime() {
    let base = "upstream_url: http://127.0.0.1:3000\n";
    let errs = errors(load_yaml(
        &format!("{base}identity_jwt: {{enabled: true}}\n"),
        &[],
    ));
    assert_eq!(errs[0].key, "identity_jwt.signing_key_file");
    let errs = errors(load_yaml(
        &format!("{base}identity_jwt: {{enabled: true, signing_key_file: /k.pem, lifetime: 1h}}\n"),
        &[],
    ));
    assert_eq!(errs[0].key, "identity_jwt.lifetime");
    let config = load_yaml(
        &format!("{base}identity_jwt: {{enabled: true, signing_key_file: /k.pem}}\n"),
        &[],
    )
    .expect("valid");
    assert_eq!(
        config.identity_jwt.unwrap().lifetime,
        Duration::from_secs(120)
    );
}

#[test]
fn routes_can_come_from_one_environment_variable_in_json_or_yaml() {
    let base = [
        ("UPSTREAM_URL", "http://127.0.0.1:3000"),
        ("COOKIE_SECRET", SECRET),
        ("PUBLIC_URL", "https://app.example.com"),
        ("OAUTH_ENABLED", "true"),
        ("OAUTH_PROVIDER", "oidc"),
        ("OAUTH_ISSUER_URL", "https://idp.example.com"),
        ("OAUTH_CLIENT_ID", "c"),
    ];
    let mut vars = base.to_vec();
    vars.push((
        "ROUTES",
        r#"[{"name": "admin", "match": {"path_prefix": "/admin"}, "allow": {"groups": ["admins"], "claims": {"Dept": ["eng"]}}}, {"match": {"path_prefix": "/"}, "allow": {"authenticated": true}}]"#,
    ));
    let config = load_env(&vars).expect("valid");
    assert_eq!(config.routes.len(), 2);
    assert_eq!(config.routes[0].allow.groups, vec!["admins"]);
    assert_eq!(config.routes[0].allow.claims[0].0, "Dept");
    let mut vars = base.to_vec();
    vars.push(("ROUTES", "- match: {path: /x}\n  public: true\n"));
    assert!(load_env(&vars).expect("valid").routes[0].public);
    let mut vars = base.to_vec();
    vars.push(("ROUTES", "[{unclosed"));
    let errs = errors(load_env(&vars));
    assert_eq!(errs[0].env, "ROUTES");
    // Problems inside name the route and the variable it came from.
    let mut vars = base.to_vec();
    vars.push((
        "ROUTES",
        r#"[{"match": {"path": "x"}, "allow": {"authenticated": true}}]"#,
    ));
    let errs = errors(load_env(&vars));
    assert_eq!(errs[0].key, "routes.0.match.path");
    assert!(
        errs[0]
            .origin
            .as_ref()
            .unwrap()
            .to_string()
            .contains("ROUTES")
    );
}

#[test]
fn the_grpc_check_needs_a_port_of_its_own_and_tls_a_certificate() {
    let mut pairs = flat_oidc();
    pairs.push(("EXT_AUTHZ__LISTEN_ADDR", "0.0.0.0:9001"));
    let config = load_env(&pairs).unwrap();
    let ext = config.ext_authz.unwrap();
    assert_eq!(ext.listen_addr.port(), 9001);
    assert!(!ext.tls, "h2c unless asked");

    let mut same = flat_oidc();
    same.push(("EXT_AUTHZ__LISTEN_ADDR", "0.0.0.0:4180"));
    let e = errors(load_env(&same));
    assert!(
        e.iter()
            .any(|e| e.key == "ext_authz.listen_addr" && e.problem.contains("public")),
        "{e:?}"
    );

    let mut tls = flat_oidc();
    tls.push(("EXT_AUTHZ__LISTEN_ADDR", "0.0.0.0:9001"));
    tls.push(("EXT_AUTHZ__TLS", "true"));
    let e = errors(load_env(&tls));
    assert!(
        e.iter()
            .any(|e| e.key == "ext_authz.tls" && e.fix.contains("TLS__CERT_FILE")),
        "{e:?}"
    );

    let mut orphan = flat_oidc();
    orphan.push(("EXT_AUTHZ__TLS", "true"));
    let e = errors(load_env(&orphan));
    assert!(e.iter().any(|e| e.key == "ext_authz.tls"), "{e:?}");
}
