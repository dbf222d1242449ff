//! The rate limiter on Redis, end to end, each test against its own `redis-server` (a test
//! returns early, after the harness has said why, when there is no `redis-server` on PATH).
//!
//! Time: the layer's own time (back-off, the cache of refused keys, the local fail mode) is a
//! `ManualClock` the tests move; Redis decides on its server clock, which runs in real time, so
//! values derived from it (reset times, `Retry-After`) are checked against a bound or with a
//! tolerance of seconds (periods are minutes or hours long), never a sleep. The only sleeps here wait for something outside
//! the layer (a spawned refund landing in Redis, a restarted Redis, the client reconnecting),
//! each poll bounded by [`PATIENCE`].

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::redis_server::{closed_port, start_redis, RedisServer};
use crate::common::*;
use http::{HeaderMap, Request, StatusCode};
use tower::{Layer, Service, ServiceExt};
use tower_bulwark::clock::ManualClock;
use tower_bulwark::key::Key;
use tower_bulwark::rate_limit::store::{Decision, RateLimitBackend, RedisRateLimiter, Verdict};
use tower_bulwark::rate_limit::{Limit, RateLimitBuilder, RateLimitLayer, RateLimited};
use tower_bulwark::redis::{FailMode, RedisBackend};

/// The Redis call deadline the tests configure (the default).
const DEADLINE: Duration = Duration::from_millis(50);
/// What a request may take beyond the deadline on a loaded machine.
const SLACK: Duration = Duration::from_millis(250);
/// The longest any request may take, Redis healthy, dead, frozen or coming back (plus any
/// time the process was kept off the CPU meanwhile: see [`Watch`]).
const BOUND: Duration = DEADLINE.saturating_add(SLACK);
/// The bound on every wait for something outside the layer.
const PATIENCE: Duration = Duration::from_secs(20);
/// The deadline of tests about what Redis decides rather than about its failures: on a loaded
/// machine a healthy Redis may miss 50 ms, and its answers, not the fail mode's, are wanted.
const PATIENT_DEADLINE: Duration = Duration::from_secs(10);
/// Seconds of real time a value read from Redis's clock may have moved on by (reset times,
/// `Retry-After`) while the test ran, on a loaded machine. Periods are chosen much longer.
const DRIFT_SECS: u64 = 10;

/// A layer on Redis keyed by [`Key::Global`].
type RedisLayer = RateLimitLayer<tower_bulwark::key::Global, RedisRateLimiter>;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// The verdict, waiting for it if it needs a round trip.
async fn decide(backend: &RedisRateLimiter, key: &Key, cost: u64) -> Verdict {
    match backend.decide(key, cost) {
        Decision::Ready(verdict) => verdict,
        Decision::Pending(decision) => decision.await,
    }
}

/// A verdict that must be given at once, with no round trip.
fn decide_at_once(backend: &RedisRateLimiter, key: &Key, cost: u64) -> Verdict {
    match backend.decide(key, cost) {
        Decision::Ready(verdict) => verdict,
        Decision::Pending(_) => panic!("expected an answer without a round trip to Redis"),
    }
}

/// A verdict that must go to Redis (or at least try).
async fn decide_remote(backend: &RedisRateLimiter, key: &Key, cost: u64) -> Verdict {
    match backend.decide(key, cost) {
        Decision::Ready(verdict) => panic!("expected a round trip to Redis, got {verdict:?}"),
        Decision::Pending(decision) => decision.await,
    }
}

/// The latencies of a test's requests, each checked against [`BOUND`] plus the time the
/// process was kept off the CPU while it ran. A canary thread sleeps 5 ms at a time and notes
/// each interval by which it overslept: on an idle machine there is next to none and the bound
/// is the deadline + slack, but on a starved one (a 50 ms timer was seen firing 3.5 s late)
/// every thread, the one running the layer's deadline timer included, waits as long, and only
/// the layer's own delay is held to the bound. A layer that waits past its deadline (a connect
/// timeout, a hang, a blocked worker) fails the check: the canary, an OS thread of its own,
/// goes on waking on time meanwhile.
struct Watch {
    shared: Arc<Latencies>,
    canary: std::thread::JoinHandle<()>,
}

#[derive(Debug, Default)]
struct Latencies {
    /// `(start, end)` of every request over [`BOUND`].
    slow: std::sync::Mutex<Vec<(Instant, Instant)>>,
    /// `(due, woke)` of every canary nap that overran by over a millisecond.
    stalls: std::sync::Mutex<Vec<(Instant, Instant)>>,
    stop: AtomicBool,
}

impl Latencies {
    fn record(&self, start: Instant) {
        let end = Instant::now();
        if end - start > BOUND {
            self.slow.lock().unwrap().push((start, end));
        }
    }

    /// How long the canary overslept within `from..to`.
    fn stalled(&self, from: Instant, to: Instant) -> Duration {
        self.stalls
            .lock()
            .unwrap()
            .iter()
            .map(|&(due, woke)| woke.min(to).saturating_duration_since(due.max(from)))
            .sum()
    }
}

impl Watch {
    fn start() -> Watch {
        let shared = Arc::new(Latencies::default());
        let canary = std::thread::spawn({
            let shared = shared.clone();
            move || {
                let nap = ms(5);
                while !shared.stop.load(Ordering::SeqCst) {
                    let due = Instant::now() + nap;
                    std::thread::sleep(nap);
                    let woke = Instant::now();
                    if woke > due + ms(1) {
                        shared.stalls.lock().unwrap().push((due, woke));
                    }
                }
            }
        });
        Watch { shared, canary }
    }

    /// Sends one request, recording how long it took.
    async fn send<S>(&self, svc: &mut S, req: Request<Body>) -> Res
    where
        S: Service<Request<Body>, Response = Res>,
        S::Error: fmt::Debug,
    {
        let start = Instant::now();
        let res = ok(svc, req).await;
        self.shared.record(start);
        res
    }

    /// One decision, recording how long it took.
    async fn decide(&self, backend: &RedisRateLimiter, key: &Key) -> Verdict {
        let start = Instant::now();
        let verdict = decide(backend, key, 1).await;
        self.shared.record(start);
        verdict
    }

    /// Stops the canary and checks every request against the bound.
    async fn check(self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.canary.join().expect("the canary panicked");
        for &(start, end) in self.shared.slow.lock().unwrap().iter() {
            let took = end - start;
            let stalled = self.shared.stalled(start, end);
            assert!(
                took <= BOUND + stalled,
                "a request took {took:?}: over the {DEADLINE:?} deadline + {SLACK:?} slack + \
                 {stalled:?} for which the process was kept waiting meanwhile"
            );
        }
    }
}

/// Polls `check` (every 10 ms, at most [`PATIENCE`]) until it holds.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let give_up = Instant::now() + PATIENCE;
    while !check() {
        assert!(
            Instant::now() < give_up,
            "gave up after {PATIENCE:?} waiting for {what}"
        );
        tokio::time::sleep(ms(10)).await;
    }
}

/// A Redis key name as text (every key in these tests is ASCII).
fn text(key: &[u8]) -> String {
    String::from_utf8(key.to_vec()).expect("an ASCII key")
}

/// The names of the layer's Redis keys for `key` (each limit has one or more).
fn keys_of(backend: &RedisRateLimiter, key: &Key) -> Vec<String> {
    backend.redis_keys(key).iter().map(|k| text(k)).collect()
}

/// Every key in the server.
fn all_keys(server: &RedisServer) -> BTreeSet<String> {
    server
        .cli(&["KEYS", "*"])
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect()
}

