//! The Redis backend as a fleet sees it.
//!
//! 1. **The scripts are the memory algorithms.** Property tests replay random sequences of
//!    decisions (costs 0..=3, whole-microsecond time steps, window boundaries hit exactly) and
//!    refunds against the memory backend on a `ManualClock` and against the Lua script through
//!    `decide_at` / `refund_at` at the same absolute time, and require the same verdicts: allowed,
//!    retry-after, every limit's remaining and reset, and the time the request was counted at.
//! 2. **Accuracy across processes.** Four clients, each with its own connection and layer, share
//!    one key and admit exactly what the limit promises: as four real processes (this test binary
//!    re-run as children) and, faster, as four connections in one process.
//! 3. **Redis Cluster** (feature `redis-cluster`): the keys of one decision share a slot, decisions
//!    spread over the nodes, the script is reloaded on a node that lost it, and a fleet on the
//!    cluster is as accurate as on one server.
//!
//! Every test starts its own `redis-server` (or cluster) and returns early, after the harness has
//! printed why, when there is none on PATH. Nothing sleeps: time is a `ManualClock` and a fixed
//! script time, or limits so long that a run cannot reach a refill or a window boundary (the
//! fixed windows are picked from the server's `TIME` so that the current one has 15 minutes
//! left). The script's TTLs are real milliseconds while a property test's time is fixed, so its
//! keys are made persistent right behind every call, and a run during which any key expired on
//! the wall clock anyway is run again with fresh keys.

use std::cell::Cell;
use std::collections::HashMap;
use std::env;
use std::future::Future;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use crate::common::redis_server::{start_redis, RedisServer};
use crate::common::with_limits;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestCaseResult, TestRunner};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tower::{Layer, ServiceExt};
use tower_bulwark::clock::ManualClock;
use tower_bulwark::key::{Global, Key};
use tower_bulwark::rate_limit::store::RedisRateLimiter;
use tower_bulwark::rate_limit::store::{Decision, RateLimitBackend, Verdict};
use tower_bulwark::rate_limit::{Limit, RateLimitLayer};
use tower_bulwark::redis::{FailMode, RedisBackend};
use tower_bulwark::BackendError;

// =============================================================================================
// 1. The Lua scripts against the memory algorithms
// =============================================================================================

/// The absolute time (µs) every case starts from: a multiple of every period used, so windows,
/// aligned to multiples of the period from time 0 on both sides, line up identically.
const ORIGIN_US: u64 = 1_700_000_000 * 1_000_000;

/// How often a case is replayed when a Redis key expired on the wall clock while it ran.
const TAINTED_REPLAYS: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    TokenBucket,
    FixedWindow,
    SlidingCounter,
    SlidingLog,
}

/// One limit of a case. Limits divide every period in microseconds, so the token bucket's
/// emission interval and refill time are exact in both nanoseconds and microseconds.
#[derive(Debug, Clone)]
struct Spec {
    kind: Kind,
    limit: u64,
    period_ms: u64,
    /// Token bucket only.
    burst: u64,
}

impl Spec {
    fn limit(&self) -> Limit {
        let period = Duration::from_millis(self.period_ms);
        match self.kind {
            Kind::TokenBucket => Limit::token_bucket(self.limit, period).burst(self.burst),
            Kind::FixedWindow => Limit::fixed_window(self.limit, period),
            Kind::SlidingCounter => Limit::sliding_window_counter(self.limit, period),
            Kind::SlidingLog => Limit::sliding_window_log(self.limit, period),
        }
    }

    fn period_us(&self) -> u64 {
        self.period_ms * 1_000
    }

    /// The time one request's share of the limit takes to come back.
    fn unit_us(&self) -> u64 {
        self.period_us() / self.limit
    }
}

/// How the clock moves before an operation (always forward).
#[derive(Debug, Clone)]
enum Step {
    /// By this many microseconds (0 included: several requests in one microsecond).
    By(u64),
    /// To the next window boundary of limit `limit` (0 or 1), shifted by `offset` µs (-1, 0, 1).
    ToBoundary { limit: usize, offset: i64 },
}

#[derive(Debug, Clone)]
enum Action {
    /// Decide a request of this cost.
    Decide(u64),
    /// Refund one earlier admitted request (not refunded yet), then probe with cost 0.
    Refund(prop::sample::Index),
}

#[derive(Debug, Clone)]
struct Op {
    step: Step,
    action: Action,
}

type Case = (Vec<Spec>, u64, Vec<Op>);

fn spec(kind: Kind) -> impl Strategy<Value = Spec> {
    (
        prop::sample::select(vec![1u64, 2, 4, 5, 8, 10]),
        prop::sample::select(vec![10u64, 100, 1_000, 2_000]),
        1u64..=12,
    )
        .prop_map(move |(limit, period_ms, burst)| Spec {
            kind,
            limit,
            period_ms,
            burst: if kind == Kind::TokenBucket { burst } else { 0 },
        })
}

fn op(unit_us: u64, period_us: u64) -> impl Strategy<Value = Op> {
    let step = prop_oneof![
        3 => Just(Step::By(0)),
        6 => (0..=2 * unit_us).prop_map(Step::By),
        1 => (0..=3 * period_us).prop_map(Step::By),
        2 => (0usize..2, -1i64..=1).prop_map(|(limit, offset)| Step::ToBoundary { limit, offset }),
    ];
    let action = prop_oneof![
        5 => (0u64..=3).prop_map(Action::Decide),
        1 => any::<prop::sample::Index>().prop_map(Action::Refund),
    ];
    (step, action).prop_map(|(step, action)| Op { step, action })
}

