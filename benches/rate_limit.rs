//! What one rate-limit decision costs through tower-bulwark's `RateLimitLayer`, beside its peers.
//!
//! Compared, and why:
//! * our layer for each algorithm, with one global key and keyed by peer IP over 10 000 keys,
//!   with the rate-limit headers on (the default) and off, so the cost of the headers shows;
//! * the floor: the bare no-op service called alone, and the same with our five rate-limit
//!   headers (values known in advance) inserted into its response;
//! * governor's `check()` / `check_key()`, and governor's check plus the bare service call, which
//!   is the target for our keyed token bucket (a layer can hardly cost less than the
//!   fastest GCRA plus the service it wraps);
//! * `tower::limit::RateLimit` and tower-resilience's rate limiter around the same service
//!   (both global only: neither is keyed);
//! * the reject path (1 per hour, so every request after the first gets a 429);
//! * two threads deciding on one key at once, beside governor under the same setup.
//!
//! Everything is driven synchronously: `poll_ready`, `call`, and one poll of the returned future
//! with a no-op waker, so no async runtime cost is in the numbers. Requests are built outside the
//! timed part (`iter_batched`, 1 000 at a time); the timed part includes dropping the request and
//! the response. Limits are 1e9 per second, so every request is admitted, unless a bench says
//! otherwise. Results and the command: BENCHMARKS.md.

mod common;

use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::time::Duration;

use common::*;
use criterion::{criterion_group, criterion_main, Criterion};
use governor::{Quota, RateLimiter};
use http::header::Entry;
use http::{HeaderName, HeaderValue, Request, StatusCode};
use tower::Layer;
use tower_bulwark::key::{HeaderKey, PeerIp};
use tower_bulwark::rate_limit::headers::{
    RATELIMIT, RATELIMIT_POLICY, X_RATELIMIT_LIMIT, X_RATELIMIT_REMAINING, X_RATELIMIT_RESET,
};
use tower_bulwark::rate_limit::{RateLimitBuilder, RateLimitLayer};

const KEYS: u32 = 10_000;
const HIGH: u64 = 1_000_000_000;
const SECOND: Duration = Duration::from_secs(1);
const HOUR: Duration = Duration::from_secs(3600);
const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

/// An algorithm's shortcut on `RateLimitLayer`, such as `RateLimitLayer::token_bucket`.
type Make = fn(u64, Duration) -> RateLimitBuilder;

const ALGORITHMS: [(&str, Make); 4] = [
    ("token_bucket", RateLimitLayer::token_bucket),
    ("sliding_window_log", RateLimitLayer::sliding_window_log),
    (
        "sliding_window_counter",
        RateLimitLayer::sliding_window_counter,
    ),
    ("fixed_window", RateLimitLayer::fixed_window),
];

/// Yields `items` round and round.
fn cycle<T: Clone>(items: &[T]) -> impl FnMut() -> T + '_ {
    let mut i = 0;
    move || {
        let item = items[i].clone();
        i += 1;
        if i == items.len() {
            i = 0;
        }
        item
    }
}

fn peer_addrs() -> Vec<SocketAddr> {
    (0..KEYS)
        .map(|n| SocketAddr::from((Ipv4Addr::from(0x0A00_0000 + n), 443)))
        .collect()
}

fn api_keys() -> Vec<HeaderValue> {
    (0..KEYS)
        .map(|n| HeaderValue::try_from(format!("key-{n:05}")).unwrap())
        .collect()
}

fn peer_request(addr: SocketAddr) -> Req {
    let mut req = Request::new(());
    req.extensions_mut().insert(addr);
    req
}

fn api_key_request(key: HeaderValue) -> Req {
    let mut req = Request::new(());
    req.headers_mut().insert(X_API_KEY, key);
    req
}

fn static_rate_limit_headers() -> [(HeaderName, HeaderValue); 5] {
    [
        (X_RATELIMIT_LIMIT, HeaderValue::from_static("1000000000")),
        (X_RATELIMIT_REMAINING, HeaderValue::from_static("999999999")),
        (X_RATELIMIT_RESET, HeaderValue::from_static("1")),
        (
            RATELIMIT_POLICY,
            HeaderValue::from_static("\"default\";q=1000000000;w=1"),
        ),
        (
            RATELIMIT,
            HeaderValue::from_static("\"default\";r=999999999;t=1"),
        ),
    ]
}

fn governor_quota(per_second: u32) -> Quota {
    Quota::per_second(NonZeroU32::new(per_second).unwrap())
}

fn ours_id(name: &str, headers: bool) -> String {
    if headers {
        format!("ours/{name}")
    } else {
        format!("ours/{name}/no_headers")
    }
}

