//! Request bodies. [`RequestBody`] is what every handler receives: the client's body as
//! hyper delivered it, or a body a test wrote; converting at the server boundary is what
//! lets handlers be called in-process with a request built in a test.
//!
//! [`BodyLimits`] governs the bodies Portcullis reads itself (the login callback's form,
//! SCIM requests), as opposed to proxied bodies, which stream through and are never held.
//!
//! Reading a body means holding it, so a client could pin memory by sending bodies
//! slowly or on many connections at once. Three limits stop that: a body larger than
//! the limit is refused (413, before reading when `Content-Length` says so); the whole
//! body must arrive within the read timeout (408), which also sets a minimum rate; and
//! every byte held counts against one budget shared by all connections, beyond which a
//! request gets 503 instead of memory. Callers check what they can before reading (the
//! SCIM credential, the login cookie), so most of the budget is only reachable with one.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The budget is counted in units of this many bytes.
const UNIT: usize = 1024;

/// A request body: the client's, or (in tests) one given whole.
pub enum RequestBody {
    Client(Incoming),
    /// A complete body; `None` once read.
    Full(Option<Bytes>),
}

impl RequestBody {
    pub fn empty() -> Self {
        RequestBody::Full(None)
    }

    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        RequestBody::Full((!bytes.is_empty()).then_some(bytes))
    }
}

impl From<Incoming> for RequestBody {
    fn from(body: Incoming) -> Self {
        RequestBody::Client(body)
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            RequestBody::Client(body) => Pin::new(body).poll_frame(cx),
            RequestBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Client(body) => body.is_end_stream(),
            RequestBody::Full(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Client(body) => body.size_hint(),
            RequestBody::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyError {
    /// Larger than the limit.
    TooLarge,
    /// Did not arrive within the read timeout.
    Timeout,
    /// The shared budget is spent: too many bodies are being read at once.
    Busy,
    /// The client broke off (or the stream failed) mid-body.
    Aborted,
}

/// A body that was read, and its share of the budget, returned when dropped.
pub(crate) struct Buffered {
    pub bytes: Bytes,
    _permit: Option<OwnedSemaphorePermit>,
}

/// The limits on bodies Portcullis reads, shared by every worker.
#[derive(Clone)]
pub(crate) struct BodyLimits {
    budget: Arc<Semaphore>,
    pub max_bytes: usize,
    timeout: Duration,
}

impl BodyLimits {
    pub(crate) fn new(max_bytes: usize, budget_bytes: usize, timeout: Duration) -> Self {
        BodyLimits {
            budget: Arc::new(Semaphore::new(budget_bytes.div_ceil(UNIT).max(1))),
            max_bytes,
            timeout,
        }
    }

    /// Reads a whole body of at most `self.max_bytes`, within the limits above.
    pub(crate) async fn read<B>(&self, headers: &HeaderMap, body: B) -> Result<Buffered, BodyError>
    where
        B: Body<Data = Bytes> + Unpin,
    {
        let declared = headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.max_bytes as u64) {
            return Err(BodyError::TooLarge);
        }
        tokio::time::timeout(self.timeout, self.collect(body, declared))
            .await
            .unwrap_or(Err(BodyError::Timeout))
    }

    async fn collect<B>(&self, mut body: B, declared: Option<u64>) -> Result<Buffered, BodyError>
    where
        B: Body<Data = Bytes> + Unpin,
    {
        let mut held: Option<OwnedSemaphorePermit> = None;
        let mut units = 0usize;
        // Memory is counted as allocated, not as filled: a declared length is reserved
        // (and counted) up front, and a growing buffer counts its capacity.
        let mut take = |bytes: usize, held: &mut Option<OwnedSemaphorePermit>| {
            let needed = bytes.div_ceil(UNIT);
            if needed <= units {
                return Ok(());
            }
            let more = u32::try_from(needed - units).map_err(|_| BodyError::TooLarge)?;
            let permit = self
                .budget
                .clone()
                .try_acquire_many_owned(more)
                .map_err(|_| BodyError::Busy)?;
            match held {
                Some(h) => h.merge(permit),
                None => *held = Some(permit),
            }
            units = needed;
            Ok(())
        };
        let mut first: Option<Bytes> = None;
        let mut rest = match declared {
            Some(n) => {
                let n = n as usize; // at most max_bytes, checked by the caller
                take(n, &mut held)?;
                BytesMut::with_capacity(n)
            }
            None => BytesMut::new(),
        };
        let mut len = 0usize;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| BodyError::Aborted)?;
            let Ok(data) = frame.into_data() else {
                continue; // trailers
            };
            len += data.len();
            if len > self.max_bytes {
                return Err(BodyError::TooLarge);
            }
            take(len, &mut held)?;
            // Most bodies arrive in one frame: keep it without copying.
            match first.take() {
                None if rest.is_empty() => first = Some(data),
                Some(earlier) => {
                    if rest.capacity() < len {
                        take(len.next_power_of_two(), &mut held)?;
                    }
                    rest.extend_from_slice(&earlier);
                    rest.extend_from_slice(&data);
                }
                None => {
                    if rest.capacity() < len {
                        take(len.next_power_of_two(), &mut held)?;
                    }
                    rest.extend_from_slice(&data);
                }
            }
        }
        Ok(Buffered {
            bytes: first.unwrap_or_else(|| rest.freeze()),
            _permit: held,
        })
    }

