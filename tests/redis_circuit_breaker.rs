#![cfg(all(feature = "redis", feature = "circuit-breaker"))]
//! The circuit breaker shared by a fleet through Redis: several instances (each its own layer
//! and its own connection) on one private `redis-server` per test.
//!
//! Time: the tests drive the syncs themselves with `sync_fleet()` (the layers' own interval is
//! an hour, so no sync happens behind a test's back except the one a trip or half-open asks
//! for, which only tells the fleet what it would tell it anyway). "Within one refresh
//! interval" is therefore "after one sync of B". The fleet's open time runs on the server's
//! clock: to end it without waiting, a test moves the stored end (`u`) into the past, as time
//! would. The one test with a real interval checks liveness only, bounded by `PATIENCE`.

mod common;

use std::convert::Infallible;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::redis_server::RedisServer;
use http::{Request, Response, StatusCode};
use tower::{service_fn, Layer, Service, ServiceExt};
use tower_bulwark::backend::redis::RedisBackend;
use tower_bulwark::circuit_breaker::{CircuitBreakerLayer, CircuitState};
use tower_bulwark::key::{HeaderKey, Key};

/// No automatic sync during a test: the tests sync by hand.
const NEVER: Duration = Duration::from_secs(3600);
/// The bound on every wait for something outside the layer.
const PATIENCE: Duration = Duration::from_secs(20);
/// The deadline the tests configure: a healthy Redis on a loaded machine must make it.
const PATIENT_DEADLINE: Duration = Duration::from_secs(5);

macro_rules! start_redis {
    () => {
        match RedisServer::start() {
            Some(server) => server,
            None => return,
        }
    };
}

/// An upstream answering with whatever status its handle holds.
#[derive(Clone)]
struct Upstream(Arc<AtomicU16>);

impl Upstream {
    fn new(status: u16) -> Self {
        Self(Arc::new(AtomicU16::new(status)))
    }

    fn set(&self, status: u16) {
        self.0.store(status, Ordering::SeqCst);
    }

    fn service(
        &self,
    ) -> impl Service<Request<()>, Response = Response<String>, Error = Infallible, Future = impl Send>
           + Clone
           + Send {
        let status = self.0.clone();
        service_fn(move |_req: Request<()>| {
            let status = status.load(Ordering::SeqCst);
            async move {
                let mut res = Response::new(String::new());
                *res.status_mut() = StatusCode::from_u16(status).unwrap();
                Ok::<_, Infallible>(res)
            }
        })
    }
}

async fn call<S>(svc: &S, req: Request<()>) -> StatusCode
where
    S: Service<Request<()>, Error = Infallible> + Clone,
    S::Response: HasStatus,
{
    svc.clone().oneshot(req).await.unwrap().status()
}

trait HasStatus {
    fn status(&self) -> StatusCode;
}

impl<B> HasStatus for Response<B> {
    fn status(&self) -> StatusCode {
        Response::status(self)
    }
}

fn req() -> Request<()> {
    Request::new(())
}

fn req_for(upstream: &str) -> Request<()> {
    Request::builder()
        .header("x-upstream", upstream)
        .body(())
        .unwrap()
}

async fn redis(server: &RedisServer) -> RedisBackend {
    RedisBackend::connect(&server.url()).await.unwrap()
}

/// Ends the fleet's open time for `key` (an encoded hash name), as the server clock would.
fn end_open_time(server: &RedisServer, hash: &str) {
    assert_eq!(server.cli(&["HSET", hash, "u", "0"]), "0");
}

