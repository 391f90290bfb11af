//! Bodies streamed through the gateway, bounded by time rather than memory.
//!
//! [`Guarded`] wraps a (boxed) request body on its way upstream or a response body on its way back:
//!
//! - **inactivity**: no frame for `stall_after` fails the body ([`BodyError::Stalled`]; a
//!   request then gets 408). The timer is armed only while the body is waiting, so a body that
//!   is already complete costs no timer;
//! - **size**: more data than `limit` fails the body ([`BodyError::TooLarge`], 413);
//! - **trailers**: identity header names are removed from request trailers too, so an
//!   upstream that merges trailers into headers never sees a client's copy;
//! - **slots**: it holds the upstream's `max_connections` slot, and the connection's
//!   in-flight count ([`InFlight`]), until the body ends or is dropped.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Sleep};

use crate::http::headers::StripSet;
use crate::http::upstream::{Body as UpstreamBody, BoxError};

/// Why the gateway ended a body.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BodyError {
    #[error("no body data for {after:?}")]
    Stalled { after: Duration },
    #[error("the body is larger than {limit} bytes")]
    TooLarge { limit: u64 },
}

/// A body with the gateway's bounds (see the module docs).
pub struct Guarded {
    inner: UpstreamBody,
    stall: Option<(Duration, Option<Pin<Box<Sleep>>>)>,
    limit: Option<u64>,
    seen: u64,
    strip_trailers: Option<Arc<StripSet>>,
    _upstream_slot: Option<OwnedSemaphorePermit>,
    _in_flight: Option<InFlight>,
}

impl Guarded {
    /// `inner`, holding `slot` until it ends; no other bound yet.
    pub fn new(inner: UpstreamBody, slot: Option<OwnedSemaphorePermit>) -> Self {
        Guarded {
            inner,
            stall: None,
            limit: None,
            seen: 0,
            strip_trailers: None,
            _upstream_slot: slot,
            _in_flight: None,
        }
    }

    /// Fails the body when no frame arrives for `after`.
    pub fn stall_after(mut self, after: Duration) -> Self {
        self.stall = Some((after, None));
        self
    }

    /// Fails the body beyond `limit` bytes.
    pub fn limit(mut self, limit: Option<u64>) -> Self {
        self.limit = limit;
        self
    }

    /// Removes these names from trailers.
    pub fn strip_trailers(mut self, strip: Arc<StripSet>) -> Self {
        self.strip_trailers = Some(strip);
        self
    }

    /// Counts as in flight on its connection until it ends.
    pub fn in_flight(mut self, guard: InFlight) -> Self {
        self._in_flight = Some(guard);
        self
    }
}

// Deliberately not generic over the inner body's error: a `B::Error: Into<BoxError>` bound
// trips rustc's higher-ranked `Send` check on the spawned connection task, so the inner body
// is a boxed [`UpstreamBody`] already.
impl Body for Guarded {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(mut frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.seen = this.seen.saturating_add(data.len() as u64);
                    if let Some(limit) = this.limit
                        && this.seen > limit
                    {
                        return Poll::Ready(Some(Err(Box::new(BodyError::TooLarge { limit }))));
                    }
                }
                if let (Some(trailers), Some(strip)) = (frame.trailers_mut(), &this.strip_trailers)
                {
                    strip.strip(trailers);
                }
                if let Some((after, Some(sleep))) = &mut this.stall {
                    sleep.as_mut().reset(Instant::now() + *after);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                if let Some((after, sleep)) = &mut this.stall {
                    let after = *after;
                    let sleep = sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep(after)));
                    if sleep.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Some(Err(Box::new(BodyError::Stalled { after }))));
                    }
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What a connection is doing, for the idle timeout: requests in flight, and a count of
/// request starts and ends. A connection is idle when nothing is in flight and the count
/// has not moved for `idle_timeout`; HTTP/2 PINGs and their ACKs do not count.
#[derive(Debug, Default)]
pub struct Activity {
    in_flight: AtomicUsize,
    events: AtomicU64,
}

impl Activity {
    /// Requests in flight, and the event count.
    pub fn snapshot(&self) -> (usize, u64) {
        (self.in_flight.load(Ordering::Acquire), self.events.load(Ordering::Acquire))
    }
}

/// One request in flight on a connection, from its head until its response body ends.
#[derive(Debug)]
pub struct InFlight(Arc<Activity>);

impl InFlight {
    pub fn start(activity: &Arc<Activity>) -> InFlight {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        activity.events.fetch_add(1, Ordering::AcqRel);
        InFlight(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.events.fetch_add(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::upstream::boxed;
    use http_body_util::BodyExt;
    use std::collections::VecDeque;

    /// Frames, then either the end or waiting forever.
    struct Scripted {
        frames: VecDeque<Frame<Bytes>>,
        then_wait: bool,
    }

    impl Body for Scripted {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            let this = self.get_mut();
            match this.frames.pop_front() {
                Some(f) => Poll::Ready(Some(Ok(f))),
                None if this.then_wait => Poll::Pending,
                None => Poll::Ready(None),
            }
        }
    }

    fn chunks(n: usize, then_wait: bool) -> Scripted {
        let frames = (0..n).map(|_| Frame::data(Bytes::from_static(b"12345"))).collect();
        Scripted { frames, then_wait }
    }

    /// A body over its limit fails with TooLarge; one within it passes whole.
    #[tokio::test]
    async fn size_limit_ends_an_oversized_body() {
        let ok = Guarded::new(boxed(chunks(3, false)), None).limit(Some(15));
        assert_eq!(ok.collect().await.unwrap().to_bytes().len(), 15);
        let big = Guarded::new(boxed(chunks(3, false)), None).limit(Some(14));
        let err = big.collect().await.unwrap_err();
        assert!(matches!(err.downcast_ref::<BodyError>(), Some(BodyError::TooLarge { limit: 14 })));
    }

    /// A body that stops sending fails after the inactivity time, not before.
    #[tokio::test(start_paused = true)]
    async fn stalled_body_fails_after_inactivity() {
        let started = Instant::now();
        let stalled =
            Guarded::new(boxed(chunks(2, true)), None).stall_after(Duration::from_secs(60));
        let err = stalled.collect().await.unwrap_err();
        assert!(matches!(err.downcast_ref::<BodyError>(), Some(BodyError::Stalled { .. })));
        assert_eq!(started.elapsed(), Duration::from_secs(60));
    }

    /// Identity names in request trailers are removed; other trailers stay.
    #[tokio::test]
    async fn identity_names_are_stripped_from_trailers() {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("x-client-subject", http::HeaderValue::from_static("CN=admin"));
        trailers.insert("x-checksum", http::HeaderValue::from_static("abc"));
        let body =
            Scripted { frames: VecDeque::from([Frame::trailers(trailers)]), then_wait: false };
        let strip = Arc::new(StripSet::new(vec![]));
        let collected =
            Guarded::new(boxed(body), None).strip_trailers(strip).collect().await.unwrap();
        let t = collected.trailers().unwrap();
        assert!(t.get("x-client-subject").is_none());
        assert_eq!(t["x-checksum"], "abc");
    }

    /// In-flight requests and their ends are counted.
    #[test]
    fn in_flight_counts_requests_until_dropped() {
        let activity = Arc::new(Activity::default());
        let a = InFlight::start(&activity);
        let b = InFlight::start(&activity);
        assert_eq!(activity.snapshot(), (2, 2));
        drop(a);
        drop(b);
        assert_eq!(activity.snapshot(), (0, 4));
    }
}