/// A case for these limits: a start offset (in up to two of the longest period) and 1..48 ops.
fn ops_for(specs: Vec<Spec>) -> impl Strategy<Value = Case> {
    let unit = specs.iter().map(Spec::unit_us).min().unwrap_or(1);
    let period = specs.iter().map(Spec::period_us).max().unwrap_or(1);
    (
        Just(specs),
        0..=2 * period,
        prop::collection::vec(op(unit, period), 1..48),
    )
}

fn single_case(kind: Kind) -> impl Strategy<Value = Case> {
    spec(kind).prop_flat_map(|s| ops_for(vec![s]))
}

fn pair_case(first: &[Kind], second: &[Kind]) -> impl Strategy<Value = Case> {
    (
        prop::sample::select(first.to_vec()),
        prop::sample::select(second.to_vec()),
    )
        .prop_flat_map(|(a, b)| (spec(a), spec(b)))
        .prop_flat_map(|(a, b)| ops_for(vec![a, b]))
}

const ALL_KINDS: [Kind; 4] = [
    Kind::TokenBucket,
    Kind::FixedWindow,
    Kind::SlidingCounter,
    Kind::SlidingLog,
];

/// A verdict in comparable form.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    allowed: bool,
    retry_after: Duration,
    counted_at: Duration,
    /// (remaining, reset_after) per limit.
    limits: Vec<(u64, Duration)>,
    degraded: bool,
}

/// `ceil_retry`: the memory backend's retry-after rounded up to a whole microsecond. The script
/// counts in microseconds, so "the first instant the request fits" is the first such microsecond
/// (the sliding counter's `previous * (period - e) <= room * period` is solved in ns on one side
/// and in µs on the other). Every other number must already be equal to the nanosecond.
fn seen(verdict: &Verdict, ceil_retry: bool) -> Seen {
    let retry_after = if ceil_retry {
        let us = verdict.retry_after().as_nanos().div_ceil(1_000);
        Duration::from_micros(u64::try_from(us).unwrap())
    } else {
        verdict.retry_after()
    };
    Seen {
        allowed: verdict.allowed(),
        retry_after,
        counted_at: verdict.counted_at(),
        limits: verdict
            .limits()
            .iter()
            .map(|l| (l.remaining(), l.reset_after()))
            .collect(),
        degraded: verdict.degraded(),
    }
}

/// One private Redis, one multiplexed connection shared by the scripts and the bookkeeping, and
/// a runtime to drive them, shared by every case of one property test.
struct Bench {
    redis: RedisBackend,
    /// The connection under `redis`: a `PERSIST` sent here right after a script call travels
    /// in the same pipeline and runs right after the script.
    admin: ConnectionManager,
    rt: tokio::runtime::Runtime,
    /// A fresh Redis key for every replay of every case.
    next_key: Cell<u64>,
    _server: RedisServer,
}

impl Bench {
    fn start() -> Option<Bench> {
        let server = RedisServer::start()?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let admin = rt.block_on(async {
            let client = redis::Client::open(server.url()).unwrap();
            // No response timeout of its own (the redis crate's default is 500 ms): only the
            // layer's deadline bounds a call, and that is set far above any stall.
            let config = ConnectionManagerConfig::new().set_response_timeout(None);
            ConnectionManager::new_with_config(client, config)
                .await
                .unwrap()
        });
        let redis = RedisBackend::from_connection_manager(admin.clone());
        Some(Bench {
            redis,
            admin,
            rt,
            next_key: Cell::new(0),
            _server: server,
        })
    }

    /// Keys expired by the server so far (lazily or actively).
    fn expired_keys(&self) -> u64 {
        let mut admin = self.admin.clone();
        let info: String = self.rt.block_on(async {
            redis::cmd("INFO")
                .arg("stats")
                .query_async(&mut admin)
                .await
                .unwrap()
        });
        info_field(&info, "expired_keys").unwrap_or(0)
    }

    /// Makes `keys` persistent. The script gives its keys TTLs in real milliseconds, while a
    /// test's time is fixed: a key must not vanish because the machine was slow.
    async fn persist(&self, keys: &[Vec<u8>]) {
        let mut pipe = redis::pipe();
        for k in keys {
            pipe.cmd("PERSIST").arg(k.as_slice()).ignore();
        }
        pipe.query_async::<()>(&mut self.admin.clone())
            .await
            .unwrap();
    }

    /// A decision at the fixed time `at`, its keys made persistent by a `PERSIST` pipelined
    /// right behind the script call (and once more after it, in case the script had to be
    /// loaded first).
    async fn decide_at(
        &self,
        script: &RedisRateLimiter,
        key: &Key,
        keys: &[Vec<u8>],
        cost: u64,
        at: Duration,
    ) -> Result<Verdict, BackendError> {
        let (verdict, ()) = tokio::join!(script.decide_at(key, cost, at), self.persist(keys));
        self.persist(keys).await;
        verdict
    }

    /// A refund at the fixed time `at`, its keys made persistent as by `decide_at`.
    async fn refund_at(
        &self,
        script: &RedisRateLimiter,
        key: &Key,
        keys: &[Vec<u8>],
        (cost, counted_at): (u64, Duration),
        at: Duration,
    ) -> Result<(), BackendError> {
        let (refund, ()) = tokio::join!(
            script.refund_at(key, cost, counted_at, at),
            self.persist(keys)
        );
        self.persist(keys).await;
        refund
    }

