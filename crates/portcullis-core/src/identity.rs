//! The authenticated user, as every later step (policy, headers, `/me`) sees it.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

/// Who a request belongs to, once an identity provider has vouched for them.
///
/// `id` is the provider's stable subject identifier; it is never empty. Every other field
/// is optional because providers differ in what they release; policy treats a missing
/// field as "does not match", never as "matches".
///
/// The text fields (id, email, name, user name, `acr`, `sid`, `sub`) are kept in one
/// allocation and read through methods: a session held in memory holds its identity, and
/// seven small allocations cost some 80 bytes more per session than one. An identity is
/// built from (and stored as JSON in the shape of) [`IdentityFields`].
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "IdentityFields", into = "IdentityFields")]
pub struct Identity {
    text: Text,
    /// Groups or teams, as the provider (or SCIM) names them.
    pub groups: Vec<String>,
    /// The configured name of the provider that authenticated the user: a login's
    /// identity holds the provider's one shared copy (see [`provider_name`]), so held
    /// sessions do not each hold their own.
    pub provider: Arc<str>,
    /// Other claims the configuration asks about (route rules on `department`, say),
    /// kept when they are strings, lists of strings or booleans.
    pub claims: BTreeMap<String, ClaimValue>,
    /// When the user authenticated at the provider (unix seconds): the ID token's
    /// `auth_time`, else the moment the login completed.
    pub auth_time: Option<u64>,
}

/// An identity's fields one by one: what a provider's answer is read into, and the
/// JSON shape an identity is stored in.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityFields {
    /// Stable subject identifier at the provider (`sub`, a GitHub user id, Entra `oid`).
    pub id: String,
    pub email: Option<String>,
    /// Display name.
    pub name: Option<String>,
    /// Login name (`preferred_username`, a GitHub login).
    pub username: Option<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    /// Read from a store as a copy of its own: a session loaded from Redis lives for one
    /// request, and sharing would take a lock on every load.
    pub provider: Arc<str>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub claims: BTreeMap<String, ClaimValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<u64>,
    /// How they authenticated (`acr`), when the provider says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acr: Option<String>,
    /// The provider's session this login belongs to (the ID token's `sid`): back- and
    /// front-channel logout name it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// The ID token's `sub`, kept only when `id` comes from another claim (Entra's
    /// `oid`): logout tokens and shared signals name users by `sub`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
}

/// The text fields, in this order, in [`Text`].
#[derive(Clone, Copy)]
enum Field {
    Id,
    Email,
    Name,
    Username,
    Acr,
    Sid,
    Sub,
}

const FIELDS: usize = 7;

/// Several strings in one allocation: field `i` is `buf[ends[i - 1]..ends[i]]`, and
/// present unless its bit in `absent` is set (the id is always present).
#[derive(Clone, PartialEq, Eq)]
struct Text {
    buf: Box<str>,
    ends: [u32; FIELDS],
    absent: u8,
}

impl Default for Text {
    /// An empty id and no other field.
    fn default() -> Self {
        Text::new([Some(""), None, None, None, None, None, None])
    }
}

impl Text {
    fn new(fields: [Option<&str>; FIELDS]) -> Self {
        let len = fields.iter().flatten().map(|f| f.len()).sum();
        let mut buf = String::with_capacity(len);
        let mut ends = [0u32; FIELDS];
        let mut absent = 0u8;
        for (i, field) in fields.iter().enumerate() {
            match field {
                Some(f) => buf.push_str(f),
                None => absent |= 1 << i,
            }
            // Identity text comes from a provider's token or answer, bounded far below
            // 4 GiB by the body limits; saturating keeps even an absurd one well formed.
            ends[i] = u32::try_from(buf.len()).unwrap_or(u32::MAX);
        }
        if ends[FIELDS - 1] as usize != buf.len() {
            // Beyond 4 GiB: keep nothing rather than text the offsets cannot describe.
            return Text {
                buf: Box::default(),
                ends: [0; FIELDS],
                absent: !1,
            };
        }
        Text {
            buf: buf.into_boxed_str(),
            ends,
            absent,
        }
    }