fn global(c: &mut Criterion) {
    let mut g = c.benchmark_group("global");
    for (name, make) in ALGORITHMS {
        for headers in [true, false] {
            let layer = make(HIGH, SECOND).headers(headers).build().unwrap();
            let mut svc = layer.layer(tower::service_fn(noop));
            assert_eq!(
                drive_ok(&mut svc, Request::new(())).status(),
                StatusCode::OK
            );
            g.bench_function(ours_id(name, headers), |b| {
                bench_answers(b, &mut svc, || Request::new(()))
            });
            assert_eq!(layer.stats().rejected, 0, "{name}: some requests refused");
        }
    }

    let mut bare = tower::service_fn(noop);
    g.bench_function("bare_service", |b| {
        bench_answers(b, &mut bare, || Request::new(()))
    });

    // The floor for any layer sending our five rate-limit headers: inserting them, with values
    // known in advance, into the bare service's response (and dropping it).
    let headers = static_rate_limit_headers();
    g.bench_function("bare_service+5_static_headers", |b| {
        b.iter_batched(
            || Request::new(()),
            |req| {
                let mut response = drive_ok(&mut bare, req);
                for (name, value) in &headers {
                    if let Entry::Vacant(slot) = response.headers_mut().entry(name.clone()) {
                        slot.insert(value.clone());
                    }
                }
                black_box(response);
            },
            BATCH,
        )
    });

    let direct = RateLimiter::direct(governor_quota(HIGH as u32));
    g.bench_function("governor/check", |b| {
        b.iter(|| black_box(direct.check().is_ok()))
    });
    g.bench_function("governor/check+bare_service", |b| {
        b.iter_batched(
            || Request::new(()),
            |req| {
                assert!(direct.check().is_ok());
                black_box(drive_ok(&mut bare, req));
            },
            BATCH,
        )
    });

    // tower's RateLimit makes a tokio `Sleep` up front, so it needs a runtime context; with a
    // huge rate it never parks in `poll_ready`.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _context = rt.enter();
    let mut tower_limit =
        tower::limit::RateLimitLayer::new(u64::MAX, HOUR).layer(tower::service_fn(noop));
    g.bench_function("tower/limit::RateLimit", |b| {
        bench_answers(b, &mut tower_limit, || Request::new(()))
    });

    // tower-resilience's default (fixed window), refusing at once rather than waiting.
    let mut resilience = tower_resilience::ratelimiter::RateLimiterLayer::builder()
        .limit_for_period(HIGH as usize)
        .refresh_period(SECOND)
        .timeout_duration(Duration::ZERO)
        .build()
        .unwrap()
        .layer(tower::service_fn(noop));
    g.bench_function("tower_resilience/RateLimiter", |b| {
        bench_answers(b, &mut resilience, || Request::new(()))
    });
    g.finish();
}

fn keyed(c: &mut Criterion) {
    let addrs = peer_addrs();
    let ips: Vec<_> = addrs.iter().map(SocketAddr::ip).collect();
    let api_keys = api_keys();
    let mut g = c.benchmark_group("keyed_10k");
    for (name, make) in ALGORITHMS {
        for headers in [true, false] {
            let layer = make(HIGH, SECOND)
                .key(PeerIp)
                .headers(headers)
                .build()
                .unwrap();
            let mut svc = layer.layer(tower::service_fn(noop));
            let mut next = cycle(&addrs);
            g.bench_function(ours_id(name, headers), |b| {
                bench_answers(b, &mut svc, || peer_request(next()))
            });
            let stats = layer.stats();
            assert_eq!(stats.rejected + stats.missing_key, 0, "{name}: refusals");
            assert_eq!(layer.backend().overflowed(), 0, "{name}: keys overflowed");
        }
    }

    // The keyed token bucket on the TSC clock (`--features quanta`), as governor reads time.
    #[cfg(feature = "quanta")]
    for headers in [true, false] {
        let layer = RateLimitLayer::token_bucket(HIGH, SECOND)
            .key(PeerIp)
            .headers(headers)
            .clock(tower_bulwark::clock::QuantaClock::new())
            .build()
            .unwrap();
        let mut svc = layer.layer(tower::service_fn(noop));
        let mut next = cycle(&addrs);
        let id = format!("{}/quanta_clock", ours_id("token_bucket", headers));
        g.bench_function(id, |b| bench_answers(b, &mut svc, || peer_request(next())));
        assert_eq!(layer.stats().rejected, 0);
    }

    // The same decision keyed by an API-key header instead of the peer IP.
    let layer = RateLimitLayer::token_bucket(HIGH, SECOND)
        .key(HeaderKey::new(X_API_KEY))
        .build()
        .unwrap();
    let mut svc = layer.layer(tower::service_fn(noop));
    let mut next = cycle(&api_keys);
    g.bench_function("ours/token_bucket/x-api-key", |b| {
        bench_answers(b, &mut svc, || api_key_request(next()))
    });
    assert_eq!(layer.stats().rejected + layer.stats().missing_key, 0);

    let mut bare = tower::service_fn(noop);
    let mut next = cycle(&addrs);
    g.bench_function("bare_service", |b| {
        bench_answers(b, &mut bare, || peer_request(next()))
    });

    let limiter = RateLimiter::keyed(governor_quota(HIGH as u32));
    let mut next_ip = cycle(&ips);
    g.bench_function("governor/check_key", |b| {
        b.iter(|| black_box(limiter.check_key(&next_ip()).is_ok()))
    });
    // What a governor-based layer would do: read the peer IP, check it, call the service.
    let mut next = cycle(&addrs);
    g.bench_function("governor/check_key+bare_service", |b| {
        b.iter_batched(
            || peer_request(next()),
            |req| {
                let ip = req.extensions().get::<SocketAddr>().unwrap().ip();
                assert!(limiter.check_key(&ip).is_ok());
                black_box(drive_ok(&mut bare, req));
            },
            BATCH,
        )
    });
    g.finish();
}

