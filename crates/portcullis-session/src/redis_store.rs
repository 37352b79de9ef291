//! Sessions in Redis (or a Redis Cluster), shared by every replica.
//!
//! - One round trip per request: `GETEX key PX <idle timeout>` reads the record and
//!   restarts its idle timer together. The record carries its absolute expiry, checked on
//!   read; Redis TTLs remove what is left, so nothing needs sweeping.
//! - Encrypted at rest: each record is sealed (AES-256-GCM, keyed from the session secret,
//!   bound to its Redis key), and keys are SHA-256 digests of session ids and user keys. A
//!   read of Redis shows no session id, token, email or user name.
//! - Revocation: a sorted set per user lists its sessions (scored by expiry, pruned at
//!   each login); revoking deletes exactly those sessions, on every replica at once, since
//!   every request reads Redis.
//! - Fails closed: when Redis cannot be reached every operation returns
//!   [`StoreError::Unavailable`] within the configured timeout, and the connection is
//!   re-established in the background when Redis is back. Portcullis starts while Redis is
//!   down and connects on first use.
//!
//! This module never logs keys, records or ids.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use portcullis_core::seal::Sealer;
use portcullis_core::time::{unix_now, unix_now_ms};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

use crate::{SessionData, SessionId, SessionLimits, SessionStore, StoreError};

/// How a Redis deployment is reached.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `redis://` or `rediss://` URLs: one for a single server, the seed nodes for a
    /// cluster.
    pub urls: Vec<String>,
    pub cluster: bool,
    /// Extra CA certificates (PEM) trusted for `rediss://`, instead of the system store.
    pub ca_pem: Option<Vec<u8>>,
    /// Prefix of every key, so several deployments can share a Redis.
    pub key_prefix: String,
    /// Longest wait for Redis (connect and each command) before failing closed.
    pub timeout: Duration,
}

enum Target {
    Single(Box<redis::Client>),
    Cluster(Box<ClusterClient>),
}

/// A multiplexed connection to either kind; cheap to clone.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

pub struct RedisStore {
    target: Target,
    conn: ArcSwapOption<Conn>,
    last_attempt: tokio::sync::Mutex<Option<Instant>>,
    sealer: Sealer,
    prefix: String,
    limits: SessionLimits,
    timeout: Duration,
}

/// How soon a failed connection attempt may be repeated on demand.
const RECONNECT_PAUSE: Duration = Duration::from_millis(500);

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

impl RedisStore {
    /// Prepares the store; nothing is contacted until first use. `secrets` seal records:
    /// the first writes, all read (rotation).
    pub fn new<S: AsRef<[u8]>>(
        settings: &RedisSettings,
        secrets: &[S],
        limits: SessionLimits,
    ) -> Result<Self, StoreError> {
        let certs = |ca: &Option<Vec<u8>>| redis::TlsCertificates {
            client_tls: None,
            root_cert: ca.clone(),
        };
        let target = if settings.cluster {
            let mut builder = ClusterClient::builder(settings.urls.clone())
                .connection_timeout(settings.timeout)
                .response_timeout(settings.timeout)
                .retries(1);
            if settings.ca_pem.is_some() {
                builder = builder.certs(certs(&settings.ca_pem));
            }
            Target::Cluster(Box::new(builder.build().map_err(unavailable)?))
        } else {
            let url = settings
                .urls
                .first()
                .ok_or_else(|| unavailable("no Redis URL configured"))?;
            let client = match &settings.ca_pem {
                Some(_) => redis::Client::build_with_tls(url.as_str(), certs(&settings.ca_pem)),
                None => redis::Client::open(url.as_str()),
            }
            .map_err(unavailable)?;
            Target::Single(Box::new(client))
        };
        Ok(RedisStore {
            target,
            conn: ArcSwapOption::empty(),
            last_attempt: tokio::sync::Mutex::new(None),
            sealer: Sealer::new(secrets, "portcullis session record v1"),
            prefix: settings.key_prefix.clone(),
            limits,
            timeout: settings.timeout,
        })
    }

