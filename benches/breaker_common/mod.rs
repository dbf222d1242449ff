//! What the two circuit-breaker benches share: the request and response types, the defaults
//! every breaker is given, the no-op inner service, driving one call synchronously, and
//! tower-resilience's breaker configured like ours.

use std::convert::Infallible;
use std::future::{ready, Future, Ready};
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use criterion::{BatchSize, Bencher};
use futures_util::task::noop_waker_ref;
use http::{Request, Response};
use http_body_util::Empty;
use tower::{Layer, Service};
use tower_resilience::circuitbreaker::{CircuitBreakerError, CircuitBreakerLayer};

pub type Req = Request<()>;
pub type Res = Response<Empty<Bytes>>;

/// Our defaults, given to every breaker: 5 consecutive failures open it, for 60 s; in half-open,
/// 5 successes close it (where the peer lets us say so).
pub const FAILURES: u32 = 5;
pub const OPEN_FOR: Duration = Duration::from_secs(60);
pub const HALF_OPEN_SUCCESSES: u32 = 5;
/// Requests are built 1 000 at a time, outside the timed part, as in `benches/rate_limit.rs`.
pub const BATCH: BatchSize = BatchSize::NumIterations(1_000);

/// The no-op inner service: immediately ready, answers 200 at once.
pub fn noop(_req: Req) -> Ready<Result<Res, Infallible>> {
    ready(Ok(Response::new(Empty::new())))
}

/// `poll_ready`, `call`, one poll: the whole of one request through a synchronous stack.
pub fn drive<S: Service<R>, R>(svc: &mut S, req: R) -> Result<S::Response, S::Error> {
    let mut cx = Context::from_waker(noop_waker_ref());
    assert!(
        matches!(svc.poll_ready(&mut cx), Poll::Ready(Ok(()))),
        "service not ready"
    );
    match pin!(svc.call(req)).poll(&mut cx) {
        Poll::Ready(result) => result,
        Poll::Pending => panic!("the response future did not complete at once"),
    }
}

/// Times `svc` on requests built outside the timed part.
pub fn bench_service<S: Service<Req>>(b: &mut Bencher<'_>, svc: &mut S) {
    b.iter_batched(
        || Request::new(()),
        |req| {
            black_box(drive(svc, req)).ok();
        },
        BATCH,
    );
}

/// What our default classifier counts as a failure: an answer of 5xx.
pub fn is_failure(response: &Res) -> bool {
    response.status().is_server_error()
}

/// tower-resilience's breaker with our defaults around `inner`. Clones of the returned service
/// share one breaker (its `build()` layer makes a new breaker for each `layer` call).
pub fn resilience<S>(
    inner: S,
) -> impl Service<Req, Response = Res, Error = CircuitBreakerError<Infallible>> + Clone
where
    S: Service<Req, Response = Res, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    CircuitBreakerLayer::builder()
        .consecutive_failures(FAILURES as usize)
        .wait_duration_in_open(OPEN_FOR)
        .permitted_calls_in_half_open(HALF_OPEN_SUCCESSES as usize)
        .classify_response(is_failure)
        .build()
        .unwrap()
        .layer(inner)
}
