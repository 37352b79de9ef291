//! Routes end to end, against the real OpenID provider (npm `oidc-provider`): rules by
//! group, email, domain, claim and method, deny over allow, public and exact routes, the
//! refusal of what no route takes, step-up with `max_age` through the provider's own
//! login form, a provider per route, a route's own upstream, and the identity assertion
//! verified by an independent JWT library (`jose`, from npm).
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::Duration;

use portcullis_testkit::envoy_check;
use portcullis_testkit::prelude::*;
use serde_json::{Value, json};

const ROUTES: &str = r#"
routes:
  - name: health
    match: {path: /status}
    public: true
  - name: admin
    match: {path_prefix: /admin, methods: [GET, POST]}
    allow: {groups: [admins]}
    deny: {emails: [mallory@example.com]}
  - name: eng
    match: {path_prefix: /eng}
    allow: {claims: {department: [eng, sre]}}
  - name: partners
    match: {path_prefix: /partners}
    allow: {domains: [partner.org], emails: [alice@example.com]}
  - name: payments
    match: {path_prefix: /payments}
    allow: {authenticated: true}
    max_auth_age: 3s
  - name: api
    match: {path_prefix: /api}
    allow: {authenticated: true}
    upstream_url: "{api}"
    audience: https://api.example.com
  - name: rest
    match: {path_prefix: /app}
    allow: {authenticated: true}
identity_jwt:
  enabled: true
  signing_key_file: "{key}"
"#;

fn workspace() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// An EC P-256 key made by openssl, as an operator would make it.
fn key_file(dir: &TempDir) -> std::path::PathBuf {
    let path = dir.path().join("identity-key.pem");
    let status = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
        ])
        .arg(&path)
        .status()
        .unwrap();
    assert!(status.success());
    path
}

