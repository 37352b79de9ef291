//! Protected traffic: decide, then forward to the upstream with the header rules applied
//! in their order (hop-by-hop fields, then every client copy of an identity header, then
//! the forwarding headers, then Portcullis's cookies, then the identity Portcullis
//! vouches for), or answer the decision's refusal.

use portcullis_core::trace;
use std::future::Future;
use std::pin::Pin;

use http::header::{self, HeaderValue};
use http::{HeaderMap, Request, Response, StatusCode};
use portcullis_session::cookie;

use super::authn::Principal;
use super::decide::{Check, Decision, Entry, Target};
use super::endpoints::{CANARY, LOGIN, LOGOUT};
use super::{App, ConnInfo, session_id, wants_html};
use crate::body::ProxyBody;
use crate::error::ProxyError;
use crate::forwarding;
use crate::inbound::RequestBody;
use crate::login_state::is_login_cookie;
use crate::metrics::{Outcome, inc};
use crate::pages;
use crate::upstream::{Added, Forwarded, UpgradeRequest};
use crate::{hop, redact};

/// Joins the `Cookie` fields into one for the HTTP/1.1 upstream and removes
/// Portcullis's own cookies; allocates only when there is something to do.
fn forward_cookies(headers: &mut HeaderMap, session_cookie: Option<&str>) {
    let ours =
        |name: &[u8]| session_cookie.is_some_and(|s| name == s.as_bytes()) || is_login_cookie(name);
    let values = || headers.get_all(header::COOKIE).iter().map(|v| v.as_bytes());
    let Some(joined) = cookie::rewrite(values, ours) else {
        return;
    };
    headers.remove(header::COOKIE);
    if !joined.is_empty()
        && let Ok(v) = HeaderValue::from_bytes(&joined)
    {
        headers.insert(header::COOKIE, v);
    }
}

/// No route takes the request: refused, never forwarded. `404` says as little as
/// possible about what exists.
pub(super) fn no_route(html: bool) -> Response<ProxyBody> {
    if html {
        return pages::page(
            StatusCode::NOT_FOUND,
            "Not found",
            "There is nothing here.",
            None,
        );
    }
    pages::json_error(
        StatusCode::NOT_FOUND,
        "not_found",
        "no route takes this request",
    )
}

impl App {
    pub(super) async fn proxied(
        &self,
        conn: &ConnInfo,
        req: &mut Request<RequestBody>,
    ) -> Response<ProxyBody> {
        let start = std::time::Instant::now();
        // When the upstream answered, if it was asked: the clock read for its latency ends
        // the request's too.
        let mut answered = None;
        let (resp, outcome, route) = self.decide_and_forward(conn, req, &mut answered).await;
        let end = answered.unwrap_or_else(std::time::Instant::now);
        self.metrics
            .request_done(route, outcome, end.saturating_duration_since(start));
        resp
    }

    /// The answer, what it was, and the route that decided it.
    async fn decide_and_forward(
        &self,
        conn: &ConnInfo,
        req: &mut Request<RequestBody>,
        answered: &mut Option<std::time::Instant>,
    ) -> (Response<ProxyBody>, Outcome, Option<usize>) {
        let html = wants_html(req.headers());
        if self.upstreams.is_empty() {
            let resp = pages::json_error(
                StatusCode::NOT_FOUND,
                "not_found",
                "this Portcullis answers forward-auth only (/api/v1/auth/verify); it proxies to no app",
            );
            return (resp, Outcome::Error, None);
        }
        let origin = self.origin(conn, req.headers(), req.uri());
        let canary = self.canary && CANARY.matches(req.uri().path());
        let check = Check {
            headers: req.headers(),
            client: origin.client_ip,
            entry: if canary {
                Entry::Canary
            } else {
                Entry::Proxied
            },
            narrower: None,
            target: Target {
                method: req.method().as_str(),
                host: origin.host.as_ref().and_then(|h| h.to_str().ok()),
                path: req.uri().path(),
            },
        };
        let (who, route) = match self.decide(check).await {
            Decision::Admit { who, route } => (who, route),
            Decision::Challenge { auth, route } => {
                let resp = Box::pin(self.challenge(auth, route, req, html)).await;
                return (resp, Outcome::Challenged, route.map(|r| r.index));
            }
            Decision::StepUp {
                auth,
                route,
                step,
                who,
            } => {
                let resp = Box::pin(self.step_up(auth, route, &step, &who, req, html)).await;
                return (resp, Outcome::SteppedUp, Some(route.index));
            }
            Decision::Deny { reason, route } => {
                let resp = pages::denied(&reason, html, LOGOUT.path);
                return (resp, Outcome::Denied, route.map(|r| r.index));
            }
            Decision::NoRoute => return (no_route(html), Outcome::Denied, None),
            Decision::PathParameters => {
                let resp = pages::json_error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    "the path has a ; parameter, which this route does not accept",
                );
                return (resp, Outcome::Denied, None);
            }
            Decision::Fail(e) => {
                return (e.into_response(html, LOGIN.path), Outcome::Error, None);
            }
        };

