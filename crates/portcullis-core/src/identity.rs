//! The authenticated user, as every later step (policy, headers, `/me`) sees it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

/// Who a request belongs to, once an identity provider has vouched for them.
///
/// `id` is the provider's stable subject identifier; it is never empty. Every other field
/// is optional because providers differ in what they release; policy treats a missing
/// field as "does not match", never as "matches".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// Stable subject identifier at the provider (`sub`, a GitHub user id, Entra `oid`).
    pub id: Box<str>,
    pub email: Option<Box<str>>,
    /// Display name.
    pub name: Option<Box<str>>,
    /// Login name (`preferred_username`, a GitHub login).
    pub username: Option<Box<str>>,
    /// Groups or teams, as the provider (or SCIM) names them.
    #[serde(default)]
    pub groups: Vec<String>,
    /// The configured name of the provider that authenticated the user: one shared
    /// copy per provider (see [`provider_name`]), not one per session.
    #[serde(deserialize_with = "shared_provider")]
    pub provider: Arc<str>,
    /// Other claims the configuration asks about (route rules on `department`, say),
    /// kept when they are strings, lists of strings or booleans.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub claims: BTreeMap<String, ClaimValue>,
    /// When the user authenticated at the provider (unix seconds): the ID token's
    /// `auth_time`, else the moment the login completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<u64>,
    /// How they authenticated (`acr`), when the provider says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acr: Option<Box<str>>,
    /// The provider's session this login belongs to (the ID token's `sid`): back- and
    /// front-channel logout name it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<Box<str>>,
    /// The ID token's `sub`, kept only when `id` comes from another claim (Entra's
    /// `oid`): logout tokens and shared signals name users by `sub`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<Box<str>>,
}

/// A claim value a rule can compare with text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ClaimValue {
    Flag(bool),
    Text(String),
    List(Vec<String>),
}

impl ClaimValue {
    /// Whether the claim holds `wanted`: the string itself, one of the list's, or
    /// `true`/`false` for a boolean.
    pub fn holds(&self, wanted: &str) -> bool {
        match self {
            ClaimValue::Text(t) => t == wanted,
            ClaimValue::List(items) => items.iter().any(|i| i == wanted),
            ClaimValue::Flag(b) => wanted.eq_ignore_ascii_case(if *b { "true" } else { "false" }),
        }
    }
}

/// How many provider names are shared; a configuration has a handful. Names beyond
/// this (which only a store's data could bring) get a copy of their own.
const SHARED_NAMES: usize = 64;

static PROVIDER_NAMES: Mutex<Vec<Arc<str>>> = Mutex::new(Vec::new());

/// The shared copy of a provider's name: every identity of one provider holds the
/// same text, so 100,000 sessions hold one copy of it rather than 100,000.
pub fn provider_name(name: &str) -> Arc<str> {
    let Ok(mut names) = PROVIDER_NAMES.lock() else {
        return name.into();
    };
    if let Some(shared) = names.iter().find(|n| ***n == *name) {
        return shared.clone();
    }
    let shared: Arc<str> = name.into();
    if names.len() < SHARED_NAMES {
        names.push(shared.clone());
    }
    shared
}

fn shared_provider<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Arc<str>, D::Error> {
    Ok(provider_name(&String::deserialize(d)?))
}

impl Identity {
    /// The most human-readable name for log lines and error pages: the email, else the
    /// user name, else the subject id.
    pub fn display(&self) -> &str {
        self.email
            .as_deref()
            .or(self.username.as_deref())
            .unwrap_or(&self.id)
    }

    /// The provider's subject (`sub`) for this user: `sub` when kept apart, else `id`.
    pub fn subject(&self) -> &str {
        self.sub.as_deref().unwrap_or(&self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Identity {
        Identity {
            id: "sub-1".into(),
            email: Some("alice@example.com".into()),
            name: Some("Alice".into()),
            username: Some("alice".into()),
            groups: vec!["admins".into()],
            provider: "oidc".into(),
            ..Identity::default()
        }
    }

    #[test]
    fn display_prefers_email_then_username_then_id() {
        let mut who = alice();
        assert_eq!(who.display(), "alice@example.com");
        who.email = None;
        assert_eq!(who.display(), "alice");
        who.username = None;
        assert_eq!(who.display(), "sub-1");
    }

    #[test]
    fn claim_values_match_strings_lists_and_booleans() {
        assert!(ClaimValue::Text("eng".into()).holds("eng"));
        assert!(!ClaimValue::Text("eng".into()).holds("Eng"));
        assert!(ClaimValue::List(vec!["a".into(), "eng".into()]).holds("eng"));
        assert!(ClaimValue::Flag(true).holds("true"));
        assert!(!ClaimValue::Flag(false).holds("true"));
    }

    #[test]
    fn the_subject_is_the_kept_sub_else_the_id() {
        let mut who = alice();
        assert_eq!(who.subject(), "sub-1");
        who.sub = Some("pairwise".into());
        assert_eq!(who.subject(), "pairwise");
    }

    #[test]
    fn one_provider_name_is_shared_and_the_table_is_bounded() {
        let a = provider_name("okta-shared-test");
        assert!(Arc::ptr_eq(&a, &provider_name("okta-shared-test")));
        assert!(!Arc::ptr_eq(&a, &provider_name("other-shared-test")));
        let json =
            r#"{"id":"x","email":null,"name":null,"username":null,"provider":"okta-shared-test"}"#;
        let who: Identity = serde_json::from_str(json).unwrap();
        assert!(
            Arc::ptr_eq(&a, &who.provider),
            "a stored identity shares it too"
        );
        // Names beyond the shared ones (in this test, so that the table is not full
        // while the ones above are first seen) still work.
        for i in 0..2 * SHARED_NAMES {
            let name = format!("many-{i}");
            assert_eq!(&*provider_name(&name), name);
        }
        assert!(PROVIDER_NAMES.lock().unwrap().len() <= SHARED_NAMES);
    }

    #[test]
    fn identity_round_trips_through_json_with_missing_groups() {
        let json = r#"{"id":"x","email":null,"name":null,"username":null,"provider":"p"}"#;
        let who: Identity = serde_json::from_str(json).expect("parses");
        assert!(who.groups.is_empty());
        let back: Identity = serde_json::from_str(&serde_json::to_string(&who).unwrap()).unwrap();
        assert_eq!(back, who);
    }
}
