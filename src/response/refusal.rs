//! One refusal type for every layer: what refused the call and when to come back, with its
//! HTTP, gRPC and generic (error) answers. A retry layer recognises any refusal of this crate
//! by this one type, without naming each layer.

use std::fmt;
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode};

use super::{ceil_secs, grpc_answer, is_grpc, retry_json, GrpcCode, LayerBody};

/// What refused a call.
///
/// ```
/// use tower_bulwark::response::RefusalKind;
///
/// assert_eq!(RefusalKind::RateLimited.status(), 429);
/// assert_eq!(RefusalKind::CircuitOpen.status(), 503);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RefusalKind {
    /// A rate limit: `429 Too Many Requests`, gRPC `RESOURCE_EXHAUSTED`.
    RateLimited,
    /// An open (or fully probing half-open) circuit breaker: `503 Service Unavailable`, gRPC
    /// `UNAVAILABLE`. Retrying it at once only hammers what is failing.
    CircuitOpen,
}

impl RefusalKind {
    /// The HTTP status of the refusal.
    ///
    /// ```
    /// assert_eq!(tower_bulwark::response::RefusalKind::CircuitOpen.status(), 503);
    /// ```
    pub fn status(self) -> StatusCode {
        match self {
            RefusalKind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            RefusalKind::CircuitOpen => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The gRPC status of the refusal.
    ///
    /// ```
    /// use tower_bulwark::response::{GrpcCode, RefusalKind};
    /// assert_eq!(RefusalKind::RateLimited.grpc_code(), GrpcCode::ResourceExhausted);
    /// ```
    pub fn grpc_code(self) -> GrpcCode {
        match self {
            RefusalKind::RateLimited => GrpcCode::ResourceExhausted,
            RefusalKind::CircuitOpen => GrpcCode::Unavailable,
        }
    }

    /// The `error` of the JSON body, and the gRPC message.
    fn message(self) -> (&'static str, &'static str) {
        match self {
            RefusalKind::RateLimited => ("Too many requests", "Too many requests"),
            RefusalKind::CircuitOpen => ("Service unavailable", "Circuit breaker open"),
        }
    }
}

/// A call refused by one of this crate's layers, and how long until it may be tried again;
/// also the error of every generic (non-HTTP) variant. `RateLimited` and `CircuitOpen` are
/// the same type.
///
/// ```
/// use std::time::Duration;
/// use tower_bulwark::response::{Refusal, RefusalKind};
///
/// let err = Refusal::rate_limited(Duration::from_millis(1500));
/// assert_eq!(err.kind(), RefusalKind::RateLimited);
/// assert_eq!(err.retry_after_secs(), 2);
/// assert_eq!(err.to_string(), "rate limited: retry after 2s");
///
/// // A retry layer needs no list of layers: any refusal of this crate is a `Refusal`.
/// let boxed: tower_bulwark::BoxError = Box::new(Refusal::circuit_open(Duration::from_secs(3)));
/// assert_eq!(boxed.downcast_ref::<Refusal>().map(Refusal::kind), Some(RefusalKind::CircuitOpen));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    kind: RefusalKind,
    retry_after: Duration,
}

impl Refusal {
    /// A refusal of `kind` that may be retried after `retry_after`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_bulwark::response::{Refusal, RefusalKind};
    ///
    /// let err = Refusal::new(RefusalKind::CircuitOpen, Duration::from_secs(3));
    /// assert_eq!(err, Refusal::circuit_open(Duration::from_secs(3)));
    /// ```
    pub fn new(kind: RefusalKind, retry_after: Duration) -> Self {
        Self { kind, retry_after }
    }

    /// A rate limit's refusal.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let err = tower_bulwark::response::Refusal::rate_limited(Duration::from_secs(3));
    /// assert_eq!(err.retry_after(), Duration::from_secs(3));
    /// ```
    pub fn rate_limited(retry_after: Duration) -> Self {
        Self::new(RefusalKind::RateLimited, retry_after)
    }

