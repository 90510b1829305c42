//! The request memory budget: the bytes of requests being received or handled, all connections
//! together, stay below a fixed budget (twice `max_request_bytes`, 128 MiB by default).
//!
//! tonic buffers a whole request message before the handler sees it, so without a budget every
//! client sending a large request at once costs its size in memory: a few dozen 64 MiB produce
//! requests exhaust any machine. Here each request's body is held back until the budget has room
//! for the whole message, whose size the 5-byte gRPC prefix announces; the room is taken all at
//! once (so two half-received requests cannot wait for each other forever) and given back when the
//! handler has answered. While a request waits, HTTP/2 flow control holds its client back: the
//! broker buffers at most the stream's window of it.
//!
//! The same prefixes enforce `max_request_bytes`: a message announcing more is refused at once
//! with RESOURCE_EXHAUSTED naming its size and the limit (`RequestError::TooLarge`), before any
//! of it is buffered or budgeted. Every message of a body is checked, not only the first (the
//! reflection service takes a stream of them). tonic's own decoding limit is set to the same
//! value, so it never sees a message over it.

use super::RequestError;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame};
use std::{
    collections::VecDeque,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll, ready},
    time::Duration,
};
use tokio::{
    sync::{AcquireError, OwnedSemaphorePermit, Semaphore},
    time::Sleep,
};
use tonic::{
    body::Body,
    codegen::{Service, http},
};

/// The gRPC message prefix: a compression flag and a big-endian u32 length.
const PREFIX_BYTES: usize = 5;
/// Once a message has room in the budget, its bytes must arrive within this time plus
/// [`SECONDS_PER_MIB`] per MiB, else the request fails and its room is given back: a client that
/// announces a large message and then stalls must not hold the budget that others wait for.
const BODY_BASE_TIMEOUT: Duration = Duration::from_secs(5);
const SECONDS_PER_MIB: u64 = 1;

/// A tower layer that puts every request under one [`RequestBudget`].
#[derive(Debug, Clone)]
pub(super) struct RequestBudget {
    permits: Arc<Semaphore>,
    /// The budget in bytes; a message larger than this (possible only if the message limit is
    /// under the prefix size, or larger than the budget) passes without room in it.
    bytes: usize,
    /// The largest message accepted (`max_request_bytes`), prefix not counted, as tonic counts.
    max_message_bytes: usize,
}

impl RequestBudget {
    /// A budget of `bytes` (at most `u32::MAX`, the largest gRPC message) for messages of at most
    /// `max_message_bytes` each.
    pub(super) fn new(bytes: usize, max_message_bytes: usize) -> Self {
        let bytes = bytes.min(u32::MAX as usize);
        RequestBudget {
            permits: Arc::new(Semaphore::new(bytes)),
            bytes,
            max_message_bytes,
        }
    }
}

impl RequestBudget {
    /// Bytes of the budget held by requests being received or handled now.
    pub(super) fn in_use(&self) -> usize {
        self.bytes.saturating_sub(self.permits.available_permits())
    }

    /// The budget, in bytes.
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }
}

impl<S> tower::Layer<S> for RequestBudget {
    type Service = Budgeted<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Budgeted {
            inner,
            budget: self.clone(),
        }
    }
}

/// A service whose requests wait for room in the budget.
#[derive(Debug, Clone)]
pub(super) struct Budgeted<S> {
    inner: S,
    budget: RequestBudget,
}

/// Room in the budget taken by one request. The body and the response future each hold a clone:
/// it is given back once the message is read and the handler has answered.
type Held = Arc<Mutex<Option<OwnedSemaphorePermit>>>;

impl<S, ResBody> Service<http::Request<Body>> for Budgeted<S>
where
    S: Service<http::Request<Body>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let held = Held::default();
        let (parts, body) = request.into_parts();
        let body = BudgetBody::new(body, self.budget.clone(), held.clone());
        let request = http::Request::from_parts(parts, Body::new(body));
        // The service that was polled ready handles this request; its clone takes the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let response = inner.call(request).await;
            // The handler has answered: the request's message is gone.
            drop(held);
            response
        })
    }
}

