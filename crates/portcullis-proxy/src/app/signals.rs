//! Shared Signals (SSF 1.0, CAEP 1.0, RISC 1.0): security events from a transmitter end
//! sessions at once.
//!
//! Events arrive by push (RFC 8935: `POST /api/v1/auth/ssf/<name>` with the transmitter's
//! push token) or by poll (RFC 8936: a background task per transmitter). Either way a
//! Security Event Token is verified by `portcullis_identity::ssf`, its `jti` recorded
//! in the session store (acted on once across replicas), and each event applied:
//!
//! - CAEP `session-revoked` (for one provider session, or every session of the user) and
//!   `credential-change`: the sessions end, and bearer tokens issued before the event
//!   are refused;
//! - RISC `account-disabled` and `account-purged`: the same, and the account is marked
//!   disabled, so logins and bearer tokens are refused until `account-enabled`;
//! - CAEP `assurance-level-change`: the sessions forget when and how the user signed in,
//!   so a route with `max_auth_age` or `acr_values` steps up on the next request;
//! - SSF `verification`: logged with its `state`, as the stream's liveness check.
//!
//! Other event types are accepted and ignored.

use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use portcullis_config::{ExposeSecret, SsfTransmitterConfig};
use portcullis_identity::ssf::{SecurityEvent, SetError, Subject, Transmitter};
use portcullis_session::{Amend, Index, SessionStore, StoreError};
use serde_json::{Value, json};

use super::endpoints::SSF;
use super::{App, Auth, body_refused};
use crate::body::ProxyBody;
use crate::inbound::RequestBody;
use crate::metrics::{add, inc};
use crate::pages;

const CAEP: &str = "https://schemas.openid.net/secevent/caep/event-type/";
const RISC: &str = "https://schemas.openid.net/secevent/risc/event-type/";
const VERIFICATION: &str = "https://schemas.openid.net/secevent/ssf/event-type/verification";

/// How long an event's `jti` is remembered, and so how old an event may be.
const REPLAY_TTL: Duration = Duration::from_secs(7 * 86_400);

/// One configured transmitter.
pub(crate) struct Receiver {
    pub config: SsfTransmitterConfig,
    pub transmitter: Transmitter,
    /// The `aud` values accepted: the configured audience (with and without a trailing
    /// slash).
    audiences: Vec<String>,
}

impl Receiver {
    pub(crate) fn new(
        config: SsfTransmitterConfig,
        http: portcullis_identity::http::HttpClient,
    ) -> Self {
        let trimmed = config.audience.trim_end_matches('/').to_string();
        let audiences = vec![trimmed.clone(), format!("{trimmed}/")];
        Receiver {
            transmitter: Transmitter::new(&config.name, config.metadata_url.as_str(), http),
            config,
            audiences,
        }
    }
}

/// What became of a SET.
pub(super) enum Received {
    /// Applied (each event logged with how many sessions it ended or changed).
    Applied,
    /// Refused, with RFC 8935's error.
    Refused(SetError),
    /// The session store could not be reached: nothing more was applied; try again
    /// later.
    Unavailable,
}