fn reject(c: &mut Criterion) {
    let mut g = c.benchmark_group("reject");
    for headers in [true, false] {
        let layer = RateLimitLayer::token_bucket(1, HOUR)
            .headers(headers)
            .build()
            .unwrap();
        let mut svc = layer.layer(tower::service_fn(noop));
        assert_eq!(
            drive_ok(&mut svc, Request::new(())).status(),
            StatusCode::OK
        );
        assert_eq!(
            drive_ok(&mut svc, Request::new(())).status(),
            StatusCode::TOO_MANY_REQUESTS
        );
        g.bench_function(ours_id("token_bucket", headers), |b| {
            bench_answers(b, &mut svc, || Request::new(()))
        });
        assert_eq!(layer.stats().allowed, 1);
    }

    let addrs = peer_addrs();
    let layer = RateLimitLayer::token_bucket(1, HOUR)
        .key(PeerIp)
        .build()
        .unwrap();
    let mut svc = layer.layer(tower::service_fn(noop));
    for addr in &addrs {
        drive_ok(&mut svc, peer_request(*addr));
    }
    let mut next = cycle(&addrs);
    g.bench_function("ours/token_bucket/keyed_10k", |b| {
        bench_answers(b, &mut svc, || peer_request(next()))
    });
    assert_eq!(layer.stats().allowed, u64::from(KEYS));

    let direct = RateLimiter::direct(Quota::per_hour(NonZeroU32::MIN));
    assert!(direct.check().is_ok());
    g.bench_function("governor/check", |b| {
        b.iter(|| black_box(direct.check().is_err()))
    });
    let keyed = RateLimiter::keyed(Quota::per_hour(NonZeroU32::MIN));
    let ips: Vec<_> = addrs.iter().map(SocketAddr::ip).collect();
    for ip in &ips {
        assert!(keyed.check_key(ip).is_ok());
    }
    let mut next_ip = cycle(&ips);
    g.bench_function("governor/check_key/keyed_10k", |b| {
        b.iter(|| black_box(keyed.check_key(&next_ip()).is_err()))
    });
    g.finish();
}

fn contended(c: &mut Criterion) {
    let mut g = c.benchmark_group("contended_one_key");
    for threads in [1, 2] {
        for (name, make) in [ALGORITHMS[0], ALGORITHMS[2]] {
            for headers in [true, false] {
                let layer = make(HIGH, SECOND).headers(headers).build().unwrap();
                let id = format!("{}/{threads}_threads", ours_id(name, headers));
                g.bench_function(id, |b| {
                    b.iter_custom(|iters| {
                        let workers = (0..threads)
                            .map(|_| {
                                let mut svc = layer.layer(tower::service_fn(noop));
                                move || {
                                    black_box(drive_ok(&mut svc, Request::new(())));
                                }
                            })
                            .collect();
                        on_threads(iters, workers)
                    })
                });
                assert_eq!(layer.stats().rejected, 0);
            }
        }
        let direct = RateLimiter::direct(governor_quota(HIGH as u32));
        g.bench_function(format!("governor/check/{threads}_threads"), |b| {
            b.iter_custom(|iters| {
                let workers = (0..threads)
                    .map(|_| || assert!(black_box(direct.check()).is_ok()))
                    .collect();
                on_threads(iters, workers)
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = config(Duration::from_secs(2), 30);
    targets = global, keyed, reject, contended
}
criterion_main!(benches);