enum State {
    /// Reading frames until the first message's prefix is complete.
    Prefix,
    /// Waiting for room for this many bytes in the budget.
    Waiting(
        u32,
        Pin<Box<dyn Future<Output = Result<OwnedSemaphorePermit, AcquireError>> + Send>>,
    ),
    /// Passing frames on: first the stashed ones, then the rest of the body.
    Open { ended: bool },
}

/// A request body held back until its message fits in the budget.
struct BudgetBody {
    inner: Body,
    budget: RequestBudget,
    held: Held,
    /// Frames read while learning the message's size, not yet passed on.
    stash: VecDeque<Frame<Bytes>>,
    state: State,
    /// A message with room in the budget still arriving: its bytes not yet passed on, and when
    /// it must be complete.
    arriving: Option<Arriving>,
    /// Where the body's message boundaries are, to check each message's size.
    messages: Messages,
}

/// Walks the gRPC messages of a body as its frames arrive: each is a 5-byte prefix (a compression
/// flag and a big-endian u32 length) and that many bytes.
struct Messages {
    max_bytes: usize,
    prefix: [u8; PREFIX_BYTES],
    /// Bytes of the current prefix seen.
    seen: usize,
    /// Bytes of the current message still to come.
    rest: usize,
    /// The first message's length, once its prefix is complete.
    first: Option<u32>,
}

impl Messages {
    fn new(max_bytes: usize) -> Self {
        Messages {
            max_bytes,
            prefix: [0; PREFIX_BYTES],
            seen: 0,
            rest: 0,
            first: None,
        }
    }

    /// Follows `data`; the length a prefix in it announces if that is over the limit.
    fn follow(&mut self, mut data: &[u8]) -> Result<(), u32> {
        while !data.is_empty() {
            if self.rest > 0 {
                let n = self.rest.min(data.len());
                self.rest -= n;
                data = &data[n..];
                continue;
            }
            let n = (PREFIX_BYTES - self.seen).min(data.len());
            self.prefix[self.seen..self.seen + n].copy_from_slice(&data[..n]);
            self.seen += n;
            data = &data[n..];
            if self.seen == PREFIX_BYTES {
                self.seen = 0;
                let p = self.prefix;
                let len = u32::from_be_bytes([p[1], p[2], p[3], p[4]]);
                if len as usize > self.max_bytes {
                    return Err(len);
                }
                self.first.get_or_insert(len);
                self.rest = len as usize;
            }
        }
        Ok(())
    }
}

struct Arriving {
    missing: usize,
    size: usize,
    deadline: Pin<Box<Sleep>>,
}

impl BudgetBody {
    fn new(inner: Body, budget: RequestBudget, held: Held) -> Self {
        let messages = Messages::new(budget.max_message_bytes);
        BudgetBody {
            inner,
            budget,
            held,
            stash: VecDeque::new(),
            state: State::Prefix,
            arriving: None,
            messages,
        }
    }

    /// Follows a frame just read from the client; the error if it starts a message over the
    /// limit, after which the body ends.
    fn follow(&mut self, frame: &Frame<Bytes>) -> Result<(), tonic::Status> {
        let Some(data) = frame.data_ref() else {
            return Ok(());
        };
        self.messages.follow(data).map_err(|size| {
            self.stash.clear();
            self.arriving = None;
            self.state = State::Open { ended: true };
            RequestError::TooLarge {
                size: u64::from(size),
                limit: self.budget.max_message_bytes,
            }
            .into()
        })
    }

    /// Counts a frame passed on against the message still arriving.
    fn passed(&mut self, frame: &Frame<Bytes>) {
        if let (Some(a), Some(data)) = (&mut self.arriving, frame.data_ref()) {
            a.missing = a.missing.saturating_sub(data.len());
            if a.missing == 0 {
                self.arriving = None;
            }
        }
    }

    /// The error for a message that did not arrive in time.
    fn too_slow(a: &Arriving) -> tonic::Status {
        RequestError::TooSlow {
            received: a.size - a.missing,
            size: a.size,
            allowed: timeout_for(a.size),
            base: BODY_BASE_TIMEOUT,
            per_mib_secs: SECONDS_PER_MIB,
        }
        .into()
    }

