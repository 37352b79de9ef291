//! The identity headers: removing every copy a client sent, and setting ours.
//!
//! The upstream trusts these headers because only Portcullis can set them. So every
//! request, authenticated or not, first loses every field whose name equals one of them
//! ignoring case and treating `_` as `-`: some servers (and CGI-style frameworks) map
//! `X_Forwarded_Email` and `X-Forwarded-Email` to the same variable.

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};
use portcullis_core::Identity;

pub(crate) const USER: HeaderName = HeaderName::from_static("x-forwarded-user");
pub(crate) const EMAIL: HeaderName = HeaderName::from_static("x-forwarded-email");
pub(crate) const PREFERRED_USERNAME: HeaderName =
    HeaderName::from_static("x-forwarded-preferred-username");
pub(crate) const GROUPS: HeaderName = HeaderName::from_static("x-forwarded-groups");
pub(crate) const PROVIDER: HeaderName = HeaderName::from_static("x-forwarded-provider");
/// The session's access token, for an upstream that asked for it.
pub(crate) const ACCESS_TOKEN: HeaderName = HeaderName::from_static("x-forwarded-access-token");
/// The signed identity assertion, on forwarded requests.
pub(crate) const JWT_ASSERTION: HeaderName = HeaderName::from_static("x-portcullis-jwt-assertion");
/// The signed identity assertion, on forward-auth answers.
pub(crate) const AUTH_REQUEST_JWT_ASSERTION: HeaderName =
    HeaderName::from_static("x-auth-request-jwt-assertion");

const AUTH_REQUEST_USER: HeaderName = HeaderName::from_static("x-auth-request-user");
const AUTH_REQUEST_EMAIL: HeaderName = HeaderName::from_static("x-auth-request-email");
const AUTH_REQUEST_PREFERRED_USERNAME: HeaderName =
    HeaderName::from_static("x-auth-request-preferred-username");
const AUTH_REQUEST_GROUPS: HeaderName = HeaderName::from_static("x-auth-request-groups");
/// Not set by Portcullis, but some forward-auth set-ups copy it: never from a client.
const AUTH_REQUEST_ACCESS_TOKEN: HeaderName =
    HeaderName::from_static("x-auth-request-access-token");

/// The names under which an identity is handed on.
pub(crate) struct IdentityHeaders {
    pub user: HeaderName,
    pub email: HeaderName,
    pub preferred_username: HeaderName,
    pub groups: HeaderName,
    pub provider: Option<HeaderName>,
    /// Send every header, empty when the identity lacks the field. A proxy that copies
    /// the answer's headers onto the request (Envoy's `allowed_upstream_headers`) only
    /// replaces a client's forged copy with one the answer carries.
    pub always: bool,
}

/// On requests forwarded to the upstream.
pub(crate) const FORWARDED: IdentityHeaders = IdentityHeaders {
    user: USER,
    email: EMAIL,
    preferred_username: PREFERRED_USERNAME,
    groups: GROUPS,
    provider: Some(PROVIDER),
    always: false,
};

/// On the answers of the forward-auth endpoint, for the proxy in front to copy.
pub(crate) const AUTH_REQUEST: IdentityHeaders = IdentityHeaders {
    user: AUTH_REQUEST_USER,
    email: AUTH_REQUEST_EMAIL,
    preferred_username: AUTH_REQUEST_PREFERRED_USERNAME,
    groups: AUTH_REQUEST_GROUPS,
    provider: None,
    always: true,
};

/// Every name Portcullis owns: the same constants as above, so a header added there
/// cannot be forgotten here (a test checks every set header is stripped). The
/// `x-auth-request-*` names are the forward-auth answers; a client must not be able to
/// pre-set those either.
static OWNED: [HeaderName; 13] = [
    USER,
    EMAIL,
    PREFERRED_USERNAME,
    GROUPS,
    PROVIDER,
    ACCESS_TOKEN,
    JWT_ASSERTION,
    AUTH_REQUEST_JWT_ASSERTION,
    AUTH_REQUEST_USER,
    AUTH_REQUEST_EMAIL,
    AUTH_REQUEST_PREFERRED_USERNAME,
    AUTH_REQUEST_GROUPS,
    AUTH_REQUEST_ACCESS_TOKEN,
];