    /// Runs `attempt` with a fresh number for its keys, again (up to 5 times) while some key
    /// expired on the wall clock during the run: `persist` comes right after each call, but a
    /// TTL of 1 ms can still run out first on a slow machine, and then the run proves nothing.
    fn untainted<T, F: Future<Output = T>>(&self, mut attempt: impl FnMut(u64) -> F) -> Option<T> {
        for _ in 0..TAINTED_REPLAYS {
            let n = self.next_key.get();
            self.next_key.set(n + 1);
            let before = self.expired_keys();
            let outcome = self.rt.block_on(attempt(n));
            if self.expired_keys() == before {
                return Some(outcome);
            }
            eprintln!("a key expired on the wall clock during a run: running it again");
        }
        None
    }

    fn check(&self, case: &Case) -> TestCaseResult {
        self.untainted(|n| self.replay(n, case)).unwrap_or_else(|| {
            Err(TestCaseError::reject(
                "a key expired on the wall clock in every replay",
            ))
        })
    }

    async fn replay(&self, n: u64, (specs, start, ops): &Case) -> TestCaseResult {
        let clock = ManualClock::new();
        let mut memory = RateLimitLayer::builder().clock(clock.clone());
        let mut redis = RateLimitLayer::builder();
        for spec in specs {
            memory = memory.limit(spec.limit());
            redis = redis.limit(spec.limit());
        }
        let memory = memory.build().unwrap();
        let redis = redis
            .backend(self.redis.clone())
            .prefix("eq")
            .deadline(Duration::from_secs(10))
            .denied_cache(0)
            .build()
            .unwrap();
        let (memory, script) = (memory.backend(), redis.backend());
        let key = Key::Int(n);
        let keys = script.redis_keys(&key);

        let mut now = ORIGIN_US + start;
        // Admitted and not yet refunded: (cost, counted_at).
        let mut admitted: Vec<(u64, Duration)> = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            now = match op.step {
                Step::By(us) => now + us,
                Step::ToBoundary { limit, offset } => {
                    let period = specs[limit.min(specs.len() - 1)].period_us();
                    let next = (now / period + 1) * period;
                    next.checked_add_signed(offset).unwrap()
                }
            };
            let at = Duration::from_micros(now);
            clock.set(at);
            let cost = match op.action {
                Action::Decide(cost) => cost,
                Action::Refund(which) => {
                    if admitted.is_empty() {
                        continue;
                    }
                    let (cost, counted_at) = admitted.remove(which.index(admitted.len()));
                    memory.refund_now(&key, cost, counted_at);
                    self.refund_at(script, &key, &keys, (cost, counted_at), at)
                        .await
                        .map_err(|e| TestCaseError::fail(format!("op {i}: refund failed: {e}")))?;
                    0 // and probe the state with a request of cost 0
                }
            };
            let want = memory.decide_now(&key, cost);
            let got = self
                .decide_at(script, &key, &keys, cost, at)
                .await
                .map_err(|e| TestCaseError::fail(format!("op {i}: decision failed: {e}")))?;
            prop_assert_eq!(
                seen(&got, false),
                seen(&want, true),
                "op {} ({:?}) at origin + {} µs: redis (left) and memory (right) disagree",
                i,
                op,
                now - ORIGIN_US
            );
            if want.allowed() && matches!(op.action, Action::Decide(_)) {
                admitted.push((cost, want.counted_at()));
            }
        }
        Ok(())
    }
}

fn info_field(info: &str, field: &str) -> Option<u64> {
    info.lines()
        .find_map(|line| line.trim().strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().parse().ok())
}

/// Runs `cases` cases of `strategy` against one private Redis; panics with the shrunk case.
fn script_matches_memory(cases: u32, strategy: impl Strategy<Value = Case>) {
    let Some(bench) = Bench::start() else {
        return;
    };
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 2_000,
        ..Config::default()
    });
    if let Err(err) = runner.run(&strategy, |case| bench.check(&case)) {
        panic!("the Lua script and the memory algorithm disagree: {err}");
    }
}

/// Token bucket (GCRA): TAT, remaining, reset (capped at the exact refill), retry-after, and
/// refunds that never push the TAT before now.
#[test]
fn script_matches_memory_token_bucket() {
    script_matches_memory(128, single_case(Kind::TokenBucket));
}

/// Fixed window: window roll-over at exact boundaries, remaining, reset, refunds that only
/// count in the request's own window.
#[test]
fn script_matches_memory_fixed_window() {
    script_matches_memory(128, single_case(Kind::FixedWindow));
}

/// Sliding window counter: the weighted estimate, rounded up, the previous window carried over
/// (or dropped after a gap), the first instant a refused request fits, refunds into the current
/// or previous window.
#[test]
fn script_matches_memory_sliding_counter() {
    script_matches_memory(128, single_case(Kind::SlidingCounter));
}

/// Sliding window log: pruning at `t + period <= now`, reset from the newest entry, retry from
/// the entry that frees enough room, several requests in one microsecond, refunds of one
/// request's entries only.
#[test]
fn script_matches_memory_sliding_log() {
    script_matches_memory(128, single_case(Kind::SlidingLog));
}

/// A token bucket and a sliding log on one layer: all or nothing (a limit that would allow
/// reports its state untouched when the other refuses), the longest retry-after, one time for
/// both, refunds to both.
#[test]
fn script_matches_memory_token_bucket_and_sliding_log() {
    script_matches_memory(64, pair_case(&[Kind::TokenBucket], &[Kind::SlidingLog]));
}