    fn get(&self, field: Field) -> Option<&str> {
        let i = field as usize;
        if self.absent & (1 << i) != 0 {
            return None;
        }
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        self.buf.get(start..self.ends[i] as usize)
    }

    fn all(&self) -> [Option<&str>; FIELDS] {
        use Field::*;
        [Id, Email, Name, Username, Acr, Sid, Sub].map(|f| self.get(f))
    }

    fn with(&self, field: Field, value: Option<&str>) -> Self {
        let mut all = self.all();
        all[field as usize] = value;
        Text::new(all)
    }
}

impl From<IdentityFields> for Identity {
    fn from(f: IdentityFields) -> Self {
        Identity {
            text: Text::new([
                Some(&f.id),
                f.email.as_deref(),
                f.name.as_deref(),
                f.username.as_deref(),
                f.acr.as_deref(),
                f.sid.as_deref(),
                f.sub.as_deref(),
            ]),
            groups: f.groups,
            provider: f.provider,
            claims: f.claims,
            auth_time: f.auth_time,
        }
    }
}

impl From<Identity> for IdentityFields {
    fn from(who: Identity) -> Self {
        let owned = |v: Option<&str>| v.map(str::to_string);
        IdentityFields {
            id: who.id().to_string(),
            email: owned(who.email()),
            name: owned(who.name()),
            username: owned(who.username()),
            acr: owned(who.acr()),
            sid: owned(who.sid()),
            sub: owned(who.sub()),
            groups: who.groups,
            provider: who.provider,
            claims: who.claims,
            auth_time: who.auth_time,
        }
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("id", &self.id())
            .field("email", &self.email())
            .field("name", &self.name())
            .field("username", &self.username())
            .field("groups", &self.groups)
            .field("provider", &self.provider)
            .field("claims", &self.claims)
            .field("auth_time", &self.auth_time)
            .field("acr", &self.acr())
            .field("sid", &self.sid())
            .field("sub", &self.sub())
            .finish()
    }
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

/// How many provider names are shared; a configuration has a handful (logins are the
/// only callers). Names beyond this get a copy of their own rather than growing the table.
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

impl Identity {
    /// Stable subject identifier at the provider (`sub`, a GitHub user id, Entra `oid`).
    pub fn id(&self) -> &str {
        self.text.get(Field::Id).unwrap_or_default()
    }

    pub fn email(&self) -> Option<&str> {
        self.text.get(Field::Email)
    }

    /// Display name.
    pub fn name(&self) -> Option<&str> {
        self.text.get(Field::Name)
    }

    /// Login name (`preferred_username`, a GitHub login).
    pub fn username(&self) -> Option<&str> {
        self.text.get(Field::Username)
    }

    /// How they authenticated (`acr`), when the provider says.
    pub fn acr(&self) -> Option<&str> {
        self.text.get(Field::Acr)
    }

    /// The provider's session this login belongs to (the ID token's `sid`): back- and
    /// front-channel logout name it.
    pub fn sid(&self) -> Option<&str> {
        self.text.get(Field::Sid)
    }

    /// The ID token's `sub`, kept only when `id` comes from another claim (Entra's
    /// `oid`): logout tokens and shared signals name users by `sub`.
    pub fn sub(&self) -> Option<&str> {
        self.text.get(Field::Sub)
    }

    pub fn set_name(&mut self, name: Option<&str>) {
        self.text = self.text.with(Field::Name, name);
    }

    pub fn set_email(&mut self, email: Option<&str>) {
        self.text = self.text.with(Field::Email, email);
    }

    pub fn set_username(&mut self, username: Option<&str>) {
        self.text = self.text.with(Field::Username, username);
    }

