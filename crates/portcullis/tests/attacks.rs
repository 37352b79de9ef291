//! What an independent attack run against the release binary found, each replayed against
//! the real binary: an h2c upgrade that tunnelled past every check, bodies and idle
//! connections that pinned memory and descriptors without a login, path spellings that
//! left the upstream's prefix, hosts that are not hosts, cross-site logout, forged log
//! lines, HTTP/2 cookie crumbs, cookies with non-ASCII bytes, CONNECT, and WebSockets
//! that outlived their session. Each test fails on the code before the fix.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use portcullis_testkit::prelude::*;
use portcullis_testkit::{Hypercorn, TempDir};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Signs `user` in at the development provider; returns the session cookie's value.
async fn session_of(p: &Portcullis, user: &str) -> String {
    let browser = Browser::new();
    let form = browser.navigate(&p.url("/")).await;
    let page = dev_idp_sign_in(&browser, &form, user, "staff").await;
    assert_eq!(page.status, 200, "login failed: {}", page.body);
    browser.cookie("127.0.0.1", "session_token").unwrap()
}

fn h2c_upgrade(host: &str, cookie: Option<&str>) -> Vec<u8> {
    let cookie = cookie
        .map(|c| format!("Cookie: session_token={c}\r\n"))
        .unwrap_or_default();
    format!(
        "GET /h2c HTTP/1.1\r\nHost: {host}\r\n{cookie}Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nX-Forwarded-User: admin\r\nX-Forwarded-Groups: admins\r\n\r\n"
    )
    .into_bytes()
}

#[tokio::test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "needs Hypercorn (pip): run scripts/test"
)]
async fn an_h2c_upgrade_never_tunnels_past_portcullis() {
    let app = Hypercorn::start();
    let app_addr: SocketAddr = format!("127.0.0.1:{}", app.port).parse().unwrap();
    // Asked directly, the app switches to HTTP/2: a tunnel would open if the request got
    // through Portcullis as it was sent.
    let direct = exchange(app_addr, &h2c_upgrade("app", None)).await;
    assert_eq!(direct.status, 101, "{}", direct.head);

    // Open mode: anyone.
    let open = Portcullis::builder()
        .env("UPSTREAM_URL", app.url())
        .start()
        .await;
    let r = exchange(open.addr, &h2c_upgrade("127.0.0.1", None)).await;
    assert_eq!(r.status, 200, "{}", r.head);
    let seen = r.json();
    assert_eq!(seen["http_version"], "1.1");
    let headers = &seen["headers"];
    for name in [
        "upgrade",
        "http2-settings",
        "x-forwarded-user",
        "x-forwarded-groups",
    ] {
        assert!(
            headers.get(name).is_none(),
            "{name} reached the app: {seen}"
        );
    }

    // Signed in: the app sees the user Portcullis vouches for, not the forged one.
    let setup = with_dev_idp(&[("UPSTREAM_URL", &app.url())]).await;
    let p = &setup.portcullis;
    let cookie = session_of(p, "alice").await;
    let r = exchange(p.addr, &h2c_upgrade("127.0.0.1", Some(&cookie))).await;
    assert_eq!(r.status, 200, "{}", r.head);
    let seen = r.json();
    assert_eq!(seen["http_version"], "1.1");
    let headers = &seen["headers"];
    assert!(headers.get("upgrade").is_none(), "{seen}");
    assert!(headers.get("http2-settings").is_none(), "{seen}");
    let user = headers["x-forwarded-user"][0].as_str().unwrap();
    assert!(user.starts_with("dev-"), "{seen}");
    assert_eq!(
        headers["x-forwarded-preferred-username"],
        serde_json::json!(["alice"])
    );
    assert_eq!(headers["x-forwarded-groups"], serde_json::json!(["staff"]));
}

/// Starts `connections` clients that each declare `declared` bytes, send `sent` of them,
/// and wait for the answer; returns the statuses (0: the connection was cut).
async fn body_flood(
    addr: SocketAddr,
    head: &str,
    connections: usize,
    declared: usize,
    sent: usize,
) -> Vec<tokio::task::JoinHandle<u16>> {
    (0..connections)
        .map(|_| {
            let head = head.replace("{len}", &declared.to_string());
            tokio::spawn(async move {
                let Ok(mut s) = TcpStream::connect(addr).await else {
                    return 0;
                };
                if s.write_all(head.as_bytes()).await.is_err() {
                    return 0;
                }
                let mut answer = [0u8; 12];
                // A request refused on its head is answered before any body is sent.
                if let Ok(Ok(_)) =
                    tokio::time::timeout(Duration::from_millis(300), s.read_exact(&mut answer))
                        .await
                {
                    return status_of(&answer);
                }
                let block = vec![b'a'; 64 * 1024];
                let mut left = sent;
                while left > 0 {
                    let n = left.min(block.len());
                    if s.write_all(&block[..n]).await.is_err() {
                        break;
                    }
                    left -= n;
                }
                match tokio::time::timeout(Duration::from_secs(20), s.read_exact(&mut answer)).await
                {
                    Ok(Ok(_)) => status_of(&answer),
                    _ => 0,
                }
            })
        })
        .collect()
}

