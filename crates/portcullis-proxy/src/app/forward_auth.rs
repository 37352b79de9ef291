//! Forward-auth: `/api/v1/auth/verify` answers the question a proxy in front asks before
//! it lets a request through to an app Portcullis does not itself proxy.
//!
//! The callers differ in what they do with the answer:
//! - nginx `auth_request` (and ingress-nginx's `auth-url`) accepts only 2xx, 401 and 403,
//!   and never shows our answer to the browser; a 401 is turned into a redirect by the
//!   proxy's own `error_page`/`auth-signin`. So a missing session is always a 401 for it,
//!   carrying the login URL in `X-Auth-Request-Login` for `auth_request_set`.
//! - Traefik `forwardAuth`, Caddy `forward_auth` and Envoy `ext_authz` hand a non-2xx
//!   answer to the browser as it is. For them a browser navigation without a session gets
//!   the 302 to the login directly. They are recognised by what they send: Traefik and
//!   Caddy the original URI in `X-Forwarded-Uri` (believed only from trusted proxies),
//!   Envoy the original path appended to this one (path-prefix mode).
//!
//! An allowed request gets `200` with the `X-Auth-Request-*` identity headers (Envoy
//! counts only 200 as allowed). The answer never sets a cookie: nginx would pass on only
//! one `Set-Cookie` of a subrequest, so the login's cookies travel on the login and
//! callback responses, which the proxy in front routes to Portcullis directly.
//!
//! Query parameters (`allowed_groups`, `allowed_emails`) narrow the policy for one
//! location, so one Portcullis serves many apps; they can only narrow it. An unknown
//! parameter is refused rather than ignored: a misspelt `allowed_group` must not open a
//! location to everyone.

use http::header::{HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use portcullis_identity::StepUp;
use portcullis_policy::Policy;

use super::decide::{Check, Decision, Entry, Target};
use super::endpoints::{LOGIN, LOGOUT, VERIFY};
use super::login::login_link;
use super::{App, Auth, ConnInfo, wants_html};
use crate::body::ProxyBody;
use crate::forwarding::{Origin, X_FORWARDED_URI};
use crate::inbound::RequestBody;
use crate::metrics::{Outcome, inc};
use crate::normalize;
use crate::pages;
use crate::redact;
use crate::return_to;

const VERIFY_PATH: &str = VERIFY.path;

/// The login URL for the proxy in front, on a 401.
pub(super) const X_AUTH_REQUEST_LOGIN: HeaderName = HeaderName::from_static("x-auth-request-login");

const X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
const X_ORIGINAL_URL: HeaderName = HeaderName::from_static("x-original-url");
const X_ORIGINAL_METHOD: HeaderName = HeaderName::from_static("x-original-method");
const X_AUTH_REQUEST_REDIRECT: HeaderName = HeaderName::from_static("x-auth-request-redirect");

/// What the caller told us about the request it is asking about.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Original {
    /// Where that request was going: an absolute URL or a path, not yet validated.
    pub url: Option<String>,
    /// Its method, when the caller says.
    pub method: Option<String>,
    /// The caller hands our non-2xx answer to the browser as it is.
    pub relays_answer: bool,
}

/// A question about a request another proxy holds: its credentials, method, where it
/// came from and was going, and the narrower policy of the caller's location.
pub(super) struct Question<'a> {
    pub headers: &'a http::HeaderMap,
    pub method: &'a str,
    pub origin: &'a Origin,
    pub original: &'a Original,
    pub location: &'a Location,
    /// The client wants HTML (a browser) rather than JSON.
    pub html: bool,
}

/// How an allowed request's identity is told: forward-auth's `X-Auth-Request-*` for the
/// proxy in front to copy, or the upstream's own names when the caller (Envoy's gRPC
/// check) sets them on the forwarded request itself.
pub(super) struct Answer {
    pub entry: Entry,
    pub names: redact::IdentityHeaders,
    pub assertion: HeaderName,
}

const AUTH_REQUEST_ANSWER: Answer = Answer {
    entry: Entry::ForwardAuth,
    names: redact::AUTH_REQUEST,
    assertion: redact::AUTH_REQUEST_JWT_ASSERTION,
};

/// The per-location settings from the query string.
#[derive(Debug, Default)]
pub(crate) struct Location {
    pub allowed_groups: Vec<String>,
    pub allowed_emails: Vec<String>,
    /// `redirect=true|false`: force or forbid the 302 for browsers.
    pub redirect: Option<bool>,
}

fn header_str<'a>(req: &'a Request<RequestBody>, name: &HeaderName) -> Option<&'a str> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

