//! SIGTERM: stop accepting, finish what is in flight, exit within the grace period.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use portcullis_testkit::prelude::*;

#[tokio::test]
async fn sigterm_lets_in_flight_requests_finish_then_exits() {
    let upstream = EchoUpstream::start().await;
    let mut p = Portcullis::builder()
        .env("UPSTREAM_URL", upstream.url())
        .start()
        .await;
    let url = p.url("/slow?ms=1500");
    let in_flight =
        tokio::spawn(async move { reqwest::get(url).await.map(|r| r.status().as_u16()) });
    tokio::time::sleep(Duration::from_millis(300)).await;
    p.signal("TERM");
    assert!(p.wait_for_log("SIGTERM received").await, "{}", p.logs());
    // New connections are no longer accepted.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        tokio::net::TcpStream::connect(p.addr).await.is_err(),
        "still accepting after SIGTERM"
    );
    // The request that was in flight completes normally.
    assert_eq!(
        in_flight
            .await
            .unwrap()
            .expect("in-flight request completed"),
        200
    );
    let status = p.wait_exit(Duration::from_secs(5)).await.expect("exited");
    assert!(status.success(), "{status:?}\n{}", p.logs());
    assert!(p.logs().contains("shutdown complete"), "{}", p.logs());
}

#[tokio::test]
async fn the_grace_period_bounds_how_long_shutdown_waits() {
    let upstream = EchoUpstream::start().await;
    let mut p = Portcullis::builder()
        .env("UPSTREAM_URL", upstream.url())
        .env("SERVER__SHUTDOWN_GRACE", "1s")
        .start()
        .await;
    let url = p.url("/slow?ms=30000");
    let _stuck = tokio::spawn(async move { reqwest::get(url).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let signalled = Instant::now();
    p.signal("TERM");
    let status = p.wait_exit(Duration::from_secs(5)).await.expect("exited");
    assert!(status.success());
    let took = signalled.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "took {took:?}"
    );
    assert!(p.logs().contains("grace period over"), "{}", p.logs());
}

#[tokio::test]
async fn idle_keep_alive_connections_do_not_hold_up_shutdown() {
    let upstream = EchoUpstream::start().await;
    let mut p = Portcullis::builder()
        .env("UPSTREAM_URL", upstream.url())
        .start()
        .await;
    // A client that keeps its connection open after a request.
    let client = reqwest::Client::new();
    assert_eq!(client.get(p.url("/")).send().await.unwrap().status(), 200);
    let signalled = Instant::now();
    p.signal("TERM");
    p.wait_exit(Duration::from_secs(5)).await.expect("exited");
    assert!(
        signalled.elapsed() < Duration::from_secs(2),
        "{:?}",
        signalled.elapsed()
    );
}