/// `node tests/jwt/verify.mjs`: the assertion's claims, or the refusal.
fn jose_verify(
    jwks: &str,
    token: &str,
    issuer: &str,
    audience: &str,
    later: u64,
) -> Result<Value, String> {
    let out = Command::new("node")
        .arg(workspace().join("tests/jwt/verify.mjs"))
        .args([jwks, token, issuer, audience, &later.to_string()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.status.success() {
        Ok(serde_json::from_str(&text).unwrap())
    } else {
        Err(text)
    }
}

struct Site {
    /// The admin listener (metrics).
    admin: String,
    /// Envoy's gRPC check.
    ext_authz: String,
    _dir: TempDir,
    _op: OidcProvider,
    _upstream: EchoUpstream,
    api: EchoUpstream,
    p: Portcullis,
}

async fn site() -> Site {
    let dir = TempDir::new("routes");
    let upstream = EchoUpstream::start().await;
    let api = EchoUpstream::start().await;
    let port = free_port();
    let callback = format!("http://127.0.0.1:{port}/api/v1/auth/callback");
    let op = OidcProvider::start_with(
        "portcullis",
        "route-secret",
        &[&callback],
        json!({
            "groups": {"ada": ["admins"], "mallory": ["admins"]},
            "accounts": {"eve": {"department": "eng"}, "zed": {"department": "sales"}},
            "idTokenClaims": true,
        }),
    )
    .await;
    let admin = format!("127.0.0.1:{}", free_port());
    let ext_authz = format!("127.0.0.1:{}", free_port());
    let yaml = ROUTES
        .replace("{api}", &api.url())
        .replace("{key}", &key_file(&dir).display().to_string());
    let config = dir.path().join("portcullis.yaml");
    std::fs::write(&config, yaml).unwrap();
    let p = Portcullis::builder()
        .port(port)
        .env("PORTCULLIS_CONFIG", config.display().to_string())
        .env("OAUTH_ENABLED", "true")
        .env("OAUTH_PROVIDER", "oidc")
        .env("OAUTH_ISSUER_URL", &op.issuer)
        .env("OAUTH_CLIENT_ID", "portcullis")
        .env("OAUTH_CLIENT_SECRET", "route-secret")
        .env("OAUTH_SCOPES", "openid,email,profile,groups")
        .env("OAUTH_REDIRECT_URL", &callback)
        .env("COOKIE_SECRET", SECRET)
        .env("UPSTREAM_URL", upstream.url())
        .env("ADMIN__LISTEN_ADDR", &admin)
        .env("ADMIN__TOKEN", "routes-test-admin-token-0123456789-abcdef")
        .env("EXT_AUTHZ__LISTEN_ADDR", &ext_authz)
        .wait_ready()
        .start()
        .await;
    Site {
        admin,
        ext_authz,
        _dir: dir,
        _op: op,
        _upstream: upstream,
        api,
        p,
    }
}

/// Signs `user` in at oidc-provider, starting from `path`; the browser, asking for JSON
/// from then on.
async fn signed_in(s: &Site, user: &str, path: &str) -> Browser {
    let mut browser = Browser::new();
    let login = browser.navigate(&s.p.url(path)).await;
    let landed = op_sign_in(&browser, &login, user).await;
    assert_eq!(landed.status, 200, "login of {user}: {}", landed.body);
    browser.accept = "application/json".into();
    browser
}

#[tokio::test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "needs oidc-provider (npm), openssl: run scripts/test"
)]
async fn routes_decide_by_group_email_domain_claim_and_method_and_deny_wins() {
    let s = site().await;
    let ada = signed_in(&s, "ada", "/app/").await;
    let bob = signed_in(&s, "bob", "/app/").await;
    let eve = signed_in(&s, "eve", "/app/").await;
    let zed = signed_in(&s, "zed", "/app/").await;
    let mallory = signed_in(&s, "mallory", "/app/").await;
    let alice = signed_in(&s, "alice", "/app/").await;
    async fn status(s: &Site, b: &Browser, path: &str) -> u16 {
        b.get(&s.p.url(path)).await.status
    }
    assert_eq!(status(&s, &ada, "/admin/users").await, 200);
    assert_eq!(status(&s, &bob, "/admin/users").await, 403);
    assert_eq!(status(&s, &mallory, "/admin/users").await, 403, "deny wins");
    let delete = ada.request("DELETE", &s.p.url("/admin/users"), None).await;
    assert_eq!(
        delete.status, 404,
        "DELETE is not among the route's methods"
    );
    assert_eq!(status(&s, &eve, "/eng").await, 200);
    assert_eq!(status(&s, &zed, "/eng").await, 403);
    assert_eq!(status(&s, &alice, "/partners").await, 200, "listed email");
    assert_eq!(status(&s, &bob, "/partners").await, 403, "other domain");
    assert_eq!(status(&s, &bob, "/nowhere").await, 404, "no route takes it");
    // Public and exact.
    let stranger = Browser::new();
    assert_eq!(stranger.get(&s.p.url("/status")).await.status, 200);
    let exact = stranger.get(&s.p.url("/status/more")).await;
    assert_eq!(exact.status, 404);
    // The refusal names the route in the log.
    assert!(s.p.wait_for_log("route=admin").await, "{}", s.p.logs());
    let metrics = reqwest::get(format!("http://{}/metrics", s.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("portcullis_route_requests_total{route=\"admin\",outcome=\"denied\"} 2"),
        "{metrics}"
    );
}

#[tokio::test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "needs oidc-provider (npm), openssl: run scripts/test"
)]
async fn an_old_login_signs_in_again_at_the_provider_and_returns_to_the_page() {
    let s = site().await;
    let browser = signed_in(&s, "pat", "/payments/").await;
    assert_eq!(browser.get(&s.p.url("/payments/")).await.status, 200);
    tokio::time::sleep(Duration::from_millis(4200)).await;
    // An API client is told why, in RFC 9470's terms.
    let api = browser.get(&s.p.url("/payments/")).await;
    assert_eq!(api.status, 401);
    let challenge = api.headers["www-authenticate"].to_str().unwrap();
    assert!(
        challenge.contains("insufficient_user_authentication"),
        "{challenge}"
    );
    // A browser is sent to the provider with max_age and prompt=login, signs in again
    // through its form, and lands where it was going.
    let mut browser = browser;
    browser.accept = "text/html".into();
    let first = browser.get(&s.p.url("/payments/invoice?id=7")).await;
    assert_eq!(first.status, 302);
    let to = first.location().unwrap();
    assert!(
        to.contains("max_age=3") && to.contains("prompt=login"),
        "{to}"
    );
    let login = browser.follow(first).await;
    let landed = op_sign_in(&browser, &login, "pat").await;
    assert_eq!(landed.status, 200, "{}", landed.body);
    assert_eq!(landed.url.as_str(), s.p.url("/payments/invoice?id=7"));
}

