//! What a call through a circuit breaker costs, ours beside tower-resilience's and failsafe's.
//!
//! Compared, and why:
//! * `closed`: one call through a closed breaker around a no-op service, single thread. This is
//!   what every request pays while nothing is wrong, so it is the number that matters most. The
//!   floor is the bare no-op service called alone.
//! * `open`: the cost of a refusal once the breaker is open (opened by five answers of 500, and
//!   open for 60 s, so it stays open for the whole bench). This is what a request pays while the
//!   upstream is down: it should be cheap, since an outage is when load piles up.
//! * `closed_2_threads`: two threads calling through one shared breaker at once, ns per call
//!   per thread. A breaker's state is shared by every clone of the service, so each call reads
//!   (and, on success, may write) a shared line; this shows what that costs under contention.
//!
//! The peers, configured as ours is by default: 5 consecutive failures open the breaker for 60 s.
//! * tower-resilience's `CircuitBreakerLayer` (its tower layer): `consecutive_failures(5)`,
//!   `wait_duration_in_open(60 s)`, `permitted_calls_in_half_open(5)` (5 successes in half-open
//!   close it, as ours), and `classify_response` counting 5xx as failures, as our default
//!   classifier does (its own default counts only `Err`, and an answer of 500 is an `Ok`).
//!   Its call future is boxed, and it takes a `tokio::sync::Mutex` twice per call (admission,
//!   then the outcome); uncontended, that lock is ready at once, so it is driven synchronously
//!   like the others, without a runtime (the single-thread groups assert that every call
//!   completes in one poll). It needs no timer on these paths: it sleeps only in its opt-in
//!   backpressure mode, or when its `try_lock` fails in `poll_ready` while not closed. Each
//!   call also clones the breaker's name (a `String`) into two events, listened to or not.
//! * failsafe's `StateMachine` (its `CircuitBreaker::call`, synchronous: it takes a closure
//!   returning a `Result`), with `failure_policy::consecutive_failures(5, backoff::constant(60 s))`.
//!   The closure drives the same no-op service and maps a 5xx answer to `Err`, so it counts the
//!   same failures. failsafe is not a tower layer, so this is the decision plus the bare call,
//!   the least any breaker around this service can cost. Its half-open state is not
//!   configurable: the first success closes it.
//!
//! Everything is driven synchronously, as in `benches/rate_limit.rs`: `poll_ready`, `call`, and
//! one poll of the returned future with a no-op waker. The one exception is `closed_2_threads`:
//! there tower-resilience's `tokio::sync::Mutex` can be held by the other thread, and its future
//! then returns `Pending` and must be polled again; so in that group every row polls until
//! ready, spinning, still without a runtime. Rows that never return `Pending` poll once there
//! too. The bench prints how many calls had to be polled again. (Tried instead: `block_on` of a
//! current-thread tokio runtime per call, in every row. It adds about 200 ns to the bare service
//! alone, and a `Pending` then parks the thread until the other one wakes it: tower-resilience
//! took 5 to 20 µs per call, which measures the runtime more than the breaker.)
//! Requests are built outside the timed part (`iter_batched`, 1 000 at a time) in the
//! single-thread groups, and inside it (`Request::new(())`, a few ns) in `closed_2_threads`; the
//! timed part includes dropping the request and the response.
//!
//! ```sh
//! cargo bench --bench circuit_breaker --features circuit-breaker
//! ```
//!
//! Ours appears twice in `open`: `ours` (the HTTP layer: a whole 503 response with
//! `Retry-After` and a JSON body) and `ours_generic` (`build_generic()`: a boxed `CircuitOpen`
//! error, like for like with the peers' error values).

mod common;

use std::convert::Infallible;
use std::future::{ready, Future, Ready};
use std::hint::black_box;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use common::breaker::*;
use common::*;
use criterion::{criterion_group, criterion_main, Bencher, Criterion};
use failsafe::{backoff, failure_policy, CircuitBreaker as _};
use futures_util::task::noop_waker_ref;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use tower::{Layer, Service};
use tower_bulwark::circuit_breaker::{
    CircuitBreakerLayer as BulwarkBreakerLayer, CircuitState as BulwarkState,
};
use tower_resilience::circuitbreaker::CircuitBreakerError;

/// An inner service that answers 500 at once: five of these open every breaker here.
fn server_error(_req: Req) -> Ready<Result<Res, Infallible>> {
    let mut response = Response::new(Full::default());
    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    ready(Ok(response))
}

/// Calls that had to be polled more than once in `drive_spin`, in all threads.
static REPOLLED: AtomicU64 = AtomicU64::new(0);

