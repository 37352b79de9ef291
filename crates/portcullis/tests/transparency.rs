//! The proxy must not alter what it forwards, beyond the documented header rules; bodies
//! stream; HTTP/1.1, HTTP/2 and WebSocket all pass.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use portcullis_testkit::prelude::*;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn open_mode(upstream: &EchoUpstream, extra: &[(&str, &str)]) -> Portcullis {
    let mut b = Portcullis::builder().env("UPSTREAM_URL", upstream.url());
    for (k, v) in extra {
        b = b.env(k, *v);
    }
    b.start().await
}

async fn echo(req: reqwest::RequestBuilder) -> Value {
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

#[tokio::test]
async fn method_path_query_and_headers_pass_unchanged() {
    let upstream = EchoUpstream::start().await;
    let p = open_mode(&upstream, &[]).await;
    let http = reqwest::Client::new();
    let e = echo(
        http.request(
            reqwest::Method::PATCH,
            p.url("/a/b%20c/%7Bd%7D?x=1&y=%2F&z"),
        )
        .header("x-app-header", "kept")
        .header("authorization", "Basic dTpw")
        .body("payload"),
    )
    .await;
    assert_eq!(e["method"], "PATCH");
    // Already canonical (escapes of reserved characters stay escaped), so unchanged; an
    // encoded `/` in the path is refused instead (see attacks.rs), in the query it passes.
    assert_eq!(e["path"], "/a/b%20c/%7Bd%7D");
    assert_eq!(e["query"], "x=1&y=%2F&z");
    assert_eq!(e["headers"]["x-app-header"][0], "kept");
    assert_eq!(e["headers"]["authorization"][0], "Basic dTpw");
    assert_eq!(e["headers"]["content-length"][0], "7");
}

#[tokio::test]
async fn the_upstream_url_path_is_a_prefix() {
    let upstream = EchoUpstream::start().await;
    let p = open_mode(&upstream, &[]).await;
    drop(p);
    let p = Portcullis::builder()
        .env("UPSTREAM_URL", format!("{}/base/", upstream.url()))
        .start()
        .await;
    let e = echo(reqwest::Client::new().get(p.url("/x?y=1"))).await;
    assert_eq!(e["path"], "/base/x");
    assert_eq!(e["query"], "y=1");
}

#[tokio::test]
async fn hop_by_hop_headers_are_removed_in_both_directions() {
    let upstream = EchoUpstream::start().await;
    let p = open_mode(&upstream, &[]).await;
    let mut stream = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    let req = format!(
        "GET /echo HTTP/1.1\r\nHost: {}\r\nConnection: keep-alive, X-Secret-Hop\r\nX-Secret-Hop: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Authorization: Basic eDp5\r\nProxy-Connection: keep-alive\r\nX-End-To-End: yes\r\n\r\n",
        p.addr
    );
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let n = stream.read(&mut buf).await.unwrap();
    let raw = String::from_utf8_lossy(&buf[..n]).to_string();
    let body = &raw[raw.find('{').unwrap()..=raw.rfind('}').unwrap()];
    let e: Value = serde_json::from_str(body).unwrap();
    let headers = e["headers"].as_object().unwrap();
    for gone in [
        "x-secret-hop",
        "keep-alive",
        "te",
        "proxy-authorization",
        "proxy-connection",
    ] {
        assert!(
            !headers.contains_key(gone),
            "{gone} reached the upstream: {e}"
        );
    }
    assert_eq!(headers["x-end-to-end"][0], "yes");

    // And on the way back.
    let resp = reqwest::get(p.url("/set-cookie")).await.unwrap();
    assert!(resp.headers().get("x-upstream-hop").is_none());
    assert!(resp.headers().get("keep-alive").is_none());
    assert_eq!(resp.headers()["set-cookie"], "app=1; Path=/");
}

#[tokio::test]
async fn forwarded_headers_are_believed_only_from_trusted_proxies() {
    let upstream = EchoUpstream::start().await;
    let untrusting = open_mode(&upstream, &[]).await;
    let spoof = |p: &Portcullis| {
        reqwest::Client::new()
            .get(p.url("/"))
            .header("x-forwarded-for", "6.6.6.6")
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-host", "bank.example.com")
            .header("forwarded", "for=6.6.6.6")
    };
    // Each exactly once: the client's copies are gone, not merely followed by ours.
    let e = echo(spoof(&untrusting)).await;
    assert_eq!(e["headers"]["x-forwarded-for"], json!(["127.0.0.1"]));
    assert_eq!(e["headers"]["x-forwarded-proto"], json!(["http"]));
    assert_eq!(
        e["headers"]["x-forwarded-host"],
        json!([untrusting.addr.to_string()])
    );
    assert!(e["headers"]["forwarded"].is_null());

    let trusting = open_mode(
        &upstream,
        &[("TRUSTED_PROXIES", "127.0.0.1/32, 10.0.0.0/8")],
    )
    .await;
    let e = echo(spoof(&trusting)).await;
    assert_eq!(
        e["headers"]["x-forwarded-for"],
        json!(["6.6.6.6, 127.0.0.1"])
    );
    assert_eq!(e["headers"]["x-forwarded-proto"], json!(["https"]));
    assert_eq!(
        e["headers"]["x-forwarded-host"],
        json!(["bank.example.com"])
    );
}

async fn h2c_get(p: &Portcullis, path: &str) -> (http::Version, Value) {
    let client: Client<_, Empty<bytes::Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let resp = client.get(p.url(path).parse().unwrap()).await.unwrap();
    let version = resp.version();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (version, serde_json::from_slice(&body).unwrap())
}

#[tokio::test]
async fn http2_by_prior_knowledge_shares_the_port_and_host_follows_one_rule() {
    let upstream = EchoUpstream::start().await;
    let p = open_mode(&upstream, &[]).await;
    let (version, h2) = h2c_get(&p, "/h2").await;
    assert_eq!(version, http::Version::HTTP_2);
    // The upstream is spoken to over HTTP/1.1 whatever the client used.
    assert_eq!(h2["version"], "HTTP/1.1");
    let h1 = echo(reqwest::Client::new().get(p.url("/h1"))).await;
    // Same Host for both: the upstream's own authority; the client's goes in X-Forwarded-Host.
    assert_eq!(h2["headers"]["host"][0], upstream.addr.to_string());
    assert_eq!(h1["headers"]["host"][0], upstream.addr.to_string());
    assert_eq!(h2["headers"]["x-forwarded-host"][0], p.addr.to_string());
    assert_eq!(h1["headers"]["x-forwarded-host"][0], p.addr.to_string());

    let preserving = open_mode(&upstream, &[("UPSTREAM__PRESERVE_HOST", "true")]).await;
    let (_, h2) = h2c_get(&preserving, "/h2").await;
    let h1 = echo(reqwest::Client::new().get(preserving.url("/h1"))).await;
    assert_eq!(h2["headers"]["host"][0], preserving.addr.to_string());
    assert_eq!(h1["headers"]["host"][0], preserving.addr.to_string());
}

#[tokio::test]
#[cfg_attr(not(feature = "e2e"), ignore = "needs openssl: run scripts/test")]
async fn tls_offers_http2_by_alpn_and_http1_too() {
    let ca = portcullis_testkit::TestCa::generate();
    let (cert, key) = (ca.server_cert(), ca.server_key());
    let upstream = EchoUpstream::start().await;
    let p = Portcullis::builder()
        .env("UPSTREAM_URL", upstream.url())
        .env("TLS__CERT_FILE", cert.to_str().unwrap())
        .env("TLS__KEY_FILE", key.to_str().unwrap())
        .start_tls()
        .await;
    let ca = reqwest::Certificate::from_pem(&std::fs::read(ca.ca_pem()).unwrap()).unwrap();
    let url = format!("https://localhost:{}/tls", p.addr.port());
    let h2 = reqwest::Client::builder()
        .tls_certs_only([ca.clone()])
        .build()
        .unwrap();
    let resp = h2.get(&url).send().await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let e: Value = resp.json().await.unwrap();
    assert_eq!(e["headers"]["x-forwarded-proto"][0], "https");
    let h1 = reqwest::Client::builder()
        .tls_certs_only([ca])
        .http1_only()
        .build()
        .unwrap();
    let resp = h1.get(&url).send().await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_11);
}

