//! From verified claims to an [`Identity`].
//!
//! An email the provider marks unverified (`email_verified: false`) is dropped: an allow
//! list of emails means nothing if anyone can type an address into their profile.

use serde::Deserialize;
use serde_json::{Map, Value};

use portcullis_core::Identity;

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

/// Builds the identity from a subject and its claims (ID token claims, possibly completed
/// by userinfo).
pub fn identity_from_claims(
    provider: &str,
    subject: &str,
    claims: &Map<String, Value>,
) -> Identity {
    let email_unverified = matches!(claims.get("email_verified"), Some(Value::Bool(false)))
        || matches!(claims.get("email_verified"), Some(Value::String(s)) if s.eq_ignore_ascii_case("false"));
    let email = if email_unverified {
        None
    } else {
        string_claim(claims, "email")
    };
    Identity {
        id: subject.to_string(),
        email,
        name: string_claim(claims, "name"),
        username: string_claim(claims, "preferred_username"),
        groups: string_list_claim(claims, "groups"),
        provider: provider.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn standard_claims_become_the_identity() {
        let claims = map(json!({
            "email": "alice@example.com", "email_verified": true, "name": "Alice",
            "preferred_username": "alice", "groups": ["admins", "", "devs"]
        }));
        let who = identity_from_claims("oidc", "sub-1", &claims);
        assert_eq!(who.id, "sub-1");
        assert_eq!(who.email.as_deref(), Some("alice@example.com"));
        assert_eq!(who.username.as_deref(), Some("alice"));
        assert_eq!(who.groups, vec!["admins", "devs"]);
        assert_eq!(who.provider, "oidc");
    }

    #[test]
    fn an_unverified_email_is_not_trusted() {
        for flag in [json!(false), json!("false")] {
            let claims = map(json!({"email": "ceo@example.com", "email_verified": flag}));
            assert_eq!(identity_from_claims("p", "s", &claims).email, None);
        }
    }

    #[test]
    fn wrongly_typed_claims_are_ignored_not_trusted() {
        let claims = map(json!({"email": ["a@example.com"], "groups": 7, "name": ""}));
        let who = identity_from_claims("p", "s", &claims);
        assert_eq!(who.email, None);
        assert!(who.groups.is_empty());
        assert_eq!(who.name, None);
    }
}
