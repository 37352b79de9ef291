//! Faults around the proxy: an upstream that resets mid-answer, a client that goes away
//! while its request waits on the upstream, SIGTERM under steady load from many clients,
//! a thousand keep-alive connections at once, and many connections that send their
//! headers a byte at a time. (The provider down or hanging is in
//! `tokens.rs`, the SCIM database down in `scim.rs`, a slow upstream's 504 in
//! `transparency.rs`.)
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use portcullis_testkit::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How one request on a raw connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// A whole answer, with its status.
    Whole(u16),
    /// The connection closed before any byte of an answer: the request was not taken.
    NotTaken,
    /// The answer began and stopped short.
    Cut,
}

/// Reads one answer with a Content-Length; never panics.
async fn answer(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Ended {
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let status: u16 = head
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            let whole = end + 4 + length;
            if buf.len() >= whole {
                buf.drain(..whole);
                return Ended::Whole(status);
            }
        }
        let n = match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk)).await {
            Ok(Ok(n)) => n,
            _ => 0,
        };
        if n == 0 {
            return if buf.is_empty() {
                Ended::NotTaken
            } else {
                Ended::Cut
            };
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: app.test\r\n\r\n").into_bytes()
}

/// An upstream on raw TCP: `/reset-early` resets before answering, `/reset-mid` sends
/// the head and a part of a 100,000-byte body and then resets; anything else is `ok`.
async fn resetting_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).to_string();
                        buf.drain(..end + 4);
                        if head.starts_with("GET /reset-early") {
                            stream.set_zero_linger().unwrap();
                            return;
                        }
                        if head.starts_with("GET /reset-mid") {
                            let mut part =
                                b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n".to_vec();
                            part.extend(std::iter::repeat_n(b'x', 1000));
                            stream.write_all(&part).await.unwrap();
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            stream.set_zero_linger().unwrap();
                            return;
                        }
                        stream
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                            .await
                            .unwrap();
                    }
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn an_upstream_that_resets_is_a_clean_error_and_the_proxy_lives_on() {
    let upstream = resetting_upstream().await;
    let p = Portcullis::builder()
        .env("UPSTREAM_URL", format!("http://{upstream}"))
        .start()
        .await;

    // Reset before any answer: a 502 page.
    let early = exchange(p.addr, &get("/reset-early")).await;
    assert_eq!(early.status, 502, "{early:?}");

    // Reset mid-body: the head has gone out, so the client's connection is closed short
    // of the promised length (a clean, visible error), not held open.
    let mut stream = TcpStream::connect(p.addr).await.unwrap();
    stream.write_all(&get("/reset-mid")).await.unwrap();
    let asked = Instant::now();
    let mut buf = Vec::new();
    assert_eq!(answer(&mut stream, &mut buf).await, Ended::Cut);
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "{:?}",
        asked.elapsed()
    );
    assert!(buf.len() < 100_000);

    // The worker lives on: many more requests, each answered.
    for _ in 0..50 {
        assert_eq!(exchange(p.addr, &get("/fine")).await.status, 200);
    }
    assert!(
        p.wait_for_log("upstream request failed").await,
        "{}",
        p.logs()
    );
}

/// A client that goes away while its request waits on a slow upstream: the upstream
/// request is given up at once (its connection closed), not held until the upstream
/// answers or the response timeout, so clients that ask and leave cannot pile up
/// upstream connections. (hyper's server notices the client's end only by reading its
/// socket while a request is in flight; turning that read off, `half_close(true)`,
/// saves about 670 instructions a request and fails this test.)
#[tokio::test]
async fn a_client_that_goes_away_gives_up_its_upstream_request_at_once() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    let p = Portcullis::builder()
        .env("UPSTREAM_URL", format!("http://{upstream}"))
        .start()
        .await;

    let mut client = TcpStream::connect(p.addr).await.unwrap();
    client.write_all(&get("/slow")).await.unwrap();
    // The request reaches the upstream, which never answers.
    let (mut conn, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
        .await
        .expect("the request never reached the upstream")
        .unwrap();
    let mut head = Vec::new();
    let mut chunk = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut chunk).await.unwrap();
        assert!(
            n > 0,
            "the upstream connection closed before the request head"
        );
        head.extend_from_slice(&chunk[..n]);
    }
    assert!(
        head.starts_with(b"GET /slow "),
        "{}",
        String::from_utf8_lossy(&head)
    );

    drop(client);
    let left = Instant::now();
    // The upstream side sees its connection end (EOF or reset) soon after the client left.
    let read = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut chunk)).await;
    assert!(
        matches!(read, Ok(Ok(0) | Err(_))),
        "the upstream request was still held {:?} after the client left: {read:?}",
        left.elapsed()
    );
    // Given up, not crashed (a dead proxy would close the connection too).
    assert_eq!(exchange(p.addr, &get("/healthz")).await.status, 200);
}

