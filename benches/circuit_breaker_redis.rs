//! What sharing the circuit breaker with a fleet through Redis costs: on the request path, and
//! per sync round.
//!
//! * `breaker_fleet_closed`: one call through a closed breaker around a no-op service, single
//!   thread, driven synchronously exactly as `closed` in `benches/circuit_breaker.rs` (same
//!   request and response types, same `drive`, requests built outside the timed part 1 000 at a
//!   time), so the rows compare with that file's. Rows: the bare service (the floor),
//!   tower-resilience's breaker (the peer, configured as there), our HTTP layer in memory
//!   (`ours_memory`), and the same layer built with `.backend(redis)` (`ours_redis`). A call
//!   through the shared breaker is still decided locally: no round trip, only a striped counter
//!   bump to tally the outcome for the next sync. The sync interval is one hour, so the sync
//!   task (one round at start, then asleep) does not run while the row is timed; so
//!   `ours_redis − ours_memory` is what the fleet adds to each call.
//! * `breaker_fleet_sync`: one `sync_fleet()` round of a keyed layer (`per_key(HeaderKey)` on
//!   `x-api-key`) holding 1, 100 and 1 000 keys, each made by one request first. A round is one
//!   script call per key (the layer's overflow circuit, never used here, is not synced),
//!   at most 32 at once, each in a task of its own, as the sync task runs it. For comparison,
//!   `unkeyed`: the layer without keys, one circuit, one script call awaited in place.
//!   `idle/…`: no call since the last round (keys that see no traffic are synced all the
//!   same). `after_traffic/…`: one good call per key before each round, outside the timed
//!   part, so every report carries outcomes. Timed with `iter_custom` on a 2-worker
//!   multi-threaded Tokio runtime, as `benches/redis.rs`; Redis runs on the same 2-vCPU
//!   machine and shares its cores.
//!
//! ```sh
//! cargo bench --bench circuit_breaker_redis --features redis   # about 1 min
//! ```
//!
//! Redis: `REDIS_URL` (or `BULWARK_BENCH_REDIS`, as `benches/redis.rs`), default
//! `redis://127.0.0.1:6379/`. Without a reachable Redis the bench says so and runs only the
//! rows that need none. Every key lives under the prefix `bench-cb-<pid>-…`, deleted at the end.
//! Results: BENCHMARKS.md.

mod common;

use std::future::Future;
use std::time::{Duration, Instant};

use common::breaker::*;
use common::*;
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, SamplingMode};
use http::{HeaderName, HeaderValue, Request, StatusCode};
use tokio::runtime::Runtime;
use tower::Layer;
use tower_bulwark::circuit_breaker::{
    CircuitBreakerLayer as BulwarkBreakerLayer, CircuitState as BulwarkState, FleetStats,
    KeyedCircuitBreakerLayer, RedisCircuitBreakerBuilder,
};
use tower_bulwark::key::HeaderKey;
use tower_bulwark::redis::RedisBackend;
use tower_bulwark::BackendError;

/// Long enough that the sync task stays asleep while a row is timed.
const SYNC_INTERVAL: Duration = Duration::from_secs(3600);
/// Generous: a sync that misses it is an error, and the bench checks there were none.
const DEADLINE: Duration = Duration::from_secs(1);
/// Keys held by the keyed layer in `breaker_fleet_sync`.
const KEYS: [usize; 3] = [1, 100, 1_000];

fn redis_url() -> String {
    std::env::var("REDIS_URL")
        .or_else(|_| std::env::var("BULWARK_BENCH_REDIS"))
        .unwrap_or_else(|_| "redis://127.0.0.1:6379/".to_owned())
}

/// The runtime the fleet's sync tasks run on, and the connection they share.
struct Fleet {
    runtime: Runtime,
    redis: RedisBackend,
    /// Unique to this run: `bench-cb-<pid>`.
    prefix: String,
}

