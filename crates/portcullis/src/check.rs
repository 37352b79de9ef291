//! `portcullis check`: everything that can be known about a configuration before serving
//! traffic. Validates every key, then probes each identity provider (discovery document,
//! signing keys, clock skew). Prints each finding with the key and the fix; exits 1 if
//! anything is wrong.

use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use portcullis_config::Config;
use portcullis_identity::{JwksCache, ProviderMetadata, discovery_document_url};

use crate::cli::CheckArgs;
use crate::serve::{env_vars, load_config, outbound_client};

/// Larger clock differences make ID tokens look expired or not yet valid.
const MAX_SKEW: Duration = Duration::from_secs(60);

struct Report {
    failures: usize,
    /// Collects the failures instead of printing (for a reload's log).
    quiet: bool,
    /// Prints nothing as it goes: the findings are printed as one JSON document at the end.
    json: bool,
    problems: Vec<String>,
    findings: Vec<serde_json::Value>,
}

impl Report {
    fn new(quiet: bool) -> Self {
        Report {
            failures: 0,
            quiet,
            json: false,
            problems: Vec::new(),
            findings: Vec::new(),
        }
    }
    fn say(&self, line: std::fmt::Arguments<'_>) {
        if !self.quiet && !self.json {
            println!("{line}");
        }
    }
    fn ok(&mut self, what: &str) {
        self.say(format_args!("ok    {what}"));
        self.findings
            .push(serde_json::json!({"level": "ok", "message": what}));
    }
    fn warn(&mut self, what: &str) {
        self.say(format_args!("warn  {what}"));
        self.findings
            .push(serde_json::json!({"level": "warn", "message": what}));
    }
    fn fail(&mut self, key: &str, problem: &str, fix: &str) {
        self.failures += 1;
        let line = format!("{key}: {problem}. Fix: {fix}");
        self.say(format_args!("FAIL  {line}"));
        self.findings.push(serde_json::json!({
            "level": "fail", "key": key, "message": problem, "fix": fix,
        }));
        self.problems.push(line);
    }
    /// The findings as one JSON document, for CI pipelines and deployment hooks.
    fn to_json(&self) -> String {
        serde_json::json!({
            "result": if self.failures == 0 { "ok" } else { "problems" },
            "problems": self.failures,
            "findings": self.findings,
        })
        .to_string()
    }
}

/// The problems `portcullis check --offline` would report, for a reload to refuse.
pub(crate) fn offline_problems(config: &Config) -> Vec<String> {
    let mut report = Report::new(true);
    static_checks(config, &mut report);
    report.problems
}