#[tokio::test]
async fn websocket_upgrades_pass_bytes_both_ways() {
    let upstream = EchoUpstream::start().await;
    let p = open_mode(&upstream, &[]).await;
    let mut stream = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        p.addr
    );
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = stream.read(&mut buf).await.unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    // RFC 6455's own example key and answer.
    assert!(
        head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
    for message in [&b"hello through portcullis"[..], &[0u8, 1, 2, 255, 254][..]] {
        stream.write_all(message).await.unwrap();
        let mut echoed = vec![0u8; message.len()];
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut echoed))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(echoed, message);
    }
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_502_page_and_a_slow_one_a_504() {
    let down_port = free_port();
    let p = Portcullis::builder()
        .env("UPSTREAM_URL", format!("http://127.0.0.1:{down_port}"))
        .start()
        .await;
    let page = Browser::new().get(&p.url("/")).await;
    assert_eq!(page.status, 502);
    assert!(
        page.body.contains("The application is not responding"),
        "{}",
        page.body
    );
    let api = reqwest::Client::new()
        .get(p.url("/"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 502);
    assert_eq!(
        api.json::<Value>().await.unwrap()["error"],
        "upstream_unavailable"
    );

    let upstream = EchoUpstream::start().await;
    let p = open_mode(&upstream, &[("UPSTREAM__RESPONSE_TIMEOUT", "300ms")]).await;
    let started = std::time::Instant::now();
    let page = Browser::new().get(&p.url("/slow?ms=3000")).await;
    assert_eq!(page.status, 504);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(page.body.contains("taking too long"));
}

#[tokio::test]
async fn large_bodies_stream_through_without_being_buffered() {
    let upstream = EchoUpstream::start().await;
    let p = open_mode(&upstream, &[]).await;
    const SIZE: usize = 256 * 1024 * 1024;
    // Download.
    let mut resp = reqwest::get(p.url(&format!("/stream?bytes={SIZE}")))
        .await
        .unwrap();
    let mut got = 0usize;
    while let Some(chunk) = resp.chunk().await.unwrap() {
        got += chunk.len();
    }
    assert_eq!(got, SIZE);
    // Upload, sent in chunks by a raw client so the test itself holds little.
    let mut stream = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: {SIZE}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let block = vec![b'y'; 1 << 20];
    for _ in 0..SIZE / block.len() {
        stream.write_all(&block).await.unwrap();
    }
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(
        answer.contains(&format!("\"received\":{SIZE},")),
        "{answer}"
    );
    // Half a gigabyte went through; the proxy never held more than a sliver of it.
    let peak = peak_rss_kib(p.pid());
    assert!(peak < 64 * 1024, "peak RSS {peak} kB while streaming");
}

#[tokio::test]
async fn oversized_request_headers_are_refused_not_forwarded() {
    let upstream = EchoUpstream::start().await;
    let p = open_mode(&upstream, &[("SERVER__MAX_HEADER_BYTES", "16384")]).await;
    let resp = reqwest::Client::new()
        .get(p.url("/"))
        .header("x-big", "a".repeat(40_000))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 431);
}

