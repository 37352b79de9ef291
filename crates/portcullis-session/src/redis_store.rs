//! Sessions in Redis (or a Redis Cluster), shared by every replica.
//!
//! - One round trip per request: `GETEX key PX <idle timeout>` reads the record and
//!   restarts its idle timer together. The record carries its absolute expiry, checked on
//!   read; Redis TTLs remove what is left, so nothing needs sweeping.
//! - Encrypted at rest: each record is sealed (AES-256-GCM, keyed from the session secret,
//!   bound to its Redis key), and keys are SHA-256 digests of session ids and user keys. A
//!   read of Redis shows no session id, token, email or user name.
//! - Revocation: a sorted set per index key (see [`crate::Index`]: account, provider
//!   session, directory user, email, user name, subject) lists its sessions, scored by
//!   expiry and pruned at each login; revoking deletes exactly those sessions, on every
//!   replica at once, since every request reads Redis.
//! - Marks (a disabled account, credentials revoked before a time) live under one hash
//!   tag, so checking every name of a user is one `MGET`, in a cluster too; the replay
//!   cache is `SET NX` with the token's lifetime.
//! - Redis Sentinel: the sentinels name the master at each connection; a failed command
//!   drops the connection, so the next asks again and follows a failover.
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
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{Cmd, Pipeline, RedisConnectionInfo, RedisFuture, RedisResult, Value};

use crate::{
    Amend, Marks, REVOKED_MARK_TTL, SessionData, SessionId, SessionInfo, SessionKey, SessionLimits,
    SessionStore, StoreError,
};

/// How a Redis deployment is reached.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `redis://` or `rediss://` URLs: one for a single server, the seed nodes for a
    /// cluster, the sentinels with `sentinel`.
    pub urls: Vec<String>,
    pub cluster: bool,
    /// Redis Sentinel: the master's name, and how to reach the data nodes it names.
    pub sentinel: Option<SentinelSettings>,
    /// Extra CA certificates (PEM) trusted for `rediss://`, instead of the system store.
    pub ca_pem: Option<Vec<u8>>,
    /// Prefix of every key, so several deployments can share a Redis.
    pub key_prefix: String,
    /// Longest wait for Redis (connect and each command) before failing closed.
    pub timeout: Duration,
}

/// The master a set of sentinels watches, and the data nodes' credentials.
#[derive(Clone)]
pub struct SentinelSettings {
    pub master_name: String,
    /// The data nodes' password, if they need one (the sentinels' own credentials are
    /// in their URLs).
    pub password: Option<String>,
    pub db: i64,
    /// Whether the data nodes speak TLS (as the sentinels do, with `rediss://`).
    pub tls: bool,
}

impl std::fmt::Debug for SentinelSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentinelSettings")
            .field("master_name", &self.master_name)
            .field("has_password", &self.password.is_some())
            .field("db", &self.db)
            .field("tls", &self.tls)
            .finish()
    }
}

