//! Tokens after login, against the real `oidc-provider`: bearer JWTs for API clients and
//! CLIs, refreshing a session before its access token expires (and ending it when the
//! provider refuses), logging out at the provider, and passing tokens to the upstream.
#![allow(clippy::unwrap_used)]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use portcullis_testkit::prelude::*;
use serde_json::{Value, json};

const APP: (&str, &str) = ("portcullis-app", "portcullis-app-secret");
const CLI: (&str, &str) = ("team-cli", "team-cli-secret");
const OTHER: (&str, &str) = ("other-app", "other-app-secret");
/// Where the test's own code flows "return" (never contacted: the code is read from the
/// redirect).
const CLI_REDIRECT: &str = "http://127.0.0.1:9/cli-callback";

fn client(id: &str, secret: &str, redirects: &[&str]) -> Value {
    json!({
        "client_id": id,
        "client_secret": secret,
        "redirect_uris": redirects,
        "post_logout_redirect_uris": redirects.iter().map(|r| r.replace("/api/v1/auth/callback", "/")).collect::<Vec<_>>(),
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
    })
}

/// oidc-provider with the app's client, a CLI's client and an unrelated app's client.
async fn provider(redirect: &str, extra: Value) -> OidcProvider {
    let mut options = json!({
        "idTokenClaims": true,
        "groups": {"alice": ["eng"]},
        "clients": [
            client(APP.0, APP.1, &[redirect, CLI_REDIRECT]),
            client(CLI.0, CLI.1, &[CLI_REDIRECT]),
            client(OTHER.0, OTHER.1, &[CLI_REDIRECT]),
        ],
    });
    for (k, v) in extra.as_object().unwrap() {
        options[k] = v.clone();
    }
    OidcProvider::start_with(APP.0, APP.1, &[redirect], options).await
}

/// What a CLI does: a code flow of its own client (with PKCE), then the token request.
/// Returns the token answer (id_token, access_token).
async fn cli_tokens(op: &OidcProvider, (id, secret): (&str, &str), user: &str) -> Value {
    let verifier = "cli-verifier-0123456789-0123456789-0123456789";
    let challenge = URL_SAFE_NO_PAD.encode(
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes()).as_ref(),
    );
    let mut authorize = url::Url::parse(&format!("{}/auth", op.issuer)).unwrap();
    authorize
        .query_pairs_mut()
        .append_pair("client_id", id)
        .append_pair("response_type", "code")
        .append_pair("scope", "openid email profile groups")
        .append_pair("redirect_uri", CLI_REDIRECT)
        .append_pair("state", "cli-state")
        .append_pair("nonce", "cli-nonce")
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");
    let back = op_sign_in_until(&Browser::new(), authorize.as_str(), user, CLI_REDIRECT).await;
    let code = back
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .expect("a code");
    reqwest::Client::new()
        .post(format!("{}/token", op.issuer))
        .basic_auth(id, Some(secret))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", CLI_REDIRECT),
            ("code_verifier", verifier),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn portcullis(
    op: &OidcProvider,
    port: u16,
    upstream: &EchoUpstream,
    env: &[(&str, &str)],
) -> Portcullis {
    let mut b = Portcullis::builder()
        .port(port)
        .env("AUTH__OPENID_CONNECT__CORP__ENABLED", "true")
        .env("AUTH__OPENID_CONNECT__CORP__CLIENT_ID", APP.0)
        .env("AUTH__OPENID_CONNECT__CORP__CLIENT_SECRET", APP.1)
        .env(
            "AUTH__OPENID_CONNECT__CORP__DISCOVERY_URL",
            op.issuer.clone(),
        )
        .env(
            "OAUTH_REDIRECT_URL",
            format!("http://127.0.0.1:{port}/api/v1/auth/callback"),
        )
        .env("UPSTREAM_URL", upstream.url())
        .env("COOKIE_SECRET", SECRET);
    for (k, v) in env {
        b = b.env(k, *v);
    }
    b.wait_ready().start().await
}

