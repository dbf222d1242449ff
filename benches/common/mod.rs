//! What the benches share: the request and response types, the no-op inner service, driving one
//! call synchronously, timing a service on requests built outside the timed part, running
//! workers on threads at once, and the criterion settings. `breaker` adds what the two
//! circuit-breaker benches share.
//!
//! Each bench is a crate of its own and uses part of this.
#![allow(dead_code)]

#[cfg(feature = "circuit-breaker")]
pub mod breaker;
#[cfg(feature = "retry")]
pub mod tower_retry;

use std::convert::Infallible;
use std::future::{ready, Future, Ready};
use std::hint::black_box;
use std::pin::pin;
use std::sync::Barrier;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BatchSize, Bencher, Criterion};
use futures_util::task::noop_waker_ref;
use http::{Request, Response};
use http_body_util::Full;
use tower::Service;

pub type Req = Request<()>;
/// An empty `Full`: a body the layers answer in as it is (`LayerBody`).
pub type Res = Response<Full<Bytes>>;

/// Requests are built 1 000 at a time, outside the timed part: small enough that a batch stays in
/// cache and its buffer is reused, large enough that timing each batch costs nothing per request.
pub const BATCH: BatchSize = BatchSize::NumIterations(1_000);

/// The no-op inner service: immediately ready, answers 200 at once.
pub fn noop(_req: Req) -> Ready<Result<Res, Infallible>> {
    ready(Ok(Response::new(Full::default())))
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

/// As [`drive`], for a service that must answer: its response (panics on an error).
pub fn drive_ok<S: Service<R>, R>(svc: &mut S, req: R) -> S::Response {
    match drive(svc, req) {
        Ok(response) => response,
        Err(_) => panic!("the service failed"),
    }
}

/// Asserts that `svc` answers `GET /` with 200 (checked before a row is timed).
pub fn assert_answers_ok<S, B>(svc: &mut S)
where
    S: Service<Req, Response = Response<B>>,
    S::Error: std::fmt::Debug,
{
    assert_eq!(
        drive(svc, Request::new(())).unwrap().status(),
        http::StatusCode::OK
    );
}

/// Times `call` of `svc` on requests from `next`, built outside the timed part.
fn bench_calls<S: Service<Req>, T>(
    b: &mut Bencher<'_>,
    svc: &mut S,
    next: impl FnMut() -> Req,
    mut call: impl FnMut(&mut S, Req) -> T,
) {
    b.iter_batched(
        next,
        |req| {
            black_box(call(svc, req));
        },
        BATCH,
    );
}

/// Times `svc` on `GET /` requests built outside the timed part; an error is an answer too (a
/// breaker's refusal may be one).
pub fn bench_service<S: Service<Req>>(b: &mut Bencher<'_>, svc: &mut S) {
    bench_calls(b, svc, || Request::new(()), |svc, req| drive(svc, req));
}

/// Times `svc` on requests from `next`, built outside the timed part; every call must be
/// answered (an error panics, as [`drive_ok`]).
pub fn bench_answers<S: Service<Req>>(b: &mut Bencher<'_>, svc: &mut S, next: impl FnMut() -> Req) {
    bench_calls(b, svc, next, |svc, req| drive_ok(svc, req));
}

/// Runs `work` on each worker's thread at once, `iters` times; the time is the slowest
/// thread's, from a common start. So the figure per iteration is what one call costs each
/// thread while the others call too: equal to the one-thread figure if nothing is shared.
pub fn on_threads<W: FnMut() + Send>(iters: u64, workers: Vec<W>) -> Duration {
    let barrier = Barrier::new(workers.len());
    std::thread::scope(|s| {
        let handles: Vec<_> = workers
            .into_iter()
            .map(|mut work| {
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    let start = Instant::now();
                    for _ in 0..iters {
                        work();
                    }
                    start.elapsed()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .max()
            .unwrap()
    })
}

/// The criterion settings of a bench: 1 s of warm-up, then `measurement` and `samples`.
pub fn config(measurement: Duration, samples: usize) -> Criterion {
    Criterion::default()
        .measurement_time(measurement)
        .warm_up_time(Duration::from_secs(1))
        .sample_size(samples)
}

/// A 2 KiB JSON array, the body the HTTP benches answer with (as `bench_server`'s `/json`).
pub fn json_2k() -> Bytes {
    let mut out = String::from("[");
    let mut n = 0;
    while out.len() < 2_000 {
        if n > 0 {
            out.push(',');
        }
        out.push_str(&format!(
            "{{\"id\":{n},\"name\":\"item {n}\",\"price\":{}.99}}",
            n * 3
        ));
        n += 1;
    }
    out.push(']');
    Bytes::from(out)
}
