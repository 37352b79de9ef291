//! The provider and the operators end sessions: back-channel and front-channel logout,
//! the admin API, and the marks that refuse a revoked user's bearer tokens and logins.
//! Logout tokens here are signed with the development provider's key; the end-to-end
//! tests do the same against oidc-provider, which signs them itself.

use super::*;
use portcullis_identity::LOGOUT_EVENT;
use portcullis_session::{Index, SessionStore};

const ADMIN_TOKEN: &str = "admin-token-0123456789-0123456789-abcdef";

/// A logout token's claims for the development provider, with `extra` merged in (a
/// `null` removes a claim).
fn logout_claims(r: &Rig, extra: Value) -> Value {
    let idp = r.idp.as_ref().unwrap();
    let mut claims = json!({
        "iss": idp.issuer(),
        "aud": "portcullis",
        "iat": portcullis_core::time::unix_now(),
        "jti": portcullis_core::random::token(),
        "events": {LOGOUT_EVENT: {}},
    });
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            claims.as_object_mut().unwrap().remove(k);
        } else {
            claims[k] = v.clone();
        }
    }
    claims
}

fn sign_logout(r: &Rig, claims: &Value) -> String {
    let key = r.idp.as_ref().unwrap().signing_key();
    key.sign_with_header(
        &json!({"alg": "RS256", "typ": "logout+jwt", "kid": key.kid()}),
        claims,
    )
}

async fn post_logout_token(r: &Rig, token: &str) -> Answer {
    let body = form_urlencoded::Serializer::new(String::new())
        .append_pair("logout_token", token)
        .finish();
    let req = Request::builder()
        .method("POST")
        .uri("/api/v1/auth/backchannel-logout")
        .header("host", "app.test")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(RequestBody::full(body))
        .unwrap();
    call(&r.app, req).await
}

async fn alive(r: &Rig, cookie: &str) -> bool {
    get_as(r, cookie, "/x").await.status == StatusCode::OK
}

#[tokio::test]
async fn a_logout_token_ends_that_provider_session_once_and_nothing_else() {
    let r = rig(&[]).await;
    let laptop = sign_in(&r, "amy", "").await;
    let phone = sign_in(&r, "amy", "").await;
    let other = sign_in(&r, "bo", "").await;
    let sids = r.idp.as_ref().unwrap().sessions_of("amy");
    assert_eq!(sids.len(), 2);

    let token = sign_logout(&r, &logout_claims(&r, json!({"sid": sids[0]})));
    let done = post_logout_token(&r, &token).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.text());
    assert_eq!(done.headers["cache-control"], "no-store");
    assert!(
        !alive(&r, &laptop).await,
        "the provider session's session lives on"
    );
    // Forward-auth decides the same way.
    let check = call(
        &r.app,
        request(
            "GET",
            "/api/v1/auth/verify",
            &[("cookie", &laptop), ("accept", "application/json")],
        ),
    )
    .await;
    assert_eq!(check.status, StatusCode::UNAUTHORIZED);
    assert!(
        alive(&r, &phone).await,
        "another provider session of the user ended"
    );
    assert!(alive(&r, &other).await);

    // The same token again is a replay: refused, and it ends nothing.
    let again = post_logout_token(&r, &token).await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST);
    assert_eq!(again.json()["error"], "invalid_request");
    assert_eq!(again.headers["cache-control"], "no-store");

    // By subject: every session of the user at that provider.
    let sub = portcullis_devidp::subject_of("amy");
    let token = sign_logout(&r, &logout_claims(&r, json!({"sub": sub})));
    assert_eq!(post_logout_token(&r, &token).await.status, StatusCode::OK);
    assert!(!alive(&r, &phone).await);
    assert!(alive(&r, &other).await);
}