pub(crate) async fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let json = args.format == crate::cli::Format::Json;
    if let Some(url) = &args.live {
        return Ok(crate::live::run(crate::live::LiveArgs {
            url,
            cookie_file: args.cookie_file.as_deref(),
            ca_file: args.ca_file.as_deref(),
            json,
        })
        .await);
    }
    let config = if json {
        let sources = portcullis_config::Sources {
            file: args.config.clone(),
            env: env_vars(),
            ..portcullis_config::Sources::default()
        };
        match portcullis_config::load(&sources) {
            Ok(c) => c,
            Err(e) => {
                let findings: Vec<serde_json::Value> = match e {
                    portcullis_config::LoadError::Invalid(errors) => errors
                        .0
                        .iter()
                        .map(|e| {
                            serde_json::json!({
                                "level": "fail",
                                "key": format!("{} ({})", e.key, e.env),
                                "message": e.problem,
                                "fix": e.fix,
                            })
                        })
                        .collect(),
                    other => {
                        vec![serde_json::json!({"level": "fail", "message": other.to_string()})]
                    }
                };
                println!(
                    "{}",
                    serde_json::json!({
                        "result": "invalid_configuration",
                        "problems": findings.len(),
                        "findings": findings,
                    })
                );
                return Ok(ExitCode::FAILURE);
            }
        }
    } else {
        match load_config(args.config.clone(), env_vars(), Vec::new(), Vec::new()) {
            Ok(c) => c,
            Err(_) => return Ok(ExitCode::FAILURE),
        }
    };
    if let Some(user) = &args.as_user {
        return Ok(crate::explain::run(&config, &args, user));
    }
    let mut report = Report::new(false);
    report.json = json;
    report.ok("configuration keys and values");
    static_checks(&config, &mut report);
    match crate::telemetry::settings(|name| std::env::var(name).ok()) {
        Ok(Some(t)) => report.ok(&format!(
            "traces exported over OTLP ({}) to {}, sampler {:?}",
            if t.grpc { "grpc" } else { "http/protobuf" },
            t.endpoint,
            t.sampler
        )),
        Ok(None) => {}
        Err(e) => report.fail(
            "OTEL_* environment",
            &format!("{e:#}"),
            "see the README, Operations: Tracing",
        ),
    }
    if !args.offline {
        for provider in &config.auth.providers {
            probe_provider(&config, provider, &mut report).await;
        }
        probe_transmitters(&config, &mut report).await;
    }
    if json {
        println!("{}", report.to_json());
        return Ok(if report.failures == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    if report.failures == 0 {
        println!("\nportcullis check: no problems found");
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "\nportcullis check: {} problem{} found",
            report.failures,
            if report.failures == 1 { "" } else { "s" }
        );
        Ok(ExitCode::FAILURE)
    }
}

fn static_checks(config: &Config, report: &mut Report) {
    named_files(config, report);
    route_table(config, report);
    identity_assertion(config, report);
    if !config.auth.enabled {
        report.warn(
            "OPEN MODE: authentication is off (OAUTH_ENABLED is unset or false): every request reaches the app without a login",
        );
        return;
    }
    let names: Vec<&str> = config
        .auth
        .providers
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    report.ok(&format!(
        "authentication on, provider(s): {}",
        names.join(", ")
    ));
    scim_links(config, report);
    provider_logout_urls(config, report);
    let Some(redirect) = &config.auth.redirect_url else {
        return;
    };
    let path = redirect.path();
    if portcullis_proxy::endpoints::is_reserved(path) {
        report.fail(
            "oauth.redirect_url (OAUTH_REDIRECT_URL)",
            &format!("its path {path} is one of Portcullis's own endpoints"),
            "use /api/v1/auth/callback, or another path the app does not use",
        );
    }
    // Another host, or another port on the same scheme (a scheme alone differing is
    // judged below, by whether the cookies are Secure).
    if let Some(public) = &config.public_url
        && (public.host_str() != redirect.host_str()
            || (public.scheme() == redirect.scheme()
                && public.port_or_known_default() != redirect.port_or_known_default()))
    {
        report.fail(
            "oauth.redirect_url (OAUTH_REDIRECT_URL)",
            &format!(
                "the redirect URL's host ({}) differs from public_url ({}): the provider would send users to another site, and the session cookie would not be set where the app is",
                redirect.host_str().unwrap_or(""),
                public.host_str().unwrap_or("")
            ),
            "make OAUTH_REDIRECT_URL start with the public URL, and register exactly that URL at the provider",
        );
    }
    // The login's state cookie must come back on the callback: a Secure one is not sent
    // to a plain-http redirect URL, and every login would end in a state mismatch.
    if config.secure_cookies() && redirect.scheme() == "http" {
        report.fail(
            "oauth.redirect_url (OAUTH_REDIRECT_URL)",
            &format!(
                "cookies are Secure (the public URL is https) but the redirect URL {redirect} is plain http: the browser does not send the login's state cookie there, so every login ends in a state mismatch"
            ),
            "make OAUTH_REDIRECT_URL https, on the public URL",
        );
    }
    let behind_tls_proxy = config
        .public_url
        .as_ref()
        .is_some_and(|u| u.scheme() == "https")
        && config.tls.is_none();
    if behind_tls_proxy && config.trusted_proxies.is_empty() {
        report.warn(
            "public_url is https while Portcullis serves plain HTTP and trusts no proxy (trusted_proxies / TRUSTED_PROXIES is empty): the proxy terminating TLS in front is not believed about the client (X-Forwarded-For) or the original URL (X-Forwarded-Proto/-Host/-Uri); set TRUSTED_PROXIES to its addresses",
        );
    }
    let loopback = matches!(
        redirect.host_str(),
        Some("localhost" | "127.0.0.1" | "[::1]")
    );
    if redirect.scheme() == "http" && !loopback {
        report.warn(&format!(
            "oauth.redirect_url is plain http on {}: cookies will not be Secure and codes travel unencrypted; use https in production",
            redirect.host_str().unwrap_or("")
        ));
    } else {
        report.ok(&format!(
            "redirect URL {redirect} (register exactly this at the provider)"
        ));
    }
    let fragment_providers: Vec<&str> = config
        .auth
        .providers
        .iter()
        .filter(|p| {
            p.flow == portcullis_config::Flow::Implicit
                && p.response_mode == portcullis_config::ResponseMode::Fragment
        })
        .map(|p| p.name.as_str())
        .collect();
    if let (false, Some(page)) = (
        fragment_providers.is_empty(),
        &config.auth.implicit_redirect_url,
    ) {
        report.ok(&format!(
            "implicit flow with fragment ({}): register the redirect page {page} too",
            fragment_providers.join(", ")
        ));
    }
}