    /// The room to take for a message of `len` bytes (at most the message limit): all of it, or
    /// none if that is more than the whole budget.
    fn wanted(&self, len: usize) -> u32 {
        let bytes = len + PREFIX_BYTES;
        if bytes > self.budget.bytes {
            0
        } else {
            bytes as u32
        }
    }
}

impl HttpBody for BudgetBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let this = self.get_mut();
        loop {
            match &mut this.state {
                State::Open { ended } => {
                    if let Some(frame) = this.stash.pop_front() {
                        this.passed(&frame);
                        return Poll::Ready(Some(Ok(frame)));
                    }
                    if *ended {
                        return Poll::Ready(None);
                    }
                    match Pin::new(&mut this.inner).poll_frame(cx) {
                        Poll::Ready(Some(Ok(frame))) => {
                            this.follow(&frame)?;
                            this.passed(&frame);
                            return Poll::Ready(Some(Ok(frame)));
                        }
                        Poll::Ready(other) => return Poll::Ready(other),
                        Poll::Pending => {}
                    }
                    if let Some(a) = &mut this.arriving {
                        ready!(a.deadline.as_mut().poll(cx));
                        let status = Self::too_slow(a);
                        this.arriving = None;
                        *ended = true;
                        return Poll::Ready(Some(Err(status)));
                    }
                    return Poll::Pending;
                }
                State::Waiting(wanted, acquire) => {
                    // The semaphore is never closed, so acquiring only waits.
                    if let Ok(permit) = ready!(acquire.as_mut().poll(cx)) {
                        let mut held = this.held.lock().unwrap_or_else(PoisonError::into_inner);
                        *held = Some(permit);
                    }
                    let size = *wanted as usize;
                    if size > 0 {
                        this.arriving = Some(Arriving {
                            missing: size,
                            size,
                            deadline: Box::pin(tokio::time::sleep(timeout_for(size))),
                        });
                    }
                    this.state = State::Open { ended: false };
                }
                State::Prefix => match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                    None => this.state = State::Open { ended: true },
                    Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                    Some(Ok(frame)) => {
                        this.follow(&frame)?;
                        this.stash.push_back(frame);
                        if let Some(len) = this.messages.first {
                            let wanted = this.wanted(len as usize);
                            let permits = this.budget.permits.clone();
                            this.state = State::Waiting(
                                wanted,
                                Box::pin(permits.acquire_many_owned(wanted)),
                            );
                        }
                    }
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Open { ended: true }) && self.stash.is_empty()
    }
}