/// oidc-provider (with `options`) and Portcullis (with `env`) in front of an echoing app.
async fn rig(options: Value, env: &[(&str, &str)]) -> (OidcProvider, EchoUpstream, Portcullis) {
    let upstream = EchoUpstream::start().await;
    let port = free_port();
    let op = provider(
        &format!("http://127.0.0.1:{port}/api/v1/auth/callback"),
        options,
    )
    .await;
    let p = portcullis(&op, port, &upstream, env).await;
    (op, upstream, p)
}

async fn get(url: &str, headers: &[(&str, String)]) -> reqwest::Response {
    let mut req = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(url)
        .header("accept", "application/json");
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    req.send().await.unwrap()
}

#[tokio::test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "needs oidc-provider (npm): run scripts/test"
)]
async fn a_cli_with_a_bearer_token_is_admitted_and_every_bad_token_is_a_401() {
    let (op, _upstream, p) = rig(
        json!({}),
        &[
            ("AUTH__BEARER_TOKENS", "true"),
            (
                "AUTH__OPENID_CONNECT__CORP__AUDIENCES",
                "portcullis-app,team-cli",
            ),
        ],
    )
    .await;
    let tokens = cli_tokens(&op, CLI, "alice").await;
    let id_token = tokens["id_token"]
        .as_str()
        .expect("an ID token")
        .to_string();
    let bearer = |t: &str| vec![("authorization", format!("Bearer {t}"))];

    let ok = get(&p.url("/api/items"), &bearer(&id_token)).await;
    assert_eq!(ok.status(), 200);
    let echo: Value = ok.json().await.unwrap();
    assert_eq!(
        echo_header(&echo, "x-forwarded-email"),
        Some("alice@example.com")
    );
    assert_eq!(echo_header(&echo, "x-forwarded-groups"), Some("eng"));
    assert_eq!(echo_header(&echo, "x-forwarded-provider"), Some("corp"));
    let me: Value = get(&p.url("/api/v1/auth/me"), &bearer(&id_token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["email"], "alice@example.com");
    // Forward-auth accepts it too.
    let verified = get(&p.url("/api/v1/auth/verify"), &bearer(&id_token)).await;
    assert_eq!(verified.status(), 200);
    assert_eq!(
        verified.headers()["x-auth-request-email"],
        "alice@example.com"
    );

    // Each of these is a 401 with RFC 6750's error, never a pass-through or a login.
    let other_audience = cli_tokens(&op, OTHER, "alice").await["id_token"]
        .as_str()
        .unwrap()
        .to_string();
    let mut forged = id_token.clone().into_bytes();
    let last = forged.len() - 5;
    forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    let parts: Vec<&str> = id_token.split('.').collect();
    let unsigned = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
        parts[1]
    );
    let mut claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    claims["iss"] = json!("https://evil.example");
    let foreign = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        parts[2]
    );
    for (what, token) in [
        ("another client's token", other_audience.as_str()),
        ("a forged signature", forged.as_str()),
        ("alg none", unsigned.as_str()),
        ("an unknown issuer", foreign.as_str()),
        ("not a JWT", "opaque-token"),
    ] {
        let resp = get(&p.url("/api/items"), &bearer(token)).await;
        assert_eq!(resp.status(), 401, "{what}");
        let challenge = resp.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(
            challenge.contains("error=\"invalid_token\""),
            "{what}: {challenge}"
        );
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"], "invalid_token", "{what}");
    }

    // A bad token is refused even with a good session cookie next to it: no fallback.
    let browser = Browser::new();
    let landed = op_sign_in_app(&browser, &p, "alice").await;
    assert_eq!(landed.status, 200);
    let cookie = browser.cookie("127.0.0.1", "session_token").unwrap();
    let mixed = get(
        &p.url("/api/items"),
        &[
            ("authorization", format!("Bearer {forged}")),
            ("cookie", format!("session_token={cookie}")),
        ],
    )
    .await;
    assert_eq!(mixed.status(), 401);
}

#[tokio::test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "needs oidc-provider (npm): run scripts/test"
)]
async fn bearer_tokens_are_ignored_unless_turned_on() {
    let (op, _upstream, p) = rig(json!({}), &[]).await;
    let id_token = cli_tokens(&op, CLI, "alice").await["id_token"]
        .as_str()
        .unwrap()
        .to_string();
    let resp = get(
        &p.url("/api/items"),
        &[("authorization", format!("Bearer {id_token}"))],
    )
    .await;
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "unauthenticated");
}

