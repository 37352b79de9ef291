//! The identity provider ends sessions, end to end against real peers: oidc-provider's
//! back-channel logout reaching two replicas on one Redis, opaque access tokens
//! introspected at the provider (and refused once revoked there), a Shared Signals
//! transmitter written for the test in Node with `jose` (push and poll), and the admin
//! API on its own listener.
#![allow(clippy::unwrap_used)]

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use portcullis_testkit::prelude::*;
use serde_json::{Value, json};

const APP: (&str, &str) = ("portcullis-app", "portcullis-app-secret");
const ADMIN_TOKEN: &str = "admin-token-for-the-tests-0123456789-abcdef";
const PUSH_TOKEN: &str = "push-token-for-the-tests-0123456789";
const POLL_TOKEN: &str = "poll-token-for-the-tests-0123456789";

fn app_client(callbacks: &[String], backchannel: Option<String>) -> Value {
    let mut client = json!({
        "client_id": APP.0,
        "client_secret": APP.1,
        "redirect_uris": callbacks,
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
    });
    if let Some(uri) = backchannel {
        client["backchannel_logout_uri"] = json!(uri);
        client["backchannel_logout_session_required"] = json!(true);
    }
    client
}

fn callback(port: u16) -> String {
    format!("http://127.0.0.1:{port}/api/v1/auth/callback")
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
        .env("OAUTH_REDIRECT_URL", callback(port))
        .env("UPSTREAM_URL", upstream.url())
        .env(
            "COOKIE_SECRET",
            "session-control-test-cookie-secret-0123456789",
        );
    for (k, v) in env {
        b = b.env(k, *v);
    }
    b.wait_ready().start().await
}