/// Two limits of any two algorithms (the same one twice included) on one layer.
#[test]
fn script_matches_memory_any_two_limits() {
    script_matches_memory(160, pair_case(&ALL_KINDS, &ALL_KINDS));
}

/// The one token-bucket case the property tests cannot compare: a limit that does not divide the
/// period. The script rounds the emission interval up to a whole microsecond (3 per 10 ms: one
/// token per 3334 µs, where the memory backend uses 3 333 334 ns), so it never admits faster than
/// the limit, and caps the reported reset at the exact refill time (10 ms, not 3 x 3334 µs).
#[test]
fn script_token_bucket_rounds_the_interval_up_and_caps_the_reset_at_the_refill() {
    let Some(bench) = Bench::start() else {
        return;
    };
    let layer = RateLimitLayer::token_bucket(3, Duration::from_millis(10))
        .backend(bench.redis.clone())
        .prefix("round")
        .deadline(Duration::from_secs(10))
        .denied_cache(0)
        .build()
        .unwrap();
    let script = layer.backend();
    // (µs after the origin, allowed, remaining, reset_after µs, retry_after µs)
    let expected: [(u64, bool, u64, u128, u128); 11] = [
        (0, true, 2, 3_334, 0),
        (0, true, 1, 6_668, 0),
        // 3 x 3334 = 10 002 µs of credit spent, but an empty bucket refills in 10 000 µs.
        (0, true, 0, 10_000, 0),
        (0, false, 0, 10_000, 3_334),
        (3_333, false, 0, 6_669, 1),
        (3_334, true, 0, 10_000, 0),
        // Then exactly one token per 3334 µs, never sooner.
        (6_667, false, 0, 6_669, 1),
        (6_668, true, 0, 10_000, 0),
        (10_000, false, 0, 6_670, 2),
        (10_001, false, 0, 6_669, 1),
        (10_002, true, 0, 10_000, 0),
    ];
    let (bench, expected) = (&bench, &expected);
    let seen = bench
        .untainted(|n| async move {
            let key = Key::Int(n);
            let keys = script.redis_keys(&key);
            let mut seen = Vec::new();
            for &(us, ..) in expected {
                let at = Duration::from_micros(ORIGIN_US + us);
                let verdict = bench.decide_at(script, &key, &keys, 1, at).await.unwrap();
                let status = verdict.limits()[0];
                seen.push((
                    us,
                    verdict.allowed(),
                    status.remaining(),
                    status.reset_after().as_micros(),
                    verdict.retry_after().as_micros(),
                ));
            }
            seen
        })
        .expect("a key expired on the wall clock in every run");
    assert_eq!(seen, *expected);
}

/// The layer's deadline bounds every call; with a deadline longer than half a second it is not
/// the one that fires. A frozen server never answers: the call must be given up at the 1 s
/// deadline and counted as a timeout (not cut short at 500 ms, as a plain error, by the `redis`
/// crate's own default response timeout).
#[tokio::test]
async fn a_deadline_longer_than_half_a_second_is_the_one_that_fires() {
    let server = start_redis!();
    let redis = RedisBackend::connect(&server.url()).await.unwrap();
    let layer = RateLimitLayer::fixed_window(5, Duration::from_secs(60))
        .backend(redis)
        .deadline(Duration::from_secs(1))
        .fail_mode(FailMode::Closed)
        .denied_cache(0)
        .build()
        .unwrap();
    let decide = || async {
        match layer.backend().decide(&Key::Int(1), 1) {
            Decision::Ready(verdict) => verdict,
            Decision::Pending(pending) => pending.await,
        }
    };
    assert!(decide().await.allowed());
    server.freeze();
    let verdict = decide().await;
    server.thaw();
    assert!(!verdict.allowed() && verdict.degraded(), "{verdict:?}");
    let stats = layer.backend().stats();
    assert_eq!(
        (stats.errors, stats.timeouts),
        (1, 1),
        "the call was not given up at the layer's deadline: {stats:?}"
    );
}

// =============================================================================================
// 2. Accuracy across clients and processes
// =============================================================================================

type RedisLayer = RateLimitLayer<Global, RedisRateLimiter>;

/// Concurrent request loops per client.
const TASKS: usize = 16;
/// Requests per loop and scenario: 4 clients x 16 x 8 = 512 per scenario, far above each limit.
const ROUNDS: usize = 8;
/// Clients sharing the key.
const CLIENTS: usize = 4;

/// Far longer than any run: a token comes back only after 6 (or 360) minutes.
const TEN_HOURS: Duration = Duration::from_secs(36_000);
const HUNDRED_HOURS: Duration = Duration::from_secs(360_000);

/// One limit set shared by every client, and exactly what the fleet must admit in one run.
struct Scenario {
    name: String,
    limits: Vec<Limit>,
    expect: u64,
    /// The default cache of refused keys, or none (`denied_cache(0)`).
    denied_cache: bool,
}