#[tokio::test]
async fn bodies_from_strangers_cannot_pin_memory() {
    let dir = TempDir::new("flood");
    let db = format!("sqlite://{}", dir.path().join("d.db").display());
    let setup = with_dev_idp(&[
        ("SCIM__ENABLED", "true"),
        ("SCIM__DATABASE_URL", &db),
        (
            "SCIM__ENDPOINTS__OKTA__TOKEN",
            "okta-provisioning-token-0123456789",
        ),
        ("SERVER__BODY_READ_TIMEOUT", "3s"),
    ])
    .await;
    let p = &setup.portcullis;
    let before = rss_kib(p.pid());

    // No SCIM credential: refused before a byte of the body is held.
    let head = format!(
        "POST /v1/scim/v2/okta/Users HTTP/1.1\r\nHost: {}\r\nContent-Type: application/scim+json\r\nContent-Length: {{len}}\r\n\r\n",
        p.addr
    );
    let statuses = futures(body_flood(p.addr, &head, 200, 1_048_000, 1_000_000).await).await;
    assert!(statuses.iter().all(|s| *s == 401), "{statuses:?}");

    // No login under way in this browser: the callback reads nothing.
    let head = format!(
        "POST /api/v1/auth/callback HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {{len}}\r\n\r\n",
        p.addr
    );
    let statuses = futures(body_flood(p.addr, &head, 200, 1_048_000, 1_000_000).await).await;
    assert!(statuses.iter().all(|s| *s == 400), "{statuses:?}");

    // A genuine login cookie, which anyone can get: the shared budget caps what is held
    // and the read timeout ends the wait.
    let login = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(p.url("/api/v1/auth/login"))
        .send()
        .await
        .unwrap();
    let cookie = login
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_string())
        .find(|c| c.starts_with("portcullis_login_"))
        .expect("a login cookie");
    let head = format!(
        "POST /api/v1/auth/callback HTTP/1.1\r\nHost: {}\r\nCookie: {cookie}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {{len}}\r\n\r\n",
        p.addr
    );
    let started = Instant::now();
    let flood = body_flood(p.addr, &head, 200, 1_048_000, 1_000_000).await;
    let mut peak = 0;
    while started.elapsed() < Duration::from_millis(2500) {
        peak = peak.max(rss_kib(p.pid()));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let statuses = futures(flood).await;
    let after = rss_kib(p.pid());
    eprintln!(
        "RSS under the body flood: {before} KiB before, {peak} KiB at the peak, {after} KiB after ({} answered 503, {} answered 408)",
        statuses.iter().filter(|s| **s == 503).count(),
        statuses.iter().filter(|s| **s == 408).count()
    );
    assert!(
        statuses.iter().all(|s| [503, 408, 0].contains(s)),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&503),
        "the budget never refused: {statuses:?}"
    );
    assert!(statuses.contains(&408), "nothing timed out: {statuses:?}");
    // The budget is 32 MiB; 200 bodies of a megabyte would be 200.
    assert!(
        peak < before + 48 * 1024,
        "RSS grew from {before} to {peak} KiB"
    );
    let health = reqwest::get(p.url("/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);
}

fn status_of(line: &[u8; 12]) -> u16 {
    std::str::from_utf8(&line[9..12])
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

async fn futures(handles: Vec<tokio::task::JoinHandle<u16>>) -> Vec<u16> {
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap_or(0));
    }
    out
}

