//! From verified claims to an [`Identity`].
//!
//! An email the provider marks unverified (`email_verified: false`) is dropped: an allow
//! list of emails means nothing if anyone can type an address into their profile.

use serde::Deserialize;
use serde_json::{Map, Value};

use std::collections::BTreeMap;

use portcullis_config::ClaimMapping;
use portcullis_core::{ClaimValue, Identity};

/// An ID token's claims after signature and standard-claim checks.
#[derive(Debug, Clone, Deserialize)]
pub struct IdTokenClaims {
    pub iss: String,
    pub sub: String,
    pub aud: Audience,
    pub exp: u64,
    pub iat: Option<u64>,
    pub nonce: Option<String>,
    pub azp: Option<String>,
    /// Everything else (`email`, `name`, `groups`, ...).
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    pub fn as_slice(&self) -> &[String] {
        match self {
            Audience::One(a) => std::slice::from_ref(a),
            Audience::Many(all) => all,
        }
    }
}

fn string_claim(claims: &Map<String, Value>, name: &str) -> Option<String> {
    match claims.get(name)? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        _ => None,
    }
}

/// A claim that is a list of strings, or one string.
fn string_list_claim(claims: &Map<String, Value>, name: &str) -> Vec<String> {
    match claims.get(name) {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        Some(Value::String(s)) if !s.is_empty() => vec![s.clone()],
        _ => Vec::new(),
    }
}

/// The first of `names` that holds a usable string.
fn first_claim(claims: &Map<String, Value>, names: &[String]) -> Option<String> {
    names.iter().find_map(|n| string_claim(claims, n))
}

/// Builds the identity from verified claims (an ID token's, possibly completed by
/// userinfo) under the provider's claim mapping. `subject` is the token's `sub`, used when
/// no mapped id claim is present. An email taken from a fallback claim (`upn`,
/// `preferred_username`) must at least look like an address.
pub fn identity_from_claims(
    provider: &str,
    subject: &str,
    claims: &Map<String, Value>,
    mapping: &ClaimMapping,
) -> Identity {
    let email_unverified = matches!(claims.get("email_verified"), Some(Value::Bool(false)))
        || matches!(claims.get("email_verified"), Some(Value::String(s)) if s.eq_ignore_ascii_case("false"));
    let email = mapping.email.iter().find_map(|name| {
        if name == "email" && email_unverified {
            return None;
        }
        string_claim(claims, name).filter(|v| name == "email" || looks_like_email(v))
    });
    let id = first_claim(claims, &mapping.id).unwrap_or_else(|| subject.to_string());
    Identity::from(portcullis_core::IdentityFields {
        sub: (id != subject && !subject.is_empty()).then(|| subject.into()),
        id,
        email,
        name: first_claim(claims, &mapping.name),
        username: first_claim(claims, &mapping.username),
        groups: string_list_claim(claims, &mapping.groups),
        provider: portcullis_core::provider_name(provider),
        claims: kept_claims(claims, &mapping.keep),
        // When the provider does not say, the login is happening now.
        auth_time: claims
            .get("auth_time")
            .and_then(Value::as_u64)
            .or_else(|| Some(portcullis_core::time::unix_now())),
        acr: string_claim(claims, "acr"),
        sid: string_claim(claims, "sid"),
    })
}

/// The claims in `keep` that are strings, lists of strings or booleans; anything else
/// (numbers, objects) is left out, so a rule on it never matches.
fn kept_claims(claims: &Map<String, Value>, keep: &[String]) -> BTreeMap<String, ClaimValue> {
    keep.iter()
        .filter_map(|name| {
            let value = match claims.get(name)? {
                Value::Bool(b) => ClaimValue::Flag(*b),
                Value::String(s) => ClaimValue::Text(s.clone()),
                Value::Array(items) => ClaimValue::List(
                    items
                        .iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect(),
                ),
                _ => return None,
            };
            Some((name.clone(), value))
        })
        .collect()
}

fn looks_like_email(v: &str) -> bool {
    matches!(v.split_once('@'), Some((local, domain)) if !local.is_empty() && domain.contains('.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    fn standard() -> ClaimMapping {
        ClaimMapping {
            id: vec!["sub".into()],
            email: vec!["email".into()],
            username: vec!["preferred_username".into()],
            name: vec!["name".into()],
            groups: "groups".into(),
            keep: vec!["department".into(), "contractor".into()],
        }
    }

    fn entra() -> ClaimMapping {
        ClaimMapping {
            id: vec!["oid".into(), "sub".into()],
            email: vec!["email".into(), "preferred_username".into(), "upn".into()],
            username: vec!["preferred_username".into(), "upn".into()],
            ..standard()
        }
    }

    #[test]
    fn entra_takes_the_id_from_oid_and_the_email_from_fallbacks() {
        let claims = map(
            json!({"sub": "pairwise", "oid": "0000-aaaa", "preferred_username": "bob@contoso.com"}),
        );
        let who = identity_from_claims("entra", "pairwise", &claims, &entra());
        assert_eq!(who.id(), "0000-aaaa");
        assert_eq!(who.email(), Some("bob@contoso.com"));
        // A user name that is no address is not taken for an email.
        let claims =
            map(json!({"oid": "1", "preferred_username": "bob", "upn": "bob@contoso.com"}));
        let who = identity_from_claims("entra", "s", &claims, &entra());
        assert_eq!(who.email(), Some("bob@contoso.com"));
        let claims = map(json!({"oid": "1", "preferred_username": "bob"}));
        assert_eq!(
            identity_from_claims("entra", "s", &claims, &entra()).email(),
            None
        );
        // Without oid, the subject.
        let claims = map(json!({"email": "c@contoso.com"}));
        assert_eq!(
            identity_from_claims("entra", "s-9", &claims, &entra()).id(),
            "s-9"
        );
    }

    #[test]
    fn an_unverified_email_is_not_replaced_by_a_fallback_claim_of_the_same_user() {
        let claims = map(
            json!({"email": "ceo@example.com", "email_verified": false, "upn": "me@corp.example"}),
        );
        let who = identity_from_claims("x", "s", &claims, &entra());
        assert_eq!(who.email(), Some("me@corp.example"));
    }

    #[test]
    fn standard_claims_become_the_identity() {
        let claims = map(json!({
            "email": "alice@example.com", "email_verified": true, "name": "Alice",
            "preferred_username": "alice", "groups": ["admins", "", "devs"]
        }));
        let who = identity_from_claims("oidc", "sub-1", &claims, &standard());
        assert_eq!(who.id(), "sub-1");
        assert_eq!(who.email(), Some("alice@example.com"));
        assert_eq!(who.username(), Some("alice"));
        assert_eq!(who.groups, vec!["admins", "devs"]);
        assert_eq!(&*who.provider, "oidc");
    }

    #[test]
    fn an_unverified_email_is_not_trusted() {
        for flag in [json!(false), json!("false")] {
            let claims = map(json!({"email": "ceo@example.com", "email_verified": flag}));
            assert_eq!(
                identity_from_claims("p", "s", &claims, &standard()).email(),
                None
            );
        }
    }

    #[test]
    fn wrongly_typed_claims_are_ignored_not_trusted() {
        let claims = map(json!({"email": ["a@example.com"], "groups": 7, "name": ""}));
        let who = identity_from_claims("p", "s", &claims, &standard());
        assert_eq!(who.email(), None);
        assert!(who.groups.is_empty());
        assert_eq!(who.name(), None);
    }
}
