//! What a request through a retry layer costs when no retry is needed (the success path, what
//! every request pays), ours beside `tower::retry` and tower-resilience's retry.
//!
//! Groups:
//! * `success_get`: `GET /` with an empty body, answered 200 at once by a no-op service.
//! * `success_put_1k`: `PUT /` with a 1 KiB body (`Full<Bytes>`): a body that must be kept so
//!   that it can be sent again, so here every layer keeps a copy (ours holds the `Bytes`, the
//!   peers clone the request, which clones the `Bytes` handle).
//!
//! The rows, each configured for 3 retries of 5xx answers and errors, with a budget:
//! * `bare`: the no-op service alone, the floor.
//! * `tower_retry`: `tower::retry::Retry` with a `Policy` that clones the request (method, URI,
//!   version, headers, body) before each attempt, retries 502/503/504/429 and errors, and
//!   spends a `TpsBudget` (10 s, 10 per second, 20 %), our budget's defaults. `tower::retry`
//!   has no backoff or jitter of its own; a policy would add a sleep future, which the success
//!   path never creates.
//! * `tower_resilience`: tower-resilience's `RetryLayer` (0.13), `max_attempts(4)`,
//!   exponential backoff from 1 s, `retry_on_response` for the same statuses, and its
//!   token-bucket budget (10 tokens per second, 100 at most). It needs a `Clone` request, so
//!   the request is wrapped in a type whose `clone` copies it as the `tower_retry` policy does;
//!   it clones the request before every attempt, the first included, and boxes its future.
//! * `ours`: our `RetryLayer` with its defaults (3 retries, full jitter, budget of 20 % plus
//!   10 per second over 10 s, bodies up to 64 KiB kept).
//!
//! Everything is driven synchronously, as in `benches/circuit_breaker.rs`: `poll_ready`,
//! `call`, one poll with a no-op waker (every row completes in one poll; `drive` asserts it).
//! Requests are built outside the timed part (1 000 at a time); the timed part includes
//! dropping the request and the response.
//!
//! ```sh
//! cargo bench --bench retry --features retry
//! ```

mod common;

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use common::tower_retry::{copy, TowerPolicy};
use common::{config, drive, BATCH};
use criterion::{criterion_group, criterion_main, Criterion};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use tower::Layer;
use tower_bulwark::retry::{RetryBody, RetryLayer};

type Req = Request<Full<Bytes>>;
type Res = Response<Full<Bytes>>;

fn answer() -> Ready<Result<Res, Infallible>> {
    ready(Ok(Response::new(Full::default())))
}

/// The statuses every row retries.
fn retryable(status: StatusCode) -> bool {
    matches!(status.as_u16(), 429 | 502 | 503 | 504)
}

/// A request tower-resilience can clone.
struct Cloned(Req);

impl Clone for Cloned {
    fn clone(&self) -> Self {
        Cloned(copy(&self.0))
    }
}

fn get() -> Req {
    Request::new(Full::default())
}

fn put_1k() -> Req {
    let mut req = Request::new(Full::new(Bytes::from(vec![b'x'; 1024])));
    *req.method_mut() = Method::PUT;
    req
}

fn group(c: &mut Criterion, name: &str, next: fn() -> Req) {
    let mut g = c.benchmark_group(name);

    let mut bare = tower::service_fn(|_req: Req| answer());
    g.bench_function("bare", |b| {
        b.iter_batched(next, |req| black_box(drive(&mut bare, req)).ok(), BATCH)
    });

    let mut tower_retry = tower::retry::RetryLayer::new(TowerPolicy::new())
        .layer(tower::service_fn(|_req: Req| answer()));
    assert_eq!(drive(&mut tower_retry, next()).unwrap().status(), 200);
    g.bench_function("tower_retry", |b| {
        b.iter_batched(
            next,
            |req| black_box(drive(&mut tower_retry, req)).ok(),
            BATCH,
        )
    });

    let resilience_budget = tower_resilience::retry::RetryBudgetBuilder::new()
        .token_bucket()
        .tokens_per_second(10.0)
        .max_tokens(100)
        .build()
        .unwrap();
    let mut resilience = tower_resilience::retry::RetryLayer::<Cloned, Res, Infallible>::builder()
        .max_attempts(4)
        .exponential_backoff(Duration::from_secs(1))
        .retry_on_response(|res: &Res| retryable(res.status()))
        .budget(resilience_budget)
        .build()
        .layer(tower::service_fn(|_req: Cloned| answer()));
    assert_eq!(
        drive(&mut resilience, Cloned(next())).unwrap().status(),
        200
    );
    g.bench_function("tower_resilience", |b| {
        b.iter_batched(
            || Cloned(next()),
            |req| black_box(drive(&mut resilience, req)).ok(),
            BATCH,
        )
    });

    let layer = RetryLayer::builder().build().unwrap();
    let mut ours = layer.layer(tower::service_fn(
        |_req: Request<RetryBody<Full<Bytes>>>| answer(),
    ));
    assert_eq!(drive(&mut ours, next()).unwrap().status(), 200);
    g.bench_function("ours", |b| {
        b.iter_batched(next, |req| black_box(drive(&mut ours, req)).ok(), BATCH)
    });
    let stats = layer.stats();
    assert_eq!(stats.retries, 0, "the success path retried");
    g.finish();
}

fn success_get(c: &mut Criterion) {
    group(c, "success_get", get);
}

fn success_put_1k(c: &mut Criterion) {
    group(c, "success_put_1k", put_1k);
}

criterion_group! {
    name = benches;
    config = config(Duration::from_secs(3), 50);
    targets = success_get, success_put_1k
}
criterion_main!(benches);
