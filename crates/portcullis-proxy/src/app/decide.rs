//! The one decision every entry point makes about a request: who it belongs to
//! (authenticate), whether they may enter (authorize: the global allow-lists, then a
//! narrower policy the entry point adds, such as forward-auth's per-location lists), and
//! so who the app is told about. The proxied path and forward-auth call [`App::decide`]
//! and differ only in how they answer.
//!
//! A refusal is logged here, once, with the same fields wherever it happens:
//! `User not allowed: <user>` with `user`, `provider`, `reason`, `client` and `entry`.
//! An outage of the session store is counted and logged once per interval; a refused
//! bearer token only at debug level (anyone can send junk; the client gets the reason).

use std::net::IpAddr;

use http::HeaderMap;
use portcullis_policy::{Policy, PolicyDecision};

use super::authn::Principal;
use super::{App, Auth};
use crate::error::ProxyError;
use crate::metrics::inc;

/// Where a decision was asked for, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Entry {
    /// A request Portcullis forwards to its upstream.
    Proxied,
    /// A forward-auth check about a request another proxy holds.
    ForwardAuth,
    /// A login, at the callback.
    Login,
}

impl Entry {
    fn as_str(self) -> &'static str {
        match self {
            Entry::Proxied => "proxied",
            Entry::ForwardAuth => "forward-auth",
            Entry::Login => "login",
        }
    }
}

/// What is being decided.
pub(super) struct Check<'a> {
    /// The headers that carry the credential (cookie or bearer token).
    pub headers: &'a HeaderMap,
    pub client: IpAddr,
    pub entry: Entry,
    /// A policy that must also admit the user (it can only narrow the global one).
    pub narrower: Option<&'a Policy>,
}

pub(super) enum Decision<'a> {
    /// Let it through, as `principal` (`None`: authentication is off, open mode).
    Admit(Option<Principal>),
    /// No usable credential: the entry point sends the client to log in.
    Challenge(&'a Auth),
    /// Authenticated but refused, for this reason (already logged).
    Deny(String),
    /// Authentication could not be done: a refused bearer token, the session store or
    /// the provider unreachable (already counted and logged).
    Fail(ProxyError),
}

impl App {
    pub(super) async fn decide(&self, check: Check<'_>) -> Decision<'_> {
        let Some(auth) = &self.auth else {
            return Decision::Admit(None);
        };
        let principal = match self.authenticate(auth, check.headers).await {
            Ok(Some(principal)) => principal,
            Ok(None) => {
                inc(&self.metrics.challenged);
                return Decision::Challenge(auth);
            }
            Err(e) => return Decision::Fail(self.authentication_failed(e)),
        };
        let subject = principal.subject();
        let decision = match auth.policy.decide(&subject) {
            PolicyDecision::Allow => check
                .narrower
                .map_or(PolicyDecision::Allow, |narrower| narrower.decide(&subject)),
            deny => deny,
        };
        if let PolicyDecision::Deny(reason) = decision {
            inc(&self.metrics.denied);
            let reason = reason.to_string();
            let who = principal.identity();
            self.refused(
                who.display(),
                &who.provider,
                &reason,
                check.client,
                check.entry,
            );
            return Decision::Deny(reason);
        }
        Decision::Admit(Some(principal))
    }

    /// The one log line for a user the policy (or the provider) refuses.
    pub(super) fn refused(
        &self,
        user: &str,
        provider: &str,
        reason: &str,
        client: IpAddr,
        entry: Entry,
    ) {
        tracing::warn!(
            user = %user,
            provider = %provider,
            reason = %reason,
            client = %client,
            entry = entry.as_str(),
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
