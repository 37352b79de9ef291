//! Properties of the whole decision, over many generated inputs (a fixed-seed generator,
//! so a failure repeats): a credential that does not decode or verify is a 4xx or a
//! redirect to log in, never a 2xx without the identity Portcullis vouches for (authentik
//! CVE-2026-25748 let a malformed cookie through with no identity) and never a 5xx; at
//! every entry point (the proxied path, forward-auth, `/me`, the callback).

use super::*;

/// xorshift64*: small, deterministic, good enough to spread inputs.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    /// Bytes a header value may hold (visible ASCII, space, tab, obs-text).
    fn value_byte(&mut self) -> u8 {
        const SPECIAL: &[u8] = b" \t;=,\"%.-_/+\\";
        match self.below(10) {
            0 => SPECIAL[self.below(SPECIAL.len())],
            1 => 0x80 + self.below(0x80) as u8,
            _ => 0x21 + self.below(0x5e) as u8,
        }
    }
    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let len = self.below(max + 1);
        (0..len).map(|_| self.value_byte()).collect()
    }
    /// `text` changed the way a forger or a broken client changes it.
    fn mutate(&mut self, text: &str) -> Vec<u8> {
        let mut b = text.as_bytes().to_vec();
        match self.below(7) {
            0 if !b.is_empty() => {
                let i = self.below(b.len());
                b[i] = self.value_byte();
            }
            1 => b.truncate(self.below(b.len() + 1)),
            2 => b.extend(self.bytes(8)),
            3 if !b.is_empty() => {
                let i = self.below(b.len());
                b.remove(i);
            }
            4 => {
                let i = self.below(b.len() + 1);
                let extra = self.bytes(4);
                b.splice(i..i, extra);
            }
            5 if b.len() > 1 => {
                // Two characters swapped: the same length, a different value.
                let i = self.below(b.len() - 1);
                b.swap(i, i + 1);
            }
            _ => b = self.bytes(64),
        }
        b
    }
}

fn with_raw_header(
    mut req: Request<RequestBody>,
    name: &'static str,
    value: &[u8],
) -> Option<Request<RequestBody>> {
    let value = http::HeaderValue::from_bytes(value).ok()?;
    req.headers_mut().append(name, value);
    Some(req)
}

/// What the property allows: the real identity, or a refusal that is the client's fault.
fn check(a: &Answer, entry: &str, input: &[u8], email: &str) {
    let shown = String::from_utf8_lossy(input);
    assert!(
        !a.status.is_server_error(),
        "{entry}: {} for {shown:?}: {}",
        a.status,
        a.text()
    );
    if a.status.is_success() {
        let seen = match entry {
            "verify" => a
                .headers
                .get("x-auth-request-email")
                .map(|v| v.to_str().unwrap().to_owned()),
            "me" => a.json()["email"].as_str().map(str::to_owned),
            _ => a
                .seen_header("x-forwarded-email")
                .and_then(|v| v.into_iter().next()),
        };
        assert_eq!(
            seen.as_deref(),
            Some(email),
            "{entry}: admitted {shown:?} without the signed-in identity"
        );
    } else if a.status == StatusCode::FOUND {
        let to = a.location();
        assert!(
            to.contains("/authorize") || to.contains("/api/v1/auth/login"),
            "{entry}: a redirect that is not to log in for {shown:?}: {to}"
        );
    } else {
        assert!(
            a.status.is_client_error(),
            "{entry}: {} for {shown:?}",
            a.status
        );
    }
}

const ENTRIES: [(&str, &str); 4] = [
    ("proxied", "/x"),
    ("proxied-html", "/x"),
    ("verify", "/api/v1/auth/verify"),
    ("me", "/api/v1/auth/me"),
];

