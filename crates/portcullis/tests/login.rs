//! Logging in, being let in or refused, and the auth endpoints, against the real binary.
#![allow(clippy::unwrap_used)]

use portcullis_testkit::prelude::*;
use serde_json::{Value, json};

async fn log_in(browser: &Browser, p: &Portcullis, path: &str, user: &str, groups: &str) -> Page {
    let form = browser.navigate(&p.url(path)).await;
    dev_idp_sign_in(browser, &form, user, groups).await
}

/// `examples/local-dev/portcullis.yaml` as written, only the dev server's port changed.
#[tokio::test]
async fn the_local_dev_example_runs_as_written() {
    let upstream = EchoUpstream::start().await;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let example = std::fs::read_to_string(root.join("examples/local-dev/portcullis.yaml")).unwrap();
    assert!(example.contains("http://127.0.0.1:5173"));
    let dir = portcullis_testkit::TempDir::new("local-dev");
    let config = dir.path().join("portcullis.yaml");
    std::fs::write(
        &config,
        example.replace("http://127.0.0.1:5173", &upstream.url()),
    )
    .unwrap();
    let port = free_port();
    let p = Portcullis::builder()
        .arg("dev")
        .arg("--config")
        .arg(config.display().to_string())
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .port(port)
        .wait_ready()
        .start()
        .await;

    let browser = Browser::new();
    let landed = log_in(&browser, &p, "/src/main.ts", "alice", "developers").await;
    assert_eq!(landed.status, 200, "{landed:?}");
    let echo = landed.json();
    assert_eq!(echo["path"], "/src/main.ts");
    assert_eq!(echo_header(&echo, "x-forwarded-groups"), Some("developers"));
    // preserve_host: the dev server sees the address the browser used.
    assert_eq!(
        echo_header(&echo, "host"),
        Some(format!("127.0.0.1:{port}").as_str())
    );

    // The example's access rule: without the group, refused.
    let other = Browser::new();
    let refused = log_in(&other, &p, "/", "bob", "sales").await;
    assert_eq!(refused.status, 403, "{refused:?}");
}

/// The README's first command, as written: no app of your own, so the built-in "who am
/// I" page stands in and shows the identity headers; signing out there works.
#[tokio::test]
async fn dev_without_an_app_shows_the_built_in_who_am_i_page() {
    let port = free_port();
    let p = Portcullis::builder()
        .arg("dev")
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .port(port)
        .wait_ready()
        .start()
        .await;
    assert!(p.logs().contains("who am I"), "{}", p.logs());
    let browser = Browser::new();
    let form = browser.navigate(&p.url("/")).await;
    let landed = dev_idp_sign_in(&browser, &form, "quinn", "ops").await;
    assert_eq!(landed.status, 200, "{landed:?}");
    assert!(landed.body.contains("<h1>Who am I</h1>"), "{}", landed.body);
    assert!(landed.body.contains("quinn@example.com"), "{}", landed.body);
    assert!(landed.body.contains("<td>ops</td>"), "{}", landed.body);
    // What a client sends as an identity header never shows up as the identity.
    let forged = browser
        .request_with(
            "GET",
            &p.url("/"),
            &[
                ("x-forwarded-email", "ceo@example.com"),
                ("accept", "application/json"),
            ],
        )
        .await;
    assert_eq!(
        forged.json()["headers"]["x-forwarded-email"],
        "quinn@example.com"
    );
    // The sign-out button posts to Portcullis, which ends the session.
    let (action, fields) = landed.form();
    assert_eq!(action.path(), "/api/v1/auth/logout");
    let out = browser
        .request("POST", action.as_str(), Some(&fields))
        .await;
    assert_eq!(out.status, 200, "{out:?}");
    let again = browser.navigate(&p.url("/")).await;
    assert!(
        again.body.contains("Development identity provider"),
        "{}",
        again.body
    );
}