/// Signs in through Portcullis and lands on the app.

#[tokio::test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "needs oidc-provider (npm): run scripts/test"
)]
async fn sessions_refresh_once_before_expiry_and_end_when_the_provider_refuses() {
    // Access tokens live 60 s; Portcullis refreshes 58 s before expiry, so 2 s after a
    // login the session is due.
    let (op, _upstream, p) = rig(
        json!({"accessTokenTtl": 60}),
        &[
            (
                "AUTH__OPENID_CONNECT__CORP__SCOPES",
                "openid,email,profile,offline_access",
            ),
            (
                "AUTH__OPENID_CONNECT__CORP__AUTH_URL_PARAMS__PROMPT",
                "consent",
            ),
            ("AUTH__REFRESH_BEFORE", "58s"),
        ],
    )
    .await;
    let browser = Browser::new();
    let landed = op_sign_in_app(&browser, &p, "alice").await;
    assert_eq!(landed.status, 200, "{landed:?}\n{}", p.logs());
    assert_eq!(
        op.wait_grants("authorization_code", 1).await,
        1,
        "{}",
        op.logs()
    );
    assert_eq!(op.grants("refresh_token"), 0);

    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    // Many requests at once: one refresh.
    let cookie = browser.cookie("127.0.0.1", "session_token").unwrap();
    let statuses = all_at_once((0..8).map(|i| p.url(&format!("/page/{i}"))), &cookie).await;
    assert!(
        statuses.iter().all(|s| *s == 200),
        "{statuses:?}\n{}",
        p.logs()
    );
    assert_eq!(op.wait_grants("refresh_token", 1).await, 1, "{}", op.logs());

    // The administrator disables alice: the next refresh is refused and the session ends.
    reqwest::get(format!("{}/test/disable?login=alice", op.issuer))
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let after = browser.get(&p.url("/page/after")).await;
    assert_eq!(after.status, 302, "{after:?}\n{}", p.logs());
    assert!(
        after.location().unwrap().starts_with(&op.issuer),
        "{after:?}"
    );
    assert!(
        p.wait_for_log("refused to refresh the session's tokens: session ended")
            .await,
        "{}",
        p.logs()
    );
    // The old cookie is dead for good.
    let api = get(
        &p.url("/api/x"),
        &[("cookie", format!("session_token={cookie}"))],
    )
    .await;
    assert_eq!(api.status(), 401);
}

/// Two replicas sharing sessions in Redis, both asked at once when the session is due:
/// one refresh between them (a refresh token used twice may revoke the whole grant).
#[tokio::test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "needs Redis, oidc-provider (npm): run scripts/test"
)]
async fn replicas_sharing_redis_refresh_a_session_once() {
    let redis = portcullis_testkit::RedisServer::start();
    let upstream = EchoUpstream::start().await;
    let (port_a, port_b) = (free_port(), free_port());
    let callback = |port: u16| format!("http://127.0.0.1:{port}/api/v1/auth/callback");
    let op = OidcProvider::start_with(
        APP.0,
        APP.1,
        &[],
        json!({
            "accessTokenTtl": 60,
            "clients": [{
                "client_id": APP.0, "client_secret": APP.1,
                "redirect_uris": [callback(port_a), callback(port_b)],
                "grant_types": ["authorization_code", "refresh_token"],
                "response_types": ["code"],
            }],
        }),
    )
    .await;
    let redis_url = redis.url();
    let env = [
        ("SESSION__STORE", "redis"),
        ("SESSION__REDIS__URL", redis_url.as_str()),
        (
            "AUTH__OPENID_CONNECT__CORP__SCOPES",
            "openid,email,profile,offline_access",
        ),
        (
            "AUTH__OPENID_CONNECT__CORP__AUTH_URL_PARAMS__PROMPT",
            "consent",
        ),
        ("AUTH__REFRESH_BEFORE", "58s"),
    ];
    let a = portcullis(&op, port_a, &upstream, &env).await;
    let b = portcullis(&op, port_b, &upstream, &env).await;
    let browser = Browser::new();
    assert_eq!(op_sign_in_app(&browser, &a, "alice").await.status, 200);
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;

    let cookie = browser.cookie("127.0.0.1", "session_token").unwrap();
    let urls = (0..12).map(|i| if i % 2 == 0 { a.url("/x") } else { b.url("/x") });
    let statuses = all_at_once(urls, &cookie).await;
    assert!(
        statuses.iter().all(|s| *s == 200),
        "{statuses:?}\n{}\n{}",
        a.logs(),
        b.logs()
    );
    assert_eq!(op.wait_grants("refresh_token", 1).await, 1, "{}", op.logs());
}

