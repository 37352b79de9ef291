//! Forward-auth: real nginx (`auth_request`) and real Caddy (`forward_auth`) in front of
//! an app, each running the configuration in `examples/` as written (only addresses
//! changed), asking a running Portcullis; and the exact header exchanges of Traefik's
//! `forwardAuth` and Envoy's `ext_authz`, which cannot be installed here.
#![allow(clippy::unwrap_used)]

use portcullis_testkit::prelude::*;
use portcullis_testkit::{Caddy, Nginx};
use serde_json::Value;

const PORTCULLIS_IN_EXAMPLES: &str = "127.0.0.1:4180";
const APP_IN_EXAMPLES: &str = "127.0.0.1:3000";

/// Portcullis answering forward-auth only (no upstream of its own) for a proxy in front
/// at `front_port`, with the development provider.
struct Setup {
    upstream: EchoUpstream,
    _idp: portcullis_devidp::DevIdp,
    portcullis: Portcullis,
    front: String,
}

async fn setup(extra: &[(&str, &str)]) -> Setup {
    let upstream = EchoUpstream::start().await;
    let front_port = free_port();
    let front = format!("http://127.0.0.1:{front_port}");
    let redirect = format!("{front}/api/v1/auth/callback");
    let idp = dev_idp(vec![redirect.clone()]).await;
    let mut builder = Portcullis::builder()
        .env("FORWARD_AUTH_ONLY", "true")
        .env("OAUTH_ENABLED", "true")
        .env("OAUTH_PROVIDER", "oidc")
        .env("OAUTH_ISSUER_URL", idp.issuer())
        .env("OAUTH_CLIENT_ID", "portcullis")
        .env("OAUTH_CLIENT_SECRET", "dev-secret")
        .env("OAUTH_REDIRECT_URL", redirect)
        .env("COOKIE_SECRET", SECRET)
        .env("TRUSTED_PROXIES", "127.0.0.1/32");
    for (k, v) in extra {
        builder = builder.env(k, *v);
    }
    let portcullis = builder.wait_ready().start().await;
    Setup {
        upstream,
        _idp: idp,
        portcullis,
        front,
    }
}

impl Setup {
    fn front_port(&self) -> u16 {
        self.front.rsplit(':').next().unwrap().parse().unwrap()
    }

    /// An example file with the addresses of this setup in place of the example's.
    fn adapt(&self, text: &str) -> String {
        text.replace(PORTCULLIS_IN_EXAMPLES, &self.portcullis.addr.to_string())
            .replace(APP_IN_EXAMPLES, &self.upstream.addr.to_string())
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.front)
    }
}

