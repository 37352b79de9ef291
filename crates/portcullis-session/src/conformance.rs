//! The behaviour every [`SessionStore`] must show. Each store's tests call these functions
//! with a fresh store; timings are real (stores such as Redis keep their own clocks).

use std::sync::Arc;
use std::time::Duration;

use portcullis_core::Identity;

use crate::{SessionData, SessionId, SessionLimits, SessionStore};

pub fn identity(id: &str) -> Identity {
    Identity {
        id: id.into(),
        email: Some(format!("{id}@example.com")),
        name: Some(id.to_uppercase()),
        username: Some(id.into()),
        groups: vec!["staff".into()],
        provider: "conformance".into(),
    }
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
    let revoked = store.revoke_user(&carol.user_key()).await.expect("revoke");
    assert_eq!(revoked, 3);
    for id in &ids {
        assert!(
            store.load(id).await.unwrap().is_none(),
            "revoked session still loads"
        );
    }
    assert!(store.load(&dave).await.unwrap().is_some());
    assert_eq!(store.revoke_user(&carol.user_key()).await.unwrap(), 0);
    // A new login after revocation works.
    let again = store
        .create(SessionData::new(carol, LONG.lifetime))
        .await
        .unwrap();
    assert!(store.load(&again).await.unwrap().is_some());
}

/// `store` must have been built with a lifetime of one second.
pub async fn sessions_end_at_their_absolute_lifetime<S: SessionStore>(store: &S) {
    let id = store
        .create(SessionData::new(identity("erin"), Duration::from_secs(1)))
        .await
        .unwrap();
    assert!(store.load(&id).await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(2100)).await;
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
            lifetime: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
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
}