#[tokio::test]
async fn sigterm_under_load_answers_every_request_taken_in_full_then_exits() {
    let upstream = EchoUpstream::start().await;
    let mut p = Portcullis::builder()
        .env("UPSTREAM_URL", upstream.url())
        .env("SERVER__SHUTDOWN_GRACE", "5s")
        .start()
        .await;
    let addr = p.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let whole = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..64 {
        let (stop, whole) = (stop.clone(), whole.clone());
        clients.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let Ok(mut stream) = TcpStream::connect(addr).await else {
                    // Refused: the listener has closed.
                    break;
                };
                let mut buf = Vec::new();
                // Keep-alive: requests one after another on the connection.
                loop {
                    if stream.write_all(&get("/slow?ms=40")).await.is_err() {
                        outcomes.push(Ended::NotTaken);
                        break;
                    }
                    let ended = answer(&mut stream, &mut buf).await;
                    outcomes.push(ended);
                    if let Ended::Whole(_) = ended {
                        whole.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    break;
                }
            }
            outcomes
        }));
    }
    // Steady load, then SIGTERM in the middle of it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = whole.load(Ordering::Relaxed);
    assert!(before > 200, "only {before} answers under load");
    let signalled = Instant::now();
    p.signal("TERM");
    let status = p
        .wait_exit(Duration::from_secs(8))
        .await
        .expect("exits within the grace period");
    let took = signalled.elapsed();
    stop.store(true, Ordering::Relaxed);
    assert!(status.success(), "{status:?}\n{}", p.logs());
    assert!(took < Duration::from_secs(5), "took {took:?}");

    let mut all = Vec::new();
    for c in clients {
        all.extend(c.await.unwrap());
    }
    let cut = all.iter().filter(|e| **e == Ended::Cut).count();
    let not_ok = all
        .iter()
        .filter(|e| matches!(e, Ended::Whole(s) if *s != 200))
        .count();
    let not_taken = all.iter().filter(|e| **e == Ended::NotTaken).count();
    println!(
        "{} answered in full ({before} before SIGTERM), {not_taken} not taken, {cut} cut, {not_ok} not 200; exited {took:?} after SIGTERM",
        whole.load(Ordering::Relaxed)
    );
    assert_eq!(cut, 0, "answers cut short by the shutdown");
    assert_eq!(not_ok, 0, "answers other than 200 during the shutdown");
    assert!(p.logs().contains("shutdown complete"), "{}", p.logs());
}

