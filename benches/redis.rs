//! Decisions per second through the Redis backend, beside what the same connection can do bare.
//!
//! At 1, 16, 64 and 256 concurrent tasks (on a multi-threaded Tokio runtime), each group times:
//! * `backend`: `RedisRateLimiter::decide` awaited: key encoding, the deadline timer, the
//!   back-off check, the denied-key cache, the script call and reading its answer;
//! * `layer`: the same through the HTTP `RateLimitLayer` around a no-op service, headers on;
//! * `raw_evalsha`: the same script with the same keys and arguments, invoked straight on the
//!   same connection (`EVALSHA` through the `redis` crate): the reference, target ≥ 0.8×;
//! * `raw_get`: a `GET` on the same connection: the floor of any round trip.
//!
//! Keys cycle over 10 000 clients under a limit no one reaches, so every decision is a real
//! script run that admits. A last group times the denied-key cache hit (no round trip) beside
//! the memory backend's refusal.
//!
//! Redis: `BULWARK_BENCH_REDIS` (default `redis://127.0.0.1:6379/`). Results: BENCHMARKS.md.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use http::Request;
use tower::{Layer, ServiceExt};
use tower_bulwark::key::{Key, PeerIp};
use tower_bulwark::rate_limit::store::RedisRateLimiter;
use tower_bulwark::rate_limit::store::{Decision, RateLimitBackend};
use tower_bulwark::rate_limit::RateLimitLayer;
use tower_bulwark::redis::RedisBackend;

const KEYS: u64 = 10_000;
/// Admits everything: a token every microsecond, a burst of a million.
const HIGH: u64 = 1_000_000;
const TASKS: [u64; 4] = [1, 16, 64, 256];

fn redis_url() -> String {
    std::env::var("BULWARK_BENCH_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379/".to_owned())
}

fn key(i: u64) -> Key {
    Key::Ip(std::net::IpAddr::V4(Ipv4Addr::from(
        0x0a00_0000 + (i % KEYS) as u32,
    )))
}

/// Runs `iters` operations split over `tasks` tasks, each task's `n`-th call being `op(n)`.
async fn spread<F, Fut>(tasks: u64, iters: u64, op: F) -> Duration
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let per_task = iters.div_ceil(tasks);
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let op = op.clone();
            tokio::spawn(async move {
                for n in 0..per_task {
                    op(t * per_task + n).await;
                }
            })
        })
        .collect();
    for handle in handles {
        handle.await.expect("bench task panicked");
    }
    start.elapsed()
}

fn throughput(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let (redis, backend, layer_backend) = runtime.block_on(async {
        let redis = RedisBackend::connect(&redis_url())
            .await
            .expect("the Redis bench needs a Redis server (set BULWARK_BENCH_REDIS)");
        let layer = RateLimitLayer::token_bucket(HIGH, Duration::from_secs(1))
            .burst(HIGH)
            .backend(redis.clone())
            .prefix("bench")
            .deadline(Duration::from_secs(1))
            .build()
            .expect("valid limits");
        let http = RateLimitLayer::token_bucket(HIGH, Duration::from_secs(1))
            .burst(HIGH)
            .key(PeerIp)
            .backend(redis.clone())
            .prefix("bench-http")
            .deadline(Duration::from_secs(1))
            .build()
            .expect("valid limits");
        (redis, layer.backend().clone(), http)
    });
    let backend: Arc<RedisRateLimiter> = Arc::new(backend);

    let mut group = c.benchmark_group("redis_throughput");
    group.throughput(Throughput::Elements(1));
    for tasks in TASKS {
        let b = backend.clone();
        group.bench_with_input(
            BenchmarkId::new("backend", tasks),
            &tasks,
            |bench, &tasks| {
                bench.iter_custom(|iters| {
                    let b = b.clone();
                    runtime.block_on(spread(tasks, iters, move |n| {
                        let b = b.clone();
                        async move {
                            let verdict = match b.decide(&key(n), 1) {
                                Decision::Ready(v) => v,
                                Decision::Pending(p) => p.await,
                            };
                            assert!(!verdict.degraded(), "redis failed during the bench");
                        }
                    }))
                })
            },
        );

        let layer = layer_backend.clone();
        group.bench_with_input(BenchmarkId::new("layer", tasks), &tasks, |bench, &tasks| {
            bench.iter_custom(|iters| {
                let svc = layer.layer(tower::service_fn(noop));
                runtime.block_on(spread(tasks, iters, move |n| {
                    let svc = svc.clone();
                    async move {
                        let mut req = Request::new(());
                        let ip = Ipv4Addr::from(0x0a00_0000 + (n % KEYS) as u32);
                        req.extensions_mut().insert(SocketAddr::from((ip, 40_000)));
                        let res = svc.oneshot(req).await.expect("infallible");
                        assert_eq!(res.status(), 200);
                    }
                }))
            })
        });

        let (b, r) = (backend.clone(), redis.clone());
        group.bench_with_input(
            BenchmarkId::new("raw_evalsha", tasks),
            &tasks,
            |bench, &tasks| {
                bench.iter_custom(|iters| {
                    let (b, r) = (b.clone(), r.clone());
                    runtime.block_on(spread(tasks, iters, move |n| {
                        let (b, r) = (b.clone(), r.clone());
                        async move {
                            let command = b.raw_command(&key(n), 1);
                            r.raw_query(&command).await.expect("EVALSHA");
                        }
                    }))
                })
            },
        );

        let r = redis.clone();
        group.bench_with_input(
            BenchmarkId::new("raw_get", tasks),
            &tasks,
            |bench, &tasks| {
                bench.iter_custom(|iters| {
                    let r = r.clone();
                    runtime.block_on(spread(tasks, iters, move |n| {
                        let r = r.clone();
                        async move {
                            let name = format!("bench:get:{}", n % KEYS);
                            r.raw_get(name.as_bytes()).await.expect("GET");
                        }
                    }))
                })
            },
        );
    }
    group.finish();
}

/// A key Redis has refused is answered from the local cache: no round trip.
fn denied_cache(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let backend = runtime.block_on(async {
        let redis = RedisBackend::connect(&redis_url()).await.expect("redis");
        let layer = RateLimitLayer::fixed_window(1, Duration::from_secs(3600))
            .backend(redis)
            .prefix(format!("bench-denied-{}", std::process::id()))
            .build()
            .expect("valid limits");
        let backend = layer.backend().clone();
        for _ in 0..2 {
            if let Decision::Pending(p) = backend.decide(&Key::Int(1), 1) {
                p.await;
            }
        }
        backend
    });
    let memory = RateLimitLayer::fixed_window(1, Duration::from_secs(3600))
        .build()
        .expect("valid limits");
    let _ = memory.backend().decide_now(&Key::Int(1), 1);

    let mut group = c.benchmark_group("redis_denied");
    group.bench_function("denied_cache_hit", |b| {
        b.iter(|| match backend.decide(&Key::Int(1), 1) {
            Decision::Ready(v) => assert!(!v.allowed()),
            Decision::Pending(_) => panic!("a cached refusal must not call Redis"),
        })
    });
    group.bench_function("memory_refusal", |b| {
        b.iter(|| assert!(!memory.backend().decide_now(&Key::Int(1), 1).allowed()))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = config(Duration::from_secs(3), 20);
    targets = throughput, denied_cache
}
criterion_main!(benches);
