//! Routes: per-path (and host, and method) access rules, tried in order; the first route
//! whose `match` holds decides.
//!
//! A route is public (no login), or says who may use it: `deny` refuses and wins over
//! `allow`, and any one `allow` condition admits. Step-up: a login older than
//! `max_auth_age`, or with an `acr` not in `acr_values`, must sign in again. Everything
//! here is a pure function of the route, the subject and the time: the proxy has
//! already normalized the path and checked the global allow-lists.
//!
//! Matching a path prefix respects segment boundaries (`/admin` takes `/admin` and
//! `/admin/x`, never `/administrator`), and a missing attribute never matches (a user
//! without an email is not admitted, or refused, by an email rule).

use std::time::Duration;

use portcullis_config::{RouteConfig, RuleSet};

use crate::{DenyReason, Subject};

/// One route of the table.
#[derive(Debug, Clone)]
pub struct Route {
    pub index: usize,
    pub name: Option<String>,
    host: Option<String>,
    path: Option<String>,
    path_prefix: Option<String>,
    methods: Vec<String>,
    pub public: bool,
    allow: RuleSet,
    deny: RuleSet,
    pub max_auth_age: Option<Duration>,
    pub acr_values: Vec<String>,
    /// The provider a login for this route goes to.
    pub provider: Option<String>,
    pub audience: Option<String>,
    /// Accept `;` path parameters.
    pub path_parameters: bool,
    /// This route's own upstream, by its position among the configured ones.
    pub upstream: Option<usize>,
}

/// What a route says about a subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteDecision {
    Allow,
    Deny(DenyReason),
    /// Admitted by the rules, but the login is too old or not strong enough: sign in
    /// again with `max_age` (seconds) and/or one of `acr_values`.
    StepUp {
        max_age: Option<u64>,
        acr_values: Vec<String>,
    },
}

impl Route {
    /// `admin` or `#2`, for logs and metrics.
    pub fn label(&self) -> String {
        match &self.name {
            Some(n) => n.clone(),
            None => format!("#{}", self.index),
        }
    }

    /// Whether the route takes a request; `host` without its port, any case.
    pub fn matches(&self, method: &str, host: Option<&str>, path: &str) -> bool {
        if let Some(want) = &self.host {
            let Some(host) = host else {
                return false;
            };
            let ok = match want.strip_prefix("*.") {
                Some(domain) => {
                    host.len() > domain.len() + 1
                        && host[host.len() - domain.len()..].eq_ignore_ascii_case(domain)
                        && host.as_bytes()[host.len() - domain.len() - 1] == b'.'
                }
                None => host.eq_ignore_ascii_case(want),
            };
            if !ok {
                return false;
            }
        }
        if let Some(exact) = &self.path
            && path != exact
        {
            return false;
        }
        if let Some(prefix) = &self.path_prefix
            && !under_prefix(path, prefix)
        {
            return false;
        }
        self.methods.is_empty()
            || self
                .methods
                .iter()
                .any(|m| m.eq_ignore_ascii_case(method) || (m == "GET" && method == "HEAD"))
    }

    /// The decision for an authenticated subject, at `now` (unix seconds).
    pub fn decide(&self, subject: &Subject<'_>, now: u64) -> RouteDecision {
        let who = subject.identity;
        let user = || who.display().to_string();
        if holds_any(&self.deny, subject) {
            return RouteDecision::Deny(DenyReason::RouteDenied {
                user: user(),
                route: self.label(),
            });
        }
        if !holds_any(&self.allow, subject) {
            return RouteDecision::Deny(DenyReason::RouteNotAllowed {
                user: user(),
                route: self.label(),
            });
        }
        let too_old = self.max_auth_age.is_some_and(|max| {
            who.auth_time
                .is_none_or(|t| now.saturating_sub(t) > max.as_secs())
        });
        let weak = !self.acr_values.is_empty()
            && !who
                .acr()
                .as_ref()
                .is_some_and(|acr| self.acr_values.iter().any(|a| **a == **acr));
        if too_old || weak {
            return RouteDecision::StepUp {
                max_age: self.max_auth_age.map(|d| d.as_secs()),
                acr_values: self.acr_values.clone(),
            };
        }
        RouteDecision::Allow
    }
}

