//! OpenID Shared Signals: receiving Security Event Tokens from a transmitter.
//!
//! - The transmitter's configuration document (SSF 1.0 §7.1) gives its `issuer` and
//!   `jwks_uri`; it is fetched on first use and again after a failure, never per event.
//! - A SET (RFC 8417) is verified like any signed token (an asymmetric algorithm, a key
//!   the transmitter publishes, `iss` exactly, `aud` ours, `iat` present and not in the
//!   future) plus its own rules: `typ` `secevent+jwt`, a `jti`, an `events` object, no
//!   `exp`-less replay (the caller keeps the replay cache). Failures carry the error
//!   codes of RFC 8935 §2.4 (`invalid_request`, `invalid_key`, `invalid_issuer`,
//!   `invalid_audience`).
//! - Subjects (RFC 9493 and SSF §3): `email`, `iss_sub`, `opaque`, `aliases`, and the
//!   complex subject with `user` and `session` members, read to a bounded depth.
//! - Poll delivery (RFC 8936): [`Transmitter::poll`] acknowledges what was processed and
//!   reports what was refused.

use std::time::Duration;

use arc_swap::ArcSwapOption;
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::sync::Arc;

use crate::discovery::error_chain;
use crate::jwks::JwksCache;

/// Algorithms a SET may be signed with.
const ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// Clock skew tolerated on `iat` and `exp`.
const LEEWAY_SECS: u64 = 60;

/// How deep a subject is read (a complex subject's members, an alias list's entries).
const MAX_SUBJECT_DEPTH: usize = 2;
/// How many identifiers an `aliases` subject may list.
const MAX_ALIASES: usize = 16;

/// Why a SET was refused, as RFC 8935 §2.4 names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetError {
    /// `invalid_request`, `invalid_key`, `invalid_issuer` or `invalid_audience`.
    pub err: &'static str,
    pub description: String,
}

impl SetError {
    fn request(description: impl Into<String>) -> Self {
        SetError {
            err: "invalid_request",
            description: description.into(),
        }
    }

    fn key(description: impl Into<String>) -> Self {
        SetError {
            err: "invalid_key",
            description: description.into(),
        }
    }
}

impl std::fmt::Display for SetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.err, self.description)
    }
}

/// Who an event is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    Email(String),
    /// A user at an issuer.
    IssSub {
        iss: String,
        sub: String,
    },
    /// An identifier agreed with the transmitter (the provider's subject).
    Opaque(String),
    /// One session of a user (a complex subject's `session` member): the provider's
    /// session id, with the user when given.
    Session {
        sid: String,
        user: Option<Box<Subject>>,
    },
    /// Several names of one user.
    Aliases(Vec<Subject>),
}

/// One verified event.
#[derive(Debug, Clone)]
pub struct SecurityEvent {
    /// The event type URI.
    pub kind: String,
    /// The event's own members (`reason_admin`, `state`, `current_level`, ...).
    pub payload: Map<String, Value>,
    /// The subject, from the SET's `sub_id` or the event's `subject`; `None` when the
    /// event names none that Portcullis reads.
    pub subject: Option<Subject>,
}

/// A verified SET.
#[derive(Debug, Clone)]
pub struct SecurityEventToken {
    pub jti: String,
    pub iat: u64,
    pub events: Vec<SecurityEvent>,
}

/// The parts of a transmitter's configuration document Portcullis uses.
#[derive(Debug, Clone, Deserialize)]
struct TransmitterMetadata {
    issuer: String,
    jwks_uri: String,
}

struct Loaded {
    issuer: String,
    jwks: JwksCache,
}

/// One transmitter: where its configuration is, and what was loaded from there.
pub struct Transmitter {
    name: String,
    metadata_url: String,
    http: reqwest::Client,
    loaded: ArcSwapOption<Loaded>,
    load_lock: tokio::sync::Mutex<Option<std::time::Instant>>,
}

/// How soon a failed metadata fetch may be retried on demand.
const RELOAD_PAUSE: Duration = Duration::from_secs(2);

#[derive(Deserialize)]
struct SetClaims {
    iss: String,
    #[serde(default)]
    jti: Option<String>,
    #[serde(default)]
    iat: Option<u64>,
    #[serde(default)]
    events: Option<Map<String, Value>>,
    #[serde(default)]
    sub_id: Option<Value>,
}

/// What a poll brought.
#[derive(Debug, Default)]
pub struct PollAnswer {
    /// `jti` -> the SET.
    pub sets: Vec<(String, String)>,
    pub more_available: bool,
}

