//! Sessions in Redis behind Sentinel, with real `redis-server` processes (a master, a
//! replica and a sentinel): a session survives a `SENTINEL FAILOVER` and a killed master;
//! while the master changes, requests fail closed (503) and recover by themselves.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use portcullis_testkit::prelude::*;
use portcullis_testkit::{RedisSentinel, RedisServer};

/// Requests `/x` with the session until it answers 200; the time that took and every
/// other status seen meanwhile.
async fn until_served(browser: &Browser, p: &Portcullis, limit: Duration) -> (Duration, Vec<u16>) {
    let started = Instant::now();
    let mut others = Vec::new();
    loop {
        let status = browser.get(&p.url("/x")).await.status;
        if status == 200 {
            return (started.elapsed(), others);
        }
        others.push(status);
        assert!(
            started.elapsed() < limit,
            "not served again within {limit:?}: {others:?}\n{}",
            p.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn replicas_known(sentinel: &RedisSentinel) -> bool {
    sentinel
        .command("SENTINEL REPLICAS mymaster")
        .contains("slave")
}

fn in_sync(replica: &RedisServer) -> bool {
    replica
        .command("INFO replication")
        .contains("master_link_status:up")
}

#[tokio::test]
#[cfg_attr(not(feature = "e2e"), ignore = "needs Redis: run scripts/test")]
async fn sessions_survive_a_failover_and_a_killed_master() {
    let mut first = RedisServer::start();
    let mut second =
        RedisServer::start_with(&["--replicaof", "127.0.0.1", &first.port.to_string()], None);
    let sentinel = RedisSentinel::start("mymaster", first.port);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(in_sync(&second) && replicas_known(&sentinel)) {
        assert!(
            Instant::now() < deadline,
            "replication or sentinel not ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let urls = sentinel.url();
    let setup = with_dev_idp(&[
        ("SESSION__STORE", "redis"),
        ("SESSION__REDIS__SENTINEL__MASTER_NAME", "mymaster"),
        ("SESSION__REDIS__SENTINEL__URLS", urls.as_str()),
        ("SESSION__REDIS__TIMEOUT", "500ms"),
    ])
    .await;
    let p = &setup.portcullis;
    let browser = logged_in(p, "sam", "").await;
    assert_eq!(browser.get(&p.url("/x")).await.status, 200);
    // The session reaches the replica before the master changes.
    tokio::time::sleep(Duration::from_millis(500)).await;

    // An orderly failover: the replica becomes the master. Requests keep coming while
    // the master changes, until two seconds after the switch.
    assert!(
        sentinel
            .command("SENTINEL FAILOVER mymaster")
            .starts_with("+OK")
    );
    let started = Instant::now();
    let mut switched: Option<Instant> = None;
    let (mut refused, mut outage_start, mut outage) = (Vec::new(), None, Duration::ZERO);
    while switched.is_none_or(|at| at.elapsed() < Duration::from_secs(2)) {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the failover did not complete"
        );
        let status = browser.get(&p.url("/x")).await.status;
        if status == 200 {
            if let Some(since) = outage_start.take() {
                outage += Instant::now().duration_since(since);
            }
        } else {
            refused.push(status);
            outage_start.get_or_insert_with(Instant::now);
        }
        if switched.is_none() && second.command("ROLE").contains("master") {
            switched = Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        outage_start.is_none(),
        "not served again after the failover"
    );
    assert!(
        refused.iter().all(|s| *s == 503),
        "not failing closed during the failover: {refused:?}"
    );
    println!(
        "SENTINEL FAILOVER: requests refused with 503 for {outage:?} in all ({} requests)",
        refused.len()
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !in_sync(&first) {
        assert!(
            Instant::now() < deadline,
            "the old master did not follow the new one"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The new master is killed: the sentinel notices within a second and promotes the
    // other node; the session is still there.
    let killed = Instant::now();
    second.kill();
    let (took, others) = until_served(&browser, p, Duration::from_secs(30)).await;
    assert!(
        others.iter().all(|s| *s == 503),
        "not failing closed while the master was down: {others:?}"
    );
    println!(
        "killed master: served again {:?} after the kill ({} requests refused with 503)",
        killed.elapsed(),
        others.len()
    );
    assert!(took < Duration::from_secs(30));
    assert!(first.command("ROLE").contains("master"));
    // New logins work on the new master too.
    let other = logged_in(p, "tess", "").await;
    assert_eq!(other.get(&p.url("/x")).await.status, 200);
    first.kill();
}
