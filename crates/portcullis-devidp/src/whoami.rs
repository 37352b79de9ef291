//! "Who am I": the small app `portcullis dev` puts behind the proxy when no app of your
//! own is given. It shows exactly what an app behind Portcullis receives: the identity
//! headers, the signed identity assertion (decoded, for reading; an app verifies it
//! against `/.well-known/portcullis/jwks.json`), a link to the session as Portcullis
//! reports it, and a sign-out button. `Accept: application/json` gets the same as JSON.

use std::convert::Infallible;
use std::net::SocketAddr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use portcullis_core::html::{document, escape};
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The headers an app behind Portcullis reads, in the order shown.
const SHOWN: &[&str] = &[
    "x-forwarded-user",
    "x-forwarded-email",
    "x-forwarded-preferred-username",
    "x-forwarded-groups",
    "x-forwarded-provider",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
];

const ASSERTION: &str = "x-portcullis-jwt-assertion";

const STYLE: &str = "body{font-family:system-ui,sans-serif;background:#f4f4f5;color:#18181b;margin:0}\
main{max-width:48rem;margin:3rem auto;background:#fff;padding:2rem 2.5rem;border-radius:.5rem;box-shadow:0 1px 3px rgba(0,0,0,.15)}\
th{text-align:left;padding-right:1.5rem;font-weight:600}td,th{padding:.25rem 0;vertical-align:top}\
code,pre{font-size:.875rem}pre{background:#f4f4f5;padding:1rem;overflow:auto}\
button{margin-top:1rem;padding:.6rem 1.2rem;background:#1d4ed8;color:#fff;border:0;border-radius:.25rem;font-size:1rem;cursor:pointer}\
button:focus{outline:3px solid #f59e0b;outline-offset:2px}";

/// A running "who am I" app. Dropping it stops it.
pub struct WhoAmI {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for WhoAmI {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl WhoAmI {
    /// Binds `addr` (port 0 picks a free port) and serves until dropped.
    pub async fn start(addr: SocketAddr) -> std::io::Result<WhoAmI> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    let service =
                        service_fn(|req| async move { Ok::<_, Infallible>(answer(&req)) });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(WhoAmI { addr, task })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// The claims of a compact JWT, read without verifying (for display only).
fn unverified_claims(token: &str) -> Option<Value> {
    let payload = token.split('.').nth(1)?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()
}

fn answer(req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let header_value = |name: &str| {
        req.headers()
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let mut seen = Map::new();
    for name in SHOWN {
        if let Some(v) = header_value(name) {
            seen.insert((*name).to_string(), json!(v));
        }
    }
    let assertion = header_value(ASSERTION).and_then(|t| unverified_claims(&t));
    let wants_json = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/json") && !a.contains("text/html"));
    if wants_json {
        let body = json!({
            "path": req.uri().path(),
            "headers": seen,
            "assertion_claims": assertion,
        });
        return respond("application/json", body.to_string());
    }
    let mut rows = String::new();
    for name in SHOWN {
        let value = seen
            .get(*name)
            .and_then(Value::as_str)
            .map(escape)
            .unwrap_or_else(|| "<em>(not sent)</em>".into());
        rows.push_str(&format!(
            "<tr><th><code>{}</code></th><td>{value}</td></tr>",
            escape(name)
        ));
    }
    let assertion_html = match &assertion {
        Some(claims) => format!(
            "<h2>The identity assertion</h2><p><code>X-Portcullis-Jwt-Assertion</code>, decoded here for reading; an app verifies it with the keys at <a href=\"/.well-known/portcullis/jwks.json\"><code>/.well-known/portcullis/jwks.json</code></a>.</p><pre>{}</pre>",
            escape(&serde_json::to_string_pretty(claims).unwrap_or_default())
        ),
        None => "<p>No identity assertion (turn it on with <code>identity_jwt.enabled</code>).</p>"
            .into(),
    };
    let body = format!(
        "<h1>Who am I</h1>\
         <p>This is the app <code>portcullis dev</code> runs when you give it none (<code>--upstream</code> puts yours here). It shows what an app behind Portcullis receives with this request to <code>{path}</code>.</p>\
         <h2>Identity headers</h2><table>{rows}</table>\
         {assertion_html}\
         <h2>Your session</h2><p>As Portcullis reports it: <a href=\"/api/v1/auth/me\"><code>/api/v1/auth/me</code></a>.</p>\
         <form method=\"post\" action=\"/api/v1/auth/logout\"><button type=\"submit\">Sign out</button></form>",
        path = escape(req.uri().path()),
    );
    respond(
        "text/html; charset=utf-8",
        document("Who am I", STYLE, "", &body),
    )
}

fn respond(content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = StatusCode::OK;
    let h = resp.headers_mut();
    if let Ok(v) = header::HeaderValue::from_str(content_type) {
        h.insert(header::CONTENT_TYPE, v);
    }
    h.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    resp
}
