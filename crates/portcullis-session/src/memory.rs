//! The in-memory store: sessions in a sharded hash map, for one replica.
//!
//! Sessions here die with the process and are not shared between replicas; several
//! replicas need the Redis store. The map is bounded: when full, expired sessions are swept
//! and then the least recently used session is evicted, so memory cannot grow without
//! limit under a flood of logins.
//!
//! Sessions are indexed under their revocation keys (account, directory user, provider
//! session); the rarer lookups by email, user name or subject scan the map instead of
//! holding three more index entries per session. An index entry is 64 bits of its key's
//! SHA-256 and the sessions filed there (a user has few, held inline when one): 32 bytes
//! in the table, where a string key and a hash set cost some 260.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use portcullis_core::time::unix_now_ms;

use crate::{
    Amend, Marks, REVOKED_MARK_TTL, SessionData, SessionId, SessionInfo, SessionKey, SessionLimits,
    SessionStore, StoreError, is_revocation_key,
};

/// An index key, hashed: the first 64 bits of its SHA-256. Two index keys may share one
/// (by chance, about once in 2^64 pairs, or because someone searched for a pair), so
/// what is filed under a digest is a list of candidates: [`MemoryStore::keys_under`]
/// keeps only the sessions that are themselves filed under the key asked for.
type IndexDigest = [u8; 8];

fn digest(index: &str) -> IndexDigest {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, index.as_bytes());
    let mut out = [0u8; 8];
    out.copy_from_slice(&d.as_ref()[..8]);
    out
}

/// Where this store holds a session: the first 128 bits of its [`SessionKey`] (itself
/// the SHA-256 of a 256-bit random id, so no two live sessions share them, and nobody
/// can choose an id that lands on another's slot). Half the key's size, in the sessions
/// table and in every index entry: some 80 bytes less per held session. Its hex is the
/// session's handle here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot([u8; 16]);

/// A slot hashes as its first eight bytes: they are already spread evenly (part of a
/// SHA-256), and the table holds only slots of ids this store made, so an id chosen to
/// collide changes nothing a lookup walks through. A keyed hash would spread them again
/// at some 70 instructions a request.
impl std::hash::Hash for Slot {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let mut first = [0u8; 8];
        first.copy_from_slice(&self.0[..8]);
        state.write_u64(u64::from_le_bytes(first));
    }
}

/// The hasher of the sessions table: the `u64` a [`Slot`] writes, as it is.
#[derive(Default, Clone, Copy)]
struct SlotHasher(u64);

impl std::hash::Hasher for SlotHasher {
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used by `Slot`; anything else is folded in, not dropped.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 ^= n;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl Slot {
    fn of(key: &SessionKey) -> Self {
        let mut slot = [0u8; 16];
        slot.copy_from_slice(&key.0[..16]);
        Slot(slot)
    }

    fn handle(&self) -> String {
        crate::id::to_hex(&self.0)
    }

    fn from_handle(handle: &str) -> Option<Self> {
        crate::id::from_hex(handle).map(Slot)
    }
}

/// The sessions filed under one index key: nearly always one (a user signed in once),
/// held inline so that the common case costs no allocation of its own.
#[derive(Debug, Clone)]
enum Filed {
    One(Slot),
    Many(Vec<Slot>),
}

impl Filed {
    fn add(&mut self, key: Slot) {
        match self {
            Filed::One(k) if *k == key => {}
            Filed::One(k) => *self = Filed::Many(vec![*k, key]),
            Filed::Many(keys) if keys.contains(&key) => {}
            Filed::Many(keys) => keys.push(key),
        }
    }

    /// Takes `key` out; whether none is left.
    fn take(&mut self, key: &Slot) -> bool {
        match self {
            Filed::One(k) => k == key,
            Filed::Many(keys) => {
                keys.retain(|k| k != key);
                if let [only] = keys.as_slice() {
                    *self = Filed::One(*only);
                }
                keys_is_empty(self)
            }
        }
    }

