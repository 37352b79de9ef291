//! The one decision every entry point makes about a request: which route takes it, who
//! it belongs to (authenticate), whether they may enter (authorize: the global
//! allow-lists, then a narrower policy the entry point adds, such as forward-auth's
//! per-location lists, then the route's rules and step-up), and so who the app is told
//! about. The proxied path and forward-auth call [`App::decide`] and differ only in how
//! they answer.
//!
//! With routes configured, a request no route takes is refused, never forwarded; a
//! public route needs no login (and looks up no session). A refusal is logged here, once,
//! with the same fields wherever it happens: `User not allowed: <user>` with `user`,
//! `provider`, `reason`, `client`, `entry` and `route`. An outage of the session store is
//! counted and logged once per interval; a refused bearer token only at debug level
//! (anyone can send junk; the client gets the reason).

use std::net::IpAddr;

use http::HeaderMap;
use portcullis_identity::StepUp;
use portcullis_policy::{Policy, PolicyDecision, Route, RouteDecision};

use super::authn::Principal;
use super::{App, Auth};
use crate::error::ProxyError;
use crate::metrics::{Outcome, inc};

/// Where a decision was asked for, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Entry {
    /// A request Portcullis forwards to its upstream.
    Proxied,
    /// A forward-auth check about a request another proxy holds.
    ForwardAuth,
    /// Envoy's gRPC check (ext_authz) about a request Envoy holds.
    ExtAuthz,
    /// A login, at the callback.
    Login,
    /// The canary of `portcullis check --live`: the global allow-lists decide, not the
    /// route table.
    Canary,
}

impl Entry {
    fn as_str(self) -> &'static str {
        match self {
            Entry::Proxied => "proxied",
            Entry::ForwardAuth => "forward-auth",
            Entry::ExtAuthz => "ext-authz",
            Entry::Login => "login",
            Entry::Canary => "canary",
        }
    }
}

/// The request being decided: for forward-auth, the one the proxy in front holds.
#[derive(Debug, Clone, Copy)]
pub(super) struct Target<'a> {
    pub method: &'a str,
    /// The host the client addressed (maybe with a port).
    pub host: Option<&'a str>,
    /// The normalized path.
    pub path: &'a str,
}

/// What is being decided.
pub(super) struct Check<'a> {
    /// The headers that carry the credential (cookie or bearer token).
    pub headers: &'a HeaderMap,
    pub client: IpAddr,
    pub entry: Entry,
    /// A policy that must also admit the user (it can only narrow the global one).
    pub narrower: Option<&'a Policy>,
    pub target: Target<'a>,
}

pub(super) enum Decision<'a> {
    /// Let it through, as `who` (`None`: open mode or a public route), under `route`.
    Admit {
        who: Option<Principal>,
        route: Option<&'a Route>,
    },
    /// No usable credential (or one from another provider than the route's): the entry
    /// point sends the client to log in.
    Challenge {
        auth: &'a Auth,
        route: Option<&'a Route>,
    },
    /// Signed in and allowed, but the route wants a fresher or stronger login.
    StepUp {
        auth: &'a Auth,
        route: &'a Route,
        step: StepUp,
        who: Principal,
    },
    /// Authenticated but refused, for this reason (already logged and counted).
    Deny {
        reason: String,
        route: Option<&'a Route>,
    },
    /// Routes are configured and none takes the request.
    NoRoute,
    /// The path carries `;` parameters the route does not accept.
    PathParameters,
    /// Authentication could not be done: a refused bearer token, the session store or
    /// the provider unreachable (already counted and logged).
    Fail(ProxyError),
}

