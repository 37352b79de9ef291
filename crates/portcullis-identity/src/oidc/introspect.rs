//! RFC 7662: asking the provider about an opaque access token.
//!
//! The token is sent to the `introspection_endpoint` of the provider's discovery
//! document, authenticated as this client. Only `active: true` with a subject and an
//! audience (or client) this provider accepts is an identity; `active: false`, another
//! audience, an unreachable endpoint or a confused answer is a refusal, never a fallback.

use serde_json::{Map, Value};

use super::{OidcProvider, VerifiedBearer};
use crate::IdentityError;
use crate::claims::identity_from_claims;
use crate::discovery::error_chain;

/// Why an introspection did not produce an identity.
#[derive(Debug)]
pub enum Introspected {
    /// The provider vouches for the token.
    Active(Box<VerifiedBearer>),
    /// The provider says the token is not active, or it is not for this client.
    Refused(String),
}

impl OidcProvider {
    /// Whether the provider publishes an introspection endpoint (after discovery).
    pub async fn can_introspect(&self) -> Result<bool, IdentityError> {
        Ok(self
            .discovered()
            .await?
            .metadata
            .introspection_endpoint
            .is_some())
    }

    /// The introspection endpoint's URL, if the provider publishes one.
    pub async fn introspection_endpoint(&self) -> Result<Option<String>, IdentityError> {
        Ok(self
            .discovered()
            .await?
            .metadata
            .introspection_endpoint
            .clone())
    }

    /// Introspects `token`. `Err` means the question could not be asked or answered (the
    /// endpoint unreachable or nonsensical); the caller refuses the token then too.
    pub async fn introspect(&self, token: &str) -> Result<Introspected, IdentityError> {
        let d = self.discovered().await?;
        let unavailable = |reason: String| IdentityError::ProviderUnavailable {
            provider: self.config.name.clone(),
            reason,
        };
        let Some(endpoint) = d.metadata.introspection_endpoint.as_deref() else {
            return Err(unavailable(
                "the provider publishes no introspection_endpoint".into(),
            ));
        };
        let mut form = vec![("token", token), ("token_type_hint", "access_token")];
        let response = crate::http::send(
            "idp.introspection",
            self.client_authenticated(&d, endpoint, &mut form)
                .form(&form),
        )
        .await
        .map_err(|e| {
            unavailable(format!(
                "introspection endpoint unreachable: {}",
                error_chain(&e)
            ))
        })?;
        let status = response.status();
        if !status.is_success() {
            return Err(unavailable(format!(
                "the introspection endpoint answered {status} (are this client's credentials allowed to introspect?)"
            )));
        }
        let mut answer: Map<String, Value> = response.json().await.map_err(|e| {
            unavailable(format!(
                "the introspection answer is not a JSON object: {e}"
            ))
        })?;
        // RFC 7662 answers carry few user claims: complete them from userinfo (with the
        // token itself) when the email is missing and the token may call it.
        let verdict = self.judge(&answer);
        let may_call_userinfo = answer
            .get("scope")
            .and_then(Value::as_str)
            .is_none_or(|scope| scope.split(' ').any(|s| s == "openid"));
        if let Introspected::Active(v) = &verdict
            && v.identity.email().is_none()
            && may_call_userinfo
        {
            match self.userinfo(token).await {
                Ok(info) if info.get("sub") == answer.get("sub") => {
                    for (k, v) in info {
                        answer.entry(k).or_insert(v);
                    }
                    return Ok(self.judge(&answer));
                }
                Ok(_) => {
                    return Ok(Introspected::Refused(
                        "userinfo describes another subject than the introspection".into(),
                    ));
                }
                Err(e) => {
                    tracing::debug!(provider = %self.config.name, error = %e, "userinfo for an introspected token failed; going on with the introspection's claims");
                }
            }
        }
        Ok(verdict)
    }

    /// Turns an introspection answer into an identity, or the reason it is none.
    fn judge(&self, answer: &Map<String, Value>) -> Introspected {
        if answer.get("active") != Some(&Value::Bool(true)) {
            return Introspected::Refused("the provider says the token is not active".into());
        }
        let now = portcullis_core::time::unix_now();
        let exp = answer.get("exp").and_then(Value::as_u64);
        if exp.is_some_and(|exp| exp + super::LEEWAY_SECS < now) {
            return Introspected::Refused("the token has expired".into());
        }
        // The token must be meant for this client: an audience we accept, or (without
        // an audience) issued to one of them.
        let accepted = |v: &str| self.config.audiences.iter().any(|a| a == v);
        let for_us = match answer.get("aud") {
            Some(Value::String(aud)) => accepted(aud),
            Some(Value::Array(auds)) => auds.iter().filter_map(Value::as_str).any(accepted),
            _ => answer
                .get("client_id")
                .and_then(Value::as_str)
                .is_some_and(accepted),
        };
        if !for_us {
            return Introspected::Refused(
                "the token is for another audience (auth.audiences or the client id)".into(),
            );
        }
        let Some(sub) = answer
            .get("sub")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        else {
            return Introspected::Refused(
                "the token names no user (a client credentials token?)".into(),
            );
        };
        // The introspection answer's `username` is a login name.
        let mut claims = answer.clone();
        if let Some(username) = answer.get("username").cloned() {
            claims.entry("preferred_username").or_insert(username);
        }
        let mut identity =
            identity_from_claims(&self.config.name, sub, &claims, &self.config.claims);
        // No `auth_time` here means "unknown", not "now": a route that asks for a fresh
        // login steps up.
        identity.auth_time = answer.get("auth_time").and_then(Value::as_u64);
        Introspected::Active(Box::new(VerifiedBearer {
            identity,
            issued_at: answer.get("iat").and_then(Value::as_u64),
            expires_at: exp,
        }))
    }
}