/// Every file the configuration names must be there and hold what it should: a missing
/// CA bundle must never mean "trust any CA", a missing certificate no TLS.
fn named_files(config: &Config, report: &mut Report) {
    if let Some(path) = &config.outbound_ca_file
        && let Err(e) = outbound_client(config)
    {
        report.fail(
            "outbound.ca_file (OUTBOUND__CA_FILE)",
            &format!("{}: {}", path.display(), chain(e.root_cause())),
            "point it at a readable PEM bundle of the CA certificates to trust",
        );
    }
    if let Some(tls) = &config.tls
        && let Err(e) = portcullis_proxy::Certificates::load(&tls.cert_file, &tls.key_file)
    {
        report.fail(
            "tls.cert_file / tls.key_file (TLS__CERT_FILE, TLS__KEY_FILE)",
            &e.to_string(),
            "point them at a readable PEM certificate chain and its private key",
        );
    }
}

/// Where the provider (and a transmitter) reach Portcullis to end sessions, and the
/// admin listener.
fn provider_logout_urls(config: &Config, report: &mut Report) {
    let origin = config
        .public_origin()
        .map(|u| u.origin().ascii_serialization());
    if let Some(origin) = &origin {
        report.ok(&format!(
            "back-channel logout: register backchannel_logout_uri {origin}{} at the provider (front-channel: frontchannel_logout_uri {origin}{})",
            portcullis_proxy::endpoints::BACKCHANNEL_LOGOUT.path,
            portcullis_proxy::endpoints::FRONTCHANNEL_LOGOUT.path
        ));
        for t in &config.ssf {
            if t.push_token.is_some() {
                report.ok(&format!(
                    "shared signals transmitter {}: push endpoint {origin}{}/{} (audience {})",
                    t.name,
                    portcullis_proxy::endpoints::SSF.path,
                    t.name,
                    t.audience
                ));
            }
        }
    }
    match &config.admin {
        Some(admin) => report.ok(&format!(
            "admin API, /metrics and health on {} (keep it off the public network)",
            admin.listen_addr
        )),
        None => report.warn(
            "no admin listener (admin.listen_addr): sessions can be ended only by logout, SCIM, the provider's back-channel logout and shared signals",
        ),
    }
    if let Some(ext) = &config.ext_authz {
        report.ok(&format!(
            "Envoy gRPC check (envoy.service.auth.v3.Authorization/Check) on {} over {} (reachable by the gateway only: it is trusted to describe the request)",
            ext.listen_addr,
            if ext.tls { "TLS" } else { "h2c" }
        ));
    }
}

