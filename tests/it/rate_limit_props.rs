//! Property tests: each algorithm against a simple reference model, over random arrival
//! sequences on a `ManualClock` (gaps from 0 ns to several periods, costs 0..=3).
//!
//! The harness asks the layer's memory backend directly (`decide_now`), so every decision and
//! every number it reports (remaining, reset, retry-after) is compared with the model's.

use std::collections::HashMap;
use std::time::Duration;

use crate::common::{limiter_on_clock, proptest_cases, with_limits};
use proptest::prelude::*;
use tower_bulwark::clock::ManualClock;
use tower_bulwark::key::Key;
use tower_bulwark::rate_limit::store::Verdict;
use tower_bulwark::rate_limit::{Limit, RateLimitLayer};

/// A layer on a manual clock, asked directly through its backend.
struct Harness {
    clock: ManualClock,
    layer: RateLimitLayer,
}

impl Harness {
    fn new(limits: &[Limit]) -> Self {
        let (clock, layer) = limiter_on_clock(with_limits(limits));
        Self { clock, layer }
    }

    fn decide(&self, now_ns: u64, cost: u64) -> Verdict {
        self.clock.set(Duration::from_nanos(now_ns));
        self.layer.backend().decide_now(&Key::Global, cost)
    }
}

/// What a limit should answer for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Expect {
    allowed: bool,
    remaining: u64,
    reset_after_ns: u64,
    /// Only meaningful when refused.
    retry_after_ns: u64,
}

/// A naive model of one algorithm: `expect` never changes it, `commit` records an admission.
trait Model {
    fn expect(&self, now: u64, cost: u64) -> Expect;
    fn commit(&mut self, now: u64, cost: u64);
    /// Whether a request of `cost` is refused forever (its cost exceeds what the limit holds).
    fn never_fits(&self, cost: u64) -> bool;
}

/// A token bucket counted in nanoseconds of credit: it holds up to `burst * T`, refills one
/// nanosecond of credit per nanosecond, and a request of cost `c` needs `c * T`.
struct BucketModel {
    t: u64,
    cap: u64,
    /// `burst * period / limit`: the reported reset never exceeds the exact refill time (the
    /// rounded-up `T` would overshoot it by a few nanoseconds).
    refill: u64,
    level: u64,
    last: u64,
}

impl BucketModel {
    fn new(limit: u64, period: u64, burst: u64) -> Self {
        // The emission interval is rounded up, so the rate never exceeds `limit` per `period`.
        let t = period.div_ceil(limit);
        Self {
            t,
            cap: burst * t,
            refill: burst * period / limit,
            level: burst * t,
            last: 0,
        }
    }

    fn level_at(&self, now: u64) -> u64 {
        (self.level + (now - self.last)).min(self.cap)
    }
}

impl Model for BucketModel {
    fn expect(&self, now: u64, cost: u64) -> Expect {
        let level = self.level_at(now);
        let need = cost * self.t;
        if need <= level {
            let after = level - need;
            Expect {
                allowed: true,
                remaining: after / self.t,
                reset_after_ns: (self.cap - after).min(self.refill),
                retry_after_ns: 0,
            }
        } else {
            Expect {
                allowed: false,
                remaining: level / self.t,
                reset_after_ns: (self.cap - level).min(self.refill),
                retry_after_ns: need - level,
            }
        }
    }

    fn commit(&mut self, now: u64, cost: u64) {
        self.level = self.level_at(now) - cost * self.t;
        self.last = now;
    }

    fn never_fits(&self, cost: u64) -> bool {
        cost * self.t > self.cap
    }
}

/// Every admitted request with its time; a request counts while `now < at + period`.
struct LogModel {
    limit: u64,
    period: u64,
    admitted: Vec<(u64, u64)>,
}

impl LogModel {
    fn in_window(&self, now: u64) -> u64 {
        self.admitted
            .iter()
            .filter(|&&(at, _)| at + self.period > now)
            .map(|&(_, cost)| cost)
            .sum()
    }

    fn last_live(&self, now: u64) -> Option<u64> {
        self.admitted
            .iter()
            .filter(|&&(at, cost)| at + self.period > now && cost > 0)
            .map(|&(at, _)| at)
            .max()
    }
}

