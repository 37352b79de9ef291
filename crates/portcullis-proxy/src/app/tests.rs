//! The app in-process: requests built here go through [`App::handle`] exactly as the
//! server would hand them over, against the development provider and an upstream that
//! echoes what it receives, both served by this test on loopback. What the binary adds
//! (listening, TLS, signals) is tested end to end in `crates/portcullis/tests`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use portcullis_config::{Config, Sources};
use portcullis_devidp::DevIdp;
use serde_json::{Value, json};

use super::{App, ConnInfo};
use crate::inbound::RequestBody;

const SECRET: &str = "in-process-test-cookie-secret-0123456789";

/// An upstream that answers every request with what it received, as JSON.
struct Echo {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn echo(
    addr: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut headers = serde_json::Map::new();
    for (name, value) in req.headers() {
        if let Some(values) = headers
            .entry(name.as_str())
            .or_insert_with(|| json!([]))
            .as_array_mut()
        {
            values.push(json!(String::from_utf8_lossy(value.as_bytes())));
        }
    }
    let body = json!({
        "method": req.method().as_str(),
        "path": req.uri().path(),
        "query": req.uri().query(),
        "headers": headers,
        "upstream": addr.to_string(),
    });
    Ok(Response::new(Full::new(Bytes::from(body.to_string()))))
}

impl Echo {
    async fn start() -> Echo {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| echo(addr, req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Echo { addr, task }
    }
}

/// The app under test, the provider and the upstream it talks to.
struct Rig {
    app: Arc<App>,
    idp: Option<DevIdp>,
    _echo: Echo,
}

const CALLBACK: &str = "http://app.test/api/v1/auth/callback";

fn config(pairs: &[(&str, &str)]) -> Config {
    config_with(None, pairs)
}

/// A configuration from a YAML file (routes are YAML) and environment variables.
fn config_with(yaml: Option<&str>, pairs: &[(&str, &str)]) -> Config {
    let env = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let file = yaml.map(|text| {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "portcullis-app-test-{}-{n}.yaml",
            std::process::id()
        ));
        std::fs::write(&path, text).unwrap();
        path
    });
    let loaded = portcullis_config::load(&Sources {
        env,
        file: file.clone(),
        ..Sources::default()
    });
    if let Some(f) = file {
        let _ = std::fs::remove_file(f);
    }
    loaded.unwrap_or_else(|e| panic!("test configuration refused: {e}"))
}

async fn app_from(config: &Config) -> App {
    let http = portcullis_identity::http::client(&Default::default()).unwrap();
    App::new(config, http, 1).await.unwrap()
}

/// Open mode: no provider.
async fn open_rig(extra: &[(&str, &str)]) -> Rig {
    let echo = Echo::start().await;
    let upstream = format!("http://{}", echo.addr);
    let mut env = vec![("UPSTREAM_URL", upstream.as_str())];
    env.extend_from_slice(extra);
    Rig {
        app: Arc::new(app_from(&config(&env)).await),
        idp: None,
        _echo: echo,
    }
}

/// Authentication on, with the development provider; `extra` adds settings.
async fn rig(extra: &[(&str, &str)]) -> Rig {
    rig_with(None, extra).await
}

/// Like [`rig`], with a YAML file (for routes); `{upstream}` in it is the echo's URL.
async fn rig_with(yaml: Option<&str>, extra: &[(&str, &str)]) -> Rig {
    let echo = Echo::start().await;
    let idp = DevIdp::start(
        "127.0.0.1:0".parse().unwrap(),
        vec![portcullis_devidp::Client {
            id: "portcullis".into(),
            secret: Some("dev-secret".into()),
            redirect_uris: vec![CALLBACK.into()],
        }],
    )
    .await
    .unwrap();
    let upstream = format!("http://{}", echo.addr);
    let mut env = vec![
        ("OAUTH_ENABLED", "true"),
        ("OAUTH_PROVIDER", "oidc"),
        ("OAUTH_ISSUER_URL", idp.issuer()),
        ("OAUTH_CLIENT_ID", "portcullis"),
        ("OAUTH_CLIENT_SECRET", "dev-secret"),
        ("OAUTH_REDIRECT_URL", CALLBACK),
        ("COOKIE_SECRET", SECRET),
        ("UPSTREAM_URL", upstream.as_str()),
    ];
    env.extend_from_slice(extra);
    let yaml = yaml.map(|y| y.replace("{upstream}", &upstream));
    let app = app_from(&config_with(yaml.as_deref(), &env)).await;
    Rig {
        app: Arc::new(app),
        idp: Some(idp),
        _echo: echo,
    }
}

fn conn() -> ConnInfo {
    ConnInfo {
        peer: "192.0.2.10:40000".parse().unwrap(),
        tls: false,
        worker: 0,
    }
}

/// A request as a client would send it to `app.test`.
fn request(method: &str, target: &str, headers: &[(&str, &str)]) -> Request<RequestBody> {
    let mut b = Request::builder()
        .method(method)
        .uri(target)
        .header("host", "app.test");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(RequestBody::empty()).unwrap()
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&self.body)))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn location(&self) -> String {
        self.headers["location"].to_str().unwrap().to_string()
    }

    /// `name=value` of each `Set-Cookie`.
    fn cookies(&self) -> Vec<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_string())
            .collect()
    }

    /// What the upstream saw, for a forwarded request.
    fn seen_header(&self, name: &str) -> Option<Vec<String>> {
        self.json()["headers"].get(name).map(|v| {
            v.as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap().to_string())
                .collect()
        })
    }
}