/// An integer reply (`""`, a nil, reads as 0).
fn int(server: &RedisServer, args: &[&str]) -> i64 {
    let reply = server.cli(args);
    if reply.is_empty() {
        return 0;
    }
    reply
        .parse()
        .unwrap_or_else(|_| panic!("{args:?} answered {reply:?}"))
}

/// The server's clock (`TIME`).
fn server_time(server: &RedisServer) -> Duration {
    let reply = server.cli(&["TIME"]);
    let mut parts = reply.lines().map(|l| l.trim().parse::<u64>().unwrap());
    let (secs, micros) = (parts.next().unwrap(), parts.next().unwrap());
    Duration::from_secs(secs) + Duration::from_micros(micros)
}

/// The first of `candidates` whose current window on the server's clock (windows are aligned
/// to multiples of the period) has at least `room` left, so that a test does not straddle a
/// window boundary. Which period is used does not matter to the tests.
fn period_with_room(
    server: &RedisServer,
    candidates: impl IntoIterator<Item = Duration>,
    room: Duration,
) -> Duration {
    let now = server_time(server).as_micros();
    candidates
        .into_iter()
        .find(|period| {
            let period = period.as_micros();
            period - now % period >= room.as_micros()
        })
        .expect("no candidate period leaves room in its current window")
}

/// Periods of about an hour, a minute apart.
fn about_an_hour() -> impl Iterator<Item = Duration> {
    (0..30).map(|i| secs(3_600 + 60 * i))
}

/// `X-RateLimit-Remaining`, if present.
fn remaining(headers: &HeaderMap) -> Option<u64> {
    header(headers, "x-ratelimit-remaining").map(|v| v.parse().unwrap())
}

/// A header holding whole seconds.
fn seconds(headers: &HeaderMap, name: &str) -> u64 {
    header(headers, name)
        .unwrap_or_else(|| panic!("missing {name}"))
        .parse()
        .unwrap()
}

/// The `(name, r, t)` items of a `RateLimit` header.
fn ietf_items(headers: &HeaderMap) -> Vec<(String, u64, u64)> {
    header(headers, "ratelimit")
        .expect("missing RateLimit")
        .split(", ")
        .map(|item| {
            let mut params = item.split(';');
            let name = params.next().unwrap().to_owned();
            let mut value = |key: &str| -> u64 {
                params
                    .next()
                    .and_then(|p| p.strip_prefix(key))
                    .unwrap_or_else(|| panic!("no {key} in {item:?}"))
                    .parse()
                    .unwrap()
            };
            let r = value("r=");
            let t = value("t=");
            (name, r, t)
        })
        .collect()
}

/// `redis` is `memory` less at most [`DRIFT_SECS`]: a time Redis measured in real time
/// against one the memory layer measured on a clock standing still.
fn assert_drifted(what: &str, redis: u64, memory: u64) {
    assert!(
        redis <= memory && redis + DRIFT_SECS >= memory,
        "{what}: Redis said {redis}, the memory layer {memory}"
    );
}

