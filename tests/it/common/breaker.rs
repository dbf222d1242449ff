//! Fixtures of the circuit-breaker tests: a breaker on a `ManualClock`, driven through the
//! HTTP layer, tripped and waited out; the 503 every refusal must be.

use std::fmt;
use std::time::Duration;

use http::Request;
use tower::Service;
use tower_bulwark::circuit_breaker::{
    CircuitBreakerBuilder, CircuitBreakerLayer, ClassifyResponse,
};
use tower_bulwark::clock::ManualClock;

use super::{assert_json_refusal, get, ok, Body, Res};

/// `policy` on a fresh `ManualClock` at zero, built: the clock (for the test to move) and the
/// layer.
pub fn on_clock<C: ClassifyResponse>(
    policy: CircuitBreakerBuilder<C>,
) -> (ManualClock, CircuitBreakerLayer) {
    let clock = ManualClock::new();
    let layer = policy.clock(clock.clone()).build().unwrap();
    (clock, layer)
}

/// The status a request gets (the inner service must not fail).
pub async fn status<S>(svc: &mut S, path: &str) -> u16
where
    S: Service<Request<Body>, Response = Res>,
    S::Error: fmt::Debug,
{
    ok(svc, get(path)).await.status().as_u16()
}

/// As [`status`] for `POST path`: how gRPC calls travel.
pub async fn post_status<S>(svc: &mut S, path: &str) -> u16
where
    S: Service<Request<Body>, Response = Res>,
    S::Error: fmt::Debug,
{
    let mut req = get(path);
    *req.method_mut() = http::Method::POST;
    ok(svc, req).await.status().as_u16()
}

/// Sends `n` requests to `path`, each must be answered with `expect` by the inner service.
pub async fn repeat<S>(svc: &mut S, path: &str, n: usize, expect: u16)
where
    S: Service<Request<Body>, Response = Res>,
    S::Error: fmt::Debug,
{
    for i in 0..n {
        assert_eq!(status(svc, path).await, expect, "call {i} to {path}");
    }
}

/// Opens `svc`'s breaker with `failures` calls to `/status/500` in a row (each answered 500),
/// then moves `clock` on by `open_for`: the next call is a probe.
pub async fn trip_and_wait<S>(svc: &mut S, failures: usize, clock: &ManualClock, open_for: Duration)
where
    S: Service<Request<Body>, Response = Res>,
    S::Error: fmt::Debug,
{
    repeat(svc, "/status/500", failures, 500).await;
    clock.advance(open_for);
}

/// Asserts a refusal of the HTTP layer: 503, JSON body, `Retry-After` in whole seconds.
pub async fn assert_refused(res: Res, retry_after: u64) {
    assert_json_refusal(res, 503, "Service unavailable", retry_after).await;
}