impl Fleet {
    /// `None`, having said why, when Redis cannot be reached.
    fn connect() -> Option<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let url = redis_url();
        // `connect` retries for as long as Redis is away: bound the wait.
        let connected = runtime.block_on(async {
            match tokio::time::timeout(Duration::from_secs(3), RedisBackend::connect(&url)).await {
                Ok(Ok(redis)) => {
                    let mut ping = redis::cmd("PING");
                    ping.arg("bench");
                    redis
                        .raw_query(&ping)
                        .await
                        .map(|_| redis)
                        .map_err(|e| e.to_string())
                }
                Ok(Err(err)) => Err(err.to_string()),
                Err(_) => Err("no connection within 3 s".to_owned()),
            }
        });
        match connected {
            Ok(redis) => Some(Self {
                runtime,
                redis,
                prefix: format!("bench-cb-{}", std::process::id()),
            }),
            Err(err) => {
                eprintln!(
                    "circuit_breaker_redis: cannot reach Redis at {url} ({err}); skipping the \
                     Redis benches (set REDIS_URL)"
                );
                None
            }
        }
    }

    /// Our defaults on this run's connection, under `prefix-<name>`, with the bench's sync
    /// interval and deadline.
    fn shared(&self, name: &str) -> RedisCircuitBreakerBuilder {
        our_defaults()
            .backend(self.redis.clone())
            .prefix(format!("{}-{name}", self.prefix))
            .sync_interval(SYNC_INTERVAL)
            .deadline(DEADLINE)
    }

    /// Our defaults, shared through Redis under `prefix-<name>`. Builds inside the runtime
    /// (the sync task starts there), then lets the task's first rounds (at start, and the one
    /// a new circuit asks for) finish, so that nothing of it runs while a row is timed.
    fn layer(&self, name: &str) -> BulwarkBreakerLayer {
        let _runtime = self.runtime.enter();
        let layer = self.shared(name).build().expect("valid breaker");
        self.settle(|| layer.sync_fleet());
        layer
    }

    /// The same, one breaker per `x-api-key`.
    fn keyed_layer(&self, name: &str) -> KeyedCircuitBreakerLayer<HeaderKey> {
        let _runtime = self.runtime.enter();
        self.shared(name)
            .per_key(HeaderKey::new(HeaderName::from_static("x-api-key")))
            .build()
            .expect("valid breaker")
    }

    /// Waits out the sync task's wake-up rounds (it runs one 10 ms after a new circuit asks),
    /// then runs one round itself, which waits for any round still running.
    fn settle<F: Future<Output = Result<(), BackendError>>>(&self, sync: impl FnOnce() -> F) {
        self.runtime.block_on(async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            sync().await.expect("sync with redis");
        });
    }

    /// Deletes every key this run made.
    fn clean_up(&self) {
        let pattern = format!("{{{}-*", self.prefix);
        let deleted = self.runtime.block_on(async {
            let mut cursor = 0u64;
            let mut deleted = 0u64;
            loop {
                let mut scan = redis::cmd("SCAN");
                scan.arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1_000);
                let reply = self.redis.raw_query(&scan).await.expect("SCAN");
                let (next, keys): (u64, Vec<Vec<u8>>) =
                    redis::from_redis_value(reply).expect("SCAN reply");
                if !keys.is_empty() {
                    let mut del = redis::cmd("DEL");
                    del.arg(&keys);
                    let reply = self.redis.raw_query(&del).await.expect("DEL");
                    deleted += redis::from_redis_value::<u64>(reply).expect("DEL reply");
                }
                if next == 0 {
                    break deleted;
                }
                cursor = next;
            }
        });
        eprintln!("circuit_breaker_redis: deleted {deleted} keys matching {pattern}");
    }
}

fn closed(c: &mut Criterion, fleet: Option<&Fleet>) {
    let mut g = c.benchmark_group("breaker_fleet_closed");

    bare_and_resilience_rows(&mut g);

    // Our breaker in memory, as `ours` in benches/circuit_breaker.rs.
    let layer = our_defaults().build().unwrap();
    let mut svc = layer.layer(tower::service_fn(noop));
    assert_answers_ok(&mut svc);
    g.bench_function("ours_memory", |b| bench_service(b, &mut svc));
    assert_eq!(layer.circuit().state(), BulwarkState::Closed);
    assert_eq!(layer.circuit().stats().rejected, 0);

    // The same breaker shared through Redis: the call is still decided here.
    if let Some(fleet) = fleet {
        let layer = fleet.layer("closed");
        let mut svc = layer.layer(tower::service_fn(noop));
        assert_answers_ok(&mut svc);
        let before = layer.fleet_stats().expect("shared through redis");
        g.bench_function("ours_redis", |b| bench_service(b, &mut svc));
        let after = layer.fleet_stats().expect("shared through redis");
        assert_eq!(
            after.syncs, before.syncs,
            "the sync task ran while the row was timed"
        );
        // The tallied outcomes reach the fleet, which stays closed.
        fleet
            .runtime
            .block_on(layer.sync_fleet())
            .expect("sync with redis");
        let stats = layer.fleet_stats().expect("shared through redis");
        assert_eq!((stats.errors, stats.in_fallback), (0, false));
        assert_eq!(layer.circuit().state(), BulwarkState::Closed);
        assert_eq!(layer.circuit().stats().rejected, 0);
    }
    g.finish();
}