#[tokio::test]
async fn the_dev_quickstart_logs_in_through_the_embedded_provider() {
    let upstream = EchoUpstream::start().await;
    let port = free_port();
    let p = Portcullis::builder()
        .arg("dev")
        .arg("--upstream")
        .arg(upstream.url())
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .port(port)
        .wait_ready()
        .start()
        .await;
    assert!(
        p.logs().contains("DEVELOPMENT MODE. NOT FOR PRODUCTION"),
        "{}",
        p.logs()
    );
    let browser = Browser::new();
    let form = browser.navigate(&p.url("/reports?year=2026")).await;
    assert!(
        form.body.contains("Development identity provider"),
        "{}",
        form.body
    );
    // The browser really went to a separate issuer over HTTP.
    assert_ne!(form.url.port(), Some(port));
    let landed = dev_idp_sign_in(&browser, &form, "alice", "admins, devs").await;
    assert_eq!(landed.status, 200, "{landed:?}");
    let echo = landed.json();
    assert_eq!(echo["path"], "/reports");
    assert_eq!(echo["query"], "year=2026");
    assert_eq!(
        echo_header(&echo, "x-forwarded-email"),
        Some("alice@example.com")
    );
    assert_eq!(
        echo_header(&echo, "x-forwarded-preferred-username"),
        Some("alice")
    );
    assert_eq!(
        echo_header(&echo, "x-forwarded-groups"),
        Some("admins,devs")
    );
    assert_eq!(echo_header(&echo, "x-forwarded-provider"), Some("dev"));
    assert!(
        echo_header(&echo, "x-forwarded-user")
            .unwrap()
            .starts_with("dev-")
    );
    assert!(
        landed
            .history
            .iter()
            .any(|(u, s)| u.contains("/api/v1/auth/callback") && *s == 302),
        "{:?}",
        landed.history
    );
}

#[tokio::test]
async fn dev_refuses_a_non_loopback_address_unless_forced() {
    let (code, out) = run_portcullis(
        &[
            "dev",
            "--upstream",
            "http://127.0.0.1:1",
            "--listen",
            "0.0.0.0:0",
        ],
        &[],
    );
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("refusing to listen on 0.0.0.0:0"), "{out}");
    assert!(out.contains("--allow-non-loopback"), "{out}");
}

#[tokio::test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "needs oidc-provider (npm): run scripts/test"
)]
async fn a_real_third_party_provider_logs_the_user_in_through_its_own_forms() {
    let upstream = EchoUpstream::start().await;
    let port = free_port();
    let redirect = format!("http://127.0.0.1:{port}/api/v1/auth/callback");
    let op = OidcProvider::start(
        "portcullis-e2e",
        "e2e-client-secret",
        &[&redirect],
        json!({"alice": ["ops"]}),
    )
    .await;
    let p = Portcullis::builder()
        .port(port)
        .env("OAUTH_ENABLED", "true")
        .env("OAUTH_PROVIDER", "oidc")
        .env("OAUTH_ISSUER_URL", &op.issuer)
        .env("OAUTH_CLIENT_ID", "portcullis-e2e")
        .env("OAUTH_CLIENT_SECRET", "e2e-client-secret")
        .env("OAUTH_REDIRECT_URL", &redirect)
        .env("OAUTH_SCOPES", "openid,email,profile,groups")
        .env("UPSTREAM_URL", upstream.url())
        .env("COOKIE_SECRET", SECRET)
        .wait_ready()
        .start()
        .await;

    let browser = Browser::new();
    let login = browser.navigate(&p.url("/inbox?folder=a%20b")).await;
    assert!(
        login.url.as_str().starts_with(&op.issuer),
        "not at the provider: {}",
        login.url
    );
    assert!(
        login.body.contains("name=\"login\""),
        "no login form: {}",
        login.body
    );
    let consent = browser
        .submit(&login, &[("login", "alice"), ("password", "anything")])
        .await;
    assert!(
        consent.body.contains("name=\"prompt\" value=\"consent\""),
        "no consent form: {}",
        consent.body
    );
    let landed = browser.submit(&consent, &[]).await;
    assert_eq!(landed.status, 200, "{landed:?}\n{}", p.logs());
    let echo = landed.json();
    assert_eq!(echo["path"], "/inbox");
    assert_eq!(echo["query"], "folder=a%20b");
    assert_eq!(
        echo_header(&echo, "x-forwarded-email"),
        Some("alice@example.com")
    );
    assert_eq!(echo_header(&echo, "x-forwarded-user"), Some("alice"));
    assert_eq!(echo_header(&echo, "x-forwarded-groups"), Some("ops"));
    let cookie_header = echo_header(&echo, "cookie").unwrap_or("");
    assert!(
        !cookie_header.contains("session_token"),
        "session cookie forwarded: {cookie_header}"
    );

    // The same browser goes straight through now.
    let again = browser.get(&p.url("/again")).await;
    assert_eq!(again.status, 200);

    // A request without the cookie is sent to the provider.
    let stranger = Browser::new();
    let bounced = stranger.get(&p.url("/inbox")).await;
    assert_eq!(bounced.status, 302);
    assert!(
        bounced
            .location()
            .unwrap()
            .starts_with(&format!("{}/auth?", op.issuer))
    );
}