/// A GET with the browser's session cookie and extra headers (a forged identity, say).
async fn get_with(browser: &Browser, url: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let host = url::Url::parse(url).unwrap();
    let cookie = browser.cookie(host.host_str().unwrap(), "session_token");
    let resp = request(url, cookie.as_deref(), headers).await;
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// One GET, redirects not followed, with a session cookie and extra headers.
async fn request(url: &str, cookie: Option<&str>, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(url);
    if let Some(c) = cookie {
        req = req.header("cookie", format!("session_token={c}"));
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

const FORGED: &[(&str, &str)] = &[
    ("X-Forwarded-User", "mallory"),
    ("x-forwarded-email", "mallory@evil.example"),
    ("X-Forwarded-Preferred-Username", "root"),
    ("X-Forwarded-Groups", "wheel"),
];

#[tokio::test]
#[cfg_attr(not(feature = "e2e"), ignore = "needs nginx: run scripts/test")]
async fn nginx_auth_request_sends_browsers_to_log_in_and_passes_the_user_to_the_app() {
    let s = setup(&[]).await;
    let conf = s.adapt(&example("examples/nginx/portcullis.conf")).replace(
        "listen 80;",
        &format!("listen 127.0.0.1:{};", s.front_port()),
    );
    let nginx = Nginx::start(&conf, s.front_port());

    // No session: nginx turns the 401 into a redirect to the login, which returns to the
    // original URL, query string and all.
    let browser = Browser::new();
    let first = browser
        .get(&s.url("/reports/q1?year=2026&team=a%26b"))
        .await;
    assert_eq!(first.status, 302, "{first:?}\n{}", nginx.error_log());
    let login = first.location().unwrap();
    assert!(
        login.starts_with(&s.url("/api/v1/auth/login?rd=")),
        "{login}"
    );
    let form = browser.follow(first).await;
    let landed = dev_idp_sign_in(&browser, &form, "alice", "admins, devs").await;
    assert_eq!(landed.status, 200, "{landed:?}");
    assert_eq!(
        landed.url.as_str(),
        s.url("/reports/q1?year=2026&team=a%26b")
    );
    let echo = landed.json();
    assert_eq!(echo["path"], "/reports/q1");
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
    assert!(echo_header(&echo, "x-forwarded-user").is_some_and(|u| !u.is_empty()));
    // Identity headers a client sends are replaced by the real ones.
    let (status, body) = get_with(&browser, &s.url("/whoami"), FORGED).await;
    assert_eq!(status, 200, "{body}");
    let echo: Value = serde_json::from_str(&body).unwrap();
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
    assert_ne!(echo_header(&echo, "x-forwarded-user"), Some("mallory"));
    assert_eq!(
        echo["headers"]["x-forwarded-user"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Without a session, forged headers get nowhere near the app.
    let stranger = Browser::new();
    let (status, _) = get_with(&stranger, &s.url("/whoami"), FORGED).await;
    assert_eq!(status, 302);

    // Logging out through nginx ends it: the next request is sent to log in again.
    let out = browser
        .request("POST", &s.url("/api/v1/auth/logout"), None)
        .await;
    assert_eq!(out.status, 200, "{out:?}");
    let again = browser.get(&s.url("/reports")).await;
    assert_eq!(again.status, 302);
    drop(nginx);
}

#[tokio::test]
#[cfg_attr(not(feature = "e2e"), ignore = "needs Caddy: run scripts/test")]
async fn caddy_forward_auth_redirects_browsers_itself_and_passes_the_user_to_the_app() {
    let s = setup(&[]).await;
    let caddyfile = s
        .adapt(&example("examples/caddy/Caddyfile"))
        .replace("app.example.com {", &format!("{} {{", s.front));
    let caddy = Caddy::start(&caddyfile, s.front_port());

    let browser = Browser::new();
    let first = browser.get(&s.url("/reports/q1?year=2026")).await;
    // Portcullis's own 302, relayed by Caddy, to the login on the public origin.
    assert_eq!(first.status, 302, "{first:?}\n{}", caddy.log());
    let login = first.location().unwrap();
    assert!(
        login.starts_with(&s.url("/api/v1/auth/login?rd=")),
        "{login}"
    );
    assert!(login.contains("%2Freports%2Fq1%3Fyear%3D2026"), "{login}");
    let form = browser.follow(first).await;
    let landed = dev_idp_sign_in(&browser, &form, "bob", "ops").await;
    assert_eq!(landed.status, 200, "{landed:?}");
    assert_eq!(landed.url.as_str(), s.url("/reports/q1?year=2026"));
    let echo = landed.json();
    assert_eq!(
        echo_header(&echo, "x-forwarded-email"),
        Some("bob@example.com")
    );
    assert_eq!(echo_header(&echo, "x-forwarded-groups"), Some("ops"));

    let (status, body) = get_with(&browser, &s.url("/whoami"), FORGED).await;
    assert_eq!(status, 200, "{body}");
    let echo: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        echo_header(&echo, "x-forwarded-email"),
        Some("bob@example.com")
    );
    assert_eq!(
        echo_header(&echo, "x-forwarded-preferred-username"),
        Some("bob")
    );
    assert_eq!(echo_header(&echo, "x-forwarded-groups"), Some("ops"));
    assert_ne!(echo_header(&echo, "x-forwarded-user"), Some("mallory"));

    // An API client without a session gets the 401 JSON, relayed as it is.
    let api = reqwest::Client::new()
        .get(s.url("/api/data"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 401);
    let body: Value = api.json().await.unwrap();
    assert_eq!(body["error"], "unauthenticated");
}

/// Logs `user` in directly at a Portcullis that has an upstream of its own (so it is its
/// own public origin) and returns the browser.
async fn verify(
    p: &Portcullis,
    path: &str,
    cookie: Option<&str>,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    request(&p.url(path), cookie, headers).await
}

const BROWSER_ACCEPT: (&str, &str) = ("accept", "text/html,application/xhtml+xml,*/*;q=0.8");

/// What Traefik's forwardAuth sends: the original request's method, scheme, host, URI
/// and client chain in X-Forwarded-*, plus the client's own headers.
fn traefik(method: &'static str, uri: &'static str) -> Vec<(&'static str, &'static str)> {
    vec![
        BROWSER_ACCEPT,
        ("x-forwarded-method", method),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "app.example.com"),
        ("x-forwarded-uri", uri),
        ("x-forwarded-for", "203.0.113.7"),
    ]
}

#[tokio::test]
async fn traefiks_header_exchange_gets_a_redirect_back_to_the_original_url() {
    let s = with_dev_idp(&[
        ("TRUSTED_PROXIES", "127.0.0.1/32"),
        ("AUTH__ALLOWED_REDIRECT_HOSTS", "app.example.com"),
    ])
    .await;
    let p = &s.portcullis;
    let resp = verify(
        p,
        "/api/v1/auth/verify",
        None,
        &traefik("GET", "/dash/1?tab=a%20b"),
    )
    .await;
    assert_eq!(resp.status(), 302);
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    let login = url::Url::parse(&location).unwrap();
    assert_eq!(
        login.origin(),
        url::Url::parse(&p.url("/")).unwrap().origin()
    );
    assert_eq!(login.path(), "/api/v1/auth/login");
    let rd: Vec<(String, String)> = login.query_pairs().into_owned().collect();
    assert!(
        rd.contains(&(
            "rd".into(),
            "https://app.example.com/dash/1?tab=a%20b".into()
        )),
        "{location}"
    );
    // Nothing is set in the browser by the check itself.
    assert!(resp.headers().get("set-cookie").is_none());

    // A form post without a session is not turned into a GET of the login: 401.
    let resp = verify(p, "/api/v1/auth/verify", None, &traefik("POST", "/dash/1")).await;
    assert_eq!(resp.status(), 401);
    // Neither is an API call.
    let mut api = traefik("GET", "/api/items");
    api[0] = ("accept", "application/json");
    assert_eq!(
        verify(p, "/api/v1/auth/verify", None, &api).await.status(),
        401
    );

    // Following the login lands on the original URL.
    let browser = logged_in(&s.portcullis, "carol", "admins").await;
    let cookie = browser.cookie("127.0.0.1", "session_token").unwrap();
    let resp = verify(
        p,
        "/api/v1/auth/verify",
        Some(&cookie),
        &traefik("GET", "/dash/1"),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let h = resp.headers();
    assert_eq!(h["x-auth-request-email"], "carol@example.com");
    assert_eq!(h["x-auth-request-preferred-username"], "carol");
    assert_eq!(h["x-auth-request-groups"], "admins");
    assert!(!h["x-auth-request-user"].is_empty());
    assert!(h.get("set-cookie").is_none());

    // That login, completed, returns the browser to the original URL on the app's host.
    let to_idp = browser.navigate(&location).await;
    let callback = callback_url_for(&browser, &to_idp, "carol").await;
    let done = browser.get(&callback).await;
    assert_eq!(done.status, 302, "{done:?}");
    assert_eq!(
        done.location().as_deref(),
        Some("https://app.example.com/dash/1?tab=a%20b")
    );
}

#[tokio::test]
async fn forwarded_headers_from_an_untrusted_peer_are_not_believed() {
    // No TRUSTED_PROXIES: X-Forwarded-Uri and friends are a client's claims.
    let s = with_dev_idp(&[("AUTH__ALLOWED_REDIRECT_HOSTS", "app.example.com")]).await;
    let resp = verify(
        &s.portcullis,
        "/api/v1/auth/verify",
        None,
        &traefik("GET", "/dash/1"),
    )
    .await;
    assert_eq!(resp.status(), 401);
    let login = resp.headers()["x-auth-request-login"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(!login.contains("app.example.com"), "{login}");
    // A client cannot pre-set the answer headers either: they are the answer's, and an
    // unauthenticated answer has none.
    let resp = verify(
        &s.portcullis,
        "/api/v1/auth/verify",
        None,
        &[("x-auth-request-user", "mallory")],
    )
    .await;
    assert_eq!(resp.status(), 401);
    assert!(resp.headers().get("x-auth-request-user").is_none());
}

#[tokio::test]
async fn envoy_path_prefix_mode_checks_the_original_path() {
    let s = with_dev_idp(&[]).await;
    let p = &s.portcullis;
    // Envoy sends the original method and path after the prefix, and the Host.
    let resp = verify(
        p,
        "/api/v1/auth/verify/orders/7?view=full",
        None,
        &[BROWSER_ACCEPT],
    )
    .await;
    assert_eq!(
        resp.status(),
        302,
        "Envoy relays the answer: browsers are redirected"
    );
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    let login = url::Url::parse(&location).unwrap();
    let rd: Vec<(String, String)> = login.query_pairs().into_owned().collect();
    assert!(
        rd.contains(&("rd".into(), "/orders/7?view=full".into())),
        "{location}"
    );
    let resp = verify(
        p,
        "/api/v1/auth/verify/orders/7",
        None,
        &[("accept", "application/json")],
    )
    .await;
    assert_eq!(resp.status(), 401);

    let browser = logged_in(&s.portcullis, "dave", "").await;
    let cookie = browser.cookie("127.0.0.1", "session_token").unwrap();
    // The original query string is the app's, never taken for verify's own parameters.
    let resp = verify(
        p,
        "/api/v1/auth/verify/orders/7?allowed_group=x&redirect=maybe",
        Some(&cookie),
        &[],
    )
    .await;
    assert_eq!(resp.status(), 200, "Envoy counts only 200 as allowed");
    assert_eq!(resp.headers()["x-auth-request-email"], "dave@example.com");
    // Every identity header is answered, empty when the user has none, so a proxy that
    // copies the answer's headers (Envoy) overwrites a client's forged copy.
    assert_eq!(resp.headers()["x-auth-request-groups"], "");
}

#[tokio::test]
async fn query_parameters_narrow_the_policy_per_location() {
    let s = with_dev_idp(&[]).await;
    let p = &s.portcullis;
    let browser = logged_in(&s.portcullis, "erin", "devs, sre").await;
    let cookie = browser.cookie("127.0.0.1", "session_token").unwrap();
    let status = |path: &'static str| {
        let cookie = cookie.clone();
        async move { verify(p, path, Some(&cookie), &[]).await.status().as_u16() }
    };
    assert_eq!(status("/api/v1/auth/verify").await, 200);
    assert_eq!(status("/api/v1/auth/verify?allowed_groups=sre").await, 200);
    assert_eq!(
        status("/api/v1/auth/verify?allowed_groups=SRE,admins").await,
        200
    );
    assert_eq!(
        status("/api/v1/auth/verify?allowed_groups=admins").await,
        403
    );
    assert_eq!(
        status("/api/v1/auth/verify?allowed_emails=erin@example.com").await,
        200
    );
    assert_eq!(
        status("/api/v1/auth/verify?allowed_emails=frank@example.com").await,
        403
    );
    assert_eq!(
        status("/api/v1/auth/verify?allowed_emails=frank@example.com&allowed_groups=devs").await,
        200
    );
    // A misspelt parameter must not silently open the location.
    let resp = verify(
        p,
        "/api/v1/auth/verify?allowed_group=admins",
        Some(&cookie),
        &[],
    )
    .await;
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("allowed_group"),
        "{body}"
    );
    assert!(
        p.wait_for_log("User not allowed: erin").await,
        "{}",
        p.logs()
    );
    // HEAD and other methods are answered too (Envoy forwards the original method).
    let resp = reqwest::Client::new()
        .post(p.url("/api/v1/auth/verify"))
        .header("cookie", format!("session_token={cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn a_forward_auth_only_portcullis_proxies_nothing() {
    let s = setup(&[]).await;
    let resp = reqwest::get(s.portcullis.url("/anything")).await.unwrap();
    assert_eq!(resp.status(), 404);
    let resp = reqwest::get(s.portcullis.url("/api/v1/auth/status"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        s.portcullis.logs().contains("forward-auth only"),
        "{}",
        s.portcullis.logs()
    );
}

/// `examples/nginx/shared-auth-host.conf`: one sign-in at the auth host, a session cookie
/// for the parent domain, and two apps on subdomains that both see it (one narrowed to a
/// group). The browser resolves the example's names to loopback and honours `Domain=`.
#[tokio::test]
#[cfg_attr(not(feature = "e2e"), ignore = "needs nginx: run scripts/test")]
async fn one_sign_in_serves_every_app_under_the_cookie_domain() {
    let app1 = EchoUpstream::start().await;
    let app2 = EchoUpstream::start().await;
    let port = free_port();
    let at = |host: &str, path: &str| format!("http://{host}.example.test:{port}{path}");
    let redirect = at("auth", "/api/v1/auth/callback");
    let idp = dev_idp(vec![redirect.clone()]).await;
    let portcullis = Portcullis::builder()
        .env("FORWARD_AUTH_ONLY", "true")
        .env("OAUTH_ENABLED", "true")
        .env("OAUTH_PROVIDER", "oidc")
        .env("OAUTH_ISSUER_URL", idp.issuer())
        .env("OAUTH_CLIENT_ID", "portcullis")
        .env("OAUTH_CLIENT_SECRET", "dev-secret")
        .env("PUBLIC_URL", at("auth", ""))
        .env("OAUTH_REDIRECT_URL", &redirect)
        .env("COOKIE_SECRET", SECRET)
        .env("SESSION__COOKIE_DOMAIN", "example.test")
        // Hosts with a port must be listed with it; on port 443 the domain alone does.
        .env(
            "AUTH__ALLOWED_REDIRECT_HOSTS",
            format!("app1.example.test:{port},app2.example.test:{port}"),
        )
        .env("TRUSTED_PROXIES", "127.0.0.1/32")
        .wait_ready()
        .start()
        .await;
    let conf = example("examples/nginx/shared-auth-host.conf")
        .replace(PORTCULLIS_IN_EXAMPLES, &portcullis.addr.to_string())
        .replace(APP_IN_EXAMPLES, &app1.addr.to_string())
        .replace("127.0.0.1:3001", &app2.addr.to_string())
        .replace("listen 80;", &format!("listen 127.0.0.1:{port};"))
        .replace(".example.com;", ".example.test;");
    let nginx = Nginx::start(&conf, port);
    let browser = Browser::resolving(&[
        "auth.example.test",
        "app1.example.test",
        "app2.example.test",
    ]);

    // app1 without a session: to the sign-in host, and back to app1 after the login.
    let first = browser.get(&at("app1", "/inbox?page=2")).await;
    assert_eq!(first.status, 302, "{first:?}\n{}", nginx.error_log());
    assert!(
        first
            .location()
            .unwrap()
            .starts_with(&at("auth", "/api/v1/auth/login?rd=")),
        "{first:?}"
    );
    let form = browser.follow(first).await;
    let landed = dev_idp_sign_in(&browser, &form, "alice", "admins").await;
    assert_eq!(landed.status, 200, "{landed:?}\n{}", nginx.error_log());
    assert_eq!(landed.url.as_str(), at("app1", "/inbox?page=2"));
    assert_eq!(
        echo_header(&landed.json(), "x-forwarded-email"),
        Some("alice@example.com")
    );

    // The cookie was set for the domain, so app2 lets alice in without a second login.
    let session = browser.cookie("example.test", "session_token");
    assert!(session.is_some(), "the session cookie is a domain cookie");
    let other = browser.get(&at("app2", "/settings")).await;
    assert_eq!(other.status, 200, "{other:?}");
    assert_eq!(
        echo_header(&other.json(), "x-forwarded-groups"),
        Some("admins")
    );

    // app2 is narrowed to admins: a user without that group is refused there, not at app1.
    let bob = Browser::resolving(&[
        "auth.example.test",
        "app1.example.test",
        "app2.example.test",
    ]);
    let form = bob.navigate(&at("app1", "/")).await;
    let landed = dev_idp_sign_in(&bob, &form, "bob", "devs").await;
    assert_eq!(landed.status, 200, "{landed:?}");
    assert_eq!(bob.get(&at("app2", "/")).await.status, 403);

    // Logging out at the auth host ends the session for every app.
    let out = browser
        .request("POST", &at("auth", "/api/v1/auth/logout"), None)
        .await;
    assert_eq!(out.status, 200, "{out:?}");
    assert_eq!(browser.get(&at("app1", "/")).await.status, 302);
    assert_eq!(browser.get(&at("app2", "/")).await.status, 302);

    // A host outside the domain never gets the cookie: the browser would not send it, and
    // Portcullis would not send a browser back there after a login either.
    let to_idp = browser
        .navigate(&at(
            "auth",
            "/api/v1/auth/login?rd=http%3A%2F%2Fevil.example.org%2F",
        ))
        .await;
    let callback = callback_url_for(&browser, &to_idp, "alice").await;
    let done = browser.get(&callback).await;
    assert_eq!(done.location().as_deref(), Some("/"));
    drop(nginx);
}

/// The route table behind real nginx (examples/nginx/portcullis.conf as written): nginx
/// sends the raw request URI in X-Original-URL, Portcullis normalizes it and decides with
/// the route it falls under, so `/admin` cannot be reached by another spelling.
#[tokio::test]
#[cfg_attr(not(feature = "e2e"), ignore = "needs nginx: run scripts/test")]
async fn nginx_forward_auth_decides_with_the_route_table() {
    let dir = TempDir::new("fa-routes");
    let config = dir.path().join("routes.yaml");
    std::fs::write(
        &config,
        "routes:\n  - name: health\n    match: {path: /status}\n    public: true\n  - name: admin\n    match: {path_prefix: /admin}\n    allow: {groups: [admins]}\n  - match: {path_prefix: /}\n    allow: {authenticated: true}\n",
    )
    .unwrap();
    let s = setup(&[("PORTCULLIS_CONFIG", config.to_str().unwrap())]).await;
    let conf = s.adapt(&example("examples/nginx/portcullis.conf")).replace(
        "listen 80;",
        &format!("listen 127.0.0.1:{};", s.front_port()),
    );
    let nginx = Nginx::start(&conf, s.front_port());
    // Public: no login.
    let stranger = Browser::new();
    let status = stranger.get(&s.url("/status")).await;
    assert_eq!(status.status, 200, "{status:?}\n{}", nginx.error_log());
    let alice = Browser::new();
    let form = alice.navigate(&s.url("/admin/")).await;
    assert_eq!(
        dev_idp_sign_in(&alice, &form, "alice", "admins")
            .await
            .status,
        200
    );
    let bob = Browser::new();
    let form = bob.navigate(&s.url("/")).await;
    assert_eq!(
        dev_idp_sign_in(&bob, &form, "bob", "staff").await.status,
        200
    );
    assert_eq!(alice.get(&s.url("/admin/panel")).await.status, 200);
    assert_eq!(bob.get(&s.url("/admin/panel")).await.status, 403);
    assert_eq!(bob.get(&s.url("/other")).await.status, 200);
    // Other spellings of /admin, sent raw (a client library would tidy them up).
    for sneaky in [
        "/x/../admin/panel",
        "/%61dmin/panel",
        "//admin/panel",
        "/x/%2e%2e/admin",
    ] {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", s.front_port()))
            .await
            .unwrap();
        let cookie = bob.cookie("127.0.0.1", "session_token").unwrap();
        let req = format!(
            "GET {sneaky} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nCookie: session_token={cookie}\r\nConnection: close\r\n\r\n",
            s.front_port()
        );
        tokio::io::AsyncWriteExt::write_all(&mut stream, req.as_bytes())
            .await
            .unwrap();
        let r = read_response(&mut stream).await;
        assert!(
            r.status == 403 || r.status == 400 || r.status == 500,
            "{sneaky} got {}: {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
        assert_ne!(r.status, 200, "{sneaky} reached the app");
    }
}