#[tokio::test]
async fn connections_that_send_nothing_are_closed_and_cannot_starve_others() {
    let upstream = EchoUpstream::start().await;
    let p = Portcullis::builder()
        .env("UPSTREAM_URL", upstream.url())
        .env("SERVER__HEADER_READ_TIMEOUT", "1s")
        .env("SERVER__IDLE_TIMEOUT", "2s")
        .env("SERVER__MAX_CONNECTIONS", "64")
        .start()
        .await;

    // Sends nothing at all.
    let mut silent = TcpStream::connect(p.addr).await.unwrap();
    let closed = until_closed(&mut silent, Duration::from_secs(10)).await;
    eprintln!("a connection that sends nothing was closed after {closed:?}");
    assert!(
        closed.is_some_and(|d| d < Duration::from_secs(3)),
        "{closed:?}"
    );

    // Half of the HTTP/2 preface, then nothing.
    let mut half = TcpStream::connect(p.addr).await.unwrap();
    half.write_all(b"PRI * HT").await.unwrap();
    let closed = until_closed(&mut half, Duration::from_secs(10)).await;
    assert!(
        closed.is_some_and(|d| d < Duration::from_secs(3)),
        "{closed:?}"
    );

    // A keep-alive connection after one request.
    let mut kept = TcpStream::connect(p.addr).await.unwrap();
    kept.write_all(format!("GET /x HTTP/1.1\r\nHost: {}\r\n\r\n", p.addr).as_bytes())
        .await
        .unwrap();
    assert_eq!(read_response(&mut kept).await.status, 200);
    // Waiting between requests is idling, not reading a head: past the header timeout
    // but within the idle timeout, the next request is still served on it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    kept.write_all(format!("GET /y HTTP/1.1\r\nHost: {}\r\n\r\n", p.addr).as_bytes())
        .await
        .unwrap();
    assert_eq!(read_response(&mut kept).await.status, 200);
    let closed = until_closed(&mut kept, Duration::from_secs(10)).await;
    eprintln!("an idle keep-alive connection was closed after {closed:?}");
    assert!(
        closed.is_some_and(|d| d > Duration::from_millis(1500) && d < Duration::from_secs(4)),
        "{closed:?}"
    );

    // Three hundred silent connections against a cap of 64: a health probe still gets in.
    let mut idle = Vec::new();
    for _ in 0..300 {
        if let Ok(Ok(s)) =
            tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(p.addr)).await
        {
            idle.push(s);
        }
    }
    let started = Instant::now();
    let health = tokio::time::timeout(
        Duration::from_secs(20),
        reqwest::Client::new().get(p.url("/healthz")).send(),
    )
    .await
    .expect("the probe is answered")
    .unwrap();
    assert_eq!(health.status(), 200);
    eprintln!(
        "/healthz answered after {:?} with {} silent connections open",
        started.elapsed(),
        idle.len()
    );
    drop(idle);
    let accept_failures = p.logs().matches("accept failed").count();
    assert!(accept_failures <= 2, "{}", p.logs());
}

#[tokio::test]
async fn dot_segments_cannot_leave_the_upstream_prefix() {
    let upstream = EchoUpstream::start().await;
    let p = Portcullis::builder()
        .env("UPSTREAM_URL", format!("{}/app", upstream.url()))
        .start()
        .await;
    for (target, reaches) in [
        ("/../admin", "/app/admin"),
        ("/%2e%2e/admin", "/app/admin"),
        ("/%2E%2e/%2e%2E/admin", "/app/admin"),
        ("/x/./../admin/", "/app/admin/"),
        ("//admin", "/app/admin"),
        ("/a%62c", "/app/abc"),
    ] {
        let r = exchange(
            p.addr,
            format!(
                "GET {target} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                p.addr
            )
            .as_bytes(),
        )
        .await;
        assert_eq!(r.status, 200, "{target}: {}", r.head);
        assert_eq!(r.json()["path"], reaches, "{target}");
    }
    for target in [
        "/..%2fadmin",
        "/%2e%2e%2fadmin",
        "/..%5cadmin",
        "/..\\admin",
        "/%252e%252e/admin",
        "/%c0%ae%c0%ae/admin",
        "/admin%00",
    ] {
        let r = exchange(
            p.addr,
            format!(
                "GET {target} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                p.addr
            )
            .as_bytes(),
        )
        .await;
        assert_eq!(r.status, 400, "{target} was not refused: {}", r.head);
    }
}

#[tokio::test]
async fn hosts_that_are_not_hosts_are_refused() {
    let upstream = EchoUpstream::start().await;
    let p = Portcullis::builder()
        .env("UPSTREAM_URL", upstream.url())
        .start()
        .await;
    let ok = exchange(p.addr, b"GET /x HTTP/1.1\r\nHost: app.example.com\r\n\r\n").await;
    assert_eq!(ok.status, 200);
    for request in [
        "GET /x HTTP/1.1\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: a.example.com\r\nHost: b.example.com\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: a b\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: a/b\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: user@a.example.com\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: a.example.com,b.example.com\r\n\r\n",
        "GET http://a.example.com/x HTTP/1.1\r\nHost: b.example.com\r\n\r\n",
    ] {
        let r = exchange(p.addr, request.as_bytes()).await;
        assert_eq!(r.status, 400, "{request:?}: {}", r.head);
    }
    // HTTP/2: userinfo in :authority.
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let plain = h2.get(p.url("/x")).send().await.unwrap();
    assert_eq!(plain.status(), 200);
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(TcpStream::connect(p.addr).await.unwrap()),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get(format!("http://user:pw@{}/x", p.addr))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 400);
    // CONNECT and targets that are not paths.
    let r = exchange(
        p.addr,
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 405, "{}", r.head);
    let r = exchange(
        p.addr,
        b"OPTIONS * HTTP/1.1\r\nHost: app.example.com\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.head);
}