async fn call(app: &App, mut req: Request<RequestBody>) -> Answer {
    let resp = app.handle(&conn(), &mut req).await;
    let (parts, body) = resp.into_parts();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

/// Signs `user` in through the development provider and returns the session cookie
/// (`session_token=...`).
async fn sign_in(r: &Rig, user: &str, groups: &str) -> String {
    match try_sign_in(r, user, groups).await {
        Ok(cookie) => cookie,
        Err(a) => panic!("login of {user} failed: {} {}", a.status, a.text()),
    }
}

/// Like [`sign_in`]; the callback's answer when it did not sign the user in.
async fn try_sign_in(r: &Rig, user: &str, groups: &str) -> Result<String, Answer> {
    let started = call(&r.app, request("GET", "/start", &[("accept", "text/html")])).await;
    at_provider(r, started, user, groups, "/start").await
}

/// Completes a login `started` (the 302 to the provider) as `user`; the session cookie,
/// or the callback's answer when it did not sign the user in. `lands_on` is where the
/// login returns to.
async fn at_provider(
    r: &Rig,
    started: Answer,
    user: &str,
    groups: &str,
    lands_on: &str,
) -> Result<String, Answer> {
    assert_eq!(started.status, StatusCode::FOUND, "{}", started.text());
    let login_cookie = started
        .cookies()
        .into_iter()
        .find(|c| c.starts_with("portcullis_login_"))
        .expect("a login cookie");
    // The provider's form, submitted with the authorization request it was shown with.
    let authorize = url::Url::parse(&started.location()).unwrap();
    let mut form: HashMap<String, String> = authorize.query_pairs().into_owned().collect();
    form.insert("username".into(), user.into());
    form.insert("groups".into(), groups.into());
    let back = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(authorize.as_str().split('?').next().unwrap())
        .form(&form)
        .send()
        .await
        .unwrap();
    let callback = url::Url::parse(back.headers()["location"].to_str().unwrap()).unwrap();
    assert_eq!(callback.path(), "/api/v1/auth/callback");
    let done = call(
        &r.app,
        request(
            "GET",
            &format!("{}?{}", callback.path(), callback.query().unwrap()),
            &[("cookie", &login_cookie)],
        ),
    )
    .await;
    if done.status != StatusCode::FOUND {
        return Err(done);
    }
    assert_eq!(done.location(), lands_on);
    Ok(done
        .cookies()
        .into_iter()
        .find(|c| c.starts_with("session_token="))
        .expect("a session cookie"))
}

async fn get_as(r: &Rig, cookie: &str, path: &str) -> Answer {
    call(
        &r.app,
        request(
            "GET",
            path,
            &[("cookie", cookie), ("accept", "application/json")],
        ),
    )
    .await
}

/// Every spelling a client might use for an identity header.
const FORGED: &[&str] = &[
    "x-forwarded-user",
    "X_Forwarded_User",
    "x-forwarded-email",
    "x_forwarded_email",
    "x-forwarded-preferred-username",
    "X-FORWARDED_PREFERRED-USERNAME",
    "x-forwarded-groups",
    "x_forwarded_groups",
    "x-forwarded-provider",
    "x-forwarded-access-token",
    "x-auth-request-user",
    "x_auth_request_email",
    "x-auth-request-preferred-username",
    "x-auth-request-groups",
    "x-auth-request-access-token",
];

#[tokio::test]
async fn open_mode_admits_without_identity_and_strips_forged_headers() {
    let r = open_rig(&[]).await;
    let headers: Vec<(&str, &str)> = FORGED.iter().map(|n| (*n, "forged")).collect();
    let a = call(&r.app, request("GET", "/x", &headers)).await;
    assert_eq!(a.status, StatusCode::OK);
    let seen = a.json();
    for name in FORGED {
        let lower = name.to_ascii_lowercase();
        assert!(
            seen["headers"].get(lower.as_str()).is_none(),
            "{name}: {seen}"
        );
    }
    assert_eq!(seen["path"], "/x");
}

#[tokio::test]
async fn a_browser_without_a_session_is_sent_to_its_provider() {
    let r = rig(&[]).await;
    let a = call(
        &r.app,
        request("GET", "/reports?q=1", &[("accept", "text/html")]),
    )
    .await;
    assert_eq!(a.status, StatusCode::FOUND);
    let to = url::Url::parse(&a.location()).unwrap();
    assert!(to.as_str().starts_with(r.idp.as_ref().unwrap().issuer()));
    let q: HashMap<_, _> = to.query_pairs().into_owned().collect();
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["redirect_uri"], CALLBACK);
    assert!(q.contains_key("state") && q.contains_key("nonce"));
    let cookie = a
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .find(|c| c.starts_with("portcullis_login_"))
        .unwrap();
    assert!(cookie.contains("HttpOnly") && cookie.contains("Path=/api/v1/auth/callback"));
}

#[tokio::test]
async fn an_api_client_without_a_session_gets_401_json() {
    let r = rig(&[]).await;
    let a = call(
        &r.app,
        request("POST", "/api/data", &[("accept", "application/json")]),
    )
    .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_eq!(a.json()["error"], "unauthenticated");
    assert!(a.headers.contains_key("www-authenticate"));
    // A browser that is not navigating (a form post) gets the page, not a redirect.
    let b = call(
        &r.app,
        request("POST", "/api/data", &[("accept", "text/html")]),
    )
    .await;
    assert_eq!(b.status, StatusCode::UNAUTHORIZED);
    assert!(b.text().contains("Sign in required"));
}