#[tokio::test]
async fn api_requests_get_a_401_json_body_instead_of_a_redirect() {
    let setup = with_dev_idp(&[]).await;
    let p = &setup.portcullis;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for (name, value) in [
        ("accept", "application/json"),
        ("x-requested-with", "XMLHttpRequest"),
        ("accept", "*/*"),
    ] {
        let resp = http
            .get(p.url("/api/things"))
            .header(name, value)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401, "{name}: {value}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"], "unauthenticated");
        assert_eq!(body["login_url"], "/api/v1/auth/login");
    }
    // A browser-style request that also says X-Requested-With is an API call.
    let resp = http
        .get(p.url("/api/things"))
        .header("accept", "text/html")
        .header("x-requested-with", "XMLHttpRequest")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}

#[tokio::test]
async fn allowed_users_admit_listed_emails_and_user_names_and_refuse_others() {
    let setup = with_dev_idp(&[("OAUTH_ALLOWED_USERS", "Alice@Example.com, bob")]).await;
    let p = &setup.portcullis;

    let alice = Browser::new();
    let page = log_in(&alice, p, "/", "alice", "").await;
    assert_eq!(
        page.status, 200,
        "alice (by email, other case) refused: {}",
        page.body
    );

    let bob = Browser::new();
    let form = bob.navigate(&p.url("/")).await;
    let page = bob
        .submit(
            &form,
            &[("username", "bob"), ("email", "robert@corp.example")],
        )
        .await;
    assert_eq!(
        page.status, 200,
        "bob (by user name) refused: {}",
        page.body
    );

    let mallory = Browser::new();
    let page = log_in(&mallory, p, "/", "mallory", "").await;
    assert_eq!(page.status, 403);
    assert!(page.body.contains("mallory@example.com"), "{}", page.body);
    assert!(
        page.body
            .contains("not on this application&#39;s list of allowed users"),
        "{}",
        page.body
    );
    assert!(
        p.wait_for_log("User not allowed: mallory@example.com")
            .await,
        "{}",
        p.logs()
    );
    // No session was created for her.
    assert_eq!(mallory.get(&p.url("/")).await.status, 302);
}

#[tokio::test]
async fn the_callback_path_comes_from_the_redirect_url() {
    let setup = with_dev_idp_at("/v1/oauth/callback/", &[]).await;
    let p = &setup.portcullis;
    let browser = Browser::new();
    let page = log_in(&browser, p, "/home", "carol", "").await;
    assert_eq!(page.status, 200, "{:?}", page.history);
    assert!(
        page.history
            .iter()
            .any(|(u, _)| u.contains("/v1/oauth/callback/?code=")),
        "{:?}",
        page.history
    );
    assert_eq!(page.json()["path"], "/home");
    // The default callback path is then ordinary protected traffic.
    let other = Browser::new();
    let resp = other
        .get(&p.url("/api/v1/auth/callback?code=x&state=y"))
        .await;
    assert_eq!(resp.status, 302);
    assert!(resp.location().unwrap().contains("/authorize?"));
}