#[tokio::test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "needs oidc-provider (npm), openssl: run scripts/test"
)]
async fn a_route_upstream_gets_a_verifiable_identity_assertion() {
    let s = site().await;
    let browser = signed_in(&s, "ada", "/app/").await;
    let page = browser.get(&s.p.url("/api/v1/items")).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let echo = page.json();
    // The route's own upstream answered.
    assert!(echo["peer"].is_string());
    let api_port = s.api.addr.port();
    assert_eq!(
        echo_header(&echo, "host"),
        Some(format!("127.0.0.1:{api_port}").as_str())
    );
    let token = echo_header(&echo, "x-portcullis-jwt-assertion")
        .unwrap()
        .to_string();
    let jwks = s.p.url("/.well-known/portcullis/jwks.json");
    let issuer = s.p.url("").trim_end_matches('/').to_string();
    let verified = jose_verify(&jwks, &token, &issuer, "https://api.example.com", 0)
        .unwrap_or_else(|e| panic!("jose refused the assertion: {e}"));
    assert_eq!(verified["claims"]["email"], "ada@example.com");
    assert_eq!(verified["claims"]["groups"], json!(["admins"]));
    assert_eq!(verified["claims"]["provider"], "oidc");
    assert_eq!(verified["header"]["alg"], "ES256");
    // Another audience, tampering, expiry: refused.
    assert!(jose_verify(&jwks, &token, &issuer, "https://other.example.com", 0).is_err());
    let mut tampered = token.clone();
    let dot = tampered.find('.').unwrap();
    tampered.replace_range(dot + 2..dot + 4, "xx");
    assert!(jose_verify(&jwks, &tampered, &issuer, "https://api.example.com", 0).is_err());
    let expired = jose_verify(&jwks, &token, &issuer, "https://api.example.com", 400);
    assert!(
        expired.is_err_and(|e| e.contains("EXPIRED")),
        "expiry not enforced"
    );
}

/// The value of `name` among an ext_authz answer's header options.
fn option<'a>(headers: &'a Value, name: &str) -> Option<&'a str> {
    headers
        .as_array()?
        .iter()
        .find(|h| h[0].as_str().is_some_and(|n| n.eq_ignore_ascii_case(name)))
        .and_then(|h| h[1].as_str())
}

