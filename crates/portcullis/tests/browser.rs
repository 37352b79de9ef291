//! The sign-in pages in a real browser: Debian's Chromium driven by playwright-core
//! (tests/browser/login.mjs) through Portcullis and the real oidc-provider. The
//! branded provider-choice page is kept as a screenshot in tests/artifacts/.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use portcullis_testkit::prelude::*;
use serde_json::{Value, json};

fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs the browser script; returns what it saw.
fn chromium(config: Value) -> Value {
    let dir = root().join("tests/browser");
    assert!(
        dir.join("node_modules/playwright-core").exists(),
        "playwright-core is not installed: run scripts/test (it runs `npm ci` in tests/browser)"
    );
    let out = Command::new("node")
        .arg(dir.join("login.mjs"))
        .arg(config.to_string())
        .current_dir(&dir)
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| {
        panic!(
            "no result from the browser ({e}):\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn client(id: &str, secret: &str, redirect: &str, implicit: bool) -> Value {
    if implicit {
        json!({"client_id": id, "client_secret": secret, "redirect_uris": [redirect],
               "grant_types": ["implicit"], "response_types": ["id_token"]})
    } else {
        json!({"client_id": id, "client_secret": secret, "redirect_uris": [redirect],
               "grant_types": ["authorization_code"], "response_types": ["code"]})
    }
}

#[tokio::test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "needs Chromium, oidc-provider (npm): run scripts/test"
)]
async fn the_branded_login_page_works_in_chromium_from_button_to_app() {
    let upstream = EchoUpstream::start().await;
    let port = free_port();
    let callback = format!("http://127.0.0.1:{port}/api/v1/auth/callback");
    let op = OidcProvider::start_with(
        "okta-client",
        "okta-secret",
        &[],
        json!({
            "groups": {"alice": ["eng"]},
            "clients": [
                client("okta-client", "okta-secret", &callback, false),
                client("acme-client", "acme-secret", &callback, false),
            ],
        }),
    )
    .await;
    let logo = portcullis_testkit::TempDir::new("logo");
    let logo_file = logo.path().join("logo.svg");
    std::fs::write(
        &logo_file,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="120" height="40"><rect width="120" height="40" rx="6" fill="#0f766e"/><text x="60" y="26" font-size="18" text-anchor="middle" fill="#fff">ACME</text></svg>"##,
    )
    .unwrap();
    let mut b = Portcullis::builder()
        .port(port)
        .env("OAUTH_REDIRECT_URL", &callback)
        .env("UPSTREAM_URL", upstream.url())
        .env("COOKIE_SECRET", SECRET)
        .env("BRANDING__TITLE", "Acme internal tools")
        .env("BRANDING__MESSAGE", "Sign in with your work account.")
        .env("BRANDING__PRIMARY_COLOR", "#0f766e")
        .env("BRANDING__LOGO_FILE", logo_file.display().to_string())
        .env("AUTH__OPENID_CONNECT__CUSTOM__DISPLAY_NAME", "Acme SSO");
    for (name, id, secret) in [
        ("OKTA", "okta-client", "okta-secret"),
        ("CUSTOM", "acme-client", "acme-secret"),
    ] {
        b = b
            .env(&format!("AUTH__OPENID_CONNECT__{name}__ENABLED"), "true")
            .env(&format!("AUTH__OPENID_CONNECT__{name}__CLIENT_ID"), id)
            .env(
                &format!("AUTH__OPENID_CONNECT__{name}__CLIENT_SECRET"),
                secret,
            )
            .env(
                &format!("AUTH__OPENID_CONNECT__{name}__DISCOVERY_URL"),
                op.issuer.clone(),
            )
            .env(
                &format!("AUTH__OPENID_CONNECT__{name}__SCOPES"),
                "openid,email,profile,groups",
            );
    }
    let p = b.wait_ready().start().await;

    let artifacts = root().join("tests/artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let screenshot = artifacts.join("login-page.png");
    let _ = std::fs::remove_file(&screenshot);
    let start = p.url("/wiki/Home?lang=en");
    let seen = tokio::task::spawn_blocking(move || {
        chromium(json!({
            "start": start,
            "button": "Log in with Acme SSO",
            "user": "alice",
            "landing": start,
            "screenshot": screenshot,
        }))
    })
    .await
    .unwrap();
    assert!(seen["error"].is_null(), "{seen:#}\n{}", p.logs());
    assert_eq!(seen["title"], "Acme internal tools");
    assert_eq!(seen["heading"], "Acme internal tools");
    assert_eq!(seen["logoAlt"], "Acme internal tools");
    assert_eq!(
        seen["buttons"],
        // In the order of the providers' configured names (custom, okta).
        json!(["Log in with Acme SSO", "Log in with Okta"])
    );
    // No JavaScript on the page, nothing fetched from anywhere but Portcullis and the
    // provider, and the first Tab lands on the first button with a visible focus ring.
    assert_eq!(seen["scripts"], 0);
    let own = format!("http://127.0.0.1:{port}/");
    let page_requests = seen["pageRequests"].as_array().unwrap();
    assert!(!page_requests.is_empty());
    assert!(
        page_requests
            .iter()
            .all(|u| u.as_str().unwrap().starts_with(&own)),
        "{seen:#}"
    );
    assert_eq!(seen["firstFocus"], "Log in with Acme SSO");
    assert_eq!(seen["focusOutline"], "solid");
    // White text on the configured teal: a contrast of 5.5:1.
    assert_eq!(
        seen["buttonColors"],
        json!(["rgb(255, 255, 255)", "rgb(15, 118, 110)"])
    );
    assert!(root().join("tests/artifacts/login-page.png").exists());

    // The button led to the provider, and the sign-in back to the page first asked for.
    assert!(
        seen["providerUrl"]
            .as_str()
            .unwrap()
            .starts_with(&op.issuer)
    );
    let echo: Value = serde_json::from_str(seen["body"].as_str().unwrap()).unwrap();
    assert_eq!(echo["path"], "/wiki/Home");
    assert_eq!(echo["headers"]["x-forwarded-email"][0], "alice@example.com");
    assert_eq!(echo["headers"]["x-forwarded-groups"][0], "eng");
    assert_eq!(echo["headers"]["x-forwarded-provider"][0], "custom");
    assert!(
        seen["pageConsoleErrors"].as_array().unwrap().is_empty(),
        "{seen:#}"
    );
}

#[tokio::test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "needs Chromium, oidc-provider (npm): run scripts/test"
)]
async fn the_implicit_fragment_page_signs_in_with_chromium_running_its_script() {
    let upstream = EchoUpstream::start().await;
    let port = free_port();
    let callback = format!("http://127.0.0.1:{port}/api/v1/auth/callback");
    let page = format!("http://127.0.0.1:{port}/api/v1/auth/redirect");
    let op = OidcProvider::start_with(
        "spa-client",
        "spa-secret",
        &[],
        json!({
            "idTokenClaims": true,
            "clients": [client("spa-client", "spa-secret", &page, true)],
        }),
    )
    .await;
    let p = Portcullis::builder()
        .port(port)
        .env("OAUTH_REDIRECT_URL", &callback)
        .env("UPSTREAM_URL", upstream.url())
        .env("COOKIE_SECRET", SECRET)
        .env("AUTH__OPENID_CONNECT__SPA__ENABLED", "true")
        .env("AUTH__OPENID_CONNECT__SPA__CLIENT_ID", "spa-client")
        .env(
            "AUTH__OPENID_CONNECT__SPA__DISCOVERY_URL",
            op.issuer.clone(),
        )
        .env("AUTH__OPENID_CONNECT__SPA__FLOW", "implicit")
        .env("AUTH__OPENID_CONNECT__SPA__RESPONSE_MODE", "fragment")
        .wait_ready()
        .start()
        .await;
    let start = p.url("/reports");
    let seen = tokio::task::spawn_blocking(move || {
        chromium(json!({"start": start, "user": "bob", "landing": start}))
    })
    .await
    .unwrap();
    assert!(seen["error"].is_null(), "{seen:#}\n{}", p.logs());
    let echo: Value = serde_json::from_str(seen["body"].as_str().unwrap()).unwrap();
    assert_eq!(echo["headers"]["x-forwarded-email"][0], "bob@example.com");
    // The fragment page was visited, and the ID token never went to the app or into a
    // request URL: it travelled only in the POST body to the callback.
    let requests: Vec<&str> = seen["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap())
        .collect();
    assert!(
        requests
            .iter()
            .any(|u| u.starts_with(&p.url("/api/v1/auth/redirect"))),
        "{requests:?}"
    );
    assert!(
        requests.iter().all(|u| !u.contains("id_token=")),
        "{requests:?}"
    );
    assert!(
        echo["headers"]["cookie"][0]
            .as_str()
            .is_none_or(|c| !c.contains("id_token"))
    );
}
