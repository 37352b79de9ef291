//! The session store as the proxy uses it: the configured store, and a signal that
//! fires whenever sessions end in this process (logout, revocation by SCIM), so that
//! what outlives a request (an upgraded WebSocket tunnel) can check at once whether its
//! session was among them. Sessions ended by another replica are noticed by the
//! periodic check of [`Sessions::ended_for`].

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use portcullis_session::{
    Amend, AnyStore, Marks, SessionData, SessionId, SessionInfo, SessionStore, StoreError,
};
use tokio::sync::watch;

use crate::metrics::{StoreLatency, StoreOp};

/// How often a long-lived connection checks that its session still exists, for ends
/// this process does not see (another replica's logout, an expiry).
pub(crate) const RECHECK: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub(crate) struct Sessions {
    store: AnyStore,
    ended: Arc<watch::Sender<u64>>,
    latency: StoreLatency,
}

impl Sessions {
    pub(crate) fn new(store: AnyStore, latency: StoreLatency) -> Self {
        Sessions {
            store,
            ended: Arc::new(watch::Sender::new(0)),
            latency,
        }
    }

    /// The same store (and the same end signal), observed by other histograms: after a
    /// reload, the new app's.
    pub(crate) fn with_latency(&self, latency: StoreLatency) -> Self {
        Sessions {
            store: self.store.clone(),
            ended: self.ended.clone(),
            latency,
        }
    }

    /// Runs a store operation, observing how long it took.
    async fn timed<T>(&self, op: StoreOp, work: impl Future<Output = T>) -> T {
        let start = Instant::now();
        // Awaited where it lies: moved into an await (or the span's wrapper), the call's
        // future would take its room twice in this one.
        let mut work = std::pin::pin!(work);
        let out = if portcullis_core::trace::recording() {
            portcullis_core::trace::in_span(
                op.span_name(),
                portcullis_core::trace::Kind::Client,
                work.as_mut(),
            )
            .await
        } else {
            work.await
        };
        self.latency.observe(op, start);
        out
    }

    fn signal(&self) {
        self.ended.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Resolves once session `id` has ended: at once when it ends in this process, else
    /// within [`RECHECK`]. A store that cannot be reached does not end it.
    pub(crate) fn ended_for(&self, id: SessionId) -> impl Future<Output = ()> + Send + 'static {
        let store = self.store.clone();
        let mut ended = self.ended.subscribe();
        async move {
            loop {
                tokio::select! {
                    changed = ended.changed() => {
                        if changed.is_err() {
                            tokio::time::sleep(RECHECK).await;
                        }
                    }
                    () = tokio::time::sleep(RECHECK) => {}
                }
                if let Ok(None) = store.load(&id).await {
                    return;
                }
            }
        }
    }
}

impl SessionStore for Sessions {
    async fn create(&self, data: SessionData) -> Result<SessionId, StoreError> {
        self.timed(StoreOp::Create, self.store.create(data)).await
    }

    async fn load(&self, id: &SessionId) -> Result<Option<Arc<SessionData>>, StoreError> {
        self.timed(StoreOp::Load, self.store.load(id)).await
    }

    async fn update(&self, id: &SessionId, data: SessionData) -> Result<bool, StoreError> {
        self.timed(StoreOp::Update, self.store.update(id, data))
            .await
    }

    async fn delete(&self, id: &SessionId) -> Result<(), StoreError> {
        let result = self.timed(StoreOp::Delete, self.store.delete(id)).await;
        self.signal();
        result
    }

    async fn revoke_indexed(&self, index: &str) -> Result<usize, StoreError> {
        let ended = self
            .timed(StoreOp::Revoke, self.store.revoke_indexed(index))
            .await?;
        if ended > 0 {
            self.signal();
        }
        Ok(ended)
    }

    async fn amend_indexed(&self, index: &str, amend: Amend) -> Result<usize, StoreError> {
        self.store.amend_indexed(index, amend).await
    }

    async fn list_indexed(&self, index: &str) -> Result<Vec<SessionInfo>, StoreError> {
        self.store.list_indexed(index).await
    }

    async fn revoke_handle(&self, handle: &str) -> Result<bool, StoreError> {
        let ended = self.store.revoke_handle(handle).await?;
        if ended {
            self.signal();
        }
        Ok(ended)
    }

    async fn remember_once(
        &self,
        scope: &str,
        id: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.store.remember_once(scope, id, ttl).await
    }

    async fn set_disabled(&self, key: &str, disabled: bool) -> Result<(), StoreError> {
        self.store.set_disabled(key, disabled).await
    }

    async fn set_revoked_at(&self, key: &str, at: u64) -> Result<(), StoreError> {
        self.store.set_revoked_at(key, at).await
    }

    async fn marks(&self, keys: &[String]) -> Result<Marks, StoreError> {
        self.timed(StoreOp::Other, self.store.marks(keys)).await
    }

    async fn claim_refresh(&self, id: &SessionId, ttl: Duration) -> Result<bool, StoreError> {
        self.store.claim_refresh(id, ttl).await
    }

    async fn release_refresh(&self, id: &SessionId) -> Result<(), StoreError> {
        self.store.release_refresh(id).await
    }

    async fn ready(&self) -> Result<(), StoreError> {
        self.store.ready().await
    }
}