/// `/admin` takes `/admin` and `/admin/...`; `/api/` takes `/api/` and `/api/...`.
fn under_prefix(path: &str, prefix: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some("") => true,
        Some(rest) => prefix.ends_with('/') || rest.starts_with('/'),
        None => false,
    }
}

/// Whether any condition of `rules` holds for the subject.
fn holds_any(rules: &RuleSet, subject: &Subject<'_>) -> bool {
    let who = subject.identity;
    if rules.authenticated {
        return true;
    }
    // Lowercased copies only when a rule compares them (a rule set with none, such as
    // an empty deny list, costs no allocation per request).
    let by_name = !(rules.users.is_empty() && rules.emails.is_empty() && rules.domains.is_empty());
    if by_name && holds_by_name(rules, who) {
        return true;
    }
    if !rules.groups.is_empty()
        && who
            .groups
            .iter()
            .chain(subject.teams.iter())
            .any(|g| rules.groups.iter().any(|want| want.eq_ignore_ascii_case(g)))
    {
        return true;
    }
    rules.claims.iter().any(|(name, values)| {
        who.claims
            .get(name)
            .is_some_and(|have| values.iter().any(|v| have.holds(v)))
    })
}

/// Whether a user, email or domain rule holds (compared lowercased).
fn holds_by_name(rules: &RuleSet, who: &portcullis_core::Identity) -> bool {
    let lower = |v: Option<&str>| v.map(str::to_lowercase);
    let email = lower(who.email());
    let username = lower(who.username());
    if [&email, &username]
        .into_iter()
        .flatten()
        .any(|v| rules.users.contains(v))
    {
        return true;
    }
    email.is_some_and(|email| {
        rules.emails.contains(&email)
            || email
                .rsplit_once('@')
                .is_some_and(|(_, domain)| rules.domains.iter().any(|d| d == domain))
    })
}