impl Transmitter {
    pub fn new(name: &str, metadata_url: &str, http: reqwest::Client) -> Self {
        Transmitter {
            name: name.to_string(),
            metadata_url: metadata_url.to_string(),
            http,
            loaded: ArcSwapOption::empty(),
            load_lock: tokio::sync::Mutex::new(None),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The transmitter's issuer, once loaded.
    pub async fn issuer(&self) -> Result<String, String> {
        Ok(self.loaded().await?.issuer.clone())
    }

    async fn loaded(&self) -> Result<Arc<Loaded>, String> {
        if let Some(l) = self.loaded.load_full() {
            return Ok(l);
        }
        let mut last = self.load_lock.lock().await;
        if let Some(l) = self.loaded.load_full() {
            return Ok(l);
        }
        if last.is_some_and(|t| t.elapsed() < RELOAD_PAUSE) {
            return Err(format!(
                "the configuration of transmitter {} could not be loaded moments ago",
                self.name
            ));
        }
        *last = Some(std::time::Instant::now());
        let loaded = Arc::new(self.load().await?);
        self.loaded.store(Some(loaded.clone()));
        tracing::info!(transmitter = %self.name, issuer = %loaded.issuer, "shared signals transmitter loaded");
        Ok(loaded)
    }

    async fn load(&self) -> Result<Loaded, String> {
        let url = &self.metadata_url;
        let response = crate::http::send(
            "ssf.configuration",
            self.http.get(url).header("accept", "application/json"),
        )
        .await
        .map_err(|e| format!("cannot fetch {url}: {}", error_chain(&e)))?;
        if !response.status().is_success() {
            return Err(format!("{url} answered {}", response.status()));
        }
        let metadata: TransmitterMetadata = response
            .json()
            .await
            .map_err(|e| format!("{url} is not a transmitter configuration: {e}"))?;
        // The issuer must be the transmitter the document was fetched from.
        let same_origin = match (url::Url::parse(url), url::Url::parse(&metadata.issuer)) {
            (Ok(a), Ok(b)) => a.origin() == b.origin(),
            _ => false,
        };
        if !same_origin {
            return Err(format!(
                "the configuration at {url} names the issuer {:?}, on another origin",
                metadata.issuer
            ));
        }
        let jwks = JwksCache::load(
            self.http.clone(),
            &self.name,
            &metadata.jwks_uri,
            Duration::from_secs(10),
        )
        .await
        .map_err(|e| e.to_string())?;
        Ok(Loaded {
            issuer: metadata.issuer,
            jwks,
        })
    }

    /// Verifies a SET addressed to `audience`. Replays are the caller's to catch, by
    /// the returned `jti`.
    pub async fn verify(
        &self,
        token: &str,
        audience: &[String],
    ) -> Result<SecurityEventToken, SetError> {
        let header = check_header(token)?;
        let loaded = self.loaded().await.map_err(|e| SetError {
            err: "invalid_key",
            description: format!("the transmitter's keys are unavailable: {e}"),
        })?;
        let key = loaded
            .jwks
            .key_for(header.kid.as_deref(), header.alg)
            .await
            .map_err(|e| SetError::key(e.to_string()))?;
        let mut validation = Validation::new(header.alg);
        validation.set_required_spec_claims(&[] as &[&str]);
        validation.validate_exp = true;
        validation.validate_aud = false;
        validation.leeway = LEEWAY_SECS;
        let claims = jsonwebtoken::decode::<SetClaims>(token, &key, &validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                    SetError::key("the signature does not verify")
                }
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                    SetError::request("the token has expired")
                }
                _ => SetError::request(format!("malformed claims: {e}")),
            })?
            .claims;
        let payload = decode_payload(token)?;
        read_verified(
            claims,
            &payload,
            &loaded.issuer,
            audience,
            portcullis_core::time::unix_now(),
        )
    }

    /// Polls `url` once (RFC 8936 §2.4), acknowledging `ack` and reporting `errors`
    /// (`jti`, error) from the previous batch.
    pub async fn poll(
        &self,
        url: &str,
        token: Option<&str>,
        ack: &[String],
        errors: &[(String, SetError)],
    ) -> Result<PollAnswer, String> {
        let mut set_errs = Map::new();
        for (jti, e) in errors {
            set_errs.insert(
                jti.clone(),
                json!({"err": e.err, "description": e.description}),
            );
        }
        let mut body = json!({"maxEvents": 50, "returnImmediately": true, "ack": ack});
        if !set_errs.is_empty() {
            body["setErrs"] = Value::Object(set_errs);
        }
        let mut request = self
            .http
            .post(url)
            .header("accept", "application/json")
            .json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = crate::http::send("ssf.poll", request)
            .await
            .map_err(|e| format!("cannot poll {url}: {}", error_chain(&e)))?;
        if !response.status().is_success() {
            return Err(format!("polling {url} answered {}", response.status()));
        }
        let answer: Map<String, Value> = response
            .json()
            .await
            .map_err(|e| format!("the poll answer is not a JSON object: {e}"))?;
        let sets = match answer.get("sets") {
            Some(Value::Object(sets)) => sets
                .iter()
                .filter_map(|(jti, set)| Some((jti.clone(), set.as_str()?.to_string())))
                .collect(),
            None => Vec::new(),
            Some(_) => return Err("the poll answer's sets is not an object".into()),
        };
        Ok(PollAnswer {
            sets,
            more_available: answer.get("moreAvailable") == Some(&Value::Bool(true)),
        })
    }
}