/// Each shared signals transmitter's configuration document and keys.
async fn probe_transmitters(config: &Config, report: &mut Report) {
    let Ok(http) = outbound_client(config) else {
        return;
    };
    for t in &config.ssf {
        let transmitter = portcullis_identity::ssf::Transmitter::new(
            &t.name,
            t.metadata_url.as_str(),
            http.clone(),
        );
        match transmitter.issuer().await {
            Ok(issuer) => report.ok(&format!(
                "shared signals transmitter {}: issuer {issuer}, keys loaded",
                t.name
            )),
            Err(e) => report.fail(
                &format!("ssf.transmitters.{}.metadata_url", t.name),
                &e,
                "set it to the transmitter's /.well-known/ssf-configuration, reachable from here",
            ),
        }
    }
}

/// The route table as Portcullis will use it, and the mistakes that make it other than
/// its author meant: a route no request can reach, a public route that takes requests a
/// later protected route was written for.
/// What a route's `match` takes, in words: `host a.example.com path prefix /admin GET,POST`.
pub(crate) fn route_match(r: &portcullis_config::RouteConfig) -> String {
    let mut matched = Vec::new();
    if let Some(h) = &r.host {
        matched.push(format!("host {h}"));
    }
    if let Some(p) = &r.path {
        matched.push(format!("path {p}"));
    }
    if let Some(p) = &r.path_prefix {
        matched.push(format!("path prefix {p}"));
    }
    if !r.methods.is_empty() {
        matched.push(r.methods.join(","));
    }
    if matched.is_empty() {
        "everything".to_string()
    } else {
        matched.join(" ")
    }
}

fn route_table(config: &Config, report: &mut Report) {
    if config.routes.is_empty() {
        return;
    }
    let table = portcullis_policy::RouteTable::new(&config.routes, |_| None);
    println!("      routes, tried in order:");
    for r in &config.routes {
        let who = if r.public {
            "public".to_string()
        } else {
            let mut rules = Vec::new();
            let a = &r.allow;
            if a.authenticated {
                rules.push("any signed-in user".to_string());
            }
            for (what, list) in [
                ("users", &a.users),
                ("emails", &a.emails),
                ("domains", &a.domains),
                ("groups", &a.groups),
            ] {
                if !list.is_empty() {
                    rules.push(format!("{what} {}", list.join(",")));
                }
            }
            for (claim, values) in &a.claims {
                rules.push(format!("claim {claim}={}", values.join("|")));
            }
            let mut text = format!("allow {}", rules.join(" or "));
            if !r.deny.is_empty() {
                text.push_str(", with deny rules");
            }
            if let Some(age) = r.max_auth_age {
                text.push_str(&format!(", login at most {}s old", age.as_secs()));
            }
            if !r.acr_values.is_empty() {
                text.push_str(&format!(", acr {}", r.acr_values.join("|")));
            }
            text
        };
        println!("        {:<24} {:<40} {who}", r.label(), route_match(r));
    }
    for (shadowed, by) in table.shadowed() {
        let key = format!("routes.{}", shadowed.index);
        if by.public && !shadowed.public {
            report.fail(
                &key,
                &format!(
                    "route {} ({}) is protected, but the public route {} ({}) before it takes all of its requests, so they are served without a login",
                    shadowed.index, shadowed.label(), by.index, by.label()
                ),
                "move the protected route before the public one, or narrow the public route's match",
            );
        } else {
            report.fail(
                &key,
                &format!(
                    "route {} ({}) can never decide: route {} ({}) before it takes every request it would",
                    shadowed.index, shadowed.label(), by.index, by.label()
                ),
                "move it before the broader route, or remove it",
            );
        }
    }
    if table.has_catch_all() {
        report.ok(&format!(
            "{} routes; the last takes what the others do not",
            config.routes.len()
        ));
    } else {
        report.warn("no route takes every request: requests no route matches are refused (404); add `match: {path_prefix: /}` at the end if that is not what you want");
    }
}

