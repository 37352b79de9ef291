//! One negative test per class of the peers' advisories not covered elsewhere: each
//! would fail if the property it names broke.

use super::*;

/// Traefik CVE-2024-45410: a client names identity headers in `Connection`, hoping the
/// proxy removes what it set itself as hop-by-hop (or lets the client's copy through).
/// Hop-by-hop removal runs before the identity is set.
#[tokio::test]
async fn identity_headers_named_in_connection_neither_vanish_nor_pass_forged() {
    let r = rig(&[]).await;
    let cookie = sign_in(&r, "alice", "staff").await;
    let a = call(
        &r.app,
        request(
            "GET",
            "/x",
            &[
                ("cookie", &cookie),
                (
                    "connection",
                    "keep-alive, X-Forwarded-Email, X-Forwarded-User, x_forwarded_groups, X-Portcullis-Jwt-Assertion",
                ),
                ("x-forwarded-email", "root@evil.example"),
                ("x-forwarded-user", "root"),
                ("x_forwarded_groups", "admins"),
            ],
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(
        a.seen_header("x-forwarded-email").unwrap(),
        vec!["alice@example.com"]
    );
    assert!(a.seen_header("x-forwarded-user").unwrap()[0].starts_with("dev-"));
    assert_eq!(a.seen_header("x-forwarded-groups").unwrap(), vec!["staff"]);
    assert!(a.seen_header("x_forwarded_groups").is_none());

    // Open mode: the forged copy named in Connection does not pass either.
    let open = open_rig(&[]).await;
    let a = call(
        &open.app,
        request(
            "GET",
            "/x",
            &[
                ("connection", "X-Forwarded-User"),
                ("x-forwarded-user", "root"),
            ],
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.seen_header("x-forwarded-user").is_none());
}

/// What frameworks read as "where the request was going" (authentik CVE-2024-47070,
/// the X-Original-URL rewrites of IIS and Symfony, Spring's X-Forwarded-Prefix): from an
/// untrusted client they neither change the decision nor reach the app.
#[tokio::test]
async fn original_url_headers_from_an_untrusted_peer_change_nothing() {
    let r = rig_with(Some(ROUTES), &[]).await;
    let pretend = [
        ("x-original-url", "/status"),
        ("x-rewrite-url", "/status"),
        ("x-forwarded-uri", "/status"),
        ("x-forwarded-prefix", "/status"),
        ("x-forwarded-host", "evil.example"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-port", "443"),
        ("x-real-ip", "10.0.0.1"),
        ("x-forwarded-for", "10.0.0.1"),
        ("accept", "application/json"),
    ];
    // /app needs a login whatever the headers say /status is.
    let a = call(&r.app, request("GET", "/app/x", &pretend)).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{}", a.text());
    // Signed in: none of them reaches the app; the forwarding headers are Portcullis's.
    let cookie = sign_in(&r, "alice", "").await;
    let mut headers = pretend.to_vec();
    headers.push(("cookie", &cookie));
    let a = call(&r.app, request("GET", "/app/x", &headers)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    for name in [
        "x-original-url",
        "x-rewrite-url",
        "x-forwarded-uri",
        "x-forwarded-prefix",
        "x-forwarded-port",
        "x-real-ip",
    ] {
        assert!(a.seen_header(name).is_none(), "{name} reached the app");
    }
    assert_eq!(a.seen_header("x-forwarded-host").unwrap(), vec!["app.test"]);
    assert_eq!(a.seen_header("x-forwarded-proto").unwrap(), vec!["http"]);
    assert_eq!(
        a.seen_header("x-forwarded-for").unwrap(),
        vec!["192.0.2.10"]
    );
}

/// authentik CVE-2024-47070: an `X-Forwarded-For` a trusted proxy sent that does not
/// parse must not leave the client address to a guess.
#[tokio::test]
async fn a_trusted_proxys_unparsable_forwarded_for_fails_closed() {
    let r = rig(&[("TRUSTED_PROXIES", "192.0.2.0/24")]).await;
    let cookie = sign_in(&r, "alice", "").await;
    for chain in [
        "garbage",
        "198.51.100.7, unknown",
        "198.51.100.7,,192.0.2.9",
    ] {
        let a = call(
            &r.app,
            request(
                "GET",
                "/x",
                &[("cookie", &cookie), ("x-forwarded-for", chain)],
            ),
        )
        .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{chain}: {}", a.text());
    }
    let a = call(
        &r.app,
        request(
            "GET",
            "/x",
            &[("cookie", &cookie), ("x-forwarded-for", "198.51.100.7")],
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(
        a.seen_header("x-forwarded-for").unwrap(),
        vec!["198.51.100.7, 192.0.2.10"]
    );
}

/// Envoy CVE-2023-27496 and its kind: the callback given nonsense answers 4xx, never a
/// 5xx or a panic, whatever is missing, repeated or oversized.
#[tokio::test]
async fn callback_abuse_is_answered_4xx() {
    let r = rig(&[]).await;
    let long = "s".repeat(16 * 1024);
    let cb = "/api/v1/auth/callback";
    let mut cases: Vec<Request<RequestBody>> = vec![
        request("GET", cb, &[]),
        request("GET", &format!("{cb}?code=x"), &[]),
        request("GET", &format!("{cb}?state=x"), &[]),
        request("GET", &format!("{cb}?state=a&state=b&code=c&code=d"), &[]),
        request("GET", &format!("{cb}?state={long}&code={long}"), &[]),
        request(
            "GET",
            &format!("{cb}?error=access_denied&error_description={long}"),
            &[],
        ),
        request("GET", &format!("{cb}?state=%ff%fe&code=%00"), &[]),
        request("PUT", cb, &[]),
        request("DELETE", cb, &[]),
    ];
    for body in [
        String::new(),
        "state=&code=".into(),
        "id_token=&state=x".into(),
        format!("id_token={long}&state=x"),
        "%%%=%%%".into(),
        "state=a&state=b".into(),
        "x".repeat(2 * 1024 * 1024),
    ] {
        let mut req = request(
            "POST",
            cb,
            &[("content-type", "application/x-www-form-urlencoded")],
        );
        *req.body_mut() = RequestBody::full(body);
        cases.push(req);
    }
    for (i, req) in cases.into_iter().enumerate() {
        let what = format!(
            "{} {}",
            req.method(),
            &req.uri().to_string()[..req.uri().to_string().len().min(60)]
        );
        let a = call(&r.app, req).await;
        assert!(
            a.status.is_client_error(),
            "case {i} ({what}): {} {}",
            a.status,
            a.text()
        );
    }
    // And a real login still works afterwards.
    sign_in(&r, "alice", "").await;
}

/// Pomerium GO-2024-2965: Portcullis's own answers never carry a token: not `/me`, not
/// the refusal pages, not the login redirect.
#[tokio::test]
async fn own_answers_never_carry_a_token() {
    let r = rig(&[
        ("OAUTH_SCOPES", "openid,email,profile,offline_access"),
        ("AUTH__ALLOWED_GROUPS", "admins"),
    ])
    .await;
    let cookie = sign_in(&r, "dave", "admins").await;
    let me = get_as(&r, &cookie, "/api/v1/auth/me").await;
    assert_eq!(me.status, StatusCode::OK);
    let body = me.text();
    for leak in ["token", "eyJ", "refresh", "secret", "session_token"] {
        assert!(!body.contains(leak), "/me carries {leak}: {body}");
    }
    let refused = try_sign_in(&r, "carol", "staff")
        .await
        .expect_err("refused");
    let page = refused.text();
    for leak in ["eyJ", "code=", "access_token", "id_token"] {
        assert!(
            !page.contains(leak),
            "the refusal page carries {leak}: {page}"
        );
    }
    let headers = format!("{:?}", refused.headers);
    assert!(!headers.contains("eyJ"), "{headers}");
}
