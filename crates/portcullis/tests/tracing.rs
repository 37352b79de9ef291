//! OpenTelemetry traces, end to end: Portcullis signed in through the real OpenID
//! provider, exporting to an OTLP receiver written on OpenTelemetry's own protobuf
//! messages (Python), over HTTP/protobuf and over gRPC. The client's `traceparent`
//! continues into Portcullis's spans and on to the app; the spans name the decision, the
//! session lookup, the upstream call and the provider calls; no cookie, token or query
//! string appears in them. With tracing off, the client's `traceparent` passes untouched.
#![allow(clippy::unwrap_used)]

use portcullis_testkit::OtlpReceiver;
use portcullis_testkit::prelude::*;
use serde_json::{Value, json};

const SECRET: &str = "tracing-test-cookie-secret-0123456789-abcdef";

struct Site {
    _op: OidcProvider,
    _upstream: EchoUpstream,
    p: Portcullis,
}

async fn site(otel: &[(&str, String)]) -> Site {
    let upstream = EchoUpstream::start().await;
    let port = free_port();
    let callback = format!("http://127.0.0.1:{port}/api/v1/auth/callback");
    let op = OidcProvider::start_with("portcullis", "trace-secret", &[&callback], json!({})).await;
    let mut builder = Portcullis::builder()
        .port(port)
        .env("OAUTH_ENABLED", "true")
        .env("OAUTH_PROVIDER", "oidc")
        .env("OAUTH_ISSUER_URL", &op.issuer)
        .env("OAUTH_CLIENT_ID", "portcullis")
        .env("OAUTH_CLIENT_SECRET", "trace-secret")
        .env("OAUTH_REDIRECT_URL", &callback)
        .env("COOKIE_SECRET", SECRET)
        .env("UPSTREAM_URL", upstream.url());
    for (k, v) in otel {
        builder = builder.env(k, v);
    }
    let p = builder.wait_ready().start().await;
    Site {
        _op: op,
        _upstream: upstream,
        p,
    }
}

async fn signed_in(s: &Site, user: &str) -> Browser {
    let mut browser = Browser::new();
    let login = browser.navigate(&s.p.url("/app/")).await;
    let landed = op_sign_in(&browser, &login, user).await;
    assert_eq!(landed.status, 200, "login of {user}: {}", landed.body);
    browser.accept = "application/json".into();
    browser
}