/// GETs every URL at once with the session cookie; their statuses, in order.
async fn all_at_once(urls: impl Iterator<Item = String>, cookie: &str) -> Vec<reqwest::StatusCode> {
    let handles: Vec<_> = urls
        .map(|url| {
            let cookie = format!("session_token={cookie}");
            tokio::spawn(async move { get(&url, &[("cookie", cookie)]).await.status() })
        })
        .collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "needs oidc-provider (npm): run scripts/test"
)]
async fn logout_also_ends_the_session_at_the_provider_when_asked() {
    let (op, _upstream, p) = rig(json!({}), &[("AUTH__PROVIDER_LOGOUT", "true")]).await;
    let browser = Browser::new();
    assert_eq!(op_sign_in_app(&browser, &p, "alice").await.status, 200);

    // A browser's sign-out form goes on to the provider's end_session_endpoint.
    let out = browser
        .request("POST", &p.url("/api/v1/auth/logout"), None)
        .await;
    assert_eq!(out.status, 303, "{out:?}");
    let end = url::Url::parse(&out.location().unwrap()).unwrap();
    assert!(end.as_str().starts_with(&op.issuer), "{end}");
    let q: std::collections::HashMap<_, _> = end.query_pairs().into_owned().collect();
    assert_eq!(q["client_id"], APP.0);
    assert_eq!(q["post_logout_redirect_uri"], p.url("/"));
    assert!(q.contains_key("id_token_hint"));
    // The provider asks to confirm, then sends the browser back to the app, where it
    // has to sign in again (at the provider: its session ended too, so the login form).
    let confirm = browser.navigate(end.as_str()).await;
    let (action, fields) = confirm.form();
    let mut fields = fields;
    fields.push(("logout".into(), "yes".into()));
    let back = browser
        .request("POST", action.as_str(), Some(&fields))
        .await;
    assert_eq!(
        back.location().as_deref(),
        Some(p.url("/").as_str()),
        "{back:?}"
    );
    let again = browser.navigate(&p.url("/")).await;
    assert!(again.body.contains("name=\"login\""), "{again:?}");

    // An API client gets the URL instead of a redirect.
    let mut json_client = Browser::new();
    assert_eq!(op_sign_in_app(&json_client, &p, "bob").await.status, 200);
    json_client.accept = "application/json".into();
    let out = json_client
        .request("POST", &p.url("/api/v1/auth/logout"), None)
        .await;
    assert_eq!(out.status, 200);
    let body = out.json();
    assert_eq!(body["message"], "Logged out successfully");
    assert!(
        body["logout_url"].as_str().unwrap().starts_with(&op.issuer),
        "{body}"
    );
}