#[tokio::test]
async fn a_signed_in_user_is_admitted_with_the_identity_portcullis_vouches_for() {
    let r = rig(&[]).await;
    let cookie = sign_in(&r, "alice", "staff, ops").await;
    let mut headers: Vec<(&str, &str)> = FORGED.iter().map(|n| (*n, "forged")).collect();
    headers.push(("cookie", &cookie));
    let a = call(&r.app, request("GET", "/x", &headers)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert!(a.seen_header("x-forwarded-user").unwrap()[0].starts_with("dev-"));
    assert_eq!(
        a.seen_header("x-forwarded-email").unwrap(),
        vec!["alice@example.com"]
    );
    assert_eq!(
        a.seen_header("x-forwarded-preferred-username").unwrap(),
        vec!["alice"]
    );
    assert_eq!(
        a.seen_header("x-forwarded-groups").unwrap(),
        vec!["staff,ops"]
    );
    assert_eq!(a.seen_header("x-forwarded-provider").unwrap(), vec!["oidc"]);
    for name in [
        "x-forwarded-access-token",
        "x-auth-request-user",
        "x-auth-request-email",
        "x-auth-request-preferred-username",
        "x-auth-request-groups",
        "x-auth-request-access-token",
    ] {
        assert!(a.seen_header(name).is_none(), "{name} reached the app");
    }
    // Portcullis's own cookie never reaches the app.
    assert!(a.seen_header("cookie").is_none());
}

#[tokio::test]
async fn a_user_outside_the_allow_list_is_refused_at_login_with_the_reason() {
    let r = rig(&[("AUTH__ALLOWED_GROUPS", "admins")]).await;
    let refused = try_sign_in(&r, "carol", "staff")
        .await
        .expect_err("refused");
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(
        refused.text().contains("nor in one of its allowed groups"),
        "{}",
        refused.text()
    );
    // A member of the group gets in.
    let cookie = sign_in(&r, "dave", "admins").await;
    assert_eq!(get_as(&r, &cookie, "/x").await.status, StatusCode::OK);
}

#[tokio::test]
async fn forward_auth_admits_with_the_answer_headers_a_proxy_copies() {
    let r = rig(&[]).await;
    let cookie = sign_in(&r, "erin", "").await;
    let a = call(
        &r.app,
        request("GET", "/api/v1/auth/verify", &[("cookie", &cookie)]),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.headers["x-auth-request-email"], "erin@example.com");
    assert_eq!(a.headers["x-auth-request-preferred-username"], "erin");
    // Every answer header is present, even empty, so a forged copy is overwritten.
    assert_eq!(a.headers["x-auth-request-groups"], "");
    assert!(
        !a.headers.contains_key("set-cookie"),
        "the check never sets cookies"
    );
}

#[tokio::test]
async fn forward_auth_narrows_by_location_and_never_widens() {
    let r = rig(&[("AUTH__ALLOWED_GROUPS", "staff,admins")]).await;
    let cookie = sign_in(&r, "fay", "staff").await;
    let check = |query: &'static str| {
        let cookie = cookie.clone();
        let app = r.app.clone();
        async move {
            call(
                &app,
                request(
                    "GET",
                    &format!("/api/v1/auth/verify{query}"),
                    &[("cookie", &cookie), ("accept", "application/json")],
                ),
            )
            .await
        }
    };
    assert_eq!(check("").await.status, StatusCode::OK);
    assert_eq!(check("?allowed_groups=staff").await.status, StatusCode::OK);
    let denied = check("?allowed_groups=admins").await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    assert_eq!(denied.json()["error"], "forbidden");
    assert_eq!(
        check("?allowed_emails=fay@example.com").await.status,
        StatusCode::OK
    );
    assert_eq!(
        check("?allowed_group=staff").await.status,
        StatusCode::BAD_REQUEST,
        "a misspelt parameter must not open the location"
    );
}