/// The status of `GET /x` with the browser's session cookie of `p`'s host.
async fn status_with(cookie: &str, p: &Portcullis) -> u16 {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(p.url("/x"))
        .header("cookie", format!("session_token={cookie}"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn admin(method: &str, url: &str, token: Option<&str>) -> (u16, Value) {
    let mut req = reqwest::Client::new().request(method.parse().unwrap(), url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// The metrics text of the admin listener at `admin`.
async fn metrics_of(admin: &str) -> String {
    reqwest::get(format!("http://{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Waits until `check` holds, for at most `limit`.
async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "needs Redis, oidc-provider (npm): run scripts/test"
)]
async fn a_sign_out_at_the_provider_ends_the_session_on_every_replica() {
    let redis = portcullis_testkit::RedisServer::start();
    let upstream = EchoUpstream::start().await;
    let (port_a, port_b) = (free_port(), free_port());
    let op = OidcProvider::start_with(
        APP.0,
        APP.1,
        &[],
        json!({
            "backchannelLogout": true,
            "clients": [app_client(
                &[callback(port_a), callback(port_b)],
                Some(format!("http://127.0.0.1:{port_a}/api/v1/auth/backchannel-logout")),
            )],
        }),
    )
    .await;
    let redis_url = redis.url();
    let admin_a = format!("127.0.0.1:{}", free_port());
    let env = [
        ("SESSION__STORE", "redis"),
        ("SESSION__REDIS__URL", redis_url.as_str()),
    ];
    let mut env_a = env.to_vec();
    env_a.push(("ADMIN__LISTEN_ADDR", admin_a.as_str()));
    env_a.push(("ADMIN__TOKEN", ADMIN_TOKEN));
    let a = portcullis(&op, port_a, &upstream, &env_a).await;
    let b = portcullis(&op, port_b, &upstream, &env).await;

    let alice = Browser::new();
    assert_eq!(op_sign_in_app(&alice, &a, "alice").await.status, 200);
    let bob = Browser::new();
    assert_eq!(op_sign_in_app(&bob, &b, "bob").await.status, 200);
    let alice_cookie = alice.cookie("127.0.0.1", "session_token").unwrap();
    let bob_cookie = bob.cookie("127.0.0.1", "session_token").unwrap();
    for p in [&a, &b] {
        assert_eq!(status_with(&alice_cookie, p).await, 200);
    }

    // Alice signs out at the provider, which posts a logout token to replica A.
    let confirm = alice.navigate(&format!("{}/session/end", op.issuer)).await;
    let (action, mut fields) = confirm.form();
    fields.push(("logout".into(), "yes".into()));
    alice.request("POST", action.as_str(), Some(&fields)).await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            op.logs().contains("backchannel ok")
        })
        .await,
        "{}",
        op.logs()
    );
    for p in [&a, &b] {
        assert_ne!(
            status_with(&alice_cookie, p).await,
            200,
            "alice's session lives on"
        );
        assert_eq!(
            status_with(&bob_cookie, p).await,
            200,
            "bob's session ended"
        );
    }
    assert!(a.wait_for_log("back-channel logout: sessions ended").await);
    // The provider sends the token once; a replay of what it sent is refused.
    let metrics = metrics_of(&admin_a).await;
    assert!(
        metrics.contains("portcullis_sessions_ended_total{by=\"backchannel_logout\"} 1"),
        "{metrics}"
    );
}

/// oidc-provider's access tokens are opaque: Portcullis asks its introspection
/// endpoint, caches the answer briefly, and refuses a token revoked there.
#[tokio::test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "needs oidc-provider (npm): run scripts/test"
)]
async fn opaque_access_tokens_are_introspected_and_refused_once_revoked() {
    let upstream = EchoUpstream::start().await;
    let port = free_port();
    let admin_addr = format!("127.0.0.1:{}", free_port());
    let op = OidcProvider::start_with(
        APP.0,
        APP.1,
        &[],
        json!({"clients": [app_client(&[callback(port)], None)]}),
    )
    .await;
    let p = portcullis(
        &op,
        port,
        &upstream,
        &[
            ("AUTH__BEARER_TOKENS", "true"),
            ("AUTH__PASS_ACCESS_TOKEN", "true"),
            ("AUTH__INTROSPECTION_CACHE_TTL", "1s"),
            ("ADMIN__LISTEN_ADDR", &admin_addr),
            ("ADMIN__TOKEN", ADMIN_TOKEN),
        ],
    )
    .await;
    let browser = Browser::new();
    let landed = op_sign_in_app(&browser, &p, "carol").await;
    let token = echo_header(&landed.json(), "x-forwarded-access-token")
        .unwrap()
        .to_string();
    assert_eq!(
        token.matches('.').count(),
        0,
        "not an opaque token: {token}"
    );
    let with = |t: &str| {
        let t = t.to_string();
        let url = p.url("/me-as-api");
        async move {
            reqwest::Client::new()
                .get(url)
                .bearer_auth(t)
                .send()
                .await
                .unwrap()
        }
    };
    let ok = with(&token).await;
    assert_eq!(ok.status(), 200);
    let seen: Value = ok.json().await.unwrap();
    assert_eq!(echo_header(&seen, "x-forwarded-user"), Some("carol"));
    assert_eq!(
        echo_header(&seen, "x-forwarded-email"),
        Some("carol@example.com")
    );
    // Unknown tokens: 401 with the RFC 6750 error.
    let unknown = with("not-a-token-the-provider-issued").await;
    assert_eq!(unknown.status(), 401);
    assert!(
        unknown.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );
    // Revoked at the provider: refused once the cache time has passed.
    let revoked = reqwest::Client::new()
        .post(format!("{}/token/revocation", op.issuer))
        .basic_auth(APP.0, Some(APP.1))
        .form(&[
            ("token", token.as_str()),
            ("token_type_hint", "access_token"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    assert!(
        eventually(Duration::from_secs(4), || async {
            with(&token).await.status() == 401
        })
        .await,
        "a revoked token is still admitted"
    );
    // A user whose sessions an administrator ends: their opaque tokens issued before
    // are refused at once, cached introspection or not.
    let again = Browser::new();
    let landed = op_sign_in_app(&again, &p, "carol").await;
    let fresh = echo_header(&landed.json(), "x-forwarded-access-token")
        .unwrap()
        .to_string();
    assert_eq!(with(&fresh).await.status(), 200);
    let (status, _) = admin(
        "DELETE",
        &format!("http://{admin_addr}/api/v1/admin/sessions?user=carol%40example.com"),
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(with(&fresh).await.status(), 401);
}

/// Two providers, each asked about the same token string: each answer is cached under
/// its own provider (the cache key covers the provider and its introspection URL), so
/// the first provider's "inactive" never stands for the second's "active".
#[tokio::test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "needs oidc-provider (npm): run scripts/test"
)]
async fn one_providers_introspection_answer_is_never_taken_for_anothers() {
    let upstream = EchoUpstream::start().await;
    let port = free_port();
    let first = OidcProvider::start_with(
        APP.0,
        APP.1,
        &[],
        json!({"clients": [app_client(&[callback(port)], None)]}),
    )
    .await;
    let second = OidcProvider::start_with(
        "second-app",
        "second-app-secret",
        &[],
        json!({"clients": [{
            "client_id": "second-app", "client_secret": "second-app-secret",
            "redirect_uris": [callback(port)],
            "grant_types": ["authorization_code"], "response_types": ["code"],
        }]}),
    )
    .await;
    let p = portcullis(
        &first,
        port,
        &upstream,
        &[
            ("AUTH__BEARER_TOKENS", "true"),
            ("AUTH__PASS_ACCESS_TOKEN", "true"),
            ("AUTH__OPENID_CONNECT__SECOND__ENABLED", "true"),
            ("AUTH__OPENID_CONNECT__SECOND__CLIENT_ID", "second-app"),
            (
                "AUTH__OPENID_CONNECT__SECOND__CLIENT_SECRET",
                "second-app-secret",
            ),
            (
                "AUTH__OPENID_CONNECT__SECOND__DISCOVERY_URL",
                second.issuer.as_str(),
            ),
        ],
    )
    .await;
    // A token of the second provider: the first is asked first and says "inactive".
    let browser = Browser::new();
    let start = browser
        .get(&p.url("/api/v1/auth/login?provider=second"))
        .await;
    let at = start.location().unwrap();
    let back = op_sign_in_until(&browser, &at, "dora", &callback(port)).await;
    let landed = browser.navigate(back.as_str()).await;
    let token = echo_header(&landed.json(), "x-forwarded-access-token")
        .unwrap()
        .to_string();
    for round in 0..2 {
        let resp = reqwest::Client::new()
            .get(p.url("/api"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "round {round}: {}", p.logs());
        let seen: Value = resp.json().await.unwrap();
        assert_eq!(echo_header(&seen, "x-forwarded-user"), Some("dora"));
    }
}

/// The Node transmitter (tests/ssf/transmitter.mjs).
struct Transmitter {
    child: Child,
    output: Arc<Mutex<String>>,
    url: String,
}

impl Drop for Transmitter {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("transmitter output:\n{}", self.output.lock().unwrap());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Transmitter {
    async fn start(receiver: &str, audience: &str) -> Transmitter {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let port = free_port();
        let config = json!({
            "port": port, "receiver": receiver, "audience": audience,
            "pushToken": PUSH_TOKEN, "pollToken": POLL_TOKEN,
        });
        let mut child = Command::new("node")
            .arg(root.join("tests/ssf/transmitter.mjs"))
            .arg(config.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("node runs");
        let output = Arc::new(Mutex::new(String::new()));
        for pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let output = output.clone();
            std::thread::spawn(move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                    output.lock().unwrap().push_str(&format!("{line}\n"));
                }
            });
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        while !output.lock().unwrap().contains("listening ") {
            assert!(
                Instant::now() < deadline,
                "the transmitter did not start: {}",
                output.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Transmitter {
            child,
            output,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    async fn push(&self, spec: Value) -> (u16, Value) {
        let answer: Value = reqwest::Client::new()
            .post(format!("{}/test/push", self.url))
            .json(&spec)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (
            answer["status"].as_u64().unwrap() as u16,
            answer["body"].clone(),
        )
    }

    async fn queue(&self, spec: Value) -> String {
        let answer: Value = reqwest::Client::new()
            .post(format!("{}/test/queue", self.url))
            .json(&spec)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        answer["jti"].as_str().unwrap().to_string()
    }

    async fn acks(&self) -> Value {
        reqwest::get(format!("{}/test/acks", self.url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

const SESSION_REVOKED: &str = "https://schemas.openid.net/secevent/caep/event-type/session-revoked";
const CREDENTIAL_CHANGE: &str =
    "https://schemas.openid.net/secevent/caep/event-type/credential-change";
const ACCOUNT_DISABLED: &str =
    "https://schemas.openid.net/secevent/risc/event-type/account-disabled";
const ACCOUNT_ENABLED: &str = "https://schemas.openid.net/secevent/risc/event-type/account-enabled";
const ASSURANCE: &str =
    "https://schemas.openid.net/secevent/caep/event-type/assurance-level-change";
const VERIFICATION: &str = "https://schemas.openid.net/secevent/ssf/event-type/verification";

fn email(user: &str) -> Value {
    json!({"format": "email", "email": format!("{user}@example.com")})
}

#[tokio::test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "needs oidc-provider (npm), Node: run scripts/test"
)]
async fn security_events_pushed_by_a_transmitter_end_sessions_and_refuse_logins() {
    let upstream = EchoUpstream::start().await;
    let port = free_port();
    let public = format!("http://127.0.0.1:{port}");
    let transmitter = Transmitter::start(&format!("{public}/api/v1/auth/ssf/idp"), &public).await;
    let op = OidcProvider::start_with(
        APP.0,
        APP.1,
        &[],
        json!({"clients": [app_client(&[callback(port)], None)]}),
    )
    .await;
    let admin_p = format!("127.0.0.1:{}", free_port());
    let routes = json!([
        {"name": "admin", "match": {"path_prefix": "/admin"}, "allow": {"authenticated": true},
         "max_auth_age": "1h"},
        {"name": "rest", "match": {"path_prefix": "/"}, "allow": {"authenticated": true}},
    ])
    .to_string();
    let p = portcullis(
        &op,
        port,
        &upstream,
        &[
            ("PUBLIC_URL", public.as_str()),
            (
                "SSF__TRANSMITTERS__IDP__METADATA_URL",
                &format!("{}/.well-known/ssf-configuration", transmitter.url),
            ),
            ("SSF__TRANSMITTERS__IDP__PUSH_TOKEN", PUSH_TOKEN),
            ("ROUTES", routes.as_str()),
            ("ADMIN__LISTEN_ADDR", admin_p.as_str()),
            ("ADMIN__TOKEN", ADMIN_TOKEN),
        ],
    )
    .await;
    let sign_in = |user: &'static str| {
        let p = &p;
        async move {
            let browser = Browser::new();
            let page = op_sign_in_app(&browser, p, user).await;
            (browser, page.status)
        }
    };
    let (erin, status) = sign_in("erin").await;
    assert_eq!(status, 200);
    let (frank, _) = sign_in("frank").await;
    let erin_cookie = erin.cookie("127.0.0.1", "session_token").unwrap();
    let frank_cookie = frank.cookie("127.0.0.1", "session_token").unwrap();

    // Refused before anything is acted on: no or a wrong push token, a forged signature,
    // another audience or issuer, the wrong type, a replay.
    let revoke_erin = json!({"events": {SESSION_REVOKED: {}}, "sub_id": email("erin")});
    let mut wrong_token = revoke_erin.clone();
    wrong_token["token"] = json!("not-the-push-token-at-all");
    assert_eq!(transmitter.push(wrong_token).await.0, 401);
    for (what, change, err) in [
        ("another key", json!({"otherKey": true}), "invalid_key"),
        (
            "another audience",
            json!({"aud": "https://elsewhere.example"}),
            "invalid_audience",
        ),
        (
            "another issuer",
            json!({"iss": "https://evil.example"}),
            "invalid_issuer",
        ),
        ("not a SET", json!({"typ": "JWT"}), "invalid_request"),
        ("garbage", json!({"raw": "not.a.jwt"}), "invalid_request"),
        ("no events", json!({"events": {}}), "invalid_request"),
    ] {
        let mut spec = revoke_erin.clone();
        for (k, v) in change.as_object().unwrap() {
            spec[k] = v.clone();
        }
        let (status, body) = transmitter.push(spec).await;
        assert_eq!(status, 400, "{what}: {body}");
        assert_eq!(body["err"], err, "{what}: {body}");
        assert_eq!(
            status_with(&erin_cookie, &p).await,
            200,
            "{what} ended a session"
        );
    }
    let mut wrong_media = revoke_erin.clone();
    wrong_media["contentType"] = json!("application/json");
    assert_eq!(transmitter.push(wrong_media).await.0, 400);

    // Verification events are accepted and logged.
    let (status, _) = transmitter
        .push(json!({"events": {VERIFICATION: {"state": "check-123"}}}))
        .await;
    assert_eq!(status, 202);
    assert!(p.wait_for_log("check-123").await);

    // Assurance level change: the route that wants a fresh login steps up.
    assert_eq!(status_with(&erin_cookie, &p).await, 200);
    let (status, _) = transmitter
        .push(json!({"events": {ASSURANCE: {"namespace": "NIST-AAL", "current_level": "nist-aal1", "previous_level": "nist-aal2", "change_direction": "decrease"}},
                     "sub_id": email("erin")}))
        .await;
    assert_eq!(status, 202);
    let admin_page = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(p.url("/admin/panel"))
        .header("cookie", format!("session_token={erin_cookie}"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(
        admin_page.status(),
        401,
        "no step-up after the assurance changed"
    );
    assert_eq!(
        status_with(&erin_cookie, &p).await,
        200,
        "other routes need no step-up"
    );

    // Session revoked: erin's sessions end, frank's stay; a replay is refused.
    let spec = json!({"events": {SESSION_REVOKED: {"reason_admin": {"en": "test"}}}, "sub_id": email("erin"), "jti": "revoke-erin-1"});
    let (status, body) = transmitter.push(spec.clone()).await;
    assert_eq!(status, 202, "{body}");
    assert_ne!(status_with(&erin_cookie, &p).await, 200);
    assert_eq!(status_with(&frank_cookie, &p).await, 200);
    let (status, body) = transmitter.push(spec).await;
    assert_eq!(
        (status, body["err"].as_str()),
        (400, Some("invalid_request"))
    );

    // Account disabled (by issuer and subject): frank's session ends and he cannot sign
    // in again until the account is enabled.
    let frank_sub = json!({"format": "iss_sub", "iss": op.issuer, "sub": "frank"});
    let (status, _) = transmitter
        .push(json!({"events": {ACCOUNT_DISABLED: {"reason": "hijacking"}}, "sub_id": frank_sub}))
        .await;
    assert_eq!(status, 202);
    assert_ne!(status_with(&frank_cookie, &p).await, 200);
    let (_, status) = sign_in("frank").await;
    assert_eq!(status, 403, "a disabled account signed in");
    let (status, _) = transmitter
        .push(json!({"events": {ACCOUNT_ENABLED: {}}, "sub_id": frank_sub}))
        .await;
    assert_eq!(status, 202);
    let (_, status) = sign_in("frank").await;
    assert_eq!(status, 200);

    // Credential change, by an opaque subject (the provider's subject).
    let (gina, _) = sign_in("gina").await;
    let gina_cookie = gina.cookie("127.0.0.1", "session_token").unwrap();
    let (status, _) = transmitter
        .push(json!({"events": {CREDENTIAL_CHANGE: {"credential_type": "password", "change_type": "update"}},
                     "sub_id": {"format": "opaque", "id": "gina"}}))
        .await;
    assert_eq!(status, 202);
    assert_ne!(status_with(&gina_cookie, &p).await, 200);
    let metrics = metrics_of(&admin_p).await;
    assert!(
        metrics.contains("portcullis_sessions_ended_total{by=\"shared_signal\"} 3"),
        "{metrics}"
    );
}

#[tokio::test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "needs oidc-provider (npm), Node: run scripts/test"
)]
async fn security_events_are_polled_applied_and_acknowledged() {
    let upstream = EchoUpstream::start().await;
    let port = free_port();
    let public = format!("http://127.0.0.1:{port}");
    let transmitter = Transmitter::start("http://127.0.0.1:9/unused", &public).await;
    let op = OidcProvider::start_with(
        APP.0,
        APP.1,
        &[],
        json!({"clients": [app_client(&[callback(port)], None)]}),
    )
    .await;
    let p = portcullis(
        &op,
        port,
        &upstream,
        &[
            ("PUBLIC_URL", public.as_str()),
            (
                "SSF__TRANSMITTERS__IDP__METADATA_URL",
                &format!("{}/.well-known/ssf-configuration", transmitter.url),
            ),
            (
                "SSF__TRANSMITTERS__IDP__POLL_URL",
                &format!("{}/poll", transmitter.url),
            ),
            ("SSF__TRANSMITTERS__IDP__POLL_TOKEN", POLL_TOKEN),
            ("SSF__TRANSMITTERS__IDP__POLL_INTERVAL", "300ms"),
        ],
    )
    .await;
    let browser = Browser::new();
    assert_eq!(op_sign_in_app(&browser, &p, "hugo").await.status, 200);
    let cookie = browser.cookie("127.0.0.1", "session_token").unwrap();
    let good = transmitter
        .queue(json!({"events": {SESSION_REVOKED: {}}, "sub_id": email("hugo")}))
        .await;
    let forged = transmitter
        .queue(json!({"events": {SESSION_REVOKED: {}}, "sub_id": email("hugo"), "otherKey": true}))
        .await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            status_with(&cookie, &p).await != 200
        })
        .await,
        "the polled event did not end the session: {}",
        p.logs()
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            let acks = transmitter.acks().await;
            acks["acks"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a == good.as_str())
                && acks["errs"][forged.as_str()]["err"] == "invalid_key"
        })
        .await,
        "{}",
        transmitter.acks().await
    );
    // The push endpoint is not open for a poll-mode transmitter.
    let push = reqwest::Client::new()
        .post(p.url("/api/v1/auth/ssf/idp"))
        .bearer_auth(POLL_TOKEN)
        .header("content-type", "application/secevent+jwt")
        .body("x.y.z")
        .send()
        .await
        .unwrap();
    assert_eq!(push.status(), 404);
}

#[tokio::test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "needs Redis, oidc-provider (npm): run scripts/test"
)]
async fn the_admin_api_on_its_own_listener_ends_sessions_on_every_replica() {
    let redis = portcullis_testkit::RedisServer::start();
    let upstream = EchoUpstream::start().await;
    let (port_a, port_b) = (free_port(), free_port());
    let (admin_a, admin_b) = (free_port(), free_port());
    let op = OidcProvider::start_with(
        APP.0,
        APP.1,
        &[],
        json!({"clients": [app_client(&[callback(port_a), callback(port_b)], None)]}),
    )
    .await;
    let redis_url = redis.url();
    let listen_a = format!("127.0.0.1:{admin_a}");
    let listen_b = format!("127.0.0.1:{admin_b}");
    let common = [
        ("SESSION__STORE", "redis"),
        ("SESSION__REDIS__URL", redis_url.as_str()),
        ("ADMIN__TOKEN", ADMIN_TOKEN),
    ];
    let mut env_a = common.to_vec();
    env_a.push(("ADMIN__LISTEN_ADDR", listen_a.as_str()));
    let mut env_b = common.to_vec();
    env_b.push(("ADMIN__LISTEN_ADDR", listen_b.as_str()));
    let a = portcullis(&op, port_a, &upstream, &env_a).await;
    let b = portcullis(&op, port_b, &upstream, &env_b).await;

    let ivy = Browser::new();
    assert_eq!(op_sign_in_app(&ivy, &a, "ivy").await.status, 200);
    let cookie = ivy.cookie("127.0.0.1", "session_token").unwrap();
    let jack = Browser::new();
    assert_eq!(op_sign_in_app(&jack, &a, "jack").await.status, 200);
    let jack_cookie = jack.cookie("127.0.0.1", "session_token").unwrap();

    let list_b = format!("http://{listen_b}/api/v1/admin/sessions?user=ivy%40example.com");
    assert_eq!(admin("GET", &list_b, None).await.0, 401);
    assert_eq!(
        admin(
            "GET",
            &list_b,
            Some("a-wrong-token-of-the-same-kind-0123456789")
        )
        .await
        .0,
        401
    );
    // Replica B lists the session made on A.
    let (status, listed) = admin("GET", &list_b, Some(ADMIN_TOKEN)).await;
    assert_eq!(status, 200, "{listed}");
    let sessions = listed["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 1, "{listed}");
    assert_eq!(sessions[0]["provider"], "corp");
    assert_eq!(sessions[0]["client"], "127.0.0.1");
    assert!(!listed.to_string().contains(&cookie));
    // Nothing of the admin API on the public listener.
    let public = reqwest::Client::new()
        .get(b.url("/api/v1/admin/sessions?user=ivy%40example.com"))
        .bearer_auth(ADMIN_TOKEN)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_ne!(public.status(), 200);
    // Ended through B, refused on A at once.
    let (status, ended) = admin(
        "DELETE",
        &format!("http://{listen_b}/api/v1/admin/sessions?user=ivy"),
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(ended["ended"], 1);
    assert_ne!(status_with(&cookie, &a).await, 200);
    assert_eq!(status_with(&jack_cookie, &a).await, 200);
    assert!(b.wait_for_log("admin ended the sessions of a user").await);
    assert!(b.logs().contains("audit"), "{}", b.logs());
    // The admin listener serves health and metrics too.
    let health = reqwest::get(format!("http://{listen_a}/healthz"))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}

/// `portcullis check` names the URLs to register and what the provider announces.
#[tokio::test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "needs oidc-provider (npm), Node: run scripts/test"
)]
async fn check_names_the_logout_urls_and_what_the_provider_supports() {
    let op = OidcProvider::start_with(
        APP.0,
        APP.1,
        &[],
        // The redirect URL the configuration below names is registered: check probes it.
        json!({"backchannelLogout": true, "clients": [app_client(&["https://app.example.com/api/v1/auth/callback".to_string()], None)]}),
    )
    .await;
    let transmitter =
        Transmitter::start("http://127.0.0.1:9/unused", "https://app.example.com").await;
    let metadata = format!("{}/.well-known/ssf-configuration", transmitter.url);
    let env = [
        ("AUTH__OPENID_CONNECT__CORP__ENABLED", "true"),
        ("AUTH__OPENID_CONNECT__CORP__CLIENT_ID", APP.0),
        ("AUTH__OPENID_CONNECT__CORP__CLIENT_SECRET", APP.1),
        (
            "AUTH__OPENID_CONNECT__CORP__DISCOVERY_URL",
            op.issuer.as_str(),
        ),
        (
            "OAUTH_REDIRECT_URL",
            "https://app.example.com/api/v1/auth/callback",
        ),
        ("PUBLIC_URL", "https://app.example.com"),
        ("UPSTREAM_URL", "http://127.0.0.1:3000"),
        (
            "COOKIE_SECRET",
            "session-control-test-cookie-secret-0123456789",
        ),
        ("AUTH__BEARER_TOKENS", "true"),
        ("SSF__TRANSMITTERS__IDP__METADATA_URL", metadata.as_str()),
        ("SSF__TRANSMITTERS__IDP__PUSH_TOKEN", PUSH_TOKEN),
    ];
    // The peers are other processes: blocking this test's thread holds nothing up.
    let (code, out) = run_portcullis(&["check"], &env);
    assert_eq!(code, 0, "{out}");
    for wanted in [
        "backchannel_logout_uri https://app.example.com/api/v1/auth/backchannel-logout",
        "supports back-channel logout with sid",
        "opaque bearer tokens are introspected at",
        "push endpoint https://app.example.com/api/v1/auth/ssf/idp",
        "shared signals transmitter idp: issuer http://127.0.0.1:",
    ] {
        assert!(out.contains(wanted), "missing {wanted:?}:\n{out}");
    }
    // A transmitter that cannot be reached is a failure naming its key.
    let env = [
        ("OAUTH_ENABLED", "true"),
        ("OAUTH_PROVIDER", "oidc"),
        ("OAUTH_ISSUER_URL", op.issuer.as_str()),
        ("OAUTH_CLIENT_ID", APP.0),
        ("OAUTH_CLIENT_SECRET", APP.1),
        (
            "OAUTH_REDIRECT_URL",
            "https://app.example.com/api/v1/auth/callback",
        ),
        ("PUBLIC_URL", "https://app.example.com"),
        ("UPSTREAM_URL", "http://127.0.0.1:3000"),
        (
            "COOKIE_SECRET",
            "session-control-test-cookie-secret-0123456789",
        ),
        (
            "SSF__TRANSMITTERS__IDP__METADATA_URL",
            "http://127.0.0.1:9/.well-known/ssf-configuration",
        ),
        ("SSF__TRANSMITTERS__IDP__PUSH_TOKEN", PUSH_TOKEN),
    ];
    // The peers are other processes: blocking this test's thread holds nothing up.
    let (code, out) = run_portcullis(&["check"], &env);
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("FAIL  ssf.transmitters.idp.metadata_url"),
        "{out}"
    );
}