/// The identity assertion's key, loaded as start-up will load it.
fn identity_assertion(config: &Config, report: &mut Report) {
    let Some(jwt) = &config.identity_jwt else {
        return;
    };
    match portcullis_proxy::check_key_file(&jwt.signing_key_file) {
        Ok(kid) => report.ok(&format!(
            "identity assertion signed with {} (kid {kid}), published at /.well-known/portcullis/jwks.json",
            jwt.signing_key_file.display()
        )),
        Err(e) => report.fail(
            "identity_jwt.signing_key_file (IDENTITY_JWT__SIGNING_KEY_FILE)",
            &e,
            "point it at an EC P-256 private key in PEM (openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256)",
        ),
    }
}

/// How SCIM endpoints are tied to login providers (the configuration refuses ties to
/// providers that do not exist), and whose users skip provisioning.
fn scim_links(config: &Config, report: &mut Report) {
    if !config.scim.enabled {
        return;
    }
    for e in &config.scim.endpoints {
        report.ok(&format!(
            "SCIM endpoint /v1/scim/v2/{} provisions the users of provider {} ({})",
            e.name,
            e.provider,
            if e.required {
                "required"
            } else {
                "not required: unprovisioned users are admitted"
            }
        ));
    }
    for p in &config.scim.exempt_providers {
        report.warn(&format!(
            "provider {p} is exempt from scim.required: its users are admitted without provisioning"
        ));
    }
}