/// As `drive`, but polls again (spinning) while the service or its future is `Pending`: for a
/// future that waits on a lock the other thread holds. Counts such calls in `REPOLLED`.
fn drive_spin<S: Service<R>, R>(svc: &mut S, req: R) -> Result<S::Response, S::Error> {
    let mut cx = Context::from_waker(noop_waker_ref());
    let mut repolled = false;
    loop {
        match svc.poll_ready(&mut cx) {
            Poll::Ready(Ok(())) => break,
            Poll::Ready(Err(_)) => panic!("service failed in poll_ready"),
            Poll::Pending => repolled = true,
        }
        std::hint::spin_loop();
    }
    let mut future = pin!(svc.call(req));
    let result = loop {
        match future.as_mut().poll(&mut cx) {
            Poll::Ready(result) => break result,
            Poll::Pending => repolled = true,
        }
        std::hint::spin_loop();
    };
    if repolled {
        REPOLLED.fetch_add(1, Ordering::Relaxed);
    }
    result
}

/// failsafe's breaker with our defaults (its half-open closes on the first success).
type Failsafe = failsafe::StateMachine<failure_policy::ConsecutiveFailures<backoff::Constant>, ()>;

fn failsafe() -> Failsafe {
    failsafe::Config::new()
        .failure_policy(failure_policy::consecutive_failures(
            FAILURES,
            backoff::constant(OPEN_FOR),
        ))
        .build()
}

/// One call through failsafe's breaker, `call` being the inner call; a 5xx answer counts as a
/// failure. (failsafe's error holds the failed response whole, as its API has it.)
#[allow(clippy::result_large_err)]
fn failsafe_call(
    breaker: &Failsafe,
    call: impl FnOnce() -> Result<Res, Infallible>,
) -> Result<Res, failsafe::Error<Res>> {
    breaker.call(|| match call() {
        Ok(response) if is_failure(&response) => Err(response),
        Ok(response) => Ok(response),
        Err(never) => match never {},
    })
}

// our breaker with our defaults. One layer is one breaker: every service it makes shares it.
fn ours() -> BulwarkBreakerLayer {
    our_defaults().build().unwrap()
}

fn closed(c: &mut Criterion) {
    let mut g = c.benchmark_group("closed");

    let mut bare = bare_and_resilience_rows(&mut g);

    let breaker = failsafe();
    g.bench_function("failsafe", |b| {
        b.iter_batched(
            || Request::new(()),
            |req| {
                black_box(failsafe_call(&breaker, || drive(&mut bare, req))).ok();
            },
            BATCH,
        )
    });
    assert!(breaker.is_call_permitted());

    // the same call through our breaker.
    let layer = ours();
    let mut svc = layer.layer(tower::service_fn(noop));
    assert_answers_ok(&mut svc);
    g.bench_function("ours", |b| bench_service(b, &mut svc));
    assert_eq!(layer.circuit().state(), BulwarkState::Closed);
    assert_eq!(layer.circuit().stats().rejected, 0);

    // Our failure-rate policies (no peer row: the comparison is the consecutive one above):
    // every outcome goes into the window, under its lock.
    for (row, layer) in rate_layers() {
        let mut svc = layer.layer(tower::service_fn(noop));
        g.bench_function(row, |b| bench_service(b, &mut svc));
        assert_eq!(layer.circuit().state(), BulwarkState::Closed);
    }
    g.finish();
}