#[tokio::test]
async fn http2_cookie_crumbs_reach_the_app_as_one_line() {
    let upstream = EchoUpstream::start().await;
    let p = Portcullis::builder()
        .env("UPSTREAM_URL", upstream.url())
        .start()
        .await;
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(TcpStream::connect(p.addr).await.unwrap()),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get(format!("http://{}/x", p.addr))
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .header("cookie", "c=3")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    let seen: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        seen["headers"]["cookie"],
        serde_json::json!(["a=1; b=2; c=3"])
    );
}

#[tokio::test]
async fn a_non_ascii_app_cookie_does_not_hide_the_session() {
    let setup = with_dev_idp(&[]).await;
    let p = &setup.portcullis;
    let cookie = session_of(p, "alice").await;
    let mut line = b"app=caf\xc3\xa9; session_token=".to_vec();
    line.extend_from_slice(cookie.as_bytes());
    line.extend_from_slice(b"; theme=\xe2\x98\x80");
    let resp = reqwest::Client::new()
        .get(p.url("/x"))
        .header("accept", "application/json")
        .header(
            "cookie",
            reqwest::header::HeaderValue::from_bytes(&line).unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen: Value = resp.json().await.unwrap();
    assert_eq!(
        seen["headers"]["x-forwarded-preferred-username"],
        serde_json::json!(["alice"])
    );
    // The app's own cookies pass byte for byte; the session cookie does not.
    let forwarded = seen["headers"]["cookie"][0].as_str().unwrap();
    assert_eq!(forwarded, "app=café; theme=☀");
}

#[tokio::test]
async fn logout_from_another_site_is_refused() {
    let setup = with_dev_idp(&[]).await;
    let p = &setup.portcullis;
    let cookie = session_of(p, "alice").await;
    let http = reqwest::Client::new();
    let post = |origin: Option<&str>, site: Option<&str>| {
        let mut r = http
            .post(p.url("/api/v1/auth/logout?everywhere=true"))
            .header("accept", "application/json")
            .header("cookie", format!("session_token={cookie}"));
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        if let Some(s) = site {
            r = r.header("sec-fetch-site", s);
        }
        r.send()
    };
    for (origin, site) in [
        (Some("https://evil.example"), Some("cross-site")),
        (Some("https://evil.example"), None),
        (Some("null"), None),
        (None, Some("cross-site")),
    ] {
        let r = post(origin, site).await.unwrap();
        assert_eq!(r.status(), 403, "{origin:?} {site:?}");
    }
    // The session survived every attempt.
    let me = http
        .get(p.url("/api/v1/auth/me"))
        .header("cookie", format!("session_token={cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    // From its own page it works.
    let own = format!("http://{}", p.addr);
    let r = post(Some(&own), Some("same-origin")).await.unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["sessions_ended"], 1);
}

#[tokio::test]
async fn line_breaks_in_a_user_name_cannot_forge_log_lines() {
    let setup = with_dev_idp(&[("OAUTH_ALLOWED_USERS", "bob")]).await;
    let p = &setup.portcullis;
    let forged = "mallory\n2026-11-30T00:00:00.000000Z  INFO login succeeded user=admin\u{1b}[1A";
    let browser = Browser::new();
    let form = browser.navigate(&p.url("/")).await;
    let page = dev_idp_sign_in(&browser, &form, forged, "").await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert!(p.wait_for_log("User not allowed").await);
    let logs = p.logs();
    assert!(
        !logs.lines().any(|l| l.starts_with("2026-11-30T00:00:00")),
        "a forged line: {logs}"
    );
    assert!(!logs.contains('\u{1b}'), "{logs}");
    assert!(logs.contains("mallory\\n2026-11-30"), "{logs}");
}

#[tokio::test]
async fn a_websocket_closes_when_its_session_ends() {
    let setup = with_dev_idp(&[]).await;
    let p = &setup.portcullis;
    let cookie = session_of(p, "alice").await;
    let other = session_of(p, "bob").await;
    let mut ws = websocket(p.addr, &cookie).await;
    let mut bystander = websocket(p.addr, &other).await;
    let out = reqwest::Client::new()
        .post(p.url("/api/v1/auth/logout"))
        .header("accept", "application/json")
        .header("cookie", format!("session_token={cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 200);
    let closed = until_closed(&mut ws, Duration::from_secs(3)).await;
    eprintln!("the WebSocket closed {closed:?} after logout");
    assert!(closed.is_some(), "the tunnel outlived its session");
    // Another user's tunnel is untouched.
    bystander.write_all(b"pong").await.unwrap();
    let mut echo = [0u8; 4];
    bystander.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"pong");
}
