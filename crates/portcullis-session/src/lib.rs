//! Sessions: what a logged-in browser's cookie points at.
//!
//! A session id is 256 random bits handed to the browser as the `session_token` cookie.
//! Stores never see the id itself, only its SHA-256 ([`SessionKey`]), so a copy of a store
//! (a Redis dump, a heap snapshot) holds nothing a browser could present. Every store
//! implements [`SessionStore`]: absolute lifetime, idle timeout, delete, "end every
//! session filed under this [`Index`]" as one operation, the marks that outlive sessions
//! (a disabled account, tokens revoked before a time) and a replay cache. This crate
//! never logs session ids or tokens.
#![forbid(unsafe_code)]

pub mod cookie;
mod id;
mod index;
mod memory;
mod redis_store;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use portcullis_core::Identity;
use serde::{Deserialize, Serialize};

pub use id::{SessionId, SessionKey};
pub use index::{Index, account_keys, identity_keys, is_revocation_key};
pub use memory::MemoryStore;
pub use redis_store::{RedisSettings, RedisStore, SentinelSettings};

/// What a session remembers about its user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionData {
    pub identity: Identity,
    /// Unix seconds.
    pub created_at: u64,
    /// Unix seconds; the session ends then whatever its use.
    pub expires_at: u64,
    /// The provisioned (SCIM) user this session belongs to, if any.
    #[serde(default)]
    pub directory_user: Option<Box<DirectoryUser>>,
    /// The user's teams: the groups of the directory, kept apart from the groups the
    /// identity provider reported so a membership change can replace them.
    #[serde(default)]
    pub teams: Box<[String]>,
    /// The provider's tokens, kept only when something needs them (refresh, passing
    /// them to the upstream, logging out at the provider). Boxed: most sessions have
    /// none, and an empty box costs one word where the tokens inline would cost fourteen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<Box<SessionTokens>>,
    /// Where the login came from (the client address), for an administrator's list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<std::net::IpAddr>,
    /// The browser's `User-Agent` at login (at most [`USER_AGENT_MAX`] bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<Box<str>>,
}

/// The longest `User-Agent` a session keeps.
pub const USER_AGENT_MAX: usize = 256;

/// Tokens from the provider. `Debug` never prints them.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionTokens {
    pub access_token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
    /// When the access token expires (unix seconds), if the provider said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
}

impl std::fmt::Debug for SessionTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionTokens")
            .field("has_refresh_token", &self.refresh_token.is_some())
            .field("has_id_token", &self.id_token.is_some())
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl SessionTokens {
    /// Whether the access token should be refreshed now (`before` its expiry), which
    /// needs a refresh token.
    pub fn refresh_due(&self, before: Duration, now: u64) -> bool {
        self.refresh_token.is_some()
            && self
                .expires_at
                .is_some_and(|exp| exp.saturating_sub(before.as_secs()) <= now)
    }
}

/// A provisioned user: the SCIM endpoint (tenant) and the user's id there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryUser {
    pub tenant: String,
    pub id: String,
}

impl SessionData {
    /// A session for `identity` starting now and lasting `lifetime`.
    pub fn new(identity: Identity, lifetime: Duration) -> Self {
        let now = portcullis_core::time::unix_now();
        SessionData {
            identity,
            created_at: now,
            expires_at: now.saturating_add(lifetime.as_secs()),
            directory_user: None,
            teams: Box::default(),
            tokens: None,
            client: None,
            user_agent: None,
        }
    }

    /// Keeps the browser's user agent, cut to [`USER_AGENT_MAX`] bytes.
    pub fn set_user_agent(&mut self, agent: &str) {
        let mut end = agent.len().min(USER_AGENT_MAX);
        while !agent.is_char_boundary(end) {
            end -= 1;
        }
        let kept = &agent[..end];
        self.user_agent = (!kept.is_empty()).then(|| kept.into());
    }
}

/// A change made to every session filed under an index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Amend {
    /// The directory's teams of the user changed.
    Teams(Vec<String>),
    /// How the user authenticated no longer holds (a shared signal said the assurance
    /// level changed): forget when and how, so a route that asks for a fresh or strong
    /// login steps up.
    ForgetAssurance,
}

impl Amend {
    fn apply(&self, data: &mut SessionData) {
        match self {
            Amend::Teams(teams) => data.teams = teams.as_slice().into(),
            Amend::ForgetAssurance => {
                data.identity.auth_time = None;
                data.identity.set_acr(None);
            }
        }
    }
}

/// A live session as an administrator sees it: never its id or tokens.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    /// A handle that names the session to [`SessionStore::revoke_handle`]: the hex
    /// SHA-256 of its id, which cannot be presented as a cookie.
    pub handle: String,
    /// Unix seconds of the last use (to the second where the store knows it).
    pub last_seen: u64,
    pub data: Arc<SessionData>,
}