    async fn connect(&self) -> Result<Conn, StoreError> {
        let attempt = async {
            match &self.target {
                Target::Single(client) => {
                    let config = ConnectionManagerConfig::new()
                        .set_connection_timeout(Some(self.timeout))
                        .set_response_timeout(Some(self.timeout))
                        .set_number_of_retries(2)
                        .set_max_delay(Duration::from_secs(1));
                    client
                        .get_connection_manager_with_config(config)
                        .await
                        .map(Conn::Single)
                }
                Target::Cluster(client) => client.get_async_connection().await.map(Conn::Cluster),
            }
        };
        tokio::time::timeout(self.timeout, attempt)
            .await
            .map_err(|_| unavailable("timed out connecting to Redis"))?
            .map_err(unavailable)
    }

    /// The shared connection, established on first use.
    async fn conn(&self) -> Result<Conn, StoreError> {
        if let Some(conn) = self.conn.load_full() {
            return Ok((*conn).clone());
        }
        let mut last = self.last_attempt.lock().await;
        if let Some(conn) = self.conn.load_full() {
            return Ok((*conn).clone());
        }
        if last.is_some_and(|t| t.elapsed() < RECONNECT_PAUSE) {
            return Err(unavailable("Redis could not be reached moments ago"));
        }
        *last = Some(Instant::now());
        let conn = self.connect().await?;
        self.conn.store(Some(Arc::new(conn.clone())));
        tracing::info!("connected to Redis for sessions");
        Ok(conn)
    }

    /// Runs a command with the store's timeout.
    async fn run<T: redis::FromRedisValue>(&self, cmd: &Cmd) -> Result<T, StoreError> {
        let mut conn = self.conn().await?;
        let result: RedisResult<T> = tokio::time::timeout(self.timeout, cmd.query_async(&mut conn))
            .await
            .map_err(|_| unavailable("Redis did not answer in time"))?;
        result.map_err(unavailable)
    }

    fn session_key(&self, id: &SessionId) -> String {
        format!("{}:session:{}", self.prefix, id.key().to_hex())
    }

    fn refresh_key(&self, id: &SessionId) -> String {
        format!("{}:refresh:{}", self.prefix, id.key().to_hex())
    }

    fn user_index_key(&self, user_key: &str) -> String {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, user_key.as_bytes());
        format!("{}:user:{}", self.prefix, hex(digest.as_ref()))
    }

    fn seal(&self, key: &str, data: &SessionData) -> Result<String, StoreError> {
        let json = serde_json::to_vec(data).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        Ok(self.sealer.seal(key.as_bytes(), &json))
    }

    fn open(&self, key: &str, sealed: &str) -> Option<SessionData> {
        let plain = self.sealer.open(key.as_bytes(), sealed)?;
        serde_json::from_slice(&plain).ok()
    }

    fn idle_ms(&self) -> u64 {
        u64::try_from(self.limits.idle_timeout.as_millis()).unwrap_or(u64::MAX)
    }
}

impl SessionStore for RedisStore {
    async fn create(&self, data: SessionData) -> Result<SessionId, StoreError> {
        let id = SessionId::generate();
        let key = self.session_key(&id);
        let sealed = self.seal(&key, &data)?;
        let left_ms = data
            .expires_at
            .saturating_mul(1000)
            .saturating_sub(unix_now_ms());
        let ttl_ms = self.idle_ms().min(left_ms).max(1);
        self.run::<()>(
            redis::cmd("SET")
                .arg(&key)
                .arg(sealed)
                .arg("PX")
                .arg(ttl_ms),
        )
        .await?;
        // The user's index lives on its own key (its own cluster slot): one pipeline.
        let index = self.user_index_key(&data.index_key());
        let member = id.key().to_hex();
        let mut pipe = redis::pipe();
        pipe.cmd("ZADD")
            .arg(&index)
            .arg(data.expires_at)
            .arg(&member)
            .ignore()
            .cmd("ZREMRANGEBYSCORE")
            .arg(&index)
            .arg("-inf")
            .arg(unix_now())
            .ignore()
            .cmd("EXPIRE")
            .arg(&index)
            .arg(self.limits.lifetime.as_secs().max(1))
            .ignore();
        let mut conn = self.conn().await?;
        tokio::time::timeout(self.timeout, pipe.query_async::<()>(&mut conn))
            .await
            .map_err(|_| unavailable("Redis did not answer in time"))?
            .map_err(unavailable)?;
        Ok(id)
    }

