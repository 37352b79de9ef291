//! Envoy's gRPC check (`envoy.service.auth.v3.Authorization/Check`): the question
//! forward-auth answers, asked by Envoy (Envoy Gateway's `SecurityPolicy.extAuth`, the
//! Gateway API's `ExternalAuth` filter, Istio's `envoyExtAuthzGrpc` provider) in Envoy's
//! own terms. It decides through the same pipeline and builds the same answer as
//! `/api/v1/auth/verify` ([`App::answer`]), then translates it:
//! - allowed: `OK`, with the upstream's identity headers to set (`X-Forwarded-User`, ...,
//!   the assertion) and every client-sent copy of a Portcullis-owned header not replaced
//!   by one of them named in `headers_to_remove`;
//! - no session: `UNAUTHENTICATED`, with a 302 to the login for a browser navigation or a
//!   401 (with the login URL in `X-Auth-Request-Login`) for an API;
//! - refused: `PERMISSION_DENIED` with the 403 page; a fault: `UNAVAILABLE` with the 503.
//!
//! Envoy describes the request truly only if nobody else can call this listener, which is
//! why it has an address of its own: the client address Envoy reports is believed.

use std::net::IpAddr;
use std::time::Instant;

use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Response, StatusCode};

use super::decide::Entry;
use super::forward_auth::{Answer, Location, Original, Question, parse_location_pairs};
use super::{App, ConnInfo, wants_html};
use crate::body::ProxyBody;
use crate::ext_authz::proto::{
    self, CheckRequest, CheckResponse, DeniedHttpResponse, HttpStatus, OkHttpResponse, code,
};
use crate::forwarding::Origin;
use crate::metrics::Outcome;
use crate::redact;

/// Headers read from one check request; Envoy sends the client's, which the public
/// listener already bounds, so more than this is not a real request.
const MAX_HEADERS: usize = 512;

const ENVOY_ANSWER: Answer = Answer {
    entry: Entry::ExtAuthz,
    names: redact::FORWARDED,
    assertion: redact::JWT_ASSERTION,
};

/// The response headers of a refusal that Envoy passes to the client.
const DENIED_HEADERS: [HeaderName; 5] = [
    header::LOCATION,
    header::CONTENT_TYPE,
    header::CACHE_CONTROL,
    header::WWW_AUTHENTICATE,
    super::forward_auth::X_AUTH_REQUEST_LOGIN,
];

/// The request in question, as Envoy described it.
struct Described {
    headers: HeaderMap,
    /// Header names as the client spelled them (lowercased by Envoy), for removal.
    names: Vec<String>,
    method: String,
    host: String,
    path: String,
    https: bool,
    client: Option<IpAddr>,
}

fn describe(request: &CheckRequest) -> Result<(Described, Location), String> {
    let attributes = request
        .attributes
        .as_ref()
        .ok_or("the check request has no attributes")?;
    let http = attributes
        .request
        .as_ref()
        .and_then(|r| r.http.as_ref())
        .ok_or("the check request describes no HTTP request")?;
    let pairs: Vec<(&str, &[u8])> = match &http.header_map {
        Some(map) if http.headers.is_empty() => map
            .headers
            .iter()
            .map(|h| {
                let value = if h.raw_value.is_empty() {
                    h.value.as_bytes()
                } else {
                    h.raw_value.as_slice()
                };
                (h.key.as_str(), value)
            })
            .collect(),
        _ => http
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_bytes()))
            .collect(),
    };
    if pairs.len() > MAX_HEADERS {
        return Err(format!("more than {MAX_HEADERS} headers"));
    }
    let mut headers = HeaderMap::with_capacity(pairs.len());
    let mut names = Vec::with_capacity(pairs.len());
    let mut authority = None;
    for (name, value) in pairs {
        if name == ":authority" {
            authority = Some(String::from_utf8_lossy(value).into_owned());
            continue;
        }
        if name.starts_with(':') {
            continue;
        }
        // A name or value http cannot carry is dropped, as the public listener would
        // have refused it; a duplicate arrives comma-joined, as one value.
        let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value),
        ) else {
            continue;
        };
        names.push(n.as_str().to_string());
        headers.append(n, v);
    }
    let host = if http.host.is_empty() {
        authority.unwrap_or_default()
    } else {
        http.host.clone()
    };
    if let Ok(v) = HeaderValue::from_str(&host) {
        headers.insert(header::HOST, v);
    }
    let client = attributes
        .source
        .as_ref()
        .and_then(|p| p.address.as_ref())
        .and_then(|a| a.socket_address.as_ref())
        .and_then(|s| s.address.parse().ok());
    let location = parse_location_pairs(
        attributes
            .context_extensions
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str())),
        "context_extensions",
    )?;
    let path = if http.path.is_empty() {
        "/".to_string()
    } else {
        http.path.clone()
    };
    Ok((
        Described {
            headers,
            names,
            method: if http.method.is_empty() {
                "GET".into()
            } else {
                http.method.clone()
            },
            host,
            path,
            https: http.scheme.eq_ignore_ascii_case("https"),
            client,
        },
        location,
    ))
}

