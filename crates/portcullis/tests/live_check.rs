//! `portcullis check --live`: the binary, run as a user runs it, against Portcullis
//! proxying on its own and behind the real nginx and Caddy running the configurations in
//! `examples/` (addresses changed), and against deliberately broken set-ups it must catch.
//!
//! The check runs from `[::1]` while the front proxy reaches Portcullis from `127.0.0.1`
//! (the only trusted proxy), so the checker is an untrusted client as it is in a real
//! deployment.
#![allow(clippy::unwrap_used)]

use portcullis_testkit::prelude::*;
use portcullis_testkit::{Caddy, Nginx};

const PORTCULLIS_IN_EXAMPLES: &str = "127.0.0.1:4180";
const APP_IN_EXAMPLES: &str = "127.0.0.1:3000";

/// Runs `portcullis check --live url` with the session cookie in a file: exit code and
/// output. (Off the test's thread: the upstream and the provider run on it.)
async fn check_live(url: &str, cookie: Option<&str>, extra: &[&str]) -> (i32, String) {
    let dir = TempDir::new("live");
    let mut cmd = std::process::Command::new(portcullis_bin());
    cmd.args(["check", "--live", url]).args(extra);
    if let Some(cookie) = cookie {
        let file = dir.path().join("cookie.txt");
        std::fs::write(&file, format!("session_token={cookie}\n")).unwrap();
        cmd.arg("--cookie-file").arg(&file);
    }
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn session_of(browser: &Browser) -> String {
    browser.cookie("127.0.0.1", "session_token").unwrap()
}

#[tokio::test]
#[cfg_attr(not(feature = "e2e"), ignore = "needs the e2e tier: run scripts/test")]
async fn a_proxying_portcullis_passes_and_a_trusted_client_is_caught() {
    let s = with_dev_idp(&[("DIAGNOSTICS__CANARY", "true")]).await;
    let browser = logged_in(&s.portcullis, "ada", "").await;
    let cookie = session_of(&browser);
    let url = s.portcullis.url("");

    let (code, out) = check_live(&url, Some(&cookie), &[]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("none got through"), "{out}");
    assert!(
        out.contains("ok    forged identity headers with a session"),
        "{out}"
    );
    assert!(
        out.contains("ok    identity headers named in Connection"),
        "{out}"
    );
    assert!(!out.contains("FAIL"), "{out}");

    // As JSON, for a pipeline.
    let (code, out) = check_live(&url, Some(&cookie), &["--format", "json"]).await;
    assert_eq!(code, 0, "{out}");
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["result"], "ok", "{out}");
    assert!(report["attempts"].as_array().unwrap().len() >= 8, "{out}");

    // Without a credential only the unauthenticated attempts run, and pass.
    let (code, out) = check_live(&url, None, &[]).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("only the attempts without a credential"),
        "{out}"
    );

    // The canary is off by default: the check says how to turn it on.
    let plain = with_dev_idp(&[]).await;
    let browser = logged_in(&plain.portcullis, "ada", "").await;
    let (code, out) = check_live(&plain.portcullis.url(""), Some(&session_of(&browser)), &[]).await;
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("diagnostics.canary=true"), "{out}");
    // And without it the path is the app's, behind the login like any other.
    let page = Browser::new()
        .get(&plain.portcullis.url("/.well-known/portcullis/canary"))
        .await;
    assert_eq!(page.status, 302, "{page:?}");

    // Broken: trusting every loopback address trusts the checker itself, so its forged
    // X-Forwarded-For becomes the client's address.
    let broken = with_dev_idp(&[
        ("DIAGNOSTICS__CANARY", "true"),
        ("TRUSTED_PROXIES", "127.0.0.0/8"),
    ])
    .await;
    let browser = logged_in(&broken.portcullis, "ada", "").await;
    let (code, out) =
        check_live(&broken.portcullis.url(""), Some(&session_of(&browser)), &[]).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FAIL  forged X-Forwarded-*") && out.contains("203.0.113.66"),
        "{out}"
    );
    assert!(out.contains("got through: fix the set-up"), "{out}");
}