#[tokio::test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "needs oidc-provider (npm), grpcio and xds-protos (pip), openssl: run scripts/test"
)]
async fn envoy_grpc_check_decides_with_the_route_table() {
    let s = site().await;
    let ada = signed_in(&s, "ada", "/app/").await;
    let bob = signed_in(&s, "bob", "/app/").await;
    let cookie = |b: &Browser| {
        format!(
            "session_token={}",
            b.cookie("127.0.0.1", "session_token").unwrap()
        )
    };
    let (ada_cookie, bob_cookie) = (cookie(&ada), cookie(&bob));
    let json_api = "application/json";
    let public_host =
        s.p.url("")
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
    let html = "text/html,application/xhtml+xml";
    let cases = json!([
        // 0: allowed, and the client's own identity headers replaced or removed.
        {"path": "/admin/users?x=1", "source": "203.0.113.9",
         "headers": {"cookie": ada_cookie, "accept": json_api,
                     "x-forwarded-user": "root", "x_forwarded_groups": "root",
                     "x-auth-request-email": "root@example.com"}},
        // 1: signed in, refused by the route's groups.
        {"path": "/admin/users", "headers": {"cookie": bob_cookie, "accept": json_api}},
        // 2: no route takes it.
        {"path": "/nowhere", "headers": {"cookie": bob_cookie, "accept": json_api}},
        // 3: a browser without a session: a 302 to the login, back to the URL asked for
        // (on the public origin; another host only if allowed_redirect_hosts lists it).
        {"path": "/app/page?a=b", "host": public_host, "scheme": "http", "headers": {"accept": html}},
        // 4: an API client without a session: 401, the login URL in a header.
        {"path": "/app/data", "headers": {"accept": json_api}},
        // 5: a public route needs no session and sets no identity.
        {"path": "/status", "headers": {"x-forwarded-user": "root"}},
        // 6: a forged cookie is no session.
        {"path": "/app/x", "headers": {"cookie": "session_token=forged", "accept": json_api}},
        // 7: the route's narrower per-location policy (context_extensions).
        {"path": "/app/x", "headers": {"cookie": ada_cookie, "accept": json_api},
         "context_extensions": {"allowed_groups": "nobody"}},
        // 8: a misspelt context extension is refused, not ignored.
        {"path": "/app/x", "headers": {"cookie": ada_cookie, "accept": json_api},
         "context_extensions": {"allowed_group": "admins"}},
        // 9: a path that reaches /admin through dot segments is decided as /admin.
        {"path": "/app/../admin/users", "headers": {"cookie": bob_cookie, "accept": json_api}},
        // 10: not a CheckRequest.
        {"rpc": "/envoy.service.auth.v3.Authorization/Check", "raw": "ffffffff"},
        // 11: another method.
        {"rpc": "/envoy.service.auth.v3.Authorization/Nope", "raw": ""},
    ]);
    let answers = envoy_check(&s.ext_authz, &cases);
    assert_eq!(answers.len(), 12, "{answers:?}");

    let ok = &answers[0];
    assert_eq!(ok["grpc"], 0, "{ok}");
    let set = &ok["ok"]["headers"];
    let user = option(set, "x-forwarded-user").unwrap();
    assert!(!user.is_empty() && user != "root", "{ok}");
    assert!(
        option(set, "x-forwarded-groups")
            .unwrap()
            .contains("admins")
    );
    assert_eq!(option(set, "x-forwarded-email"), Some("ada@example.com"));
    assert!(
        set.as_array().unwrap().iter().all(|h| h[2] == 2),
        "every header overwrites the client's: {ok}"
    );
    let assertion = option(set, "x-portcullis-jwt-assertion").expect("the assertion");
    let jwks = s.p.url("/.well-known/portcullis/jwks.json");
    let issuer = s.p.url("").trim_end_matches('/').to_string();
    let verified = jose_verify(&jwks, assertion, &issuer, "https://app.example.com", 0)
        .unwrap_or_else(|e| panic!("jose refused the assertion: {e}"));
    assert_eq!(verified["claims"]["sub"], user);
    let removed: Vec<&str> = ok["ok"]["headers_to_remove"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(removed.contains(&"x_forwarded_groups"), "{ok}");
    assert!(removed.contains(&"x-auth-request-email"), "{ok}");
    assert!(
        !removed.contains(&"x-forwarded-user"),
        "set, so not removed: {ok}"
    );

    for (i, why) in [
        (1, "route groups"),
        (2, "no route"),
        (7, "context_extensions"),
    ] {
        assert_eq!(answers[i]["grpc"], 7, "case {i} ({why}): {}", answers[i]);
        assert_eq!(
            answers[i]["denied"]["status"], 403,
            "case {i}: {}",
            answers[i]
        );
    }
    let browser = &answers[3];
    assert_eq!(browser["grpc"], 16, "{browser}");
    assert_eq!(browser["denied"]["status"], 302, "{browser}");
    let location = option(&browser["denied"]["headers"], "location").unwrap();
    assert!(
        location.contains("/api/v1/auth/login") && location.contains("rd=%2Fapp%2Fpage%3Fa%3Db"),
        "{location}"
    );
    for i in [4, 6] {
        assert_eq!(answers[i]["grpc"], 16, "case {i}: {}", answers[i]);
        assert_eq!(
            answers[i]["denied"]["status"], 401,
            "case {i}: {}",
            answers[i]
        );
        assert!(option(&answers[i]["denied"]["headers"], "x-auth-request-login").is_some());
    }
    let public = &answers[5];
    assert_eq!(public["grpc"], 0, "{public}");
    assert!(option(&public["ok"]["headers"], "x-forwarded-user").is_none());
    assert_eq!(
        public["ok"]["headers_to_remove"],
        json!(["x-forwarded-user"])
    );
    assert_eq!(answers[8]["grpc"], 3, "{}", answers[8]);
    assert!(
        answers[8]["message"]
            .as_str()
            .unwrap()
            .contains("allowed_group")
    );
    assert_ne!(
        answers[9]["grpc"], 0,
        "dot segments must not reach /admin: {}",
        answers[9]
    );
    assert_eq!(answers[10]["grpc"], 3, "{}", answers[10]);
    assert_eq!(answers[11]["grpc"], 12, "{}", answers[11]);

    // The refusals were logged like any other, naming the entry point.
    assert!(
        s.p.wait_for_log("entry=\"ext-authz\"").await,
        "{}",
        s.p.logs()
    );
}
