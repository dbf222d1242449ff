//! What the two circuit-breaker benches share: the defaults every breaker is given, our breaker
//! with them, what counts as a failure, and tower-resilience's breaker configured like ours.

use std::convert::Infallible;
use std::future::Ready;
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::BenchmarkGroup;

use tower::{Layer, Service};
use tower_bulwark::circuit_breaker::{
    CircuitBreakerBuilder, CircuitBreakerLayer as BulwarkBreakerLayer,
};
use tower_resilience::circuitbreaker::{CircuitBreakerError, CircuitBreakerLayer};

use super::{assert_answers_ok, bench_service, noop, Req, Res};

/// Our defaults, given to every breaker: 5 consecutive failures open it, for 60 s; in half-open,
/// 5 successes close it (where the peer lets us say so).
pub const FAILURES: u32 = 5;
pub const OPEN_FOR: Duration = Duration::from_secs(60);
pub const HALF_OPEN_SUCCESSES: u32 = 5;

/// Our breaker with our defaults, spelled out (in memory until given a backend).
pub fn our_defaults() -> CircuitBreakerBuilder {
    BulwarkBreakerLayer::consecutive_failures(FAILURES)
        .open_for(OPEN_FOR)
        .half_open_successes(HALF_OPEN_SUCCESSES)
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

/// The rows a `closed` group starts with: `bare_service` (the floor: the no-op service called
/// alone) and `tower_resilience` (checked to answer 200 first). Returns the bare service.
pub fn bare_and_resilience_rows(
    g: &mut BenchmarkGroup<'_, WallTime>,
) -> impl Service<Req, Response = Res, Error = Infallible, Future = Ready<Result<Res, Infallible>>>
{
    let mut bare = tower::service_fn(noop);
    g.bench_function("bare_service", |b| bench_service(b, &mut bare));

    let mut svc = resilience(tower::service_fn(noop));
    assert_answers_ok(&mut svc);
    g.bench_function("tower_resilience", |b| bench_service(b, &mut svc));
    bare
}
