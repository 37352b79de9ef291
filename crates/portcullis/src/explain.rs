//! `portcullis check --as USER [--groups ..] [--claim k=v] [--provider P] [--acr A]
//! [METHOD] URL`: the decision the configuration would take for that identity and
//! request, step by step, without a login: the tool for "why do I get 403?".
//!
//! It decides with the same pieces the running proxy does (the global allow-lists as
//! [`Policy`], the route table, each route's rules and step-up), on an identity built
//! from the arguments, as if it had just signed in. What it cannot know is said: the
//! directory's teams and deactivation (SCIM), and a provider's own refusals.

use std::process::ExitCode;

use portcullis_config::Config;
use portcullis_core::ClaimValue;
use portcullis_core::Identity;
use portcullis_policy::{Policy, PolicyDecision, RouteDecision, RouteTable, Subject};

use crate::cli::{CheckArgs, Format};

/// What was decided, for the text and the JSON.
struct Explained {
    steps: Vec<String>,
    decision: &'static str,
    status: u16,
    reason: Option<String>,
    route: Option<String>,
}

fn identity(config: &Config, args: &CheckArgs, user: &str) -> Result<Identity, String> {
    let provider = match &args.provider {
        Some(p) => {
            if !config.auth.providers.iter().any(|c| &c.name == p) {
                return Err(format!(
                    "--provider {p}: no such provider; the configuration has {}",
                    names(config)
                ));
            }
            p.clone()
        }
        None => config
            .auth
            .providers
            .first()
            .map(|p| p.name.clone())
            .unwrap_or_default(),
    };
    let mut claims = std::collections::BTreeMap::new();
    for claim in &args.claims {
        let Some((k, v)) = claim.split_once('=') else {
            return Err(format!(
                "--claim {claim}: write name=value, such as department=eng"
            ));
        };
        let value = match v {
            "true" => ClaimValue::Flag(true),
            "false" => ClaimValue::Flag(false),
            v if v.contains(',') => {
                ClaimValue::List(v.split(',').map(|s| s.trim().to_string()).collect())
            }
            v => ClaimValue::Text(v.to_string()),
        };
        claims.insert(k.trim().to_string(), value);
    }
    let (email, username) = if user.contains('@') {
        (Some(user.into()), None)
    } else {
        (None, Some(user.into()))
    };
    Ok(Identity::from(portcullis_core::IdentityFields {
        id: user.into(),
        email,
        username,
        groups: args
            .groups
            .iter()
            .flat_map(|g| g.split(','))
            .map(str::trim)
            .filter(|g| !g.is_empty())
            .map(str::to_string)
            .collect(),
        provider: provider.into(),
        claims,
        auth_time: Some(portcullis_core::time::unix_now()),
        acr: args.acr.as_deref().map(Into::into),
        ..portcullis_core::IdentityFields::default()
    }))
}