pub(crate) fn is_owned(name: &str) -> bool {
    // Header names arrive lowercased; only `_` needs folding.
    let bytes = name.as_bytes();
    OWNED.iter().any(|owned| {
        let owned = owned.as_str().as_bytes();
        owned.len() == bytes.len()
            && owned
                .iter()
                .zip(bytes)
                .all(|(&o, &b)| o == b || (o == b'-' && b == b'_'))
    })
}

/// Removes every client-sent copy of an identity header.
pub(crate) fn strip_identity_headers(headers: &mut HeaderMap) {
    // Cheap scan first: only names starting with `x-forwarded` / `x-auth-request` (in
    // either spelling) can match, and most requests have none.
    let suspects: Vec<HeaderName> = headers
        .keys()
        .filter(|name| {
            let n = name.as_str().as_bytes();
            n.len() > 8 && n[0] == b'x' && (n[1] == b'-' || n[1] == b'_') && is_owned(name.as_str())
        })
        .cloned()
        .collect();
    for name in suspects {
        headers.remove(name);
    }
}

/// Bytes that may go into a header value: visible ASCII, space, tab and UTF-8 (obs-text);
/// never CR, LF or other controls (RFC 9110 §5.5). The rule of `HeaderValue::from_bytes`.
pub(crate) fn is_field_value(text: &[u8]) -> bool {
    // Every byte looked at, without stopping at the first bad one: the loop becomes a few
    // vector instructions, and bad values are rare.
    text.iter()
        .fold(true, |good, &b| good & is_field_value_byte(b))
}

/// Whether `b` may be in a header value (the rule of [`is_field_value`], which is also
/// httparse's for the values it reads).
pub(crate) const fn is_field_value_byte(b: u8) -> bool {
    (b >= 0x20 || b == b'\t') && b != 0x7f
}

fn value(text: &str) -> Option<HeaderValue> {
    HeaderValue::from_bytes(text.as_bytes()).ok()
}

/// Where identity fields are set: a message's own header map (a field of the name
/// replaced), or the fields added to a request on its way upstream, whose names the
/// request no longer carries. Text that is not a valid field value is not set (`false`).
pub(crate) trait SetField<'a> {
    fn set(&mut self, name: HeaderName, value: HeaderValue);

    /// Sets `text` as the field's value, if it is a valid one.
    fn set_text(&mut self, name: HeaderName, text: &'a str) -> bool {
        set_valid(self, name, text)
    }

    /// [`SetField::set_text`] for text the caller made.
    fn set_owned(&mut self, name: HeaderName, text: String) -> bool {
        set_valid(self, name, &text)
    }
}

fn set_valid<'a>(field: &mut (impl SetField<'a> + ?Sized), name: HeaderName, text: &str) -> bool {
    match value(text) {
        Some(v) => {
            field.set(name, v);
            true
        }
        None => false,
    }
}

impl SetField<'_> for HeaderMap {
    fn set(&mut self, name: HeaderName, value: HeaderValue) {
        self.insert(name, value);
    }
}

/// Sets the identity headers for `who` under `names`; `groups` are the provider's groups
/// and the directory's teams. A field whose value cannot be represented (a claim with a
/// control character) is left out, never passed through mangled.
pub(crate) fn set_identity_headers<'a, 'g>(
    headers: &mut impl SetField<'a>,
    names: &IdentityHeaders,
    who: &'a Identity,
    groups: impl Iterator<Item = &'g str>,
) {
    let always = names.always;
    let mut set = |name: &HeaderName, text: Option<&'a str>| {
        let set = text.is_some_and(|t| !t.is_empty() && headers.set_text(name.clone(), t));
        if !set && always {
            headers.set(name.clone(), HeaderValue::from_static(""));
        }
    };
    set(&names.user, Some(who.id()));
    set(&names.email, who.email());
    set(&names.preferred_username, who.username());
    if let Some(provider) = &names.provider {
        set(provider, Some(&who.provider));
    }
    let groups = join_groups(groups);
    let set = !groups.is_empty() && headers.set_owned(names.groups.clone(), groups);
    if !set && always {
        headers.set(names.groups.clone(), HeaderValue::from_static(""));
    }
}