/// A GET with the session cookie and, when given, a traceparent; the echo of what the
/// app received.
async fn get(s: &Site, b: &Browser, path: &str, traceparent: Option<&str>) -> Value {
    let cookie = b.cookie("127.0.0.1", "session_token").unwrap();
    let mut req = reqwest::Client::new()
        .get(s.p.url(path))
        .header("cookie", format!("session_token={cookie}"));
    if let Some(tp) = traceparent {
        req = req
            .header("traceparent", tp)
            .header("tracestate", "vendor=opaque");
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

fn names(spans: &[Value]) -> Vec<&str> {
    spans.iter().map(|s| s["name"].as_str().unwrap()).collect()
}

fn otel_env(endpoint: String, protocol: &str) -> Vec<(&'static str, String)> {
    vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol.into()),
        ("OTEL_SERVICE_NAME", "portcullis-e2e".into()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".into()),
    ]
}

#[tokio::test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "needs oidc-provider (npm), grpcio and opentelemetry-proto (pip): run scripts/test"
)]
async fn traces_continue_the_clients_trace_to_the_app_over_http_and_grpc() {
    let receiver = OtlpReceiver::start();
    let s = site(&otel_env(
        format!("http://127.0.0.1:{}", receiver.http_port),
        "http/protobuf",
    ))
    .await;
    let alice = signed_in(&s, "alice").await;
    let cookie = alice.cookie("127.0.0.1", "session_token").unwrap();

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";
    let echo = get(
        &s,
        &alice,
        "/app/report?code=secret-in-query",
        Some(&format!("00-{trace_id}-{parent}-01")),
    )
    .await;
    // The app is told the same trace, under Portcullis's upstream span.
    let sent = echo_header(&echo, "traceparent").unwrap().to_string();
    let parts: Vec<&str> = sent.split('-').collect();
    assert_eq!(parts[1], trace_id, "{sent}");
    assert_ne!(
        parts[2], parent,
        "the app's parent is Portcullis's span: {sent}"
    );
    assert_eq!(echo_header(&echo, "tracestate"), Some("vendor=opaque"));

    let spans = receiver.wait_for_trace(trace_id, 4);
    let found = names(&spans);
    for name in ["GET", "policy.decide", "session.load", "upstream"] {
        assert!(found.contains(&name), "no {name} span: {spans:#?}");
    }
    let by_name = |n: &str| spans.iter().find(|s| s["name"] == n).unwrap();
    let server = by_name("GET");
    assert_eq!(
        server["parent_span_id"], parent,
        "the client's span is the parent"
    );
    assert_eq!(server["kind"], 2, "SPAN_KIND_SERVER");
    assert_eq!(server["service"], "portcullis-e2e");
    assert_eq!(server["attributes"]["url.path"], "/app/report");
    assert_eq!(server["attributes"]["http.response.status_code"], 200);
    let upstream = by_name("upstream");
    assert_eq!(
        upstream["span_id"], parts[2],
        "the app's parent is the upstream span"
    );
    assert_eq!(
        by_name("policy.decide")["parent_span_id"],
        server["span_id"]
    );

    // Without a traceparent a new trace starts, and the app is told it.
    let echo = get(&s, &alice, "/app/other", None).await;
    let fresh = echo_header(&echo, "traceparent").unwrap();
    assert!(!fresh.contains(trace_id), "{fresh}");

    // A trace the client's side did not sample (flags 00) is continued, not recorded.
    let unsampled = "11111111111111111111111111111111";
    let echo = get(
        &s,
        &alice,
        "/app/quiet",
        Some(&format!("00-{unsampled}-2222222222222222-00")),
    )
    .await;
    let sent = echo_header(&echo, "traceparent").unwrap();
    assert!(
        sent.starts_with(&format!("00-{unsampled}-")) && sent.ends_with("-00"),
        "{sent}"
    );

    // The login's callback traced the provider calls.
    let all = receiver.spans();
    let all_names = names(&all);
    assert!(all_names.contains(&"idp.token"), "{all_names:?}");
    assert!(all_names.contains(&"session.create"), "{all_names:?}");
    // No cookie, token or query string in any span.
    let text = serde_json::to_string(&all).unwrap();
    assert!(!text.contains(&cookie), "the session cookie is in a span");
    assert!(
        !text.contains("secret-in-query"),
        "a query string is in a span"
    );
    assert!(
        !text.contains("trace-secret"),
        "the client secret is in a span"
    );
    assert!(!text.contains("eyJ"), "a JWT is in a span");

    // The same over gRPC.
    let g = site(&otel_env(
        format!("http://127.0.0.1:{}", receiver.grpc_port),
        "grpc",
    ))
    .await;
    let bob = signed_in(&g, "bob").await;
    let grpc_trace = "0af7651916cd43dd8448eb211c80319c";
    get(
        &g,
        &bob,
        "/app/",
        Some(&format!("00-{grpc_trace}-b7ad6b7169203331-01")),
    )
    .await;
    let spans = receiver.wait_for_trace(grpc_trace, 4);
    assert!(
        spans.iter().all(|s| s["via"] == "grpc") && names(&spans).contains(&"upstream"),
        "{spans:#?}"
    );
    // By now the first Portcullis has exported all it had: nothing of the unsampled trace.
    let text = serde_json::to_string(&receiver.spans()).unwrap();
    assert!(
        !text.contains(unsampled),
        "an unsampled request was recorded"
    );
}

#[tokio::test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "needs oidc-provider (npm): run scripts/test"
)]
async fn with_tracing_off_the_clients_traceparent_passes_untouched() {
    let s = site(&[]).await;
    let alice = signed_in(&s, "alice").await;
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let echo = get(&s, &alice, "/app/", Some(tp)).await;
    assert_eq!(echo_header(&echo, "traceparent"), Some(tp));
}
