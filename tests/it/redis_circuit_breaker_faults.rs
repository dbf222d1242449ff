//! Faults of the fleet-shared breaker found in review, one test each: the probe bound held
//! while a probe runs, a trip that survives the loss of the fleet's hash, a keyed layer that
//! falls back within the deadline, and a sync task that ends with its layer. (Outcomes of a
//! late answer counted once: `a_report_sent_again_after_a_late_answer_counts_once` in
//! `redis_circuit_breaker.rs`, at fixed times.)

use std::time::{Duration, Instant};

use crate::common::fleet::*;
use crate::common::redis_server::start_redis;
use http::{Request, StatusCode};
use tower::{Layer, ServiceExt};
use tower_bulwark::circuit_breaker::{CircuitBreakerBuilder, CircuitBreakerLayer, CircuitState};

/// One failure opens it; one probe at a time, two successes close it.
fn one_probe() -> CircuitBreakerBuilder {
    CircuitBreakerLayer::consecutive_failures(1)
        .half_open_successes(2)
        .half_open_probes(1)
}

/// Bug 1: the lease holder gives the lease back at a sync where no call *asked* to probe,
/// although its probe is still running; another instance takes the lease and probes too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_never_runs_more_probes_than_half_open_probes() {
    let server = start_redis!();
    let (a, b) = fleet_pair(&server, one_probe).await;
    let up = Upstream::new(500);
    let (svc_a, svc_b) = (
        CircuitBreakerLayer::layer(&a, up.service()),
        CircuitBreakerLayer::layer(&b, up.service()),
    );
    // Fleet open through A, then half-open on both.
    a.sync_fleet().await.unwrap();
    b.sync_fleet().await.unwrap();
    call(&svc_a, req()).await;
    a.sync_fleet().await.unwrap();
    b.sync_fleet().await.unwrap();
    server.cli(&["HSET", GLOBAL, "u", "0"]);
    a.sync_fleet().await.unwrap();
    b.sync_fleet().await.unwrap();
    assert_eq!(a.circuit().state(), CircuitState::HalfOpen);
    // A asks for the lease and gets it; its probe hangs on a slow upstream.
    up.set(200);
    up.hold();
    assert_eq!(call(&svc_a, req()).await, StatusCode::SERVICE_UNAVAILABLE);
    a.sync_fleet().await.unwrap();
    let probe_a = tokio::spawn({
        let svc_a = svc_a.clone();
        async move { call(&svc_a, req()).await }
    });
    while up.in_flight() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Two ordinary syncs of A while its probe runs (no new request reaches A).
    a.sync_fleet().await.unwrap();
    a.sync_fleet().await.unwrap();
    // B asks, and is granted the lease A still needs.
    let _ = call(&svc_b, req()).await;
    b.sync_fleet().await.unwrap();
    // B must refuse at once; admitted, its probe would hang on the gate like A's.
    let b_answer = tokio::time::timeout(Duration::from_secs(2), call(&svc_b, req())).await;
    let in_flight = up.in_flight();
    up.release();
    let _ = probe_a.await;
    assert_eq!(
        b_answer.ok(),
        Some(StatusCode::SERVICE_UNAVAILABLE),
        "{in_flight} probes in flight, half_open_probes = 1"
    );
}

/// Bug 2: after the fleet's hash is lost (restart without persistence, failover, eviction,
/// FLUSHDB), an instance's cached generation no longer matches; its trip is thrown away by
/// the script, and the instance then follows the fresh hash back to closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trip_survives_the_loss_of_the_fleets_hash() {
    let server = start_redis!();
    let a = member(one_probe(), redis(&server).await).build().unwrap();
    let up = Upstream::new(500);
    let svc_a = CircuitBreakerLayer::layer(&a, up.service());
    server.cli(&["HSET", GLOBAL, "st", "0", "g", "5"]); // the fleet has been through 5 changes
    a.sync_fleet().await.unwrap();
    server.cli(&["DEL", GLOBAL]); // as a restart with `--save ''` would
    call(&svc_a, req()).await; // trips A
    assert_eq!(a.circuit().state(), CircuitState::Open);
    a.sync_fleet().await.unwrap();
    assert_eq!(
        server.cli(&["HGET", GLOBAL, "st"]),
        "1",
        "the trip reached the fleet"
    );
    assert_eq!(
        a.circuit().state(),
        CircuitState::Open,
        "A reopened to a failing upstream"
    );
}