    /// A circuit breaker's refusal.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let err = tower_bulwark::response::Refusal::circuit_open(Duration::from_secs(3));
    /// assert_eq!(err.to_string(), "circuit breaker open: retry after 3s");
    /// ```
    pub fn circuit_open(retry_after: Duration) -> Self {
        Self::new(RefusalKind::CircuitOpen, retry_after)
    }

    /// What refused the call.
    ///
    /// ```
    /// # use std::time::Duration;
    /// use tower_bulwark::response::{Refusal, RefusalKind};
    /// assert_eq!(Refusal::circuit_open(Duration::ZERO).kind(), RefusalKind::CircuitOpen);
    /// ```
    pub fn kind(&self) -> RefusalKind {
        self.kind
    }

    /// How long until the same call could be admitted (exact, not rounded).
    ///
    /// ```
    /// # use std::time::Duration;
    /// let err = tower_bulwark::response::Refusal::rate_limited(Duration::from_millis(250));
    /// assert_eq!(err.retry_after(), Duration::from_millis(250));
    /// ```
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }

    /// [`retry_after`](Self::retry_after) in whole seconds, rounded up, at least 1: the
    /// `Retry-After` header's value.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_bulwark::response::Refusal;
    ///
    /// assert_eq!(Refusal::rate_limited(Duration::from_millis(1001)).retry_after_secs(), 2);
    /// assert_eq!(Refusal::rate_limited(Duration::ZERO).retry_after_secs(), 1); // never 0
    /// ```
    pub fn retry_after_secs(&self) -> u64 {
        ceil_secs(self.retry_after).max(1)
    }

    /// The layer's own answer to the request with headers `request`: a trailers-only gRPC
    /// response for gRPC, else the status with `{"error":..,"retryAfter":N}`. It sees only
    /// headers, so any request with a gRPC content type counts as gRPC here; the layers
    /// themselves also require a `POST`, as every gRPC call is. (Each layer adds
    /// its own headers, `Retry-After` among them.)
    ///
    /// ```
    /// # use std::time::Duration;
    /// use tower_bulwark::response::Refusal;
    ///
    /// let res = Refusal::circuit_open(Duration::from_secs(2))
    ///     .answer::<http_body_util::Full<bytes::Bytes>>(&http::HeaderMap::new());
    /// assert_eq!(res.status(), 503);
    /// ```
    pub fn answer<B: LayerBody>(&self, request: &HeaderMap) -> Response<B> {
        self.answer_bytes(request, is_grpc(request), 0)
            .map(B::from_bytes)
    }

    /// [`answer`](Self::answer) with the body still as bytes, to a request already known to
    /// be gRPC or not (the layers ask `is_grpc_call`, which looks at the method first).
    /// `room`: how many headers the caller adds to it.
    pub(crate) fn answer_bytes(
        &self,
        request: &HeaderMap,
        grpc: bool,
        room: usize,
    ) -> Response<Bytes> {
        static BODIES: [OnceLock<Box<[Bytes]>>; 2] = [OnceLock::new(), OnceLock::new()];
        let (error, grpc_message) = self.kind.message();
        let mut answer = if grpc {
            grpc_answer(request, self.kind.grpc_code(), grpc_message, room)
        } else {
            let cache = match self.kind {
                RefusalKind::RateLimited => &BODIES[0],
                RefusalKind::CircuitOpen => &BODIES[1],
            };
            retry_json(
                self.kind.status(),
                error,
                self.retry_after_secs(),
                cache,
                room,
            )
        };
        // So that a retry layer in the same process knows the answer for this crate's own
        // (and never hammers an open breaker), whatever the status says.
        answer.extensions_mut().insert(*self);
        answer
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            RefusalKind::RateLimited => "rate limited",
            RefusalKind::CircuitOpen => "circuit breaker open",
        };
        write!(f, "{what}: retry after {}s", self.retry_after_secs())
    }
}

impl std::error::Error for Refusal {}