impl Model for LogModel {
    fn expect(&self, now: u64, cost: u64) -> Expect {
        let used = self.in_window(now);
        let expiry = self.last_live(now).map_or(0, |at| at + self.period - now);
        if used + cost <= self.limit {
            Expect {
                allowed: true,
                remaining: self.limit - used - cost,
                reset_after_ns: if cost > 0 { self.period } else { expiry },
                retry_after_ns: 0,
            }
        } else {
            Expect {
                allowed: false,
                remaining: self.limit.saturating_sub(used),
                reset_after_ns: expiry,
                // Checked separately (see `check_retry_after`), except when it never fits.
                retry_after_ns: if cost > self.limit { self.period } else { 0 },
            }
        }
    }

    fn commit(&mut self, now: u64, cost: u64) {
        self.admitted.push((now, cost));
    }

    fn never_fits(&self, cost: u64) -> bool {
        cost > self.limit
    }
}

/// A count per aligned window `[k * period, (k + 1) * period)`.
struct FixedModel {
    limit: u64,
    period: u64,
    counts: HashMap<u64, u64>,
}

impl FixedModel {
    fn count(&self, window: u64) -> u64 {
        self.counts.get(&window).copied().unwrap_or(0)
    }
}

impl Model for FixedModel {
    fn expect(&self, now: u64, cost: u64) -> Expect {
        let window = now / self.period;
        let count = self.count(window);
        let reset = (window + 1) * self.period - now;
        if count + cost <= self.limit {
            Expect {
                allowed: true,
                remaining: self.limit - count - cost,
                reset_after_ns: reset,
                retry_after_ns: 0,
            }
        } else {
            Expect {
                allowed: false,
                remaining: self.limit - count,
                reset_after_ns: reset,
                retry_after_ns: reset,
            }
        }
    }

    fn commit(&mut self, now: u64, cost: u64) {
        *self.counts.entry(now / self.period).or_default() += cost;
    }

    fn never_fits(&self, cost: u64) -> bool {
        cost > self.limit
    }
}

/// The sliding window counter's formula, computed naively from a count per aligned window:
/// `ceil(previous * (period - elapsed_in_current) / period) + current + cost <= limit`.
struct CounterModel {
    limit: u64,
    period: u64,
    counts: HashMap<u64, u64>,
}

impl CounterModel {
    fn count(&self, window: u64) -> u64 {
        self.counts.get(&window).copied().unwrap_or(0)
    }

    fn estimate(&self, now: u64) -> (u64, u64, u64) {
        let window = now / self.period;
        let previous = if window == 0 {
            0
        } else {
            self.count(window - 1)
        };
        let current = self.count(window);
        let left = self.period - (now - window * self.period);
        let weighted = (u128::from(previous) * u128::from(left)).div_ceil(u128::from(self.period));
        (
            u64::try_from(weighted).unwrap() + current,
            previous,
            current,
        )
    }
}

impl Model for CounterModel {
    fn expect(&self, now: u64, cost: u64) -> Expect {
        let (estimate, previous, current) = self.estimate(now);
        let window_start = now / self.period * self.period;
        let reset = |current: u64| {
            if current > 0 {
                window_start + 2 * self.period - now
            } else if previous > 0 {
                window_start + self.period - now
            } else {
                0
            }
        };
        if estimate + cost <= self.limit {
            Expect {
                allowed: true,
                remaining: self.limit - estimate - cost,
                reset_after_ns: reset(current + cost),
                retry_after_ns: 0,
            }
        } else {
            Expect {
                allowed: false,
                remaining: self.limit.saturating_sub(estimate),
                reset_after_ns: reset(current),
                retry_after_ns: if cost > self.limit {
                    window_start + 2 * self.period - now
                } else {
                    0
                },
            }
        }
    }

    fn commit(&mut self, now: u64, cost: u64) {
        *self.counts.entry(now / self.period).or_default() += cost;
    }

    fn never_fits(&self, cost: u64) -> bool {
        cost > self.limit
    }
}

/// A refusal's retry-after is exact: the same request fits at `now + retry_after` and not a
/// nanosecond earlier.
fn check_retry_after(model: &dyn Model, now: u64, cost: u64, retry_after_ns: u64) {
    assert!(retry_after_ns > 0, "a refusal must say when to retry");
    assert!(
        model.expect(now + retry_after_ns, cost).allowed,
        "cost {cost} refused at {now} with retry-after {retry_after_ns} ns still refused then"
    );
    assert!(
        !model.expect(now + retry_after_ns - 1, cost).allowed,
        "cost {cost} refused at {now} with retry-after {retry_after_ns} ns fits earlier"
    );
}

