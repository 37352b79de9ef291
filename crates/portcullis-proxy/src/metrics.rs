//! Prometheus counters, rendered in the text exposition format at `/metrics`.
//! Counting is one relaxed atomic add; nothing is allocated on the request path.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default)]
pub(crate) struct Metrics {
    pub forwarded: AtomicU64,
    /// Forward-auth checks answered "allowed".
    pub verified: AtomicU64,
    pub challenged: AtomicU64,
    pub denied: AtomicU64,
    pub upstream_errors: AtomicU64,
    pub store_errors: AtomicU64,
    pub logins_succeeded: AtomicU64,
    pub logins_failed: AtomicU64,
    pub logins_refused: AtomicU64,
    pub logouts: AtomicU64,
    /// Sessions ended from outside, by who ended them.
    pub ended_backchannel: AtomicU64,
    pub ended_frontchannel: AtomicU64,
    pub ended_signal: AtomicU64,
    pub ended_admin: AtomicU64,
    /// Logout tokens and security events refused (forged, expired, replayed, malformed).
    pub logout_tokens_refused: AtomicU64,
    pub events_accepted: AtomicU64,
    pub events_refused: AtomicU64,
    pub routes: RouteMetrics,
}

pub(crate) fn add(counter: &AtomicU64, n: usize) {
    counter.fetch_add(n as u64, Ordering::Relaxed);
}

pub(crate) fn inc(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// What happened to a request a route decided.
#[derive(Debug, Clone, Copy)]
pub(crate) enum RouteOutcome {
    Forwarded = 0,
    Verified = 1,
    Challenged = 2,
    Denied = 3,
    SteppedUp = 4,
}

const ROUTE_OUTCOMES: [&str; 5] = ["forwarded", "verified", "challenged", "denied", "step_up"];

/// Requests by route and outcome; the routes are fixed at start-up, so counting is one
/// relaxed add into a preallocated slot.
#[derive(Default)]
pub(crate) struct RouteMetrics {
    labels: Vec<String>,
    counts: Vec<[AtomicU64; 5]>,
}

impl RouteMetrics {
    pub(crate) fn new(labels: Vec<String>) -> Self {
        let counts = labels.iter().map(|_| Default::default()).collect();
        RouteMetrics { labels, counts }
    }

    pub(crate) fn count(&self, route: usize, outcome: RouteOutcome) {
        if let Some(slots) = self.counts.get(route) {
            inc(&slots[outcome as usize]);
        }
    }

    fn render(&self, out: &mut String) {
        if self.labels.is_empty() {
            return;
        }
        let _ = writeln!(
            out,
            "# HELP portcullis_route_requests_total Requests decided by each route, by outcome."
        );
        let _ = writeln!(out, "# TYPE portcullis_route_requests_total counter");
        for (label, slots) in self.labels.iter().zip(&self.counts) {
            let label = label.replace(['\\', '"', '\n'], "_");
            for (outcome, slot) in ROUTE_OUTCOMES.iter().zip(slots) {
                let _ = writeln!(
                    out,
                    "portcullis_route_requests_total{{route=\"{label}\",outcome=\"{outcome}\"}} {}",
                    slot.load(Ordering::Relaxed)
                );
            }
        }
    }
}

impl Metrics {
    pub(crate) fn render(&self, sessions: Option<usize>) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut out = String::with_capacity(1024);
        let _ = writeln!(
            out,
            "# HELP portcullis_requests_total Protected requests and forward-auth checks by outcome."
        );
        let _ = writeln!(out, "# TYPE portcullis_requests_total counter");
        for (outcome, c) in [
            ("forwarded", &self.forwarded),
            ("verified", &self.verified),
            ("challenged", &self.challenged),
            ("denied", &self.denied),
            ("upstream_error", &self.upstream_errors),
            ("session_store_unavailable", &self.store_errors),
        ] {
            let _ = writeln!(
                out,
                "portcullis_requests_total{{outcome=\"{outcome}\"}} {}",
                get(c)
            );
        }
        let _ = writeln!(
            out,
            "# HELP portcullis_logins_total Completed login callbacks by result."
        );
        let _ = writeln!(out, "# TYPE portcullis_logins_total counter");
        for (result, c) in [
            ("succeeded", &self.logins_succeeded),
            ("failed", &self.logins_failed),
            ("refused", &self.logins_refused),
        ] {
            let _ = writeln!(
                out,
                "portcullis_logins_total{{result=\"{result}\"}} {}",
                get(c)
            );
        }
        let _ = writeln!(
            out,
            "# HELP portcullis_logouts_total Sessions ended by logout."
        );
        let _ = writeln!(out, "# TYPE portcullis_logouts_total counter");
        let _ = writeln!(out, "portcullis_logouts_total {}", get(&self.logouts));
        let _ = writeln!(
            out,
            "# HELP portcullis_sessions_ended_total Sessions ended from outside, by who ended them."
        );
        let _ = writeln!(out, "# TYPE portcullis_sessions_ended_total counter");
        for (by, c) in [
            ("backchannel_logout", &self.ended_backchannel),
            ("frontchannel_logout", &self.ended_frontchannel),
            ("shared_signal", &self.ended_signal),
            ("admin", &self.ended_admin),
        ] {
            let _ = writeln!(
                out,
                "portcullis_sessions_ended_total{{by=\"{by}\"}} {}",
                get(c)
            );
        }
        let _ = writeln!(
            out,
            "# HELP portcullis_provider_messages_total Logout tokens and security events received, by result."
        );
        let _ = writeln!(out, "# TYPE portcullis_provider_messages_total counter");
        for (kind, result, c) in [
            ("logout_token", "refused", &self.logout_tokens_refused),
            ("security_event", "accepted", &self.events_accepted),
            ("security_event", "refused", &self.events_refused),
        ] {
            let _ = writeln!(
                out,
                "portcullis_provider_messages_total{{kind=\"{kind}\",result=\"{result}\"}} {}",
                get(c)
            );
        }
        if let Some(n) = sessions {
            let _ = writeln!(
                out,
                "# HELP portcullis_sessions Sessions held by this replica's memory store."
            );
            let _ = writeln!(out, "# TYPE portcullis_sessions gauge");
            let _ = writeln!(out, "portcullis_sessions {n}");
        }
        self.routes.render(&mut out);
        out
    }
}