fn status(code: i32, message: &str) -> Option<proto::Status> {
    Some(proto::Status {
        code,
        message: message.to_string(),
    })
}

fn header_option(name: &str, value: &[u8]) -> proto::HeaderValueOption {
    proto::HeaderValueOption {
        header: Some(proto::HeaderValue {
            key: name.to_string(),
            value: String::from_utf8_lossy(value).into_owned(),
            raw_value: Vec::new(),
        }),
        append_action: proto::OVERWRITE_IF_EXISTS_OR_ADD,
    }
}

/// A refusal Envoy sends to the client as it is.
fn denied(grpc: i32, message: &str, resp: Response<ProxyBody>) -> CheckResponse {
    let (parts, body) = resp.into_parts();
    let body = match body {
        ProxyBody::Full(Some(bytes)) => String::from_utf8_lossy(&bytes).into_owned(),
        _ => String::new(),
    };
    let headers = DENIED_HEADERS
        .iter()
        .flat_map(|name| parts.headers.get_all(name).iter().map(move |v| (name, v)))
        .map(|(name, v)| header_option(name.as_str(), v.as_bytes()))
        .collect();
    CheckResponse {
        status: status(grpc, message),
        denied_response: Some(DeniedHttpResponse {
            status: Some(HttpStatus {
                code: i32::from(parts.status.as_u16()),
            }),
            headers,
            body,
        }),
        ok_response: None,
    }
}

/// An allowed request: the identity headers to set, and every client-sent copy of a
/// Portcullis-owned header that none of them replaces, to remove.
fn allowed(set: &HeaderMap, client_names: &[String]) -> CheckResponse {
    let headers = set
        .iter()
        .filter(|(name, _)| redact::is_owned(name.as_str()))
        .map(|(name, v)| header_option(name.as_str(), v.as_bytes()))
        .collect();
    let mut headers_to_remove: Vec<String> = client_names
        .iter()
        .filter(|n| redact::is_owned(n) && !set.contains_key(n.as_str()))
        .cloned()
        .collect();
    headers_to_remove.dedup();
    CheckResponse {
        status: status(code::OK, ""),
        denied_response: None,
        ok_response: Some(OkHttpResponse {
            headers,
            headers_to_remove,
        }),
    }
}