pub(crate) fn parse_location(query: &str) -> Result<Location, String> {
    let pairs: Vec<_> = form_urlencoded::parse(query.as_bytes()).collect();
    parse_location_pairs(
        pairs.iter().map(|(k, v)| (k.as_ref(), v.as_ref())),
        "/api/v1/auth/verify",
    )
}

/// The per-location settings from `(key, value)` pairs: forward-auth's query string, or
/// Envoy's per-route `context_extensions`.
pub(super) fn parse_location_pairs<'a>(
    pairs: impl Iterator<Item = (&'a str, &'a str)>,
    place: &str,
) -> Result<Location, String> {
    let mut location = Location::default();
    let list = |v: &str| {
        v.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    for (key, value) in pairs {
        match key {
            "allowed_groups" => location.allowed_groups.extend(list(value)),
            "allowed_emails" => location.allowed_emails.extend(list(value)),
            "redirect" => {
                location.redirect = Some(match value {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    other => {
                        return Err(format!(
                            "redirect={other}: write redirect=true or redirect=false"
                        ));
                    }
                })
            }
            other => {
                return Err(format!(
                    "unknown parameter `{other}`: {place} takes allowed_groups, allowed_emails and redirect"
                ));
            }
        }
    }
    Ok(location)
}

/// The per-location settings, unless the query string is really the original request's:
/// always in Envoy's path-prefix mode, and with Caddy, whose `uri` rewrite keeps the
/// original query when the configured URI has none (it then equals `X-Forwarded-Uri`'s).
fn location(req: &Request<RequestBody>, origin: &Origin) -> Result<Location, String> {
    if req.uri().path() != VERIFY_PATH {
        return Ok(Location::default());
    }
    let query = req.uri().query().unwrap_or("");
    if !query.is_empty()
        && origin.via_trusted_proxy
        && header_str(req, &X_FORWARDED_URI)
            .and_then(|uri| uri.split_once('?'))
            .is_some_and(|(_, original)| original == query)
    {
        return Ok(Location::default());
    }
    parse_location(query)
}

fn original(req: &Request<RequestBody>, origin: &Origin) -> Original {
    let host = origin.host.as_ref().and_then(|h| h.to_str().ok());
    let absolute = |path: &str| match host {
        Some(host) => format!("{}://{host}{path}", origin.proto),
        None => path.to_string(),
    };
    // Envoy, path-prefix mode: the original path (and query) follows ours.
    let path = req.uri().path();
    if path.len() > VERIFY_PATH.len() {
        let rest = &req.uri().path_and_query().map_or(path, |pq| pq.as_str())[VERIFY_PATH.len()..];
        return Original {
            url: Some(absolute(rest)),
            method: Some(req.method().to_string()),
            relays_answer: true,
        };
    }
    // Traefik and Caddy; origin.proto and origin.host already come from their
    // X-Forwarded-Proto and X-Forwarded-Host when (and only when) the peer is trusted.
    if origin.via_trusted_proxy
        && let Some(uri) = header_str(req, &X_FORWARDED_URI)
    {
        return Original {
            url: Some(absolute(uri)),
            method: header_str(req, &X_FORWARDED_METHOD).map(str::to_string),
            relays_answer: true,
        };
    }
    // nginx: ingress-nginx sends both (X-Original-URL absolute, X-Auth-Request-Redirect
    // the request URI); a hand-written config sends what its author chose. Either only
    // picks where this browser lands after logging in, and is validated like any other
    // return path, so it is read from any peer.
    let url = header_str(req, &X_ORIGINAL_URL)
        .or_else(|| header_str(req, &X_AUTH_REQUEST_REDIRECT))
        .map(str::to_string);
    Original {
        url,
        method: header_str(req, &X_ORIGINAL_METHOD).map(str::to_string),
        relays_answer: false,
    }
}

impl App {
    pub(super) async fn verify(
        &self,
        conn: &ConnInfo,
        req: Request<RequestBody>,
    ) -> Response<ProxyBody> {
        let start = std::time::Instant::now();
        let resp = self.verify_request(conn, req).await;
        let outcome = match resp.status() {
            StatusCode::OK => Outcome::Verified,
            StatusCode::UNAUTHORIZED | StatusCode::FOUND => Outcome::Challenged,
            StatusCode::FORBIDDEN => Outcome::Denied,
            _ => Outcome::Error,
        };
        self.metrics.request_done(None, outcome, start.elapsed());
        resp
    }

    async fn verify_request(
        &self,
        conn: &ConnInfo,
        req: Request<RequestBody>,
    ) -> Response<ProxyBody> {
        if self.auth.is_none() {
            // Open mode lets everything through, here as on the proxied path.
            return pages::text(StatusCode::OK, "");
        }
        let html = wants_html(req.headers());
        let origin = self.origin(conn, req.headers(), req.uri());
        let location = match location(&req, &origin) {
            Ok(location) => location,
            Err(problem) => {
                tracing::error!(problem = %problem, "forward-auth request refused: fix the URL the proxy in front calls");
                return pages::json_error(StatusCode::BAD_REQUEST, "invalid_request", &problem);
            }
        };
        let original = original(&req, &origin);
        let method = original
            .method
            .clone()
            .unwrap_or_else(|| req.method().to_string());
        let question = Question {
            headers: req.headers(),
            method: &method,
            origin: &origin,
            original: &original,
            location: &location,
            html,
        };
        self.answer(conn, &question, &AUTH_REQUEST_ANSWER).await
    }

    /// Decides a question about a request another proxy holds, and answers it the way
    /// forward-auth does: 200 with the identity headers under `answer`'s names, a 302 or
    /// 401 to log in, 403 when refused. The gRPC check turns this answer into Envoy's.
    pub(super) async fn answer(
        &self,
        conn: &ConnInfo,
        q: &Question<'_>,
        answer: &Answer,
    ) -> Response<ProxyBody> {
        let (origin, original, location, html) = (q.origin, q.original, q.location, q.html);
        // With routes, the request in question decides which route applies: its path,
        // normalized as the proxied path's is (an ambiguous one is refused), its host
        // and method.
        let target_url = original.url.as_deref().map(|u| split_url(u, origin));
        let target_path = match &target_url {
            Some((_, path)) => match normalize::normalize_path(path, self.paths) {
                Ok(p) => Some(p.into_owned()),
                Err(m) => {
                    tracing::debug!(
                        reason = m.explain(),
                        "forward-auth: the original path is ambiguous: refused"
                    );
                    return pages::json_error(StatusCode::FORBIDDEN, "forbidden", m.explain());
                }
            },
            None if !self.routes.is_empty() => {
                if let Some(count) = self.forward_auth_blind.hit() {
                    tracing::error!(
                        refused = count,
                        "forward-auth with routes needs the original URL (X-Original-URL, or X-Forwarded-Uri from a trusted proxy): refusing"
                    );
                }
                return pages::json_error(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "the proxy in front did not say which URL it asks about",
                );
            }
            None => None,
        };
        let here = Policy::new(&location.allowed_emails, &location.allowed_groups);
        let check = Check {
            headers: q.headers,
            client: origin.client_ip,
            entry: answer.entry,
            narrower: Some(&here),
            target: Target {
                method: q.method,
                host: target_url.as_ref().and_then(|(h, _)| h.as_deref()),
                path: target_path.as_deref().unwrap_or("/"),
            },
        };
        let (principal, route) = match self.decide(check).await {
            Decision::Admit {
                who: Some(principal),
                route,
            } => (principal, route),
            Decision::Admit { who: None, .. } => return pages::text(StatusCode::OK, ""),
            Decision::Challenge { auth, .. } => {
                return self.verify_challenge(auth, q, None);
            }
            Decision::StepUp { auth, step, .. } => {
                return self.verify_challenge(auth, q, Some(&step));
            }
            Decision::Deny { reason, .. } => return pages::denied(&reason, html, LOGOUT.path),
            Decision::NoRoute | Decision::PathParameters => {
                return pages::json_error(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "no route admits this request",
                );
            }
            Decision::Fail(e) => return e.into_response(html, LOGIN.path),
        };
        inc(&self.metrics.verified);
        if let Some(r) = route {
            self.metrics.route(r.index, Outcome::Verified);
        }
        let mut resp = pages::text(StatusCode::OK, "");
        redact::set_identity_headers(
            resp.headers_mut(),
            &answer.names,
            principal.identity(),
            principal.all_groups(),
        );
        if let Some(assertions) = &self.assertions {
            // The route's audience, else the origin of the request in question.
            let audience = match (route.and_then(|r| r.audience.as_deref()), &target_url) {
                (Some(aud), _) => aud.to_string(),
                (None, Some((Some(host), _))) => format!("{}://{host}", origin.proto),
                _ => self.default_audience.clone(),
            };
            let session = principal.assertion_key();
            if let Some(token) = assertions.assertion(
                conn.worker,
                session,
                principal.identity(),
                principal.all_groups(),
                &audience,
            ) {
                resp.headers_mut().insert(answer.assertion.clone(), token);
            }
        }
        resp
    }

    /// No session: where to log in, as a 302 for callers that relay it to a browser
    /// navigation, else as a 401.
    fn verify_challenge(
        &self,
        auth: &Auth,
        q: &Question<'_>,
        step: Option<&StepUp>,
    ) -> Response<ProxyBody> {
        let (original, location, html) = (q.original, q.location, q.html);
        let return_to = original
            .url
            .as_deref()
            .and_then(|url| {
                let valid = return_to::validate(url, &auth.return_rules);
                if valid.is_none() {
                    tracing::warn!(url, "forward-auth: the original URL is not an allowed return address (add its host to auth.allowed_redirect_hosts); returning to / after login");
                }
                valid
            })
            .map(|url| same_origin_path(url, auth.public_origin.as_ref()))
            .unwrap_or_else(|| "/".into());
        let login = match &auth.public_origin {
            Some(public) => format!(
                "{}{}",
                public.as_str().trim_end_matches('/'),
                login_link(None, &return_to, step)
            ),
            None => login_link(None, &return_to, step),
        };
        let method = q.method;
        let navigates = method.eq_ignore_ascii_case("GET") || method.eq_ignore_ascii_case("HEAD");
        let redirect = location
            .redirect
            .unwrap_or(original.relays_answer && html && navigates);
        let mut resp = if redirect {
            pages::redirect(&login)
        } else {
            pages::unauthenticated(html, &login)
        };
        if let Ok(v) = HeaderValue::from_str(&login) {
            resp.headers_mut().insert(X_AUTH_REQUEST_LOGIN, v);
        }
        resp
    }
}

/// The host (if the URL names one, else the request's) and the path of an original URL,
/// absolute or a path with a query.
fn split_url(url: &str, origin: &Origin) -> (Option<String>, String) {
    split_original(url, origin.host.as_ref().and_then(|h| h.to_str().ok()))
}

/// [`split_url`] for a request that came for `host`.
pub(crate) fn split_original(url: &str, host: Option<&str>) -> (Option<String>, String) {
    if url.starts_with('/') {
        let path = url.split(['?', '#']).next().unwrap_or("/").to_string();
        return (host.map(str::to_string), path);
    }
    match url::Url::parse(url) {
        Ok(u) => {
            let host = u.host_str().map(|h| match u.port() {
                Some(p) => format!("{h}:{p}"),
                None => h.to_string(),
            });
            // The raw path as sent, not the URL parser's normalized one: the same
            // normalization as the proxied path decides on it.
            let after_authority = url
                .split_once("://")
                .map(|(_, rest)| rest)
                .and_then(|rest| rest.find('/').map(|i| &rest[i..]))
                .unwrap_or("/");
            let path = after_authority
                .split(['?', '#'])
                .next()
                .unwrap_or("/")
                .to_string();
            (host, path)
        }
        Err(_) => (None, url.to_string()),
    }
}

/// An absolute return URL on Portcullis's own public origin becomes a path, so the
/// login does not depend on the host being listed; any other stays absolute.
fn same_origin_path(url: String, public: Option<&url::Url>) -> String {
    let (Some(public), Ok(parsed)) = (public, url::Url::parse(&url)) else {
        return url;
    };
    if parsed.origin() == public.origin() {
        let mut path = parsed.path().to_string();
        if let Some(q) = parsed.query() {
            path.push('?');
            path.push_str(q);
        }
        return path;
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_parameters_narrow_and_unknown_ones_are_refused() {
        let l =
            parse_location("allowed_groups=admins,%20sre&allowed_groups=ops&allowed_emails=a@x.io")
                .unwrap();
        assert_eq!(l.allowed_groups, vec!["admins", "sre", "ops"]);
        assert_eq!(l.allowed_emails, vec!["a@x.io"]);
        assert_eq!(l.redirect, None);
        assert_eq!(
            parse_location("redirect=false").unwrap().redirect,
            Some(false)
        );
        assert!(
            parse_location("allowed_group=admins")
                .unwrap_err()
                .contains("allowed_group")
        );
        assert!(parse_location("redirect=maybe").is_err());
        assert!(parse_location("").is_ok());
    }

    #[test]
    fn a_return_url_on_the_public_origin_becomes_a_path() {
        let public = url::Url::parse("https://auth.example.com/").unwrap();
        assert_eq!(
            same_origin_path("https://auth.example.com/a/b?c=d".into(), Some(&public)),
            "/a/b?c=d"
        );
        assert_eq!(
            same_origin_path("https://app.example.com/a".into(), Some(&public)),
            "https://app.example.com/a"
        );
        assert_eq!(same_origin_path("/a".into(), Some(&public)), "/a");
    }
}