fn names(config: &Config) -> String {
    let names: Vec<&str> = config
        .auth
        .providers
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

fn explain(config: &Config, who: &Identity, method: &str, url: &url::Url) -> Explained {
    let mut steps = Vec::new();
    let host = url.host_str().map(|h| match url.port() {
        Some(p) => format!("{h}:{p}"),
        None => h.to_string(),
    });
    // The URL parser has resolved dot segments, as the proxy's normalization does.
    let path = url.path();
    let done = |steps, decision, status, reason: Option<String>, route: Option<String>| Explained {
        steps,
        decision,
        status,
        reason,
        route,
    };
    let routes = RouteTable::new(&config.routes, |_| None);
    let route = if routes.is_empty() {
        steps.push("routes: none configured; the global allow-lists decide alone".to_string());
        None
    } else {
        match routes.find(method, host.as_deref(), path) {
            Some(r) => {
                steps.push(format!(
                    "route: {} takes {method} {path}",
                    describe(config, r)
                ));
                Some(r)
            }
            None => {
                steps.push(format!(
                    "route: none of the {} routes takes {method} {}{path}",
                    routes.routes().len(),
                    host.as_deref().unwrap_or("")
                ));
                return done(
                    steps,
                    "no_route",
                    404,
                    Some("no route takes this request".into()),
                    None,
                );
            }
        }
    };
    let label = route.map(|r| r.label());
    if route.is_some_and(|r| r.public) {
        steps.push("the route is public: no login is needed, no identity is sent".into());
        return done(steps, "public", 200, None, label);
    }
    if !config.auth.enabled {
        steps.push("authentication is off (open mode): everything is forwarded".into());
        return done(steps, "allowed", 200, None, label);
    }
    if let Some(wanted) = route.and_then(|r| r.provider.as_deref())
        && wanted != &*who.provider
    {
        steps.push(format!(
            "the route takes users of provider {wanted} only; {} signed in with {}",
            who.display(),
            who.provider
        ));
        return done(
            steps,
            "login",
            302,
            Some(format!("sign in with {wanted}")),
            label,
        );
    }
    let subject = Subject::new(who);
    let policy = Policy::new(&config.auth.allowed_users, &config.auth.allowed_groups);
    match policy.decide(&subject) {
        PolicyDecision::Allow => steps.push(
            if config.auth.allowed_users.is_empty() && config.auth.allowed_groups.is_empty() {
                "global allow-lists: none set, every signed-in user passes them".to_string()
            } else {
                format!(
                    "global allow-lists: {} passes (oauth.allowed_users / auth.allowed_groups)",
                    who.display()
                )
            },
        ),
        PolicyDecision::Deny(reason) => {
            steps.push(format!("global allow-lists: refused: {reason}"));
            return done(steps, "refused", 403, Some(reason.to_string()), label);
        }
    }
    if let Some(route) = route {
        match route.decide(&subject, portcullis_core::time::unix_now()) {
            RouteDecision::Allow => {
                steps.push(format!(
                    "route {}: its rules admit {}",
                    route.label(),
                    who.display()
                ));
            }
            RouteDecision::Deny(reason) => {
                steps.push(format!("route {}: refused: {reason}", route.label()));
                return done(steps, "refused", 403, Some(reason.to_string()), label);
            }
            RouteDecision::StepUp {
                max_age,
                acr_values,
            } => {
                let mut why = Vec::new();
                if let Some(age) = max_age {
                    why.push(format!("a login no older than {age}s"));
                }
                if !acr_values.is_empty() {
                    why.push(format!("acr {}", acr_values.join(" or ")));
                }
                steps.push(format!(
                    "route {}: admitted by its rules, but it wants {} (pass --acr to try one)",
                    route.label(),
                    why.join(" and ")
                ));
                return done(
                    steps,
                    "step_up",
                    302,
                    Some(format!("sign in again: {}", why.join(" and "))),
                    label,
                );
            }
        }
    }
    done(steps, "allowed", 200, None, label)
}

fn describe(config: &Config, route: &portcullis_policy::Route) -> String {
    let number = format!("#{}", route.index + 1);
    let name = match &route.name {
        Some(n) => format!("{n} ({number})"),
        None => number,
    };
    match config.routes.iter().find(|c| c.index == route.index) {
        Some(r) => format!("{name}: {}", crate::check::route_match(r)),
        None => name,
    }
}

/// Runs `check --as`: prints the decision; exit 0 when the request would reach the app
/// (or needs no login), 1 when it would be refused or sent to log in, 2 for bad arguments.
pub(crate) fn run(config: &Config, args: &CheckArgs, user: &str) -> ExitCode {
    let (method, url) = match args.request.as_slice() {
        [url] => ("GET".to_string(), url.clone()),
        [method, url] => (method.to_ascii_uppercase(), url.clone()),
        _ => {
            eprintln!(
                "portcullis check --as: name the request: [METHOD] URL, such as GET https://app.example.com/admin"
            );
            return ExitCode::from(2);
        }
    };
    let url = match url::Url::parse(&url).or_else(|_| {
        let base = config
            .public_origin()
            .unwrap_or_else(|| url::Url::parse("http://localhost/").expect("a URL"));
        base.join(&url)
    }) {
        Ok(u) => u,
        Err(e) => {
            eprintln!("portcullis check --as: {url} is not a URL or a path: {e}");
            return ExitCode::from(2);
        }
    };
    let who = match identity(config, args, user) {
        Ok(who) => who,
        Err(e) => {
            eprintln!("portcullis check --as: {e}");
            return ExitCode::from(2);
        }
    };
    let explained = explain(config, &who, &method, &url);
    let notes = [
        "the identity is taken as given, just signed in; the provider's own refusals are not known here",
        "teams and deactivation from SCIM are not looked up: a deprovisioned user is refused whatever this says",
    ];
    if args.format == Format::Json {
        println!(
            "{}",
            serde_json::json!({
                "as": who.display(),
                "provider": who.provider,
                "groups": who.groups,
                "request": {"method": method, "url": url.as_str()},
                "decision": explained.decision,
                "status": explained.status,
                "route": explained.route,
                "reason": explained.reason,
                "steps": explained.steps,
                "notes": notes,
            })
        );
    } else {
        println!(
            "as {} (provider {}, groups {}): {method} {url}",
            who.display(),
            if who.provider.is_empty() {
                "none"
            } else {
                &who.provider
            },
            if who.groups.is_empty() {
                "none".to_string()
            } else {
                who.groups.join(",")
            }
        );
        for step in &explained.steps {
            println!("  {step}");
        }
        let verdict = match explained.decision {
            "allowed" => "ALLOWED: forwarded to the app with the identity headers".to_string(),
            "public" => "PUBLIC: forwarded without a login".to_string(),
            "refused" => format!(
                "REFUSED (403): {}",
                explained.reason.as_deref().unwrap_or("")
            ),
            "no_route" => "REFUSED (404): no route takes it".to_string(),
            _ => format!(
                "LOGIN ({}): {}",
                explained.status,
                explained.reason.as_deref().unwrap_or("")
            ),
        };
        println!("decision: {verdict}");
        for note in notes {
            println!("  note: {note}");
        }
    }
    if matches!(explained.decision, "allowed" | "public") {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