/// What is marked against a user, beyond their sessions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Marks {
    /// The identity provider disabled the account: no login, no bearer token, until it
    /// is enabled again.
    pub disabled: bool,
    /// Credentials issued before this time (unix seconds) are refused: tokens that
    /// outlive the sessions that were revoked.
    pub revoked_at: Option<u64>,
}

/// How long a "revoked before" mark is kept: longer than any session or access token
/// it could concern.
pub const REVOKED_MARK_TTL: Duration = Duration::from_secs(2 * 86_400);

/// How long sessions live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// Absolute lifetime, from login.
    pub lifetime: Duration,
    /// A session unused for this long ends.
    pub idle_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backing service cannot be reached; callers fail closed.
    #[error("session store unavailable: {0}")]
    Unavailable(String),
    /// A stored record could not be read back.
    #[error("session record unreadable: {0}")]
    Corrupt(String),
}

/// A place sessions live. Implementations must make `load` reflect a `delete` or
/// `revoke_user` made through any handle on the same backing store at once.
pub trait SessionStore: Send + Sync + 'static {
    /// Stores a new session and returns the id to hand to the browser.
    fn create(
        &self,
        data: SessionData,
    ) -> impl Future<Output = Result<SessionId, StoreError>> + Send;

    /// The live session for `id`, if any, restarting its idle timer. Expired, idle,
    /// deleted and revoked sessions are `None`.
    fn load(
        &self,
        id: &SessionId,
    ) -> impl Future<Output = Result<Option<Arc<SessionData>>, StoreError>> + Send;

    /// Replaces the data of a live session (after a token refresh), keeping its idle
    /// timer and expiry. Returns `false`, and stores nothing, if the session no longer
    /// exists: an update never brings back a deleted or revoked session.
    fn update(
        &self,
        id: &SessionId,
        data: SessionData,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Ends one session. Deleting an unknown session is not an error.
    fn delete(&self, id: &SessionId) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Ends every session filed under `index` (an [`Index::key`]), and returns how many
    /// there were.
    fn revoke_indexed(&self, index: &str)
    -> impl Future<Output = Result<usize, StoreError>> + Send;

    /// Changes every live session filed under `index`; returns how many were changed.
    /// Sessions that ended meanwhile are not brought back, and idle timers keep running.
    fn amend_indexed(
        &self,
        index: &str,
        amend: Amend,
    ) -> impl Future<Output = Result<usize, StoreError>> + Send;

    /// The live sessions filed under `index`.
    fn list_indexed(
        &self,
        index: &str,
    ) -> impl Future<Output = Result<Vec<SessionInfo>, StoreError>> + Send;

    /// Ends the session with this [`SessionInfo::handle`]; whether there was one.
    fn revoke_handle(&self, handle: &str) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Records `id` in `scope` for `ttl`: `true` the first time, `false` if it was
    /// already recorded, against every handle on the same backing store (a replay cache
    /// for logout tokens and security events, shared by the replicas).
    fn remember_once(
        &self,
        scope: &str,
        id: &str,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Marks the user known by `key` disabled, or lifts the mark.
    fn set_disabled(
        &self,
        key: &str,
        disabled: bool,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Marks credentials of the user known by `key` issued before `at` as revoked, for
    /// [`REVOKED_MARK_TTL`].
    fn set_revoked_at(
        &self,
        key: &str,
        at: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// What is marked against any of `keys` (one round trip).
    fn marks(&self, keys: &[String]) -> impl Future<Output = Result<Marks, StoreError>> + Send;

    /// Claims the right to refresh the tokens of session `id`, for at most `ttl`, against
    /// every handle on the same backing store (every replica, with Redis). `false`:
    /// someone else is refreshing it now. Released by [`SessionStore::release_refresh`].
    fn claim_refresh(
        &self,
        id: &SessionId,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Gives up a claim made by [`SessionStore::claim_refresh`].
    fn release_refresh(
        &self,
        id: &SessionId,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Whether the store can serve requests now (for `/readyz`).
    fn ready(&self) -> impl Future<Output = Result<(), StoreError>> + Send;
}

#[cfg(test)]
mod conformance;

/// The replay cache's key for `id` in `scope`.
fn replay_digest(scope: &str, id: &str) -> [u8; 32] {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(scope.as_bytes());
    ctx.update(&[0]);
    ctx.update(id.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// The store chosen by configuration. Dispatching through an enum keeps the hot path
/// free of boxed futures.
#[derive(Clone)]
pub enum AnyStore {
    Memory(Arc<MemoryStore>),
    Redis(Arc<RedisStore>),
}

impl SessionStore for AnyStore {
    async fn create(&self, data: SessionData) -> Result<SessionId, StoreError> {
        match self {
            AnyStore::Memory(s) => s.create(data).await,
            AnyStore::Redis(s) => s.create(data).await,
        }
    }

    async fn load(&self, id: &SessionId) -> Result<Option<Arc<SessionData>>, StoreError> {
        match self {
            AnyStore::Memory(s) => s.load(id).await,
            // Boxed: a load runs on every request, and Redis's future (a network round
            // trip, where one allocation is nothing) is 25 times the memory store's; in
            // place it would set the size of every request's future, memory store or not.
            AnyStore::Redis(s) => Box::pin(s.load(id)).await,
        }
    }

    async fn update(&self, id: &SessionId, data: SessionData) -> Result<bool, StoreError> {
        match self {
            AnyStore::Memory(s) => s.update(id, data).await,
            AnyStore::Redis(s) => s.update(id, data).await,
        }
    }

    async fn delete(&self, id: &SessionId) -> Result<(), StoreError> {
        match self {
            AnyStore::Memory(s) => s.delete(id).await,
            AnyStore::Redis(s) => s.delete(id).await,
        }
    }

    async fn revoke_indexed(&self, index: &str) -> Result<usize, StoreError> {
        match self {
            AnyStore::Memory(s) => s.revoke_indexed(index).await,
            AnyStore::Redis(s) => s.revoke_indexed(index).await,
        }
    }

    async fn amend_indexed(&self, index: &str, amend: Amend) -> Result<usize, StoreError> {
        match self {
            AnyStore::Memory(s) => s.amend_indexed(index, amend).await,
            AnyStore::Redis(s) => s.amend_indexed(index, amend).await,
        }
    }

    async fn list_indexed(&self, index: &str) -> Result<Vec<SessionInfo>, StoreError> {
        match self {
            AnyStore::Memory(s) => s.list_indexed(index).await,
            AnyStore::Redis(s) => s.list_indexed(index).await,
        }
    }

    async fn revoke_handle(&self, handle: &str) -> Result<bool, StoreError> {
        match self {
            AnyStore::Memory(s) => s.revoke_handle(handle).await,
            AnyStore::Redis(s) => s.revoke_handle(handle).await,
        }
    }

    async fn remember_once(
        &self,
        scope: &str,
        id: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        match self {
            AnyStore::Memory(s) => s.remember_once(scope, id, ttl).await,
            AnyStore::Redis(s) => s.remember_once(scope, id, ttl).await,
        }
    }

    async fn set_disabled(&self, key: &str, disabled: bool) -> Result<(), StoreError> {
        match self {
            AnyStore::Memory(s) => s.set_disabled(key, disabled).await,
            AnyStore::Redis(s) => s.set_disabled(key, disabled).await,
        }
    }

    async fn set_revoked_at(&self, key: &str, at: u64) -> Result<(), StoreError> {
        match self {
            AnyStore::Memory(s) => s.set_revoked_at(key, at).await,
            AnyStore::Redis(s) => s.set_revoked_at(key, at).await,
        }
    }

    async fn marks(&self, keys: &[String]) -> Result<Marks, StoreError> {
        match self {
            AnyStore::Memory(s) => s.marks(keys).await,
            AnyStore::Redis(s) => s.marks(keys).await,
        }
    }

    async fn claim_refresh(&self, id: &SessionId, ttl: Duration) -> Result<bool, StoreError> {
        match self {
            AnyStore::Memory(s) => s.claim_refresh(id, ttl).await,
            AnyStore::Redis(s) => s.claim_refresh(id, ttl).await,
        }
    }

    async fn release_refresh(&self, id: &SessionId) -> Result<(), StoreError> {
        match self {
            AnyStore::Memory(s) => s.release_refresh(id).await,
            AnyStore::Redis(s) => s.release_refresh(id).await,
        }
    }

    async fn ready(&self) -> Result<(), StoreError> {
        match self {
            AnyStore::Memory(s) => s.ready().await,
            AnyStore::Redis(s) => s.ready().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sessions in Redis outlive an upgrade: what an older release wrote (text
    /// fields as strings, the client address as text) reads back, and is written the
    /// same way again.
    #[test]
    fn stored_sessions_keep_their_json_shape() {
        let json = r#"{"identity":{"id":"u-1","email":"a@example.com","name":"A","username":"a","groups":["eng"],"provider":"okta","acr":"mfa","sid":"s-1"},"created_at":1,"expires_at":2,"directory_user":null,"teams":["t"],"client":"2001:db8::7","user_agent":"Firefox"}"#;
        let data: SessionData = serde_json::from_str(json).expect("an older session reads");
        assert_eq!(data.identity.id(), "u-1");
        assert_eq!(data.identity.sid(), Some("s-1"));
        assert_eq!(data.client, Some("2001:db8::7".parse().unwrap()));
        assert_eq!(serde_json::to_string(&data).unwrap(), json);
        let bad = json.replace("2001:db8::7", "not an address");
        assert!(serde_json::from_str::<SessionData>(&bad).is_err());
    }
}