/// The route table: routes in order; the first that matches decides.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    /// The table from configuration; `upstream_of` gives a route's upstream position.
    pub fn new(
        config: &[RouteConfig],
        upstream_of: impl Fn(&RouteConfig) -> Option<usize>,
    ) -> Self {
        RouteTable {
            routes: config
                .iter()
                .map(|c| Route {
                    index: c.index,
                    name: c.name.clone(),
                    host: c.host.clone(),
                    path: c.path.clone(),
                    path_prefix: c.path_prefix.clone(),
                    methods: c.methods.clone(),
                    public: c.public,
                    allow: c.allow.clone(),
                    deny: c.deny.clone(),
                    max_auth_age: c.max_auth_age,
                    acr_values: c.acr_values.clone(),
                    provider: c.provider.clone(),
                    audience: c.audience.clone(),
                    path_parameters: c.path_parameters,
                    upstream: upstream_of(c),
                })
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The route that decides a request, if any.
    pub fn find(&self, method: &str, host: Option<&str>, path: &str) -> Option<&Route> {
        let host = host.map(strip_port);
        self.routes.iter().find(|r| r.matches(method, host, path))
    }

    /// Whether any route accepts `;` path parameters.
    pub fn any_path_parameters(&self) -> bool {
        self.routes.iter().any(|r| r.path_parameters)
    }

    /// Routes no request can reach, each with the earlier route that takes all of its
    /// requests: (shadowed, by).
    pub fn shadowed(&self) -> Vec<(&Route, &Route)> {
        let mut out = Vec::new();
        for (i, later) in self.routes.iter().enumerate() {
            if let Some(earlier) = self.routes[..i].iter().find(|e| covers(e, later)) {
                out.push((later, earlier));
            }
        }
        out
    }

    /// Whether some route takes every request (a catch-all at the end).
    pub fn has_catch_all(&self) -> bool {
        self.routes.iter().any(|r| {
            r.host.is_none()
                && r.path.is_none()
                && r.path_prefix.as_deref().is_none_or(|p| p == "/")
                && r.methods.is_empty()
        })
    }
}

/// `app.example.com:8443` -> `app.example.com`; `[::1]:80` -> `[::1]`.
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host
            .split_once(']')
            .map_or(host, |(h, _)| &host[..h.len() + 1]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

/// Whether `earlier` takes every request `later` could take.
fn covers(earlier: &Route, later: &Route) -> bool {
    let host_ok = match (&earlier.host, &later.host) {
        (None, _) => true,
        (Some(a), Some(b)) => {
            a == b
                || a.strip_prefix("*.")
                    .is_some_and(|d| b.ends_with(&format!(".{d}")))
        }
        (Some(_), None) => false,
    };
    let path_ok = match (&earlier.path, &earlier.path_prefix) {
        (None, None) => true,
        (Some(e), _) => later.path.as_deref() == Some(e.as_str()),
        (None, Some(prefix)) => match (&later.path, &later.path_prefix) {
            (Some(p), _) => under_prefix(p, prefix),
            (None, Some(p)) => under_prefix(p, prefix),
            (None, None) => prefix == "/",
        },
    };
    let methods_ok = earlier.methods.is_empty()
        || (!later.methods.is_empty() && later.methods.iter().all(|m| earlier.methods.contains(m)));
    host_ok && path_ok && methods_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_core::{ClaimValue, Identity};
    use std::collections::BTreeMap;

    fn route(index: usize, f: impl FnOnce(&mut RouteConfig)) -> RouteConfig {
        let mut c = RouteConfig {
            index,
            name: None,
            host: None,
            path: None,
            path_prefix: None,
            methods: Vec::new(),
            public: false,
            allow: RuleSet {
                authenticated: true,
                ..RuleSet::default()
            },
            deny: RuleSet::default(),
            max_auth_age: None,
            acr_values: Vec::new(),
            provider: None,
            upstream_url: None,
            audience: None,
            path_parameters: false,
        };
        f(&mut c);
        c
    }

    fn table(routes: Vec<RouteConfig>) -> RouteTable {
        RouteTable::new(&routes, |_| None)
    }

    fn alice() -> Identity {
        Identity::from(portcullis_core::IdentityFields {
            id: "a".into(),
            email: Some("Alice@Example.com".into()),
            username: Some("alice".into()),
            groups: vec!["Admins".into()],
            provider: "oidc".into(),
            claims: BTreeMap::from([
                ("department".into(), ClaimValue::Text("eng".into())),
                ("contractor".into(), ClaimValue::Flag(false)),
            ]),
            auth_time: Some(1_000),
            ..portcullis_core::IdentityFields::default()
        })
    }

    #[test]
    fn prefixes_match_on_segment_boundaries_and_hosts_by_pattern() {
        let t = table(vec![
            route(0, |r| r.path_prefix = Some("/admin".into())),
            route(1, |r| {
                r.path_prefix = Some("/api/".into());
                r.host = Some("*.example.com".into());
            }),
            route(2, |r| r.path = Some("/status".into())),
        ]);
        let at = |m: &str, h: Option<&str>, p: &str| t.find(m, h, p).map(|r| r.index);
        assert_eq!(at("GET", None, "/admin"), Some(0));
        assert_eq!(at("GET", None, "/admin/users"), Some(0));
        assert_eq!(at("GET", None, "/administrator"), None);
        assert_eq!(at("GET", Some("app.example.com:8443"), "/api/x"), Some(1));
        assert_eq!(at("GET", Some("APP.Example.com"), "/api/"), Some(1));
        assert_eq!(at("GET", Some("example.com"), "/api/x"), None);
        assert_eq!(at("GET", Some("evilexample.com"), "/api/x"), None);
        assert_eq!(at("GET", None, "/api"), None);
        assert_eq!(at("GET", None, "/status"), Some(2));
        assert_eq!(at("GET", None, "/status/x"), None);
    }

    #[test]
    fn methods_are_exact_and_get_takes_head() {
        let t = table(vec![route(0, |r| {
            r.methods = vec!["GET".into(), "POST".into()]
        })]);
        assert!(t.find("HEAD", None, "/").is_some());
        assert!(t.find("post", None, "/").is_some());
        assert!(t.find("DELETE", None, "/").is_none());
    }

    #[test]
    fn deny_wins_and_any_allow_condition_admits() {
        let who = alice();
        let subject = Subject::new(&who);
        let groups = route(0, |r| {
            r.allow = RuleSet {
                groups: vec!["admins".into()],
                ..RuleSet::default()
            };
        });
        let t = table(vec![groups.clone()]);
        assert_eq!(t.routes()[0].decide(&subject, 1_000), RouteDecision::Allow);
        let denied = route(0, |r| {
            r.allow = groups.allow.clone();
            r.deny = RuleSet {
                emails: vec!["alice@example.com".into()],
                ..RuleSet::default()
            };
        });
        let t = table(vec![denied]);
        assert!(matches!(
            t.routes()[0].decide(&subject, 1_000),
            RouteDecision::Deny(DenyReason::RouteDenied { .. })
        ));
        for allow in [
            RuleSet {
                domains: vec!["example.com".into()],
                ..RuleSet::default()
            },
            RuleSet {
                users: vec!["alice".into()],
                ..RuleSet::default()
            },
            RuleSet {
                claims: vec![("department".into(), vec!["sre".into(), "eng".into()])],
                ..RuleSet::default()
            },
            RuleSet {
                claims: vec![("contractor".into(), vec!["false".into()])],
                ..RuleSet::default()
            },
        ] {
            let t = table(vec![route(0, |r| r.allow = allow.clone())]);
            assert_eq!(
                t.routes()[0].decide(&subject, 1_000),
                RouteDecision::Allow,
                "{allow:?}"
            );
        }
        for allow in [
            RuleSet {
                domains: vec!["example.org".into()],
                ..RuleSet::default()
            },
            RuleSet {
                claims: vec![("department".into(), vec!["sales".into()])],
                ..RuleSet::default()
            },
            RuleSet {
                claims: vec![("missing".into(), vec!["x".into()])],
                ..RuleSet::default()
            },
        ] {
            let t = table(vec![route(0, |r| r.allow = allow.clone())]);
            assert!(
                matches!(
                    t.routes()[0].decide(&subject, 1_000),
                    RouteDecision::Deny(_)
                ),
                "{allow:?}"
            );
        }
    }

    #[test]
    fn names_are_compared_without_case() {
        let mut who = alice();
        who.set_email(Some("Alice@Example.COM"));
        who.set_username(Some("ALICE"));
        let subject = Subject::new(&who);
        let rules = [
            RuleSet {
                emails: vec!["alice@example.com".into()],
                ..RuleSet::default()
            },
            RuleSet {
                domains: vec!["example.com".into()],
                ..RuleSet::default()
            },
            RuleSet {
                users: vec!["alice".into()],
                ..RuleSet::default()
            },
        ];
        for deny in rules {
            let t = table(vec![route(0, |r| r.deny = deny.clone())]);
            assert!(
                matches!(
                    t.routes()[0].decide(&subject, 1_000),
                    RouteDecision::Deny(_)
                ),
                "{deny:?}"
            );
        }
    }

    #[test]
    fn an_old_or_weak_login_must_step_up() {
        let mut who = alice();
        let t = table(vec![route(0, |r| {
            r.max_auth_age = Some(Duration::from_secs(900))
        })]);
        let r = &t.routes()[0];
        assert_eq!(
            r.decide(&Subject::new(&who), 1_000 + 900),
            RouteDecision::Allow
        );
        assert_eq!(
            r.decide(&Subject::new(&who), 1_000 + 901),
            RouteDecision::StepUp {
                max_age: Some(900),
                acr_values: vec![]
            }
        );
        let t = table(vec![route(0, |r| r.acr_values = vec!["urn:mfa".into()])]);
        let r = &t.routes()[0];
        assert!(matches!(
            r.decide(&Subject::new(&who), 1_000),
            RouteDecision::StepUp { .. }
        ));
        who.set_acr(Some("urn:mfa"));
        assert_eq!(r.decide(&Subject::new(&who), 1_000), RouteDecision::Allow);
    }

    #[test]
    fn shadowed_routes_and_catch_alls_are_found() {
        let t = table(vec![
            route(0, |r| r.path_prefix = Some("/api".into())),
            route(1, |r| r.path_prefix = Some("/api/admin".into())),
            route(2, |r| r.path = Some("/status".into())),
        ]);
        let shadowed: Vec<(usize, usize)> = t
            .shadowed()
            .iter()
            .map(|(a, b)| (a.index, b.index))
            .collect();
        assert_eq!(shadowed, vec![(1, 0)]);
        assert!(!t.has_catch_all());
        let t = table(vec![
            route(0, |_| {}),
            route(1, |r| r.path = Some("/x".into())),
        ]);
        assert!(t.has_catch_all());
        assert_eq!(t.shadowed().len(), 1);
    }
}
