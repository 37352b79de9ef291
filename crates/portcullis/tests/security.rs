//! Negative tests: each would fail if the protection it names broke.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use portcullis_devidp::SigningKey;
use portcullis_testkit::prelude::*;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn a_tampered_or_unknown_session_cookie_gets_no_access() {
    let setup = with_dev_idp(&[]).await;
    let p = &setup.portcullis;
    let browser = logged_in(p, "alice", "staff").await;
    let real = browser.cookie("127.0.0.1", "session_token").unwrap();
    let mut flipped = real.clone().into_bytes();
    flipped[10] = if flipped[10] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap();
    let unknown = URL_SAFE_NO_PAD.encode([7u8; 32]);
    let long = "A".repeat(10_000);
    for forged in [
        flipped.as_str(),
        unknown.as_str(),
        "",
        "x",
        "../../etc/passwd",
        "%00",
        long.as_str(),
        "\"quoted\"",
    ] {
        let resp = reqwest::Client::new()
            .get(p.url("/secret"))
            .header("accept", "application/json")
            .header("cookie", format!("session_token={forged}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401, "cookie {forged:?} was not refused");
        if !forged.is_empty() {
            let clear = resp
                .headers()
                .get("set-cookie")
                .map(|v| v.to_str().unwrap().to_string());
            assert!(
                clear.is_some_and(|c| c.starts_with("session_token=;") && c.contains("Max-Age=0"))
            );
        }
    }
    // The real one still works, so the refusals above were about the forgery.
    assert_eq!(browser.get(&p.url("/secret")).await.status, 200);
}

#[tokio::test]
async fn the_session_cookie_has_the_secure_attributes() {
    let setup = with_dev_idp(&[]).await;
    let p = &setup.portcullis;
    let browser = Browser::new();
    let form = browser.navigate(&p.url("/")).await;
    let callback = browser
        .get(&callback_url_for(&browser, &form, "alice").await)
        .await;
    let set: Vec<&str> = callback
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    let session = set
        .iter()
        .find(|c| c.starts_with("session_token="))
        .expect("a session cookie");
    assert!(
        session.contains("HttpOnly")
            && session.contains("SameSite=Lax")
            && session.contains("Path=/"),
        "{session}"
    );
    assert!(
        !session.contains("Secure"),
        "Secure on a plain-http public URL: {session}"
    );
    let value = session
        .split(';')
        .next()
        .unwrap()
        .trim_start_matches("session_token=");
    assert_eq!(
        URL_SAFE_NO_PAD.decode(value).unwrap().len(),
        32,
        "the id is 256 bits"
    );
}

#[tokio::test]
async fn cookies_are_secure_when_the_public_url_is_https() {
    let upstream = EchoUpstream::start().await;
    let idp = dev_idp(vec!["https://app.example.com/api/v1/auth/callback".into()]).await;
    let p = Portcullis::builder()
        .env("OAUTH_ENABLED", "true")
        .env("OAUTH_ISSUER_URL", idp.issuer())
        .env("OAUTH_CLIENT_ID", "portcullis")
        .env(
            "OAUTH_REDIRECT_URL",
            "https://app.example.com/api/v1/auth/callback",
        )
        .env("UPSTREAM_URL", upstream.url())
        .env("COOKIE_SECRET", SECRET)
        .wait_ready()
        .start()
        .await;
    let resp = Browser::new().get(&p.url("/")).await;
    assert_eq!(resp.status, 302);
    let login_cookie = resp.headers["set-cookie"].to_str().unwrap();
    assert!(login_cookie.contains("; Secure"), "{login_cookie}");
}

#[tokio::test]
async fn a_callback_with_a_wrong_or_missing_state_is_refused() {
    let setup = with_dev_idp(&[]).await;
    let p = &setup.portcullis;
    let browser = Browser::new();
    let started = browser.get(&p.url("/")).await;
    let location = url::Url::parse(&started.location().unwrap()).unwrap();
    let state: String = location
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();
    let other_state = portcullis_core::random::token();
    let cases = [
        format!("/api/v1/auth/callback?code=abc&state={other_state}"),
        "/api/v1/auth/callback?code=abc".to_string(),
        "/api/v1/auth/callback?code=abc&state=".to_string(),
        "/api/v1/auth/callback?code=abc&state=%3Cscript%3E".to_string(),
        format!("/api/v1/auth/callback?code=abc&state={}", &state[..42]),
    ];
    for path in &cases {
        let page = browser.get(&p.url(path)).await;
        assert_eq!(page.status, 400, "{path}: {}", page.body);
        assert!(page.body.contains("Sign in again"), "{path}: {}", page.body);
        assert!(
            !page
                .headers
                .get_all("set-cookie")
                .iter()
                .any(|c| c.to_str().unwrap().starts_with("session_token="))
        );
    }
    // The right state from another browser (no login cookie) is refused too.
    let other_browser = Browser::new();
    let page = other_browser
        .get(&p.url(&format!("/api/v1/auth/callback?code=abc&state={state}")))
        .await;
    assert_eq!(page.status, 400);
    assert!(
        page.body.contains("not started in this browser"),
        "{}",
        page.body
    );
    // The right state in the right browser with a code the provider never issued.
    let page = browser
        .get(&p.url(&format!("/api/v1/auth/callback?code=forged&state={state}")))
        .await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert!(
        p.wait_for_log("OAuth token exchange failed: invalid_grant")
            .await,
        "{}",
        p.logs()
    );
}

#[tokio::test]
async fn a_replayed_authorization_code_is_refused() {
    let setup = with_dev_idp(&[]).await;
    let p = &setup.portcullis;
    let browser = Browser::new();
    let form = browser.navigate(&p.url("/")).await;
    let callback_url = callback_url_for(&browser, &form, "alice").await;
    // Keep the login cookie, as an attacker who copied the whole browser state would.
    let state: String = url::Url::parse(&callback_url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();
    let login_cookie_name = format!("portcullis_login_{}", &state[..16]);
    let login_cookie = browser.cookie("127.0.0.1", &login_cookie_name).unwrap();
    let first = browser.get(&callback_url).await;
    assert_eq!(first.status, 302, "{}", first.body);

    let attacker = Browser::new();
    attacker.set_cookie("127.0.0.1", &login_cookie_name, &login_cookie);
    let replay = attacker.get(&callback_url).await;
    assert_eq!(replay.status, 400, "{}", replay.body);
    assert!(attacker.cookie("127.0.0.1", "session_token").is_none());
    // And the original browser's second use fails the same way (its login cookie is gone).
    assert_eq!(browser.get(&callback_url).await.status, 400);
}

#[tokio::test]
async fn spoofed_identity_headers_in_every_spelling_never_reach_the_upstream() {
    let setup = with_dev_idp(&[]).await;
    let p = &setup.portcullis;
    let browser = logged_in(p, "alice", "staff").await;
    let cookie = format!(
        "session_token={}",
        browser.cookie("127.0.0.1", "session_token").unwrap()
    );
    // Raw HTTP/1.1, so the header names go out exactly as written.
    let spoofed = [
        "X-Forwarded-Email: ceo@example.com",
        "x-forwarded-email: ceo@example.com",
        "X_Forwarded_Email: ceo@example.com",
        "x_forwarded_email: ceo@example.com",
        "X-FORWARDED-USER: ceo",
        "x-forwarded_user: ceo",
        "X_Forwarded-Groups: admins",
        "x-forwarded-preferred-username: ceo",
        "X_FORWARDED_PREFERRED_USERNAME: ceo",
        "X-Forwarded-Provider: trusted",
        "X-Forwarded-Access-Token: stolen",
        "X-Auth-Request-User: ceo",
        "x_auth_request_email: ceo@example.com",
    ];
    let request = format!(
        "GET /whoami HTTP/1.1\r\nHost: {}\r\nCookie: {cookie}\r\nAccept: application/json\r\n{}\r\nConnection: close\r\n\r\n",
        p.addr,
        spoofed.join("\r\n")
    );
    let mut stream = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.unwrap();
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    let body = raw.split("\r\n\r\n").nth(1).unwrap();
    let body = if body.contains('{') {
        &body[body.find('{').unwrap()..=body.rfind('}').unwrap()]
    } else {
        body
    };
    let echo: Value = serde_json::from_str(body).unwrap();
    let headers = echo["headers"].as_object().unwrap();
    assert_eq!(headers["x-forwarded-email"], json!(["alice@example.com"]));
    assert_eq!(headers["x-forwarded-preferred-username"], json!(["alice"]));
    assert_eq!(headers["x-forwarded-groups"], json!(["staff"]));
    assert_eq!(headers["x-forwarded-provider"], json!(["oidc"]));
    assert_eq!(headers["x-forwarded-user"].as_array().unwrap().len(), 1);
    assert!(
        headers["x-forwarded-user"][0]
            .as_str()
            .unwrap()
            .starts_with("dev-")
    );
    for name in headers.keys() {
        let folded = name.replace('_', "-");
        let ours = folded.starts_with("x-forwarded-")
            && !["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"]
                .contains(&folded.as_str())
            || folded.starts_with("x-auth-request-");
        if ours {
            assert!(
                !name.contains('_'),
                "underscore spelling reached the upstream: {name}"
            );
            assert_eq!(
                headers[name].as_array().unwrap().len(),
                1,
                "{name} has several values: {}",
                headers[name]
            );
        }
    }
    assert!(headers.get("x-forwarded-access-token").is_none());
    assert!(headers.get("x-auth-request-user").is_none());
}

#[tokio::test]
async fn the_return_path_corpus_never_sends_the_browser_off_site() {
    let setup = with_dev_idp(&[]).await;
    let p = &setup.portcullis;
    let corpus: Value = serde_json::from_str(include_str!(
        "../../../tests/data/open-redirect-payloads.json"
    ))
    .unwrap();
    let payloads: Vec<&str> = corpus["payloads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(payloads.len() >= 200);
    let browser = Browser::new();
    for payload in payloads {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        query.append_pair("rd", payload);
        let start = browser
            .get(&p.url(&format!("/api/v1/auth/login?{}", query.finish())))
            .await;
        assert_eq!(start.status, 302, "{payload:?}");
        let form = browser.follow(start).await;
        let done = browser
            .get(&callback_url_for(&browser, &form, "alice").await)
            .await;
        assert_eq!(done.status, 302, "{payload:?}: {}", done.body);
        assert_eq!(
            done.location().as_deref(),
            Some("/"),
            "payload {payload:?} became the return path"
        );
    }
    // A legitimate deep link survives the same path.
    let start = browser
        .get(&p.url("/api/v1/auth/login?rd=%2Freports%3Fq%3D1"))
        .await;
    let form = browser.follow(start).await;
    let done = browser
        .get(&callback_url_for(&browser, &form, "alice").await)
        .await;
    assert_eq!(done.location().as_deref(), Some("/reports?q=1"));
}

#[tokio::test]
async fn a_protocol_relative_request_target_does_not_become_the_return_path() {
    let setup = with_dev_idp(&[]).await;
    let p = &setup.portcullis;
    for target in ["//evil.com/x", "/\\evil.com", "//evil.com"] {
        let mut stream = tokio::net::TcpStream::connect(p.addr).await.unwrap();
        let req = format!(
            "GET {target} HTTP/1.1\r\nHost: {}\r\nAccept: text/html\r\nConnection: close\r\n\r\n",
            p.addr
        );
        stream.write_all(req.as_bytes()).await.unwrap();
        let mut raw = String::new();
        stream.read_to_string(&mut raw).await.unwrap();
        if !raw.starts_with("HTTP/1.1 302") {
            // hyper may refuse the target outright, which is just as good.
            assert!(raw.starts_with("HTTP/1.1 400"), "{target}: {raw}");
            continue;
        }
        let cookie_line = raw
            .lines()
            .find(|l| {
                l.to_ascii_lowercase()
                    .starts_with("set-cookie: portcullis_login_")
            })
            .unwrap();
        let cookie = cookie_line
            .split_once(": ")
            .unwrap()
            .1
            .split(';')
            .next()
            .unwrap()
            .to_string();
        let location = raw
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("location: "))
            .unwrap()[10..]
            .to_string();
        let browser = Browser::new();
        let (name, value) = cookie.split_once('=').unwrap();
        browser.set_cookie("127.0.0.1", name, value);
        let form = browser.navigate(&location).await;
        let page = browser.submit(&form, &[("username", "alice")]).await;
        assert_eq!(page.status, 200, "{target}: {}", page.body);
        // The target is normalized to a path on this origin (`/evil.com/x`) before it
        // becomes the return path; the browser never leaves for another host.
        let own = url::Url::parse(&p.url("/")).unwrap();
        assert_eq!(
            page.url.origin(),
            own.origin(),
            "{target}: landed elsewhere"
        );
        assert!(
            page.history
                .iter()
                .all(|(u, _)| url::Url::parse(u).unwrap().host_str() == Some("127.0.0.1")),
            "{target} led the browser to {:?}",
            page.history
        );
    }
}

// ---------------------------------------------------------------------------------------
// A forging issuer: real discovery and keys, but a token endpoint that returns the ID token
// under test. Only for the negative cases; the positive flows use the real providers.

#[derive(Clone, Copy, Debug)]
enum Forgery {
    Genuine,
    WrongAudience,
    WrongIssuer,
    Expired,
    AlgNone,
    UnknownKey,
    WrongNonce,
}

struct Forger {
    addr: SocketAddr,
    mode: Arc<Mutex<Forgery>>,
    _task: tokio::task::JoinHandle<()>,
}

async fn forger() -> Forger {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mode = Arc::new(Mutex::new(Forgery::Genuine));
    let key = Arc::new(SigningKey::generate());
    let stranger = Arc::new(SigningKey::generate());
    let nonces: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let m = mode.clone();
    let task = tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let (m, key, stranger, nonces) =
                (m.clone(), key.clone(), stranger.clone(), nonces.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (m, key, stranger, nonces) =
                        (m.clone(), key.clone(), stranger.clone(), nonces.clone());
                    async move {
                        let issuer = format!("http://{addr}");
                        let q: HashMap<String, String> =
                            url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
                                .into_owned()
                                .collect();
                        let resp = match req.uri().path() {
                            "/.well-known/openid-configuration" => json_resp(json!({
                                "issuer": issuer, "authorization_endpoint": format!("{issuer}/authorize"),
                                "token_endpoint": format!("{issuer}/token"), "jwks_uri": format!("{issuer}/jwks"),
                                "id_token_signing_alg_values_supported": ["RS256"]})),
                            "/jwks" => json_resp(json!({"keys": [key.jwk()]})),
                            "/authorize" => {
                                let code = portcullis_core::random::token();
                                nonces
                                    .lock()
                                    .unwrap()
                                    .insert(code.clone(), q["nonce"].clone());
                                let to = format!(
                                    "{}?code={code}&state={}",
                                    q["redirect_uri"], q["state"]
                                );
                                hyper::Response::builder()
                                    .status(302)
                                    .header("location", to)
                                    .body(Full::new(Bytes::new()))
                                    .unwrap()
                            }
                            "/token" => {
                                use http_body_util::BodyExt;
                                let body = req.into_body().collect().await.unwrap().to_bytes();
                                let form: HashMap<String, String> =
                                    url::form_urlencoded::parse(&body).into_owned().collect();
                                let nonce = nonces
                                    .lock()
                                    .unwrap()
                                    .remove(&form["code"])
                                    .unwrap_or_default();
                                let now = portcullis_core::time::unix_now();
                                let mut claims = json!({"iss": issuer, "sub": "victim", "aud": "portcullis", "exp": now + 300,
                                    "iat": now, "nonce": nonce, "email": "victim@example.com"});
                                let mode = *m.lock().unwrap();
                                let token = match mode {
                                    Forgery::Genuine => key.sign(&claims),
                                    Forgery::WrongAudience => {
                                        claims["aud"] = json!("someone-else");
                                        key.sign(&claims)
                                    }
                                    Forgery::WrongIssuer => {
                                        claims["iss"] = json!("https://evil.example.com");
                                        key.sign(&claims)
                                    }
                                    Forgery::Expired => {
                                        claims["exp"] = json!(now - 600);
                                        key.sign(&claims)
                                    }
                                    Forgery::WrongNonce => {
                                        claims["nonce"] = json!("replayed-nonce");
                                        key.sign(&claims)
                                    }
                                    Forgery::UnknownKey => stranger.sign(&claims),
                                    Forgery::AlgNone => format!(
                                        "{}.{}.",
                                        URL_SAFE_NO_PAD.encode(json!({"alg": "none"}).to_string()),
                                        URL_SAFE_NO_PAD.encode(claims.to_string())
                                    ),
                                };
                                json_resp(
                                    json!({"access_token": "at", "token_type": "Bearer", "id_token": token}),
                                )
                            }
                            _ => hyper::Response::builder()
                                .status(404)
                                .body(Full::new(Bytes::new()))
                                .unwrap(),
                        };
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Forger {
        addr,
        mode,
        _task: task,
    }
}

fn json_resp(v: Value) -> hyper::Response<Full<Bytes>> {
    hyper::Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(v.to_string())))
        .unwrap()
}

#[tokio::test]
async fn forged_id_tokens_are_refused_at_the_callback() {
    let upstream = EchoUpstream::start().await;
    let forger = forger().await;
    let port = free_port();
    let p = Portcullis::builder()
        .port(port)
        .env("OAUTH_ENABLED", "true")
        .env("OAUTH_ISSUER_URL", format!("http://{}", forger.addr))
        .env("OAUTH_CLIENT_ID", "portcullis")
        .env("OAUTH_CLIENT_SECRET", "s")
        .env(
            "OAUTH_REDIRECT_URL",
            format!("http://127.0.0.1:{port}/api/v1/auth/callback"),
        )
        .env("UPSTREAM_URL", upstream.url())
        .env("COOKIE_SECRET", SECRET)
        .wait_ready()
        .start()
        .await;
    let cases = [
        (Forgery::WrongAudience, "issued for another client"),
        (Forgery::WrongIssuer, "issued by another issuer"),
        (Forgery::Expired, "expired"),
        (Forgery::AlgNone, "malformed token header"),
        (
            Forgery::UnknownKey,
            "signed by a key the provider does not publish",
        ),
        (Forgery::WrongNonce, "nonce does not match"),
    ];
    for (forgery, logged) in cases {
        *forger.mode.lock().unwrap() = forgery;
        let browser = Browser::new();
        let page = browser.navigate(&p.url("/")).await;
        assert_eq!(
            page.status, 401,
            "{forgery:?} was not refused: {}",
            page.body
        );
        assert!(
            page.body.contains("could not be verified"),
            "{forgery:?}: {}",
            page.body
        );
        assert!(
            browser.cookie("127.0.0.1", "session_token").is_none(),
            "{forgery:?} created a session"
        );
        assert!(
            p.wait_for_log(logged).await,
            "{forgery:?}: no log mentioning {logged:?}\n{}",
            p.logs()
        );
    }
    // The same harness with a genuine token logs in, so the refusals are about the tokens.
    *forger.mode.lock().unwrap() = Forgery::Genuine;
    let browser = Browser::new();
    let page = browser.navigate(&p.url("/")).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(
        page.json()["headers"]["x-forwarded-email"][0],
        "victim@example.com"
    );
}
