//! The circuit breaker shared by a fleet through Redis: several instances (each its own layer
//! and its own connection) on one private `redis-server` per test.
//!
//! Time: the tests drive the syncs themselves with `sync_fleet()` (the layers' own interval is
//! an hour, so no sync happens behind a test's back except the one a trip or half-open asks
//! for, which only tells the fleet what it would tell it anyway). "Within one refresh
//! interval" is therefore "after one sync of B". The fleet's open time runs on the server's
//! clock: to end it without waiting, a test moves the stored end (`u`) into the past, as time
//! would. The one test with a real interval checks liveness only, bounded by `PATIENCE`.

use std::time::{Duration, Instant};

use crate::common::fleet::*;
use crate::common::redis_server::{start_redis, RedisServer};
use std::convert::Infallible;

use http::{Request, Response, StatusCode};
use tower::{service_fn, Layer, Service, ServiceExt};
use tower_bulwark::circuit_breaker::{
    CircuitBreakerBuilder, CircuitBreakerLayer, CircuitState, FleetStats,
};
use tower_bulwark::key::Key;

/// Ends the fleet's open time for `key` (an encoded hash name), as the server clock would.
fn end_open_time(server: &RedisServer, hash: &str) {
    assert_eq!(server.cli(&["HSET", hash, "u", "0"]), "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_through_a_open_b_within_one_sync() {
    let server = start_redis!();
    let (a, b) = fleet_pair(&server, || {
        CircuitBreakerLayer::consecutive_failures(3).open_for(Duration::from_secs(30))
    })
    .await;
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
    let (a, b) = fleet_pair(&server, || CircuitBreakerLayer::consecutive_failures(4)).await;
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
    let (a, b) = fleet_pair(&server, || CircuitBreakerLayer::consecutive_failures(4)).await;
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

/// A fleet of A, calling a failing upstream (503), and B, calling a healthy one, both under
/// `policy()` and synced; then one failure through A and two successes through B, and both
/// synced again. Returns A, B and A's service.
async fn one_failure_two_successes(
    server: &RedisServer,
    policy: impl Fn() -> CircuitBreakerBuilder,
) -> (
    CircuitBreakerLayer,
    CircuitBreakerLayer,
    impl Service<Request<()>, Response = Response<impl Sized>, Error = Infallible> + Clone,
) {
    let (a, b) = fleet_pair(server, policy).await;
    let (bad, good) = (Upstream::new(503), Upstream::new(200));
    let (svc_a, svc_b) = (a.layer(bad.service()), b.layer(good.service()));
    a.sync_fleet().await.unwrap();
    b.sync_fleet().await.unwrap();
    call(&svc_a, req()).await;
    call(&svc_b, req()).await;
    call(&svc_b, req()).await;
    a.sync_fleet().await.unwrap();
    b.sync_fleet().await.unwrap();
    (a, b, svc_a)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_rate_over_a_count_window_is_the_fleets() {
    let server = start_redis!();
    let (a, b, svc_a) = one_failure_two_successes(&server, || {
        CircuitBreakerLayer::failure_rate(0.5)
            .window_calls(10)
            .minimum_calls(4)
    })
    .await;
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
    let (a, b, svc_a) = one_failure_two_successes(&server, || {
        CircuitBreakerLayer::failure_rate(0.5)
            .window_time(Duration::from_secs(600))
            .minimum_calls(4)
    })
    .await;
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

/// One failure opens it; `successes` probe successes close it.
fn one_failure_opens(successes: u32) -> CircuitBreakerBuilder {
    CircuitBreakerLayer::consecutive_failures(1).half_open_successes(successes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_instance_at_a_time_probes_for_the_fleet() {
    let server = start_redis!();
    let (a, b) = fleet_pair(&server, || one_failure_opens(2)).await;
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
    let (a, b) = fleet_pair(&server, || one_failure_opens(2)).await;
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
    let (a, b) = pair(&server, |redis| {
        member(CircuitBreakerLayer::consecutive_failures(2), redis)
            .per_key(upstream_key())
            .build()
            .unwrap()
    })
    .await;
    let (bad, good) = (Upstream::new(502), Upstream::new(200));
    let (svc_a, svc_b) = (a.layer(bad.service()), b.layer(good.service()));
    // B has circuits for both keys.
    assert_eq!(call(&svc_b, req_for("x")).await, StatusCode::OK);
    assert_eq!(call(&svc_b, req_for("y")).await, StatusCode::OK);
    call(&svc_a, req_for("x")).await;
    call(&svc_a, req_for("x")).await;
    a.sync_fleet().await.unwrap();
    let name_of_x = a
        .redis_key(&Key::from(http::HeaderValue::from_static("x")))
        .unwrap();
    assert_eq!(server.cli(&["HGET", &name_of_x, "st"]), "1");
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

/// Alone (and saying so: it fell back since `before`), the breaker still opens on its own
/// failures and refuses at once.
async fn decides_alone(layer: &CircuitBreakerLayer, before: FleetStats) {
    let stats = layer.fleet_stats().unwrap();
    assert!(stats.in_fallback);
    assert!(stats.fallbacks > before.fallbacks);
    assert!(stats.errors > before.errors);
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
    let before = layer.fleet_stats().unwrap();
    server.kill();
    let started = Instant::now();
    assert!(layer.sync_fleet().await.is_err());
    assert!(
        started.elapsed() < DEADLINE + SLACK,
        "{:?}",
        started.elapsed()
    );
    decides_alone(&layer, before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_frozen_the_breaker_decides_alone_within_the_deadline() {
    let server = start_redis!();
    let layer = synced_with_short_deadline(&server).await;
    let before = layer.fleet_stats().unwrap();
    server.freeze();
    let started = Instant::now();
    assert!(layer.sync_fleet().await.is_err());
    let waited = started.elapsed();
    assert!(
        waited >= DEADLINE,
        "gave up before the deadline: {waited:?}"
    );
    assert!(waited < DEADLINE + SLACK, "{waited:?}");
    assert!(layer.fleet_stats().unwrap().timeouts > before.timeouts);
    decides_alone(&layer, before).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_whose_holder_went_silent_passes_to_another_instance() {
    let server = start_redis!();
    let (a, b) = fleet_pair(&server, || one_failure_opens(3)).await;
    let upstream = Upstream::new(200);
    let (svc_a, svc_b) = (a.layer(upstream.service()), b.layer(upstream.service()));
    fleet_half_open(&server, &a, &b, &svc_a, &upstream).await;
    upstream.set(200);
    assert_eq!(call(&svc_a, req()).await, StatusCode::SERVICE_UNAVAILABLE);
    a.sync_fleet().await.unwrap();
    assert_eq!(
        call(&svc_a, req()).await,
        StatusCode::OK,
        "A holds the lease"
    );
    a.sync_fleet().await.unwrap(); // A's probe success reaches the fleet
                                   // A goes silent (it crashed): no more syncs. Until its lease runs out, B waits.
    let clients = || server.cli(&["CLIENT", "LIST"]).lines().count();
    let before = clients();
    drop((a, svc_a));
    let started = Instant::now();
    while clients() >= before {
        assert!(started.elapsed() < PATIENCE, "A's connection never closed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(call(&svc_b, req()).await, StatusCode::SERVICE_UNAVAILABLE);
    b.sync_fleet().await.unwrap();
    assert_eq!(call(&svc_b, req()).await, StatusCode::SERVICE_UNAVAILABLE);
    // The lease's time is up (as the server clock would have it, three intervals on).
    assert_eq!(server.cli(&["HSET", GLOBAL, "lu", "0"]), "0");
    assert_eq!(call(&svc_b, req()).await, StatusCode::SERVICE_UNAVAILABLE);
    b.sync_fleet().await.unwrap();
    assert_eq!(
        call(&svc_b, req()).await,
        StatusCode::OK,
        "B took the lease over"
    );
    // Probe successes add up across holders: A's one and B's two make three.
    assert_eq!(call(&svc_b, req()).await, StatusCode::OK);
    b.sync_fleet().await.unwrap();
    assert_eq!(server.cli(&["HGET", GLOBAL, "st"]), "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_circuit_neither_follows_nor_reports() {
    let server = start_redis!();
    let (a, b) = fleet_pair(&server, || one_failure_opens(1)).await;
    let upstream = Upstream::new(500);
    let svc_a = a.layer(upstream.service());
    a.sync_fleet().await.unwrap();
    b.sync_fleet().await.unwrap();
    b.circuit().force_closed();
    a.circuit().force_closed();
    call(&svc_a, req()).await; // a failure, forced closed: not counted, not told
    a.sync_fleet().await.unwrap();
    assert_eq!(server.cli(&["HGET", GLOBAL, "st"]), "0");
    a.circuit().reset();
    call(&svc_a, req()).await; // now it trips, and the fleet opens
    a.sync_fleet().await.unwrap();
    assert_eq!(server.cli(&["HGET", GLOBAL, "st"]), "1");
    b.sync_fleet().await.unwrap();
    assert_eq!(
        b.circuit().state(),
        CircuitState::Closed,
        "forced closed stays so"
    );
    b.circuit().reset();
    b.sync_fleet().await.unwrap();
    assert_eq!(
        b.circuit().state(),
        CircuitState::Open,
        "released, it follows"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overflow_circuit_is_shared_too() {
    let server = start_redis!();
    let (a, b) = pair(&server, |redis| {
        member(CircuitBreakerLayer::consecutive_failures(1), redis)
            .per_key(upstream_key())
            .max_keys(1)
            .build()
            .unwrap()
    })
    .await;
    let (bad, good) = (Upstream::new(502), Upstream::new(200));
    let (svc_a, svc_b) = (a.layer(bad.service()), b.layer(good.service()));
    // B's overflow circuit has had a call (an unused one is not synced).
    assert_eq!(call(&svc_b, req()).await, StatusCode::OK);
    call(&svc_a, req()).await; // no key: the overflow circuit
    a.sync_fleet().await.unwrap();
    assert_eq!(
        server.cli(&["HGET", "{bulwark:overflow}:cb", "st"]),
        "1",
        "keys: {}",
        server.cli(&["KEYS", "*"])
    );
    b.sync_fleet().await.unwrap();
    assert_eq!(b.overflow_circuit().state(), CircuitState::Open);
    assert_eq!(call(&svc_b, req()).await, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_generic_variant_shares_too() {
    let server = start_redis!();
    let (a, b) = pair(&server, |redis| {
        member(CircuitBreakerLayer::consecutive_failures(1), redis)
            .build_generic()
            .unwrap()
    })
    .await;
    let failing = a.layer(service_fn(|_: ()| async {
        Err::<(), _>(std::io::Error::other("down"))
    }));
    let healthy = b.layer(service_fn(|_: ()| async { Ok::<_, std::io::Error>(()) }));
    assert!(failing.oneshot(()).await.is_err());
    a.sync_fleet().await.unwrap();
    b.sync_fleet().await.unwrap();
    let err = healthy.oneshot(()).await.unwrap_err();
    assert!(err
        .downcast_ref::<tower_bulwark::circuit_breaker::CircuitOpen>()
        .is_some());
}

// ---------------------------------------------------------------------------------------------
// The script alone, at fixed times (ARGV 21), called as an instance would.
// ---------------------------------------------------------------------------------------------

const SCRIPT: &str = include_str!("../../src/circuit_breaker/fleet/breaker.lua");

/// What one instance reports: running totals and flags.
#[derive(Clone, Copy)]
struct Sent {
    generation: Option<u64>,
    calls: u64,
    failures: u64,
    slow: u64,
    good: u64,
    run: u64,
    tripped: bool,
    probe_ok: u64,
    probe_failed: bool,
    lease: &'static str,
    /// `c,f,s,g,p`: the totals the instance last saw counted.
    acked: &'static str,
}

impl Default for Sent {
    fn default() -> Self {
        Self {
            generation: None,
            calls: 0,
            failures: 0,
            slow: 0,
            good: 0,
            run: 0,
            tripped: false,
            probe_ok: 0,
            probe_failed: false,
            lease: "",
            acked: "0,0,0,0,0",
        }
    }
}

/// Calls the script for instance `id` at `now_us` with a policy, returning
/// `[state, generation, open_left_us, lease_left_us]`.
fn script(server: &RedisServer, id: &str, sent: Sent, policy: [&str; 5], now_us: u64) -> Vec<u64> {
    let flag = |b: bool| if b { "1" } else { "0" }.to_owned();
    let args: Vec<String> = vec![
        id.to_owned(),
        sent.generation.map_or(String::new(), |g| g.to_string()),
        sent.calls.to_string(),
        sent.failures.to_string(),
        sent.slow.to_string(),
        sent.good.to_string(),
        sent.run.to_string(),
        flag(sent.tripped),
        sent.probe_ok.to_string(),
        flag(sent.probe_failed),
        if sent.lease.is_empty() {
            "r"
        } else {
            sent.lease
        }
        .to_owned(),
        policy[0].to_owned(),
        policy[1].to_owned(),
        policy[2].to_owned(),
        policy[3].to_owned(),
        policy[4].to_owned(),
        "30000000".to_owned(), // open 30 s
        "2".to_owned(),        // 2 probe successes close
        "1500000".to_owned(),  // lease 1.5 s
        "600000".to_owned(),   // TTL 10 min
        now_us.to_string(),
        sent.acked.to_owned(), // what the instance last saw counted
    ];
    let mut cli = vec!["EVAL", SCRIPT, "1", "{t:k}:cb"];
    cli.extend(args.iter().map(String::as_str));
    let reply = server.cli(&cli);
    reply
        .lines()
        .map(|l| l.parse().unwrap_or_else(|_| panic!("reply {reply:?}")))
        .collect()
}

const T0: u64 = 1_800_000_000_000_000;

/// Instance A's first call under `policy`, at `T0`: the fleet's generation `g`, and the report
/// A sends when one failure trips it in `g`.
fn first_trip(server: &RedisServer, policy: [&str; 5]) -> (u64, Sent) {
    let g = script(server, "a", Sent::default(), policy, T0)[1];
    let trip = Sent {
        generation: Some(g),
        calls: 1,
        failures: 1,
        run: 1,
        ..Sent::default()
    };
    (g, trip)
}

#[test]
fn a_report_sent_again_after_a_late_answer_counts_once() {
    let server = start_redis!();
    let consecutive = ["c", "3", "0", "0", "0"];
    let first = script(&server, "a", Sent::default(), consecutive, T0);
    let g = Some(first[1]);
    let two = Sent {
        generation: g,
        calls: 2,
        failures: 2,
        run: 2,
        ..Sent::default()
    };
    script(&server, "a", two, consecutive, T0 + 1);
    // The answer was late: the instance sends the same totals again, plus nothing new.
    script(&server, "a", two, consecutive, T0 + 2);
    assert_eq!(server.cli(&["HGET", "{t:k}:cb", "c"]), "2");
    // Another instance's outcomes are its own.
    let b = Sent {
        generation: g,
        calls: 1,
        failures: 1,
        run: 1,
        ..Sent::default()
    };
    let reply = script(&server, "b", b, consecutive, T0 + 3);
    assert_eq!(reply[0], 1, "2 through A and 1 through B open it");
}

#[test]
fn time_window_buckets_age_out() {
    let server = start_redis!();
    // Failure rate 0.5 over 10 s (ten 1 s buckets), judged from 2 calls.
    let window = ["t", "0.5", "2", "10000000", "0"];
    let g = Some(script(&server, "a", Sent::default(), window, T0)[1]);
    let one_failure = Sent {
        generation: g,
        calls: 1,
        failures: 1,
        ..Sent::default()
    };
    script(&server, "a", one_failure, window, T0);
    // 11 s on, the failure has left the window: one good call is 0 of 1, not 1 of 2.
    let then_good = Sent {
        calls: 2,
        good: 1,
        ..one_failure
    };
    let reply = script(&server, "a", then_good, window, T0 + 11_000_000);
    assert_eq!(reply[0], 0, "an aged-out failure still counted");
    // Within the window, a second failure makes 2 of 3.
    let again = Sent {
        calls: 3,
        failures: 2,
        ..then_good
    };
    assert_eq!(script(&server, "a", again, window, T0 + 12_000_000)[0], 1);
}

#[test]
fn a_count_window_keeps_the_last_calls_rate() {
    let server = start_redis!();
    // Failure rate 0.5 over the last 10 calls, judged from 10.
    let window = ["n", "0.5", "10", "10", "0"];
    let g = Some(script(&server, "a", Sent::default(), window, T0)[1]);
    // 100 good calls in one batch: the window holds 10 calls' worth, all good.
    let good = Sent {
        generation: g,
        calls: 100,
        good: 100,
        ..Sent::default()
    };
    script(&server, "a", good, window, T0);
    assert_eq!(server.cli(&["HGET", "{t:k}:cb", "n"]), "10");
    // 10 failures next: 20 calls scaled to 10, half failed: the rate is reached.
    let bad = Sent {
        calls: 110,
        failures: 10,
        ..good
    };
    assert_eq!(script(&server, "a", bad, window, T0 + 1)[0], 1);
}

#[test]
fn a_slow_rate_trips_the_fleet() {
    let server = start_redis!();
    // Failure rate 1.0 (never), slow rate 0.5, judged from 4 calls of the last 10.
    let window = ["n", "1", "4", "10", "0.5"];
    let g = Some(script(&server, "a", Sent::default(), window, T0)[1]);
    let a = Sent {
        generation: g,
        calls: 2,
        slow: 1,
        good: 1,
        ..Sent::default()
    };
    assert_eq!(script(&server, "a", a, window, T0)[0], 0);
    let b = Sent {
        generation: g,
        calls: 2,
        slow: 1,
        good: 1,
        ..Sent::default()
    };
    assert_eq!(script(&server, "b", b, window, T0)[0], 1, "2 slow of 4");
}

#[test]
fn the_open_time_is_the_servers_and_ends_in_half_open() {
    let server = start_redis!();
    let consecutive = ["c", "1", "0", "0", "0"];
    let (g, trip) = first_trip(&server, consecutive);
    let open = script(&server, "a", trip, consecutive, T0);
    assert_eq!((open[0], open[1], open[2]), (1, g + 1, 30_000_000));
    let later = script(&server, "b", Sent::default(), consecutive, T0 + 29_000_000);
    assert_eq!((later[0], later[2]), (1, 1_000_000), "1 s left");
    // B had nothing to tell: the quiet path read the state and wrote nothing.
    assert_eq!(server.cli(&["HEXISTS", "{t:k}:cb", "t:b"]), "0");
    let half = script(
        &server,
        "b",
        Sent {
            lease: "1",
            ..Sent::default()
        },
        consecutive,
        T0 + 30_000_000,
    );
    assert_eq!(
        (half[0], half[1], half[3]),
        (2, g + 2, 1_500_000),
        "half-open, B has the lease"
    );
    let a_asks = script(
        &server,
        "a",
        Sent { lease: "1", ..trip },
        consecutive,
        T0 + 30_000_001,
    );
    assert_eq!(a_asks[3], 0, "one holder at a time");
    // B keeps it without renewing; past its end (1.5 s), A takes it.
    let b_keeps = script(
        &server,
        "b",
        Sent {
            lease: "0",
            generation: Some(g + 2),
            ..Sent::default()
        },
        consecutive,
        T0 + 31_000_000,
    );
    assert_eq!(b_keeps[3], 500_000, "kept, not renewed: what is left of it");
    let a_takes = script(
        &server,
        "a",
        Sent { lease: "1", ..trip },
        consecutive,
        T0 + 31_500_001,
    );
    assert_eq!(a_takes[3], 1_500_000);
}

/// A keyed layer forgets an idle circuit, then makes a new one for the same key: the new
/// circuit's outcomes count from zero, not from the old circuit's totals the script holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_circuit_made_again_for_a_key_counts_afresh() {
    let server = start_redis!();
    let clock = tower_bulwark::clock::ManualClock::new();
    let layer = keyed_member(
        &server,
        CircuitBreakerLayer::consecutive_failures(3).clock(clock.clone()),
    )
    .await
    .max_keys(1)
    .build()
    .unwrap();
    let upstream = Upstream::new(500);
    let svc = layer.layer(upstream.service());
    let x = Key::from(http::HeaderValue::from_static("x"));
    call(&svc, req_for("x")).await;
    upstream.set(200);
    call(&svc, req_for("x")).await; // x: 2 calls, 1 failure, run ended
    layer.sync_fleet().await.unwrap();
    // x is idle and told: a newcomer makes the layer forget it. (A sync round the new
    // circuit woke may hold it for a moment: then the next sweep, a clock step on, does.)
    let started = Instant::now();
    while layer.state_of(&x).is_some() {
        assert!(started.elapsed() < PATIENCE, "x was never forgotten");
        clock.advance(Duration::from_secs(1));
        call(&svc, req_for("y")).await;
        layer.sync_fleet().await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A new circuit for x (its first call good: until it exists, x's calls share the
    // overflow circuit), then two failures.
    while layer.state_of(&x).is_none() {
        assert!(started.elapsed() < PATIENCE, "x never came back");
        clock.advance(Duration::from_secs(1));
        tokio::time::sleep(Duration::from_millis(20)).await;
        call(&svc, req_for("x")).await;
    }
    upstream.set(500);
    call(&svc, req_for("x")).await;
    call(&svc, req_for("x")).await;
    layer.sync_fleet().await.unwrap();
    // Its own totals (3 calls, 1 good, a run of 2) make the fleet's run 2; measured from the
    // old circuit's totals (2 calls, 1 good) they would make it 1.
    let name_of_x = layer.redis_key(&x).unwrap();
    assert_eq!(server.cli(&["HGET", &name_of_x, "c"]), "2");
}

/// A keyed layer does not forget a circuit whose outcomes the fleet has not heard yet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_circuit_the_fleet_has_not_heard_is_kept() {
    let server = start_redis!();
    let layer = keyed_member(&server, CircuitBreakerLayer::consecutive_failures(3))
        .await
        .max_keys(1)
        .build()
        .unwrap();
    let svc = layer.layer(Upstream::new(200).service());
    call(&svc, req_for("x")).await; // idle locally, but not yet told
    call(&svc, req_for("y")).await; // so y shares the overflow circuit
    let x = Key::from(http::HeaderValue::from_static("x"));
    assert_eq!(layer.state_of(&x), Some(CircuitState::Closed));
    assert_eq!(layer.len(), 1);
}

/// Script calls Redis has run so far (`EVALSHA`, and `EVAL` for a reload).
fn script_calls(server: &RedisServer) -> u64 {
    server
        .cli(&["INFO", "commandstats"])
        .lines()
        .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
        .filter_map(|l| {
            l.split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// A trip on one key wakes the sync task at once, and the woken round calls Redis for that
/// key only, not for every key the layer holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trip_is_told_at_once_for_its_key_only() {
    let server = start_redis!();
    let layer = keyed_member(&server, CircuitBreakerLayer::consecutive_failures(1))
        .await
        .build()
        .unwrap();
    let (good, bad) = (Upstream::new(200), Upstream::new(500));
    let (svc_good, svc_bad) = (layer.layer(good.service()), layer.layer(bad.service()));
    for i in 0..50 {
        call(&svc_good, req_for(&format!("k{i}"))).await;
    }
    // Let the rounds the new circuits woke run, then sync every key.
    tokio::time::sleep(Duration::from_millis(100)).await;
    layer.sync_fleet().await.unwrap();
    let before = script_calls(&server);
    call(&svc_bad, req_for("k7")).await;
    let started = Instant::now();
    let name_of_k7 = layer
        .redis_key(&Key::from(http::HeaderValue::from_static("k7")))
        .unwrap();
    while server.cli(&["HGET", &name_of_k7, "st"]) != "1" {
        assert!(started.elapsed() < PATIENCE, "the trip was never told");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await; // nothing else may follow
    assert_eq!(script_calls(&server) - before, 1, "one call, for k7");
}

/// On a Redis Cluster: each key's state machine lives on the node of its hash tag, keys spread
/// over the nodes, and the fleet still shares each one.
#[cfg(feature = "redis-cluster")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_breakers_share_each_key_on_a_cluster() {
    use std::collections::BTreeSet;
    use tower_bulwark::redis::RedisBackend;
    let cluster = start_redis!(cluster);
    let urls = cluster.urls();
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    let build = |redis| {
        member(CircuitBreakerLayer::consecutive_failures(1), redis)
            .per_key(upstream_key())
            .build()
            .unwrap()
    };
    let a = build(RedisBackend::connect_cluster(&urls).await.unwrap());
    let b = build(RedisBackend::connect_cluster(&urls).await.unwrap());
    let (svc_a, svc_b) = (
        a.layer(Upstream::new(503).service()),
        b.layer(Upstream::new(200).service()),
    );
    let keys: Vec<String> = (0..12).map(|i| format!("u{i}")).collect();
    let nodes: BTreeSet<usize> = keys
        .iter()
        .map(|k| {
            let key = Key::from(http::HeaderValue::from_str(k).unwrap());
            cluster.node_for_key(&a.redis_key(&key).unwrap())
        })
        .collect();
    assert_eq!(nodes.len(), 3, "the keys should spread over the 3 nodes");
    for k in &keys {
        assert_eq!(call(&svc_b, req_for(k)).await, StatusCode::OK);
        assert_eq!(
            call(&svc_a, req_for(k)).await,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
    a.sync_fleet().await.unwrap();
    b.sync_fleet().await.unwrap();
    for k in &keys {
        let key = Key::from(http::HeaderValue::from_str(k).unwrap());
        assert_eq!(b.state_of(&key), Some(CircuitState::Open), "{k}");
        let name = b.redis_key(&key).unwrap();
        let node = &cluster.nodes[cluster.node_for_key(&name)];
        assert_eq!(node.cli(&["HGET", &name, "st"]), "1");
    }
}

/// Redis lost the hash (restarted empty): an instance's next report counts from the totals it
/// last saw counted, not from zero (which would count its old outcomes again).
#[test]
fn a_lost_hash_counts_from_what_was_counted() {
    let server = start_redis!();
    // Failure rate 0.5 over the last 10 calls, judged from 4.
    let window = ["n", "0.5", "4", "10", "0"];
    let g = Some(script(&server, "a", Sent::default(), window, T0)[1]);
    let three_failures = Sent {
        generation: g,
        calls: 3,
        failures: 3,
        ..Sent::default()
    };
    assert_eq!(
        script(&server, "a", three_failures, window, T0)[0],
        0,
        "3 calls: too few"
    );
    assert_eq!(server.cli(&["DEL", "{t:k}:cb"]), "1");
    // One good call since: 1 call, 0 failures, not 4 calls, 3 failures.
    let then_good = Sent {
        calls: 4,
        good: 1,
        acked: "3,3,0,0,0",
        ..three_failures
    };
    assert_eq!(script(&server, "a", then_good, window, T0 + 1)[0], 0);
    assert_eq!(server.cli(&["HGET", "{t:k}:cb", "n"]), "1");
}

/// The lease holder's probes closed it here, then it tripped again before its sync: the
/// fleet closes on the successes and opens again on the trip.
#[test]
fn a_trip_after_closing_on_probes_reopens_the_fleet() {
    let server = start_redis!();
    let consecutive = ["c", "1", "0", "0", "0"];
    let (g, trip) = first_trip(&server, consecutive);
    script(&server, "a", trip, consecutive, T0);
    let half = Sent {
        generation: Some(g + 1),
        lease: "1",
        ..trip
    };
    let reply = script(&server, "a", half, consecutive, T0 + 30_000_000);
    assert_eq!(reply[0], 2);
    let closed_then_tripped = Sent {
        generation: Some(g + 2),
        probe_ok: 2,
        calls: 2,
        failures: 2,
        tripped: true,
        ..trip
    };
    let reply = script(
        &server,
        "a",
        closed_then_tripped,
        consecutive,
        T0 + 30_000_001,
    );
    assert_eq!((reply[0], reply[1]), (1, g + 4), "closed, then open again");
}

/// Deciding alone, trips and new keys do not make the sync task knock on Redis each time:
/// only the interval's rounds try it (a back-off of one interval).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deciding_alone_it_tries_redis_once_an_interval() {
    let mut server = start_redis!();
    let layer = CircuitBreakerLayer::consecutive_failures(1)
        .backend(redis(&server).await)
        .sync_interval(NEVER)
        .deadline(DEADLINE)
        .per_key(upstream_key())
        .build()
        .unwrap();
    // One key to sync (a layer with no circuit has nothing to ask Redis).
    call(&layer.layer(Upstream::new(200).service()), req_for("first")).await;
    let started = Instant::now();
    while layer.sync_fleet().await.is_err() {
        assert!(started.elapsed() < PATIENCE, "Redis never answered");
    }
    server.kill();
    assert!(layer.sync_fleet().await.is_err());
    let errors = layer.fleet_stats().unwrap().errors;
    // Twenty new keys, each tripping at once: each would wake a round.
    let svc = layer.layer(Upstream::new(500).service());
    for i in 0..20 {
        call(&svc, req_for(&format!("k{i}"))).await;
        tokio::time::sleep(Duration::from_millis(15)).await; // past the pause between rounds
    }
    let stats = layer.fleet_stats().unwrap();
    assert!(stats.in_fallback);
    assert_eq!(stats.errors, errors, "woken rounds called a dead Redis");
}