enum Target {
    Single(Box<redis::Client>),
    Cluster(Box<ClusterClient>),
    /// Asked for the current master at each (re)connection.
    Sentinel(Box<tokio::sync::Mutex<SentinelClient>>),
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

fn digest_hex(text: &str) -> String {
    hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes()).as_ref())
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
        let target = if let Some(sentinel) = &settings.sentinel {
            let mut node = RedisConnectionInfo::default().set_db(sentinel.db);
            if let Some(password) = &sentinel.password {
                node = node.set_password(password);
            }
            let mut info = SentinelNodeConnectionInfo::default().set_redis_connection_info(node);
            if sentinel.tls {
                info = info.set_tls_mode(redis::TlsMode::Secure);
            }
            let client = SentinelClient::build(
                settings.urls.clone(),
                sentinel.master_name.clone(),
                Some(info),
                SentinelServerType::Master,
            )
            .map_err(unavailable)?;
            Target::Sentinel(Box::new(tokio::sync::Mutex::new(client)))
        } else if settings.cluster {
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
                Target::Sentinel(sentinel) => {
                    // The master as the sentinels see it now.
                    let client = sentinel.lock().await.async_get_client().await?;
                    let config = ConnectionManagerConfig::new()
                        .set_connection_timeout(Some(self.timeout))
                        .set_response_timeout(Some(self.timeout))
                        .set_number_of_retries(0);
                    client
                        .get_connection_manager_with_config(config)
                        .await
                        .map(Conn::Single)
                }
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
        // Boxed: the connection futures (Sentinel's above all) are deep, and every
        // request's future would otherwise carry their whole layout.
        let conn = Box::pin(self.connect()).await?;
        self.conn.store(Some(Arc::new(conn.clone())));
        tracing::info!("connected to Redis for sessions");
        Ok(conn)
    }

    /// Runs a command with the store's timeout.
    async fn run<T: redis::FromRedisValue>(&self, cmd: &Cmd) -> Result<T, StoreError> {
        let mut conn = self.conn().await?;
        let result = tokio::time::timeout(self.timeout, cmd.query_async(&mut conn)).await;
        self.settle(result)
    }

    /// The outcome of a command; with Sentinel, a failure drops the connection so the
    /// next command asks the sentinels for the master again (after a failover the old
    /// master is gone or a read-only replica).
    fn settle<T>(
        &self,
        result: Result<RedisResult<T>, tokio::time::error::Elapsed>,
    ) -> Result<T, StoreError> {
        let outcome = match result {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(e)) => unavailable(e),
            Err(_) => unavailable("Redis did not answer in time"),
        };
        if matches!(self.target, Target::Sentinel(_)) && self.conn.load().is_some() {
            self.conn.store(None);
            tracing::warn!("a Redis command failed: asking the sentinels for the master again");
        }
        Err(outcome)
    }

    fn session_key(&self, id: &SessionId) -> String {
        format!("{}:session:{}", self.prefix, id.key().to_hex())
    }

    fn refresh_key(&self, id: &SessionId) -> String {
        format!("{}:refresh:{}", self.prefix, id.key().to_hex())
    }

    fn index_key(&self, index: &str) -> String {
        format!("{}:index:{}", self.prefix, digest_hex(index))
    }

    fn session_key_of(&self, member: &str) -> String {
        format!("{}:session:{member}", self.prefix)
    }

    /// Marks share the hash tag `{marks}`: one slot, so one `MGET` reads them all.
    fn mark_key(&self, kind: char, key: &str) -> String {
        format!("{}:{{marks}}:{kind}:{}", self.prefix, digest_hex(key))
    }

    /// Runs a pipeline with the store's timeout.
    async fn run_pipe<T: redis::FromRedisValue>(&self, pipe: &Pipeline) -> Result<T, StoreError> {
        let mut conn = self.conn().await?;
        let result = tokio::time::timeout(self.timeout, pipe.query_async::<T>(&mut conn)).await;
        self.settle(result)
    }

    /// The members (session key hexes) of an index.
    async fn members(&self, index: &str) -> Result<Vec<String>, StoreError> {
        self.run(
            redis::cmd("ZRANGE")
                .arg(self.index_key(index))
                .arg(0)
                .arg(-1),
        )
        .await
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
        // Each index lives on its own key (its own cluster slot): one pipeline each, all
        // sent at once.
        let member = id.key().to_hex();
        let conn = self.conn().await?;
        let mut pending = tokio::task::JoinSet::new();
        for index in data.index_keys() {
            let index = self.index_key(&index);
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
            let mut conn = conn.clone();
            let timeout = self.timeout;
            pending.spawn(async move {
                tokio::time::timeout(timeout, pipe.query_async::<()>(&mut conn))
                    .await
                    .map_err(|_| unavailable("Redis did not answer in time"))?
                    .map_err(unavailable)
            });
        }
        while let Some(done) = pending.join_next().await {
            done.map_err(unavailable)??;
        }
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

    async fn revoke_indexed(&self, index: &str) -> Result<usize, StoreError> {
        let members = self.members(index).await?;
        let mut revoked = 0;
        for member in &members {
            // Session keys live in their own cluster slots: one DEL each.
            let removed: usize = self
                .run(redis::cmd("DEL").arg(self.session_key_of(member)))
                .await?;
            revoked += removed;
        }
        if !members.is_empty() {
            // Remove exactly what was revoked; a login racing with this keeps its entry.
            self.run::<()>(redis::cmd("ZREM").arg(self.index_key(index)).arg(&members))
                .await?;
        }
        Ok(revoked)
    }

    async fn amend_indexed(&self, index: &str, amend: Amend) -> Result<usize, StoreError> {
        let mut amended = 0;
        for member in self.members(index).await? {
            let key = self.session_key_of(&member);
            let sealed: Option<String> = self.run(redis::cmd("GET").arg(&key)).await?;
            let Some(mut data) = sealed.and_then(|s| self.open(&key, &s)) else {
                continue;
            };
            amend.apply(&mut data);
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
            amended += usize::from(done.is_some());
        }
        Ok(amended)
    }

    async fn list_indexed(&self, index: &str) -> Result<Vec<SessionInfo>, StoreError> {
        let now_ms = unix_now_ms();
        let mut found = Vec::new();
        for member in self.members(index).await? {
            let key = self.session_key_of(&member);
            let mut pipe = redis::pipe();
            pipe.cmd("GET").arg(&key).cmd("PTTL").arg(&key);
            let (sealed, ttl_ms): (Option<String>, i64) = self.run_pipe(&pipe).await?;
            let Some(data) = sealed.and_then(|s| self.open(&key, &s)) else {
                continue;
            };
            if data.expires_at <= now_ms / 1000 {
                continue;
            }
            // The idle timer restarts at each use, so the time left on it tells when the
            // session was last used (unless the absolute expiry cut the timer short).
            let left = u64::try_from(ttl_ms).unwrap_or(0);
            let used_ms = now_ms.saturating_sub(self.idle_ms().saturating_sub(left));
            let last_seen = (used_ms / 1000).max(data.created_at);
            found.push(SessionInfo {
                handle: member,
                last_seen,
                data: Arc::new(data),
            });
        }
        Ok(found)
    }

    async fn revoke_handle(&self, handle: &str) -> Result<bool, StoreError> {
        let Some(key) = SessionKey::from_hex(handle) else {
            return Ok(false);
        };
        let removed: usize = self
            .run(redis::cmd("DEL").arg(self.session_key_of(&key.to_hex())))
            .await?;
        Ok(removed > 0)
    }

    async fn remember_once(
        &self,
        scope: &str,
        id: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let key = format!(
            "{}:seen:{}",
            self.prefix,
            hex(&crate::replay_digest(scope, id))
        );
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let set: Option<String> = self
            .run(
                redis::cmd("SET")
                    .arg(key)
                    .arg(1)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl_ms),
            )
            .await?;
        Ok(set.is_some())
    }

    async fn set_disabled(&self, key: &str, disabled: bool) -> Result<(), StoreError> {
        let mark = self.mark_key('d', key);
        if disabled {
            self.run::<()>(redis::cmd("SET").arg(mark).arg(1)).await
        } else {
            self.run::<()>(redis::cmd("DEL").arg(mark)).await
        }
    }

    async fn set_revoked_at(&self, key: &str, at: u64) -> Result<(), StoreError> {
        let mark = self.mark_key('r', key);
        let previous: Option<u64> = self.run(redis::cmd("GET").arg(&mark)).await?;
        self.run::<()>(
            redis::cmd("SET")
                .arg(mark)
                .arg(previous.unwrap_or(0).max(at))
                .arg("EX")
                .arg(REVOKED_MARK_TTL.as_secs()),
        )
        .await
    }

    async fn marks(&self, keys: &[String]) -> Result<Marks, StoreError> {
        if keys.is_empty() {
            return Ok(Marks::default());
        }
        let mut cmd = redis::cmd("MGET");
        for key in keys {
            cmd.arg(self.mark_key('d', key))
                .arg(self.mark_key('r', key));
        }
        let values: Vec<Option<String>> = self.run(&cmd).await?;
        let mut marks = Marks::default();
        for pair in values.chunks(2) {
            marks.disabled |= pair.first().is_some_and(Option::is_some);
            let revoked = pair
                .get(1)
                .and_then(|v| v.as_deref())
                .and_then(|v| v.parse::<u64>().ok());
            marks.revoked_at = marks.revoked_at.max(revoked);
        }
        Ok(marks)
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
