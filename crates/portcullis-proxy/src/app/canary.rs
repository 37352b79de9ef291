//! The canary that `portcullis check --live` probes (with `diagnostics.canary`): a
//! stand-in for the app at `/.well-known/portcullis/canary` that answers with the request
//! it was given, so a check from outside sees what reached "the app" through the real
//! chain (ingress or front proxy, then Portcullis).
//!
//! Proxying, Portcullis decides the canary's requests with the global allow-lists and
//! prepares them exactly as it prepares a request for the app (hop-by-hop fields, identity
//! headers, forwarding headers, its cookies), then answers with that request instead of
//! sending it. Answering forward-auth only, the front proxy asks Portcullis and then sends
//! the canary's requests to Portcullis in place of the app (see the examples): the echo is
//! what the front proxy sent.
//!
//! The echo tells the requester nothing it could not send itself, except what the chain
//! added about it: cookie values are left out (only names, so an app's `HttpOnly` cookie
//! cannot be read by a script through the echo), and credentials and tokens are replaced
//! by their length.

use std::net::IpAddr;

use http::{HeaderMap, Request, Response, StatusCode, header};
use serde_json::json;

use crate::body::ProxyBody;
use crate::pages;

/// Headers whose values are credentials: echoed as their length only.
const SECRET: [&str; 6] = [
    "authorization",
    "proxy-authorization",
    "x-forwarded-access-token",
    "x-forwarded-id-token",
    "x-portcullis-jwt-assertion",
    "x-auth-request-access-token",
];

/// `mode`: `proxied` (what Portcullis would forward) or `forward-auth` (what the front
/// proxy sent); `client`: the client address as Portcullis resolved it.
pub(super) fn echo<B>(req: &Request<B>, client: IpAddr, mode: &str) -> Response<ProxyBody> {
    let target = req
        .uri()
        .path_and_query()
        .map_or("/", http::uri::PathAndQuery::as_str);
    let body = json!({
        "canary": "portcullis",
        "mode": mode,
        "method": req.method().as_str(),
        "path": target,
        "client": client.to_string(),
        "headers": headers(req.headers()),
    });
    pages::json(StatusCode::OK, &body)
}

fn headers(map: &HeaderMap) -> Vec<[String; 2]> {
    map.iter()
        .map(|(name, value)| {
            let shown = if *name == header::COOKIE {
                cookie_names(value.as_bytes())
            } else if SECRET.contains(&name.as_str()) {
                format!("<{} bytes, not shown>", value.len())
            } else {
                String::from_utf8_lossy(value.as_bytes()).into_owned()
            };
            [name.as_str().to_owned(), shown]
        })
        .collect()
}

/// `a=…; b=…`: the names of the cookies, never their values.
fn cookie_names(value: &[u8]) -> String {
    String::from_utf8_lossy(value)
        .split(';')
        .filter_map(|pair| {
            let name = pair.split('=').next()?.trim();
            (!name.is_empty()).then(|| format!("{name}=…"))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_values_and_credentials_are_never_echoed() {
        let req = Request::builder()
            .uri("/.well-known/portcullis/canary?x=1")
            .header("cookie", "app_session=s3cret; theme=dark")
            .header("authorization", "Bearer abcdef")
            .header("x-portcullis-jwt-assertion", "eyJ.x.y")
            .header("x-forwarded-email", "ada@example.com")
            .body(())
            .unwrap();
        let resp = echo(&req, "192.0.2.7".parse().unwrap(), "proxied");
        assert_eq!(resp.status(), StatusCode::OK);
        let h = headers(req.headers());
        let text = format!("{h:?}");
        assert!(!text.contains("s3cret") && !text.contains("dark"), "{text}");
        assert!(!text.contains("abcdef") && !text.contains("eyJ"), "{text}");
        assert!(text.contains("app_session=…; theme=…"), "{text}");
        assert!(text.contains("ada@example.com"), "{text}");
    }
}