/// The groups as one comma-separated value. A group whose name holds a comma would read
/// as two groups to the app (`eng,admins` as `eng` and `admins`), so `,` inside a name
/// is written `%2C`, and `%` is written `%25` so the encoding cannot be forged; every
/// other character is passed as it is.
pub(crate) fn join_groups<'g>(groups: impl Iterator<Item = &'g str>) -> String {
    let mut joined = String::new();
    for (i, group) in groups.enumerate() {
        if i > 0 {
            joined.push(',');
        }
        if group.contains([',', '%']) {
            for c in group.chars() {
                match c {
                    ',' => joined.push_str("%2C"),
                    '%' => joined.push_str("%25"),
                    c => joined.push(c),
                }
            }
        } else {
            joined.push_str(group);
        }
    }
    joined
}

/// The session's tokens for an upstream that asked for them: the access token as
/// `X-Forwarded-Access-Token`, the ID token as `Authorization: Bearer` (replacing what the
/// client sent; Portcullis's own session cookie never travels on).
pub(crate) fn set_token_headers(
    headers: &mut HeaderMap,
    access_token: Option<&str>,
    id_token: Option<&str>,
) {
    if let Some(v) = access_token.and_then(value) {
        headers.insert(ACCESS_TOKEN, v);
    }
    if let Some(v) = id_token.and_then(|t| value(&format!("Bearer {t}"))) {
        headers.insert(http::header::AUTHORIZATION, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who() -> Identity {
        Identity::from(portcullis_core::IdentityFields {
            id: "sub-1".into(),
            email: Some("alice@example.com".into()),
            name: Some("Alice".into()),
            username: Some("alice".into()),
            groups: vec!["admins".into(), "devs".into()],
            provider: "oidc".into(),
            ..portcullis_core::IdentityFields::default()
        })
    }

    #[test]
    fn every_spelling_of_an_identity_header_is_removed() {
        let mut h = HeaderMap::new();
        for name in [
            "x-forwarded-email",
            "X-Forwarded-Email",
            "x_forwarded_email",
            "X_FORWARDED_USER",
            "x-forwarded_groups",
            "X-Auth-Request-User",
            "x_auth_request_email",
            "x-forwarded-access-token",
            "x-forwarded-provider",
            "x-forwarded-preferred-username",
        ] {
            h.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_static("spoof"),
            );
        }
        h.insert("x-forwarded-for", HeaderValue::from_static("1.2.3.4"));
        h.insert("x-forwarded-emails", HeaderValue::from_static("not ours"));
        strip_identity_headers(&mut h);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, vec!["x-forwarded-emails", "x-forwarded-for"]);
    }

    #[test]
    fn every_header_portcullis_sets_is_stripped_from_clients_in_every_spelling() {
        // Everything the two sets of names and the token helper can write.
        let mut set = HeaderMap::new();
        let mut full = who();
        full.groups = vec!["g".into()];
        set_identity_headers(
            &mut set,
            &FORWARDED,
            &full,
            full.groups.iter().map(String::as_str),
        );
        set_identity_headers(
            &mut set,
            &AUTH_REQUEST,
            &full,
            full.groups.iter().map(String::as_str),
        );
        set_token_headers(&mut set, Some("at"), None);
        set.remove(http::header::AUTHORIZATION);
        set.insert(JWT_ASSERTION, HeaderValue::from_static("a"));
        set.insert(AUTH_REQUEST_JWT_ASSERTION, HeaderValue::from_static("a"));
        assert_eq!(set.len(), 12, "{set:?}");
        for name in set.keys() {
            let lower = name.as_str().to_string();
            let underscored = lower.replace('-', "_");
            let upper = underscored.to_ascii_uppercase();
            for spelling in [lower.as_str(), underscored.as_str(), upper.as_str()] {
                let mut client = HeaderMap::new();
                client.insert(
                    HeaderName::from_bytes(spelling.as_bytes()).unwrap(),
                    HeaderValue::from_static("forged"),
                );
                strip_identity_headers(&mut client);
                assert!(client.is_empty(), "{spelling} survived");
            }
        }
    }

    #[test]
    fn identity_headers_are_set_from_the_identity() {
        let mut h = HeaderMap::new();
        set_identity_headers(
            &mut h,
            &FORWARDED,
            &who(),
            who().groups.iter().map(String::as_str),
        );
        assert_eq!(h[USER], "sub-1");
        assert_eq!(h[EMAIL], "alice@example.com");
        assert_eq!(h[PREFERRED_USERNAME], "alice");
        assert_eq!(h[GROUPS], "admins,devs");
        assert_eq!(h[PROVIDER], "oidc");
    }

    #[test]
    fn a_claim_with_a_newline_is_left_out_not_injected() {
        let mut evil = who();
        evil.set_email(Some("a@example.com\r\nX-Forwarded-User: admin"));
        let mut h = HeaderMap::new();
        set_identity_headers(&mut h, &FORWARDED, &evil, std::iter::empty());
        assert!(h.get(EMAIL).is_none());
        assert_eq!(h[USER], "sub-1");
    }

    #[test]
    fn field_values_are_checked_as_header_values_are() {
        for b in 0..=255u8 {
            for text in [vec![b], vec![b'a', b, b'z']] {
                assert_eq!(
                    is_field_value(&text),
                    HeaderValue::from_bytes(&text).is_ok(),
                    "byte {b:#04x}"
                );
            }
        }
    }

    #[test]
    fn identity_fields_added_to_a_request_are_the_ones_a_header_map_gets() {
        let mut evil = who();
        evil.set_email(Some("a@example.com\r\nX-Forwarded-User: admin"));
        evil.set_username(Some("zoë\u{7f}"));
        let mut bare = who();
        bare.set_email(None);
        bare.set_username(Some("zoë"));
        let groups = ["eng,admins", "bad\ngroup"];
        for identity in [who(), evil, bare] {
            for names in [&FORWARDED, &AUTH_REQUEST] {
                for groups in [&groups[..1], &groups[..], &[]] {
                    let mut map = HeaderMap::new();
                    set_identity_headers(&mut map, names, &identity, groups.iter().copied());
                    let mut added = crate::upstream::Added::default();
                    set_identity_headers(&mut added, names, &identity, groups.iter().copied());
                    let mut applied = HeaderMap::new();
                    added.apply_to(&mut applied);
                    assert_eq!(applied, map, "{identity:?} {groups:?}");
                }
            }
        }
    }

    #[test]
    fn a_comma_in_a_group_name_cannot_make_two_groups() {
        let groups = ["eng,admins", "100%", "plain"];
        let joined = join_groups(groups.iter().copied());
        assert_eq!(joined, "eng%2Cadmins,100%25,plain");
        assert_eq!(joined.split(',').count(), 3);
        assert!(!joined.split(',').any(|g| g == "admins"));
    }

    #[test]
    fn unicode_names_pass_as_utf8() {
        let mut who = who();
        who.set_username(Some("zoë"));
        let mut h = HeaderMap::new();
        set_identity_headers(&mut h, &FORWARDED, &who, std::iter::empty());
        assert_eq!(h[PREFERRED_USERNAME].as_bytes(), "zoë".as_bytes());
    }

    #[test]
    fn forward_auth_answers_every_header_even_when_empty() {
        let mut bare = who();
        bare.set_email(None);
        bare.set_username(Some("evil\nname"));
        let mut h = HeaderMap::new();
        set_identity_headers(&mut h, &AUTH_REQUEST, &bare, std::iter::empty());
        assert_eq!(h["x-auth-request-user"], "sub-1");
        assert_eq!(h["x-auth-request-email"], "");
        assert_eq!(h["x-auth-request-preferred-username"], "");
        assert_eq!(h["x-auth-request-groups"], "");
        // The upstream's headers are left out instead.
        let mut h = HeaderMap::new();
        set_identity_headers(&mut h, &FORWARDED, &bare, std::iter::empty());
        assert!(h.get(EMAIL).is_none() && h.get(GROUPS).is_none());
    }
}