/// The checks of a SET's header, before any key is looked up: a JWT, of `typ`
/// `secevent+jwt` (RFC 8417 §2.3, SSF §4.1.1), under an asymmetric algorithm.
fn check_header(token: &str) -> Result<jsonwebtoken::Header, SetError> {
    let header = jsonwebtoken::decode_header(token)
        .map_err(|e| SetError::request(format!("not a signed JWT: {e}")))?;
    // RFC 8417 §2.3 and SSF §4.1.1: `typ` is `secevent+jwt`.
    if !header
        .typ
        .as_deref()
        .is_some_and(|t| t.eq_ignore_ascii_case("secevent+jwt"))
    {
        return Err(SetError::request("the token's typ is not secevent+jwt"));
    }
    if !ALGORITHMS.contains(&header.alg) {
        return Err(SetError::key(format!(
            "algorithm {:?} is not accepted (asymmetric algorithms only)",
            header.alg
        )));
    }
    Ok(header)
}

/// Everything a SET is checked for once its signature verifies: `iss` the transmitter's,
/// `aud` ours, `iat` not in the future, a `jti`, `events`; then its events and subjects.
fn read_verified(
    claims: SetClaims,
    payload: &Map<String, Value>,
    issuer: &str,
    audience: &[String],
    now: u64,
) -> Result<SecurityEventToken, SetError> {
    if claims.iss != issuer {
        return Err(SetError {
            err: "invalid_issuer",
            description: format!("issued by {:?}, not the transmitter", claims.iss),
        });
    }
    // `aud` is read by hand: one string or a list.
    let for_us = match payload.get("aud") {
        Some(Value::String(a)) => audience.iter().any(|x| x == a),
        Some(Value::Array(all)) => all
            .iter()
            .filter_map(Value::as_str)
            .any(|a| audience.iter().any(|x| x == a)),
        _ => false,
    };
    if !for_us {
        return Err(SetError {
            err: "invalid_audience",
            description: "the token is not addressed to this receiver".into(),
        });
    }
    let iat = claims.iat.ok_or_else(|| SetError::request("no iat"))?;
    if iat > now + LEEWAY_SECS {
        return Err(SetError::request("issued in the future (check clocks)"));
    }
    let jti = claims
        .jti
        .filter(|j| !j.is_empty())
        .ok_or_else(|| SetError::request("no jti"))?;
    let events = claims
        .events
        .filter(|e| !e.is_empty())
        .ok_or_else(|| SetError::request("no events"))?;
    let top_subject = claims.sub_id.as_ref().and_then(|s| subject(s, 0));
    let events = events
        .into_iter()
        .map(|(kind, payload)| {
            let payload = match payload {
                Value::Object(m) => m,
                _ => Map::new(),
            };
            let subject = top_subject
                .clone()
                .or_else(|| payload.get("subject").and_then(|s| subject(s, 0)));
            SecurityEvent {
                kind,
                payload,
                subject,
            }
        })
        .collect();
    Ok(SecurityEventToken { jti, iat, events })
}