    fn keys(&self) -> Vec<Slot> {
        match self {
            Filed::One(k) => vec![*k],
            Filed::Many(keys) => keys.clone(),
        }
    }
}

fn keys_is_empty(filed: &Filed) -> bool {
    matches!(filed, Filed::Many(keys) if keys.is_empty())
}

/// How many replay-cache entries are held before expired ones are swept.
const SEEN_SWEEP_AT: usize = 10_000;

struct Entry {
    data: Arc<SessionData>,
    /// Unix milliseconds of the last use.
    last_seen: AtomicU64,
}

pub struct MemoryStore {
    sessions: DashMap<Slot, Entry, std::hash::BuildHasherDefault<SlotHasher>>,
    by_index: DashMap<IndexDigest, Filed>,
    limits: SessionLimits,
    capacity: usize,
    /// Sessions being refreshed, until when.
    refreshing: DashMap<SessionKey, Instant>,
    /// The replay cache: SHA-256 of scope and id, until when.
    seen: DashMap<[u8; 32], Instant>,
    disabled: DashMap<String, ()>,
    /// Revoked-before marks: the time, and until when the mark is kept.
    revoked_at: DashMap<String, (u64, Instant)>,
}

impl MemoryStore {
    pub fn new(limits: SessionLimits, capacity: usize) -> Self {
        MemoryStore {
            sessions: DashMap::default(),
            by_index: DashMap::new(),
            limits,
            capacity: capacity.max(1),
            refreshing: DashMap::new(),
            seen: DashMap::new(),
            disabled: DashMap::new(),
            revoked_at: DashMap::new(),
        }
    }

    /// How many sessions are held, live or not yet swept.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Sweeps expired sessions every `every` until the store is dropped.
    pub fn spawn_sweeper(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let store: Weak<MemoryStore> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(store) = store.upgrade() else { break };
                let removed = store.sweep();
                if removed > 0 {
                    tracing::debug!(removed, remaining = store.len(), "swept expired sessions");
                }
            }
        })
    }

    fn is_live(&self, entry: &Entry, now_ms: u64) -> bool {
        let idle_ms = u64::try_from(self.limits.idle_timeout.as_millis()).unwrap_or(u64::MAX);
        entry.data.expires_at.saturating_mul(1000) > now_ms
            && entry
                .last_seen
                .load(Ordering::Relaxed)
                .saturating_add(idle_ms)
                > now_ms
    }

    /// Removes every expired or idle session; returns how many.
    pub fn sweep(&self) -> usize {
        let now = unix_now_ms();
        let mut dead = Vec::new();
        self.sessions.retain(|key, entry| {
            let live = self.is_live(entry, now);
            if !live {
                dead.push((*key, entry.data.clone()));
            }
            live
        });
        for (key, data) in &dead {
            self.unindex(data, key);
        }
        dead.len()
    }

    fn unindex(&self, data: &SessionData, key: &Slot) {
        for index in data.revocation_keys() {
            let index = digest(&index);
            // Removed while its entry is held, so a session filed meanwhile is kept.
            self.by_index
                .remove_if_mut(&index, |_, filed| filed.take(key));
        }
    }

    fn remove(&self, key: &Slot) -> bool {
        match self.sessions.remove(key) {
            Some((_, entry)) => {
                self.unindex(&entry.data, key);
                true
            }
            None => false,
        }
    }

    /// The sessions filed under `index`: from the index for revocation keys (the
    /// candidates under its digest, each checked), else by scanning.
    fn keys_under(&self, index: &str) -> Vec<Slot> {
        if is_revocation_key(index) {
            let candidates = self
                .by_index
                .get(&digest(index))
                .map(|filed| filed.keys())
                .unwrap_or_default();
            return candidates
                .into_iter()
                .filter(|slot| {
                    self.sessions.get(slot).is_some_and(|entry| {
                        entry.data.revocation_keys().iter().any(|k| k == index)
                    })
                })
                .collect();
        }
        self.sessions
            .iter()
            .filter(|e| e.value().data.index_keys().iter().any(|k| k == index))
            .map(|e| *e.key())
            .collect()
    }

    /// Makes room for one more session.
    fn make_room(&self) {
        if self.sessions.len() < self.capacity {
            return;
        }
        self.sweep();
        while self.sessions.len() >= self.capacity {
            let oldest = self
                .sessions
                .iter()
                .min_by_key(|e| e.value().last_seen.load(Ordering::Relaxed))
                .map(|e| *e.key());
            match oldest {
                Some(key) => {
                    self.remove(&key);
                    tracing::warn!(
                        capacity = self.capacity,
                        "session store full: evicted the least recently used session; raise session.max_sessions or use the Redis store"
                    );
                }
                None => break,
            }
        }
    }
}