#[tokio::test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "needs oidc-provider (npm): run scripts/test"
)]
async fn tokens_reach_the_upstream_only_when_configured() {
    let (_op, _upstream, p) = rig(
        json!({}),
        &[
            ("AUTH__PASS_ACCESS_TOKEN", "true"),
            ("AUTH__PASS_ID_TOKEN", "true"),
        ],
    )
    .await;
    let browser = Browser::new();
    let landed = op_sign_in_app(&browser, &p, "alice").await;
    let echo = landed.json();
    let access = echo_header(&echo, "x-forwarded-access-token").expect("access token passed");
    assert!(!access.is_empty());
    let authorization = echo_header(&echo, "authorization").expect("ID token passed");
    let jwt = authorization.strip_prefix("Bearer ").unwrap();
    assert_eq!(jwt.split('.').count(), 3);

    // Off by default; and a client cannot send its own X-Forwarded-Access-Token through.
    let (_op2, _upstream2, p2) = rig(json!({}), &[]).await;
    let browser = Browser::new();
    op_sign_in_app(&browser, &p2, "alice").await;
    let cookie = browser.cookie("127.0.0.1", "session_token").unwrap();
    let echo: Value = get(
        &p2.url("/x"),
        &[
            ("cookie", format!("session_token={cookie}")),
            ("x-forwarded-access-token", "forged".into()),
        ],
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(echo_header(&echo, "x-forwarded-access-token"), None);
    assert_eq!(echo_header(&echo, "authorization"), None);
}

// ---------------------------------------------------------------------------------------
// The implicit flow

async fn implicit_setup(mode: &str) -> (OidcProvider, EchoUpstream, Portcullis) {
    let upstream = EchoUpstream::start().await;
    let port = free_port();
    let callback = format!("http://127.0.0.1:{port}/v1/oauth/callback/");
    let page = format!("http://127.0.0.1:{port}/v1/oauth/redirect/");
    let op = OidcProvider::start_with(
        APP.0,
        APP.1,
        &[],
        json!({
            "idTokenClaims": true,
            "groups": {"alice": ["eng"]},
            "clients": [{
                "client_id": APP.0,
                "client_secret": APP.1,
                "redirect_uris": [callback, page],
                "grant_types": ["implicit"],
                "response_types": ["id_token"],
            }],
        }),
    )
    .await;
    let p = Portcullis::builder()
        .port(port)
        .env("AUTH__OPENID_CONNECT__FLOW", "implicit")
        .env("AUTH__OPENID_CONNECT__CUSTOM__ENABLED", "true")
        .env("AUTH__OPENID_CONNECT__CUSTOM__CLIENT_ID", APP.0)
        .env(
            "AUTH__OPENID_CONNECT__CUSTOM__DISCOVERY_URL",
            op.issuer.clone(),
        )
        .env("AUTH__OPENID_CONNECT__CUSTOM__RESPONSE_MODE", mode)
        .env(
            "AUTH__OPENID_CONNECT__CUSTOM__SCOPES",
            "openid,email,profile,groups",
        )
        .env("OAUTH_REDIRECT_URL", callback)
        .env("UPSTREAM_URL", upstream.url())
        .env("COOKIE_SECRET", SECRET)
        .wait_ready()
        .start()
        .await;
    (op, upstream, p)
}

#[tokio::test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "needs oidc-provider (npm): run scripts/test"
)]
async fn the_implicit_flow_with_form_post_signs_the_user_in() {
    let (op, _upstream, p) = implicit_setup("form_post").await;
    let browser = Browser::new();
    let first = browser.get(&p.url("/docs?page=2")).await;
    let authorize = url::Url::parse(&first.location().unwrap()).unwrap();
    let q: std::collections::HashMap<_, _> = authorize.query_pairs().into_owned().collect();
    assert_eq!(q["response_type"], "id_token");
    assert_eq!(q["response_mode"], "form_post");
    assert!(!q["nonce"].is_empty());
    assert!(!q.contains_key("code_challenge"));
    // The provider answers with an auto-submitting form that posts the ID token to the
    // callback; a browser without JavaScript submits it by hand, as this one does.
    let mut page = browser.follow(first).await;
    for _ in 0..4 {
        if page.body.contains("name=\"id_token\"") {
            break;
        }
        let (action, mut fields) = page.form();
        if page.body.contains("name=\"login\"") {
            fields.retain(|(k, _)| k != "login" && k != "password");
            fields.push(("login".into(), "alice".into()));
            fields.push(("password".into(), "x".into()));
        }
        let next = browser
            .request("POST", action.as_str(), Some(&fields))
            .await;
        page = browser.follow(next).await;
    }
    assert!(
        page.body.contains("name=\"id_token\""),
        "{page:?}\n{}",
        op.logs()
    );
    let landed = browser.submit(&page, &[]).await;
    assert_eq!(landed.status, 200, "{landed:?}\n{}", p.logs());
    assert_eq!(landed.url.as_str(), p.url("/docs?page=2"));
    let echo = landed.json();
    assert_eq!(
        echo_header(&echo, "x-forwarded-email"),
        Some("alice@example.com")
    );
    assert_eq!(echo_header(&echo, "x-forwarded-groups"), Some("eng"));

    // The same ID token replayed to the callback is refused (its login state is used).
    let (action, fields) = page.form();
    let replay = browser
        .request("POST", action.as_str(), Some(&fields))
        .await;
    assert_eq!(replay.status, 400, "{replay:?}");
}

