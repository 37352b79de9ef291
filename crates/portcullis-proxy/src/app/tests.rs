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

async fn echo(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
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
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), hyper::service::service_fn(echo))
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
    let env = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    portcullis_config::load(&Sources {
        env,
        ..Sources::default()
    })
    .unwrap_or_else(|e| panic!("test configuration refused: {e}"))
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
    let app = app_from(&config(&env)).await;
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

async fn call(app: &App, req: Request<RequestBody>) -> Answer {
    let resp = app.handle(&conn(), req).await;
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
    assert_eq!(done.location(), "/start");
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
        if e.allow.is_empty() {
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
    let metrics = call(&r.app, request("GET", "/metrics", &[])).await;
    assert!(metrics.text().contains("portcullis_requests_total"));
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