impl App {
    /// Answers one `Authorization/Check`.
    pub(crate) async fn ext_authz_check(
        &self,
        conn: &ConnInfo,
        request: &CheckRequest,
    ) -> CheckResponse {
        let start = Instant::now();
        let (described, location) = match describe(request) {
            Ok(d) => d,
            Err(problem) => {
                tracing::error!(problem = %problem, "ext_authz check refused: fix the gateway's ext_authz settings");
                self.metrics
                    .request_done(None, Outcome::Error, start.elapsed());
                let resp =
                    crate::pages::json_error(StatusCode::FORBIDDEN, "invalid_request", &problem);
                return denied(code::INVALID_ARGUMENT, &problem, resp);
            }
        };
        if self.auth.is_none() {
            // Open mode lets everything through, as on the proxied path; client-sent
            // identity headers are still removed.
            self.metrics
                .request_done(None, Outcome::Verified, start.elapsed());
            return allowed(&HeaderMap::new(), &described.names);
        }
        let host = HeaderValue::from_str(&described.host).ok();
        let client_ip = described.client.unwrap_or(conn.peer.ip());
        let proto = if described.https { "https" } else { "http" };
        let origin = Origin {
            client_ip,
            proto,
            forwarded_for: HeaderValue::from_str(&client_ip.to_string())
                .unwrap_or(HeaderValue::from_static("")),
            host: host.clone(),
            via_trusted_proxy: true,
        };
        let original = Original {
            url: Some(match &host {
                Some(_) => format!("{proto}://{}{}", described.host, described.path),
                None => described.path.clone(),
            }),
            method: Some(described.method.clone()),
            relays_answer: true,
        };
        let question = Question {
            headers: &described.headers,
            method: &described.method,
            origin: &origin,
            original: &original,
            location: &location,
            html: wants_html(&described.headers),
        };
        let resp = self.answer(conn, &question, &ENVOY_ANSWER).await;
        let (outcome, answer) = match resp.status() {
            StatusCode::OK => (Outcome::Verified, allowed(resp.headers(), &described.names)),
            StatusCode::FOUND | StatusCode::UNAUTHORIZED => (
                Outcome::Challenged,
                denied(code::UNAUTHENTICATED, "login required", resp),
            ),
            StatusCode::FORBIDDEN => (
                Outcome::Denied,
                denied(code::PERMISSION_DENIED, "refused", resp),
            ),
            s if s.is_client_error() => (
                Outcome::Denied,
                denied(code::INVALID_ARGUMENT, "refused", resp),
            ),
            _ => (
                Outcome::Error,
                denied(code::UNAVAILABLE, "cannot decide now", resp),
            ),
        };
        self.metrics.request_done(None, outcome, start.elapsed());
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ext_authz::proto::{AttributeContext, HttpRequest, Request};

    fn check(headers: &[(&str, &str)], ext: &[(&str, &str)]) -> CheckRequest {
        CheckRequest {
            attributes: Some(AttributeContext {
                source: None,
                request: Some(Request {
                    http: Some(HttpRequest {
                        method: "GET".into(),
                        headers: headers
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .collect(),
                        path: "/a?b=c".into(),
                        host: "app.example.com".into(),
                        scheme: "https".into(),
                        header_map: None,
                    }),
                }),
                context_extensions: ext
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            }),
        }
    }

    #[test]
    fn pseudo_headers_are_skipped_and_the_authority_is_the_host() {
        let (d, _) = describe(&check(
            &[
                (":authority", "x.example.com"),
                (":path", "/a"),
                ("cookie", "a=b"),
            ],
            &[],
        ))
        .unwrap();
        assert_eq!(d.headers.get("cookie").unwrap(), "a=b");
        assert_eq!(d.headers.get("host").unwrap(), "app.example.com");
        assert!(d.https);
        assert_eq!(d.path, "/a?b=c");
    }

    #[test]
    fn a_misspelt_context_extension_is_refused() {
        assert!(describe(&check(&[], &[("allowed_groups", "admins")])).is_ok());
        let err = describe(&check(&[], &[("allowed_group", "admins")]))
            .err()
            .unwrap();
        assert!(err.contains("allowed_group"), "{err}");
    }

    #[test]
    fn client_copies_not_replaced_are_removed() {
        let mut set = HeaderMap::new();
        set.insert(redact::USER, HeaderValue::from_static("alice"));
        set.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        let names = vec![
            "x-forwarded-user".to_string(),
            "x_forwarded_user".to_string(),
            "x-forwarded-email".to_string(),
            "x-auth-request-groups".to_string(),
            "accept".to_string(),
        ];
        let r = allowed(&set, &names);
        let ok = r.ok_response.unwrap();
        assert_eq!(ok.headers.len(), 1, "only owned headers are set");
        assert_eq!(
            ok.headers_to_remove,
            vec![
                "x_forwarded_user",
                "x-forwarded-email",
                "x-auth-request-groups"
            ]
        );
    }
}