#[tokio::test]
async fn forged_expired_or_malformed_logout_tokens_end_nothing() {
    let r = rig(&[]).await;
    let cookie = sign_in(&r, "cy", "").await;
    let sid = r.idp.as_ref().unwrap().sessions_of("cy")[0].clone();
    let now = portcullis_core::time::unix_now();
    let with = |extra: Value| {
        let mut e = extra;
        if e.get("sid").is_none() {
            e["sid"] = json!(sid);
        }
        sign_logout(&r, &logout_claims(&r, e))
    };
    let other_key = portcullis_devidp::SigningKey::generate();
    let forged = other_key.sign_with_header(
        &json!({"alg": "RS256", "typ": "logout+jwt", "kid": r.idp.as_ref().unwrap().signing_key().kid()}),
        &logout_claims(&r, json!({"sid": sid})),
    );
    let unsigned = {
        use base64::Engine;
        let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "{}.{}.",
            e.encode(r#"{"alg":"none","typ":"logout+jwt"}"#),
            e.encode(logout_claims(&r, json!({"sid": sid})).to_string())
        )
    };
    let id_token_shaped = r.idp.as_ref().unwrap().sign(&logout_claims(
        &r,
        json!({"sid": sid, "nonce": "n", "typ": null}),
    ));
    let cases: Vec<(&str, String)> = vec![
        ("another key", forged),
        ("alg none", unsigned),
        ("wrong audience", with(json!({"aud": "someone-else"}))),
        ("wrong issuer", with(json!({"iss": "https://evil.example"}))),
        ("issued long ago", with(json!({"iat": now - 3600}))),
        ("issued in the future", with(json!({"iat": now + 3600}))),
        ("expired", with(json!({"exp": now - 3600}))),
        ("no events", with(json!({"events": null}))),
        (
            "another event",
            with(json!({"events": {"https://example.com/other": {}}})),
        ),
        (
            "event not an object",
            with(json!({"events": {LOGOUT_EVENT: "yes"}})),
        ),
        ("a nonce", id_token_shaped),
        (
            "no sub and no sid",
            sign_logout(&r, &logout_claims(&r, json!({}))),
        ),
        ("no jti", with(json!({"jti": null}))),
        ("empty", String::new()),
        ("not a JWT", "x".repeat(100)),
        ("three dots", "a.b.c".into()),
    ];
    for (what, token) in &cases {
        let a = post_logout_token(&r, token).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{what}: {}", a.text());
        assert_eq!(a.json()["error"], "invalid_request", "{what}");
        assert!(alive(&r, &cookie).await, "{what} logged the user out");
    }
    // A typ that says "not a logout token".
    let key = r.idp.as_ref().unwrap().signing_key();
    let at = key.sign_with_header(
        &json!({"alg": "RS256", "typ": "at+jwt", "kid": key.kid()}),
        &logout_claims(&r, json!({"sid": sid})),
    );
    assert_eq!(
        post_logout_token(&r, &at).await.status,
        StatusCode::BAD_REQUEST
    );
    // No form field at all, and a body too large to be a form.
    let empty = Request::builder()
        .method("POST")
        .uri("/api/v1/auth/backchannel-logout")
        .header("host", "app.test")
        .body(RequestBody::empty())
        .unwrap();
    assert_eq!(call(&r.app, empty).await.status, StatusCode::BAD_REQUEST);
    let huge = Request::builder()
        .method("POST")
        .uri("/api/v1/auth/backchannel-logout")
        .header("host", "app.test")
        .body(RequestBody::full(vec![b'a'; 4 * 1024 * 1024]))
        .unwrap();
    assert_eq!(
        call(&r.app, huge).await.status,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    // GET is not how logout tokens arrive.
    let get = call(
        &r.app,
        request("GET", "/api/v1/auth/backchannel-logout", &[]),
    )
    .await;
    assert_eq!(get.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(alive(&r, &cookie).await);
    // And the genuine token still works after all that.
    let good = with(json!({}));
    assert_eq!(post_logout_token(&r, &good).await.status, StatusCode::OK);
    assert!(!alive(&r, &cookie).await);
}

#[tokio::test]
async fn front_channel_logout_ends_the_named_provider_session_in_a_frame_only_the_provider_may_draw()
 {
    let r = rig(&[]).await;
    let cookie = sign_in(&r, "dee", "").await;
    let keep = sign_in(&r, "dee", "").await;
    let idp = r.idp.as_ref().unwrap();
    let sid = idp.sessions_of("dee")[0].clone();
    let unknown = call(
        &r.app,
        request(
            "GET",
            &format!("/api/v1/auth/frontchannel-logout?iss=https%3A%2F%2Fevil.example&sid={sid}"),
            &[],
        ),
    )
    .await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    assert!(alive(&r, &cookie).await);
    let iss: String = form_urlencoded::byte_serialize(idp.issuer().as_bytes()).collect();
    let page = call(
        &r.app,
        request(
            "GET",
            &format!("/api/v1/auth/frontchannel-logout?iss={iss}&sid={sid}"),
            &[],
        ),
    )
    .await;
    assert_eq!(page.status, StatusCode::OK);
    let csp = page.headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains(&format!("frame-ancestors {}", idp.issuer())),
        "{csp}"
    );
    assert_eq!(page.headers["cache-control"], "no-store");
    assert!(!alive(&r, &cookie).await);
    assert!(alive(&r, &keep).await);
}

async fn admin(r: &Rig, method: &str, target: &str, token: Option<&str>) -> Answer {
    let mut b = Request::builder()
        .method(method)
        .uri(target)
        .header("host", "admin");
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    let resp = r
        .app
        .handle_admin(&conn(), b.body(RequestBody::empty()).unwrap())
        .await;
    let (parts, body) = resp.into_parts();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

#[tokio::test]
async fn the_admin_api_lists_and_ends_sessions_with_its_token_only() {
    let r = rig(&[
        ("ADMIN__LISTEN_ADDR", "127.0.0.1:9999"),
        ("ADMIN__TOKEN", ADMIN_TOKEN),
    ])
    .await;
    let first = sign_in(&r, "eve", "").await;
    let second = sign_in(&r, "eve", "").await;
    let other = sign_in(&r, "fin", "").await;
    let list = "/api/v1/admin/sessions?user=eve%40example.com";
    for token in [
        None,
        Some("wrong"),
        Some(&ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1]),
    ] {
        let a = admin(&r, "GET", list, token).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{token:?}");
        assert!(!a.text().contains("eve"));
    }
    let listed = admin(&r, "GET", list, Some(ADMIN_TOKEN)).await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.text());
    let sessions = listed.json()["sessions"].as_array().unwrap().clone();
    assert_eq!(sessions.len(), 2, "{sessions:?}");
    for s in &sessions {
        assert_eq!(s["provider"], "oidc");
        assert_eq!(s["user"], "eve@example.com");
        assert_eq!(s["client"], "192.0.2.10");
        assert!(s["created_at"].as_u64().unwrap() <= s["last_seen"].as_u64().unwrap());
        assert!(s["expires_at"].as_u64().unwrap() > s["created_at"].as_u64().unwrap());
    }
    // Never a cookie value.
    for cookie in [&first, &second] {
        let value = cookie.split_once('=').unwrap().1;
        assert!(!listed.text().contains(value));
    }
    // By user name and by subject too.
    let by_name = admin(
        &r,
        "GET",
        "/api/v1/admin/sessions?user=eve",
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(by_name.json()["sessions"].as_array().unwrap().len(), 2);
    let id = sessions[0]["id"].as_str().unwrap();
    let one = admin(
        &r,
        "DELETE",
        &format!("/api/v1/admin/sessions/{id}"),
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(one.status, StatusCode::OK);
    assert_eq!(one.json()["ended"], 1);
    let gone = admin(
        &r,
        "DELETE",
        &format!("/api/v1/admin/sessions/{id}"),
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert_eq!(
        usize::from(alive(&r, &first).await) + usize::from(alive(&r, &second).await),
        1
    );
    let all = admin(&r, "DELETE", list, Some(ADMIN_TOKEN)).await;
    assert_eq!(all.json()["ended"], 1);
    assert!(!alive(&r, &first).await && !alive(&r, &second).await);
    assert!(alive(&r, &other).await);
    // The admin API is not served on the public listener.
    let public = call(
        &r.app,
        request(
            "GET",
            list,
            &[
                ("authorization", &format!("Bearer {ADMIN_TOKEN}")),
                ("accept", "application/json"),
            ],
        ),
    )
    .await;
    assert!(!public.text().contains("sessions\""), "{}", public.text());
    // Health and metrics are.
    assert_eq!(
        admin(&r, "GET", "/healthz", None).await.status,
        StatusCode::OK
    );
    let metrics = admin(&r, "GET", "/metrics", None).await;
    assert!(
        metrics
            .text()
            .contains("portcullis_sessions_ended_total{by=\"admin\"} 2"),
        "{}",
        metrics.text()
    );
}

#[tokio::test]
async fn a_revoked_users_bearer_tokens_and_a_disabled_users_logins_are_refused() {
    let r = rig(&[
        ("AUTH__BEARER_TOKENS", "true"),
        ("ADMIN__LISTEN_ADDR", "127.0.0.1:9999"),
        ("ADMIN__TOKEN", ADMIN_TOKEN),
    ])
    .await;
    let idp = r.idp.as_ref().unwrap();
    let now = portcullis_core::time::unix_now();
    let bearer = |iat: u64| {
        idp.sign(&json!({
            "iss": idp.issuer(), "aud": "portcullis", "sub": "gus-sub",
            "iat": iat, "exp": now + 300, "email": "gus@example.com",
        }))
    };
    let old = bearer(now - 5);
    let with_bearer =
        |t: String| request("GET", "/x", &[("authorization", &format!("Bearer {t}"))]);
    let first = call(&r.app, with_bearer(old.clone())).await;
    assert_eq!(
        first.status,
        StatusCode::OK,
        "{} {:?}",
        first.text(),
        first.headers
    );
    let ended = admin(
        &r,
        "DELETE",
        "/api/v1/admin/sessions?user=gus%40example.com",
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(ended.status, StatusCode::OK);
    let refused = call(&r.app, with_bearer(old)).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert!(
        refused.headers["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );
    // A token issued after the revocation is fine.
    assert_eq!(
        call(&r.app, with_bearer(bearer(now + 2))).await.status,
        StatusCode::OK
    );

    // A disabled account: no login, no bearer token, until enabled.
    let cookie = sign_in(&r, "hal", "").await;
    let auth = r.app.auth.as_ref().unwrap();
    let email = Index::Email("hal@example.com").key();
    auth.sessions.set_disabled(&email, true).await.unwrap();
    let refused = try_sign_in(&r, "hal", "")
        .await
        .expect_err("a disabled user signed in");
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.text());
    let token = idp.sign(&json!({
        "iss": idp.issuer(), "aud": "portcullis", "sub": "hal-sub",
        "iat": now, "exp": now + 300, "email": "hal@example.com",
    }));
    assert_eq!(
        call(&r.app, with_bearer(token.clone())).await.status,
        StatusCode::UNAUTHORIZED
    );
    auth.sessions.set_disabled(&email, false).await.unwrap();
    assert!(try_sign_in(&r, "hal", "").await.is_ok());
    assert_eq!(
        call(&r.app, with_bearer(token)).await.status,
        StatusCode::OK
    );
    // The session from before is untouched by marks (a revocation ends it, not a mark).
    assert!(alive(&r, &cookie).await);
}