async fn probe_provider(
    config: &portcullis_config::Config,
    provider: &portcullis_config::ProviderConfig,
    report: &mut Report,
) {
    use portcullis_config::ProviderKind;
    // What to reach: the discovery document (OpenID Connect), or GitHub's REST API.
    let (discovery_url, multi_tenant) = match &provider.kind {
        ProviderKind::Oidc { discovery_url } => (discovery_url, false),
        ProviderKind::Entra(entra) => (&entra.discovery_url, entra.multi_tenant()),
        ProviderKind::GitHub(github) => (&github.api_url, false),
    };
    let github = matches!(provider.kind, ProviderKind::GitHub(_));
    let key = provider.location_key.clone();
    let http = match outbound_client(config) {
        Ok(h) => h,
        Err(e) => {
            report.fail(
                "outbound HTTP client",
                &format!("{e:#}"),
                "check HTTPS_PROXY / GLOBAL_AGENT_HTTPS_PROXY and outbound.ca_file (OUTBOUND__CA_FILE)",
            );
            return;
        }
    };
    let doc_url = if github {
        discovery_url.to_string()
    } else {
        discovery_document_url(discovery_url)
    };
    // The Date header of the provider's own answer tells how far apart the clocks are.
    match http.get(&doc_url).send().await {
        Ok(resp) => {
            if let Some(date) = resp
                .headers()
                .get("date")
                .and_then(|d| d.to_str().ok())
                .and_then(|d| httpdate::parse_http_date(d).ok())
            {
                let now = SystemTime::now();
                let skew = now
                    .duration_since(date)
                    .or_else(|_| date.duration_since(now))
                    .unwrap_or_default();
                if skew > MAX_SKEW {
                    report.fail(
                        "system clock",
                        &format!("this machine's clock is {}s away from {}'s", skew.as_secs(), provider.name),
                        "synchronise the clock (NTP); ID tokens are refused when clocks differ by more than a minute",
                    );
                } else {
                    report.ok(&format!(
                        "clock within {}s of {}",
                        skew.as_secs(),
                        provider.name
                    ));
                }
            }
        }
        Err(e) => {
            report.fail(
                &key,
                &format!(
                    "{} {doc_url} is unreachable: {}",
                    if github { "the API" } else { "the discovery document" },
                    chain(&e)
                ),
                "check the URL, DNS, and the outbound proxy (HTTPS_PROXY / GLOBAL_AGENT_HTTPS_PROXY, NO_PROXY)",
            );
            return;
        }
    }
    if github {
        report.ok(&format!(
            "{}: GitHub API reachable at {doc_url}",
            provider.name
        ));
        probe_client(config, provider, &http, report).await;
        return;
    }
    let metadata =
        match ProviderMetadata::fetch(&http, &provider.name, discovery_url, multi_tenant).await {
            Ok(m) => m,
            Err(e) => {
                report.fail(
                    &key,
                    &e.to_string(),
                    "set it to exactly the provider's issuer or discovery URL",
                );
                return;
            }
        };
    report.ok(&format!(
        "{}: discovery document of issuer {}",
        provider.name, metadata.issuer
    ));
    match JwksCache::load(
        http.clone(),
        &provider.name,
        &metadata.jwks_uri,
        Duration::from_secs(10),
    )
    .await
    {
        Ok(_) => report.ok(&format!(
            "{}: signing keys at {}",
            provider.name, metadata.jwks_uri
        )),
        Err(e) => report.fail(
            &key,
            &e.to_string(),
            "the provider's jwks_uri must serve its public signing keys",
        ),
    }
    if metadata.token_endpoint.is_none() {
        report.fail(
            &key,
            "the provider publishes no token_endpoint",
            "the code flow needs one; check the provider",
        );
    }
    match (
        metadata.backchannel_logout_supported,
        metadata.backchannel_logout_session_supported,
    ) {
        (true, true) => report.ok(&format!(
            "{}: the provider supports back-channel logout with sid",
            provider.name
        )),
        (true, false) => report.ok(&format!(
            "{}: the provider supports back-channel logout (by user only: no sid)",
            provider.name
        )),
        (false, _) if metadata.frontchannel_logout_supported => report.ok(&format!(
            "{}: the provider supports front-channel logout only",
            provider.name
        )),
        (false, _) => report.warn(&format!(
            "{}: the provider's discovery document does not announce back-channel logout; sign-outs there reach Portcullis only if it sends logout tokens anyway",
            provider.name
        )),
    }
    if config.auth.bearer_tokens {
        match &metadata.introspection_endpoint {
            Some(url) => report.ok(&format!(
                "{}: opaque bearer tokens are introspected at {url}",
                provider.name
            )),
            None => report.warn(&format!(
                "{}: no introspection_endpoint: only JWT bearer tokens can be verified",
                provider.name
            )),
        }
    }
    if !metadata.code_challenge_methods_supported.is_empty()
        && !metadata
            .code_challenge_methods_supported
            .iter()
            .any(|m| m == "S256")
    {
        report.warn(&format!(
            "{}: the provider does not advertise PKCE S256; Portcullis sends it anyway",
            provider.name
        ));
    }
    probe_client(config, provider, &http, report).await;
}

