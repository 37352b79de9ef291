//! The behaviour every [`SessionStore`] must show. Each store's tests call these functions
//! with a fresh store; timings are real (stores such as Redis keep their own clocks).
#![allow(clippy::unwrap_used, unreachable_pub)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use portcullis_core::Identity;

use crate::{Amend, Index, SessionData, SessionId, SessionLimits, SessionStore, StoreError};

fn account(who: &Identity) -> String {
    Index::Account {
        provider: &who.provider,
        id: who.id(),
    }
    .key()
}

pub fn identity(id: &str) -> Identity {
    Identity::from(portcullis_core::IdentityFields {
        id: id.into(),
        email: Some(format!("{id}@example.com")),
        name: Some(id.to_uppercase()),
        username: Some(id.into()),
        groups: vec!["staff".into()],
        provider: "conformance".into(),
        ..portcullis_core::IdentityFields::default()
    })
}

/// Limits long enough that nothing expires during a test unless the test means it to.
pub const LONG: SessionLimits = SessionLimits {
    lifetime: Duration::from_secs(3600),
    idle_timeout: Duration::from_secs(3600),
};

pub async fn create_then_load_returns_the_same_data<S: SessionStore>(store: &S) {
    let data = SessionData::new(identity("alice"), LONG.lifetime);
    let id = store.create(data.clone()).await.expect("create");
    let loaded = store
        .load(&id)
        .await
        .expect("load")
        .expect("session exists");
    assert_eq!(*loaded, data);
}

pub async fn unknown_ids_load_as_none<S: SessionStore>(store: &S) {
    assert!(
        store
            .load(&SessionId::generate())
            .await
            .expect("load")
            .is_none()
    );
}

pub async fn delete_ends_only_that_session<S: SessionStore>(store: &S) {
    let one = store
        .create(SessionData::new(identity("bob"), LONG.lifetime))
        .await
        .unwrap();
    let two = store
        .create(SessionData::new(identity("bob"), LONG.lifetime))
        .await
        .unwrap();
    store.delete(&one).await.expect("delete");
    assert!(store.load(&one).await.unwrap().is_none());
    assert!(store.load(&two).await.unwrap().is_some());
    // Deleting again is not an error.
    store.delete(&one).await.expect("second delete");
}

pub async fn revoke_user_ends_every_session_of_that_user_only<S: SessionStore>(store: &S) {
    let carol = identity("carol");
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(
            store
                .create(SessionData::new(carol.clone(), LONG.lifetime))
                .await
                .unwrap(),
        );
    }
    let dave = store
        .create(SessionData::new(identity("dave"), LONG.lifetime))
        .await
        .unwrap();
    let revoked = store
        .revoke_indexed(&account(&carol))
        .await
        .expect("revoke");
    assert_eq!(revoked, 3);
    for id in &ids {
        assert!(
            store.load(id).await.unwrap().is_none(),
            "revoked session still loads"
        );
    }
    assert!(store.load(&dave).await.unwrap().is_some());
    assert_eq!(store.revoke_indexed(&account(&carol)).await.unwrap(), 0);
    // A new login after revocation works.
    let again = store
        .create(SessionData::new(carol, LONG.lifetime))
        .await
        .unwrap();
    assert!(store.load(&again).await.unwrap().is_some());
}

/// `store` must have been built with a lifetime of two seconds and an idle timeout well
/// beyond the test, so that only the absolute lifetime can end the session. Expiry is
/// kept in whole seconds: a two-second session has between one and two seconds left.
pub async fn sessions_end_at_their_absolute_lifetime<S: SessionStore>(store: &S) {
    let id = store
        .create(SessionData::new(identity("erin"), Duration::from_secs(2)))
        .await
        .unwrap();
    assert!(store.load(&id).await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(3100)).await;
    assert!(
        store.load(&id).await.unwrap().is_none(),
        "session outlived its lifetime"
    );
}

/// `store` must have been built with an idle timeout of `idle`.
pub async fn use_restarts_the_idle_timer_and_idleness_ends_the_session<S: SessionStore>(
    store: &S,
    idle: Duration,
) {
    let id = store
        .create(SessionData::new(identity("frank"), LONG.lifetime))
        .await
        .unwrap();
    // Touch at 60% of the timeout, twice: the session outlives the first timeout.
    for _ in 0..2 {
        tokio::time::sleep(idle * 6 / 10).await;
        assert!(
            store.load(&id).await.unwrap().is_some(),
            "touched session expired"
        );
    }
    tokio::time::sleep(idle * 15 / 10).await;
    assert!(
        store.load(&id).await.unwrap().is_none(),
        "idle session still loads"
    );
}