/// How long a message of `bytes` may take to arrive once it has room in the budget.
fn timeout_for(bytes: usize) -> Duration {
    BODY_BASE_TIMEOUT + Duration::from_secs(SECONDS_PER_MIB * (bytes as u64).div_ceil(1 << 20))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    /// A body that yields these chunks as data frames.
    struct Chunks(VecDeque<Bytes>);

    impl HttpBody for Chunks {
        type Data = Bytes;
        type Error = tonic::Status;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
            Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
        }
    }

    fn body(budget: &RequestBudget, chunks: &[&[u8]]) -> (BudgetBody, Held) {
        let held = Held::default();
        let chunks = chunks.iter().map(|c| Bytes::copy_from_slice(c)).collect();
        let body = BudgetBody::new(Body::new(Chunks(chunks)), budget.clone(), held.clone());
        (body, held)
    }

    /// Polls once: `Some(bytes)` for a data frame, `None` at the end; panics if it must wait.
    fn poll(body: &mut BudgetBody) -> Poll<Option<Bytes>> {
        let mut cx = Context::from_waker(Waker::noop());
        Pin::new(body).poll_frame(&mut cx).map(|f| {
            f.map(|f| {
                f.expect("a frame")
                    .into_data()
                    .unwrap_or_else(|_| panic!("not data"))
            })
        })
    }

    fn read_all(body: &mut BudgetBody) -> Vec<u8> {
        let mut out = Vec::new();
        while let Poll::Ready(Some(b)) = poll(body) {
            out.extend_from_slice(&b);
        }
        out
    }

    #[tokio::test]
    async fn a_message_is_passed_on_whole_and_holds_its_size_until_answered() {
        let budget = RequestBudget::new(100, usize::MAX);
        // The prefix arrives in pieces: flag, then the length (10) across two chunks.
        let chunks: [&[u8]; 4] = [b"\0", b"\0\0", b"\0\x0a0123", b"456789"];
        let (mut b, held) = body(&budget, &chunks);
        assert_eq!(read_all(&mut b), chunks.concat());
        assert_eq!(budget.permits.available_permits(), 85);
        drop(b);
        assert_eq!(
            budget.permits.available_permits(),
            85,
            "held until answered"
        );
        drop(held);
        assert_eq!(budget.permits.available_permits(), 100);
    }

    #[tokio::test]
    async fn a_message_that_does_not_fit_waits_and_is_not_read() {
        let budget = RequestBudget::new(30, usize::MAX);
        let (mut first, first_held) = body(&budget, &[b"\0\0\0\0\x14", &[7; 20]]);
        assert_eq!(read_all(&mut first).len(), 25);
        let (mut second, _) = body(&budget, &[b"\0\0\0\0\x14", &[8; 20]]);
        assert!(
            poll(&mut second).is_pending(),
            "25 + 25 bytes do not fit in 30"
        );
        drop(first);
        assert!(
            poll(&mut second).is_pending(),
            "the first is not answered yet"
        );
        drop(first_held);
        assert_eq!(read_all(&mut second).len(), 25);
    }

    #[tokio::test]
    async fn a_message_larger_than_the_budget_is_left_to_the_size_limit() {
        let budget = RequestBudget::new(10, usize::MAX);
        let (mut b, _) = body(&budget, &[b"\0\0\0\x01\0", b"x"]);
        assert_eq!(read_all(&mut b).len(), 6);
        assert_eq!(budget.permits.available_permits(), 10);
    }

    /// Polls until the body fails, ends or must wait; the status it failed with.
    fn error_of(body: &mut BudgetBody) -> Option<tonic::Status> {
        let mut cx = Context::from_waker(Waker::noop());
        loop {
            match Pin::new(&mut *body).poll_frame(&mut cx) {
                Poll::Ready(Some(Ok(_))) => {}
                Poll::Ready(Some(Err(status))) => return Some(status),
                Poll::Ready(None) | Poll::Pending => return None,
            }
        }
    }

    #[tokio::test]
    async fn a_message_over_the_limit_is_refused_before_it_is_read_or_budgeted() {
        let budget = RequestBudget::new(100, 20);
        let (mut b, _) = body(&budget, &[b"\0\0\0\0\x15", &[1; 21]]);
        let status = error_of(&mut b).expect("refused");
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(
            status.message().contains("21 bytes") && status.message().contains("limit of 20 bytes"),
            "{status:?}"
        );
        assert_eq!(budget.permits.available_permits(), 100);
        assert!(poll(&mut b) == Poll::Ready(None), "the body ends");
        assert!(b.is_end_stream());

        let (mut at_limit, held) = body(&budget, &[b"\0\0\0\0\x14", &[1; 20]]);
        assert_eq!(
            read_all(&mut at_limit).len(),
            25,
            "a message at the limit is fine"
        );
        drop((at_limit, held));
    }

    #[tokio::test]
    async fn every_message_of_a_stream_is_checked() {
        let budget = RequestBudget::new(100, 20);
        // Two messages in one frame, then one over the limit split across frames.
        let (mut b, _) = body(
            &budget,
            &[b"\0\0\0\0\x02ab\0\0\0\0\x01c", b"\0\0\0", b"\x01\0xx"],
        );
        let status = error_of(&mut b).expect("the third message is refused");
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(status.message().contains("256 bytes"), "{status:?}");
    }

    #[tokio::test]
    async fn bodies_shorter_than_a_prefix_pass_through() {
        let budget = RequestBudget::new(10, usize::MAX);
        let (mut empty, _) = body(&budget, &[]);
        assert!(poll(&mut empty) == Poll::Ready(None));
        let (mut short, _) = body(&budget, &[b"\0\0"]);
        assert_eq!(read_all(&mut short), b"\0\0");
    }
}
