//! Prometheus metrics, kept with `prometheus-client` and served on the admin listener
//! (OpenMetrics text). Every series is created at start-up (the routes and providers are
//! known then), so counting on the request path is one atomic add or one uncontended
//! histogram lock, with no label lookup and no allocation.
//!
//! What is measured: requests by outcome and route (count and latency), the upstream's
//! time to answer, the identity provider's calls (login, refresh, introspection) by
//! provider, the session store's operations, logins, logouts, refusals by reason,
//! sessions ended from outside, logout tokens and security events, and configuration
//! reloads.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Latency buckets, in seconds: from half a millisecond to ten seconds.
const LATENCY: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

fn latency() -> Histogram {
    Histogram::new(LATENCY)
}

pub(crate) fn inc(counter: &Counter) {
    counter.inc();
}

pub(crate) fn add(counter: &Counter, n: usize) {
    counter.inc_by(n as u64);
}

/// Seconds since `start`, for a histogram.
pub(crate) fn seconds(start: Instant) -> f64 {
    start.elapsed().as_secs_f64()
}

/// What happened to a protected request or a forward-auth check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Forwarded = 0,
    Verified = 1,
    Challenged = 2,
    Denied = 3,
    SteppedUp = 4,
    Error = 5,
}

const OUTCOMES: [&str; 6] = [
    "forwarded",
    "verified",
    "challenged",
    "denied",
    "step_up",
    "error",
];

/// The route label of a request no route decided (no routes configured).
const NO_ROUTE: &str = "";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteOutcomeLabels {
    route: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByLabels {
    by: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindResultLabels {
    kind: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderCallLabels {
    provider: String,
    call: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: String,
}

/// Why a user was refused, as the metric's `reason` label says it.
pub(crate) const REFUSAL_REASONS: [&str; 7] = [
    "not_allowed",
    "deactivated",
    "not_provisioned",
    "route_denied",
    "route_not_allowed",
    "account_disabled",
    "provider_refused",
];

/// A call to an identity provider.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ProviderCall {
    /// A login's callback: the code exchange, the ID token and userinfo.
    Login = 0,
    Refresh = 1,
    Introspection = 2,
}

const PROVIDER_CALLS: [&str; 3] = ["login", "refresh", "introspection"];

/// A session store operation.
#[derive(Debug, Clone, Copy)]
pub(crate) enum StoreOp {
    Load = 0,
    Create = 1,
    Update = 2,
    Delete = 3,
    Revoke = 4,
    Other = 5,
}

const STORE_OPS: [&str; 6] = ["load", "create", "update", "delete", "revoke", "other"];

impl StoreOp {
    /// The name of its trace span.
    pub(crate) fn span_name(self) -> &'static str {
        [
            "session.load",
            "session.create",
            "session.update",
            "session.delete",
            "session.revoke",
            "session.other",
        ][self as usize]
    }
}

/// The session store's latency histograms; cloned into the store wrapper (they share
/// their series).
#[derive(Clone)]
pub(crate) struct StoreLatency {
    by_op: Vec<Histogram>,
}

impl StoreLatency {
    pub(crate) fn observe(&self, op: StoreOp, start: Instant) {
        if let Some(h) = self.by_op.get(op as usize) {
            h.observe(seconds(start));
        }
    }
}

pub(crate) struct Metrics {
    registry: Registry,
    pub forwarded: Counter,
    /// Forward-auth checks answered "allowed".
    pub verified: Counter,
    pub challenged: Counter,
    pub denied: Counter,
    pub upstream_errors: Counter,
    pub store_errors: Counter,
    pub logins_succeeded: Counter,
    pub logins_failed: Counter,
    pub logins_refused: Counter,
    pub logouts: Counter,
    /// Sessions ended from outside, by who ended them.
    pub ended_backchannel: Counter,
    pub ended_frontchannel: Counter,
    pub ended_signal: Counter,
    pub ended_admin: Counter,
    /// Logout tokens and security events refused (forged, expired, replayed, malformed).
    pub logout_tokens_refused: Counter,
    pub events_accepted: Counter,
    pub events_refused: Counter,
    pub reloads_succeeded: Counter,
    pub reload_failures: Counter,
    /// By route (index 0: no route; i + 1: route i), then by outcome.
    route_counts: Vec<Vec<Counter>>,
    route_latency: Vec<Vec<Histogram>>,
    upstream_latency: Vec<Histogram>,
    refusals: Vec<Counter>,
    provider_calls: HashMap<String, Vec<Histogram>>,
    pub store: StoreLatency,
    sessions: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new(&[], &[], None)
    }
}