/// `window` is a fixed-window period the run cannot leave (see [`pick_window`]). With
/// `flip_cache`, every scenario uses the other denied-cache setting.
fn scenarios(window: Duration, flip_cache: bool) -> Vec<Scenario> {
    let suffix = if flip_cache { "-flipped" } else { "" };
    let scenario = |name: &str, limits: Vec<Limit>, expect: u64, denied_cache: bool| Scenario {
        name: format!("{name}{suffix}"),
        limits,
        expect,
        denied_cache: denied_cache != flip_cache,
    };
    vec![
        // All requests fall in one window: exactly the limit.
        scenario("fw", vec![Limit::fixed_window(50, window)], 50, true),
        // No refill within a run: exactly the burst.
        scenario(
            "tb",
            vec![Limit::token_bucket(100, TEN_HOURS).burst(20)],
            20,
            false,
        ),
        // Exact by construction: at most the limit in any window of an hour.
        scenario("sl", vec![Limit::sliding_window_log(50, window)], 50, true),
        // A fresh key has no previous window: the estimate is the current count.
        scenario(
            "sc",
            vec![Limit::sliding_window_counter(50, window)],
            50,
            false,
        ),
        // Two limits, all or nothing: the log binds; the bucket must have paid for exactly the
        // admitted requests (checked afterwards by `probe_pair`).
        scenario(
            "pair",
            vec![
                Limit::token_bucket(1_000, HUNDRED_HOURS).burst(30),
                Limit::sliding_window_log(25, window),
            ],
            25,
            true,
        ),
    ]
}

/// A fixed-window period of at least an hour, in whole seconds, whose current window (aligned to
/// multiples of the period since the Unix epoch, as the script does) has at least 15 minutes
/// left at `now_secs` of the server's clock: no run can cross its boundary.
fn pick_window(now_secs: u64) -> Duration {
    let period = (3_600u64..)
        .find(|p| p - now_secs % p >= 900)
        .expect("some period fits");
    Duration::from_secs(period)
}

/// The server's `TIME`, in seconds.
fn server_secs(server: &RedisServer) -> u64 {
    let time = server.cli(&["TIME"]);
    time.lines()
        .next()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("unexpected TIME reply {time:?}"))
}

fn fleet_layer(redis: &RedisBackend, prefix: &str, scenario: &Scenario) -> RedisLayer {
    let builder = with_limits(&scenario.limits)
        .backend(redis.clone())
        .prefix(format!("{prefix}-{}", scenario.name))
        // Generous (the redis crate's own 500 ms response timeout binds first): a decision made
        // by the fail mode would make the count meaningless, and is reported as `degraded`.
        .deadline(Duration::from_secs(5))
        .fail_mode(FailMode::Closed);
    let builder = if scenario.denied_cache {
        builder
    } else {
        builder.denied_cache(0)
    };
    builder.build().unwrap()
}

/// Every scenario, with and without the cache of refused keys flipped.
fn every_scenario(window: Duration) -> Vec<Scenario> {
    [false, true]
        .into_iter()
        .flat_map(|flip| scenarios(window, flip))
        .collect()
}

/// One client's layers on `redis`: one per scenario, under `prefix`.
fn client_layers(redis: &RedisBackend, prefix: &str, scenarios: &[Scenario]) -> Vec<RedisLayer> {
    scenarios
        .iter()
        .map(|s| fleet_layer(redis, prefix, s))
        .collect()
}

/// What one client saw for one scenario.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Tally {
    /// Responses `200` (the others were `429`).
    admitted: u64,
    /// The layer's own count of admitted requests.
    allowed: u64,
    degraded: u64,
    errors: u64,
    /// Refusals answered from the cache of refused keys.
    cache_hits: u64,
}

/// Every client [`hammer`]s its layers at once, on a task of its own: what each saw.
async fn hammer_together(clients: Vec<Vec<RedisLayer>>) -> Vec<Vec<Tally>> {
    let runs: Vec<_> = clients
        .into_iter()
        .map(|layers| tokio::spawn(async move { hammer(&layers).await }))
        .collect();
    let mut per_client = Vec::new();
    for run in runs {
        per_client.push(run.await.unwrap());
    }
    per_client
}