/// Runs one arrival sequence through a single-limit layer and its model, comparing everything.
/// Returns the admitted and refused requests as `(time, cost)`.
#[allow(clippy::type_complexity)]
/// Fails unless every aligned window `[k * period, (k + 1) * period)` admitted a total cost of
/// at most `limit`.
fn aligned_windows_within(
    admitted: &[(u64, u64)],
    period: u64,
    limit: u64,
) -> Result<(), TestCaseError> {
    let mut per_window: HashMap<u64, u64> = HashMap::new();
    for &(t, cost) in admitted {
        *per_window.entry(t / period).or_default() += cost;
    }
    for (window, count) in &per_window {
        prop_assert!(*count <= limit, "window {} admitted {}", window, count);
    }
    Ok(())
}

/// `(time, cost)` of each request, admitted or refused.
type Arrivals = Vec<(u64, u64)>;

fn run_single(
    limit: Limit,
    model: &mut dyn Model,
    arrivals: &[(u64, u64)],
) -> Result<(Arrivals, Arrivals), TestCaseError> {
    let harness = Harness::new(&[limit]);
    let (mut admitted, mut refused) = (Vec::new(), Vec::new());
    let mut now = 0;
    for &(gap, cost) in arrivals {
        now += gap;
        let expect = model.expect(now, cost);
        let verdict = harness.decide(now, cost);
        let status = verdict.limits()[0];
        prop_assert_eq!(
            verdict.allowed(),
            expect.allowed,
            "at {} cost {}",
            now,
            cost
        );
        prop_assert_eq!(status.remaining(), expect.remaining, "remaining at {}", now);
        prop_assert_eq!(
            status.reset_after(),
            Duration::from_nanos(expect.reset_after_ns),
            "reset at {}",
            now
        );
        prop_assert_eq!(verdict.counted_at(), Duration::from_nanos(now));
        if expect.allowed {
            prop_assert_eq!(verdict.retry_after(), Duration::ZERO);
            model.commit(now, cost);
            admitted.push((now, cost));
        } else {
            let retry = u64::try_from(verdict.retry_after().as_nanos()).unwrap();
            if model.never_fits(cost) {
                // A cost that never fits is refused alike at any size: the layer clamps it to
                // the smallest such cost, and reports that cost's retry-after.
                let clamped = (1..=cost).find(|&c| model.never_fits(c)).unwrap_or(cost);
                let expect = model.expect(now, clamped);
                if expect.retry_after_ns != 0 {
                    prop_assert_eq!(retry, expect.retry_after_ns, "retry at {}", now);
                }
            } else {
                check_retry_after(model, now, cost, retry);
            }
            refused.push((now, cost));
        }
    }
    Ok((admitted, refused))
}

/// Gaps between arrivals: often none, often small, sometimes several periods.
fn gap(period: u64) -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => Just(0u64),
        3 => 1..=(period / 8).max(1),
        3 => 0..=period,
        1 => period..=3 * period,
    ]
}

/// `len` arrivals of cost 1, or of random costs 0..=3.
fn arrivals(period: u64) -> impl Strategy<Value = Vec<(u64, u64)>> {
    (
        any::<bool>(),
        prop::collection::vec((gap(period), 0u64..=3), 1..160),
    )
        .prop_map(|(unit_cost, arrivals)| {
            arrivals
                .into_iter()
                .map(|(gap, cost)| (gap, if unit_cost { 1 } else { cost }))
                .collect()
        })
}

/// Window periods: nanoseconds, micro- to milliseconds, a second, a minute.
fn window_period() -> impl Strategy<Value = u64> {
    prop_oneof![
        1u64..=50,
        1_000u64..=2_000_000,
        Just(1_000_000_000u64),
        Just(60_000_000_000u64),
    ]
}

/// A token bucket: (limit, period, burst), period = limit * T + a remainder below limit.
fn bucket_config() -> impl Strategy<Value = (u64, u64, u64)> {
    (
        1u64..=10,
        prop_oneof![1u64..=20, 1_000u64..=1_000_000, Just(100_000_000u64)],
        0u64..10,
        1u64..=12,
    )
        .prop_map(|(limit, t, extra, burst)| (limit, limit * t + extra % limit, burst))
}