/// The Redis layer's answer is the memory layer's, but for times that moved on in real time.
async fn assert_same_answer(step: usize, memory: Res, redis: Res) {
    let what = |name: &str| format!("request {step}: {name}");
    assert_eq!(redis.status(), memory.status(), "{}", what("status"));
    let (mh, rh) = (memory.headers().clone(), redis.headers().clone());
    let names = |h: &HeaderMap| {
        h.keys()
            .map(|k| k.as_str().to_owned())
            .collect::<BTreeSet<_>>()
    };
    assert_eq!(names(&rh), names(&mh), "{}", what("header names"));
    for name in [
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "ratelimit-policy",
        "content-type",
        "grpc-status",
        "grpc-message",
    ] {
        assert_eq!(header(&rh, name), header(&mh, name), "{}", what(name));
    }
    for name in ["x-ratelimit-reset", "retry-after"] {
        if mh.contains_key(name) {
            assert_drifted(&what(name), seconds(&rh, name), seconds(&mh, name));
        }
    }
    let (mi, ri) = (ietf_items(&mh), ietf_items(&rh));
    assert_eq!(ri.len(), mi.len(), "{}", what("RateLimit items"));
    for ((rn, rr, rt), (mn, mr, mt)) in ri.into_iter().zip(mi) {
        assert_eq!((rn, rr), (mn, mr), "{}", what("RateLimit"));
        assert_drifted(&what("RateLimit t"), rt, mt);
    }
    let status = redis.status();
    let (mb, rb) = (body_text(memory).await, body_text(redis).await);
    if status == StatusCode::TOO_MANY_REQUESTS {
        let retry_after = header(&rh, "retry-after").unwrap();
        assert_eq!(
            rb,
            format!(r#"{{"error":"Too many requests","retryAfter":{retry_after}}}"#),
            "{}",
            what("body")
        );
    } else {
        assert_eq!(rb, mb, "{}", what("body"));
    }
}

// ---------------------------------------------------------------------------------------------
// 1. The HTTP and generic layers on Redis
// ---------------------------------------------------------------------------------------------

/// Token bucket, 5 per 10 minutes: one token every 120 s. The same requests go through a
/// memory layer and a Redis layer: same statuses, headers, bodies and gRPC answers.
#[tokio::test]
async fn http_layer_on_redis_answers_like_the_memory_layer() {
    let server = start_redis!();
    let redis = RedisBackend::connect(&server.url()).await.unwrap();
    let (clock, memory) = limiter_on_clock(RateLimitLayer::token_bucket(5, secs(600)));
    let on_redis = RateLimitLayer::token_bucket(5, secs(600))
        .clock(clock.clone())
        .backend(redis)
        .deadline(PATIENT_DEADLINE)
        .prefix("http")
        .build()
        .unwrap();
    let mut mem = memory.layer(inner());
    let mut red = on_redis.layer(inner());
    let request = |step: usize| {
        if step < 7 {
            get("/")
        } else {
            grpc_call("/pkg.Svc/Method")
        }
    };

    let mut statuses = Vec::new();
    let mut grpc = None;
    for step in 0..8 {
        let m = ok(&mut mem, request(step)).await;
        let r = ok(&mut red, request(step)).await;
        statuses.push(r.status().as_u16());
        if step == 0 {
            assert_eq!(legacy(r.headers()), (5, 4, 120));
            assert_eq!(
                header(r.headers(), "ratelimit-policy"),
                Some(r#""default";q=5;w=600"#)
            );
        }
        if step == 7 {
            grpc = Some((
                header(r.headers(), "grpc-status").map(str::to_owned),
                header(r.headers(), "retry-after").map(str::to_owned),
            ));
        }
        assert_same_answer(step, m, r).await;
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429, 200]);
    let (grpc_status, retry_after) = grpc.unwrap();
    assert_eq!(grpc_status.as_deref(), Some("8"), "RESOURCE_EXHAUSTED");
    let retry_after: u64 = retry_after.unwrap().parse().unwrap();
    assert!((120 - DRIFT_SECS..=120).contains(&retry_after));

    let layer_stats = on_redis.stats();
    assert_eq!((layer_stats.allowed, layer_stats.rejected), (5, 3));
    let stats = on_redis.backend().stats();
    // The first refusal went to Redis; the two after it were answered from the cache.
    assert_eq!((stats.calls, stats.denied_cache_hits), (6, 2), "{stats:?}");
    assert_eq!((stats.errors, stats.degraded), (0, 0), "{stats:?}");
}

#[tokio::test]
async fn generic_layer_on_redis_refuses_with_a_rate_limited_error() {
    let server = start_redis!();
    let redis = RedisBackend::connect(&server.url()).await.unwrap();
    let layer = RateLimitLayer::token_bucket(2, secs(600)) // one token every 300 s
        .clock(clock())
        .backend(redis.clone())
        .deadline(PATIENT_DEADLINE)
        .prefix("generic")
        .build_generic()
        .unwrap();
    let mut svc = layer.layer(tower::service_fn(|n: u32| async move {
        Ok::<_, Infallible>(n * 2)
    }));
    assert_eq!(svc.ready().await.unwrap().call(1).await.unwrap(), 2);
    assert_eq!(svc.ready().await.unwrap().call(2).await.unwrap(), 4);
    let err = svc.ready().await.unwrap().call(3).await.unwrap_err();
    let limited = err
        .downcast_ref::<RateLimited>()
        .unwrap_or_else(|| panic!("not a RateLimited error: {err}"));
    assert!(
        limited.retry_after() <= secs(300) && limited.retry_after() > secs(300 - DRIFT_SECS),
        "{limited:?}"
    );
    assert!(err.to_string().starts_with("rate limited: retry after "));
    let stats = layer.stats();
    assert_eq!((stats.allowed, stats.rejected), (2, 1));
    // The keys are those an HTTP layer of the same prefix and limit uses: they share counts.
    let http = layer_with(&redis, "generic", &[Limit::token_bucket(2, secs(600))]);
    let keys: BTreeSet<String> = keys_of(http.backend(), &Key::Global).into_iter().collect();
    assert_eq!(all_keys(&server), keys);
    let v = decide(http.backend(), &Key::Global, 1).await;
    assert!(!v.allowed() && !v.degraded(), "{v:?}");
}

// ---------------------------------------------------------------------------------------------
// 2. Several limits: all or nothing
// ---------------------------------------------------------------------------------------------

/// A layer on Redis with these limits, the test clock and a patient deadline.
fn layer_with(redis: &RedisBackend, prefix: &str, limits: &[Limit]) -> RedisLayer {
    on_redis(with_limits(limits), redis, prefix)
}

/// `builder` on Redis under `prefix`, with the test clock and a patient deadline.
fn on_redis(builder: RateLimitBuilder, redis: &RedisBackend, prefix: &str) -> RedisLayer {
    builder
        .clock(clock())
        .backend(redis.clone())
        .deadline(PATIENT_DEADLINE)
        .prefix(prefix)
        .build()
        .unwrap()
}

/// The Redis keys in which `limit` keeps `key`'s state (a limit's keys do not depend on the
/// other limits of its layer: they are named after the prefix, the key and the limit).
fn limit_keys(redis: &RedisBackend, prefix: &str, limit: &Limit, key: &Key) -> Vec<String> {
    keys_of(
        layer_with(redis, prefix, std::slice::from_ref(limit)).backend(),
        key,
    )
}

/// What `keys` hold, whatever their types: to tell that nothing was written.
fn snapshot(server: &RedisServer, keys: &[String]) -> Vec<String> {
    keys.iter()
        .map(|key| {
            let kind = server.cli(&["TYPE", key]);
            let contents = match kind.as_str() {
                "none" => String::new(),
                "string" => server.cli(&["GET", key]),
                "hash" => server.cli(&["HGETALL", key]),
                "zset" => server.cli(&["ZRANGE", key, "0", "-1", "WITHSCORES"]),
                "set" => server.cli(&["SORT", key, "ALPHA"]),
                "list" => server.cli(&["LRANGE", key, "0", "-1"]),
                other => panic!("{key} is a {other}"),
            };
            format!("{key} ({kind}): {contents}")
        })
        .collect()
}

#[tokio::test]
async fn several_limits_spend_all_or_nothing_in_redis() {
    let server = start_redis!();
    let redis = RedisBackend::connect(&server.url()).await.unwrap();
    let hour = secs(3_600);
    let tb = Limit::token_bucket(4, hour).name("tb"); // one token per 900 s
    let log = Limit::sliding_window_log(6, hour).name("log");
    let cost_layer = |prefix: &str, limits: &[Limit]| {
        on_redis(with_limits(limits).cost(cost_header), &redis, prefix)
    };

    // Refused by the first limit: the second spends nothing.
    let layer = cost_layer("aon-1", &[tb.clone(), log.clone()]);
    let log_keys = limit_keys(&redis, "aon-1", &log, &Key::Global);
    let tb_keys = limit_keys(&redis, "aon-1", &tb, &Key::Global);
    let mut svc = layer.layer(inner());
    let res = ok(&mut svc, with_cost("/", 3)).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(ietf_remaining(res.headers()), [1, 3]);
    let (log_before, tb_before) = (snapshot(&server, &log_keys), snapshot(&server, &tb_keys));

    let res = ok(&mut svc, with_cost("/", 2)).await; // the bucket holds 1
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        ietf_remaining(res.headers()),
        [1, 3],
        "the log spent nothing"
    );
    assert_eq!(snapshot(&server, &log_keys), log_before, "nothing written");
    assert_eq!(snapshot(&server, &tb_keys), tb_before, "nothing written");

    let res = ok(&mut svc, with_cost("/", 1)).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(ietf_remaining(res.headers()), [0, 2], "the log had 3 left");

    // Refused by the second limit: the first spends nothing.
    let log = Limit::sliding_window_log(2, hour).name("log");
    let layer = cost_layer("aon-2", &[log.clone(), tb.clone()]);
    let tb_keys = limit_keys(&redis, "aon-2", &tb, &Key::Global);
    let mut svc = layer.layer(inner());
    for expected in [[1, 3], [0, 2]] {
        let res = ok(&mut svc, with_cost("/", 1)).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(ietf_remaining(res.headers()), expected);
    }
    let tb_before = snapshot(&server, &tb_keys);
    let ttl = int(&server, &["PTTL", &tb_keys[0]]);
    let res = ok(&mut svc, with_cost("/", 1)).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        ietf_remaining(res.headers()),
        [0, 2],
        "the bucket spent nothing"
    );
    assert_eq!(snapshot(&server, &tb_keys), tb_before, "nothing written");
    assert!(
        int(&server, &["PTTL", &tb_keys[0]]) <= ttl,
        "nor its TTL moved"
    );
    // The log's oldest entry leaves in about an hour.
    let retry_after = seconds(res.headers(), "retry-after");
    assert!((3_600 - DRIFT_SECS..=3_600).contains(&retry_after));
    // A request the log can take (cost 0 reads) shows the bucket as it was.
    let res = ok(&mut svc, with_cost("/", 0)).await;
    assert_eq!(ietf_remaining(res.headers()), [0, 2]);
}

// ---------------------------------------------------------------------------------------------
// 3. skip_failed refunds through Redis
// ---------------------------------------------------------------------------------------------