/// Times one `sync()` round per iteration, as `idle/<param>` (nothing between rounds) and
/// `after_traffic/<param>` (`traffic()` between rounds, untimed). Checks that every round
/// synced `circuits` circuits, that only the bench's rounds ran, and that none failed.
fn sync_rows<Fut: Future<Output = Result<(), BackendError>>>(
    g: &mut BenchmarkGroup<'_, WallTime>,
    fleet: &Fleet,
    param: &str,
    circuits: u64,
    mut traffic: impl FnMut(),
    sync: impl Fn() -> Fut,
    stats: impl Fn() -> FleetStats,
) {
    for (name, busy) in [("idle", false), ("after_traffic", true)] {
        let before = stats();
        let mut rounds = 0u64;
        g.bench_function(BenchmarkId::new(name, param), |b| {
            b.iter_custom(|iters| {
                rounds += iters;
                fleet.runtime.block_on(async {
                    let mut timed = Duration::ZERO;
                    for _ in 0..iters {
                        if busy {
                            traffic();
                        }
                        let start = Instant::now();
                        sync().await.expect("sync with redis");
                        timed += start.elapsed();
                    }
                    timed
                })
            })
        });
        let after = stats();
        assert_eq!((after.errors, after.in_fallback), (0, false));
        assert_eq!(
            after.syncs - before.syncs,
            rounds * circuits,
            "every round syncs each circuit once, and only the bench's rounds ran"
        );
    }
}

fn sync(c: &mut Criterion, fleet: &Fleet) {
    let mut g = c.benchmark_group("breaker_fleet_sync");
    // A round over 1 000 keys takes milliseconds: the same iterations in every sample.
    g.sampling_mode(SamplingMode::Flat);

    // For comparison, the layer without keys: one circuit, synced without a spawned task.
    let layer = fleet.layer("sync-unkeyed");
    let mut svc = layer.layer(tower::service_fn(noop));
    let traffic = || assert_eq!(drive(&mut svc, Request::new(())).unwrap().status(), 200);
    let stats = || layer.fleet_stats().expect("shared through redis");
    sync_rows(
        &mut g,
        fleet,
        "unkeyed",
        1,
        traffic,
        || layer.sync_fleet(),
        stats,
    );
    assert_eq!(layer.circuit().state(), BulwarkState::Closed);

    for keys in KEYS {
        let layer = fleet.keyed_layer(&format!("sync-{keys}"));
        let values: Vec<HeaderValue> = (0..keys)
            .map(|i| HeaderValue::try_from(format!("client-{i:04}")).unwrap())
            .collect();
        let api_key = HeaderName::from_static("x-api-key");
        let mut svc = layer.layer(tower::service_fn(noop));
        // One good call per key: makes its circuit, tallies one outcome.
        let mut traffic = move || {
            for value in &values {
                let mut req = Request::new(());
                req.headers_mut().insert(api_key.clone(), value.clone());
                assert_eq!(drive(&mut svc, req).unwrap().status(), StatusCode::OK);
            }
        };
        traffic();
        assert_eq!(layer.len(), keys);
        fleet.settle(|| layer.sync_fleet());
        let circuits = keys as u64; // the overflow circuit, never used, is not synced
        let stats = || layer.fleet_stats().expect("shared through redis");
        let param = keys.to_string();
        sync_rows(
            &mut g,
            fleet,
            &param,
            circuits,
            traffic,
            || layer.sync_fleet(),
            stats,
        );
        assert_eq!(layer.len(), keys);
        assert_eq!(layer.overflow_circuit().state(), BulwarkState::Closed);
    }
    g.finish();
}

fn main() {
    let mut c = config(Duration::from_secs(3), 30).configure_from_args();
    let fleet = Fleet::connect();
    closed(&mut c, fleet.as_ref());
    if let Some(fleet) = &fleet {
        sync(&mut c, fleet);
        fleet.clean_up();
    }
    c.final_summary();
}
