//! Portcullis's own responses: small, self-contained HTML pages (no external assets, no
//! JavaScript) for browsers, and JSON for API clients. Every interpolated value is
//! escaped. Pages never contain tokens, secrets or stack traces.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use portcullis_core::html::escape;
use serde_json::json;

use crate::body::ProxyBody;

/// A link offered on a page ("Sign in again").
pub struct Action<'a> {
    pub label: &'a str,
    pub href: &'a str,
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;background:#f4f4f5;color:#18181b;margin:0}\
main{max-width:36rem;margin:4rem auto;background:#fff;padding:2rem 2.5rem;border-radius:.5rem;box-shadow:0 1px 3px rgba(0,0,0,.15)}\
h1{font-size:1.5rem;margin-top:0}p{line-height:1.5}.code{color:#52525b;font-size:.875rem}\
a.button,button{display:inline-block;margin-top:1rem;padding:.6rem 1.2rem;background:#1d4ed8;color:#fff;border:0;border-radius:.25rem;text-decoration:none;font-size:1rem;cursor:pointer}\
a.button:focus,button:focus{outline:3px solid #f59e0b;outline-offset:2px}";

pub fn html_document(title: &str, inner: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{title}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n{inner}\n</main>\n</body>\n</html>\n",
        title = escape(title),
    )
}

fn base(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::full(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    resp
}

/// An HTML page with a heading, a message and an optional action.
pub fn page(
    status: StatusCode,
    title: &str,
    message: &str,
    action: Option<Action<'_>>,
) -> Response<ProxyBody> {
    let action = action
        .map(|a| {
            format!(
                "<p><a class=\"button\" href=\"{}\">{}</a></p>",
                escape(a.href),
                escape(a.label)
            )
        })
        .unwrap_or_default();
    let inner = format!(
        "<h1>{}</h1>\n<p>{}</p>\n{action}<p class=\"code\">HTTP {} · Portcullis</p>",
        escape(title),
        escape(message),
        status.as_u16()
    );
    let mut resp = base(
        status,
        "text/html; charset=utf-8",
        html_document(title, &inner),
    );
    resp.headers_mut().insert(
        header::HeaderName::from_static("content-security-policy"),
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"),
    );
    resp
}

/// A page whose body is already-built HTML (the logout form, the provider chooser).
pub fn raw_html(status: StatusCode, document: String) -> Response<ProxyBody> {
    let mut resp = base(status, "text/html; charset=utf-8", document);
    resp.headers_mut().insert(
        header::HeaderName::from_static("content-security-policy"),
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"),
    );
    resp
}

pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<ProxyBody> {
    base(status, "application/json", value.to_string())
}

/// `{"error": code, "message": text}` for API clients.
pub fn json_error(status: StatusCode, code: &str, message: &str) -> Response<ProxyBody> {
    json(status, &json!({"error": code, "message": message}))
}

pub fn text(status: StatusCode, body: &'static str) -> Response<ProxyBody> {
    base(status, "text/plain; charset=utf-8", body)
}

/// A `302 Found` to `location` (already validated by the caller).
pub fn redirect(location: &str) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::empty());
    *resp.status_mut() = StatusCode::FOUND;
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}