#[tokio::test]
async fn forward_auth_without_a_session_is_401_with_the_login_url() {
    let r = rig(&[]).await;
    let a = call(
        &r.app,
        request(
            "GET",
            "/api/v1/auth/verify",
            &[("x-original-url", "http://app.test/dash?x=1")],
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    let login = a.headers["x-auth-request-login"].to_str().unwrap();
    assert_eq!(
        login,
        "http://app.test/api/v1/auth/login?rd=%2Fdash%3Fx%3D1"
    );
}

#[tokio::test]
async fn forward_auth_in_open_mode_lets_everything_through() {
    let r = open_rig(&[]).await;
    let a = call(&r.app, request("GET", "/api/v1/auth/verify", &[])).await;
    assert_eq!(a.status, StatusCode::OK);
}

#[tokio::test]
async fn a_forged_session_cookie_is_challenged_and_cleared() {
    let r = rig(&[]).await;
    for forged in [
        "session_token=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "session_token=../../etc/passwd",
        "session_token=",
        "session_token=\"quoted\"",
    ] {
        let a = call(
            &r.app,
            request(
                "GET",
                "/x",
                &[("cookie", forged), ("accept", "application/json")],
            ),
        )
        .await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{forged}");
    }
    let a = call(
        &r.app,
        request(
            "GET",
            "/x",
            &[
                (
                    "cookie",
                    "session_token=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                ),
                ("accept", "application/json"),
            ],
        ),
    )
    .await;
    assert!(a.cookies().contains(&"session_token=".to_string()));
}

#[tokio::test]
async fn own_endpoints_answer_405_with_the_methods_they_take() {
    let r = rig(&[]).await;
    for e in super::endpoints::FIXED {
        // Without identity_jwt the keys' path is the app's, and without transmitters
        // the shared signals path.
        if e.allow.is_empty()
            || e.own == super::endpoints::Own::Jwks
            || e.own == super::endpoints::Own::Ssf
        {
            continue;
        }
        let a = call(
            &r.app,
            request("DELETE", e.path, &[("accept", "application/json")]),
        )
        .await;
        assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED, "{}", e.path);
        assert_eq!(a.headers["allow"], e.allow, "{}", e.path);
    }
    let a = call(&r.app, request("PUT", "/api/v1/auth/callback", &[])).await;
    assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(a.headers["allow"], "GET, HEAD, POST");
}

#[tokio::test]
async fn every_identity_header_is_removed_in_every_spelling_before_the_app() {
    let r = rig(&[]).await;
    let cookie = sign_in(&r, "gus", "").await;
    for name in FORGED {
        for spelling in [
            name.to_string(),
            name.to_ascii_uppercase(),
            name.replace('-', "_"),
            name.replace('_', "-"),
        ] {
            let a = call(
                &r.app,
                request("GET", "/x", &[("cookie", &cookie), (&spelling, "forged")]),
            )
            .await;
            let seen = a.json();
            let text = seen["headers"].to_string();
            assert!(
                !text.contains("forged"),
                "{spelling} reached the app: {text}"
            );
        }
    }
}

#[tokio::test]
async fn portcullis_cookies_never_reach_the_app_and_the_apps_do() {
    let r = rig(&[]).await;
    let cookie = sign_in(&r, "hana", "").await;
    let line = format!("app=1; {cookie}; portcullis_login_AAAAAAAAAAAAAAAA=x; theme=dark");
    let a = call(&r.app, request("GET", "/x", &[("cookie", &line)])).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.seen_header("cookie").unwrap(), vec!["app=1; theme=dark"]);
}

#[tokio::test]
async fn bearer_tokens_that_fail_are_401_without_falling_back_to_the_cookie() {
    let r = rig(&[("AUTH__BEARER_TOKENS", "true")]).await;
    let cookie = sign_in(&r, "ivan", "").await;
    let a = call(
        &r.app,
        request(
            "GET",
            "/x",
            &[("cookie", &cookie), ("authorization", "Bearer not-a-jwt")],
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    let challenge = a.headers["www-authenticate"].to_str().unwrap();
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    // A token the provider signed for this client is admitted.
    let idp = r.idp.as_ref().unwrap();
    let now = portcullis_core::time::unix_now();
    let token = idp.sign(&json!({
        "iss": idp.issuer(), "aud": "portcullis", "sub": "api-client-1",
        "iat": now, "exp": now + 300, "email": "svc@example.com",
    }));
    let a = call(
        &r.app,
        request(
            "GET",
            "/x",
            &[("authorization", &format!("Bearer {token}"))],
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(
        a.seen_header("x-forwarded-user").unwrap(),
        vec!["api-client-1"]
    );
}

#[tokio::test]
async fn logout_ends_the_session_and_me_reports_it() {
    let r = rig(&[]).await;
    let cookie = sign_in(&r, "jo", "crew").await;
    let me = get_as(&r, &cookie, "/api/v1/auth/me").await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.json()["username"], "jo");
    assert_eq!(me.json()["groups"], json!(["crew"]));
    let out = call(
        &r.app,
        request(
            "POST",
            "/api/v1/auth/logout",
            &[("cookie", &cookie), ("accept", "application/json")],
        ),
    )
    .await;
    assert_eq!(out.status, StatusCode::OK);
    assert_eq!(out.json()["sessions_ended"], 1);
    assert_eq!(
        get_as(&r, &cookie, "/x").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get_as(&r, &cookie, "/api/v1/auth/me").await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn logout_everywhere_ends_every_session_of_the_user_only() {
    let r = rig(&[]).await;
    let laptop = sign_in(&r, "kim", "").await;
    let phone = sign_in(&r, "kim", "").await;
    let other = sign_in(&r, "lee", "").await;
    let out = call(
        &r.app,
        request(
            "POST",
            "/api/v1/auth/logout?everywhere=true",
            &[("cookie", &laptop), ("accept", "application/json")],
        ),
    )
    .await;
    assert_eq!(out.json()["sessions_ended"], 2);
    assert_eq!(
        get_as(&r, &phone, "/x").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(get_as(&r, &other, "/x").await.status, StatusCode::OK);
}

#[tokio::test]
async fn status_health_and_readiness_answer() {
    let r = rig(&[]).await;
    let status = call(&r.app, request("GET", "/api/v1/auth/status", &[])).await;
    assert_eq!(status.json(), json!({"enabled": true}));
    let open = open_rig(&[]).await;
    let status = call(&open.app, request("GET", "/api/v1/auth/status", &[])).await;
    assert_eq!(status.json(), json!({"enabled": false}));
    let health = call(&r.app, request("GET", "/healthz", &[])).await;
    assert_eq!(
        (health.status, health.text().as_str()),
        (StatusCode::OK, "ok\n")
    );
    // Metrics are the admin listener's: on the public one, /metrics is the app's path.
    let metrics = call(&r.app, request("GET", "/metrics", &[])).await;
    assert!(!metrics.text().contains("portcullis_requests_total"));
    let admin = r
        .app
        .handle_admin(
            &conn(),
            Request::builder()
                .uri("/metrics")
                .body(RequestBody::empty())
                .unwrap(),
        )
        .await;
    let text = admin.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&text).contains("portcullis_requests_total"));
}

#[tokio::test]
async fn the_path_the_app_gets_is_the_normalized_one() {
    let r = open_rig(&[]).await;
    let a = call(&r.app, request("GET", "/a/./b/../c//d?x=%2F", &[])).await;
    assert_eq!(a.json()["path"], "/a/c/d");
    assert_eq!(a.json()["query"], "x=%2F");
    let refused = call(&r.app, request("GET", "/a/%2e%2e%2fb", &[])).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn requests_without_a_valid_host_are_refused_before_anything_else() {
    let r = rig(&[]).await;
    let mut req = request("GET", "/x", &[]);
    req.headers_mut().remove("host");
    assert_eq!(call(&r.app, req).await.status, StatusCode::BAD_REQUEST);
    let mut req = request("GET", "/api/v1/auth/status", &[]);
    req.headers_mut()
        .insert("host", http::HeaderValue::from_static("a,b"));
    assert_eq!(call(&r.app, req).await.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_callback_without_a_login_under_way_reads_no_body() {
    let r = rig(&[]).await;
    let mut req = request(
        "POST",
        "/api/v1/auth/callback",
        &[("content-type", "application/x-www-form-urlencoded")],
    );
    *req.body_mut() = RequestBody::full("state=x&code=y");
    let a = call(&r.app, req).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(
        a.text().contains("not started in this browser"),
        "{}",
        a.text()
    );
}

// Refreshing tokens: the dev provider issues refresh tokens for `offline_access`.

const OFFLINE: (&str, &str) = ("OAUTH_SCOPES", "openid,email,profile,offline_access");

#[tokio::test]
async fn a_session_is_refreshed_before_its_access_token_expires() {
    let r = rig(&[OFFLINE, ("AUTH__REFRESH_BEFORE", "60s")]).await;
    let idp = r.idp.as_ref().unwrap();
    idp.set_token_lifetime(Duration::from_secs(30));
    let cookie = sign_in(&r, "max", "").await;
    // The access token expires within the refresh window: the next request refreshes,
    // and the new token (long-lived) needs no refresh after it.
    idp.set_token_lifetime(Duration::from_secs(3600));
    assert_eq!(get_as(&r, &cookie, "/x").await.status, StatusCode::OK);
    assert_eq!(idp.refreshes(), 1);
    assert_eq!(get_as(&r, &cookie, "/x").await.status, StatusCode::OK);
    assert_eq!(idp.refreshes(), 1);
}

#[tokio::test]
async fn a_refresh_the_provider_refuses_ends_the_session() {
    let r = rig(&[OFFLINE, ("AUTH__REFRESH_BEFORE", "60s")]).await;
    let idp = r.idp.as_ref().unwrap();
    idp.set_token_lifetime(Duration::from_secs(30));
    let cookie = sign_in(&r, "ned", "").await;
    idp.revoke_refresh_tokens();
    assert_eq!(
        get_as(&r, &cookie, "/x").await.status,
        StatusCode::UNAUTHORIZED
    );
    // Gone for good, not only for that request.
    assert_eq!(
        get_as(&r, &cookie, "/x").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(idp.refreshes(), 0);
}

#[tokio::test]
async fn concurrent_requests_refresh_once() {
    let r = rig(&[OFFLINE, ("AUTH__REFRESH_BEFORE", "60s")]).await;
    let idp = r.idp.as_ref().unwrap();
    idp.set_token_lifetime(Duration::from_secs(30));
    let cookie = sign_in(&r, "ola", "").await;
    idp.set_token_lifetime(Duration::from_secs(3600));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let app = r.app.clone();
        let cookie = cookie.clone();
        tasks.push(tokio::spawn(async move {
            call(
                &app,
                request(
                    "GET",
                    "/x",
                    &[("cookie", &cookie), ("accept", "application/json")],
                ),
            )
            .await
            .status
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(
        idp.refreshes(),
        1,
        "a refresh token used twice may revoke the grant"
    );
}

#[tokio::test]
async fn an_unreachable_provider_does_not_end_the_session() {
    let mut r = rig(&[OFFLINE, ("AUTH__REFRESH_BEFORE", "60s")]).await;
    r.idp
        .as_ref()
        .unwrap()
        .set_token_lifetime(Duration::from_secs(30));
    let cookie = sign_in(&r, "pia", "").await;
    drop(r.idp.take());
    tokio::time::sleep(Duration::from_millis(50)).await;
    // The refresh fails for a reason that is not a refusal: keep serving the session.
    assert_eq!(get_as(&r, &cookie, "/x").await.status, StatusCode::OK);
}

#[tokio::test]
async fn without_a_refresh_token_nothing_is_refreshed() {
    let r = rig(&[("AUTH__REFRESH_BEFORE", "60s")]).await;
    let idp = r.idp.as_ref().unwrap();
    idp.set_token_lifetime(Duration::from_secs(30));
    let cookie = sign_in(&r, "quinn", "").await;
    assert_eq!(get_as(&r, &cookie, "/x").await.status, StatusCode::OK);
    assert_eq!(idp.refreshes(), 0);
}

// Routes: the table decides, the path it matched is the path forwarded.

const ROUTES: &str = r#"
routes:
  - name: health
    match: {path: /status}
    public: true
  - name: admin
    match: {path_prefix: /admin, methods: [GET, POST]}
    allow: {groups: [admins]}
    deny: {emails: [mallory@example.com]}
  - name: mail
    match: {path_prefix: /mail}
    allow: {domains: [example.com], emails: [guest@other.org]}
  - name: verified
    match: {path_prefix: /verified}
    allow: {claims: {email_verified: true}}
  - name: fresh
    match: {path_prefix: /fresh}
    allow: {authenticated: true}
    max_auth_age: 2s
  - name: params
    match: {path_prefix: /legacy}
    allow: {authenticated: true}
    path_parameters: true
  - name: everything
    match: {path_prefix: /app}
    allow: {authenticated: true}
  - match: {path: /start}
    allow: {authenticated: true}
"#;

async fn get_html(r: &Rig, cookie: &str, path: &str) -> Answer {
    call(
        &r.app,
        request("GET", path, &[("cookie", cookie), ("accept", "text/html")]),
    )
    .await
}

#[tokio::test]
async fn routes_admit_by_group_domain_email_and_claim_and_deny_wins() {
    let r = rig_with(Some(ROUTES), &[]).await;
    let admin = sign_in(&r, "ada", "admins").await;
    let staff = sign_in(&r, "bob", "staff").await;
    let mallory = sign_in(&r, "mallory", "admins").await;
    assert_eq!(
        get_as(&r, &admin, "/admin/users").await.status,
        StatusCode::OK
    );
    let refused = get_as(&r, &staff, "/admin/users").await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(
        refused.json()["message"]
            .as_str()
            .unwrap()
            .contains("(admin)")
    );
    // In the group, but named in deny.
    assert_eq!(
        get_as(&r, &mallory, "/admin").await.status,
        StatusCode::FORBIDDEN
    );
    // Methods: DELETE is not among the route's, and no later route takes /admin.
    let delete = call(
        &r.app,
        request(
            "DELETE",
            "/admin/x",
            &[("cookie", &admin), ("accept", "application/json")],
        ),
    )
    .await;
    assert_eq!(delete.status, StatusCode::NOT_FOUND);
    // Domain (every dev user is name@example.com) and the boolean claim.
    assert_eq!(
        get_as(&r, &staff, "/mail/inbox").await.status,
        StatusCode::OK
    );
    assert_eq!(get_as(&r, &staff, "/verified").await.status, StatusCode::OK);
    // Segment boundaries: /administrator is not under /admin, and nothing takes it.
    assert_eq!(
        get_as(&r, &admin, "/administrator").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn a_public_route_needs_no_login_and_still_strips_identity_headers() {
    let r = rig_with(Some(ROUTES), &[]).await;
    let a = call(
        &r.app,
        request(
            "GET",
            "/status",
            &[("x-forwarded-user", "admin"), ("accept", "text/html")],
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.seen_header("x-forwarded-user").is_none());
    // Exact: /status/x is not the public route.
    let b = call(
        &r.app,
        request("GET", "/status/x", &[("accept", "application/json")]),
    )
    .await;
    assert_eq!(b.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_request_no_route_takes_is_refused_not_forwarded() {
    let r = rig_with(Some(ROUTES), &[]).await;
    let admin = sign_in(&r, "ada", "admins").await;
    let a = get_as(&r, &admin, "/elsewhere").await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert!(
        a.json().get("upstream").is_none(),
        "forwarded: {}",
        a.text()
    );
}

#[tokio::test]
async fn an_old_login_steps_up_and_a_fresh_one_is_admitted() {
    let r = rig_with(Some(ROUTES), &[]).await;
    let cookie = sign_in(&r, "cy", "").await;
    assert_eq!(get_as(&r, &cookie, "/fresh").await.status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(3100)).await;
    // An API call hears RFC 9470's answer.
    let api = get_as(&r, &cookie, "/fresh").await;
    assert_eq!(api.status, StatusCode::UNAUTHORIZED);
    let challenge = api.headers["www-authenticate"].to_str().unwrap();
    assert!(
        challenge.contains("error=\"insufficient_user_authentication\""),
        "{challenge}"
    );
    assert!(challenge.contains("max_age=\"2\""), "{challenge}");
    assert!(
        api.json()["login_url"]
            .as_str()
            .unwrap()
            .contains("max_age=2")
    );
    // A browser is sent to sign in again, and comes back to the same page.
    let page = get_html(&r, &cookie, "/fresh/page?x=1").await;
    assert_eq!(page.status, StatusCode::FOUND);
    let to = url::Url::parse(&page.location()).unwrap();
    let q: HashMap<_, _> = to.query_pairs().into_owned().collect();
    assert_eq!(q.get("max_age").map(String::as_str), Some("2"));
    assert_eq!(q.get("prompt").map(String::as_str), Some("login"));
    let fresh = at_provider(&r, page, "cy", "", "/fresh/page?x=1")
        .await
        .unwrap_or_else(|a| panic!("{} {}", a.status, a.text()));
    assert_eq!(
        get_as(&r, &fresh, "/fresh/page").await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn path_parameters_pass_only_where_a_route_accepts_them() {
    let r = rig_with(Some(ROUTES), &[]).await;
    let cookie = sign_in(&r, "dee", "").await;
    assert_eq!(
        get_as(&r, &cookie, "/app/a;jsessionid=1").await.status,
        StatusCode::BAD_REQUEST
    );
    let ok = get_as(&r, &cookie, "/legacy/a;jsessionid=1").await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(ok.json()["path"], "/legacy/a;jsessionid=1");
}

#[tokio::test]
async fn a_route_can_have_its_own_upstream() {
    let other = Echo::start().await;
    let yaml = format!(
        "routes:\n  - match: {{path_prefix: /api}}\n    allow: {{authenticated: true}}\n    upstream_url: http://{}\n  - match: {{path_prefix: /}}\n    allow: {{authenticated: true}}\n",
        other.addr
    );
    let r = rig_with(Some(&yaml), &[]).await;
    let cookie = sign_in(&r, "eve", "").await;
    let api = get_as(&r, &cookie, "/api/x").await;
    assert_eq!(api.json()["upstream"], other.addr.to_string());
    let rest = get_as(&r, &cookie, "/x").await;
    assert_eq!(rest.json()["upstream"], r._echo.addr.to_string());
}

#[tokio::test]
async fn forward_auth_decides_with_the_route_of_the_original_url() {
    let r = rig_with(Some(ROUTES), &[]).await;
    let staff = sign_in(&r, "fred", "staff").await;
    let admin = sign_in(&r, "gail", "admins").await;
    let verify = |cookie: &str, original: Option<&str>| {
        let mut headers = vec![("cookie", cookie.to_string())];
        if let Some(o) = original {
            headers.push(("x-original-url", o.to_string()));
        }
        let app = r.app.clone();
        async move {
            let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            call(&app, request("GET", "/api/v1/auth/verify", &h))
                .await
                .status
        }
    };
    assert_eq!(
        verify(&admin, Some("http://app.test/admin/x")).await,
        StatusCode::OK
    );
    assert_eq!(
        verify(&staff, Some("http://app.test/admin/x")).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        verify(&staff, Some("http://app.test/app/x")).await,
        StatusCode::OK
    );
    // Another spelling of /admin is the same route, or refused.
    for sneaky in [
        "http://app.test/app/../admin/x",
        "http://app.test/%61dmin/x",
        "http://app.test//admin",
        "http://app.test/app/%2e%2e/admin",
        "http://app.test/app/..%2fadmin",
    ] {
        assert_eq!(
            verify(&staff, Some(sneaky)).await,
            StatusCode::FORBIDDEN,
            "{sneaky}"
        );
    }
    // Nothing to decide on: refused, never admitted.
    assert_eq!(verify(&admin, None).await, StatusCode::FORBIDDEN);
    assert_eq!(
        verify(&admin, Some("http://app.test/nowhere")).await,
        StatusCode::FORBIDDEN
    );
}

/// Payloads that try to reach `/admin` under another spelling.
fn admin_spellings() -> Vec<String> {
    let mut out = Vec::new();
    let dots = ["..", "%2e%2e", "%2E%2E", ".%2e", "%2e.", "%2e%2E"];
    let slashes = ["/", "%2f", "%2F", "%5c", "%5C", "\\", "//", "/./", "%252f"];
    for d in dots {
        for s in slashes {
            out.push(format!("/app/{d}{s}admin"));
            out.push(format!("/app{s}{d}{s}admin/x"));
        }
    }
    for p in [
        "//admin",
        "///admin/x",
        "/./admin",
        "/admin/./x",
        "/%61dmin",
        "/%41dmin",
        "/ADMIN",
        "/admin;x",
        "/admin%3bx",
        "/admin%00",
        "/admin%20",
        "/%2561dmin",
        "/admin%2f",
        "/app/%c0%ae%c0%ae/admin",
        "/app/%e0%80%ae%e0%80%ae/admin",
        "/app/%ef%bc%8fadmin",
        "/app/..;/admin",
        "/app;/../admin",
        "/app/.;/admin",
        "/%2e/admin",
        "/app/%252e%252e/admin",
        "/app/%%32%65/admin",
        "/app/\u{ff0e}\u{ff0e}/admin",
        "/admin#x",
        "/app/..%00/admin",
        "/app/..%0d%0a/admin",
        "/app/%2e%2e%5cadmin",
        "/app/...//admin",
        "/app/..../admin",
        "/admin/",
        "/Admin",
        "/ad%6din",
        "/%2fadmin",
        "/app/%2e%2e%2f%2e%2e%2fadmin",
    ] {
        out.push(p.to_string());
    }
    out
}

#[tokio::test]
async fn no_spelling_of_admin_reaches_the_apps_admin_past_a_refusal() {
    let r = rig_with(Some(ROUTES), &[]).await;
    let staff = sign_in(&r, "hal", "staff").await;
    let payloads = admin_spellings();
    assert!(payloads.len() >= 80, "{}", payloads.len());
    for p in &payloads {
        // Some are not even valid request targets (a raw `\\`, `#`, non-ASCII): those
        // never reach Portcullis as such.
        let Ok(uri) = p.parse::<http::Uri>() else {
            continue;
        };
        let req = Request::builder()
            .uri(uri)
            .header("host", "app.test")
            .header("cookie", &staff)
            .header("accept", "application/json")
            .body(RequestBody::empty())
            .unwrap();
        let a = call(&r.app, req).await;
        if a.status == StatusCode::OK {
            let path = a.json()["path"].as_str().unwrap().to_string();
            let lower = path.to_ascii_lowercase();
            assert!(
                !lower.starts_with("/admin") && !lower.contains("/admin/") && lower != "/admin",
                "{p} reached the app as {path}"
            );
        }
    }
}

#[tokio::test]
async fn the_path_a_route_matched_is_the_path_forwarded() {
    // Random paths from an alphabet of the characters that matter: whatever the app
    // receives is exactly the normalized path, and the route decided on that.
    let yaml = "routes:\n  - name: secret\n    match: {path_prefix: /s}\n    allow: {groups: [nobody]}\n  - match: {path_prefix: /}\n    allow: {authenticated: true}\n";
    let r = rig_with(Some(yaml), &[]).await;
    let cookie = sign_in(&r, "ivy", "").await;
    let alphabet = [
        "/", ".", "..", "%2e", "%2f", "%2F", "%5c", "s", "a", "%73", ";", "%25", "~", "-", "%7e",
        "%c3%a9", "%ff", "//",
    ];
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..400 {
        let mut path = String::from("/");
        for _ in 0..(next() % 8) {
            path.push_str(alphabet[(next() % alphabet.len() as u64) as usize]);
        }
        let Ok(uri) = path.parse::<http::Uri>() else {
            continue;
        };
        let expected =
            crate::normalize::normalize_path(&path, crate::normalize::PathRules::default());
        let req = Request::builder()
            .uri(uri)
            .header("host", "app.test")
            .header("cookie", &cookie)
            .header("accept", "application/json")
            .body(RequestBody::empty())
            .unwrap();
        let a = call(&r.app, req).await;
        match expected {
            Err(_) => assert_eq!(a.status, StatusCode::BAD_REQUEST, "{path}"),
            Ok(canonical) => {
                let secret = canonical == "/s" || canonical.starts_with("/s/");
                if secret {
                    assert_eq!(a.status, StatusCode::FORBIDDEN, "{path} -> {canonical}");
                } else {
                    assert_eq!(a.status, StatusCode::OK, "{path} -> {canonical}");
                    assert_eq!(a.json()["path"], canonical.as_ref(), "{path}");
                }
            }
        }
    }
}

/// A P-256 signing key in a temporary PEM file.
fn signing_key_file() -> std::path::PathBuf {
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
    let doc = EcdsaKeyPair::generate_pkcs8(
        &ECDSA_P256_SHA256_FIXED_SIGNING,
        &aws_lc_rs::rand::SystemRandom::new(),
    )
    .unwrap();
    let pem = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, doc.as_ref())
    );
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let path = std::env::temp_dir().join(format!(
        "portcullis-app-key-{}-{}.pem",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::write(&path, pem).unwrap();
    path
}

/// Verifies an assertion against the app's JWKS with the `jsonwebtoken` crate (not
/// Portcullis's signing code); returns its claims.
async fn verify_assertion(r: &Rig, token: &str, audience: &str) -> Value {
    let jwks = call(
        &r.app,
        request("GET", "/.well-known/portcullis/jwks.json", &[]),
    )
    .await;
    assert_eq!(jwks.status, StatusCode::OK);
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_slice(&jwks.body).unwrap();
    let header = jsonwebtoken::decode_header(token).unwrap();
    let jwk = set
        .find(header.kid.as_deref().unwrap())
        .expect("the kid is published");
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    v.set_audience(&[audience]);
    v.set_issuer(&["http://app.test"]);
    jsonwebtoken::decode::<Value>(token, &key, &v)
        .unwrap_or_else(|e| panic!("the assertion does not verify: {e}"))
        .claims
}

#[tokio::test]
async fn forwarded_requests_carry_a_verifiable_identity_assertion() {
    let key = signing_key_file();
    let yaml = format!(
        "identity_jwt:\n  enabled: true\n  signing_key_file: {}\nroutes:\n  - match: {{path_prefix: /api}}\n    allow: {{authenticated: true}}\n    audience: https://api.example.com\n  - match: {{path_prefix: /}}\n    allow: {{authenticated: true}}\n",
        key.display()
    );
    let r = rig_with(Some(&yaml), &[]).await;
    let cookie = sign_in(&r, "jan", "crew").await;
    let forged = call(
        &r.app,
        request(
            "GET",
            "/api/x",
            &[
                ("cookie", &cookie),
                ("x-portcullis-jwt-assertion", "forged"),
                ("X_Portcullis_Jwt_Assertion", "forged"),
            ],
        ),
    )
    .await;
    let tokens = forged.seen_header("x-portcullis-jwt-assertion").unwrap();
    assert_eq!(tokens.len(), 1, "the forged copies were removed");
    let claims = verify_assertion(&r, &tokens[0], "https://api.example.com").await;
    assert_eq!(claims["email"], "jan@example.com");
    assert_eq!(claims["preferred_username"], "jan");
    assert_eq!(claims["groups"], json!(["crew"]));
    assert_eq!(claims["provider"], "oidc");
    assert!(claims["exp"].as_u64().unwrap() <= claims["iat"].as_u64().unwrap() + 300);
    // Other routes: the upstream's origin is the audience.
    let other = get_as(&r, &cookie, "/x").await;
    let token = other.seen_header("x-portcullis-jwt-assertion").unwrap()[0].clone();
    verify_assertion(&r, &token, &format!("http://{}", r._echo.addr)).await;
    // Signed once per session and audience.
    let again = get_as(&r, &cookie, "/api/y").await;
    assert_eq!(
        again.seen_header("x-portcullis-jwt-assertion").unwrap()[0],
        tokens[0]
    );
    // Tampered: the signature no longer holds.
    let mut tampered = tokens[0].clone();
    let dot = tampered.rfind('.').unwrap();
    tampered.replace_range(dot + 1..dot + 3, "AA");
    let jwks = call(
        &r.app,
        request("GET", "/.well-known/portcullis/jwks.json", &[]),
    )
    .await;
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_slice(&jwks.body).unwrap();
    let key = jsonwebtoken::DecodingKey::from_jwk(&set.keys[0]).unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    v.set_audience(&["https://api.example.com"]);
    assert!(jsonwebtoken::decode::<Value>(&tampered, &key, &v).is_err());
    // Forward-auth answers carry it too.
    let fa = call(
        &r.app,
        request(
            "GET",
            "/api/v1/auth/verify",
            &[
                ("cookie", &cookie),
                ("x-original-url", "http://app.test/api/z"),
            ],
        ),
    )
    .await;
    assert_eq!(fa.status, StatusCode::OK);
    let token = fa.headers["x-auth-request-jwt-assertion"]
        .to_str()
        .unwrap()
        .to_string();
    verify_assertion(&r, &token, "https://api.example.com").await;
}

mod advisories;
mod properties;
mod session_control;

/// Every request's future is copied at each await on its way up (a memcpy of its whole
/// size, measured at some 37 KB per request by bench/instructions.py before the rare
/// paths were boxed). The bounds are loose (debug build, any compiler); they catch a
/// large future creeping back into the hot path.
#[tokio::test]
async fn the_request_futures_stay_small() {
    let r = rig(&[]).await;
    let app = &r.app;
    let c = conn();
    let mut req = request("GET", "/x", &[]);
    let handle = std::mem::size_of_val(&app.handle(&c, &mut req));
    let h = HeaderMap::new();
    let decide = std::mem::size_of_val(&app.decide(super::decide::Check {
        headers: &h,
        client: "127.0.0.1".parse().unwrap(),
        entry: super::decide::Entry::Proxied,
        narrower: None,
        target: super::decide::Target {
            method: "GET",
            host: None,
            path: "/",
        },
    }));
    // 1,728 and 680 bytes (debug build) since `App::handle` too takes the request by
    // reference (2,216 when it took it by value and kept it twice; 4,040 when each future
    // on the way kept its own copy), and the session store's call, the upstream's
    // connect and upgrade stopped being awaited in place (4,704 and 2,416 before that).
    assert!(handle < 2 * 1024, "App::handle's future is {handle} bytes");
    assert!(decide < 1024, "App::decide's future is {decide} bytes");
}
