//! OpenID Connect Back-Channel Logout 1.0 §2.6: validating a logout token.
//!
//! The token is checked like an ID token where it can be (signature under an algorithm
//! the provider publishes, `iss` exactly, `aud` naming this client), and then as a
//! logout token: a recent `iat`, a `jti` (the caller keeps the replay cache), the
//! back-channel logout event, no `nonce` (so an ID token cannot be replayed as a logout
//! token), and `sub` and/or `sid`. A token `typ` other than `logout+jwt` or `JWT` is
//! refused, as §2.4 recommends.

use jsonwebtoken::Validation;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{LEEWAY_SECS, OidcProvider};
use crate::IdentityError;
use crate::claims::Audience;
use crate::discovery::TENANT_TEMPLATE;

/// The event a logout token carries.
pub const LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// How old a logout token may be.
const MAX_AGE_SECS: u64 = 300;

/// A verified logout token: which provider session or user signed out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutToken {
    pub sub: Option<String>,
    pub sid: Option<String>,
    /// The token's id, for the replay cache.
    pub jti: String,
    pub iat: u64,
}

#[derive(Deserialize)]
struct Claims {
    #[allow(dead_code)]
    iss: String,
    #[allow(dead_code)]
    aud: Audience,
    iat: u64,
    #[serde(default)]
    jti: Option<String>,
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    sid: Option<String>,
    #[serde(default)]
    events: Option<Map<String, Value>>,
    #[serde(default)]
    nonce: Option<Value>,
}

impl OidcProvider {
    /// Verifies a logout token sent to the back-channel logout endpoint.
    pub async fn verify_logout_token(&self, token: &str) -> Result<LogoutToken, IdentityError> {
        let d = self.discovered().await?;
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| IdentityError::invalid(format!("malformed token header: {e}")))?;
        check_typ(&header)?;
        if !d.algorithms.contains(&header.alg) {
            return Err(IdentityError::invalid(format!(
                "algorithm {:?} is not allowed for this provider",
                header.alg
            )));
        }
        if d.metadata.issuer.contains(TENANT_TEMPLATE) {
            return Err(IdentityError::invalid(
                "back-channel logout needs a provider with one issuer (not Entra's multi-tenant endpoints)",
            ));
        }
        let key = d.jwks.key_for(header.kid.as_deref(), header.alg).await?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&d.metadata.issuer]);
        validation.set_audience(std::slice::from_ref(&self.config.client_id));
        // §2.4: `exp` is optional (checked when present); `iat` is required.
        validation.set_required_spec_claims(&["iss", "aud"]);
        validation.leeway = LEEWAY_SECS;
        let claims = jsonwebtoken::decode::<Claims>(token, &key, &validation)
            .map_err(|e| IdentityError::invalid(super::describe_jwt_error(&e)))?
            .claims;
        read_claims(claims, portcullis_core::time::unix_now())
    }
}

/// §2.4: a `typ` other than `logout+jwt` or `JWT` is not a logout token.
fn check_typ(header: &jsonwebtoken::Header) -> Result<(), IdentityError> {
    if let Some(typ) = header.typ.as_deref()
        && !typ.eq_ignore_ascii_case("logout+jwt")
        && !typ.eq_ignore_ascii_case("jwt")
    {
        return Err(IdentityError::invalid(format!(
            "a token of type {typ:?} is not a logout token"
        )));
    }
    Ok(())
}

/// Everything a logout token is checked for once its signature, `iss` and `aud` verify.
fn read_claims(claims: Claims, now: u64) -> Result<LogoutToken, IdentityError> {
    if claims.iat > now + LEEWAY_SECS {
        return Err(IdentityError::invalid(
            "issued in the future (check clocks)",
        ));
    }
    if claims.iat + MAX_AGE_SECS + LEEWAY_SECS < now {
        return Err(IdentityError::invalid("issued too long ago"));
    }
    let events = claims
        .events
        .ok_or_else(|| IdentityError::invalid("no events claim"))?;
    if !events.get(LOGOUT_EVENT).is_some_and(Value::is_object) {
        return Err(IdentityError::invalid(
            "the events claim holds no back-channel logout event",
        ));
    }
    if claims.nonce.is_some() {
        return Err(IdentityError::invalid(
            "a logout token must not carry a nonce",
        ));
    }
    let non_empty = |v: Option<String>| v.filter(|s| !s.is_empty());
    let (sub, sid) = (non_empty(claims.sub), non_empty(claims.sid));
    if sub.is_none() && sid.is_none() {
        return Err(IdentityError::invalid("neither sub nor sid"));
    }
    let jti = non_empty(claims.jti).ok_or_else(|| IdentityError::invalid("no jti"))?;
    Ok(LogoutToken {
        sub,
        sid,
        jti,
        iat: claims.iat,
    })
}

/// The reading of a logout token with the signature (and so `iss` and `aud`) left out,
/// for the fuzz target: the same `typ` check and the same reading of the claims as
/// [`OidcProvider::verify_logout_token`].
#[doc(hidden)]
pub fn read_unsigned_logout_token(token: &str) -> Result<LogoutToken, IdentityError> {
    use base64::Engine as _;
    let header = jsonwebtoken::decode_header(token)
        .map_err(|e| IdentityError::invalid(format!("malformed token header: {e}")))?;
    check_typ(&header)?;
    let payload = token
        .split('.')
        .nth(1)
        .and_then(|p| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p)
                .ok()
        })
        .ok_or_else(|| IdentityError::invalid("the payload is not base64url"))?;
    let claims: Claims = serde_json::from_slice(&payload)
        .map_err(|e| IdentityError::invalid(format!("malformed claims: {e}")))?;
    read_claims(claims, portcullis_core::time::unix_now())
}