    async fn load(&self, id: &SessionId) -> Result<Option<Arc<SessionData>>, StoreError> {
        let key = self.session_key(id);
        let sealed: Option<String> = self
            .run(redis::cmd("GETEX").arg(&key).arg("PX").arg(self.idle_ms()))
            .await?;
        let Some(sealed) = sealed else {
            return Ok(None);
        };
        let Some(data) = self.open(&key, &sealed) else {
            // Sealed under a secret no longer configured, or damaged: not a session.
            tracing::warn!(
                "a session record in Redis cannot be opened with the configured secrets; treating it as absent"
            );
            return Ok(None);
        };
        if data.expires_at <= unix_now() {
            let _ = self.run::<()>(redis::cmd("DEL").arg(&key)).await;
            return Ok(None);
        }
        Ok(Some(Arc::new(data)))
    }

    async fn update(&self, id: &SessionId, data: SessionData) -> Result<bool, StoreError> {
        let key = self.session_key(id);
        let sealed = self.seal(&key, &data)?;
        // XX: only if it still exists; KEEPTTL: the idle timer is not reset by a refresh.
        let done: Option<String> = self
            .run(
                redis::cmd("SET")
                    .arg(&key)
                    .arg(sealed)
                    .arg("XX")
                    .arg("KEEPTTL"),
            )
            .await?;
        Ok(done.is_some())
    }

    async fn delete(&self, id: &SessionId) -> Result<(), StoreError> {
        self.run::<()>(redis::cmd("DEL").arg(self.session_key(id)))
            .await
    }

    async fn revoke_user(&self, user_key: &str) -> Result<usize, StoreError> {
        let index = self.user_index_key(user_key);
        let members: Vec<String> = self
            .run(redis::cmd("ZRANGE").arg(&index).arg(0).arg(-1))
            .await?;
        let mut revoked = 0;
        for member in &members {
            // Session keys live in their own cluster slots: one DEL each.
            let removed: usize = self
                .run(redis::cmd("DEL").arg(format!("{}:session:{member}", self.prefix)))
                .await?;
            revoked += removed;
        }
        if !members.is_empty() {
            // Remove exactly what was revoked; a login racing with this keeps its entry.
            self.run::<()>(redis::cmd("ZREM").arg(&index).arg(&members))
                .await?;
        }
        Ok(revoked)
    }

    async fn set_user_teams(
        &self,
        user_key: &str,
        teams: Vec<String>,
    ) -> Result<usize, StoreError> {
        let index = self.user_index_key(user_key);
        let members: Vec<String> = self
            .run(redis::cmd("ZRANGE").arg(&index).arg(0).arg(-1))
            .await?;
        let mut updated = 0;
        for member in members {
            let key = format!("{}:session:{member}", self.prefix);
            let sealed: Option<String> = self.run(redis::cmd("GET").arg(&key)).await?;
            let Some(mut data) = sealed.and_then(|s| self.open(&key, &s)) else {
                continue;
            };
            data.teams = teams.clone();
            let resealed = self.seal(&key, &data)?;
            // XX KEEPTTL: never revive a session that ended, never reset its idle timer.
            let done: Option<String> = self
                .run(
                    redis::cmd("SET")
                        .arg(&key)
                        .arg(resealed)
                        .arg("XX")
                        .arg("KEEPTTL"),
                )
                .await?;
            updated += usize::from(done.is_some());
        }
        Ok(updated)
    }

    async fn claim_refresh(&self, id: &SessionId, ttl: Duration) -> Result<bool, StoreError> {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let set: Option<String> = self
            .run(
                redis::cmd("SET")
                    .arg(self.refresh_key(id))
                    .arg(1)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl_ms),
            )
            .await?;
        Ok(set.is_some())
    }

    async fn release_refresh(&self, id: &SessionId) -> Result<(), StoreError> {
        self.run::<()>(redis::cmd("DEL").arg(self.refresh_key(id)))
            .await
    }

    async fn ready(&self) -> Result<(), StoreError> {
        let pong: String = self.run(&redis::cmd("PING")).await?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(unavailable(format!("unexpected answer to PING: {pong}")))
        }
    }
}