fn set_error(err: &'static str, description: &str) -> Response<ProxyBody> {
    let mut resp = pages::json(
        StatusCode::BAD_REQUEST,
        &json!({"err": err, "description": description}),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

impl App {
    /// Push delivery: `POST /api/v1/auth/ssf/<name>`.
    pub(super) async fn ssf_push(&self, req: Request<RequestBody>) -> Response<ProxyBody> {
        let not_found = || {
            pages::json_error(
                StatusCode::NOT_FOUND,
                "not_found",
                "no shared signals transmitter pushes here",
            )
        };
        let Some(auth) = &self.auth else {
            return not_found();
        };
        let name = req
            .uri()
            .path()
            .strip_prefix(SSF.path)
            .and_then(|rest| rest.strip_prefix('/'))
            .unwrap_or("");
        let Some(receiver) = auth.signals.iter().find(|r| r.config.name == name) else {
            return not_found();
        };
        let Some(push_token) = &receiver.config.push_token else {
            return not_found();
        };
        // The transmitter proves itself before anything is read.
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim());
        let authorized = presented.is_some_and(|t| {
            portcullis_core::constant_time_eq(t.as_bytes(), push_token.expose_secret().as_bytes())
        });
        if !authorized {
            inc(&self.metrics.events_refused);
            tracing::warn!(transmitter = %name, "shared signals push refused: missing or wrong push token");
            let mut resp = pages::json_error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the push token is missing or wrong",
            );
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return resp;
        }
        let media = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|v| v.trim().to_ascii_lowercase());
        if media.as_deref() != Some("application/secevent+jwt") {
            inc(&self.metrics.events_refused);
            return set_error(
                "invalid_request",
                "the body must be a SET (Content-Type: application/secevent+jwt)",
            );
        }
        let (parts, body) = req.into_parts();
        let body = match self.bodies.read(&parts.headers, body).await {
            Ok(body) => body,
            Err(e) => return body_refused(e, false),
        };
        let Ok(token) = std::str::from_utf8(&body.bytes) else {
            inc(&self.metrics.events_refused);
            return set_error("invalid_request", "the body is not text");
        };
        match self.receive(auth, receiver, token.trim()).await {
            Received::Applied => {
                let mut resp = Response::new(ProxyBody::empty());
                *resp.status_mut() = StatusCode::ACCEPTED;
                resp
            }
            Received::Refused(e) => set_error(e.err, &e.description),
            Received::Unavailable => pages::json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "the session store is unavailable; send the event again",
            ),
        }
    }

    /// Verifies one SET and applies its events.
    pub(super) async fn receive(&self, auth: &Auth, receiver: &Receiver, token: &str) -> Received {
        let name = &receiver.config.name;
        let set = match receiver
            .transmitter
            .verify(token, &receiver.audiences)
            .await
        {
            Ok(set) => set,
            Err(e) => {
                inc(&self.metrics.events_refused);
                tracing::warn!(transmitter = %name, error = %e, "security event refused");
                return Received::Refused(e);
            }
        };
        let now = portcullis_core::time::unix_now();
        if set.iat + REPLAY_TTL.as_secs() < now {
            inc(&self.metrics.events_refused);
            return Received::Refused(SetError {
                err: "invalid_request",
                description: "the event is older than Portcullis remembers events".into(),
            });
        }
        match auth
            .sessions
            .remember_once(&format!("ssf:{name}"), &set.jti, REPLAY_TTL)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                inc(&self.metrics.events_refused);
                tracing::warn!(transmitter = %name, "security event refused: its jti was seen before (a replay)");
                return Received::Refused(SetError {
                    err: "invalid_request",
                    description: "this event (jti) was already received".into(),
                });
            }
            Err(e) => return self.signal_store_failed(e),
        }
        for event in &set.events {
            if let Err(e) = self.apply(auth, receiver, event, set.iat).await {
                return self.signal_store_failed(e);
            }
        }
        inc(&self.metrics.events_accepted);
        Received::Applied
    }

    fn signal_store_failed(&self, e: StoreError) -> Received {
        inc(&self.metrics.store_errors);
        tracing::error!(error = %e, "a security event could not be applied: the session store is unavailable");
        Received::Unavailable
    }

    /// Applies one event; how many sessions it ended or changed.
    async fn apply(
        &self,
        auth: &Auth,
        receiver: &Receiver,
        event: &SecurityEvent,
        iat: u64,
    ) -> Result<usize, StoreError> {
        let name = &receiver.config.name;
        let kind = event.kind.as_str();
        if kind == VERIFICATION {
            let state = event
                .payload
                .get("state")
                .and_then(Value::as_str)
                .unwrap_or("");
            tracing::info!(transmitter = %name, state, "shared signals stream verification event received");
            return Ok(0);
        }
        let short = kind
            .strip_prefix(CAEP)
            .or_else(|| kind.strip_prefix(RISC))
            .unwrap_or(kind);
        let known = matches!(
            short,
            "session-revoked"
                | "credential-change"
                | "account-disabled"
                | "account-purged"
                | "account-enabled"
                | "assurance-level-change"
        ) && short != kind;
        if !known {
            tracing::debug!(transmitter = %name, event = %kind, "security event of a type Portcullis does not act on");
            return Ok(0);
        }
        let Some(subject) = &event.subject else {
            tracing::warn!(transmitter = %name, event = short, "security event names no subject Portcullis can read (email, iss_sub, opaque, aliases, or a complex subject's user or session): ignored");
            return Ok(0);
        };
        let keys = self.subject_keys(auth, receiver, subject, short).await;
        if keys.is_empty() {
            tracing::warn!(transmitter = %name, event = short, "security event's subject belongs to no configured provider: ignored");
            return Ok(0);
        }
        // A single provider session needs no mark: only that session ends.
        let whole_user = !matches!(subject, Subject::Session { .. }) || short != "session-revoked";
        let mut changed = 0;
        for key in &keys {
            match short {
                "account-enabled" => auth.sessions.set_disabled(key, false).await?,
                "assurance-level-change" => {
                    changed += auth
                        .sessions
                        .amend_indexed(key, Amend::ForgetAssurance)
                        .await?;
                }
                _ => {
                    if matches!(short, "account-disabled" | "account-purged") {
                        auth.sessions.set_disabled(key, true).await?;
                    }
                    if whole_user {
                        auth.sessions.set_revoked_at(key, iat).await?;
                    }
                    changed += auth.sessions.revoke_indexed(key).await?;
                }
            }
        }
        if !matches!(short, "account-enabled" | "assurance-level-change") {
            add(&self.metrics.ended_signal, changed);
        }
        tracing::info!(
            transmitter = %name,
            event = short,
            subject = %describe(subject),
            sessions = changed,
            "security event applied"
        );
        Ok(changed)
    }

    /// The index keys a subject names, at the transmitter's provider.
    async fn subject_keys(
        &self,
        auth: &Auth,
        receiver: &Receiver,
        subject: &Subject,
        event: &str,
    ) -> Vec<String> {
        let provider = receiver.config.provider.as_str();
        match subject {
            Subject::Email(email) => vec![Index::Email(email).key()],
            Subject::Opaque(id) => vec![Index::Account { provider, id }.key()],
            Subject::IssSub { iss, sub } => {
                // The provider with that issuer; else the transmitter's provider when the
                // transmitter itself is the issuer.
                super::authn::discover_all(auth).await;
                let by_issuer = auth
                    .providers
                    .iter()
                    .filter_map(|p| p.as_oidc())
                    .find(|p| p.issued(iss))
                    .map(|p| p.name().to_string());
                let own = match &by_issuer {
                    Some(_) => None,
                    None => receiver
                        .transmitter
                        .issuer()
                        .await
                        .ok()
                        .filter(|t| t == iss)
                        .map(|_| provider.to_string()),
                };
                by_issuer
                    .or(own)
                    .map(|p| {
                        vec![
                            Index::Account {
                                provider: &p,
                                id: sub,
                            }
                            .key(),
                        ]
                    })
                    .unwrap_or_default()
            }
            Subject::Session { sid, user } => match (event, user) {
                ("session-revoked", _) | (_, None) => {
                    vec![Index::ProviderSession { provider, sid }.key()]
                }
                (_, Some(user)) => Box::pin(self.subject_keys(auth, receiver, user, event)).await,
            },
            Subject::Aliases(names) => {
                let mut keys = Vec::new();
                for name in names {
                    for key in Box::pin(self.subject_keys(auth, receiver, name, event)).await {
                        if !keys.contains(&key) {
                            keys.push(key);
                        }
                    }
                }
                keys
            }
        }
    }

    /// Polls every poll-mode transmitter in the background, for as long as the app lives.
    pub fn start_polling(app: &Arc<App>) {
        let Some(auth) = &app.auth else { return };
        for (index, receiver) in auth.signals.iter().enumerate() {
            if receiver.config.poll.is_some() {
                let app = Arc::downgrade(app);
                tokio::spawn(async move { poll_loop(app, index).await });
            }
        }
    }
}