const GLOBAL: &str = "{bulwark:global}:cb";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_through_a_open_b_within_one_sync() {
    let server = start_redis!();
    let build = |redis| {
        CircuitBreakerLayer::consecutive_failures(3)
            .open_for(Duration::from_secs(30))
            .backend(redis)
            .sync_interval(NEVER)
            .deadline(PATIENT_DEADLINE)
            .build()
            .unwrap()
    };
    let (a, b) = (build(redis(&server).await), build(redis(&server).await));
    let upstream = Upstream::new(502);
    let (svc_a, svc_b) = (a.layer(upstream.service()), b.layer(upstream.service()));
    a.sync_fleet().await.unwrap();
    b.sync_fleet().await.unwrap();
    for _ in 0..3 {
        assert_eq!(call(&svc_a, req()).await, StatusCode::BAD_GATEWAY);
    }
    assert_eq!(a.circuit().state(), CircuitState::Open);
    assert_eq!(b.circuit().state(), CircuitState::Closed);
    a.sync_fleet().await.unwrap();
    assert_eq!(
        server.cli(&["HGET", GLOBAL, "st"]),
        "1",
        "the fleet is open"
    );
    b.sync_fleet().await.unwrap(); // B's one refresh
    assert_eq!(b.circuit().state(), CircuitState::Open);
    let refused = svc_b.clone().oneshot(req()).await.unwrap();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    let retry: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&retry), "Retry-After {retry}");
    assert_eq!(b.fleet_stats().unwrap().errors, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_on_two_instances_add_up() {
    let server = start_redis!();
    let build = |redis| {
        CircuitBreakerLayer::consecutive_failures(4)
            .backend(redis)
            .sync_interval(NEVER)
            .deadline(PATIENT_DEADLINE)
            .build()
            .unwrap()
    };
    let (a, b) = (build(redis(&server).await), build(redis(&server).await));
    let upstream = Upstream::new(500);
    let (svc_a, svc_b) = (a.layer(upstream.service()), b.layer(upstream.service()));
    a.sync_fleet().await.unwrap();
    b.sync_fleet().await.unwrap();
    call(&svc_a, req()).await;
    call(&svc_a, req()).await;
    call(&svc_b, req()).await;
    a.sync_fleet().await.unwrap();
    b.sync_fleet().await.unwrap();
    assert_eq!(server.cli(&["HGET", GLOBAL, "c"]), "3");
    assert_eq!(a.circuit().state(), CircuitState::Closed, "3 of 4");
    call(&svc_b, req()).await; // the fourth in a row, fleet-wide
    assert_eq!(b.circuit().state(), CircuitState::Closed, "B alone saw 2");
    b.sync_fleet().await.unwrap();
    assert_eq!(b.circuit().state(), CircuitState::Open);
    a.sync_fleet().await.unwrap();
    assert_eq!(a.circuit().state(), CircuitState::Open);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_success_anywhere_ends_the_fleets_run() {
    let server = start_redis!();
    let build = |redis| {
        CircuitBreakerLayer::consecutive_failures(4)
            .backend(redis)
            .sync_interval(NEVER)
            .deadline(PATIENT_DEADLINE)
            .build()
            .unwrap()
    };
    let (a, b) = (build(redis(&server).await), build(redis(&server).await));
    let (bad, good) = (Upstream::new(500), Upstream::new(200));
    let (svc_a, svc_b) = (a.layer(bad.service()), b.layer(good.service()));
    a.sync_fleet().await.unwrap();
    b.sync_fleet().await.unwrap();
    call(&svc_a, req()).await;
    call(&svc_a, req()).await;
    a.sync_fleet().await.unwrap();
    call(&svc_b, req()).await;
    b.sync_fleet().await.unwrap();
    assert_eq!(server.cli(&["HGET", GLOBAL, "c"]), "0");
    call(&svc_a, req()).await; // A's third in a row, but the fleet's first since B's success
    a.sync_fleet().await.unwrap();
    assert_eq!(server.cli(&["HGET", GLOBAL, "c"]), "1");
    assert_eq!(a.circuit().state(), CircuitState::Closed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_rate_over_a_count_window_is_the_fleets() {
    let server = start_redis!();
    let build = |redis| {
        CircuitBreakerLayer::failure_rate(0.5)
            .window_calls(10)
            .minimum_calls(4)
            .backend(redis)
            .sync_interval(NEVER)
            .deadline(PATIENT_DEADLINE)
            .build()
            .unwrap()
    };
    let (a, b) = (build(redis(&server).await), build(redis(&server).await));
    let (bad, good) = (Upstream::new(503), Upstream::new(200));
    let (svc_a, svc_b) = (a.layer(bad.service()), b.layer(good.service()));
    a.sync_fleet().await.unwrap();
    b.sync_fleet().await.unwrap();
    call(&svc_a, req()).await;
    call(&svc_b, req()).await;
    call(&svc_b, req()).await;
    a.sync_fleet().await.unwrap();
    b.sync_fleet().await.unwrap();
    assert_eq!(
        a.circuit().state(),
        CircuitState::Closed,
        "1 of 3: too few, too low"
    );
    call(&svc_a, req()).await; // 2 of 4: the minimum, at the rate
    a.sync_fleet().await.unwrap();
    assert_eq!(a.circuit().state(), CircuitState::Open);
    b.sync_fleet().await.unwrap();
    assert_eq!(b.circuit().state(), CircuitState::Open);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_rate_over_a_time_window_is_the_fleets() {
    let server = start_redis!();
    let build = |redis| {
        CircuitBreakerLayer::failure_rate(0.5)
            .window_time(Duration::from_secs(600))
            .minimum_calls(4)
            .backend(redis)
            .sync_interval(NEVER)
            .deadline(PATIENT_DEADLINE)
            .build()
            .unwrap()
    };
    let (a, b) = (build(redis(&server).await), build(redis(&server).await));
    let (bad, good) = (Upstream::new(503), Upstream::new(200));
    let (svc_a, svc_b) = (a.layer(bad.service()), b.layer(good.service()));
    a.sync_fleet().await.unwrap();
    b.sync_fleet().await.unwrap();
    call(&svc_a, req()).await;
    call(&svc_b, req()).await;
    call(&svc_b, req()).await;
    a.sync_fleet().await.unwrap();
    b.sync_fleet().await.unwrap();
    assert_eq!(b.circuit().state(), CircuitState::Closed);
    call(&svc_a, req()).await;
    a.sync_fleet().await.unwrap();
    b.sync_fleet().await.unwrap();
    assert_eq!(b.circuit().state(), CircuitState::Open);
}

/// Opens the fleet through A and ends its open time: both instances then follow the fleet
/// into half-open.
async fn fleet_half_open(
    server: &RedisServer,
    a: &CircuitBreakerLayer,
    b: &CircuitBreakerLayer,
    svc_a: &(impl Service<Request<()>, Response = Response<impl Sized>, Error = Infallible> + Clone),
    upstream: &Upstream,
) {
    a.sync_fleet().await.unwrap();
    b.sync_fleet().await.unwrap();
    upstream.set(500);
    call(svc_a, req()).await;
    a.sync_fleet().await.unwrap();
    b.sync_fleet().await.unwrap();
    assert_eq!(b.circuit().state(), CircuitState::Open);
    end_open_time(server, GLOBAL);
    a.sync_fleet().await.unwrap();
    b.sync_fleet().await.unwrap();
    assert_eq!(server.cli(&["HGET", GLOBAL, "st"]), "2");
    assert_eq!(a.circuit().state(), CircuitState::HalfOpen);
    assert_eq!(b.circuit().state(), CircuitState::HalfOpen);
}

fn one_failure_opens(redis: RedisBackend, successes: u32) -> CircuitBreakerLayer {
    CircuitBreakerLayer::consecutive_failures(1)
        .half_open_successes(successes)
        .backend(redis)
        .sync_interval(NEVER)
        .deadline(PATIENT_DEADLINE)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_instance_at_a_time_probes_for_the_fleet() {
    let server = start_redis!();
    let (a, b) = (
        one_failure_opens(redis(&server).await, 2),
        one_failure_opens(redis(&server).await, 2),
    );
    let upstream = Upstream::new(200);
    let (svc_a, svc_b) = (a.layer(upstream.service()), b.layer(upstream.service()));
    fleet_half_open(&server, &a, &b, &svc_a, &upstream).await;
    upstream.set(200);
    // Nobody holds the lease yet: both refuse, and ask for it at their next sync.
    assert_eq!(call(&svc_a, req()).await, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(call(&svc_b, req()).await, StatusCode::SERVICE_UNAVAILABLE);
    a.sync_fleet().await.unwrap();
    b.sync_fleet().await.unwrap();
    // One of them got the lease (whichever synced first: a sync also runs when half-open
    // begins): its probe goes through, the other's is refused, and asking again is no use.
    let (first_a, first_b) = (call(&svc_a, req()).await, call(&svc_b, req()).await);
    let (holder, holder_svc, other, other_svc) = match (first_a, first_b) {
        (StatusCode::OK, StatusCode::SERVICE_UNAVAILABLE) => (&a, &svc_a, &b, &svc_b),
        (StatusCode::SERVICE_UNAVAILABLE, StatusCode::OK) => (&b, &svc_b, &a, &svc_a),
        other => panic!("exactly one instance may probe, got {other:?}"),
    };
    other.sync_fleet().await.unwrap();
    assert_eq!(
        call(other_svc, req()).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    // The holder's second success closes it, and, once told, the fleet and the other.
    assert_eq!(call(holder_svc, req()).await, StatusCode::OK);
    holder.sync_fleet().await.unwrap();
    assert_eq!(server.cli(&["HGET", GLOBAL, "st"]), "0");
    other.sync_fleet().await.unwrap();
    assert_eq!(other.circuit().state(), CircuitState::Closed);
    assert_eq!(call(other_svc, req()).await, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_probe_reopens_the_fleet() {
    let server = start_redis!();
    let (a, b) = (
        one_failure_opens(redis(&server).await, 2),
        one_failure_opens(redis(&server).await, 2),
    );
    let upstream = Upstream::new(200);
    let (svc_a, svc_b) = (a.layer(upstream.service()), b.layer(upstream.service()));
    fleet_half_open(&server, &a, &b, &svc_a, &upstream).await;
    assert_eq!(call(&svc_b, req()).await, StatusCode::SERVICE_UNAVAILABLE);
    b.sync_fleet().await.unwrap(); // B holds the lease
    assert_eq!(call(&svc_b, req()).await, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(b.circuit().state(), CircuitState::Open);
    b.sync_fleet().await.unwrap();
    assert_eq!(server.cli(&["HGET", GLOBAL, "st"]), "1");
    a.sync_fleet().await.unwrap();
    assert_eq!(a.circuit().state(), CircuitState::Open);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_breakers_share_each_key_apart() {
    let server = start_redis!();
    let build = |redis| {
        CircuitBreakerLayer::consecutive_failures(2)
            .backend(redis)
            .sync_interval(NEVER)
            .deadline(PATIENT_DEADLINE)
            .per_key(HeaderKey::new(http::HeaderName::from_static("x-upstream")))
            .build()
            .unwrap()
    };
    let (a, b) = (build(redis(&server).await), build(redis(&server).await));
    let (bad, good) = (Upstream::new(502), Upstream::new(200));
    let (svc_a, svc_b) = (a.layer(bad.service()), b.layer(good.service()));
    // B has circuits for both keys.
    assert_eq!(call(&svc_b, req_for("x")).await, StatusCode::OK);
    assert_eq!(call(&svc_b, req_for("y")).await, StatusCode::OK);
    call(&svc_a, req_for("x")).await;
    call(&svc_a, req_for("x")).await;
    a.sync_fleet().await.unwrap();
    assert_eq!(server.cli(&["HGET", "{bulwark:h:x}:cb", "st"]), "1");
    b.sync_fleet().await.unwrap();
    let key = |k: &'static str| Key::from(http::HeaderValue::from_static(k));
    assert_eq!(b.state_of(&key("x")), Some(CircuitState::Open));
    assert_eq!(b.state_of(&key("y")), Some(CircuitState::Closed));
    assert_eq!(
        call(&svc_b, req_for("x")).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(call(&svc_b, req_for("y")).await, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_key_expires() {
    let server = start_redis!();
    let layer = CircuitBreakerLayer::consecutive_failures(2)
        .open_for(Duration::from_secs(30))
        .backend(redis(&server).await)
        .sync_interval(Duration::from_secs(1))
        .deadline(PATIENT_DEADLINE)
        .build()
        .unwrap();
    layer.sync_fleet().await.unwrap();
    let ttl: i64 = server.cli(&["PTTL", GLOBAL]).parse().unwrap();
    // Twice the longest of the open time (30 s) and ten intervals (10 s).
    assert!(ttl > 50_000 && ttl <= 60_000, "PTTL {ttl}");
}

/// A deadline short enough to test outages with; what a sync may take beyond it on a loaded
/// machine is `SLACK`.
const DEADLINE: Duration = Duration::from_millis(50);
const SLACK: Duration = Duration::from_millis(450);

/// A one-failure breaker with the short deadline, synced once with a healthy Redis (retried:
/// on a loaded machine a healthy Redis may miss 50 ms).
async fn synced_with_short_deadline(server: &RedisServer) -> CircuitBreakerLayer {
    let layer = CircuitBreakerLayer::consecutive_failures(1)
        .half_open_successes(1)
        .open_for(Duration::from_secs(30))
        .backend(redis(server).await)
        .sync_interval(NEVER)
        .deadline(DEADLINE)
        .build()
        .unwrap();
    let started = Instant::now();
    while layer.sync_fleet().await.is_err() {
        assert!(started.elapsed() < PATIENCE, "Redis never answered");
    }
    layer
}

/// Alone, the breaker still opens on its own failures and refuses at once.
async fn decides_alone(layer: &CircuitBreakerLayer) {
    let stats = layer.fleet_stats().unwrap();
    assert!(stats.in_fallback);
    assert_eq!(stats.fallbacks, 1);
    let upstream = Upstream::new(500);
    let svc = layer.layer(upstream.service());
    assert_eq!(call(&svc, req()).await, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(layer.circuit().state(), CircuitState::Open);
    let started = Instant::now();
    assert_eq!(call(&svc, req()).await, StatusCode::SERVICE_UNAVAILABLE);
    assert!(started.elapsed() < SLACK, "a refusal waited on something");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_the_breaker_decides_alone_within_the_deadline() {
    let mut server = start_redis!();
    let layer = synced_with_short_deadline(&server).await;
    server.kill();
    let started = Instant::now();
    assert!(layer.sync_fleet().await.is_err());
    assert!(
        started.elapsed() < DEADLINE + SLACK,
        "{:?}",
        started.elapsed()
    );
    decides_alone(&layer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_frozen_the_breaker_decides_alone_within_the_deadline() {
    let server = start_redis!();
    let layer = synced_with_short_deadline(&server).await;
    server.freeze();
    let started = Instant::now();
    assert!(layer.sync_fleet().await.is_err());
    let waited = started.elapsed();
    assert!(
        waited >= DEADLINE,
        "gave up before the deadline: {waited:?}"
    );
    assert!(waited < DEADLINE + SLACK, "{waited:?}");
    assert_eq!(layer.fleet_stats().unwrap().timeouts, 1);
    decides_alone(&layer).await;
    server.thaw();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn back_from_an_outage_it_follows_the_fleet_again() {
    let mut server = start_redis!();
    let layer = synced_with_short_deadline(&server).await;
    server.kill();
    assert!(layer.sync_fleet().await.is_err());
    // Alone, it opens on its own failure; the fleet has not heard.
    let svc = layer.layer(Upstream::new(500).service());
    call(&svc, req()).await;
    assert_eq!(layer.circuit().state(), CircuitState::Open);
    server.restart();
    let started = Instant::now();
    while layer.sync_fleet().await.is_err() {
        assert!(started.elapsed() < PATIENCE, "never reconnected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stats = layer.fleet_stats().unwrap();
    assert!(!stats.in_fallback);
    // The trip it made alone reached the fleet once Redis was back.
    assert_eq!(server.cli(&["HGET", GLOBAL, "st"]), "1");
    assert_eq!(layer.circuit().state(), CircuitState::Open);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sync_task_spreads_an_opening_on_its_own() {
    let server = start_redis!();
    let build = |redis| {
        CircuitBreakerLayer::consecutive_failures(2)
            .backend(redis)
            .sync_interval(Duration::from_millis(50))
            .deadline(PATIENT_DEADLINE)
            .build()
            .unwrap()
    };
    let (a, b) = (build(redis(&server).await), build(redis(&server).await));
    let upstream = Upstream::new(500);
    let svc_a = a.layer(upstream.service());
    call(&svc_a, req()).await;
    call(&svc_a, req()).await;
    let started = Instant::now();
    while b.circuit().state() != CircuitState::Open {
        assert!(started.elapsed() < PATIENCE, "B never opened");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
