//! Sessions: what a logged-in browser's cookie points at.
//!
//! A session id is 256 random bits handed to the browser as the `session_token` cookie.
//! Stores never see the id itself, only its SHA-256 ([`SessionKey`]), so a copy of a store
//! (a Redis dump, a heap snapshot) holds nothing a browser could present. Every store
//! implements [`SessionStore`]: absolute lifetime, idle timeout, delete, and "revoke every
//! session of this user" as one operation. This crate never logs session ids or tokens.
#![forbid(unsafe_code)]

pub mod cookie;
mod id;
mod memory;
mod redis_store;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use portcullis_core::Identity;
use serde::{Deserialize, Serialize};

pub use id::{SessionId, SessionKey};
pub use memory::MemoryStore;
pub use redis_store::{RedisSettings, RedisStore};

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
    pub directory_user: Option<DirectoryUser>,
    /// The user's teams: the groups of the directory, kept apart from the groups the
    /// identity provider reported so a membership change can replace them.
    #[serde(default)]
    pub teams: Vec<String>,
    /// The provider's tokens, kept only when something needs them (refresh, passing
    /// them to the upstream, logging out at the provider). Boxed: most sessions have
    /// none, and an empty box costs one word where the tokens inline would cost fourteen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<Box<SessionTokens>>,
}

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

impl DirectoryUser {
    /// The key a linked session is indexed under.
    pub fn index_key(tenant: &str, id: &str) -> String {
        format!("scim:{tenant}:{id}")
    }
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
            teams: Vec::new(),
            tokens: None,
        }
    }

    /// The key under which the session is indexed for "every session of this user": the
    /// provisioned user when there is one, else the provider and subject.
    pub fn index_key(&self) -> String {
        match &self.directory_user {
            Some(d) => DirectoryUser::index_key(&d.tenant, &d.id),
            None => self.identity.user_key(),
        }
    }
}

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

    /// Ends every session indexed under `user_key` (see [`SessionData::index_key`]), and
    /// returns how many there were.
    fn revoke_user(&self, user_key: &str)
    -> impl Future<Output = Result<usize, StoreError>> + Send;

    /// Sets the teams of every live session indexed under `user_key`; returns how many
    /// were updated. Sessions that ended meanwhile are not brought back.
    fn set_user_teams(
        &self,
        user_key: &str,
        teams: Vec<String>,
    ) -> impl Future<Output = Result<usize, StoreError>> + Send;

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
            AnyStore::Redis(s) => s.load(id).await,
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

    async fn revoke_user(&self, user_key: &str) -> Result<usize, StoreError> {
        match self {
            AnyStore::Memory(s) => s.revoke_user(user_key).await,
            AnyStore::Redis(s) => s.revoke_user(user_key).await,
        }
    }

    async fn set_user_teams(
        &self,
        user_key: &str,
        teams: Vec<String>,
    ) -> Result<usize, StoreError> {
        match self {
            AnyStore::Memory(s) => s.set_user_teams(user_key, teams).await,
            AnyStore::Redis(s) => s.set_user_teams(user_key, teams).await,
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