#[tokio::test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "needs oidc-provider (npm): run scripts/test"
)]
async fn the_implicit_flow_with_a_fragment_goes_through_the_redirect_page() {
    let (op, _upstream, p) = implicit_setup("fragment").await;
    let browser = Browser::new();
    let first = browser.get(&p.url("/docs")).await;
    let authorize = url::Url::parse(&first.location().unwrap()).unwrap();
    let q: std::collections::HashMap<_, _> = authorize.query_pairs().into_owned().collect();
    assert_eq!(q["redirect_uri"], p.url("/v1/oauth/redirect/"));
    assert_eq!(q["response_mode"], "fragment");
    let back = op_sign_in_until(
        &browser,
        authorize.as_str(),
        "alice",
        &p.url("/v1/oauth/redirect/"),
    )
    .await;
    let fragment = back
        .fragment()
        .expect("the answer is in the fragment")
        .to_string();
    assert!(fragment.contains("id_token="), "{fragment}\n{}", op.logs());

    // The page at the redirect path posts the fragment to the callback on its own origin:
    // a fixed relative action, and a script allowed by a per-response nonce only.
    let page = browser.get(back.as_str()).await;
    assert_eq!(page.status, 200);
    let (action, _) = page.form();
    assert_eq!(action.as_str(), p.url("/v1/oauth/callback/"));
    let csp = page.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'nonce-"), "{csp}");
    assert!(page.body.contains("location.hash"), "{}", page.body);
    // What the script does: post the fragment's fields.
    let fields: Vec<(String, String)> = url::form_urlencoded::parse(fragment.as_bytes())
        .into_owned()
        .collect();
    let posted = browser
        .request("POST", action.as_str(), Some(&fields))
        .await;
    let landed = browser.follow(posted).await;
    assert_eq!(landed.status, 200, "{landed:?}\n{}", p.logs());
    assert_eq!(
        echo_header(&landed.json(), "x-forwarded-email"),
        Some("alice@example.com")
    );

    // The same answer brought by another browser is refused: its state names a login
    // that browser never started.
    let other = Browser::new();
    // Starts a login in this browser, with a fresh state and nonce of its own.
    other.get(&p.url("/")).await;
    let posted = other.request("POST", action.as_str(), Some(&fields)).await;
    assert_eq!(posted.status, 400, "{posted:?}");
}

/// A code-flow login never accepts an ID token in place of the code: the answer must be
/// the one the provider's flow produces.
#[tokio::test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "needs oidc-provider (npm): run scripts/test"
)]
async fn a_code_flow_login_refuses_an_id_token_instead_of_a_code() {
    let (op, _upstream, p) = rig(json!({}), &[]).await;
    // An ID token issued for the app itself, obtained outside any login Portcullis started.
    let id_token = cli_tokens(&op, APP, "mallory").await["id_token"]
        .as_str()
        .expect("an ID token")
        .to_string();
    let browser = Browser::new();
    let start = browser.get(&p.url("/")).await;
    let authorize = url::Url::parse(&start.location().unwrap()).unwrap();
    let state = authorize
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    let fields = vec![
        ("state".to_string(), state),
        ("id_token".to_string(), id_token),
    ];
    let answer = browser
        .request("POST", &p.url("/api/v1/auth/callback"), Some(&fields))
        .await;
    assert_eq!(answer.status, 400, "{answer:?}");
    assert!(
        answer.body.contains("no authorization code"),
        "{}",
        answer.body
    );
    assert!(browser.cookie("127.0.0.1", "session_token").is_none());
}

