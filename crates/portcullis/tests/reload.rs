//! Reloading without a restart, against the real binary: a changed configuration file
//! applies while requests in flight finish on the old one and sessions carry over; a
//! broken one is refused with its key named and the old one keeps serving; SIGHUP
//! reloads too; settings only a restart can change are named; a rotated TLS certificate
//! is served to new connections.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use portcullis_testkit::prelude::*;
use portcullis_testkit::{TempDir, TestCa};

const ADMIN_TOKEN: &str = "reload-test-admin-token-0123456789-abcdef";

fn yaml(issuer: &str, upstream: &str, port: u16, admin: &str, users: &[&str]) -> String {
    format!(
        "upstream_url: {upstream}\n\
         cookie_secret: reload-test-cookie-secret-0123456789-abcdef\n\
         admin: {{listen_addr: \"{admin}\"}}\n\
         oauth:\n  enabled: true\n  provider: oidc\n  issuer_url: {issuer}\n  client_id: portcullis\n  client_secret: dev-secret\n  redirect_url: http://127.0.0.1:{port}/api/v1/auth/callback\n  allowed_users: [{}]\n",
        users.join(", ")
    )
}

/// Writes the file the way Kubernetes and editors do: a new file renamed over the old.
fn replace(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn signed_in(p: &Portcullis, user: &str) -> (Browser, u16) {
    let browser = Browser::new();
    let form = browser.navigate(&p.url("/")).await;
    let page = dev_idp_sign_in(&browser, &form, user, "").await;
    (browser, page.status)
}

async fn count_of(line: &str, p: &Portcullis, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if p.logs().contains(line) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn a_changed_file_applies_live_and_a_broken_one_is_refused() {
    let upstream = EchoUpstream::start().await;
    let port = free_port();
    let admin = format!("127.0.0.1:{}", free_port());
    let idp = dev_idp(vec![format!(
        "http://127.0.0.1:{port}/api/v1/auth/callback"
    )])
    .await;
    let dir = TempDir::new("reload");
    let file = dir.path().join("portcullis.yaml");
    let config = |users: &[&str]| yaml(idp.issuer(), &upstream.url(), port, &admin, users);
    std::fs::write(&file, config(&["alice@example.com"])).unwrap();
    let p = Portcullis::builder()
        .port(port)
        .env("PORTCULLIS_CONFIG", file.display().to_string())
        .env("ADMIN__TOKEN", ADMIN_TOKEN)
        .wait_ready()
        .start()
        .await;
    let (alice, status) = signed_in(&p, "alice").await;
    assert_eq!(status, 200);
    assert_eq!(signed_in(&p, "bob").await.1, 403);
    let cookie = alice.cookie("127.0.0.1", "session_token").unwrap();

    // Requests in flight while the file changes finish on the configuration they
    // started with.
    let in_flight: Vec<_> = (0..20)
        .map(|_| {
            let url = p.url("/slow?ms=1500");
            let cookie = format!("session_token={cookie}");
            tokio::spawn(async move {
                reqwest::Client::new()
                    .get(url)
                    .header("cookie", cookie)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    replace(&file, &config(&["alice@example.com", "bob@example.com"]));
    assert!(
        count_of("configuration reloaded", &p, Duration::from_secs(10)).await,
        "{}",
        p.logs()
    );
    let mut finished = 0;
    for request in in_flight {
        if request.await.unwrap().is_ok_and(|s| s == 200) {
            finished += 1;
        }
    }
    assert_eq!(finished, 20, "requests in flight were lost in the reload");
    println!("in-flight requests during the reload: 20 started, {finished} answered 200");
    // The new list applies; the session from before still works.
    assert_eq!(signed_in(&p, "bob").await.1, 200);
    assert_eq!(
        alice.get(&p.url("/x")).await.status,
        200,
        "the session was lost"
    );

    // A broken file: refused, its key named, the old configuration keeps serving and
    // the process stays ready.
    replace(
        &file,
        &format!(
            "{}session: {{idle_timeout: forever}}\n",
            config(&["alice@example.com"])
        ),
    );
    assert!(
        count_of("configuration reload refused", &p, Duration::from_secs(10)).await,
        "{}",
        p.logs()
    );
    assert!(p.logs().contains("session.idle_timeout"), "{}", p.logs());
    assert_eq!(
        signed_in(&p, "bob").await.1,
        200,
        "the old configuration stopped"
    );
    let ready = reqwest::get(p.url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);
    let metrics = reqwest::get(format!("http://{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("portcullis_config_reload_failures_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("portcullis_config_reloads_total 1"),
        "{metrics}"
    );

    // A setting only a restart can change is named, the rest applies.
    let reloads = |p: &Portcullis| p.logs().matches("configuration reloaded").count();
    let before = reloads(&p);
    replace(
        &file,
        &format!("{}server: {{workers: 3}}\n", config(&["alice@example.com"])),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while reloads(&p) == before {
        assert!(Instant::now() < deadline, "{}", p.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(p.logs().contains("need a restart"), "{}", p.logs());
    assert!(p.logs().contains("server.workers"), "{}", p.logs());
    // SIGHUP reloads too.
    p.signal("HUP");
    assert!(
        count_of(
            "configuration reloaded (SIGHUP)",
            &p,
            Duration::from_secs(10)
        )
        .await,
        "{}",
        p.logs()
    );
    assert_eq!(
        signed_in(&p, "bob").await.1,
        403,
        "the new list did not apply"
    );
    assert_eq!(signed_in(&p, "alice").await.1, 200);
}

#[tokio::test]
async fn a_rotated_certificate_is_served_to_new_connections() {
    let first = TestCa::generate();
    let second = TestCa::generate();
    let dir = TempDir::new("reload-tls");
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::copy(first.server_cert(), &cert).unwrap();
    std::fs::copy(first.server_key(), &key).unwrap();
    let upstream = EchoUpstream::start().await;
    let file = dir.path().join("portcullis.yaml");
    std::fs::write(
        &file,
        format!(
            "upstream_url: {}\ntls: {{cert_file: {}, key_file: {}}}\n",
            upstream.url(),
            cert.display(),
            key.display()
        ),
    )
    .unwrap();
    let p = Portcullis::builder()
        .env("PORTCULLIS_CONFIG", file.display().to_string())
        .start_tls()
        .await;
    let trusting = |ca: &TestCa| {
        let pem = std::fs::read(ca.ca_pem()).unwrap();
        reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(&pem).unwrap()])
            .build()
            .unwrap()
    };
    let url = p.url("/x").replace("http://", "https://");
    assert!(trusting(&first).get(&url).send().await.is_ok());
    assert!(trusting(&second).get(&url).send().await.is_err());
    // cert-manager writes the new pair; new connections get it.
    std::fs::copy(second.server_key(), &key).unwrap();
    std::fs::copy(second.server_cert(), &cert).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if trusting(&second).get(&url).send().await.is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate is not served: {}",
            p.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(trusting(&first).get(&url).send().await.is_err());
}

#[tokio::test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "needs openssl, grpcio and xds-protos (pip): run scripts/test"
)]
async fn the_grpc_check_speaks_tls_with_the_servers_certificate() {
    let ca = TestCa::generate();
    let other = TestCa::generate();
    let upstream = EchoUpstream::start().await;
    let grpc = format!("127.0.0.1:{}", free_port());
    let p = Portcullis::builder()
        .env("UPSTREAM_URL", upstream.url())
        .env("TLS__CERT_FILE", ca.server_cert().display().to_string())
        .env("TLS__KEY_FILE", ca.server_key().display().to_string())
        .env("EXT_AUTHZ__LISTEN_ADDR", &grpc)
        .env("EXT_AUTHZ__TLS", "true")
        .start_tls()
        .await;
    // Open mode: allowed, and a client's own identity header is still removed.
    let cases = serde_json::json!([{"path": "/", "headers": {"x-forwarded-user": "root"}}]);
    let answers = portcullis_testkit::envoy_check_over(&grpc, Some(&ca.ca_pem()), &cases);
    assert_eq!(answers[0]["grpc"], 0, "{answers:?} {}", p.logs());
    assert_eq!(
        answers[0]["ok"]["headers_to_remove"],
        serde_json::json!(["x-forwarded-user"])
    );
    // A client that does not trust the certificate gets no answer.
    let refused = portcullis_testkit::envoy_check_over(&grpc, Some(&other.ca_pem()), &cases);
    assert!(refused[0].get("rpc_error").is_some(), "{refused:?}");
}