        let session = who.as_ref().and_then(Principal::assertion_key);
        let upgrade =
            hop::upgrade_protocol(req.headers(), &self.upgrades).map(|protocol| UpgradeRequest {
                protocol,
                until: self.tunnel_lifetime(req.headers()),
            });
        let headers = req.headers_mut();
        hop::strip_hop_by_hop(headers);
        redact::strip_identity_headers(headers);
        // What Portcullis sets goes beside the client's fields, not into their map:
        // their names were just removed from it.
        let mut added = Added::with_capacity(10);
        forwarding::apply(headers, &origin, &mut added);
        forward_cookies(
            headers,
            self.auth.as_ref().map(|a| a.session_cookie.name.as_str()),
        );
        if let Some(principal) = &who {
            redact::set_identity_headers(
                &mut added,
                &redact::FORWARDED,
                principal.identity(),
                principal.all_groups(),
            );
            if let Some(assertions) = &self.assertions {
                let audience = route.map_or(self.default_audience.as_str(), |r| {
                    self.audiences[r.index].as_str()
                });
                if let Some(token) = assertions.assertion(
                    conn.worker,
                    session,
                    principal.identity(),
                    principal.all_groups(),
                    audience,
                ) {
                    added.push(redact::JWT_ASSERTION, token);
                }
            }
            if let Some(auth) = &self.auth
                && (auth.pass_access_token || auth.pass_id_token)
                && let Some(tokens) = principal.tokens()
            {
                redact::set_token_headers(
                    headers,
                    auth.pass_access_token
                        .then_some(tokens.access_token.as_str()),
                    tokens.id_token.as_deref().filter(|_| auth.pass_id_token),
                );
            }
        }
        if canary {
            // The canary stands in for the app: what would have been sent, answered.
            added.apply_to(req.headers_mut());
            let resp = super::canary::echo(req, origin.client_ip, "proxied");
            return (resp, Outcome::Forwarded, None);
        }
        let pools = route
            .and_then(|r| r.upstream)
            .map_or(&self.upstreams, |i| &self.route_upstreams[i]);
        let upstream = &pools[conn.worker % pools.len()];
        let route = route.map(|r| r.index);
        let asked = std::time::Instant::now();
        // Run (and the trace context injected) only when polled: inside the span below
        // when this request is sampled, so the app hears of the span; otherwise the app
        // still hears of the trace.
        let forward = async {
            trace::inject(req.headers_mut());
            upstream
                .forward(
                    req,
                    added,
                    upgrade,
                    origin.host.as_ref(),
                    &self.tracker,
                    asked,
                )
                .await
        };
        let forwarded = if trace::recording() {
            // The call's future boxed once; the span's wrapper holds only the box.
            trace::in_span_result(
                "upstream",
                trace::Kind::Client,
                Box::pin(async {
                    let forwarded = forward.await;
                    if let Ok(Forwarded::Response(resp)) = &forwarded {
                        let status = i64::from(resp.status().as_u16());
                        trace::record(|| {
                            vec![trace::KeyValue::new("http.response.status_code", status)]
                        });
                    }
                    forwarded
                }),
            )
            .await
        } else {
            forward.await
        };
        *answered = Some(self.metrics.upstream_done(route, asked));
        match forwarded {
            Ok(forwarded) => {
                inc(&self.metrics.forwarded);
                if let Some(r) = route {
                    self.metrics.route(r, Outcome::Forwarded);
                }
                let resp = match forwarded {
                    Forwarded::Response(resp) => resp.map(ProxyBody::Upstream),
                    Forwarded::Switched(resp) => resp.map(|()| ProxyBody::empty()),
                };
                (resp, Outcome::Forwarded, route)
            }
            Err(e) => {
                inc(&self.metrics.upstream_errors);
                tracing::warn!(error = %e, client = %origin.client_ip, "upstream request failed");
                let resp = ProxyError::from(e).into_response(html, LOGIN.path);
                (resp, Outcome::Error, route)
            }
        }
    }

    /// What ends a tunnel opened on this request: the end of its session. Without a
    /// session (open mode, a bearer token) only the client or the upstream ends it.
    fn tunnel_lifetime(&self, headers: &HeaderMap) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let session = self.auth.as_ref().and_then(|auth| {
            let id = session_id(headers, &auth.session_cookie.name)?;
            Some(auth.sessions.ended_for(id))
        });
        match session {
            Some(ended) => Box::pin(ended),
            None => Box::pin(std::future::pending()),
        }
    }
}