/// Portcullis answering forward-auth only, for a front proxy at `front_port`.
async fn forward_auth_portcullis(
    front_port: u16,
) -> (EchoUpstream, portcullis_devidp::DevIdp, Portcullis) {
    let upstream = EchoUpstream::start().await;
    let redirect = format!("http://127.0.0.1:{front_port}/api/v1/auth/callback");
    let idp = dev_idp(vec![redirect.clone()]).await;
    let portcullis = Portcullis::builder()
        .env("FORWARD_AUTH_ONLY", "true")
        .env("OAUTH_ENABLED", "true")
        .env("OAUTH_PROVIDER", "oidc")
        .env("OAUTH_ISSUER_URL", idp.issuer())
        .env("OAUTH_CLIENT_ID", "portcullis")
        .env("OAUTH_CLIENT_SECRET", "dev-secret")
        .env("OAUTH_REDIRECT_URL", redirect)
        .env("COOKIE_SECRET", SECRET)
        .env("TRUSTED_PROXIES", "127.0.0.1/32")
        .env("DIAGNOSTICS__CANARY", "true")
        .wait_ready()
        .start()
        .await;
    (upstream, idp, portcullis)
}

fn adapt(text: &str, portcullis: &Portcullis, app: &EchoUpstream) -> String {
    text.replace(PORTCULLIS_IN_EXAMPLES, &portcullis.addr.to_string())
        .replace(APP_IN_EXAMPLES, &app.addr.to_string())
}

/// Signs in through the front proxy (as a browser does) and returns the session cookie.
async fn sign_in_through(front: &str) -> String {
    let browser = Browser::new();
    let form = browser.navigate(&format!("{front}/reports")).await;
    let page = dev_idp_sign_in(&browser, &form, "ada", "").await;
    assert_eq!(page.status, 200, "{page:?}");
    session_of(&browser)
}

#[tokio::test]
#[cfg_attr(not(feature = "e2e"), ignore = "needs nginx: run scripts/test")]
async fn behind_the_nginx_example_nothing_gets_through_and_a_broken_copy_is_caught() {
    for broken in [false, true] {
        let port = free_port();
        let (app, _idp, portcullis) = forward_auth_portcullis(port).await;
        let mut conf = adapt(
            &example("examples/nginx/portcullis.conf"),
            &portcullis,
            &app,
        )
        .replace(
            "listen 80;",
            &format!("listen 127.0.0.1:{port};\n    listen [::1]:{port};"),
        );
        if broken {
            // A location that forgets one of the identity headers: the client's own
            // X-Forwarded-Groups then reaches the app.
            let line = "proxy_set_header X-Forwarded-Groups $portcullis_groups;";
            assert!(conf.contains(line));
            conf = conf.replace(line, "");
        }
        let nginx = Nginx::start(&conf, port);
        let cookie = sign_in_through(&format!("http://127.0.0.1:{port}")).await;
        let (code, out) = check_live(&format!("http://[::1]:{port}"), Some(&cookie), &[]).await;
        if broken {
            assert_eq!(code, 1, "{out}\n{}", nginx.error_log());
            assert!(
                out.contains("FAIL  forged identity headers with a session")
                    && out.contains("x-forwarded-groups: forged-by-portcullis-check"),
                "{out}"
            );
        } else {
            assert_eq!(code, 0, "{out}\n{}", nginx.error_log());
            assert!(out.contains("(forward-auth)"), "{out}");
        }
    }
}

#[tokio::test]
#[cfg_attr(not(feature = "e2e"), ignore = "needs Caddy: run scripts/test")]
async fn behind_the_caddy_example_nothing_gets_through_and_a_broken_copy_is_caught() {
    for broken in [false, true] {
        let port = free_port();
        let (app, _idp, portcullis) = forward_auth_portcullis(port).await;
        let mut caddyfile = adapt(&example("examples/caddy/Caddyfile"), &portcullis, &app)
            .replace("app.example.com {", &format!("http://:{port} {{"));
        if broken {
            // A route that copies some identity headers and forgets to remove the
            // others: the client's X-Forwarded-Groups reaches the app.
            for line in [
                "request_header -X-Forwarded-Groups",
                "X-Auth-Request-Groups>X-Forwarded-Groups",
            ] {
                assert!(caddyfile.contains(line));
                caddyfile = caddyfile.replace(line, "");
            }
        }
        let caddy = Caddy::start(&caddyfile, port);
        let cookie = sign_in_through(&format!("http://127.0.0.1:{port}")).await;
        let (code, out) = check_live(&format!("http://[::1]:{port}"), Some(&cookie), &[]).await;
        if broken {
            assert_eq!(code, 1, "{out}\n{}", caddy.log());
            assert!(
                out.contains("FAIL  forged identity headers with a session")
                    && out
                        .to_ascii_lowercase()
                        .contains("x-forwarded-groups: forged-by-portcullis-check"),
                "{out}"
            );
        } else {
            assert_eq!(code, 0, "{out}\n{}", caddy.log());
        }
    }
}