/// Many concurrent refreshes (updates) and reads of one session: every read sees one of
/// the written versions, the session survives, and after it is deleted no late update
/// brings it back.
pub async fn concurrent_refreshes_of_one_session_keep_it_whole<S: SessionStore>(store: Arc<S>) {
    let id = store
        .create(SessionData::new(identity("henry"), LONG.lifetime))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..24 {
        let store = store.clone();
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            let mut data = SessionData::new(identity("henry"), LONG.lifetime);
            data.identity.groups = vec![format!("version-{i}")];
            assert!(
                store.update(&id, data).await.unwrap(),
                "a live session refused an update"
            );
            let seen = store
                .load(&id)
                .await
                .unwrap()
                .expect("session vanished during refreshes");
            assert!(
                seen.identity.groups[0].starts_with("version-"),
                "torn record: {seen:?}"
            );
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let last = store
        .load(&id)
        .await
        .unwrap()
        .expect("session survives the refreshes");
    assert_eq!(last.identity.id(), "henry");
    store.delete(&id).await.unwrap();
    let late = SessionData::new(identity("henry"), LONG.lifetime);
    assert!(
        !store.update(&id, late).await.unwrap(),
        "an update resurrected a deleted session"
    );
    assert!(store.load(&id).await.unwrap().is_none());
    let revoked = store
        .create(SessionData::new(identity("ivy"), LONG.lifetime))
        .await
        .unwrap();
    store
        .revoke_indexed(&account(&identity("ivy")))
        .await
        .unwrap();
    let late = SessionData::new(identity("ivy"), LONG.lifetime);
    assert!(
        !store.update(&revoked, late).await.unwrap(),
        "an update resurrected a revoked session"
    );
}

/// A provisioned user's sessions are indexed by the directory user, and a team change
/// reaches every one of them (and no one else's).
pub async fn teams_change_on_every_session_of_a_provisioned_user<S: SessionStore>(store: &S) {
    let linked = |name: &str| {
        let mut data = SessionData::new(identity(name), LONG.lifetime);
        data.directory_user = Some(Box::new(crate::DirectoryUser {
            tenant: "okta".into(),
            id: format!("dir-{name}"),
        }));
        data.teams = ["old-team".into()].into();
        data
    };
    let a = store.create(linked("nina")).await.unwrap();
    let b = store.create(linked("nina")).await.unwrap();
    let other = store.create(linked("omar")).await.unwrap();
    let key = Index::Directory {
        tenant: "okta",
        id: "dir-nina",
    }
    .key();
    assert_eq!(
        store
            .amend_indexed(&key, Amend::Teams(vec!["new-team".into()]))
            .await
            .unwrap(),
        2
    );
    for id in [&a, &b] {
        assert_eq!(
            *store.load(id).await.unwrap().unwrap().teams,
            ["new-team".to_string()]
        );
    }
    assert_eq!(
        *store.load(&other).await.unwrap().unwrap().teams,
        ["old-team".to_string()]
    );
    // The same sessions are the account's: "log out everywhere" (by account) ends a
    // provisioned user's sessions too.
    assert_eq!(
        store
            .revoke_indexed(&account(&identity("nina")))
            .await
            .unwrap(),
        2
    );
    assert!(store.load(&a).await.unwrap().is_none());
    assert_eq!(
        store
            .amend_indexed(&key, Amend::Teams(vec!["x".into()]))
            .await
            .unwrap(),
        0,
        "a revoked session came back"
    );
    assert_eq!(store.revoke_indexed(&key).await.unwrap(), 0);
}

/// Sessions are found by email, user name and subject (at any provider), listed without
/// their ids, and ended one by one by handle or all at once by provider session.
pub async fn sessions_are_found_by_every_name_and_ended_by_handle<S: SessionStore>(store: &S) {
    let mut web = SessionData::new(identity("pia"), LONG.lifetime);
    web.identity.set_sid(Some("op-sid-1"));
    web.client = Some([192, 0, 2, 7].into());
    web.set_user_agent(&format!("Mozilla/5.0 {}", "x".repeat(400)));
    let laptop = store.create(web).await.unwrap();
    let mut other = SessionData::new(identity("pia"), LONG.lifetime);
    other.identity.set_sid(Some("op-sid-2"));
    let phone = store.create(other).await.unwrap();
    let quinn = store
        .create(SessionData::new(identity("quinn"), LONG.lifetime))
        .await
        .unwrap();
    for name in [
        Index::Email("PIA@example.com").key(),
        Index::Username("pia").key(),
        Index::Subject("pia").key(),
    ] {
        let found = store.list_indexed(&name).await.unwrap();
        assert_eq!(found.len(), 2, "{name}: {found:?}");
        assert!(found.iter().all(|s| s.data.identity.id() == "pia"));
    }
    let listed = store
        .list_indexed(&Index::Email("pia@example.com").key())
        .await
        .unwrap();
    let first = listed
        .iter()
        .find(|s| s.data.client.is_some())
        .expect("the session with its client");
    assert_eq!(first.data.client, Some([192, 0, 2, 7].into()));
    assert_eq!(
        first.data.user_agent.as_ref().unwrap().len(),
        crate::USER_AGENT_MAX
    );
    assert!(first.last_seen >= first.data.created_at);
    for s in &listed {
        assert_ne!(s.handle, laptop.expose());
        assert_ne!(s.handle, phone.expose());
    }
    assert!(!store.revoke_handle("not-a-handle").await.unwrap());
    // The provider session names exactly one of them.
    let sid = Index::ProviderSession {
        provider: "conformance",
        sid: "op-sid-2",
    }
    .key();
    assert_eq!(store.revoke_indexed(&sid).await.unwrap(), 1);
    assert!(store.load(&phone).await.unwrap().is_none());
    assert!(store.load(&laptop).await.unwrap().is_some());
    assert!(store.revoke_handle(&first.handle).await.unwrap());
    assert!(!store.revoke_handle(&first.handle).await.unwrap());
    assert!(store.load(&laptop).await.unwrap().is_none());
    assert!(store.load(&quinn).await.unwrap().is_some());
    assert!(
        store
            .list_indexed(&Index::Email("pia@example.com").key())
            .await
            .unwrap()
            .is_empty()
    );
}

/// The replay cache and the marks are shared by every handle on one backing store.
pub async fn replays_and_marks_are_seen_by_every_handle<S: SessionStore>(a: &S, b: &S) {
    let jti = format!("jti-{}", portcullis_core::random::token());
    let ttl = Duration::from_millis(700);
    assert!(a.remember_once("logout", &jti, ttl).await.unwrap());
    assert!(
        !b.remember_once("logout", &jti, ttl).await.unwrap(),
        "replayed"
    );
    assert!(
        b.remember_once("ssf", &jti, ttl).await.unwrap(),
        "scopes are apart"
    );
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert!(
        a.remember_once("logout", &jti, ttl).await.unwrap(),
        "lapsed"
    );

    let ray = identity("ray");
    let keys = crate::identity_keys(&ray, None);
    assert_eq!(b.marks(&keys).await.unwrap(), crate::Marks::default());
    a.set_disabled(&Index::Email("RAY@example.com").key(), true)
        .await
        .unwrap();
    a.set_revoked_at(&account(&ray), 1_000).await.unwrap();
    a.set_revoked_at(&account(&ray), 900).await.unwrap();
    let marks = b.marks(&keys).await.unwrap();
    assert!(marks.disabled);
    assert_eq!(marks.revoked_at, Some(1_000));
    assert_eq!(
        b.marks(&crate::identity_keys(&identity("sam"), None))
            .await
            .unwrap(),
        crate::Marks::default()
    );
    b.set_disabled(&Index::Email("ray@example.com").key(), false)
        .await
        .unwrap();
    assert!(!a.marks(&keys).await.unwrap().disabled);
}

pub async fn a_refresh_is_claimed_by_one_handle_at_a_time<S: SessionStore>(a: &S, b: &S) {
    let id = a
        .create(SessionData::new(
            identity("claim"),
            Duration::from_secs(3600),
        ))
        .await
        .unwrap();
    let ttl = Duration::from_millis(600);
    assert!(a.claim_refresh(&id, ttl).await.unwrap());
    assert!(
        !b.claim_refresh(&id, ttl).await.unwrap(),
        "a second claimant"
    );
    assert!(!a.claim_refresh(&id, ttl).await.unwrap(), "a second claim");
    a.release_refresh(&id).await.unwrap();
    assert!(b.claim_refresh(&id, ttl).await.unwrap(), "released");
    // A claim whose holder died lapses by itself.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(a.claim_refresh(&id, ttl).await.unwrap(), "lapsed");
}

pub async fn concurrent_loads_of_one_session_all_succeed<S: SessionStore>(store: Arc<S>) {
    let id = store
        .create(SessionData::new(identity("grace"), LONG.lifetime))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let store = store.clone();
        let id = id.clone();
        tasks.push(tokio::spawn(async move { store.load(&id).await }));
    }
    for task in tasks {
        assert!(task.await.unwrap().unwrap().is_some());
    }
}