/// Two configured clients at one issuer: a bearer token is accepted by the one it was
/// issued for, whichever is listed first.
#[tokio::test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "needs oidc-provider (npm): run scripts/test"
)]
async fn bearer_tokens_find_their_client_among_several_at_one_issuer() {
    let op = provider("http://127.0.0.1:9/api/v1/auth/callback", json!({})).await;
    let p = Portcullis::builder()
        .env("AUTH__BEARER_TOKENS", "true")
        .env("AUTH__OPENID_CONNECT__CORP__ENABLED", "true")
        .env("AUTH__OPENID_CONNECT__CORP__CLIENT_ID", APP.0)
        .env(
            "AUTH__OPENID_CONNECT__CORP__DISCOVERY_URL",
            op.issuer.clone(),
        )
        .env("AUTH__OPENID_CONNECT__TEAM__ENABLED", "true")
        .env("AUTH__OPENID_CONNECT__TEAM__CLIENT_ID", CLI.0)
        .env(
            "AUTH__OPENID_CONNECT__TEAM__DISCOVERY_URL",
            op.issuer.clone(),
        )
        .env(
            "OAUTH_REDIRECT_URL",
            "http://127.0.0.1:9/api/v1/auth/callback",
        )
        .env("UPSTREAM_URL", "http://127.0.0.1:9")
        .env("COOKIE_SECRET", SECRET)
        .wait_ready()
        .start()
        .await;
    let team = cli_tokens(&op, CLI, "alice").await["id_token"]
        .as_str()
        .unwrap()
        .to_string();
    let me = get(
        &p.url("/api/v1/auth/me"),
        &[("authorization", format!("Bearer {team}"))],
    )
    .await;
    assert_eq!(me.status(), 200);
    let me: Value = me.json().await.unwrap();
    assert_eq!(me["provider"], "team");
    let other = cli_tokens(&op, OTHER, "alice").await["id_token"]
        .as_str()
        .unwrap()
        .to_string();
    let refused = get(
        &p.url("/api/v1/auth/me"),
        &[("authorization", format!("Bearer {other}"))],
    )
    .await;
    assert_eq!(refused.status(), 401);
}

/// The nonce binds an implicit-flow ID token to the login that asked for it: a genuine
/// token from the provider, for the right client, obtained with another nonce (by an
/// attacker, say) is refused even when posted with this browser's own state.
#[tokio::test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "needs oidc-provider (npm): run scripts/test"
)]
async fn an_implicit_id_token_with_another_nonce_is_refused() {
    let (op, _upstream, p) = implicit_setup("fragment").await;
    let page = p.url("/v1/oauth/redirect/");
    // The attacker's own authorization request, with a nonce of their choosing.
    let mut theirs = url::Url::parse(&format!("{}/auth", op.issuer)).unwrap();
    theirs
        .query_pairs_mut()
        .append_pair("client_id", APP.0)
        .append_pair("response_type", "id_token")
        .append_pair("response_mode", "fragment")
        .append_pair("scope", "openid email")
        .append_pair("redirect_uri", &page)
        .append_pair("state", "attacker-state")
        .append_pair("nonce", "attacker-nonce");
    let back = op_sign_in_until(&Browser::new(), theirs.as_str(), "mallory", &page).await;
    let id_token = url::form_urlencoded::parse(back.fragment().unwrap().as_bytes())
        .find(|(k, _)| k == "id_token")
        .map(|(_, v)| v.into_owned())
        .expect("an ID token");

    // The victim's browser starts a login; the attacker's token arrives with its state.
    let victim = Browser::new();
    let start = victim.get(&p.url("/")).await;
    let state = url::Url::parse(&start.location().unwrap())
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    let answer = victim
        .request(
            "POST",
            &p.url("/v1/oauth/callback/"),
            Some(&[("state".into(), state), ("id_token".into(), id_token)]),
        )
        .await;
    assert_eq!(answer.status, 401, "{answer:?}");
    assert!(victim.cookie("127.0.0.1", "session_token").is_none());
    assert!(p.wait_for_log("nonce does not match").await, "{}", p.logs());
}