/// Our failure-rate breakers: over the last 100 calls, and over the last minute.
fn rate_layers() -> [(&'static str, BulwarkBreakerLayer); 2] {
    [
        (
            "ours_rate_count",
            BulwarkBreakerLayer::failure_rate(0.5)
                .window_calls(100)
                .build()
                .unwrap(),
        ),
        (
            "ours_rate_time",
            BulwarkBreakerLayer::failure_rate(0.5)
                .window_time(Duration::from_secs(60))
                .build()
                .unwrap(),
        ),
    ]
}

fn open(c: &mut Criterion) {
    let mut g = c.benchmark_group("open");

    // Opened the honest way: five answers of 500 in a row. The inner service is never called
    // again while the breaker is open.
    let mut svc = resilience(tower::service_fn(server_error));
    for _ in 0..FAILURES {
        let response = drive(&mut svc, Request::new(())).unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
    assert!(matches!(
        drive(&mut svc, Request::new(())),
        Err(CircuitBreakerError::OpenCircuit)
    ));
    g.bench_function("tower_resilience", |b| bench_service(b, &mut svc));
    assert!(matches!(
        drive(&mut svc, Request::new(())),
        Err(CircuitBreakerError::OpenCircuit)
    ));

    let breaker = failsafe();
    let mut failing = tower::service_fn(server_error);
    for _ in 0..FAILURES {
        assert!(matches!(
            failsafe_call(&breaker, || drive(&mut failing, Request::new(()))),
            Err(failsafe::Error::Inner(_))
        ));
    }
    assert!(!breaker.is_call_permitted());
    g.bench_function("failsafe", |b| {
        b.iter_batched(
            || Request::new(()),
            |req| {
                black_box(failsafe_call(&breaker, || drive(&mut failing, req))).ok();
            },
            BATCH,
        )
    });
    assert!(!breaker.is_call_permitted());

    // our breaker, opened the same way. It answers 503 with `Retry-After` and a JSON
    // body (a whole HTTP response, where the peers return an error value: not quite like
    // for like, as in the rate limiter's reject group).
    let layer = ours();
    let mut svc = layer.layer(tower::service_fn(server_error));
    for _ in 0..FAILURES {
        let response = drive(&mut svc, Request::new(())).unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
    assert_eq!(layer.circuit().state(), BulwarkState::Open);
    let refused = drive(&mut svc, Request::new(())).unwrap();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    g.bench_function("ours", |b| bench_service(b, &mut svc));
    assert_eq!(layer.circuit().state(), BulwarkState::Open);
    assert_eq!(layer.circuit().stats().admitted, u64::from(FAILURES));

    // The generic variant, refusing with an error value as the peers do.
    let layer = BulwarkBreakerLayer::consecutive_failures(FAILURES)
        .open_for(OPEN_FOR)
        .half_open_successes(HALF_OPEN_SUCCESSES)
        .build_generic()
        .unwrap();
    let mut svc = layer.layer(tower::service_fn(|_: Req| {
        ready(Err::<Res, _>(std::io::Error::other("down")))
    }));
    for _ in 0..FAILURES {
        assert!(drive(&mut svc, Request::new(())).is_err());
    }
    assert_eq!(layer.circuit().state(), BulwarkState::Open);
    g.bench_function("ours_generic", |b| {
        b.iter_batched(
            || Request::new(()),
            |req| {
                black_box(drive(&mut svc, req)).ok();
            },
            BATCH,
        )
    });
    assert_eq!(layer.circuit().state(), BulwarkState::Open);
    g.finish();
}

const THREADS: usize = 2;

/// Calls made in `closed_2_threads` since the last report, counted once per sample (not per
/// call, so that counting shares no cache line between the threads).
static CALLS: AtomicU64 = AtomicU64::new(0);

/// Times `THREADS` workers from `make` calling at once (see `on_threads`).
fn bench_threads<W: FnMut() + Send>(b: &mut Bencher<'_>, mut make: impl FnMut() -> W) {
    b.iter_custom(|iters| {
        CALLS.fetch_add(iters * THREADS as u64, Ordering::Relaxed);
        let workers = (0..THREADS).map(|_| make()).collect();
        on_threads(iters, workers)
    })
}

/// Prints how many of the calls of the row just run (warm-up included) had to be polled more
/// than once, and resets the counts.
fn report_repolled(row: &str) {
    let repolled = REPOLLED.swap(0, Ordering::Relaxed);
    let calls = CALLS.swap(0, Ordering::Relaxed);
    if repolled > 0 {
        eprintln!(
            "closed_2_threads/{row}: {repolled} of {calls} calls ({:.2} %) found the lock \
             taken and were polled again",
            repolled as f64 * 100.0 / calls as f64
        );
    }
}

fn closed_2_threads(c: &mut Criterion) {
    let mut g = c.benchmark_group("closed_2_threads");

    // The floor: each thread calls its own no-op service, nothing shared.
    g.bench_function("bare_service", |b| {
        bench_threads(b, || {
            let mut svc = tower::service_fn(noop);
            move || {
                black_box(drive_spin(&mut svc, Request::new(()))).ok();
            }
        })
    });
    report_repolled("bare_service");

    // One breaker: each thread has a clone of the same service, so they share its state.
    let svc = resilience(tower::service_fn(noop));
    g.bench_function("tower_resilience", |b| {
        bench_threads(b, || {
            let mut svc = svc.clone();
            move || {
                black_box(drive_spin(&mut svc, Request::new(()))).ok();
            }
        })
    });
    report_repolled("tower_resilience");
    let mut check = svc.clone();
    assert_answers_ok(&mut check);

    // One state machine (clones share it), each thread calling its own no-op service.
    let breaker = failsafe();
    g.bench_function("failsafe", |b| {
        bench_threads(b, || {
            let breaker = breaker.clone();
            let mut bare = tower::service_fn(noop);
            move || {
                let call = || drive_spin(&mut bare, Request::new(()));
                black_box(failsafe_call(&breaker, call)).ok();
            }
        })
    });
    report_repolled("failsafe");
    assert!(breaker.is_call_permitted());

    // one breaker shared by both threads, through clones of one service.
    let layer = ours();
    let svc = layer.layer(tower::service_fn(noop));
    g.bench_function("ours", |b| {
        bench_threads(b, || {
            let mut svc = svc.clone();
            move || {
                black_box(drive_spin(&mut svc, Request::new(()))).ok();
            }
        })
    });
    report_repolled("ours");
    assert_eq!(layer.circuit().state(), BulwarkState::Closed);
    assert_eq!(layer.circuit().stats().rejected, 0);

    for (row, layer) in rate_layers() {
        let svc = layer.layer(tower::service_fn(noop));
        g.bench_function(row, |b| {
            bench_threads(b, || {
                let mut svc = svc.clone();
                move || {
                    black_box(drive_spin(&mut svc, Request::new(()))).ok();
                }
            })
        });
        report_repolled(row);
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = config(Duration::from_secs(2), 30);
    targets = closed, open, closed_2_threads
}
criterion_main!(benches);