impl SessionStore for MemoryStore {
    async fn create(&self, data: SessionData) -> Result<SessionId, StoreError> {
        self.make_room();
        let id = SessionId::generate();
        let key = Slot::of(&id.key());
        for index in data.revocation_keys() {
            self.by_index
                .entry(digest(&index))
                .and_modify(|filed| filed.add(key))
                .or_insert(Filed::One(key));
        }
        self.sessions.insert(
            key,
            Entry {
                data: Arc::new(data),
                last_seen: AtomicU64::new(unix_now_ms()),
            },
        );
        Ok(id)
    }

    async fn load(&self, id: &SessionId) -> Result<Option<Arc<SessionData>>, StoreError> {
        let key = Slot::of(&id.key());
        let now = unix_now_ms();
        let found = match self.sessions.get(&key) {
            None => return Ok(None),
            Some(entry) if self.is_live(&entry, now) => {
                // Avoid writing the shared cache line when nothing changes.
                if entry.last_seen.load(Ordering::Relaxed) != now {
                    entry.last_seen.store(now, Ordering::Relaxed);
                }
                Some(entry.data.clone())
            }
            Some(_) => None,
        };
        if found.is_none() {
            self.remove(&key);
        }
        Ok(found)
    }

    async fn update(&self, id: &SessionId, data: SessionData) -> Result<bool, StoreError> {
        let now = unix_now_ms();
        match self.sessions.get_mut(&Slot::of(&id.key())) {
            Some(mut entry) if self.is_live(&entry, now) => {
                entry.data = Arc::new(data);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn delete(&self, id: &SessionId) -> Result<(), StoreError> {
        self.remove(&Slot::of(&id.key()));
        Ok(())
    }

    async fn revoke_indexed(&self, index: &str) -> Result<usize, StoreError> {
        let revoked = self
            .keys_under(index)
            .iter()
            .filter(|key| self.remove(key))
            .count();
        Ok(revoked)
    }

    async fn amend_indexed(&self, index: &str, amend: Amend) -> Result<usize, StoreError> {
        let mut amended = 0;
        for key in self.keys_under(index) {
            if let Some(mut entry) = self.sessions.get_mut(&key) {
                let mut data = (*entry.data).clone();
                amend.apply(&mut data);
                entry.data = Arc::new(data);
                amended += 1;
            }
        }
        Ok(amended)
    }

    async fn list_indexed(&self, index: &str) -> Result<Vec<SessionInfo>, StoreError> {
        let now = unix_now_ms();
        Ok(self
            .keys_under(index)
            .iter()
            .filter_map(|key| {
                let entry = self.sessions.get(key)?;
                self.is_live(&entry, now).then(|| SessionInfo {
                    handle: key.handle(),
                    last_seen: entry.last_seen.load(Ordering::Relaxed) / 1000,
                    data: entry.data.clone(),
                })
            })
            .collect())
    }

    async fn revoke_handle(&self, handle: &str) -> Result<bool, StoreError> {
        Ok(Slot::from_handle(handle).is_some_and(|key| self.remove(&key)))
    }

    async fn remember_once(
        &self,
        scope: &str,
        id: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let now = Instant::now();
        if self.seen.len() >= SEEN_SWEEP_AT {
            self.seen.retain(|_, until| *until > now);
        }
        let mut first = false;
        self.seen
            .entry(crate::replay_digest(scope, id))
            .and_modify(|until| {
                if *until <= now {
                    *until = now + ttl;
                    first = true;
                }
            })
            .or_insert_with(|| {
                first = true;
                now + ttl
            });
        Ok(first)
    }

    async fn set_disabled(&self, key: &str, disabled: bool) -> Result<(), StoreError> {
        if disabled {
            self.disabled.insert(key.to_string(), ());
        } else {
            self.disabled.remove(key);
        }
        Ok(())
    }

    async fn set_revoked_at(&self, key: &str, at: u64) -> Result<(), StoreError> {
        let until = Instant::now() + REVOKED_MARK_TTL;
        self.revoked_at
            .entry(key.to_string())
            .and_modify(|(t, u)| {
                *t = (*t).max(at);
                *u = until;
            })
            .or_insert((at, until));
        Ok(())
    }

    async fn marks(&self, keys: &[String]) -> Result<Marks, StoreError> {
        let mut marks = Marks::default();
        if self.disabled.is_empty() && self.revoked_at.is_empty() {
            return Ok(marks);
        }
        let now = Instant::now();
        for key in keys {
            marks.disabled |= self.disabled.contains_key(key);
            if let Some(mark) = self.revoked_at.get(key)
                && mark.1 > now
            {
                marks.revoked_at = marks.revoked_at.max(Some(mark.0));
            }
        }
        Ok(marks)
    }

    async fn claim_refresh(&self, id: &SessionId, ttl: Duration) -> Result<bool, StoreError> {
        let now = Instant::now();
        let mut claimed = false;
        self.refreshing
            .entry(id.key())
            .and_modify(|until| {
                if *until <= now {
                    *until = now + ttl;
                    claimed = true;
                }
            })
            .or_insert_with(|| {
                claimed = true;
                now + ttl
            });
        Ok(claimed)
    }

    async fn release_refresh(&self, id: &SessionId) -> Result<(), StoreError> {
        self.refreshing.remove(&id.key());
        Ok(())
    }

    async fn ready(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every held session costs its `SessionData` in one allocation (100,000 sessions
    /// are measured in bench/proxy.py): the rare parts (a directory user) are boxed, the
    /// identity's text fields share one allocation, the client address is kept as an
    /// address rather than as text in an allocation of its own.
    #[test]
    fn a_held_session_stays_small() {
        let size = std::mem::size_of::<SessionData>();
        assert!(size <= 216, "SessionData grew to {size} bytes");
    }

    /// The tables' entries: a slot and its entry in the sessions table, an index digest
    /// and what is filed under it (two or three per session).
    #[test]
    fn table_entries_stay_small() {
        assert_eq!(std::mem::size_of::<(Slot, Entry)>(), 32);
        assert_eq!(std::mem::size_of::<(IndexDigest, Filed)>(), 32);
    }

    /// A digest shared by two index keys (forced here: finding a real pair takes some
    /// 2^32 hashes) never lets one user's revocation end another's session.
    #[tokio::test]
    async fn a_shared_index_digest_ends_only_the_named_users_sessions() {
        let store = MemoryStore::new(limits(), 10);
        let a = store
            .create(SessionData::new(identity("a"), limits().lifetime))
            .await
            .unwrap();
        let b = store
            .create(SessionData::new(identity("b"), limits().lifetime))
            .await
            .unwrap();
        let key = |id| crate::Index::Account { provider: "p", id }.key();
        store
            .by_index
            .get_mut(&digest(&key("a")))
            .unwrap()
            .add(Slot::of(&b.key()));
        assert_eq!(store.revoke_indexed(&key("a")).await.unwrap(), 1);
        assert!(store.load(&a).await.unwrap().is_none());
        assert!(store.load(&b).await.unwrap().is_some(), "b was not named");
        let listed = store.list_indexed(&key("b")).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].data.identity.id(), "b");
    }

    #[test]
    fn handles_read_back_and_nothing_else_does() {
        let slot = Slot::of(&SessionId::generate().key());
        assert_eq!(Slot::from_handle(&slot.handle()), Some(slot));
        let upper = slot.handle().to_uppercase();
        for bad in ["", "not-a-handle", &upper, &format!("{}0", slot.handle())] {
            assert_eq!(Slot::from_handle(bad), None, "{bad}");
        }
    }

    #[test]
    fn one_session_is_filed_inline_and_several_in_a_list() {
        let (a, b) = (Slot([1; 16]), Slot([2; 16]));
        let mut filed = Filed::One(a);
        filed.add(a);
        assert!(matches!(filed, Filed::One(k) if k == a));
        filed.add(b);
        assert_eq!(filed.keys(), vec![a, b]);
        assert!(!filed.take(&a));
        assert!(matches!(filed, Filed::One(k) if k == b));
        assert!(!filed.take(&a), "another key leaves it as it was");
        assert!(filed.take(&b));
    }
    use portcullis_core::Identity;

    fn identity(id: &str) -> Identity {
        Identity::from(portcullis_core::IdentityFields {
            id: id.into(),
            email: None,
            name: None,
            username: None,
            groups: vec![],
            provider: "p".into(),
            ..portcullis_core::IdentityFields::default()
        })
    }

    fn limits() -> SessionLimits {
        SessionLimits {
            lifetime: Duration::from_secs(3600),
            idle_timeout: Duration::from_secs(3600),
        }
    }

    #[tokio::test]
    async fn a_full_store_evicts_the_least_recently_used_session() {
        let store = MemoryStore::new(limits(), 2);
        let a = store
            .create(SessionData::new(identity("a"), limits().lifetime))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let b = store
            .create(SessionData::new(identity("b"), limits().lifetime))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        // Using `a` makes `b` the least recently used.
        assert!(store.load(&a).await.unwrap().is_some());
        let c = store
            .create(SessionData::new(identity("c"), limits().lifetime))
            .await
            .unwrap();
        assert_eq!(store.len(), 2);
        assert!(store.load(&a).await.unwrap().is_some());
        assert!(store.load(&b).await.unwrap().is_none());
        assert!(store.load(&c).await.unwrap().is_some());
        let b_key = crate::Index::Account {
            provider: "p",
            id: "b",
        }
        .key();
        assert!(
            store.by_index.get(&digest(&b_key)).is_none(),
            "evicted session left in the user index"
        );
    }

    #[tokio::test]
    async fn sweeping_removes_expired_sessions_and_their_index_entries() {
        let short = SessionLimits {
            lifetime: Duration::from_secs(3600),
            idle_timeout: Duration::from_millis(30),
        };
        let store = MemoryStore::new(short, 10);
        store
            .create(SessionData::new(identity("a"), short.lifetime))
            .await
            .unwrap();
        assert_eq!(store.sweep(), 0);
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(store.sweep(), 1);
        assert!(store.is_empty());
        assert!(store.by_index.is_empty());
    }

    #[tokio::test]
    async fn the_sweeper_task_runs_in_the_background() {
        let short = SessionLimits {
            lifetime: Duration::from_secs(3600),
            idle_timeout: Duration::from_millis(20),
        };
        let store = Arc::new(MemoryStore::new(short, 10));
        let sweeper = store.spawn_sweeper(Duration::from_millis(25));
        store
            .create(SessionData::new(identity("a"), short.lifetime))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(store.is_empty(), "sweeper did not remove the idle session");
        sweeper.abort();
    }
}