#[tokio::test]
async fn me_reports_the_user_and_logout_ends_the_session_on_the_server() {
    let setup = with_dev_idp(&[]).await;
    let p = &setup.portcullis;
    let mut browser = Browser::new();
    log_in(&browser, p, "/", "dave", "qa").await;
    browser.accept = "application/json".into();
    let me = browser.get(&p.url("/api/v1/auth/me")).await;
    assert_eq!(me.status, 200);
    let me = me.json();
    assert_eq!(me["email"], "dave@example.com");
    assert_eq!(me["username"], "dave");
    assert_eq!(me["name"], "dave");
    assert_eq!(me["provider"], "oidc");
    assert_eq!(me["groups"], json!(["qa"]));
    assert!(me["id"].as_str().unwrap().starts_with("dev-"));

    let stolen = browser
        .cookie("127.0.0.1", "session_token")
        .expect("session cookie");
    let out = browser
        .request("POST", &p.url("/api/v1/auth/logout"), Some(&[]))
        .await;
    assert_eq!(out.status, 200);
    assert_eq!(
        out.json(),
        json!({"message": "Logged out successfully", "sessions_ended": 1})
    );
    assert!(
        out.headers["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    assert_eq!(browser.cookie("127.0.0.1", "session_token"), None);

    // A copy of the cookie taken before logout no longer works: the session is gone.
    let mut thief = Browser::new();
    thief.accept = "application/json".into();
    thief.set_cookie("127.0.0.1", "session_token", &stolen);
    assert_eq!(thief.get(&p.url("/api/v1/auth/me")).await.status, 401);
    assert_eq!(thief.get(&p.url("/anything")).await.status, 401);
}

#[tokio::test]
async fn logout_only_accepts_post_and_offers_a_form_on_get() {
    let setup = with_dev_idp(&[]).await;
    let p = &setup.portcullis;
    let browser = Browser::new();
    let page = browser.get(&p.url("/api/v1/auth/logout")).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("method=\"post\""));
    let put = browser
        .request("PUT", &p.url("/api/v1/auth/logout"), None)
        .await;
    assert_eq!(put.status, 405);
    assert_eq!(put.headers["allow"], "GET, HEAD, POST");
}

#[tokio::test]
async fn status_says_whether_authentication_is_on() {
    let setup = with_dev_idp(&[]).await;
    let p = &setup.portcullis;
    let body: Value = reqwest::get(p.url("/api/v1/auth/status"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body, json!({"enabled": true}));
    let ready = reqwest::get(p.url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(reqwest::get(p.url("/healthz")).await.unwrap().status(), 200);
}

#[tokio::test]
async fn open_mode_passes_traffic_through_and_says_so() {
    let upstream = EchoUpstream::start().await;
    let p = Portcullis::builder()
        .env("UPSTREAM_URL", upstream.url())
        .start()
        .await;
    assert!(p.wait_for_log("OPEN MODE").await, "{}", p.logs());
    let body: Value = reqwest::get(p.url("/api/v1/auth/status"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body, json!({"enabled": false}));
    let resp = reqwest::Client::new()
        .get(p.url("/page"))
        .header("x-forwarded-email", "ceo@example.com")
        .header("X_Forwarded_User", "ceo")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let echo: Value = resp.json().await.unwrap();
    assert_eq!(echo["path"], "/page");
    assert!(echo["headers"]["x-forwarded-email"].is_null(), "{echo}");
    assert!(echo["headers"]["x_forwarded_user"].is_null(), "{echo}");
    let me = reqwest::get(p.url("/api/v1/auth/me")).await.unwrap();
    assert_eq!(me.status(), 401);
}

#[tokio::test]
async fn the_nested_dialect_alone_configures_a_provider() {
    let upstream = EchoUpstream::start().await;
    let port = free_port();
    let redirect = format!("http://127.0.0.1:{port}/api/v1/auth/callback");
    let idp = dev_idp(vec![redirect]).await;
    let p = Portcullis::builder()
        .port(port)
        .env("AUTH__OPENID_CONNECT__CORP__ENABLED", "true")
        .env("AUTH__OPENID_CONNECT__CORP__CLIENT_ID", "portcullis")
        .env("AUTH__OPENID_CONNECT__CORP__CLIENT_SECRET", "dev-secret")
        .env(
            "AUTH__OPENID_CONNECT__CORP__DISCOVERY_URL",
            format!("{}/.well-known/openid-configuration", idp.issuer()),
        )
        .env(
            "AUTH__OPENID_CONNECT__CORP__AUTH_URL_PARAMS__AUDIENCE",
            "api://corp",
        )
        .env("PUBLIC_URL", format!("http://127.0.0.1:{port}"))
        .env("UPSTREAM_URL", upstream.url())
        .env("COOKIE_SECRET", SECRET)
        .wait_ready()
        .start()
        .await;
    assert!(
        p.logs().contains("OAuth enabled with provider: corp"),
        "{}",
        p.logs()
    );
    let browser = Browser::new();
    let form = browser.navigate(&p.url("/")).await;
    assert!(form.history[0].0.contains("127.0.0.1"));
    let first_redirect = browser.get(&p.url("/")).await.location().unwrap();
    assert!(
        first_redirect.contains("audience=api%3A%2F%2Fcorp"),
        "{first_redirect}"
    );
    let landed = dev_idp_sign_in(&browser, &form, "erin", "").await;
    assert_eq!(
        echo_header(&landed.json(), "x-forwarded-provider"),
        Some("corp")
    );
}