/// The reading of a SET with the signature check left out, for the fuzz target: the same
/// header checks and the same reading of the claims as [`Transmitter::verify`].
#[doc(hidden)]
pub fn read_unsigned(
    token: &str,
    issuer: &str,
    audience: &[String],
) -> Result<SecurityEventToken, SetError> {
    check_header(token)?;
    let payload = decode_payload(token)?;
    let claims: SetClaims = serde_json::from_value(Value::Object(payload.clone()))
        .map_err(|e| SetError::request(format!("malformed claims: {e}")))?;
    read_verified(
        claims,
        &payload,
        issuer,
        audience,
        portcullis_core::time::unix_now(),
    )
}

/// The JSON payload of a compact JWT (already verified by the caller).
fn decode_payload(token: &str) -> Result<Map<String, Value>, SetError> {
    use base64::Engine;
    let part = token
        .split('.')
        .nth(1)
        .ok_or_else(|| SetError::request("not a compact JWT"))?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|_| SetError::request("the payload is not base64url"))?;
    serde_json::from_slice(&bytes).map_err(|_| SetError::request("the payload is not JSON"))
}

/// Reads a subject identifier (RFC 9493) or an SSF complex subject, to a bounded depth.
fn subject(value: &Value, depth: usize) -> Option<Subject> {
    if depth > MAX_SUBJECT_DEPTH {
        return None;
    }
    let map = value.as_object()?;
    let text = |k: &str| {
        map.get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    match map.get("format").and_then(Value::as_str) {
        Some("email") => text("email").map(Subject::Email),
        Some("iss_sub") => Some(Subject::IssSub {
            iss: text("iss")?,
            sub: text("sub")?,
        }),
        Some("opaque") => text("id").map(Subject::Opaque),
        Some("aliases") => {
            let items = map.get("identifiers")?.as_array()?;
            let names: Vec<Subject> = items
                .iter()
                .take(MAX_ALIASES)
                .filter_map(|i| subject(i, depth + 1))
                .filter(|s| !matches!(s, Subject::Aliases(_)))
                .collect();
            (!names.is_empty()).then_some(Subject::Aliases(names))
        }
        Some(_) => None,
        // A complex subject: members that are simple subjects.
        None => {
            let user = map.get("user").and_then(|u| subject(u, depth + 1));
            let session = map
                .get("session")
                .and_then(|s| match subject(s, depth + 1) {
                    Some(Subject::Opaque(id)) => Some(id),
                    _ => None,
                });
            match (session, user) {
                (Some(sid), user) => Some(Subject::Session {
                    sid,
                    user: user.map(Box::new),
                }),
                (None, user) => user,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_of_every_format_are_read() {
        assert_eq!(
            subject(&json!({"format": "email", "email": "a@x.com"}), 0),
            Some(Subject::Email("a@x.com".into()))
        );
        assert_eq!(
            subject(
                &json!({"format": "iss_sub", "iss": "https://i", "sub": "s"}),
                0
            ),
            Some(Subject::IssSub {
                iss: "https://i".into(),
                sub: "s".into()
            })
        );
        assert_eq!(
            subject(&json!({"format": "opaque", "id": "u1"}), 0),
            Some(Subject::Opaque("u1".into()))
        );
        assert_eq!(
            subject(
                &json!({"user": {"format": "email", "email": "a@x.com"},
                        "session": {"format": "opaque", "id": "sid-1"}}),
                0
            ),
            Some(Subject::Session {
                sid: "sid-1".into(),
                user: Some(Box::new(Subject::Email("a@x.com".into())))
            })
        );
        assert_eq!(
            subject(&json!({"user": {"format": "opaque", "id": "u"}}), 0),
            Some(Subject::Opaque("u".into()))
        );
        assert_eq!(
            subject(&json!({"format": "phone_number", "phone_number": "+1"}), 0),
            None
        );
        assert_eq!(subject(&json!({"format": "email"}), 0), None);
        assert_eq!(subject(&json!("text"), 0), None);
    }

    #[test]
    fn nesting_is_bounded() {
        // Aliases inside aliases, complex inside complex: read no deeper than the limit.
        let mut deep = json!({"format": "email", "email": "a@x.com"});
        for _ in 0..1000 {
            deep = json!({"user": deep});
        }
        assert_eq!(subject(&deep, 0), None);
        let nested = json!({"format": "aliases", "identifiers": [
            {"format": "aliases", "identifiers": [{"format": "email", "email": "a@x.com"}]},
            {"format": "opaque", "id": "u"}
        ]});
        assert_eq!(
            subject(&nested, 0),
            Some(Subject::Aliases(vec![Subject::Opaque("u".into())]))
        );
    }
}