impl App {
    pub(super) async fn decide(&self, check: Check<'_>) -> Decision<'_> {
        if !portcullis_core::trace::recording() {
            return self.decide_untraced(check).await;
        }
        // The decision's future boxed once; the span's wrapper holds only the box.
        portcullis_core::trace::in_span(
            "policy.decide",
            portcullis_core::trace::Kind::Internal,
            Box::pin(self.decide_untraced(check)),
        )
        .await
    }

    async fn decide_untraced(&self, check: Check<'_>) -> Decision<'_> {
        let t = check.target;
        let route = if self.routes.is_empty() || check.entry == Entry::Canary {
            None
        } else {
            match self.routes.find(t.method, t.host, t.path) {
                Some(route) => Some(route),
                None => {
                    tracing::debug!(path = t.path, "no route takes the request: refused");
                    return Decision::NoRoute;
                }
            }
        };
        if let Some(route) = route
            && t.path.contains(';')
            && !route.path_parameters
        {
            return Decision::PathParameters;
        }
        if route.is_some_and(|r| r.public) {
            return Decision::Admit { who: None, route };
        }
        let Some(auth) = &self.auth else {
            return Decision::Admit { who: None, route };
        };
        let count = |outcome| {
            if let Some(r) = route {
                self.metrics.route(r.index, outcome);
            }
        };
        let principal = match self.authenticate(auth, check.headers).await {
            Ok(Some(principal)) => principal,
            Ok(None) => {
                inc(&self.metrics.challenged);
                count(Outcome::Challenged);
                return Decision::Challenge { auth, route };
            }
            Err(e) => return Decision::Fail(self.authentication_failed(e)),
        };
        // A route with its own provider takes only that provider's users.
        if let Some(wanted) = route.and_then(|r| r.provider.as_deref())
            && &*principal.identity().provider != wanted
        {
            inc(&self.metrics.challenged);
            count(Outcome::Challenged);
            return Decision::Challenge { auth, route };
        }
        let subject = principal.subject();
        let mut decision = match auth.policy.decide(&subject) {
            PolicyDecision::Allow => check
                .narrower
                .map_or(PolicyDecision::Allow, |narrower| narrower.decide(&subject)),
            deny => deny,
        };
        let mut step = None;
        if let (PolicyDecision::Allow, Some(route)) = (&decision, route) {
            match route.decide(&subject, portcullis_core::time::unix_now()) {
                RouteDecision::Allow => {}
                RouteDecision::Deny(reason) => decision = PolicyDecision::Deny(reason),
                RouteDecision::StepUp {
                    max_age,
                    acr_values,
                } => {
                    step = Some(StepUp {
                        max_age,
                        acr_values,
                    })
                }
            }
        }
        if let PolicyDecision::Deny(reason) = decision {
            inc(&self.metrics.denied);
            count(Outcome::Denied);
            let kind = reason.kind();
            let reason = reason.to_string();
            let who = principal.identity();
            self.refused(
                who.display(),
                &who.provider,
                (kind, &reason),
                check.client,
                check.entry,
                route,
            );
            return Decision::Deny { reason, route };
        }
        if let (Some(step), Some(route)) = (step, route) {
            count(Outcome::SteppedUp);
            tracing::info!(
                user = %principal.identity().display(),
                route = %route.label(),
                "a fresher login is needed for this route: stepping up"
            );
            return Decision::StepUp {
                auth,
                route,
                step,
                who: principal,
            };
        }
        Decision::Admit {
            who: Some(principal),
            route,
        }
    }

    /// The one log line for a user the policy (or the provider) refuses, and its count
    /// by reason kind (one of `metrics::REFUSAL_REASONS`).
    pub(super) fn refused(
        &self,
        user: &str,
        provider: &str,
        (kind, reason): (&str, &str),
        client: IpAddr,
        entry: Entry,
        route: Option<&Route>,
    ) {
        self.metrics.refusal(kind);
        let route = route.map(Route::label).unwrap_or_default();
        tracing::warn!(
            user = %user,
            provider = %provider,
            reason = %reason,
            client = %client,
            entry = entry.as_str(),
            route = %route,
            "User not allowed: {user}"
        );
    }

    /// Counts and logs why authentication could not be done, and hands the error back
    /// to be answered.
    fn authentication_failed(&self, e: ProxyError) -> ProxyError {
        match &e {
            ProxyError::BadBearer(reason) => {
                inc(&self.metrics.challenged);
                tracing::debug!(reason = %reason, "bearer token refused");
            }
            ProxyError::Store(_) => {
                inc(&self.metrics.store_errors);
                if let Some(refused) = self.store_outage.hit() {
                    tracing::error!(
                        error = %e,
                        refused,
                        "session store unavailable: refusing requests that need a session (fail closed)"
                    );
                }
            }
            _ => {}
        }
        e
    }
}