    /// Units of the budget free now (for tests and metrics).
    #[cfg(test)]
    fn free_units(&self) -> usize {
        self.budget.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;

    fn limits() -> BodyLimits {
        BodyLimits::new(8 * 1024, 16 * 1024, Duration::from_millis(200))
    }

    #[tokio::test]
    async fn a_body_within_the_limits_is_read_whole() {
        let l = limits();
        let got = l
            .read(&HeaderMap::new(), Full::new(Bytes::from_static(b"a=1&b=2")))
            .await
            .unwrap();
        assert_eq!(&got.bytes[..], b"a=1&b=2");
        assert_eq!(l.free_units(), 15);
        drop(got);
        assert_eq!(l.free_units(), 16, "the budget comes back");
    }

    #[tokio::test]
    async fn a_declared_or_actual_oversize_body_is_refused() {
        let l = limits();
        let mut h = HeaderMap::new();
        h.insert("content-length", "1000000".parse().unwrap());
        assert_eq!(
            l.read(&h, Full::new(Bytes::new())).await.err(),
            Some(BodyError::TooLarge)
        );
        let big = Full::new(Bytes::from(vec![b'x'; 9 * 1024]));
        assert_eq!(
            l.read(&HeaderMap::new(), big).await.err(),
            Some(BodyError::TooLarge)
        );
        assert_eq!(l.free_units(), 16);
    }

    /// A body that sends one byte and then nothing more.
    struct Trickle(bool);

    impl Body for Trickle {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
            if self.0 {
                return std::task::Poll::Pending;
            }
            self.0 = true;
            std::task::Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from_static(b"a")))))
        }
    }

    #[tokio::test]
    async fn a_body_that_trickles_in_times_out() {
        let l = limits();
        assert_eq!(
            l.read(&HeaderMap::new(), Trickle(false)).await.err(),
            Some(BodyError::Timeout)
        );
        assert_eq!(l.free_units(), 16);
    }

    #[tokio::test]
    async fn the_shared_budget_refuses_bodies_beyond_it() {
        let l = limits();
        let a = l
            .read(
                &HeaderMap::new(),
                Full::new(Bytes::from(vec![b'x'; 8 * 1024])),
            )
            .await
            .unwrap();
        let b = l
            .read(
                &HeaderMap::new(),
                Full::new(Bytes::from(vec![b'x'; 8 * 1024])),
            )
            .await
            .unwrap();
        assert_eq!(
            l.read(&HeaderMap::new(), Full::new(Bytes::from_static(b"x")))
                .await
                .err(),
            Some(BodyError::Busy)
        );
        drop((a, b));
        assert!(
            l.read(&HeaderMap::new(), Full::new(Bytes::from_static(b"x")))
                .await
                .is_ok()
        );
    }
}