mod memory {
    use super::*;
    use crate::MemoryStore;

    fn store(limits: SessionLimits) -> MemoryStore {
        MemoryStore::new(limits, 1000)
    }

    #[tokio::test]
    async fn create_then_load_returns_the_same_data() {
        super::create_then_load_returns_the_same_data(&store(LONG)).await;
    }

    #[tokio::test]
    async fn unknown_ids_load_as_none() {
        super::unknown_ids_load_as_none(&store(LONG)).await;
    }

    #[tokio::test]
    async fn delete_ends_only_that_session() {
        super::delete_ends_only_that_session(&store(LONG)).await;
    }

    #[tokio::test]
    async fn revoke_user_ends_every_session_of_that_user_only() {
        super::revoke_user_ends_every_session_of_that_user_only(&store(LONG)).await;
    }

    #[tokio::test]
    async fn sessions_end_at_their_absolute_lifetime() {
        let limits = SessionLimits {
            lifetime: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(30),
        };
        super::sessions_end_at_their_absolute_lifetime(&store(limits)).await;
    }

    #[tokio::test]
    async fn use_restarts_the_idle_timer_and_idleness_ends_the_session() {
        let idle = Duration::from_millis(300);
        let limits = SessionLimits {
            lifetime: Duration::from_secs(3600),
            idle_timeout: idle,
        };
        super::use_restarts_the_idle_timer_and_idleness_ends_the_session(&store(limits), idle)
            .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_loads_of_one_session_all_succeed() {
        super::concurrent_loads_of_one_session_all_succeed(Arc::new(store(LONG))).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_refreshes_of_one_session_keep_it_whole() {
        super::concurrent_refreshes_of_one_session_keep_it_whole(Arc::new(store(LONG))).await;
    }

    #[tokio::test]
    async fn teams_change_on_every_session_of_a_provisioned_user() {
        super::teams_change_on_every_session_of_a_provisioned_user(&store(LONG)).await;
    }

    #[tokio::test]
    async fn sessions_are_found_by_every_name_and_ended_by_handle() {
        super::sessions_are_found_by_every_name_and_ended_by_handle(&store(LONG)).await;
    }

    #[tokio::test]
    async fn replays_and_marks_are_seen_by_every_handle() {
        let one = store(LONG);
        super::replays_and_marks_are_seen_by_every_handle(&one, &one).await;
    }

    #[tokio::test]
    async fn a_refresh_is_claimed_by_one_handle_at_a_time() {
        let s = Arc::new(store(LONG));
        super::a_refresh_is_claimed_by_one_handle_at_a_time(&*s, &*s).await;
    }
}

/// The same behaviour from a real `redis-server`, and from a real three-node cluster.
mod redis {
    use super::*;
    use crate::{RedisSettings, RedisStore};
    use portcullis_testkit::{RedisCluster, RedisServer};

    const SECRET: &str = "conformance-secret-0123456789abcdef";

    fn store_at(urls: Vec<String>, cluster: bool, limits: SessionLimits) -> RedisStore {
        let settings = RedisSettings {
            urls,
            cluster,
            sentinel: None,
            ca_pem: None,
            key_prefix: "conformance".into(),
            timeout: Duration::from_secs(2),
        };
        RedisStore::new(&settings, &[SECRET], limits).expect("store")
    }

    fn store(server: &RedisServer, limits: SessionLimits) -> RedisStore {
        store_at(vec![server.url()], false, limits)
    }

    #[tokio::test]
    #[cfg_attr(not(feature = "e2e"), ignore = "needs Redis: run scripts/test")]
    async fn create_then_load_returns_the_same_data() {
        let server = RedisServer::start();
        super::create_then_load_returns_the_same_data(&store(&server, LONG)).await;
    }

    #[tokio::test]
    #[cfg_attr(not(feature = "e2e"), ignore = "needs Redis: run scripts/test")]
    async fn unknown_ids_load_as_none() {
        let server = RedisServer::start();
        super::unknown_ids_load_as_none(&store(&server, LONG)).await;
    }

    #[tokio::test]
    #[cfg_attr(not(feature = "e2e"), ignore = "needs Redis: run scripts/test")]
    async fn delete_ends_only_that_session() {
        let server = RedisServer::start();
        super::delete_ends_only_that_session(&store(&server, LONG)).await;
    }

    #[tokio::test]
    #[cfg_attr(not(feature = "e2e"), ignore = "needs Redis: run scripts/test")]
    async fn revoke_user_ends_every_session_of_that_user_only() {
        let server = RedisServer::start();
        super::revoke_user_ends_every_session_of_that_user_only(&store(&server, LONG)).await;
    }

    #[tokio::test]
    #[cfg_attr(not(feature = "e2e"), ignore = "needs Redis: run scripts/test")]
    async fn sessions_end_at_their_absolute_lifetime() {
        let server = RedisServer::start();
        let limits = SessionLimits {
            lifetime: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(30),
        };
        super::sessions_end_at_their_absolute_lifetime(&store(&server, limits)).await;
    }

    #[tokio::test]
    #[cfg_attr(not(feature = "e2e"), ignore = "needs Redis: run scripts/test")]
    async fn use_restarts_the_idle_timer_and_idleness_ends_the_session() {
        let server = RedisServer::start();
        let idle = Duration::from_millis(400);
        let limits = SessionLimits {
            lifetime: Duration::from_secs(3600),
            idle_timeout: idle,
        };
        super::use_restarts_the_idle_timer_and_idleness_ends_the_session(
            &store(&server, limits),
            idle,
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[cfg_attr(not(feature = "e2e"), ignore = "needs Redis: run scripts/test")]
    async fn concurrent_loads_of_one_session_all_succeed() {
        let server = RedisServer::start();
        super::concurrent_loads_of_one_session_all_succeed(Arc::new(store(&server, LONG))).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[cfg_attr(not(feature = "e2e"), ignore = "needs Redis: run scripts/test")]
    async fn concurrent_refreshes_of_one_session_keep_it_whole() {
        let server = RedisServer::start();
        super::concurrent_refreshes_of_one_session_keep_it_whole(Arc::new(store(&server, LONG)))
            .await;
    }

    #[tokio::test]
    #[cfg_attr(not(feature = "e2e"), ignore = "needs Redis: run scripts/test")]
    async fn teams_change_on_every_session_of_a_provisioned_user() {
        let server = RedisServer::start();
        super::teams_change_on_every_session_of_a_provisioned_user(&store(&server, LONG)).await;
    }

    #[tokio::test]
    #[cfg_attr(not(feature = "e2e"), ignore = "needs Redis: run scripts/test")]
    async fn sessions_are_found_by_every_name_and_ended_by_handle() {
        let server = RedisServer::start();
        super::sessions_are_found_by_every_name_and_ended_by_handle(&store(&server, LONG)).await;
    }

    /// Two stores on one server stand for two replicas.
    #[tokio::test]
    #[cfg_attr(not(feature = "e2e"), ignore = "needs Redis: run scripts/test")]
    async fn replays_and_marks_are_seen_by_every_handle() {
        let server = RedisServer::start();
        super::replays_and_marks_are_seen_by_every_handle(
            &store(&server, LONG),
            &store(&server, LONG),
        )
        .await;
    }

    /// Two stores on one server stand for two replicas.
    #[tokio::test]
    #[cfg_attr(not(feature = "e2e"), ignore = "needs Redis: run scripts/test")]
    async fn a_refresh_is_claimed_by_one_handle_at_a_time() {
        let server = RedisServer::start();
        super::a_refresh_is_claimed_by_one_handle_at_a_time(
            &store(&server, LONG),
            &store(&server, LONG),
        )
        .await;
    }

    #[tokio::test]
    #[cfg_attr(not(feature = "e2e"), ignore = "needs Redis: run scripts/test")]
    async fn a_cluster_passes_the_same_checks() {
        let cluster = RedisCluster::start();
        let s = store_at(cluster.urls(), true, LONG);
        super::create_then_load_returns_the_same_data(&s).await;
        super::unknown_ids_load_as_none(&s).await;
        super::delete_ends_only_that_session(&s).await;
        super::revoke_user_ends_every_session_of_that_user_only(&s).await;
        super::teams_change_on_every_session_of_a_provisioned_user(&s).await;
        super::sessions_are_found_by_every_name_and_ended_by_handle(&s).await;
        super::replays_and_marks_are_seen_by_every_handle(&s, &s).await;
        super::concurrent_refreshes_of_one_session_keep_it_whole(Arc::new(s)).await;
    }

    #[tokio::test]
    #[cfg_attr(not(feature = "e2e"), ignore = "needs Redis: run scripts/test")]
    async fn records_at_rest_reveal_no_id_token_email_or_user() {
        let server = RedisServer::start();
        let s = store(&server, LONG);
        let id = s
            .create(SessionData::new(identity("judith"), LONG.lifetime))
            .await
            .unwrap();
        let keys = server.command("KEYS *");
        assert!(!keys.contains(id.expose()), "a session id is a Redis key");
        assert!(!keys.contains("judith"), "a user key is readable: {keys}");
        let dump = server.command(&format!("GET conformance:session:{}", id.key().to_hex()));
        assert!(dump.starts_with('$'), "record not found: {dump}");
        for secret in ["judith", "JUDITH", "example.com", "staff", "conformance"] {
            assert!(
                !dump.contains(secret),
                "the record shows {secret:?}: {dump}"
            );
        }
    }

    #[tokio::test]
    #[cfg_attr(not(feature = "e2e"), ignore = "needs Redis: run scripts/test")]
    async fn a_rotated_secret_still_reads_old_records_and_a_dropped_one_does_not() {
        let server = RedisServer::start();
        let settings = RedisSettings {
            urls: vec![server.url()],
            cluster: false,
            sentinel: None,
            ca_pem: None,
            key_prefix: "conformance".into(),
            timeout: Duration::from_secs(2),
        };
        let old =
            RedisStore::new(&settings, &["old-secret-0123456789abcdef-old-secret"], LONG).unwrap();
        let id = old
            .create(SessionData::new(identity("kim"), LONG.lifetime))
            .await
            .unwrap();
        let rotated = RedisStore::new(
            &settings,
            &[
                "new-secret-0123456789abcdef-new-secret",
                "old-secret-0123456789abcdef-old-secret",
            ],
            LONG,
        )
        .unwrap();
        assert!(
            rotated.load(&id).await.unwrap().is_some(),
            "rotation lost a session"
        );
        let dropped =
            RedisStore::new(&settings, &["new-secret-0123456789abcdef-new-secret"], LONG).unwrap();
        assert!(dropped.load(&id).await.unwrap().is_none());
    }

    #[tokio::test]
    #[cfg_attr(not(feature = "e2e"), ignore = "needs Redis: run scripts/test")]
    async fn an_outage_fails_closed_and_recovery_needs_no_restart() {
        let mut server = RedisServer::start();
        let s = store(&server, LONG);
        let id = s
            .create(SessionData::new(identity("lee"), LONG.lifetime))
            .await
            .unwrap();
        server.stop();
        let started = Instant::now();
        assert!(matches!(s.load(&id).await, Err(StoreError::Unavailable(_))));
        assert!(s.ready().await.is_err());
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the outage was not noticed quickly"
        );
        server.restart();
        // The connection comes back by itself; the session written before is still there.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match s.load(&id).await {
                Ok(Some(data)) => {
                    assert_eq!(data.identity.id(), "lee");
                    break;
                }
                other => {
                    assert!(Instant::now() < deadline, "no recovery: {other:?}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        assert!(s.ready().await.is_ok());
    }

    #[tokio::test]
    #[cfg_attr(not(feature = "e2e"), ignore = "needs Redis: run scripts/test")]
    async fn a_store_made_while_redis_is_down_connects_when_it_comes_up() {
        let mut server = RedisServer::start();
        server.stop();
        let s = store(&server, LONG);
        assert!(s.ready().await.is_err());
        server.restart();
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(s.ready().await.is_ok());
    }
}
