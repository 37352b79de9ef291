//! The names a session can be found by: "every session of this user", "the sessions of
//! that provider session", "the sessions of alice@example.com".
//!
//! Every session is filed under several index keys at once (its account, its provider
//! session, its directory user, its email, user name and subject), so each way of
//! ending sessions (logout everywhere, back-channel logout, SCIM deprovisioning, a
//! shared signal, the admin API) finds all of them, whichever way the session was
//! created. Keys are length-prefixed, so no provider name or claim value can make one
//! kind of key read as another.

use portcullis_core::Identity;

use crate::SessionData;

/// One way of naming a set of sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Index<'a> {
    /// A user at a provider: the provider's configured name and the user's id (or, when
    /// it differs, the provider's `sub`).
    Account { provider: &'a str, id: &'a str },
    /// A provisioned user: the SCIM endpoint and the user's id there.
    Directory { tenant: &'a str, id: &'a str },
    /// A session at the provider (the ID token's `sid`).
    ProviderSession { provider: &'a str, sid: &'a str },
    /// An email address, at any provider (compared without case).
    Email(&'a str),
    /// A user name, at any provider (compared without case).
    Username(&'a str),
    /// A subject id, at any provider.
    Subject(&'a str),
}

impl Index<'_> {
    /// The store key of this index.
    pub fn key(&self) -> String {
        fn two(kind: &str, a: &str, b: &str) -> String {
            format!("{kind}:{}:{a}:{b}", a.len())
        }
        match self {
            Index::Account { provider, id } => two("account", provider, id),
            Index::Directory { tenant, id } => two("directory", tenant, id),
            Index::ProviderSession { provider, sid } => two("sid", provider, sid),
            Index::Email(email) => format!("email:{}", email.to_lowercase()),
            Index::Username(name) => format!("username:{}", name.to_lowercase()),
            Index::Subject(id) => format!("subject:{id}"),
        }
    }
}

/// The account indexes of an identity: its id and, when kept apart, its `sub`.
pub fn account_keys(identity: &Identity) -> Vec<String> {
    let mut keys = vec![
        Index::Account {
            provider: &identity.provider,
            id: identity.id(),
        }
        .key(),
    ];
    if let Some(sub) = identity.sub() {
        keys.push(
            Index::Account {
                provider: &identity.provider,
                id: sub,
            }
            .key(),
        );
    }
    keys
}

/// The keys a user is known by for marks (a disabled account, revoked tokens): its
/// accounts, email, user name and subject, and its directory user when there is one.
pub fn identity_keys(identity: &Identity, directory: Option<(&str, &str)>) -> Vec<String> {
    let mut keys = account_keys(identity);
    if let Some(email) = identity.email() {
        keys.push(Index::Email(email).key());
    }
    if let Some(name) = identity.username() {
        keys.push(Index::Username(name).key());
    }
    keys.push(Index::Subject(identity.id()).key());
    if let Some((tenant, id)) = directory {
        keys.push(Index::Directory { tenant, id }.key());
    }
    keys
}

impl SessionData {
    /// Every index key this session is filed under.
    pub fn index_keys(&self) -> Vec<String> {
        let directory = self
            .directory_user
            .as_ref()
            .map(|d| (d.tenant.as_str(), d.id.as_str()));
        let mut keys = identity_keys(&self.identity, directory);
        keys.extend(self.provider_session_key());
        keys
    }

    /// The index keys that revocation uses (accounts, directory user, provider
    /// session); the rest (email, user name, subject) serve lookups by an administrator
    /// or a shared signal, which a store may answer by scanning instead.
    pub fn revocation_keys(&self) -> Vec<String> {
        let mut keys = account_keys(&self.identity);
        if let Some(d) = &self.directory_user {
            keys.push(
                Index::Directory {
                    tenant: &d.tenant,
                    id: &d.id,
                }
                .key(),
            );
        }
        keys.extend(self.provider_session_key());
        keys
    }

    fn provider_session_key(&self) -> Option<String> {
        let sid = self.identity.sid()?;
        Some(
            Index::ProviderSession {
                provider: &self.identity.provider,
                sid,
            }
            .key(),
        )
    }
}

/// Whether `key` is one of [`SessionData::revocation_keys`]'s kinds.
pub fn is_revocation_key(key: &str) -> bool {
    ["account:", "directory:", "sid:"]
        .iter()
        .any(|kind| key.starts_with(kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_value_makes_one_kind_of_key_read_as_another() {
        let a = Index::Account {
            provider: "p:q",
            id: "r",
        };
        let b = Index::Account {
            provider: "p",
            id: "q:r",
        };
        assert_ne!(a.key(), b.key());
        assert_ne!(
            Index::Account {
                provider: "x",
                id: "y"
            }
            .key(),
            Index::Directory {
                tenant: "x",
                id: "y"
            }
            .key()
        );
        assert_eq!(
            Index::Email("Alice@Example.COM").key(),
            Index::Email("alice@example.com").key()
        );
    }

    #[test]
    fn a_session_is_filed_under_every_name_of_its_user() {
        let identity = Identity::from(portcullis_core::IdentityFields {
            id: "oid-1".into(),
            sub: Some("pairwise".into()),
            sid: Some("op-session".into()),
            email: Some("Ann@example.com".into()),
            username: Some("ann".into()),
            provider: "entra".into(),
            ..portcullis_core::IdentityFields::default()
        });
        let mut data = SessionData::new(identity, std::time::Duration::from_secs(60));
        data.directory_user = Some(Box::new(crate::DirectoryUser {
            tenant: "okta".into(),
            id: "u-9".into(),
        }));
        let keys = data.index_keys();
        for wanted in [
            Index::Account {
                provider: "entra",
                id: "oid-1",
            },
            Index::Account {
                provider: "entra",
                id: "pairwise",
            },
            Index::ProviderSession {
                provider: "entra",
                sid: "op-session",
            },
            Index::Directory {
                tenant: "okta",
                id: "u-9",
            },
            Index::Email("ann@example.com"),
            Index::Username("ANN"),
            Index::Subject("oid-1"),
        ] {
            assert!(keys.contains(&wanted.key()), "{wanted:?} missing: {keys:?}");
        }
    }
}
