//! Several replicas sharing sessions in Redis: a login through one is recognised by the
//! others, a logout through one ends the session on all of them, sessions survive
//! restarts, and a Redis outage fails closed and heals by itself.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use portcullis_devidp::DevIdp;
use portcullis_testkit::prelude::*;
use portcullis_testkit::{RedisCluster, RedisServer, TestCa};

/// One upstream, one development provider, and `n` Portcullis replicas sharing the
/// session store described by `store_env`.
struct Fleet {
    upstream: EchoUpstream,
    idp: DevIdp,
    ports: Vec<u16>,
    store_env: Vec<(String, String)>,
}

impl Fleet {
    async fn new(n: usize, store_env: &[(&str, &str)]) -> Fleet {
        let upstream = EchoUpstream::start().await;
        let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let idp = dev_idp(
            ports
                .iter()
                .map(|p| format!("http://127.0.0.1:{p}/api/v1/auth/callback"))
                .collect(),
        )
        .await;
        Fleet {
            upstream,
            idp,
            ports,
            store_env: store_env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// `n` replicas sharing sessions in the Redis at `url`, with `extra` settings.
    async fn on_redis(n: usize, url: &str, extra: &[(&str, &str)]) -> Fleet {
        let mut env = vec![("SESSION__STORE", "redis"), ("SESSION__REDIS__URL", url)];
        env.extend_from_slice(extra);
        Fleet::new(n, &env).await
    }

    async fn replica(&self, i: usize) -> Portcullis {
        let port = self.ports[i];
        let mut b = Portcullis::builder()
            .port(port)
            .env("OAUTH_ENABLED", "true")
            .env("OAUTH_ISSUER_URL", self.idp.issuer())
            .env("OAUTH_CLIENT_ID", "portcullis")
            .env("OAUTH_CLIENT_SECRET", "dev-secret")
            .env(
                "OAUTH_REDIRECT_URL",
                format!("http://127.0.0.1:{port}/api/v1/auth/callback"),
            )
            .env("UPSTREAM_URL", self.upstream.url())
            .env("COOKIE_SECRET", SECRET);
        for (k, v) in &self.store_env {
            b = b.env(k, v.clone());
        }
        b.wait_ready().start().await
    }
}

async fn log_in(browser: &Browser, p: &Portcullis, user: &str) {
    let form = browser.navigate(&p.url("/")).await;
    let page = dev_idp_sign_in(browser, &form, user, "").await;
    assert_eq!(
        page.status, 200,
        "login through {} failed: {}",
        p.addr, page.body
    );
}

fn json_browser() -> Browser {
    let mut b = Browser::new();
    b.accept = "application/json".into();
    b
}

#[tokio::test]
#[cfg_attr(not(feature = "e2e"), ignore = "needs Redis: run scripts/test")]
async fn a_login_on_one_replica_works_on_another_and_a_logout_on_either_ends_it_everywhere() {
    // An ACL user restricted to the key prefix, a password for the default user, and a
    // database number: the usual shape of a shared production Redis.
    let redis = RedisServer::start_with(
        &[
            "--requirepass",
            "admin-pw",
            "--user",
            "portcullis",
            "on",
            ">replica-pw",
            "~portcullis:*",
            "+@all",
        ],
        Some("admin-pw"),
    );
    let url = format!("redis://portcullis:replica-pw@127.0.0.1:{}/3", redis.port);
    let fleet = Fleet::on_redis(2, &url, &[]).await;
    let a = fleet.replica(0).await;
    let b = fleet.replica(1).await;

    let mut browser = Browser::new();
    log_in(&browser, &a, "alice").await;
    browser.accept = "application/json".into();
    // Browsers share cookies between ports of one host, so the same browser is known to B.
    let through_b = browser.get(&b.url("/dashboard")).await;
    assert_eq!(through_b.status, 200, "{}", through_b.body);
    assert_eq!(
        through_b.json()["headers"]["x-forwarded-email"][0],
        "alice@example.com"
    );
    assert_eq!(
        browser.get(&b.url("/api/v1/auth/me")).await.json()["username"],
        "alice"
    );
    // The records are in database 3 (under the prefix the ACL allows), none in database 0.
    assert_eq!(
        redis.command_in(3, "DBSIZE").trim(),
        ":6",
        "a session and its five index keys (account, provider session, email, user name, subject)"
    );
    assert_eq!(redis.command_in(0, "DBSIZE").trim(), ":0");
    let stolen = browser.cookie("127.0.0.1", "session_token").unwrap();

    let out = browser
        .request("POST", &b.url("/api/v1/auth/logout"), Some(&[]))
        .await;
    assert_eq!(out.status, 200);
    // A copy of the cookie is refused by A on the very next request.
    let thief = json_browser();
    thief.set_cookie("127.0.0.1", "session_token", &stolen);
    assert_eq!(thief.get(&a.url("/dashboard")).await.status, 401);
    assert_eq!(thief.get(&b.url("/dashboard")).await.status, 401);
}

#[tokio::test]
#[cfg_attr(not(feature = "e2e"), ignore = "needs Redis: run scripts/test")]
async fn sessions_survive_a_restart_of_every_replica() {
    let redis = RedisServer::start();
    let fleet = Fleet::on_redis(2, &redis.url(), &[]).await;
    let browser = Browser::new();
    {
        let a = fleet.replica(0).await;
        let _b = fleet.replica(1).await;
        log_in(&browser, &a, "bob").await;
    }
    // Both replicas are gone; new ones come up (a rolling update of everything).
    let a = fleet.replica(0).await;
    let b = fleet.replica(1).await;
    for p in [&a, &b] {
        let page = browser.get(&p.url("/after-restart")).await;
        assert_eq!(
            page.status, 200,
            "session lost across the restart: {}",
            page.body
        );
    }
}

#[tokio::test]
#[cfg_attr(not(feature = "e2e"), ignore = "needs Redis: run scripts/test")]
async fn a_redis_outage_fails_closed_and_heals_without_a_restart() {
    let mut redis = RedisServer::start();
    let fleet = Fleet::on_redis(1, &redis.url(), &[("SESSION__REDIS__TIMEOUT", "1s")]).await;
    let p = fleet.replica(0).await;
    let browser = Browser::new();
    log_in(&browser, &p, "carol").await;

    redis.stop();
    let page = browser.get(&p.url("/during")).await;
    assert_eq!(page.status, 503, "{}", page.body);
    assert!(
        page.body.contains("Sign-in is temporarily unavailable"),
        "{}",
        page.body
    );
    assert_eq!(reqwest::get(p.url("/readyz")).await.unwrap().status(), 503);
    let api = reqwest::Client::new()
        .get(p.url("/during"))
        .header("accept", "application/json")
        .header(
            "cookie",
            format!(
                "session_token={}",
                browser.cookie("127.0.0.1", "session_token").unwrap()
            ),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 503);
    // The browser keeps its cookie through the outage.
    assert!(browser.cookie("127.0.0.1", "session_token").is_some());
    assert!(
        p.wait_for_log("session store unavailable").await,
        "{}",
        p.logs()
    );

    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let page = browser.get(&p.url("/after")).await;
        if page.status == 200 {
            assert_eq!(
                page.json()["headers"]["x-forwarded-email"][0],
                "carol@example.com"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no recovery: {} {}",
            page.status,
            page.body
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(reqwest::get(p.url("/readyz")).await.unwrap().status(), 200);
}

#[tokio::test]
#[cfg_attr(not(feature = "e2e"), ignore = "needs Redis: run scripts/test")]
async fn portcullis_starts_while_redis_is_down_and_becomes_ready_when_it_is_up() {
    let mut redis = RedisServer::start();
    redis.stop();
    let fleet = Fleet::on_redis(1, &redis.url(), &[]).await;
    let port = fleet.ports[0];
    let p = Portcullis::builder()
        .port(port)
        .env("OAUTH_ENABLED", "true")
        .env("OAUTH_ISSUER_URL", fleet.idp.issuer())
        .env("OAUTH_CLIENT_ID", "portcullis")
        .env(
            "OAUTH_REDIRECT_URL",
            format!("http://127.0.0.1:{port}/api/v1/auth/callback"),
        )
        .env("UPSTREAM_URL", fleet.upstream.url())
        .env("COOKIE_SECRET", SECRET)
        .env("SESSION__STORE", "redis")
        .env("SESSION__REDIS__URL", redis.url())
        .start()
        .await;
    let ready = reqwest::get(p.url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 503);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert!(
        body["checks"]["sessions"]
            .as_str()
            .unwrap()
            .contains("unavailable"),
        "{body}"
    );
    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    while reqwest::get(p.url("/readyz")).await.unwrap().status() != 200 {
        assert!(Instant::now() < deadline, "never became ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
#[cfg_attr(not(feature = "e2e"), ignore = "needs Redis Cluster: run scripts/test")]
async fn a_redis_cluster_shares_sessions_and_logout_the_same_way() {
    let cluster = RedisCluster::start();
    let seeds = cluster.urls().join(",");
    let fleet = Fleet::new(
        2,
        &[
            ("SESSION__STORE", "redis"),
            ("SESSION__REDIS__CLUSTER_URLS", &seeds),
        ],
    )
    .await;
    let a = fleet.replica(0).await;
    let b = fleet.replica(1).await;
    let mut browser = Browser::new();
    log_in(&browser, &a, "dora").await;
    browser.accept = "application/json".into();
    assert_eq!(browser.get(&b.url("/x")).await.status, 200);
    let stolen = browser.cookie("127.0.0.1", "session_token").unwrap();
    assert_eq!(
        browser
            .request("POST", &b.url("/api/v1/auth/logout"), Some(&[]))
            .await
            .status,
        200
    );
    let thief = json_browser();
    thief.set_cookie("127.0.0.1", "session_token", &stolen);
    assert_eq!(thief.get(&a.url("/x")).await.status, 401);
}

#[tokio::test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "needs Redis, openssl: run scripts/test"
)]
async fn rediss_with_a_private_ca_works_only_when_the_ca_is_configured() {
    let ca = TestCa::generate();
    let redis = RedisServer::start_tls(&ca);
    let url = format!("rediss://127.0.0.1:{}", redis.port);
    let ca_file = ca.ca_pem().to_str().unwrap().to_string();
    let fleet = Fleet::on_redis(1, &url, &[("SESSION__REDIS__CA_FILE", &ca_file)]).await;
    let p = fleet.replica(0).await;
    let browser = Browser::new();
    log_in(&browser, &p, "erin").await;
    assert_eq!(browser.get(&p.url("/tls")).await.status, 200);
    drop(p);

    // Without the CA the server's certificate is not trusted: never ready, no sessions.
    let port = fleet.ports[0];
    let untrusting = Portcullis::builder()
        .port(port)
        .env("OAUTH_ENABLED", "true")
        .env("OAUTH_ISSUER_URL", fleet.idp.issuer())
        .env("OAUTH_CLIENT_ID", "portcullis")
        .env(
            "OAUTH_REDIRECT_URL",
            format!("http://127.0.0.1:{port}/api/v1/auth/callback"),
        )
        .env("UPSTREAM_URL", fleet.upstream.url())
        .env("COOKIE_SECRET", SECRET)
        .env("SESSION__STORE", "redis")
        .env("SESSION__REDIS__URL", &url)
        .start()
        .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        reqwest::get(untrusting.url("/readyz"))
            .await
            .unwrap()
            .status(),
        503
    );
    assert_eq!(browser.get(&untrusting.url("/tls")).await.status, 503);
}

#[tokio::test]
#[cfg_attr(not(feature = "e2e"), ignore = "needs Redis: run scripts/test")]
async fn logout_everywhere_ends_every_session_of_the_user_on_every_replica() {
    let redis = RedisServer::start();
    let fleet = Fleet::on_redis(2, &redis.url(), &[]).await;
    let a = fleet.replica(0).await;
    let b = fleet.replica(1).await;
    // Frank on his laptop (through A) and his phone (through B); Grace elsewhere.
    let laptop = Browser::new();
    log_in(&laptop, &a, "frank").await;
    let phone = Browser::new();
    log_in(&phone, &b, "frank").await;
    let grace = Browser::new();
    log_in(&grace, &b, "grace").await;
    let phone_cookie = phone.cookie("127.0.0.1", "session_token").unwrap();

    let mut laptop = laptop;
    laptop.accept = "application/json".into();
    let out = laptop
        .request(
            "POST",
            &a.url("/api/v1/auth/logout?everywhere=true"),
            Some(&[]),
        )
        .await;
    assert_eq!(out.status, 200);
    assert_eq!(out.json()["sessions_ended"], 2);
    let phone_again = json_browser();
    phone_again.set_cookie("127.0.0.1", "session_token", &phone_cookie);
    assert_eq!(phone_again.get(&b.url("/x")).await.status, 401);
    assert_eq!(phone_again.get(&a.url("/x")).await.status, 401);
    assert_eq!(
        grace.get(&a.url("/x")).await.status,
        200,
        "another user was logged out"
    );
}