impl Metrics {
    /// The metrics of an app with these routes (by label, in table order) and providers;
    /// `reloads` are the reload counters of the app this one replaces.
    pub(crate) fn new(
        routes: &[String],
        providers: &[String],
        reloads: Option<(Counter, Counter)>,
    ) -> Self {
        let mut registry = Registry::default();
        let counters = |registry: &mut Registry, name: &str, help: &str| {
            let family = Family::<OutcomeLabels, Counter>::default();
            registry.register(name, help, family.clone());
            family
        };
        let requests = counters(
            &mut registry,
            "portcullis_requests",
            "Protected requests and forward-auth checks by outcome.",
        );
        let outcome = |o: &str| {
            requests.get_or_create_owned(&OutcomeLabels {
                outcome: o.to_string(),
            })
        };
        let (forwarded, verified, challenged, denied) = (
            outcome("forwarded"),
            outcome("verified"),
            outcome("challenged"),
            outcome("denied"),
        );
        let (upstream_errors, store_errors) = (
            outcome("upstream_error"),
            outcome("session_store_unavailable"),
        );

        let logins = Family::<ResultLabels, Counter>::default();
        registry.register(
            "portcullis_logins",
            "Completed login callbacks by result.",
            logins.clone(),
        );
        let login = |r: &str| {
            logins.get_or_create_owned(&ResultLabels {
                result: r.to_string(),
            })
        };
        let logouts = Counter::default();
        registry.register(
            "portcullis_logouts",
            "Sessions ended by logout.",
            logouts.clone(),
        );
        let ended = Family::<ByLabels, Counter>::default();
        registry.register(
            "portcullis_sessions_ended",
            "Sessions ended from outside, by who ended them.",
            ended.clone(),
        );
        let ended_by = |by: &str| ended.get_or_create_owned(&ByLabels { by: by.to_string() });
        let messages = Family::<KindResultLabels, Counter>::default();
        registry.register(
            "portcullis_provider_messages",
            "Logout tokens and security events received, by result.",
            messages.clone(),
        );
        let message = |kind: &str, result: &str| {
            messages.get_or_create_owned(&KindResultLabels {
                kind: kind.to_string(),
                result: result.to_string(),
            })
        };
        let (reloads, reload_failures) = reloads.unwrap_or_default();
        registry.register(
            "portcullis_config_reloads",
            "Configuration reloads applied.",
            reloads.clone(),
        );
        registry.register(
            "portcullis_config_reload_failures",
            "Configuration reloads refused (the old configuration kept serving).",
            reload_failures.clone(),
        );

        let mut route_names = vec![NO_ROUTE.to_string()];
        route_names.extend(routes.iter().cloned());
        let route_family = Family::<RouteOutcomeLabels, Counter>::default();
        let latency_family =
            Family::<RouteOutcomeLabels, Histogram>::new_with_constructor(latency as fn() -> _);
        let upstream_family =
            Family::<RouteLabels, Histogram>::new_with_constructor(latency as fn() -> _);
        let mut route_counts = Vec::new();
        let mut route_latency = Vec::new();
        let mut upstream_latency = Vec::new();
        for (i, route) in route_names.iter().enumerate() {
            let labels = |o: &str| RouteOutcomeLabels {
                route: route.clone(),
                outcome: o.to_string(),
            };
            // The per-route counters exist only for configured routes.
            if i > 0 {
                route_counts.push(
                    OUTCOMES
                        .iter()
                        .map(|o| route_family.get_or_create_owned(&labels(o)))
                        .collect(),
                );
            } else {
                route_counts.push(Vec::new());
            }
            route_latency.push(
                OUTCOMES
                    .iter()
                    .map(|o| latency_family.get_or_create_owned(&labels(o)))
                    .collect(),
            );
            upstream_latency.push(upstream_family.get_or_create_owned(&RouteLabels {
                route: route.clone(),
            }));
        }
        if !routes.is_empty() {
            registry.register(
                "portcullis_route_requests",
                "Requests decided by each route, by outcome.",
                route_family,
            );
        }
        registry.register(
            "portcullis_request_duration_seconds",
            "Time to answer a protected request or a forward-auth check (to the response head), by outcome and route.",
            latency_family,
        );
        registry.register(
            "portcullis_upstream_duration_seconds",
            "Time the app took to answer (to its response head), by route.",
            upstream_family,
        );
        let refusal_family = Family::<ReasonLabels, Counter>::default();
        let refusals = REFUSAL_REASONS
            .iter()
            .map(|r| {
                refusal_family.get_or_create_owned(&ReasonLabels {
                    reason: r.to_string(),
                })
            })
            .collect();
        registry.register(
            "portcullis_refusals",
            "Users refused, by reason.",
            refusal_family,
        );
        let calls_family =
            Family::<ProviderCallLabels, Histogram>::new_with_constructor(latency as fn() -> _);
        let provider_calls = providers
            .iter()
            .map(|p| {
                let by_call = PROVIDER_CALLS
                    .iter()
                    .map(|c| {
                        calls_family.get_or_create_owned(&ProviderCallLabels {
                            provider: p.clone(),
                            call: c.to_string(),
                        })
                    })
                    .collect();
                (p.clone(), by_call)
            })
            .collect();
        registry.register(
            "portcullis_identity_provider_duration_seconds",
            "Time spent on identity provider calls, by provider and call (login: the callback's code exchange, ID token and userinfo).",
            calls_family,
        );
        let store_family =
            Family::<OperationLabels, Histogram>::new_with_constructor(latency as fn() -> _);
        let store = StoreLatency {
            by_op: STORE_OPS
                .iter()
                .map(|op| {
                    store_family.get_or_create_owned(&OperationLabels {
                        operation: op.to_string(),
                    })
                })
                .collect(),
        };
        registry.register(
            "portcullis_session_store_duration_seconds",
            "Time the session store took, by operation.",
            store_family,
        );
        let sessions = Gauge::default();
        registry.register(
            "portcullis_sessions",
            "Sessions held by this replica's memory store.",
            sessions.clone(),
        );
        Metrics {
            registry,
            forwarded,
            verified,
            challenged,
            denied,
            upstream_errors,
            store_errors,
            logins_succeeded: login("succeeded"),
            logins_failed: login("failed"),
            logins_refused: login("refused"),
            logouts,
            ended_backchannel: ended_by("backchannel_logout"),
            ended_frontchannel: ended_by("frontchannel_logout"),
            ended_signal: ended_by("shared_signal"),
            ended_admin: ended_by("admin"),
            logout_tokens_refused: message("logout_token", "refused"),
            events_accepted: message("security_event", "accepted"),
            events_refused: message("security_event", "refused"),
            reloads_succeeded: reloads,
            reload_failures,
            route_counts,
            route_latency,
            upstream_latency,
            refusals,
            provider_calls,
            store,
            sessions,
        }
    }