/// Sends `TASKS x ROUNDS` requests per scenario through each layer's HTTP service, from `TASKS`
/// concurrent tasks, and counts what each layer admitted.
async fn hammer(layers: &[RedisLayer]) -> Vec<Tally> {
    let services: Vec<_> = layers
        .iter()
        .map(|l| l.layer(crate::common::inner()))
        .collect();
    let admitted: Arc<Vec<AtomicU64>> =
        Arc::new(layers.iter().map(|_| AtomicU64::new(0)).collect());
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let services = services.clone();
            let admitted = admitted.clone();
            tokio::spawn(async move {
                for _ in 0..ROUNDS {
                    for (i, svc) in services.iter().enumerate() {
                        let res = svc.clone().oneshot(crate::common::get("/")).await.unwrap();
                        match res.status().as_u16() {
                            200 => {
                                admitted[i].fetch_add(1, Ordering::Relaxed);
                            }
                            429 => {}
                            other => panic!("unexpected status {other}"),
                        }
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    layers
        .iter()
        .zip(admitted.iter())
        .map(|(layer, admitted)| Tally {
            admitted: admitted.load(Ordering::Relaxed),
            allowed: layer.stats().allowed,
            degraded: layer.backend().stats().degraded,
            errors: layer.backend().stats().errors,
            cache_hits: layer.backend().stats().denied_cache_hits,
        })
        .collect()
}

/// Sums the clients' tallies and checks each scenario admitted exactly what it promises, with no
/// decision left to the fail mode.
fn assert_fleet(scenarios: &[Scenario], per_client: &[Vec<Tally>], what: &str) {
    for (i, scenario) in scenarios.iter().enumerate() {
        let tallies: Vec<Tally> = per_client.iter().map(|client| client[i]).collect();
        for tally in &tallies {
            assert_eq!(
                (tally.degraded, tally.errors),
                (0, 0),
                "{what}, {}: a client could not reach redis (the count proves nothing): {tallies:?}",
                scenario.name
            );
            assert_eq!(
                tally.admitted, tally.allowed,
                "{what}, {}: 200s and the layer's count differ: {tallies:?}",
                scenario.name
            );
            // Every client is refused far more often than admitted: with the cache, all but the
            // refusals already on their way are answered locally; without it, none.
            assert_eq!(
                tally.cache_hits > 0,
                scenario.denied_cache,
                "{what}, {}: cache hits with denied_cache {}: {tallies:?}",
                scenario.name,
                scenario.denied_cache
            );
        }
        let total: u64 = tallies.iter().map(|t| t.admitted).sum();
        assert_eq!(
            total,
            scenario.expect,
            "{what}, {}: {CLIENTS} clients admitted {total} in all (per client: {:?})",
            scenario.name,
            tallies.iter().map(|t| t.admitted).collect::<Vec<_>>()
        );
    }
}

/// After a fleet run of the `pair` scenarios: the bucket lost exactly the admitted 25 tokens of
/// its 30, though hundreds of requests were refused by the log (all or nothing across clients).
async fn probe_pair(redis: &RedisBackend, prefix: &str, scenarios: &[Scenario]) {
    for scenario in scenarios.iter().filter(|s| s.name.starts_with("pair")) {
        let layer = fleet_layer(redis, prefix, scenario);
        let verdict = match layer.backend().decide(&Key::Global, 0) {
            Decision::Ready(verdict) => verdict,
            Decision::Pending(pending) => pending.await,
        };
        assert!(!verdict.degraded(), "{}: {verdict:?}", scenario.name);
        let remaining: Vec<u64> = verdict.limits().iter().map(|l| l.remaining()).collect();
        assert_eq!(remaining, [5, 0], "{}: {verdict:?}", scenario.name);
    }
}

/// Four clients in one process, each with its own connection and layers (as four instances
/// would have), every scenario with and without the cache of refused keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_connections_share_one_limit_exactly() {
    let server = start_redis!();
    let window = pick_window(server_secs(&server));
    let scenarios = every_scenario(window);
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let redis = RedisBackend::connect(&server.url()).await.unwrap();
        let layers = client_layers(&redis, "inproc", &scenarios);
        clients.push(layers);
    }
    let per_client = hammer_together(clients).await;
    assert_fleet(&scenarios, &per_client, "4 connections");
    let redis = RedisBackend::connect(&server.url()).await.unwrap();
    probe_pair(&redis, "inproc", &scenarios).await;
}

const CHILD_URL: &str = "BULWARK_FLEET_CHILD_URL";
const CHILD_PREFIX: &str = "BULWARK_FLEET_CHILD_PREFIX";
const CHILD_WINDOW: &str = "BULWARK_FLEET_CHILD_WINDOW_SECS";
/// The full name of [`fleet_child_process`], as libtest's `--exact` wants it: its module path
/// without the crate's name (`redis_fleet::fleet_child_process` in the `it` binary).
fn child_test() -> String {
    let module = module_path!()
        .split_once("::")
        .map_or("", |(_crate, path)| path);
    format!("{module}::fleet_child_process")
}

/// The Redis list each child pushes to once it is connected, and the one it waits on to start.
fn barrier_keys(prefix: &str) -> (String, String) {
    (format!("{prefix}:ready"), format!("{prefix}:go"))
}

fn sync_connection(url: &str) -> redis::Connection {
    let con = redis::Client::open(url).unwrap().get_connection().unwrap();
    con.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    con
}

/// Not a test on its own: the body of one client process of
/// [`four_processes_share_one_limit_exactly`], which runs this test binary again with
/// `--exact redis_fleet::fleet_child_process` and the `BULWARK_FLEET_CHILD_*` variables.
/// Without them it returns at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_child_process() {
    let Ok(url) = env::var(CHILD_URL) else {
        return;
    };
    let prefix = env::var(CHILD_PREFIX).unwrap();
    let window = Duration::from_secs(env::var(CHILD_WINDOW).unwrap().parse().unwrap());
    let redis = RedisBackend::connect(&url).await.unwrap();
    let scenarios = scenarios(window, false);
    let layers = client_layers(&redis, &prefix, &scenarios);
    // Connected and ready: say so, and wait for the parent's start signal.
    let (ready, go) = barrier_keys(&prefix);
    tokio::task::spawn_blocking(move || {
        let mut con = sync_connection(&url);
        redis::cmd("RPUSH")
            .arg(&ready)
            .arg(std::process::id())
            .query::<()>(&mut con)
            .unwrap();
        let started: Option<(String, String)> = redis::cmd("BLPOP")
            .arg(&go)
            .arg(30)
            .query(&mut con)
            .unwrap();
        assert!(started.is_some(), "no start signal within 30 s");
    })
    .await
    .unwrap();
    let tallies = hammer(&layers).await;
    for (scenario, tally) in scenarios.iter().zip(&tallies) {
        println!(
            "FLEET {} admitted={} allowed={} degraded={} errors={} cache_hits={}",
            scenario.name,
            tally.admitted,
            tally.allowed,
            tally.degraded,
            tally.errors,
            tally.cache_hits
        );
    }
}

/// A child's `FLEET <scenario> admitted=.. allowed=.. degraded=.. errors=..` lines.
fn parse_child(stdout: &str) -> HashMap<String, Tally> {
    stdout
        .lines()
        .filter_map(|line| Some(line.split_once("FLEET ")?.1))
        .map(|line| {
            let mut words = line.split_whitespace();
            let name = words.next().unwrap().to_owned();
            let fields: HashMap<&str, u64> = words
                .filter_map(|w| w.split_once('='))
                .map(|(k, v)| (k, v.parse().unwrap()))
                .collect();
            let tally = Tally {
                admitted: fields["admitted"],
                allowed: fields["allowed"],
                degraded: fields["degraded"],
                errors: fields["errors"],
                cache_hits: fields["cache_hits"],
            };
            (name, tally)
        })
        .collect()
}

fn kill_by_pid(pid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

fn describe(outputs: &[(usize, Output)]) -> String {
    outputs
        .iter()
        .map(|(i, out)| {
            format!(
                "--- child {i} ({}) ---\nstdout:\n{}\nstderr:\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Four separate processes (this test binary, re-run), each with its own connection and
/// layers, start together on a signal and hammer one key each scenario: together they admit
/// exactly the limit.
#[test]
fn four_processes_share_one_limit_exactly() {
    if env::var_os(CHILD_URL).is_some() {
        return; // a child runs only `fleet_child_process`
    }
    let server = start_redis!();
    let window = pick_window(server_secs(&server));
    let prefix = "procs";
    let exe = env::current_exe().unwrap();
    let child_test = child_test();
    let (done_tx, done_rx) = mpsc::channel();
    let mut pids = Vec::new();
    for i in 0..CLIENTS {
        let child = Command::new(&exe)
            .args([
                child_test.as_str(),
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_URL, server.url())
            .env(CHILD_PREFIX, prefix)
            .env(CHILD_WINDOW, window.as_secs().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        pids.push(child.id());
        let done_tx = done_tx.clone();
        thread::spawn(move || {
            let _ = done_tx.send((i, child.wait_with_output()));
        });
    }
    let kill_all_and_collect = |pids: &[u32]| {
        pids.iter().copied().for_each(kill_by_pid);
        let mut outputs: Vec<(usize, Output)> = Vec::new();
        while let Ok((i, out)) = done_rx.recv_timeout(Duration::from_secs(10)) {
            if let Ok(out) = out {
                outputs.push((i, out));
            }
        }
        describe(&outputs)
    };

    // Start signal: once every child has connected and built its layers.
    let (ready, go) = barrier_keys(prefix);
    let mut con = sync_connection(&server.url());
    for n in 0..CLIENTS {
        let arrived: Option<(String, String)> = redis::cmd("BLPOP")
            .arg(&ready)
            .arg(30)
            .query(&mut con)
            .unwrap();
        if arrived.is_none() {
            panic!(
                "only {n} of {CLIENTS} children got ready within 30 s\n{}",
                kill_all_and_collect(&pids)
            );
        }
    }
    let mut push = redis::cmd("RPUSH");
    push.arg(&go);
    for _ in 0..CLIENTS {
        push.arg(1);
    }
    push.query::<()>(&mut con).unwrap();

    let mut outputs = Vec::new();
    for _ in 0..CLIENTS {
        match done_rx.recv_timeout(Duration::from_secs(120)) {
            Ok((i, Ok(out))) => outputs.push((i, out)),
            Ok((i, Err(e))) => panic!("cannot wait for child {i}: {e}"),
            Err(_) => panic!(
                "a child did not finish within 120 s\n{}",
                kill_all_and_collect(&pids)
            ),
        }
    }
    outputs.sort_by_key(|(i, _)| *i);
    assert!(
        outputs.iter().all(|(_, out)| out.status.success()),
        "a child failed\n{}",
        describe(&outputs)
    );
    let scenarios = scenarios(window, false);
    let per_client: Vec<Vec<Tally>> = outputs
        .iter()
        .map(|(i, out)| {
            let tallies = parse_child(&String::from_utf8_lossy(&out.stdout));
            scenarios
                .iter()
                .map(|s| {
                    *tallies.get(&s.name).unwrap_or_else(|| {
                        panic!(
                            "child {i} reported nothing for {}\n{}",
                            s.name,
                            describe(&outputs)
                        )
                    })
                })
                .collect()
        })
        .collect();
    assert_fleet(&scenarios, &per_client, "4 processes");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let redis = RedisBackend::connect(&server.url()).await.unwrap();
        probe_pair(&redis, prefix, &scenarios).await;
    });
}

// =============================================================================================
// 3. Redis Cluster
// =============================================================================================

#[cfg(feature = "redis-cluster")]
mod cluster {
    use std::collections::BTreeSet;

    use super::*;
    use crate::common::redis_server::RedisCluster;

    async fn connect(cluster: &RedisCluster) -> RedisBackend {
        let urls = cluster.urls();
        let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
        RedisBackend::connect_cluster(&urls).await.unwrap()
    }

    async fn decide(layer: &RedisLayer, key: &Key, cost: u64) -> Verdict {
        match layer.backend().decide(key, cost) {
            Decision::Ready(verdict) => verdict,
            Decision::Pending(pending) => pending.await,
        }
    }

    fn names(layer: &RedisLayer, key: &Key) -> Vec<String> {
        layer
            .backend()
            .redis_keys(key)
            .into_iter()
            .map(|k| String::from_utf8(k).unwrap())
            .collect()
    }

    /// The one node that holds every key of `key`'s decision (panics if they are split).
    fn home(cluster: &RedisCluster, layer: &RedisLayer, key: &Key) -> usize {
        let owners: BTreeSet<usize> = names(layer, key)
            .iter()
            .map(|name| cluster.node_for_key(name))
            .collect();
        assert_eq!(owners.len(), 1, "keys of {key:?} on nodes {owners:?}");
        owners.into_iter().next().unwrap()
    }

    fn noscript_errors(node: &RedisServer) -> u64 {
        let info = node.cli(&["INFO", "errorstats"]);
        info.lines()
            .find_map(|line| line.trim().strip_prefix("errorstat_NOSCRIPT:count="))
            .map_or(0, |n| n.trim().parse().unwrap())
    }

    fn assert_healthy(layer: &RedisLayer) {
        let stats = layer.backend().stats();
        assert_eq!(
            (stats.errors, stats.timeouts, stats.degraded),
            (0, 0, 0),
            "{stats:?}"
        );
    }

    /// Two limits on one key decide in one script call on one node (no CROSSSLOT), and their
    /// verdicts are right: all or nothing, the log's retry-after. Keys of many clients spread
    /// over every node, each decision's keys together on its owner. After `SCRIPT FLUSH` on every
    /// node, a decision on each node reloads the script there (a `NOSCRIPT` on that node, then
    /// success) without a single error or degraded verdict.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cluster_keeps_a_decision_on_one_node_spreads_keys_and_reloads_the_script() {
        let cluster = start_redis!(cluster);
        let redis = connect(&cluster).await;
        let layer = RateLimitLayer::builder()
            .limit(Limit::token_bucket(3, TEN_HOURS))
            .limit(Limit::sliding_window_log(2, Duration::from_secs(3_600)))
            .backend(redis.clone())
            .prefix("cluster")
            .deadline(Duration::from_secs(5))
            .fail_mode(FailMode::Closed)
            .denied_cache(0)
            .build()
            .unwrap();

        // Two limits, one key: one slot, correct verdicts.
        let tenant = Key::from("tenant-7");
        let owner = home(&cluster, &layer, &tenant);
        let mut remaining = Vec::new();
        for _ in 0..3 {
            let verdict = decide(&layer, &tenant, 1).await;
            assert!(!verdict.degraded(), "{verdict:?}");
            let r: Vec<u64> = verdict.limits().iter().map(|l| l.remaining()).collect();
            remaining.push((verdict.allowed(), r));
            if !verdict.allowed() {
                // Refused by the log only: its oldest entry leaves in (just under) an hour.
                assert!(
                    verdict.retry_after() > Duration::from_secs(3_500)
                        && verdict.retry_after() <= Duration::from_secs(3_600),
                    "{verdict:?}"
                );
            }
        }
        assert_eq!(
            remaining,
            [
                (true, vec![2, 1]),
                (true, vec![1, 0]),
                // The bucket still holds its token: the refusal spent nothing.
                (false, vec![1, 0]),
            ]
        );
        assert_healthy(&layer);
        for name in names(&layer, &tenant) {
            assert_eq!(
                cluster.nodes[owner].cli(&["EXISTS", &name]),
                "1",
                "{name} not on its owner, node {owner}"
            );
        }

        // Many keys: each decision's keys together, the decisions over every node.
        let mut on_node: [Option<Key>; 3] = [None, None, None];
        for n in 0..200u64 {
            let key = Key::Int(n);
            let node = home(&cluster, &layer, &key);
            let verdict = decide(&layer, &key, 1).await;
            assert!(
                verdict.allowed() && !verdict.degraded(),
                "{key:?}: {verdict:?}"
            );
            for name in names(&layer, &key) {
                assert_eq!(cluster.nodes[node].cli(&["EXISTS", &name]), "1", "{name}");
            }
            on_node[node].get_or_insert(key);
            if n >= 20 && on_node.iter().all(Option::is_some) {
                break;
            }
        }
        let used = on_node.iter().filter(|k| k.is_some()).count();
        assert!(used > 1, "every key landed on one node");
        assert_eq!(used, 3, "decisions reached only {used} of 3 nodes");
        assert_healthy(&layer);

        // The script on a node that lost it: flush every node, then decide on each in turn.
        for (node, key) in on_node.iter().enumerate() {
            let key = key.as_ref().unwrap();
            for n in &cluster.nodes {
                assert_eq!(n.cli(&["SCRIPT", "FLUSH"]), "OK");
            }
            let before = noscript_errors(&cluster.nodes[node]);
            let verdict = decide(&layer, key, 1).await;
            assert!(
                verdict.allowed() && !verdict.degraded(),
                "node {node}: {verdict:?}"
            );
            assert_eq!(
                noscript_errors(&cluster.nodes[node]),
                before + 1,
                "node {node} did not lose and reload the script"
            );
            // Loaded again: the next call needs no reload (cost 0: the key's log is full now).
            let verdict = decide(&layer, key, 0).await;
            assert!(
                verdict.allowed() && !verdict.degraded(),
                "node {node}: {verdict:?}"
            );
            assert_eq!(noscript_errors(&cluster.nodes[node]), before + 1);
        }
        assert_healthy(&layer);
    }

    /// Four cluster clients (four cluster connections) admit exactly each scenario's limit.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cluster_clients_share_one_limit_exactly() {
        let cluster = start_redis!(cluster);
        let window = pick_window(server_secs(&cluster.nodes[0]));
        let scenarios = every_scenario(window);
        let mut runs = Vec::new();
        for _ in 0..CLIENTS {
            let redis = connect(&cluster).await;
            let layers = client_layers(&redis, "cluster", &scenarios);
            runs.push(layers);
        }
        let per_client = hammer_together(runs).await;
        assert_fleet(&scenarios, &per_client, "4 cluster clients");
        let redis = connect(&cluster).await;
        probe_pair(&redis, "cluster", &scenarios).await;
    }
}