/// A subject for the log: the kind of name and the name (never a session id).
fn describe(subject: &Subject) -> String {
    match subject {
        Subject::Email(e) => format!("email {e}"),
        Subject::Opaque(id) => format!("opaque {id}"),
        Subject::IssSub { sub, .. } => format!("sub {sub}"),
        Subject::Session { user, .. } => match user {
            Some(u) => format!("a session of {}", describe(u)),
            None => "a provider session".into(),
        },
        Subject::Aliases(names) => names.iter().map(describe).collect::<Vec<_>>().join(", "),
    }
}

/// RFC 8936: poll, apply, acknowledge in the next poll; refusals are reported back as
/// `setErrs`. A SET that could not be applied (the store down) is neither acknowledged
/// nor refused, so the transmitter delivers it again.
async fn poll_loop(app: std::sync::Weak<App>, index: usize) {
    let mut acks: Vec<String> = Vec::new();
    let mut errors: Vec<(String, SetError)> = Vec::new();
    let mut failing = false;
    loop {
        // The app is held only while polling, never while sleeping.
        let Some(pause) = poll_once(&app, index, &mut acks, &mut errors, &mut failing).await else {
            return;
        };
        if let Some(pause) = pause {
            tokio::time::sleep(pause).await;
        }
    }
}

/// One poll and what it brought. `None`: the app or the transmitter is gone; else the
/// pause before the next poll (`None`: at once, to acknowledge or fetch more).
async fn poll_once(
    app: &std::sync::Weak<App>,
    index: usize,
    acks: &mut Vec<String>,
    errors: &mut Vec<(String, SetError)>,
    failing: &mut bool,
) -> Option<Option<Duration>> {
    let app = app.upgrade()?;
    let auth = app.auth.as_ref()?;
    let receiver = auth.signals.get(index)?;
    let poll = receiver.config.poll.as_ref()?;
    let token = poll.token.as_ref().map(|t| t.expose_secret().to_string());
    let answer = match receiver
        .transmitter
        .poll(poll.url.as_str(), token.as_deref(), acks, errors)
        .await
    {
        Ok(answer) => {
            if *failing {
                tracing::info!(transmitter = %receiver.config.name, "polling the transmitter works again");
                *failing = false;
            }
            acks.clear();
            errors.clear();
            answer
        }
        Err(e) => {
            if !*failing {
                tracing::warn!(transmitter = %receiver.config.name, error = %e, "polling the transmitter failed; retrying");
                *failing = true;
            }
            return Some(Some(poll.interval));
        }
    };
    for (jti, set) in &answer.sets {
        match app.receive(auth, receiver, set).await {
            Received::Applied => acks.push(jti.clone()),
            Received::Refused(e) => errors.push((jti.clone(), e)),
            Received::Unavailable => {}
        }
    }
    let idle = !answer.more_available && acks.is_empty() && errors.is_empty();
    Some(idle.then_some(poll.interval))
}