/// What is left of `layer`'s first limit for [`Key::Global`], read with a decision of cost 0
/// (which spends nothing).
async fn left(observer: &RedisLayer) -> u64 {
    decide_remote(observer.backend(), &Key::Global, 0)
        .await
        .limits()[0]
        .remaining()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_failed_refunds_through_redis_with_every_algorithm() {
    let server = start_redis!();
    let redis = RedisBackend::connect(&server.url()).await.unwrap();
    let windowed = period_with_room(&server, about_an_hour(), secs(120));
    let limits = [
        Limit::token_bucket(3, secs(3_600)),
        Limit::fixed_window(3, windowed),
        Limit::sliding_window_counter(3, windowed),
        Limit::sliding_window_log(3, secs(3_600)),
    ];
    for (i, limit) in limits.into_iter().enumerate() {
        let algorithm = limit.algorithm();
        let prefix = format!("refund-{i}");
        let layer = RateLimitLayer::builder()
            .limit(limit.clone())
            .skip_failed(true)
            .clock(clock())
            .backend(redis.clone())
            .deadline(PATIENT_DEADLINE)
            .prefix(prefix.as_str())
            .build()
            .unwrap();
        // Another instance on the same limit, to read what is left.
        let observer = layer_with(&redis, &prefix, std::slice::from_ref(&limit));
        let backend = layer.backend();
        let mut svc = layer.layer(inner());

        for _ in 0..3 {
            let res = ok(&mut svc, get("/status/500")).await;
            assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
        }
        assert_eq!(layer.stats().refunded, 3, "{algorithm:?}");
        // The refunds are sent by spawned tasks: wait (bounded) for them to land.
        let give_up = Instant::now() + PATIENCE;
        while left(&observer).await != 3 {
            assert!(
                Instant::now() < give_up,
                "{algorithm:?}: the refunds did not land: {:?}",
                backend.stats()
            );
            tokio::time::sleep(ms(10)).await;
        }

        // Had the failures counted, the first of these would be refused.
        for _ in 0..3 {
            let res = ok(&mut svc, get("/")).await;
            assert_eq!(res.status(), StatusCode::OK, "{algorithm:?}");
        }
        assert_eq!(left(&observer).await, 0, "{algorithm:?}: successes count");
        let res = ok(&mut svc, get("/")).await;
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS, "{algorithm:?}");
        for key in keys_of(backend, &Key::Global) {
            let ttl = int(&server, &["PTTL", &key]);
            assert!(ttl > 0 || ttl == -2, "{algorithm:?}: {key} has no TTL");
        }
        let stats = backend.stats();
        assert_eq!(stats.calls, 3 + 3 + 4, "{algorithm:?}: {stats:?}");
        assert_eq!((stats.errors, stats.refunds_dropped), (0, 0), "{stats:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// 4. (e) Every key has a TTL derived from its window
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_key_has_a_ttl_bounded_by_its_window() {
    use tower_bulwark::rate_limit::Algorithm;
    let server = start_redis!();
    let redis = RedisBackend::connect(&server.url()).await.unwrap();
    let windowed = period_with_room(&server, about_an_hour(), secs(120));
    let hour = secs(3_600);
    let day = secs(86_400);
    // Each limit with its period.
    let layers: Vec<(&str, Vec<(Limit, Duration)>)> = vec![
        ("ttl-tb", vec![(Limit::token_bucket(4, hour), hour)]), // a token per 900 s
        ("ttl-fw", vec![(Limit::fixed_window(4, windowed), windowed)]),
        (
            "ttl-sc",
            vec![(Limit::sliding_window_counter(4, windowed), windowed)],
        ),
        ("ttl-sl", vec![(Limit::sliding_window_log(4, hour), hour)]),
        (
            "ttl-two",
            vec![
                (Limit::token_bucket(4, hour).name("short"), hour),
                (Limit::sliding_window_log(8, day).name("long"), day),
            ],
        ),
    ];
    // For each Redis key: its limit, how many requests it admitted, and the server's time
    // before they were decided.
    let mut expected = Vec::new();
    for (prefix, limits) in &layers {
        let only: Vec<Limit> = limits.iter().map(|(limit, _)| limit.clone()).collect();
        let layer = layer_with(&redis, prefix, &only);
        let backend = layer.backend();
        let decided_from = server_time(&server).as_micros() as i128;
        // Four admitted and one refused (refusals write nothing), and one for another key.
        for (key, decisions, admitted) in [(Key::from("user"), 5, 4), (Key::Int(9), 1, 1)] {
            let mut allowed = 0;
            for _ in 0..decisions {
                allowed += u64::from(decide(backend, &key, 1).await.allowed());
            }
            assert_eq!(allowed, admitted, "{prefix}");
            for (limit, period) in limits {
                for name in limit_keys(&redis, prefix, limit, &key) {
                    let period = period.as_micros() as i128;
                    expected.push((name, limit.algorithm(), period, admitted, decided_from));
                }
            }
        }
    }
    let names: BTreeSet<String> = expected.iter().map(|e| e.0.clone()).collect();
    assert_eq!(names.len(), expected.len(), "one limit per key");
    assert!(names.len() >= 12);
    assert_eq!(all_keys(&server), names, "no other key is written");

    let ms = |us: i128| us / 1_000;
    let slack = 1_000 * DRIFT_SECS as i128; // ms between the decisions and this reading
    for &(ref name, algorithm, period, admitted, decided_from) in &expected {
        // The window the decisions fell in (the period leaves them room in it).
        let window_end = decided_from - decided_from % period + period;
        let before = server_time(&server).as_micros() as i128;
        let pttl = int(&server, &["PTTL", name]) as i128;
        let after = server_time(&server).as_micros() as i128;
        // The TTL the key must have now, `lo..=hi` ms, and the most its window allows.
        let (lo, hi, most) = match algorithm {
            // Until the theoretical arrival time: `admitted` emission intervals (period / 4).
            Algorithm::TokenBucket => {
                let until = ms(period) * admitted as i128 / 4;
                (until - slack, until + 2, ms(period))
            }
            // Until the window ends.
            Algorithm::FixedWindow => (
                ms(window_end - after) - 2,
                ms(window_end - before) + 2,
                ms(period),
            ),
            // Until the next window ends: it still weighs this one's count.
            Algorithm::SlidingWindowCounter => (
                ms(window_end + period - after) - 2,
                ms(window_end + period - before) + 2,
                2 * ms(period),
            ),
            // Until the newest entry leaves the window.
            Algorithm::SlidingWindowLog => (ms(period) - slack, ms(period) + 2, ms(period)),
        };
        assert!(pttl > 0, "{name} has no TTL ({pttl})");
        assert!(
            (lo..=hi).contains(&pttl) && pttl <= most + 2,
            "{name}: PTTL {pttl} ms, expected {lo}..={hi} (its window allows {most})"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 5. (d) Skewed local clocks change nothing
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skewed_local_clocks_change_nothing() {
    let server = start_redis!();
    // Wall time 1970 and monotonic time zero; wall time 2100 and ten years of monotonic time.
    let past = ManualClock::with_unix_origin(secs(1));
    let future = ManualClock::with_unix_origin(secs(4_102_444_800));
    future.set(secs(10 * 365 * 86_400));
    let minute = period_with_room(&server, (60..120).map(secs), secs(30));
    let limits = [
        Limit::fixed_window(6, minute),
        Limit::token_bucket(6, secs(3_600)),
        Limit::sliding_window_log(6, secs(3_600)),
    ];
    for (i, limit) in limits.into_iter().enumerate() {
        let algorithm = limit.algorithm();
        // Two instances: their own connections, their own clocks, one prefix.
        let mut instances = Vec::new();
        for clock in [past.clone(), future.clone()] {
            let redis = RedisBackend::connect(&server.url()).await.unwrap();
            let layer = RateLimitLayer::builder()
                .limit(limit.clone())
                .clock(clock)
                .backend(redis)
                .deadline(PATIENT_DEADLINE)
                .prefix(format!("skew-{i}"))
                .build()
                .unwrap();
            instances.push(layer.layer(inner()));
        }
        let mut admitted = [0; 2];
        let mut remainings = Vec::new();
        let mut retry_afters = [Vec::new(), Vec::new()];
        for round in 0..14 {
            let which = round % 2;
            let res = ok(&mut instances[which], get("/")).await;
            match res.status() {
                StatusCode::OK => {
                    admitted[which] += 1;
                    remainings.push(remaining(res.headers()).unwrap());
                }
                StatusCode::TOO_MANY_REQUESTS => {
                    assert_eq!(remaining(res.headers()), Some(0));
                    retry_afters[which].push(seconds(res.headers(), "retry-after"));
                }
                other => panic!("{algorithm:?}: unexpected {other}"),
            }
        }
        assert_eq!(admitted, [3, 3], "{algorithm:?}: one shared limit of 6");
        assert_eq!(remainings, [5, 4, 3, 2, 1, 0], "{algorithm:?}: one count");
        // Both instances were told the same wait, measured on Redis's clock.
        let (lo, hi) = match algorithm {
            tower_bulwark::rate_limit::Algorithm::FixedWindow => (1, minute.as_secs()),
            tower_bulwark::rate_limit::Algorithm::TokenBucket => (600 - DRIFT_SECS, 600),
            _ => (3_600 - DRIFT_SECS, 3_600),
        };
        for waits in &retry_afters {
            assert_eq!(waits.len(), 4);
            for &wait in waits {
                assert!((lo..=hi).contains(&wait), "{algorithm:?}: {waits:?}");
            }
        }
        let (a, b) = (retry_afters[0][0], retry_afters[1][0]);
        assert!(a.abs_diff(b) <= DRIFT_SECS, "{algorithm:?}: {a} vs {b}");
    }
}

// ---------------------------------------------------------------------------------------------
// 6. Fail modes with Redis down
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_modes_answer_when_redis_is_down() {
    let mut server = start_redis!();
    let redis = RedisBackend::connect(&server.url()).await.unwrap();
    let clock = clock();
    let layer = |mode: FailMode, prefix: &str| {
        RateLimitLayer::fixed_window(10, secs(60))
            .clock(clock.clone())
            .backend(redis.clone())
            .fail_mode(mode)
            .deadline(DEADLINE)
            .prefix(prefix)
            .build()
            .unwrap()
    };
    let open = layer(FailMode::Open, "open");
    let closed = layer(FailMode::Closed, "closed");
    let local = layer(FailMode::Local { instances: 2 }, "local");
    server.kill();
    let watch = Watch::start();

    // Open: everything admitted, well past the limit of 10, with no rate-limit headers.
    let mut svc = open.layer(inner());
    for _ in 0..15 {
        let res = watch.send(&mut svc, get("/")).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_no_rate_limit_headers(res.headers());
    }
    let v = decide_at_once(open.backend(), &Key::Global, 1);
    assert!(
        v.allowed() && v.degraded() && v.limits().is_empty(),
        "{v:?}"
    );
    let stats = open.backend().stats();
    assert_eq!(stats.degraded, 16, "{stats:?}");
    // Three failures, then Redis is left alone (the clock stands still: no probe).
    assert_eq!((stats.calls, stats.errors), (3, 3), "{stats:?}");

    // Closed: everything refused, `Retry-After: 1`.
    let mut svc = closed.layer(inner());
    for _ in 0..5 {
        let res = watch.send(&mut svc, get("/")).await;
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(header(res.headers(), "retry-after"), Some("1"));
        assert_no_rate_limit_headers(res.headers());
        assert_eq!(
            body_text(res).await,
            r#"{"error":"Too many requests","retryAfter":1}"#
        );
    }
    let v = decide_at_once(closed.backend(), &Key::Global, 1);
    assert!(
        !v.allowed() && v.degraded() && v.retry_after() == secs(1),
        "{v:?}"
    );
    let stats = closed.backend().stats();
    assert_eq!((stats.degraded, stats.calls, stats.errors), (6, 3, 3));

    // Local, two instances: each admits 10 / 2 = 5 a minute, on the layer's clock.
    let mut svc = local.layer(inner());
    for round in 0..2 {
        for left in (0..5).rev() {
            let res = watch.send(&mut svc, get("/")).await;
            assert_eq!(res.status(), StatusCode::OK, "round {round}");
            assert_eq!(remaining(res.headers()), Some(left));
        }
        let res = watch.send(&mut svc, get("/")).await;
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS, "round {round}");
        assert_eq!(header(res.headers(), "retry-after"), Some("60"));
        // The next local window (the probe this lets out fails: Redis is still down).
        clock.advance(secs(60));
    }
    let stats = local.backend().stats();
    assert_eq!(stats.degraded, 12, "{stats:?}");
    assert_eq!((stats.calls, stats.errors), (3 + 1, 3 + 1), "{stats:?}");
    assert_eq!(local.stats().allowed, 10);
    watch.check().await;
}

// ---------------------------------------------------------------------------------------------
// 7. and 8. (a, b) Redis killed or frozen under load
// ---------------------------------------------------------------------------------------------

/// The shared limit of the load tests: never reached.
const LOAD_LIMIT: u64 = 1_000_000;
/// Each instance's share when Redis fails: 1_000_000 / 100_000 = 10.
const LOAD_INSTANCES: u32 = 100_000;
const LOCAL_LIMIT: u64 = 10;

/// A sliding log of a million an hour in Redis; 10 an hour in memory when Redis fails.
fn load_layer(
    redis: RedisBackend,
    clock: ManualClock,
    prefix: &str,
    deadline: Duration,
) -> RedisLayer {
    RateLimitLayer::sliding_window_log(LOAD_LIMIT, secs(3_600))
        .clock(clock)
        .backend(redis)
        .fail_mode(FailMode::Local {
            instances: LOAD_INSTANCES,
        })
        .deadline(deadline)
        .prefix(prefix)
        .build()
        .unwrap()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// Admitted by Redis (the shared count shows in `X-RateLimit-Remaining`).
    Redis(u64),
    /// Admitted by the local fail mode (its small count shows instead).
    Local,
    /// Refused by the local fail mode.
    Refused,
}

fn classify(res: &Res) -> Answer {
    match (res.status(), remaining(res.headers())) {
        (StatusCode::OK, Some(left)) if left >= LOAD_LIMIT - 100_000 => Answer::Redis(left),
        (StatusCode::OK, Some(left)) if left < LOCAL_LIMIT => Answer::Local,
        (StatusCode::TOO_MANY_REQUESTS, Some(0)) => {
            assert!(seconds(res.headers(), "retry-after") >= 1);
            Answer::Refused
        }
        (status, left) => panic!("unexpected answer: {status}, remaining {left:?}"),
    }
}

#[derive(Debug, Default)]
struct Tally {
    redis: AtomicU64,
    local: AtomicU64,
    refused: AtomicU64,
}

impl Tally {
    fn record(&self, answer: Answer) {
        let counter = match answer {
            Answer::Redis(_) => &self.redis,
            Answer::Local => &self.local,
            Answer::Refused => &self.refused,
        };
        counter.fetch_add(1, Ordering::SeqCst);
    }

    fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::SeqCst)
    }
}

/// Eight tasks sending requests through clones of one service until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start<S>(svc: S, latencies: Arc<Latencies>) -> Load
    where
        S: Service<Request<Body>, Response = Res> + Clone + Send + 'static,
        S::Future: Send,
        S::Error: fmt::Debug + Send,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Tally::default());
        let tasks = (0..8)
            .map(|_| {
                let (mut svc, stop, tally) = (svc.clone(), stop.clone(), tally.clone());
                let latencies = latencies.clone();
                tokio::spawn(async move {
                    while !stop.load(Ordering::SeqCst) {
                        let start = Instant::now();
                        let res = ok(&mut svc, get("/")).await;
                        latencies.record(start);
                        tally.record(classify(&res));
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        Load { stop, tally, tasks }
    }

    /// Waits (bounded) until `check` holds.
    async fn until(&self, what: &str, mut check: impl FnMut(&Tally) -> bool) {
        let tally = self.tally.clone();
        eventually(what, || check(&tally)).await;
    }

    async fn stop(self) -> Arc<Tally> {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            task.await.expect("a load task panicked");
        }
        self.tally
    }
}

/// Runs the load through `outage` (the fault injected once Redis has answered), then checks
/// every answer: each within the bound, the degraded ones exactly the local fail mode's.
async fn load_through_outage(
    layer: &RedisLayer,
    clock: &ManualClock,
    watch: &Watch,
    outage: impl FnOnce(),
) -> Arc<Tally> {
    let backend = layer.backend();
    let load = Load::start(layer.layer(inner()), watch.shared.clone());
    // On a starved machine a healthy Redis may miss the 50 ms deadline often enough to trip
    // the breaker before the fault: move the clock past the back-off then. (Less than an
    // hour in all, so the local sliding log's one window spans the whole run.)
    let mut nudges = 0;
    load.until("healthy answers", |t| {
        if backend.is_backing_off() && nudges < 100 {
            clock.advance(secs(31));
            nudges += 1;
        }
        Tally::get(&t.redis) >= 200
    })
    .await;
    outage();
    load.until("the fail mode to answer", |t| Tally::get(&t.refused) >= 200)
        .await;
    let tally = load.stop().await;

    let (local, refused) = (Tally::get(&tally.local), Tally::get(&tally.refused));
    assert!(Tally::get(&tally.redis) >= 1, "{tally:?}");
    // The local limiter's window spans the run: it admitted exactly its 10, and every degraded
    // decision is one of the fail mode's answers.
    assert_eq!(local, LOCAL_LIMIT, "{tally:?}");
    let stats = backend.stats();
    assert_eq!(stats.degraded, local + refused, "{stats:?} {tally:?}");
    assert_eq!(layer.stats().allowed, Tally::get(&tally.redis) + local);
    assert!(backend.is_backing_off());
    tally
}

/// Moves the layer's clock past any back-off and sends a request, until Redis answers again
/// (it is outside the layer: the client reconnects on its own schedule). Returns what Redis
/// said was left.
async fn until_redis_answers<S>(svc: &mut S, clock: &ManualClock, watch: &Watch) -> u64
where
    S: Service<Request<Body>, Response = Res>,
    S::Error: fmt::Debug,
{
    let give_up = Instant::now() + PATIENCE;
    loop {
        clock.advance(secs(31)); // the longest back-off is 30 s
        let res = watch.send(svc, get("/")).await;
        if let Answer::Redis(left) = classify(&res) {
            return left;
        }
        assert!(
            Instant::now() < give_up,
            "Redis decisions did not come back within {PATIENCE:?}"
        );
        tokio::time::sleep(ms(20)).await;
    }
}

/// After recovery the same layer (same `RedisBackend`) decides in Redis again, and its count is
/// the one every instance shares: another instance, connected afresh, sees each of its
/// requests, and it sees the other's.
async fn assert_shared_again(
    server: &RedisServer,
    layer: &RedisLayer,
    clock: &ManualClock,
    watch: &Watch,
    prefix: &str,
) {
    let mut svc = layer.layer(inner());
    let left = until_redis_answers(&mut svc, clock, watch).await;
    assert!(!layer.backend().is_backing_off());
    // The other instance has a patient deadline: its answers always come from Redis.
    let other = load_layer(
        RedisBackend::connect(&server.url()).await.unwrap(),
        ManualClock::new(),
        prefix,
        PATIENT_DEADLINE,
    );
    let mut previous = left;
    for _ in 0..5 {
        // Our answer came from Redis, so nothing we sent before it is still on its way there:
        // the other instance's next decision counts exactly one more.
        let v = decide_remote(other.backend(), &Key::Global, 1).await;
        assert!(v.allowed() && !v.degraded(), "{v:?}");
        let theirs = v.limits()[0].remaining();
        assert_eq!(theirs, previous - 1, "the other instance sees our requests");
        // And we see theirs (and any request of ours that missed its deadline but landed).
        let ours = until_redis_answers(&mut svc, clock, watch).await;
        assert!(ours < theirs, "we see the other instance's requests");
        previous = ours;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_under_load_every_request_stays_within_the_deadline_then_recovers() {
    let mut server = start_redis!();
    let redis = RedisBackend::connect(&server.url()).await.unwrap();
    let clock = clock();
    let layer = load_layer(redis, clock.clone(), "kill", DEADLINE);
    let watch = Watch::start();

    load_through_outage(&layer, &clock, &watch, || {
        tokio::task::block_in_place(|| server.kill());
    })
    .await;
    let stats = layer.backend().stats();
    assert!(stats.errors >= 3, "{stats:?}");

    // Same port, no data; the same layer and connection handle.
    tokio::task::block_in_place(|| server.restart());
    assert_shared_again(&server, &layer, &clock, &watch, "kill").await;
    watch.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_frozen_under_load_every_request_stays_within_the_deadline_then_recovers() {
    let server = start_redis!();
    let redis = RedisBackend::connect(&server.url()).await.unwrap();
    let clock = clock();
    let layer = load_layer(redis, clock.clone(), "freeze", DEADLINE);
    let watch = Watch::start();

    let tally = load_through_outage(&layer, &clock, &watch, || server.freeze()).await;
    let stats = layer.backend().stats();
    assert!(stats.timeouts >= 3, "a frozen Redis times out: {stats:?}");

    server.thaw();
    // The data survived: every answer Redis gave before the freeze is still counted.
    let mut svc = layer.layer(inner());
    let left = until_redis_answers(&mut svc, &clock, &watch).await;
    assert!(
        LOAD_LIMIT - left > Tally::get(&tally.redis),
        "{left} {tally:?}"
    );
    assert_shared_again(&server, &layer, &clock, &watch, "freeze").await;
    watch.check().await;
}

// ---------------------------------------------------------------------------------------------
// 9. Back-off
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backoff_leaves_redis_alone_then_sends_exactly_one_probe() {
    let mut server = start_redis!();
    let redis = RedisBackend::connect(&server.url()).await.unwrap();
    let clock = clock();
    let layer = RateLimitLayer::token_bucket(100, secs(60))
        .clock(clock.clone())
        .backend(redis)
        .deadline(DEADLINE)
        .failure_threshold(3)
        .backoff(secs(1))
        .build()
        .unwrap();
    let backend = layer.backend();
    let key = Key::Global;
    server.kill();
    let watch = Watch::start();

    for failures in 1..=3 {
        assert!(!backend.is_backing_off(), "after {} failures", failures - 1);
        let start = Instant::now();
        let v = decide_remote(backend, &key, 1).await;
        watch.shared.record(start);
        assert!(v.allowed() && v.degraded(), "{v:?}");
    }
    assert!(backend.is_backing_off());
    assert_eq!(backend.stats().calls, 3);

    // Backing off: answered at once by the fail mode, no round trip.
    for _ in 0..5 {
        assert!(decide_at_once(backend, &key, 1).degraded());
    }
    clock.advance(ms(999));
    assert!(decide_at_once(backend, &key, 1).degraded());
    let stats = backend.stats();
    assert_eq!((stats.calls, stats.degraded), (3, 3 + 6), "{stats:?}");

    // The back-off is over: one probe, and only one while it is out.
    clock.advance(ms(1));
    let probe = match backend.decide(&key, 1) {
        Decision::Pending(probe) => probe,
        Decision::Ready(v) => panic!("expected a probe, got {v:?}"),
    };
    for _ in 0..3 {
        assert!(decide_at_once(backend, &key, 1).degraded());
    }
    assert!(probe.await.degraded(), "Redis is still down");
    assert_eq!(backend.stats().calls, 4, "exactly one probe");

    // The failed probe doubled the back-off to 2 s.
    clock.advance(secs(1));
    assert!(decide_at_once(backend, &key, 1).degraded());
    clock.advance(secs(1));
    assert!(decide_remote(backend, &key, 1).await.degraded());
    assert_eq!(backend.stats().calls, 5);
    assert!(backend.is_backing_off());

    // Redis comes back: the next probe after the back-off closes the breaker.
    tokio::task::block_in_place(|| server.restart());
    let give_up = Instant::now() + PATIENCE;
    loop {
        clock.advance(secs(31));
        if !watch.decide(backend, &key).await.degraded() {
            break;
        }
        assert!(Instant::now() < give_up, "Redis did not come back");
        tokio::time::sleep(ms(20)).await;
    }
    assert!(!backend.is_backing_off());
    // Decisions go to Redis again, without waiting for a back-off.
    let calls = backend.stats().calls;
    let start = Instant::now();
    let v = decide_remote(backend, &key, 1).await;
    watch.shared.record(start);
    assert!(v.allowed(), "{v:?}");
    assert_eq!(backend.stats().calls, calls + 1);
    watch.check().await;
}

// ---------------------------------------------------------------------------------------------
// 10. The cache of refused keys
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn refused_keys_are_answered_without_a_round_trip_until_their_retry_time() {
    let server = start_redis!();
    let redis = RedisBackend::connect(&server.url()).await.unwrap();
    let clock = clock();
    let layer = RateLimitLayer::sliding_window_log(2, secs(3_600))
        .clock(clock.clone())
        .backend(redis)
        .deadline(PATIENT_DEADLINE)
        .prefix("denied")
        .build()
        .unwrap();
    let backend = layer.backend();
    let key = Key::from("client");
    for _ in 0..2 {
        assert!(decide_remote(backend, &key, 1).await.allowed());
    }
    let refused = decide_remote(backend, &key, 1).await;
    assert!(!refused.allowed() && !refused.degraded(), "{refused:?}");
    let wait = refused.retry_after();
    assert!(
        wait > secs(3_600 - DRIFT_SECS) && wait <= secs(3_600),
        "{wait:?}"
    );
    assert_eq!(backend.stats().calls, 3);

    // Knocking again: answered locally, with the same wait, shrinking on the layer's clock.
    for _ in 0..4 {
        let v = decide_at_once(backend, &key, 1);
        assert!(!v.allowed());
        assert_eq!(v.retry_after(), wait);
        assert_eq!(v.limits()[0].remaining(), 0);
    }
    clock.advance(wait - secs(1));
    let v = decide_at_once(backend, &key, 1);
    assert_eq!(v.retry_after(), secs(1));
    let stats = backend.stats();
    assert_eq!((stats.calls, stats.denied_cache_hits), (3, 5), "{stats:?}");
    // Another key is not in the cache.
    let other = decide_remote(backend, &Key::from("someone-else"), 1).await;
    assert!(other.allowed());
    assert_eq!(backend.stats().calls, 4);

    // Past the retry time: Redis is asked again (its clock has not moved: refused again).
    clock.advance(secs(1));
    let again = decide_remote(backend, &key, 1).await;
    assert!(!again.allowed() && !again.degraded());
    let stats = backend.stats();
    assert_eq!((stats.calls, stats.denied_cache_hits), (5, 5), "{stats:?}");
    assert!(decide_at_once(backend, &key, 1).retry_after() > secs(3_600 - DRIFT_SECS));
}

#[tokio::test]
async fn with_the_cache_off_every_refusal_asks_redis() {
    let server = start_redis!();
    let redis = RedisBackend::connect(&server.url()).await.unwrap();
    let layer = RateLimitLayer::sliding_window_log(2, secs(3_600))
        .clock(clock())
        .backend(redis)
        .deadline(PATIENT_DEADLINE)
        .denied_cache(0)
        .build()
        .unwrap();
    let mut svc = layer.layer(inner());
    let mut statuses = Vec::new();
    for _ in 0..7 {
        statuses.push(ok(&mut svc, get("/")).await.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 429, 429, 429, 429, 429]);
    let stats = layer.backend().stats();
    assert_eq!((stats.calls, stats.denied_cache_hits), (7, 0), "{stats:?}");
}

// ---------------------------------------------------------------------------------------------
// 11. A lazily connected backend
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lazy_backend_with_nothing_listening_answers_with_the_fail_mode_in_time() {
    // Nothing listens there, and no test's server will.
    let port = closed_port();
    let redis = RedisBackend::connect_lazy(&format!("redis://127.0.0.1:{port}/")).unwrap();
    let clock = clock();
    let watch = Watch::start();
    for (mode, expected) in [
        (FailMode::Open, [200; 6]),
        (FailMode::Closed, [429; 6]),
        (
            FailMode::Local { instances: 2 },
            [200, 200, 429, 429, 429, 429],
        ),
    ] {
        let layer = RateLimitLayer::fixed_window(4, secs(60))
            .clock(clock.clone())
            .backend(redis.clone())
            .fail_mode(mode)
            .deadline(DEADLINE)
            .build()
            .unwrap();
        let mut svc = layer.layer(inner());
        let mut statuses = Vec::new();
        for _ in 0..6 {
            statuses.push(watch.send(&mut svc, get("/")).await.status().as_u16());
        }
        assert_eq!(statuses, expected, "{mode:?}");
        let stats = layer.backend().stats();
        assert_eq!(stats.degraded, 6, "{mode:?}: {stats:?}");
        assert_eq!((stats.calls, stats.errors), (3, 3), "{mode:?}: {stats:?}");
    }
    watch.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lazy_backend_starts_while_redis_is_away_and_shares_once_it_is_up() {
    let mut server = start_redis!();
    server.kill();
    let redis = RedisBackend::connect_lazy(&server.url()).unwrap();
    let clock = clock();
    let layer = load_layer(redis, clock.clone(), "lazy", DEADLINE);
    let watch = Watch::start();
    let mut svc = layer.layer(inner());
    for _ in 0..5 {
        let res = watch.send(&mut svc, get("/")).await;
        assert_eq!(classify(&res), Answer::Local);
    }
    tokio::task::block_in_place(|| server.restart());
    assert_shared_again(&server, &layer, &clock, &watch, "lazy").await;
    watch.check().await;
}

// ---------------------------------------------------------------------------------------------
// Regressions: a probe whose caller goes away; keys that must not collide
// ---------------------------------------------------------------------------------------------

/// Sends requests (moving the clock past any back-off) until one is answered by Redis; fails
/// if none is within `patience`. For tests where no latency is measured.
async fn until_shared<S>(
    svc: &mut S,
    clock: &ManualClock,
    patience: Duration,
    why: impl Fn() -> String,
) where
    S: Service<Request<Body>, Response = Res>,
    S::Error: fmt::Debug,
{
    let give_up = Instant::now() + patience;
    loop {
        clock.advance(secs(31));
        if let Answer::Redis(_) = classify(&ok(svc, get("/")).await) {
            return;
        }
        assert!(Instant::now() < give_up, "{}", why());
        tokio::time::sleep(ms(20)).await;
    }
}

/// A probe whose caller goes away while it waits for Redis (a client disconnects, an outer
/// timeout fires) gives its slot back: the next decision probes, and the layer recovers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_dropped_while_in_flight_does_not_stop_recovery() {
    use futures_util::FutureExt;
    let server = start_redis!();
    let redis = RedisBackend::connect(&server.url()).await.unwrap();
    let clock = clock();
    let layer = load_layer(redis, clock.clone(), "dropped-probe", DEADLINE);
    let mut svc = layer.layer(inner());
    server.freeze();
    for _ in 0..3 {
        ok(&mut svc, get("/")).await; // each one times out
    }
    assert!(layer.backend().is_backing_off());

    // The back-off is over: this request carries the probe; Redis, frozen, does not answer.
    clock.advance(secs(1));
    let calls = layer.backend().stats().calls;
    let mut probe = Box::pin(svc.ready().await.unwrap().call(get("/")));
    assert!(
        (&mut probe).now_or_never().is_none(),
        "frozen Redis answered"
    );
    assert_eq!(layer.backend().stats().calls, calls + 1, "the probe is out");
    drop(probe); // its client went away

    server.thaw();
    until_shared(&mut svc, &clock, PATIENCE, || {
        format!(
            "Redis is back but never probed again: {:?}",
            layer.backend().stats()
        )
    })
    .await;
}

/// The same, for a probe dropped before it was ever polled (a `select!` whose other branch
/// was ready, a client gone before the response future ran).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_dropped_before_it_is_polled_does_not_stop_recovery() {
    let mut server = start_redis!();
    let redis = RedisBackend::connect(&server.url()).await.unwrap();
    let clock = clock();
    let layer = load_layer(redis, clock.clone(), "unpolled-probe", DEADLINE);
    let mut svc = layer.layer(inner());
    server.kill();
    for _ in 0..3 {
        ok(&mut svc, get("/")).await;
    }
    assert!(layer.backend().is_backing_off());

    // The back-off is over: this request carries the probe, and its client goes away at once.
    clock.advance(secs(1));
    let calls = layer.backend().stats().calls;
    let abandoned = svc.ready().await.unwrap().call(get("/"));
    drop(abandoned);
    assert_eq!(
        layer.backend().stats().calls,
        calls,
        "the probe never went out"
    );

    tokio::task::block_in_place(|| server.restart());
    until_shared(&mut svc, &clock, PATIENCE, || {
        format!(
            "Redis is back but never probed again: {:?}",
            layer.backend().stats()
        )
    })
    .await;
}

/// Distinct keys never share a Redis counter, even when one is written in hex (it holds a
/// brace) and the other is that hex text.
#[tokio::test]
async fn distinct_keys_never_share_a_redis_counter() {
    let server = start_redis!();
    let redis = RedisBackend::connect(&server.url()).await.unwrap();
    let layer = layer_with(
        &redis,
        "collide",
        &[Limit::sliding_window_log(1, secs(3_600))],
    );
    let backend = layer.backend();
    for (a, b) in [
        (Key::from("{"), Key::from("x:7b")),
        (
            Key::Header(Arc::from(&b"}"[..])),
            Key::Header(Arc::from(&b"x:7d"[..])),
        ),
        (Key::from("a{b}c"), Key::from("x:617b627d63")),
    ] {
        assert_ne!(a, b);
        assert_ne!(keys_of(backend, &a), keys_of(backend, &b));
        assert!(decide(backend, &a, 1).await.allowed());
        assert!(
            decide(backend, &b, 1).await.allowed(),
            "{a:?} spent {b:?}'s limit: both are {:?}",
            keys_of(backend, &b)
        );
        assert!(!decide(backend, &a, 1).await.allowed());
    }
    // Braces never reach the key name: the hash tag spans the whole encoded key.
    for name in all_keys(&server) {
        let tag_end = name.find('}').unwrap();
        assert!(name.starts_with("{collide:"), "{name}");
        assert!(name[tag_end..].starts_with("}:default:sl:"), "{name}");
    }
}

/// A script error (here a key of the wrong type: `WRONGTYPE`) is answered by the fail mode,
/// but it is not an outage: Redis is not left alone, and other keys are still decided there.
#[tokio::test]
async fn a_script_error_uses_the_fail_mode_without_backing_off() {
    let server = start_redis!();
    let redis = RedisBackend::connect(&server.url()).await.unwrap();
    let layer = layer_with(&redis, "poison", &[Limit::fixed_window(5, secs(3_600))]);
    let backend = layer.backend();
    let poisoned = Key::from("poisoned");
    let key = keys_of(backend, &poisoned).remove(0);
    assert_eq!(
        server.cli(&["SET", &key, "not what the script keeps"]),
        "OK"
    );
    for _ in 0..5 {
        let v = decide(backend, &poisoned, 1).await;
        assert!(v.allowed() && v.degraded(), "{v:?}");
    }
    let stats = backend.stats();
    assert!(
        !backend.is_backing_off(),
        "one bad key left Redis alone for every key: {stats:?}"
    );
    assert_eq!(
        (stats.calls, stats.errors, stats.timeouts),
        (5, 5, 0),
        "{stats:?}"
    );
    assert_eq!(stats.degraded, 5, "{stats:?}");
    let v = decide_remote(backend, &Key::from("healthy"), 1).await;
    assert!(v.allowed() && !v.degraded(), "{v:?}");
}

/// Under `FailMode::Local`, the headers describe the limit that was applied: the local share,
/// not the fleet's.
#[tokio::test]
async fn local_fallback_headers_show_the_local_share() {
    let port = closed_port();
    let redis = RedisBackend::connect_lazy(&format!("redis://127.0.0.1:{port}/")).unwrap();
    let layer = RateLimitLayer::fixed_window(10, secs(60))
        .clock(clock())
        .backend(redis)
        .fail_mode(FailMode::Local { instances: 2 })
        .deadline(DEADLINE)
        .build()
        .unwrap();
    let mut svc = layer.layer(inner());
    let res = send(&mut svc, get("/")).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-ratelimit-limit"], "5");
    assert_eq!(res.headers()["x-ratelimit-remaining"], "4");
    assert_eq!(res.headers()["ratelimit-policy"], "\"default\";q=5;w=60");
}

/// A refused connection (nothing listens) fails the call at once, not at the deadline: the
/// deadline is for a Redis that is silent, not for one that says no.
#[tokio::test]
async fn a_refused_connection_fails_at_once_not_at_the_deadline() {
    let redis = RedisBackend::connect_lazy("redis://127.0.0.1:1/").unwrap();
    let layer = RateLimitLayer::fixed_window(10, Duration::from_secs(1))
        .backend(redis)
        .fail_mode(FailMode::Closed)
        // Waited out, it would count as a timeout: the call must not wait.
        .deadline(Duration::from_secs(5))
        .build()
        .unwrap();
    for _ in 0..3 {
        let verdict = match layer.backend().decide(&Key::Int(1), 1) {
            Decision::Pending(pending) => pending.await,
            Decision::Ready(verdict) => verdict,
        };
        assert!(!verdict.allowed() && verdict.degraded());
    }
    let stats = layer.backend().stats();
    assert_eq!((stats.errors, stats.timeouts), (3, 0), "{stats:?}");
}
