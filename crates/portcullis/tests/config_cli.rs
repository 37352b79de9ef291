//! The command line and configuration, as an operator meets them: `portcullis check`,
//! start-up errors, YAML plus environment, secrets from files.
#![allow(clippy::unwrap_used)]

use portcullis_testkit::prelude::*;

fn write_temp(name: &str, contents: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("portcullis-cli-{}", free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

#[tokio::test]
async fn check_names_each_wrong_key_and_its_fix() {
    let (code, out) = run_portcullis(
        &["check"],
        &[
            ("OAUTH_ENABLED", "true"),
            ("OAUTH_PROVIDER", "oidc"),
            ("OAUTH_ISSUER_URL", "https://idp.example.com"),
            ("OAUTH_REDIRECT_URL", "ftp://app.example.com/cb"),
            ("COOKIE_SECRET", "short"),
            ("UPSTREAM_URL", "http://127.0.0.1:3000"),
            ("SESSION_IDLE_TIMEOUT", "5m"),
        ],
    );
    assert_eq!(code, 1, "{out}");
    for expected in [
        "oauth.client_id (OAUTH_CLIENT_ID): is missing",
        "oauth.redirect_url (OAUTH_REDIRECT_URL), set by environment variable OAUTH_REDIRECT_URL: `ftp://app.example.com/cb` is not an http(s) URL",
        "cookie_secret (COOKIE_SECRET), set by environment variable COOKIE_SECRET: is 5 bytes long, shorter than the 32 bytes required",
        "rename it to SESSION__IDLE_TIMEOUT",
        "the configuration has 4 problems",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
    assert_eq!(out.matches("Fix: ").count(), 4, "{out}");
    assert!(!out.contains("short\""), "the secret value leaked: {out}");
}

#[tokio::test]
async fn check_reports_an_unreachable_discovery_url() {
    let port = free_port();
    let (code, out) = run_portcullis(
        &["check"],
        &[
            ("OAUTH_ENABLED", "true"),
            ("OAUTH_ISSUER_URL", &format!("http://127.0.0.1:{port}")),
            ("OAUTH_CLIENT_ID", "c"),
            (
                "OAUTH_REDIRECT_URL",
                "http://127.0.0.1:8080/api/v1/auth/callback",
            ),
            ("COOKIE_SECRET", SECRET),
            ("UPSTREAM_URL", "http://127.0.0.1:3000"),
        ],
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FAIL  oauth.issuer_url (OAUTH_ISSUER_URL): the discovery document"),
        "{out}"
    );
    assert!(out.contains("unreachable"), "{out}");
    assert!(out.contains("Fix: check the URL"), "{out}");
}

#[tokio::test]
async fn check_passes_a_working_configuration_and_probes_the_provider() {
    let idp = dev_idp(vec!["http://127.0.0.1:8080/api/v1/auth/callback".into()]).await;
    let (code, out) = tokio::task::spawn_blocking({
        let issuer = idp.issuer().to_string();
        move || {
            run_portcullis(
                &["check"],
                &[
                    ("OAUTH_ENABLED", "true"),
                    ("OAUTH_ISSUER_URL", &issuer),
                    ("OAUTH_CLIENT_ID", "portcullis"),
                    ("OAUTH_CLIENT_SECRET", "dev-secret"),
                    (
                        "OAUTH_REDIRECT_URL",
                        "http://127.0.0.1:8080/api/v1/auth/callback",
                    ),
                    ("COOKIE_SECRET", SECRET),
                    ("UPSTREAM_URL", "http://127.0.0.1:3000"),
                ],
            )
        }
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("accepts the client id and secret"), "{out}");
    assert!(out.contains("discovery document of issuer"), "{out}");
    assert!(out.contains("signing keys at"), "{out}");
    assert!(out.contains("clock within"), "{out}");
    assert!(out.contains("no problems found"), "{out}");
}

#[tokio::test]
async fn check_refuses_a_redirect_url_on_another_host_than_the_public_url() {
    let (code, out) = run_portcullis(
        &["check", "--offline"],
        &[
            ("OAUTH_ENABLED", "true"),
            ("OAUTH_ISSUER_URL", "https://idp.example.com"),
            ("OAUTH_CLIENT_ID", "c"),
            (
                "OAUTH_REDIRECT_URL",
                "https://other.example.com/api/v1/auth/callback",
            ),
            ("PUBLIC_URL", "https://app.example.com"),
            ("COOKIE_SECRET", SECRET),
            ("UPSTREAM_URL", "http://127.0.0.1:3000"),
        ],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("differs from public_url"), "{out}");
}

#[tokio::test]
async fn check_warns_loudly_about_open_mode() {
    let (code, out) = run_portcullis(&["check"], &[("UPSTREAM_URL", "http://127.0.0.1:3000")]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("OPEN MODE"), "{out}");
}

#[tokio::test]
async fn serve_refuses_to_start_with_a_broken_configuration() {
    let (code, out) = run_portcullis(
        &[],
        &[("OAUTH_ENABLED", "true"), ("UPSTREAM_URL", "not a url")],
    );
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("upstream_url (UPSTREAM_URL)"), "{out}");
    assert!(
        out.contains("oauth.provider (OAUTH_PROVIDER): is missing"),
        "{out}"
    );
}

#[tokio::test]
async fn a_yaml_file_configures_everything_and_the_environment_overrides_it() {
    let upstream = EchoUpstream::start().await;
    let port = free_port();
    let redirect = format!("http://127.0.0.1:{port}/api/v1/auth/callback");
    let idp = dev_idp(vec![redirect.clone()]).await;
    let secret_file = write_temp("client-secret", "dev-secret\n");
    let yaml = format!(
        "listenAddr: 127.0.0.1:1\nupstreamUrl: {}\ncookieSecret: {SECRET}\noauth:\n  enabled: true\n  provider: oidc\n  issuerUrl: {}\n  clientId: portcullis\n  clientSecretFile: {}\n  redirectUrl: {redirect}\n  allowedUsers:\n    - alice@example.com\nsession:\n  idleTimeout: 30m\n",
        upstream.url(),
        idp.issuer(),
        secret_file.display()
    );
    let file = write_temp("portcullis.yaml", &yaml);
    // LISTEN_ADDR from the environment (set by the harness) overrides the file's port 1.
    let p = Portcullis::builder()
        .port(port)
        .arg("--config")
        .arg(file.to_str().unwrap())
        .wait_ready()
        .start()
        .await;
    let browser = Browser::new();
    let form = browser.navigate(&p.url("/")).await;
    let ok = dev_idp_sign_in(&browser, &form, "alice", "").await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let other = Browser::new();
    let form = other.navigate(&p.url("/")).await;
    assert_eq!(dev_idp_sign_in(&other, &form, "eve", "").await.status, 403);
}

#[tokio::test]
async fn the_listen_flag_overrides_the_environment() {
    let upstream = EchoUpstream::start().await;
    let port = free_port();
    let p = Portcullis::builder()
        .port(port)
        .env("LISTEN_ADDR", "127.0.0.1:1")
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--upstream")
        .arg(upstream.url())
        .start()
        .await;
    assert_eq!(reqwest::get(p.url("/x")).await.unwrap().status(), 200);
}

#[tokio::test]
async fn a_secret_file_that_cannot_be_read_stops_start_up_with_the_key_named() {
    let (code, out) = run_portcullis(
        &[],
        &[
            ("UPSTREAM_URL", "http://127.0.0.1:3000"),
            ("COOKIE_SECRET_FILE", "/nonexistent/cookie-secret"),
            ("OAUTH_ENABLED", "true"),
            ("OAUTH_ISSUER_URL", "https://idp.example.com"),
            ("OAUTH_CLIENT_ID", "c"),
            ("OAUTH_REDIRECT_URL", "https://app.example.com/cb"),
        ],
    );
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("cookie_secret_file (COOKIE_SECRET_FILE)"),
        "{out}"
    );
    assert!(out.contains("/nonexistent/cookie-secret"), "{out}");
}

#[tokio::test]
async fn version_and_help_work() {
    let (code, out) = run_portcullis(&["--version"], &[]);
    assert_eq!(code, 0);
    assert!(out.starts_with("portcullis "), "{out}");
    let (code, out) = run_portcullis(&["--help"], &[]);
    assert_eq!(code, 0);
    for cmd in ["serve", "check", "dev"] {
        assert!(out.contains(cmd), "{out}");
    }
}

#[tokio::test]
async fn check_reads_a_config_file() {
    let file = write_temp(
        "check.yaml",
        "upstream_url: http://127.0.0.1:3000\noauth:\n  enabled: true\n  provider: oidc\n  issuer_url: https://idp.example.com\n  redirect_url: https://app.example.com/api/v1/auth/callback\nsession:\n  lifetime: forever\n",
    );
    let (code, out) = run_portcullis(
        &["check", "--offline", "--config", file.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("check.yaml line 8"), "{out}");
    assert!(
        out.contains("session.lifetime (SESSION__LIFETIME)"),
        "{out}"
    );
    assert!(
        out.contains("oauth.client_id (OAUTH_CLIENT_ID): is missing"),
        "{out}"
    );
    assert!(
        out.contains("cookie_secret (COOKIE_SECRET): is missing"),
        "{out}"
    );
}

#[tokio::test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "needs nginx, openssl: run scripts/test"
)]
async fn an_extra_ca_bundle_is_trusted_for_the_provider() {
    // A provider on TLS with a certificate from a private CA (nginx serving a discovery
    // document and keys): trusted only once outbound.ca_file names that CA.
    let ca = portcullis_testkit::TestCa::generate();
    let port = free_port();
    let issuer = format!("https://127.0.0.1:{port}");
    let root = portcullis_testkit::TempDir::new("tls-issuer");
    let well_known = root.path().join(".well-known");
    std::fs::create_dir_all(&well_known).unwrap();
    std::fs::write(
        well_known.join("openid-configuration"),
        serde_json::json!({
            "issuer": issuer,
            "authorization_endpoint": format!("{issuer}/authorize"),
            "token_endpoint": format!("{issuer}/token"),
            "jwks_uri": format!("{issuer}/jwks.json"),
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
        })
        .to_string(),
    )
    .unwrap();
    std::fs::write(root.path().join("jwks.json"), r#"{"keys":[]}"#).unwrap();
    let _nginx = portcullis_testkit::Nginx::start(
        &format!(
            "server {{ listen 127.0.0.1:{port} ssl; ssl_certificate {}; ssl_certificate_key {}; \
             root {}; default_type application/json; }}",
            ca.server_cert().display(),
            ca.server_key().display(),
            root.path().display()
        ),
        port,
    );
    let base = [
        ("OAUTH_ENABLED", "true"),
        ("OAUTH_ISSUER_URL", issuer.as_str()),
        ("OAUTH_CLIENT_ID", "c"),
        (
            "OAUTH_REDIRECT_URL",
            "https://app.example.com/api/v1/auth/callback",
        ),
        ("COOKIE_SECRET", SECRET),
        ("UPSTREAM_URL", "http://127.0.0.1:3000"),
    ];
    // nginx is its own process: nothing in this test's runtime needs to keep running.
    let (code, out) = run_portcullis(&["check"], &base);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAIL  oauth.issuer_url"), "{out}");

    let ca_file = ca.ca_pem().display().to_string();
    let mut vars = base.to_vec();
    vars.push(("OUTBOUND__CA_FILE", ca_file.as_str()));
    let (_, out) = run_portcullis(&["check"], &vars);
    // Both the discovery document and the key set were fetched over the private CA's
    // TLS (the key set is empty on purpose; that is what is left to complain about).
    assert!(
        out.contains("ok    oidc: discovery document of issuer"),
        "{out}"
    );
    assert!(out.contains("holds no usable signing key"), "{out}");

    // A bundle that cannot be read is named.
    let mut vars = base.to_vec();
    vars.push(("OUTBOUND__CA_FILE", "/nonexistent/ca.pem"));
    let (code, out) = run_portcullis(&["check"], &vars);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("/nonexistent/ca.pem"), "{out}");
}

#[test]
fn check_names_the_redirect_page_a_fragment_provider_needs() {
    let (code, out) = run_portcullis(
        &["check", "--offline"],
        &[
            ("UPSTREAM_URL", "http://127.0.0.1:3000"),
            ("COOKIE_SECRET", SECRET),
            ("AUTH__OPENID_CONNECT__OKTA__ENABLED", "true"),
            ("AUTH__OPENID_CONNECT__OKTA__CLIENT_ID", "x"),
            (
                "AUTH__OPENID_CONNECT__OKTA__DISCOVERY_URL",
                "https://x.okta.com",
            ),
            ("AUTH__OPENID_CONNECT__FLOW", "implicit"),
            ("AUTH__OPENID_CONNECT__OKTA__RESPONSE_MODE", "fragment"),
            (
                "OAUTH_REDIRECT_URL",
                "https://houston.example.com/v1/oauth/callback/",
            ),
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("register the redirect page https://houston.example.com/v1/oauth/redirect/"),
        "{out}"
    );
}

/// `portcullis check` with `env`, off the test's runtime (the providers answer on it).
async fn check(env: Vec<(&'static str, String)>) -> (i32, String) {
    tokio::task::spawn_blocking(move || {
        let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        run_portcullis(&["check"], &pairs)
    })
    .await
    .unwrap()
}

#[tokio::test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "needs oidc-provider (npm): run scripts/test"
)]
async fn check_probes_the_client_credentials_and_the_redirect_url_at_the_real_provider() {
    let callback = "http://127.0.0.1:8080/api/v1/auth/callback";
    let op = OidcProvider::start_with(
        "portcullis",
        "the-right-secret",
        &[callback],
        serde_json::json!({}),
    )
    .await;
    let env = |id: &str, secret: &str, redirect: &str| {
        vec![
            ("OAUTH_ENABLED", "true".to_string()),
            ("OAUTH_ISSUER_URL", op.issuer.clone()),
            ("OAUTH_CLIENT_ID", id.to_string()),
            ("OAUTH_CLIENT_SECRET", secret.to_string()),
            ("OAUTH_REDIRECT_URL", redirect.to_string()),
            ("COOKIE_SECRET", SECRET.to_string()),
            ("UPSTREAM_URL", "http://127.0.0.1:3000".to_string()),
        ]
    };

    let (code, out) = check(env("portcullis", "the-right-secret", callback)).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("accepts the client id and secret"), "{out}");
    assert!(
        out.contains(&format!("accepts the redirect URL {callback}")),
        "{out}"
    );

    let (code, out) = check(env("portcullis", "a-wrong-secret", callback)).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(
            "FAIL  oauth.client_id (OAUTH_CLIENT_ID) / oauth.client_secret (OAUTH_CLIENT_SECRET)"
        ),
        "{out}"
    );
    assert!(
        !out.contains("a-wrong-secret"),
        "the secret was printed: {out}"
    );
    assert!(
        out.contains(&format!("accepts the redirect URL {callback}")),
        "{out}"
    );

    let (code, out) = check(env("nobody-knows-me", "the-right-secret", callback)).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FAIL  oauth.client_id (OAUTH_CLIENT_ID)"),
        "{out}"
    );

    let elsewhere = "http://127.0.0.1:8080/oauth2/callback";
    let (code, out) = check(env("portcullis", "the-right-secret", elsewhere)).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FAIL  oauth.redirect_url (OAUTH_REDIRECT_URL)")
            && out.contains(&format!("register exactly {elsewhere}")),
        "{out}"
    );
    assert!(out.contains("accepts the client id and secret"), "{out}");
}