proptest! {
    #![proptest_config(proptest_cases(256))]

    /// Token bucket: matches a token-count model exactly, and over any interval [a, b] between
    /// two admissions it admits at most `burst + (b - a) / T` (in cost units).
    #[test]
    fn token_bucket_matches_model_and_bound(
        ((limit, period, burst), arrivals) in bucket_config()
            .prop_flat_map(|config| (Just(config), arrivals(config.1))),
    ) {
        let mut model = BucketModel::new(limit, period, burst);
        let t = model.t;
        let (admitted, _) = run_single(
            Limit::token_bucket(limit, Duration::from_nanos(period)).burst(burst),
            &mut model,
            &arrivals,
        )?;
        for i in 0..admitted.len() {
            let mut spent = 0u128;
            for &(at, cost) in &admitted[i..] {
                spent += u128::from(cost);
                let elapsed = u128::from(at - admitted[i].0);
                prop_assert!(
                    spent * u128::from(t) <= u128::from(burst) * u128::from(t) + elapsed,
                    "{} spent within {} ns from {}: burst {} T {}",
                    spent, elapsed, admitted[i].0, burst, t
                );
            }
        }
    }

    /// Token bucket: exactly `burst` at once, then exactly one per `T = ceil(period / limit)`.
    #[test]
    fn token_bucket_admits_burst_then_one_per_emission_interval(
        (limit, period, burst) in bucket_config(),
        start in 0u64..1_000_000_000,
    ) {
        let harness = Harness::new(&[Limit::token_bucket(limit, Duration::from_nanos(period)).burst(burst)]);
        let t = period.div_ceil(limit);
        for n in 0..burst {
            let verdict = harness.decide(start, 1);
            prop_assert!(verdict.allowed(), "request {} of the burst refused", n);
            prop_assert_eq!(verdict.limits()[0].remaining(), burst - n - 1);
        }
        let refused = harness.decide(start, 1);
        prop_assert!(!refused.allowed());
        prop_assert_eq!(refused.retry_after(), Duration::from_nanos(t));
        for k in 1..=5u64 {
            if t > 1 {
                prop_assert!(!harness.decide(start + k * t - 1, 1).allowed(), "token {} early", k);
            }
            prop_assert!(harness.decide(start + k * t, 1).allowed(), "token {} refused", k);
            prop_assert!(!harness.decide(start + k * t, 1).allowed(), "two tokens at {}", k);
        }
    }

    /// Sliding window log: matches the model; at most `limit` in any sliding window of `period`
    /// (for every admission at t, the cost admitted in (t - period, t]), and exact: a request is
    /// refused only if admitting it would break that.
    #[test]
    fn sliding_log_never_exceeds_any_window_and_is_exact(
        limit in 1u64..=10,
        (period, arrivals) in window_period().prop_flat_map(|p| (Just(p), arrivals(p))),
    ) {
        let mut model = LogModel { limit, period, admitted: Vec::new() };
        let (admitted, refused) = run_single(
            Limit::sliding_window_log(limit, Duration::from_nanos(period)),
            &mut model,
            &arrivals,
        )?;
        let window_sum = |t: u64| -> u64 {
            admitted
                .iter()
                .filter(|&&(at, _)| at <= t && at + period > t)
                .map(|&(_, cost)| cost)
                .sum()
        };
        for &(t, _) in &admitted {
            prop_assert!(window_sum(t) <= limit, "window ending at {} holds {}", t, window_sum(t));
        }
        for &(t, cost) in &refused {
            prop_assert!(window_sum(t) + cost > limit, "cost {} at {} was refused but fits", cost, t);
        }
    }

    /// Fixed window: matches the model; at most `limit` per aligned window
    /// `[k * period, (k + 1) * period)`, aligned to the clock's zero, and exact within it.
    #[test]
    fn fixed_window_never_exceeds_any_aligned_window(
        limit in 1u64..=10,
        (period, arrivals) in window_period().prop_flat_map(|p| (Just(p), arrivals(p))),
    ) {
        let mut model = FixedModel { limit, period, counts: HashMap::new() };
        let (admitted, refused) = run_single(
            Limit::fixed_window(limit, Duration::from_nanos(period)),
            &mut model,
            &arrivals,
        )?;
        aligned_windows_within(&admitted, period, limit)?;
        for &(t, cost) in &refused {
            let before: u64 = admitted
                .iter()
                .filter(|&&(at, _)| at / period == t / period && at <= t)
                .map(|&(_, c)| c)
                .sum();
            prop_assert!(before + cost > limit, "cost {} at {} was refused but fits", cost, t);
        }
    }

    /// Sliding window counter: matches the naive weighted formula exactly (decisions, remaining,
    /// reset, and a retry-after that is the first instant the request fits), and never admits
    /// more than `limit` in an aligned window.
    #[test]
    fn sliding_counter_matches_weighted_formula(
        limit in 1u64..=10,
        (period, arrivals) in window_period().prop_flat_map(|p| (Just(p), arrivals(p))),
    ) {
        let mut model = CounterModel { limit, period, counts: HashMap::new() };
        let (admitted, _) = run_single(
            Limit::sliding_window_counter(limit, Duration::from_nanos(period)),
            &mut model,
            &arrivals,
        )?;
        aligned_windows_within(&admitted, period, limit)?;
    }

    /// Two limits of any algorithms on one layer: a request passes only if both models allow it,
    /// and a request refused by one consumes nothing from the other (its remaining is unchanged).
    #[test]
    fn two_limits_are_all_or_nothing(
        kinds in (0usize..4, 0usize..4),
        limits in (1u64..=6, 1u64..=6),
        (period, arrivals) in prop_oneof![1_000u64..=50_000, Just(1_000_000_000u64)]
            .prop_flat_map(|p| (Just(p), arrivals(p))),
        second_period_factor in 1u64..=5,
    ) {
        let make = |kind: usize, limit: u64, period: u64| -> (Limit, Box<dyn Model>) {
            let d = Duration::from_nanos(period);
            match kind {
                0 => (Limit::token_bucket(limit, d), Box::new(BucketModel::new(limit, period, limit))),
                1 => (Limit::sliding_window_log(limit, d), Box::new(LogModel { limit, period, admitted: Vec::new() })),
                2 => (Limit::fixed_window(limit, d), Box::new(FixedModel { limit, period, counts: HashMap::new() })),
                _ => (Limit::sliding_window_counter(limit, d), Box::new(CounterModel { limit, period, counts: HashMap::new() })),
            }
        };
        let (first, mut first_model) = make(kinds.0, limits.0, period);
        let (second, mut second_model) = make(kinds.1, limits.1, period * second_period_factor);
        let harness = Harness::new(&[first, second]);
        let mut now = 0;
        for &(gap, cost) in &arrivals {
            now += gap;
            let expects = [first_model.expect(now, cost), second_model.expect(now, cost)];
            let untouched = [first_model.expect(now, 0), second_model.expect(now, 0)];
            let allowed = expects.iter().all(|e| e.allowed);
            let verdict = harness.decide(now, cost);
            prop_assert_eq!(verdict.allowed(), allowed, "at {} cost {}", now, cost);
            for i in 0..2 {
                let want = if allowed || !expects[i].allowed {
                    expects[i].remaining
                } else {
                    untouched[i].remaining
                };
                prop_assert_eq!(verdict.limits()[i].remaining(), want, "limit {} remaining at {}", i, now);
            }
            if allowed {
                first_model.commit(now, cost);
                second_model.commit(now, cost);
            } else {
                // Waiting the reported time is enough for every limit that refused.
                let retry = u64::try_from(verdict.retry_after().as_nanos()).unwrap();
                let models: [&dyn Model; 2] = [&*first_model, &*second_model];
                if models.iter().all(|m| !m.never_fits(cost)) {
                    prop_assert!(models.iter().all(|m| m.expect(now + retry, cost).allowed));
                }
            }
        }
    }
}

/// The token bucket promises `limit` per `period`, also when the period is not a multiple of the
/// limit: rounding the emission interval `period / limit` down would refill 1000 per 1999 ns at
/// one per nanosecond, about twice the configured rate.
#[test]
fn token_bucket_never_exceeds_limit_per_period_when_period_is_not_a_multiple_of_limit() {
    let (limit, period) = (1000u64, 1999u64);
    let harness =
        Harness::new(&[Limit::token_bucket(limit, Duration::from_nanos(period)).burst(1)]);
    let periods = 10;
    let admitted = (0..=periods * period)
        .filter(|&now| harness.decide(now, 1).allowed())
        .count() as u64;
    // burst + elapsed * limit / period, over [0, 10 periods].
    assert!(
        admitted <= 1 + periods * limit,
        "admitted {admitted} in {periods} periods of {limit} per {period} ns"
    );
}