/// Bug 3: a round of a keyed layer is not bounded by the deadline: with Redis frozen it
/// takes ceil(keys / 32) deadlines before the breaker says it is in fallback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_layer_falls_back_within_the_deadline() {
    let server = start_redis!();
    let layer = CircuitBreakerLayer::consecutive_failures(5)
        .backend(redis(&server).await)
        .sync_interval(NEVER)
        .deadline(Duration::from_millis(50))
        .per_key(upstream_key())
        .build()
        .unwrap();
    let up = Upstream::new(200);
    let svc = layer.layer(up.service());
    for i in 0..640 {
        let req = Request::builder()
            .header("x-upstream", i.to_string())
            .body(())
            .unwrap();
        svc.clone().oneshot(req).await.unwrap();
    }
    // Every call of one round within 50 ms: on a loaded machine this may take a few tries.
    let started = Instant::now();
    while layer.sync_fleet().await.is_err() {
        assert!(started.elapsed() < Duration::from_secs(60));
    }
    server.freeze();
    let started = Instant::now();
    assert!(layer.sync_fleet().await.is_err());
    let waited = started.elapsed();
    server.thaw();
    assert!(
        waited < Duration::from_millis(500),
        "fallback took {waited:?}"
    );
}

/// Bug 4: the sync task (and its Redis connection) outlives the layer by up to one
/// `sync_interval`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_layer_ends_its_sync_task() {
    let server = start_redis!();
    let clients = || -> usize {
        server
            .cli(&["CLIENT", "LIST", "TYPE", "normal"])
            .lines()
            .count()
    };
    let before = clients();
    let layer = member(one_probe(), redis(&server).await).build().unwrap();
    layer.sync_fleet().await.unwrap();
    assert_eq!(clients(), before + 1);
    drop(layer);
    // The interval is an hour: only a task that ends with its layer lets go of it sooner.
    let started = Instant::now();
    while clients() != before {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the sync task still holds the connection"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The hash is lost; A makes the fresh one first; B's trip, made meanwhile under the old
/// hash's generation, still counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trip_survives_another_instance_making_the_fresh_hash() {
    let server = start_redis!();
    let (a, b) = fleet_pair(&server, one_probe).await;
    let up = Upstream::new(500);
    let svc_b = CircuitBreakerLayer::layer(&b, up.service());
    a.sync_fleet().await.unwrap();
    b.sync_fleet().await.unwrap();
    server.cli(&["DEL", GLOBAL]); // Redis restarted empty
    call(&svc_b, req()).await; // B trips
    assert_eq!(b.circuit().state(), CircuitState::Open);
    a.sync_fleet().await.unwrap(); // A's sync makes the fresh hash
    b.sync_fleet().await.unwrap();
    assert_eq!(
        server.cli(&["HGET", GLOBAL, "st"]),
        "1",
        "B's trip was dropped"
    );
    assert_eq!(b.circuit().state(), CircuitState::Open);
}

/// A lease kept but not renewed (the holder had nothing to probe at its sync) lets the holder
/// probe only for what is left of it, less a margin: never past its end in Redis, when
/// another instance may take it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_lease_is_not_relied_on_past_its_end() {
    let server = start_redis!();
    let (a, b) = fleet_pair(&server, one_probe).await;
    let up = Upstream::new(500);
    let svc_a = CircuitBreakerLayer::layer(&a, up.service());
    a.sync_fleet().await.unwrap();
    b.sync_fleet().await.unwrap();
    call(&svc_a, req()).await;
    a.sync_fleet().await.unwrap();
    server.cli(&["HSET", GLOBAL, "u", "0"]);
    a.sync_fleet().await.unwrap();
    up.set(200);
    up.hold();
    assert_eq!(call(&svc_a, req()).await, StatusCode::SERVICE_UNAVAILABLE);
    a.sync_fleet().await.unwrap(); // A holds the lease: three hours of it (the interval is 1 h)
                                   // As if the lease had been renewed long ago: 1 s left in Redis.
    let time = server.cli(&["TIME"]);
    let mut parts = time.lines().map(|l| l.trim().parse::<u64>().unwrap());
    let now_us = parts.next().unwrap() * 1_000_000 + parts.next().unwrap();
    server.cli(&["HSET", GLOBAL, "lu", &(now_us + 1_000_000).to_string()]);
    a.sync_fleet().await.unwrap(); // nothing to probe: kept, not renewed
                                   // 1 s left is less than the margin (an interval): A must not probe on it.
    let answer = tokio::time::timeout(Duration::from_secs(2), call(&svc_a, req())).await;
    up.release();
    assert_eq!(answer.ok(), Some(StatusCode::SERVICE_UNAVAILABLE));
}