#[tokio::test]
async fn check_probes_github_and_entra_in_their_own_terms() {
    use portcullis_testkit::fakes::{FakeEntra, FakeGitHub};
    let callback = "http://127.0.0.1:8080/api/v1/auth/callback";
    let github = FakeGitHub::start("gh-client-id", "gh-client-secret").await;
    let gh = |secret: &str| {
        vec![
            ("OAUTH_ENABLED", "true".to_string()),
            ("OAUTH_PROVIDER", "github".to_string()),
            ("OAUTH_GITHUB_URL", github.url()),
            ("OAUTH_CLIENT_ID", "gh-client-id".to_string()),
            ("OAUTH_CLIENT_SECRET", secret.to_string()),
            ("OAUTH_REDIRECT_URL", callback.to_string()),
            ("COOKIE_SECRET", SECRET.to_string()),
            ("UPSTREAM_URL", "http://127.0.0.1:3000".to_string()),
        ]
    };
    let (code, out) = check(gh("gh-client-secret")).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("accepts the client id and secret"), "{out}");
    // GitHub asks for a sign-in before it looks at the redirect URL: said, not "ok".
    assert!(out.contains("warn  github: cannot tell whether"), "{out}");
    let (code, out) = check(gh("gh-wrong")).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("incorrect_client_credentials"), "{out}");

    let idp = dev_idp(vec![callback.into()]).await;
    let entra = FakeEntra::start(
        "entra-app-id",
        "entra-secret",
        callback.into(),
        format!("{}/jwks", idp.issuer()),
    )
    .await;
    let en = |secret: &str, redirect: &str| {
        vec![
            ("OAUTH_ENABLED", "true".to_string()),
            ("OAUTH_PROVIDER", "entra".to_string()),
            ("OAUTH_ISSUER_URL", entra.issuer()),
            (
                "OAUTH_TENANT_ID",
                "72f988bf-86f1-41af-91ab-2d7cd011db47".to_string(),
            ),
            ("OAUTH_CLIENT_ID", "entra-app-id".to_string()),
            ("OAUTH_CLIENT_SECRET", secret.to_string()),
            ("OAUTH_REDIRECT_URL", redirect.to_string()),
            ("COOKIE_SECRET", SECRET.to_string()),
            ("UPSTREAM_URL", "http://127.0.0.1:3000".to_string()),
        ]
    };
    let (code, out) = check(en("entra-secret", callback)).await;
    assert!(out.contains("accepts the client id and secret"), "{out}");
    assert!(out.contains("accepts the redirect URL"), "{out}");
    assert_eq!(code, 0, "{out}");
    let (code, out) = check(en("entra-secret-id-not-value", callback)).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FAIL  oauth.client_secret (OAUTH_CLIENT_SECRET)")
            && out.contains("AADSTS7000215"),
        "{out}"
    );
    let other = "http://127.0.0.1:8080/signin-oidc";
    let (code, out) = check(en("entra-secret", other)).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FAIL  oauth.redirect_url (OAUTH_REDIRECT_URL)")
            && out.contains("AADSTS50011"),
        "{out}"
    );
}