    pub fn set_acr(&mut self, acr: Option<&str>) {
        self.text = self.text.with(Field::Acr, acr);
    }

    pub fn set_sid(&mut self, sid: Option<&str>) {
        self.text = self.text.with(Field::Sid, sid);
    }

    pub fn set_sub(&mut self, sub: Option<&str>) {
        self.text = self.text.with(Field::Sub, sub);
    }

    /// The most human-readable name for log lines and error pages: the email, else the
    /// user name, else the subject id.
    pub fn display(&self) -> &str {
        self.email().or(self.username()).unwrap_or(self.id())
    }

    /// The provider's subject (`sub`) for this user: `sub` when kept apart, else `id`.
    pub fn subject(&self) -> &str {
        self.sub().unwrap_or(self.id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Identity {
        Identity::from(IdentityFields {
            id: "sub-1".into(),
            email: Some("alice@example.com".into()),
            name: Some("Alice".into()),
            username: Some("alice".into()),
            groups: vec!["admins".into()],
            provider: "oidc".into(),
            ..IdentityFields::default()
        })
    }

    #[test]
    fn every_text_field_reads_back_and_changes_alone() {
        let mut who = Identity::from(IdentityFields {
            id: "id-1".into(),
            email: Some("e@x".into()),
            name: Some("Zoë".into()),
            username: None,
            acr: Some(String::new()),
            sid: Some("sid-1".into()),
            sub: Some("sub-1".into()),
            ..IdentityFields::default()
        });
        assert_eq!(who.id(), "id-1");
        assert_eq!(who.email(), Some("e@x"));
        assert_eq!(who.name(), Some("Zoë"));
        assert_eq!(who.username(), None);
        assert_eq!(who.acr(), Some(""), "present but empty is not absent");
        assert_eq!(who.sid(), Some("sid-1"));
        assert_eq!(who.sub(), Some("sub-1"));
        who.set_username(Some("zoe"));
        who.set_email(None);
        who.set_name(Some("Zoë Ng"));
        assert_eq!(who.username(), Some("zoe"));
        assert_eq!(who.email(), None);
        assert_eq!(who.name(), Some("Zoë Ng"));
        assert_eq!(
            (who.id(), who.acr(), who.sid(), who.sub()),
            ("id-1", Some(""), Some("sid-1"), Some("sub-1"))
        );
        let bare = Identity::default();
        assert_eq!(bare.id(), "");
        assert!(
            [
                bare.email(),
                bare.name(),
                bare.username(),
                bare.acr(),
                bare.sid(),
                bare.sub()
            ]
            .iter()
            .all(Option::is_none)
        );
    }

    #[test]
    fn the_json_shape_is_the_fields_one_by_one() {
        let json = r#"{"id":"x","email":"a@b","name":null,"username":"u","groups":["g"],"provider":"p","auth_time":5,"sid":"s"}"#;
        let who: Identity = serde_json::from_str(json).unwrap();
        assert_eq!(
            (who.email(), who.username(), who.sid()),
            (Some("a@b"), Some("u"), Some("s"))
        );
        assert_eq!(who.auth_time, Some(5));
        assert_eq!(serde_json::to_string(&who).unwrap(), json);
    }

    #[test]
    fn display_prefers_email_then_username_then_id() {
        let mut who = alice();
        assert_eq!(who.display(), "alice@example.com");
        who.set_email(None);
        assert_eq!(who.display(), "alice");
        who.set_username(None);
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
        who.set_sub(Some("pairwise"));
        assert_eq!(who.subject(), "pairwise");
    }

    #[test]
    fn one_provider_name_is_shared_and_the_table_is_bounded() {
        let a = provider_name("okta-shared-test");
        assert!(Arc::ptr_eq(&a, &provider_name("okta-shared-test")));
        assert!(!Arc::ptr_eq(&a, &provider_name("other-shared-test")));
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