#[tokio::test]
async fn a_thousand_keep_alive_connections_are_all_served() {
    let upstream = EchoUpstream::start().await;
    let p = Portcullis::builder()
        .env("UPSTREAM_URL", upstream.url())
        .start()
        .await;
    // All open first, then every one asks twice on its own connection.
    let mut streams = Vec::new();
    for _ in 0..1000 {
        streams.push(TcpStream::connect(p.addr).await.unwrap());
    }
    let started = Instant::now();
    let tasks: Vec<_> = streams
        .into_iter()
        .map(|mut stream| {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut out = Vec::new();
                for i in 0..2 {
                    let asked = Instant::now();
                    stream.write_all(&get(&format!("/conn/{i}"))).await.unwrap();
                    out.push((answer(&mut stream, &mut buf).await, asked.elapsed()));
                }
                out
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for t in tasks {
        for (ended, took) in t.await.unwrap() {
            assert_eq!(ended, Ended::Whole(200));
            latencies.push(took);
        }
    }
    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100];
    println!(
        "2,000 requests on 1,000 keep-alive connections in {:?}: p50 {:?}, p99 {p99:?}",
        started.elapsed(),
        latencies[latencies.len() / 2]
    );
    assert!(
        p.logs().lines().all(|l| !l.contains("ERROR")),
        "{}",
        p.logs()
    );
}

#[tokio::test]
async fn connections_that_send_headers_a_byte_at_a_time_are_cut_while_others_are_served() {
    let upstream = EchoUpstream::start().await;
    let p = Portcullis::builder()
        .env("UPSTREAM_URL", upstream.url())
        .env("SERVER__HEADER_READ_TIMEOUT", "1s")
        .start()
        .await;
    let addr = p.addr;
    // 200 clients trickle a header forever, a few bytes every 200 ms; half of them
    // after a first request answered on the same connection.
    let slow: Vec<_> = (0..200)
        .map(|i| {
            tokio::spawn(async move {
                let mut stream = TcpStream::connect(addr).await.unwrap();
                if i % 2 == 1 {
                    stream.write_all(&get("/first")).await.unwrap();
                    assert_eq!(read_response(&mut stream).await.status, 200);
                }
                let opened = Instant::now();
                stream
                    .write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\n")
                    .await
                    .unwrap();
                let mut buf = [0u8; 1024];
                loop {
                    tokio::select! {
                        _ = stream.read(&mut buf) => {
                            // A 408, a close or a reset: whichever, the connection is cut.
                            return Some(opened.elapsed());
                        }
                        () = tokio::time::sleep(Duration::from_millis(200)) => {
                            if stream.write_all(b"X-A: b\r\n").await.is_err() {
                                return Some(opened.elapsed());
                            }
                            if opened.elapsed() > Duration::from_secs(10) {
                                return None;
                            }
                        }
                    }
                }
            })
        })
        .collect();
    // Meanwhile, other clients are served at once.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 0..20 {
        let asked = Instant::now();
        let a = exchange(addr, &get(&format!("/meanwhile/{i}"))).await;
        assert_eq!(a.status, 200);
        assert!(
            asked.elapsed() < Duration::from_secs(1),
            "{:?}",
            asked.elapsed()
        );
    }
    let mut cut_after = Vec::new();
    for s in slow {
        cut_after.push(
            s.await
                .unwrap()
                .expect("a trickling connection was never cut"),
        );
    }
    cut_after.sort();
    let last = *cut_after.last().unwrap();
    println!(
        "200 trickling connections cut after {:?} to {last:?}",
        cut_after[0]
    );
    assert!(
        cut_after[0] >= Duration::from_millis(900),
        "{:?}",
        cut_after[0]
    );
    assert!(last < Duration::from_secs(3), "{last:?}");
}

#[tokio::test]
async fn half_a_head_sent_behind_a_request_is_cut_at_the_header_timeout() {
    // The start of the next head rides in with a request, then nothing more: once the
    // request is answered, that head's time runs (not the idle timeout's 75 s).
    let upstream = EchoUpstream::start().await;
    let p = Portcullis::builder()
        .env("UPSTREAM_URL", upstream.url())
        .env("SERVER__HEADER_READ_TIMEOUT", "1s")
        .start()
        .await;
    let mut stream = TcpStream::connect(p.addr).await.unwrap();
    let mut both = get("/first");
    both.extend_from_slice(b"GET /second HTTP/1.1\r\nHost: app.test\r\n");
    let sent = Instant::now();
    stream.write_all(&both).await.unwrap();
    assert_eq!(read_response(&mut stream).await.status, 200);
    let mut rest = Vec::new();
    let cut = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest)).await;
    assert!(cut.is_ok(), "the half head was still waited for after 10 s");
    let after = sent.elapsed();
    assert!(after >= Duration::from_millis(900), "{after:?}");
    assert!(after < Duration::from_secs(3), "{after:?}");
}