#[tokio::test]
async fn check_as_explains_the_decision_with_the_route_table_and_the_allow_lists() {
    let config = write_temp(
        "routes.yaml",
        r#"
upstream_url: http://127.0.0.1:3000
cookie_secret: check-as-test-cookie-secret-0123456789abcdef
oauth:
  enabled: true
  provider: oidc
  issuer_url: https://idp.example.com
  client_id: portcullis
  redirect_url: https://app.example.com/api/v1/auth/callback
  allowed_users: [alice@example.com, bob@example.com, eve@example.com]
routes:
  - name: health
    match: {path: /healthz}
    public: true
  - name: admin
    match: {path_prefix: /admin, methods: [GET, POST]}
    allow: {groups: [admins]}
    deny: {emails: [mallory@example.com]}
  - name: payments
    match: {path_prefix: /payments}
    allow: {authenticated: true}
    acr_values: [mfa]
  - name: eng
    match: {path_prefix: /eng}
    allow: {claims: {department: [eng]}}
"#,
    );
    let path = config.display().to_string();
    let run = |args: &[&str]| {
        let mut all = vec!["check", "--config", &path];
        all.extend_from_slice(args);
        run_portcullis(&all, &[])
    };
    let (code, out) = run(&[
        "--as",
        "alice@example.com",
        "--groups",
        "admins,dev",
        "https://app.example.com/admin/users",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("route: admin (#2"), "{out}");
    assert!(out.contains("decision: ALLOWED"), "{out}");

    let (code, out) = run(&["--as", "bob@example.com", "/admin/users"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("decision: REFUSED (403)") && out.contains("admin"),
        "{out}"
    );

    let (code, out) = run(&[
        "--as",
        "alice@example.com",
        "--groups",
        "admins",
        "DELETE",
        "/admin/users",
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("REFUSED (404): no route takes it"), "{out}");

    let (code, out) = run(&["--as", "carol@example.com", "/eng/wiki"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("global allow-lists: refused"), "{out}");

    let (code, out) = run(&[
        "--as",
        "eve@example.com",
        "--claim",
        "department=eng",
        "/eng/wiki",
    ]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = run(&[
        "--as",
        "eve@example.com",
        "--claim",
        "department=sales",
        "/eng/wiki",
    ]);
    assert_eq!(code, 1, "{out}");

    let (code, out) = run(&["--as", "bob@example.com", "/payments/new"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("LOGIN (302)") && out.contains("acr mfa"),
        "{out}"
    );
    let (code, out) = run(&["--as", "bob@example.com", "--acr", "mfa", "/payments/new"]);
    assert_eq!(code, 0, "{out}");

    let (code, out) = run(&["--as", "anyone", "/healthz"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("PUBLIC"), "{out}");

    let (code, out) = run(&["--as", "bob@example.com", "--format", "json", "/admin"]);
    assert_eq!(code, 1, "{out}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["decision"], "refused");
    assert_eq!(v["route"], "admin");
    assert_eq!(v["status"], 403);

    let (code, out) = run(&["--as", "bob@example.com", "--provider", "okta", "/admin"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("--provider okta: no such provider"), "{out}");
}

#[tokio::test]
async fn check_as_explains_the_global_allow_lists_without_routes() {
    let env = [
        ("OAUTH_ENABLED", "true"),
        ("OAUTH_ISSUER_URL", "https://idp.example.com"),
        ("OAUTH_CLIENT_ID", "portcullis"),
        (
            "OAUTH_REDIRECT_URL",
            "https://app.example.com/api/v1/auth/callback",
        ),
        ("OAUTH_ALLOWED_USERS", "alice@example.com"),
        ("AUTH__ALLOWED_GROUPS", "sre"),
        ("COOKIE_SECRET", SECRET),
        ("UPSTREAM_URL", "http://127.0.0.1:3000"),
    ];
    let (code, out) = run_portcullis(&["check", "--as", "alice@example.com", "/"], &env);
    assert_eq!(code, 0, "{out}");
    let (code, out) = run_portcullis(&["check", "--as", "bob@example.com", "/"], &env);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("not on this application's list of allowed users"),
        "{out}"
    );
    let (code, out) = run_portcullis(
        &["check", "--as", "bob@example.com", "--groups", "sre", "/"],
        &env,
    );
    assert_eq!(code, 0, "{out}");
}

#[tokio::test]
async fn check_speaks_json_for_pipelines() {
    let (code, out) = run_portcullis(
        &["check", "--offline", "--format", "json"],
        &[
            ("OAUTH_ENABLED", "true"),
            ("OAUTH_ISSUER_URL", "https://idp.example.com"),
            ("OAUTH_CLIENT_ID", "portcullis"),
            (
                "OAUTH_REDIRECT_URL",
                "http://app.example.com/api/v1/auth/callback",
            ),
            ("PUBLIC_URL", "https://app.example.com"),
            ("COOKIE_SECRET", SECRET),
            ("UPSTREAM_URL", "http://127.0.0.1:3000"),
        ],
    );
    assert_eq!(code, 1, "{out}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON document");
    assert_eq!(v["result"], "problems");
    let fail = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["level"] == "fail")
        .unwrap();
    assert_eq!(fail["key"], "oauth.redirect_url (OAUTH_REDIRECT_URL)");
    assert!(
        fail["message"].as_str().unwrap().contains("state mismatch"),
        "{v}"
    );
    assert!(fail["fix"].as_str().unwrap().contains("https"), "{v}");

    // A configuration that does not load: the same document, with the keys.
    let (code, out) = run_portcullis(
        &["check", "--offline", "--format", "json"],
        &[
            ("SESSION__IDLE_TIMEOUT", "forever"),
            ("UPSTREAM_URL", "http://127.0.0.1:3000"),
        ],
    );
    assert_eq!(code, 1, "{out}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON document");
    assert_eq!(v["result"], "invalid_configuration");
    assert_eq!(
        v["findings"][0]["key"],
        "session.idle_timeout (SESSION__IDLE_TIMEOUT)"
    );
}

/// Caddy CVE-2026-27586 was a missing CA file that left any CA trusted. Every file the
/// configuration names, missing, stops start-up with its path: the outbound CA bundle,
/// the TLS certificate and key, the identity assertion key, a secret file.
#[tokio::test]
async fn a_missing_file_stops_start_up_with_its_path_named() {
    let missing = "/nonexistent/portcullis-test/file.pem";
    let base = [
        ("UPSTREAM_URL", "http://127.0.0.1:3000"),
        ("COOKIE_SECRET", SECRET),
    ];
    for (key, extra) in [
        ("OUTBOUND__CA_FILE", vec![("OUTBOUND__CA_FILE", missing)]),
        (
            "TLS__CERT_FILE",
            vec![("TLS__CERT_FILE", missing), ("TLS__KEY_FILE", missing)],
        ),
        (
            "IDENTITY_JWT__SIGNING_KEY_FILE",
            vec![
                ("IDENTITY_JWT__ENABLED", "true"),
                ("IDENTITY_JWT__SIGNING_KEY_FILE", missing),
            ],
        ),
        ("COOKIE_SECRET_FILE", vec![("COOKIE_SECRET_FILE", missing)]),
    ] {
        let port = free_port().to_string();
        let listen = format!("127.0.0.1:{port}");
        let mut env: Vec<(&str, &str)> = base
            .iter()
            .copied()
            .filter(|(k, _)| !(key == "COOKIE_SECRET_FILE" && *k == "COOKIE_SECRET"))
            .collect();
        env.push(("LISTEN_ADDR", &listen));
        env.extend(extra);
        let (code, out) = run_portcullis(&["serve"], &env);
        assert_ne!(code, 0, "{key}: started anyway: {out}");
        assert!(out.contains(missing), "{key}: the path is not named: {out}");
        let (code, out) = run_portcullis(&["check", "--offline"], &env);
        assert_ne!(code, 0, "{key}: check --offline passed: {out}");
        assert!(
            out.contains(missing),
            "{key}: check does not name the path: {out}"
        );
    }
}

/// The binary's allocator is mimalloc with arenas committed as they are used (what
/// .cargo/config.toml compiles it with): committed up front, idle RSS was 25 MiB instead
/// of 15 (bench/README.md, "The allocator"). mimalloc prints its options when asked.
#[test]
fn the_allocator_commits_memory_as_it_is_used() {
    let (code, out) = run_portcullis(&["--version"], &[("MIMALLOC_VERBOSE", "1")]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("option 'arena_eager_commit': 0"),
        "mimalloc is not the allocator, or commits its arenas up front:\n{out}"
    );
}