/// Whether the provider accepts the client's credentials and knows its redirect URL
/// (see [`crate::probe`]); never sends anything that could use up a real code.
async fn probe_client(
    config: &Config,
    provider: &portcullis_config::ProviderConfig,
    http: &portcullis_identity::http::HttpClient,
    report: &mut Report,
) {
    use crate::probe::{Credentials, Culprit, Registration};
    use portcullis_config::ProviderKind;
    let Some(redirect) = config.auth.redirect_url.as_ref() else {
        return;
    };
    let name = &provider.name;
    let redirect_key = "oauth.redirect_url (OAUTH_REDIRECT_URL)";
    let client = portcullis_identity::Provider::new(provider.clone(), http.clone());
    let impossible = format!("portcullis-check-{}", portcullis_core::random::token());
    let verifier = portcullis_identity::pkce::verifier();
    // Code flow only: the implicit flow has no token endpoint call to probe.
    if provider.flow == portcullis_config::Flow::Code {
        let answer = client
            .finish_login(&impossible, &verifier, redirect.as_str(), "")
            .await;
        let verdict = match answer {
            Err((
                _,
                portcullis_identity::IdentityError::TokenExchange {
                    error, description, ..
                },
            )) => crate::probe::credentials(&error, description.as_deref()),
            Err((_, e)) => Credentials::Unclear(e.to_string()),
            Ok(_) => Credentials::Unclear("the provider accepted a code it never issued".into()),
        };
        match verdict {
            Credentials::Accepted => report.ok(&format!(
                "{name}: the token endpoint accepts the client id and secret (it refused only the made-up code)"
            )),
            Credentials::Refused { culprit, why } => {
                let (key, fix) = match culprit {
                    Culprit::ClientSecret => (
                        provider.client_secret_key.clone(),
                        "copy the client secret again from the provider (a new one if it expired); never the secret's id".to_string(),
                    ),
                    Culprit::ClientId => (
                        provider.client_id_key.clone(),
                        "copy the application (client) id from the provider, from the tenant the issuer URL names".to_string(),
                    ),
                    Culprit::IdOrSecret => (
                        format!("{} / {}", provider.client_id_key, provider.client_secret_key),
                        "copy both from the provider's page for this application: the id, and a current secret".to_string(),
                    ),
                    Culprit::Grant => (
                        provider.client_id_key.clone(),
                        "allow the authorization code grant for this application at the provider (a web application, not a SPA or a service)".to_string(),
                    ),
                };
                report.fail(&key, &format!("{name}: {why}"), &fix);
            }
            Credentials::Unclear(what) => report.warn(&format!(
                "{name}: cannot tell whether the client id and secret are right: the token endpoint answered {what}"
            )),
        }
    }
    // The authorization request a login sends, not followed.
    let request = match client.authorization_request(redirect.as_str(), None).await {
        Ok(r) => r,
        Err(e) => {
            report.warn(&format!(
                "{name}: cannot build the authorization request: {e}"
            ));
            return;
        }
    };
    let answer = match http
        .get(&request.url)
        .header("accept", "text/html")
        .send()
        .await
    {
        Ok(a) => a,
        Err(e) => {
            report.fail(
                &provider.location_key,
                &format!(
                    "{name}: the authorization endpoint is unreachable: {}",
                    chain(&e)
                ),
                "check the URL and the outbound proxy",
            );
            return;
        }
    };
    let status = answer.status().as_u16();
    let location = answer
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .map(str::to_string);
    let body = answer.text().await.unwrap_or_default();
    let github = matches!(provider.kind, ProviderKind::GitHub(_));
    let entra = matches!(provider.kind, ProviderKind::Entra(_));
    match crate::probe::registration(status, location.as_deref(), &body, redirect.as_str(), github, entra) {
        Registration::Registered => report.ok(&format!(
            "{name}: the provider accepts the redirect URL {redirect}"
        )),
        Registration::NotRegistered(what) => report.fail(
            redirect_key,
            &format!("{name} has not registered the redirect URL {redirect}: {what}"),
            &format!("register exactly {redirect} as a redirect (callback) URL of client {} at the provider, or set OAUTH_REDIRECT_URL to the one registered", provider.client_id),
        ),
        Registration::Refused(what) => report.fail(
            &provider.client_id_key,
            &format!("{name} refused the login's authorization request: {what}"),
            "check the client id (and the scopes) against the provider's page for this application",
        ),
        Registration::CannotTell(why) => report.warn(&format!(
            "{name}: cannot tell whether {redirect} is registered ({why}); make sure it is, exactly"
        )),
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