/// A rig whose sessions are due for a refresh 2 s after their login, with one browser
/// signed in and a second login stopped just before its callback.
async fn refresh_due_rig() -> (
    OidcProvider,
    EchoUpstream,
    Portcullis,
    Browser,
    (Browser, url::Url),
) {
    let (op, upstream, p) = rig(
        json!({"accessTokenTtl": 60}),
        &[
            (
                "AUTH__OPENID_CONNECT__CORP__SCOPES",
                "openid,email,profile,offline_access",
            ),
            (
                "AUTH__OPENID_CONNECT__CORP__AUTH_URL_PARAMS__PROMPT",
                "consent",
            ),
            ("AUTH__REFRESH_BEFORE", "58s"),
        ],
    )
    .await;
    let signed_in = Browser::new();
    let landed = op_sign_in_app(&signed_in, &p, "alice").await;
    assert_eq!(landed.status, 200, "{landed:?}\n{}", p.logs());
    let pending = Browser::new();
    let callback = op_sign_in_until(
        &pending,
        &p.url("/reports"),
        "bob",
        &p.url("/api/v1/auth/callback"),
    )
    .await;
    (op, upstream, p, signed_in, (pending, callback))
}

/// A GET and how long it took.
async fn timed(browser: &Browser, url: &str) -> (Page, std::time::Duration) {
    let asked = std::time::Instant::now();
    let page = browser.get(url).await;
    (page, asked.elapsed())
}

#[tokio::test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "needs oidc-provider (npm): run scripts/test"
)]
async fn a_provider_that_is_down_ends_no_session_and_a_login_says_so() {
    let (op, _upstream, p, signed_in, (pending, callback)) = refresh_due_rig().await;
    op.signal("KILL");
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;

    // The session is due for a refresh the provider cannot give: it goes on.
    let (page, took) = timed(&signed_in, &p.url("/page/1")).await;
    assert_eq!(page.status, 200, "{page:?}\n{}", p.logs());
    assert!(took < std::time::Duration::from_secs(2), "{took:?}");
    assert!(
        p.wait_for_log("token refresh failed; keeping the session")
            .await,
        "{}",
        p.logs()
    );
    let (page, _) = timed(&signed_in, &p.url("/page/2")).await;
    assert_eq!(page.status, 200, "{page:?}");

    // A login that reaches its callback cannot redeem its code: a page says why.
    let (page, took) = timed(&pending, callback.as_str()).await;
    assert_eq!(page.status, 502, "{page:?}\n{}", p.logs());
    assert!(page.body.contains("identity provider"), "{}", page.body);
    assert!(took < std::time::Duration::from_secs(6), "{took:?}");
    // And the proxy lives on.
    assert_eq!(signed_in.get(&p.url("/page/3")).await.status, 200);
}

#[tokio::test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "needs oidc-provider (npm): run scripts/test"
)]
async fn a_provider_that_hangs_stalls_no_session_for_long_and_a_login_says_so() {
    let (op, _upstream, p, signed_in, (pending, callback)) = refresh_due_rig().await;
    // Stopped: the kernel still accepts connections; nothing answers.
    op.signal("STOP");
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;

    // The first request due for a refresh waits a few seconds for it, then goes on...
    let (page, took) = timed(&signed_in, &p.url("/page/1")).await;
    assert_eq!(page.status, 200, "{page:?}\n{}", p.logs());
    assert!(took < std::time::Duration::from_secs(5), "{took:?}");
    assert!(
        p.wait_for_log("did not refresh the session's tokens in time")
            .await,
        "{}",
        p.logs()
    );
    // ...and the next ones do not wait for the provider again.
    for i in 2..5 {
        let (page, took) = timed(&signed_in, &p.url(&format!("/page/{i}"))).await;
        assert_eq!(page.status, 200, "{page:?}");
        assert!(took < std::time::Duration::from_secs(1), "{took:?}");
    }

    // A login's callback waits for the token endpoint until the outbound timeout, then
    // a page says the provider did not answer.
    let (page, took) = timed(&pending, callback.as_str()).await;
    assert!(
        page.status == 502 || page.status == 504,
        "{page:?}\n{}",
        p.logs()
    );
    assert!(page.body.contains("identity provider"), "{}", page.body);
    assert!(took < std::time::Duration::from_secs(20), "{took:?}");
    op.signal("CONT");
    assert_eq!(signed_in.get(&p.url("/page/5")).await.status, 200);
}