#[tokio::test]
async fn upstream_connections_are_reused_and_never_poisoned() {
    let upstream = EchoUpstream::start().await;
    let p = open_mode(&upstream, &[("SERVER__WORKERS", "1")]).await;
    let http = reqwest::Client::new();
    let peer = |e: &Value| e["peer"].as_str().unwrap().to_string();
    let first = echo(http.get(p.url("/a"))).await;
    // Sequential requests, whatever the client connection, ride one upstream connection,
    // also after a chunked response.
    for path in ["/b", "/c"] {
        let other_client = reqwest::Client::new();
        assert_eq!(
            peer(&echo(other_client.get(p.url(path))).await),
            peer(&first)
        );
    }
    let chunked = http
        .get(p.url("/stream?bytes=200000"))
        .send()
        .await
        .unwrap();
    assert!(
        chunked.headers().get("content-length").is_none(),
        "not a chunked response"
    );
    assert_eq!(chunked.bytes().await.unwrap().len(), 200_000);
    assert_eq!(
        peer(&echo(http.get(p.url("/d"))).await),
        peer(&first),
        "chunked response cost the connection"
    );

    // A client that walks away in the middle of a large body: that upstream connection
    // must not be reused (the rest of the body would be read as the next response).
    let mut stream = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    stream
        .write_all(
            format!(
                "GET /stream?bytes=50000000 HTTP/1.1\r\nHost: {}\r\n\r\n",
                p.addr
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut some = vec![0u8; 64 * 1024];
    stream.read_exact(&mut some).await.unwrap();
    drop(stream);
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..5 {
        let e = echo(reqwest::Client::new().get(p.url("/after-abandon"))).await;
        assert_eq!(e["path"], "/after-abandon");
    }

    // The upstream closes its side after answering: the next request still succeeds.
    let closing = http.get(p.url("/close")).send().await.unwrap();
    assert_eq!(closing.text().await.unwrap(), "closing");
    for _ in 0..3 {
        assert_eq!(
            echo(http.get(p.url("/after-close"))).await["path"],
            "/after-close"
        );
    }
}

/// A body sent in uneven pieces, its length announced nowhere.
struct Pieces(std::collections::VecDeque<bytes::Bytes>);

impl http_body::Body for Pieces {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        std::task::Poll::Ready(self.0.pop_front().map(|b| Ok(http_body::Frame::data(b))))
    }
}

fn sha256_hex(data: &[u8]) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn request_bodies_of_unknown_length_reach_the_upstream_chunked_and_intact() {
    let upstream = EchoUpstream::start().await;
    let p = open_mode(&upstream, &[("SERVER__WORKERS", "1")]).await;
    // Uneven pieces, one bigger than any buffer on the way, bytes that vary so a lost or
    // repeated piece changes the digest.
    let sizes = [1usize, 7, 4096, 65_537, 3, 200_000, 10];
    let pieces: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| (0..n).map(|j| ((i * 31 + j * 7) % 251) as u8).collect())
        .collect();
    let whole = pieces.concat();
    let expected = sha256_hex(&whole);

    // HTTP/1.1, chunked by the client (one chunk with an extension, which is the client's
    // framing and not passed on), then a second request on the same connection: the body
    // ended where the client said.
    let mut stream = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    let mut raw =
        b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for (i, piece) in pieces.iter().enumerate() {
        let ext = if i == 2 { ";name=value" } else { "" };
        raw.extend_from_slice(format!("{:x}{ext}\r\n", piece.len()).as_bytes());
        raw.extend_from_slice(piece);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\nGET /after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(&raw).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert_eq!(answer.matches("HTTP/1.1 200 ").count(), 2, "{answer}");
    // What the upstream saw: chunked framing, no length, every byte.
    let arrived_intact = |upload: &Value| {
        assert_eq!(
            upload["framing"]["transfer-encoding"], "chunked",
            "{upload}"
        );
        assert_eq!(upload["framing"]["content-length"], Value::Null);
        assert_eq!(upload["received"], whole.len());
        assert_eq!(upload["sha256"], expected);
    };
    let start = answer.find("{\"framing\"").expect("the upload's answer");
    let upload = serde_json::Deserializer::from_str(&answer[start..])
        .into_iter::<Value>()
        .next()
        .unwrap()
        .unwrap();
    arrived_intact(&upload);
    assert!(answer.contains("\"path\":\"/after\""), "{answer}");

    // HTTP/2 has no chunked encoding: a body without `content-length` is sent to the
    // HTTP/1.1 upstream chunked.
    let client: Client<_, Pieces> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let body = Pieces(pieces.into_iter().map(bytes::Bytes::from).collect());
    let req = http::Request::post(p.url("/upload")).body(body).unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    arrived_intact(&serde_json::from_slice(&body).unwrap());
}

/// The responses in `raw`, in order: each one's head and its body, read by its framing
/// (`Content-Length` or chunked; no other framing is expected here).
fn responses(mut raw: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    while !raw.is_empty() {
        let end = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a whole head")
            + 4;
        let head = String::from_utf8(raw[..end].to_vec()).unwrap();
        raw = &raw[end..];
        let field = |name: &str| {
            head.lines()
                .find_map(|l| {
                    l.split_once(':')
                        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                })
                .map(|(_, v)| v.trim().to_string())
        };
        let mut body = Vec::new();
        if let Some(length) = field("content-length") {
            let n: usize = length.parse().unwrap();
            body.extend_from_slice(&raw[..n]);
            raw = &raw[n..];
        } else {
            assert_eq!(
                field("transfer-encoding").as_deref(),
                Some("chunked"),
                "{head}"
            );
            loop {
                let line = raw.windows(2).position(|w| w == b"\r\n").unwrap();
                let size =
                    usize::from_str_radix(std::str::from_utf8(&raw[..line]).unwrap(), 16).unwrap();
                raw = &raw[line + 2..];
                if size == 0 {
                    assert_eq!(&raw[..2], b"\r\n");
                    raw = &raw[2..];
                    break;
                }
                body.extend_from_slice(&raw[..size]);
                assert_eq!(&raw[size..size + 2], b"\r\n");
                raw = &raw[size + 2..];
            }
        }
        out.push((head, body));
    }
    out
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_whichever_path_serves_them() {
    // Plain GETs are served by Portcullis's own HTTP/1.1 path, a request with a body or a
    // connection option hands the connection over to hyper; requests sent all at once
    // come back in order, each whole, across the hand-over.
    let upstream = EchoUpstream::start().await;
    let p = open_mode(&upstream, &[]).await;
    let host = p.addr;
    let mut stream = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    let raw = format!(
        "GET /one HTTP/1.1\r\nHost: {host}\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nProxy-Authorization: Basic eDp5\r\nX-End-To-End: yes\r\n\r\n\
         GET /stream?bytes=70000 HTTP/1.1\r\nHost: {host}\r\n\r\n\
         GET /two HTTP/1.1\r\nHost: {host}\r\nConnection: keep-alive\r\n\r\n\
         POST /upload HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5\r\n\r\nhello\
         GET /three HTTP/1.1\r\nHost: {host}\r\n\r\n\
         GET /four HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(raw.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("the connection closes after the last response")
        .unwrap();
    let answers = responses(&answer);
    assert_eq!(answers.len(), 6);
    for (head, _) in &answers {
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.to_ascii_lowercase().contains("\r\ndate: "), "{head}");
    }
    let echoed = |i: usize| -> Value { serde_json::from_slice(&answers[i].1).unwrap() };
    let first = echoed(0);
    assert_eq!(first["path"], "/one");
    let headers = first["headers"].as_object().unwrap();
    for gone in ["keep-alive", "proxy-connection", "proxy-authorization"] {
        assert!(
            !headers.contains_key(gone),
            "{gone} reached the upstream: {first}"
        );
    }
    assert_eq!(headers["x-end-to-end"][0], "yes");
    // The upstream's chunked body, re-framed for this hop.
    assert!(
        answers[1].0.contains("transfer-encoding: chunked"),
        "{}",
        answers[1].0
    );
    assert_eq!(answers[1].1.len(), 70_000);
    assert_eq!(echoed(2)["path"], "/two");
    assert!(String::from_utf8_lossy(&answers[3].1).contains("\"received\":5,"));
    assert_eq!(echoed(4)["path"], "/three");
    assert_eq!(echoed(5)["path"], "/four");
}