    /// The reload counters, to carry over to the app a reload builds.
    pub(crate) fn reload_counters(&self) -> (Counter, Counter) {
        (self.reloads_succeeded.clone(), self.reload_failures.clone())
    }

    /// Counts a request a route decided.
    pub(crate) fn route(&self, route: usize, outcome: Outcome) {
        if let Some(c) = self
            .route_counts
            .get(route + 1)
            .and_then(|slots| slots.get(outcome as usize))
        {
            c.inc();
        }
    }

    /// Observes how long a request took, by outcome and route.
    pub(crate) fn request_done(&self, route: Option<usize>, outcome: Outcome, took: Duration) {
        let slot = route.map_or(0, |r| r + 1);
        if let Some(h) = self
            .route_latency
            .get(slot)
            .and_then(|by| by.get(outcome as usize))
        {
            h.observe(took.as_secs_f64());
        }
    }

    /// Observes how long the app took to answer; returns the time it answered.
    pub(crate) fn upstream_done(&self, route: Option<usize>, start: Instant) -> Instant {
        let now = Instant::now();
        if let Some(h) = self.upstream_latency.get(route.map_or(0, |r| r + 1)) {
            h.observe(now.saturating_duration_since(start).as_secs_f64());
        }
        now
    }

    /// Counts a refusal; `reason` is one of [`REFUSAL_REASONS`].
    pub(crate) fn refusal(&self, reason: &str) {
        if let Some(i) = REFUSAL_REASONS.iter().position(|r| *r == reason) {
            self.refusals[i].inc();
        }
    }

    /// Observes an identity provider call.
    pub(crate) fn provider_call(&self, provider: &str, call: ProviderCall, start: Instant) {
        if let Some(h) = self
            .provider_calls
            .get(provider)
            .and_then(|by| by.get(call as usize))
        {
            h.observe(seconds(start));
        }
    }

    /// The OpenMetrics text exposition; `sessions` is the memory store's count, if any.
    pub(crate) fn render(&self, sessions: Option<usize>) -> String {
        if let Some(n) = sessions {
            self.sessions.set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        let mut out = String::with_capacity(16 * 1024);
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// The content type of [`Metrics::render`]'s text.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_exists_from_the_start_and_counts() {
        let m = Metrics::new(&["admin".into()], &["corp".into()], None);
        inc(&m.forwarded);
        m.route(0, Outcome::Denied);
        m.refusal("route_denied");
        m.request_done(Some(0), Outcome::Denied, Duration::ZERO);
        m.request_done(None, Outcome::Forwarded, Duration::ZERO);
        m.provider_call("corp", ProviderCall::Refresh, Instant::now());
        m.store.observe(StoreOp::Load, Instant::now());
        let text = m.render(Some(3));
        for wanted in [
            "portcullis_requests_total{outcome=\"forwarded\"} 1",
            "portcullis_requests_total{outcome=\"denied\"} 0",
            "portcullis_route_requests_total{route=\"admin\",outcome=\"denied\"} 1",
            "portcullis_refusals_total{reason=\"route_denied\"} 1",
            "portcullis_request_duration_seconds_count{route=\"admin\",outcome=\"denied\"} 1",
            "portcullis_request_duration_seconds_count{route=\"\",outcome=\"forwarded\"} 1",
            "portcullis_identity_provider_duration_seconds_count{provider=\"corp\",call=\"refresh\"} 1",
            "portcullis_session_store_duration_seconds_count{operation=\"load\"} 1",
            "portcullis_sessions 3",
            "portcullis_config_reload_failures_total 0",
        ] {
            assert!(text.contains(wanted), "{wanted} missing:\n{text}");
        }
        // An unknown reason or provider is not an error, and adds no series.
        m.refusal("made_up");
        m.provider_call("other", ProviderCall::Login, Instant::now());
        assert!(!m.render(None).contains("made_up"));
    }
}