#[tokio::test]
async fn a_session_cookie_that_is_not_a_session_never_gets_in_without_the_identity() {
    let r = rig(&[]).await;
    let cookie = sign_in(&r, "alice", "staff").await;
    let (name, value) = cookie.split_once('=').unwrap();
    let mut g = Gen(0x9e37_79b9_7f4a_7c15);
    let mut refused = 0;
    for round in 0..2000 {
        let forged = g.mutate(value);
        let mut line = format!("{name}=").into_bytes();
        line.extend(&forged);
        // Sometimes beside the real cookie, before or after it, or as a second field.
        match round % 5 {
            1 => line = [format!("{cookie}; ").as_bytes(), &line].concat(),
            2 => line.extend(format!("; {cookie}").as_bytes()),
            _ => {}
        }
        let (entry, path) = ENTRIES[round % ENTRIES.len()];
        let accept = if entry == "proxied-html" {
            "text/html"
        } else {
            "application/json"
        };
        let Some(req) =
            with_raw_header(request("GET", path, &[("accept", accept)]), "cookie", &line)
        else {
            continue;
        };
        let req = if round % 5 == 3 {
            let Some(req) = with_raw_header(req, "cookie", format!("{name}=x").as_bytes()) else {
                continue;
            };
            req
        } else {
            req
        };
        let a = call(&r.app, req).await;
        check(&a, entry, &line, "alice@example.com");
        if !a.status.is_success() {
            refused += 1;
        }
    }
    // The generator did produce refusals (and so the property was exercised).
    assert!(refused > 1000, "only {refused} refused");
}

#[tokio::test]
async fn a_bearer_token_that_does_not_verify_never_gets_in_without_the_identity() {
    let r = rig(&[("AUTH__BEARER_TOKENS", "true")]).await;
    let idp = r.idp.as_ref().unwrap();
    let now = portcullis_core::time::unix_now();
    let token = idp.sign(&json!({
        "iss": idp.issuer(), "aud": "portcullis", "sub": "svc-1",
        "iat": now, "exp": now + 300, "email": "svc@example.com",
    }));
    let mut g = Gen(0xd1b5_4a32_d192_ed03);
    let segments: Vec<&str> = token.split('.').collect();
    let mut admitted_unchanged = 0;
    for round in 0..2000 {
        // Change one segment of the token, or the whole, or its scheme.
        let forged: Vec<u8> = match round % 4 {
            0..=2 => {
                let which = round % 3;
                let mut parts: Vec<Vec<u8>> =
                    segments.iter().map(|s| s.as_bytes().to_vec()).collect();
                parts[which] = g.mutate(segments[which]);
                parts.join(&b'.')
            }
            _ => g.mutate(&token),
        };
        let mut value = b"Bearer ".to_vec();
        value.extend(&forged);
        let (entry, path) = ENTRIES[round % ENTRIES.len()];
        let Some(req) = with_raw_header(
            request("GET", path, &[("accept", "application/json")]),
            "authorization",
            &value,
        ) else {
            continue;
        };
        let a = call(&r.app, req).await;
        if forged == token.as_bytes() {
            admitted_unchanged += 1;
        }
        check(&a, entry, &value, "svc@example.com");
    }
    // A mutation can leave a token that still verifies only by being the same token.
    assert!(admitted_unchanged < 200, "{admitted_unchanged}");
}

#[tokio::test]
async fn a_callback_with_a_forged_state_or_login_cookie_signs_nobody_in() {
    let r = rig(&[]).await;
    let mut g = Gen(0x94d0_49bb_1331_11eb);
    for _ in 0..1000 {
        let state = g.bytes(40);
        let code = g.bytes(20);
        let login_cookie = g.bytes(80);
        let target = format!(
            "/api/v1/auth/callback?state={}&code={}",
            url::form_urlencoded::byte_serialize(&state).collect::<String>(),
            url::form_urlencoded::byte_serialize(&code).collect::<String>()
        );
        let mut line = b"portcullis_login_AAAAAAAAAAAAAAAA=".to_vec();
        line.extend(&login_cookie);
        let Some(req) = with_raw_header(request("GET", &target, &[]), "cookie", &line) else {
            continue;
        };
        let a = call(&r.app, req).await;
        assert!(
            a.status.is_client_error(),
            "{} for state {:?}: {}",
            a.status,
            String::from_utf8_lossy(&state),
            a.text()
        );
        assert!(
            !a.cookies()
                .iter()
                .any(|c| c.starts_with("session_token=") && c.len() > 14),
            "a session cookie was set"
        );
    }
}
