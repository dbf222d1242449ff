//! The four algorithms as plain state machines over nanosecond timestamps.
//!
//! Each state answers three questions: may `cost` more be admitted now (`check`, which never
//! consumes), consume it (`commit`), and give it back (`refund`). Keeping `check` and `commit`
//! apart is what makes several limits all-or-nothing: every limit is checked first, and only if
//! all allow is any of them committed. The same code serves the memory backend and the
//! property tests; the Redis scripts mirror it.

pub(crate) mod fixed_window;
pub(crate) mod gcra;
pub(crate) mod sliding_counter;
pub(crate) mod sliding_log;

use std::time::Duration;

/// Which algorithm a limit uses.
///
/// ```
/// use std::time::Duration;
/// use tower_bulwark::rate_limit::{Algorithm, Limit};
///
/// let limit = Limit::sliding_window_counter(100, Duration::from_secs(60));
/// assert_eq!(limit.algorithm(), Algorithm::SlidingWindowCounter);
/// assert_eq!(limit.algorithm().as_str(), "sliding_window_counter");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// A token bucket computed as GCRA: `burst` requests at once, then one every
    /// `period / limit`. One timestamp per key.
    TokenBucket,
    /// Exact: at most `limit` in any sliding window of `period`. One timestamp per admitted
    /// request (memory grows with `limit`).
    SlidingWindowLog,
    /// Approximate sliding window: the previous fixed window's count, weighted by how much of it
    /// still overlaps the sliding window, plus the current window's count. Two counters per key.
    SlidingWindowCounter,
    /// At most `limit` in each fixed window of `period`; allows up to `2 * limit` across a window
    /// boundary. One counter per key.
    FixedWindow,
}

impl Algorithm {
    /// The algorithm's name as used in logs and docs.
    ///
    /// ```
    /// use tower_bulwark::rate_limit::Algorithm;
    /// assert_eq!(Algorithm::TokenBucket.as_str(), "token_bucket");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::TokenBucket => "token_bucket",
            Algorithm::SlidingWindowLog => "sliding_window_log",
            Algorithm::SlidingWindowCounter => "sliding_window_counter",
            Algorithm::FixedWindow => "fixed_window",
        }
    }
}

/// A validated limit in the units the algorithms use.
#[derive(Debug, Clone)]
pub(crate) struct Quota {
    pub(crate) algorithm: Algorithm,
    pub(crate) limit: u64,
    pub(crate) period_ns: u64,
    /// Token bucket only: how many may pass at once.
    pub(crate) burst: u64,
    /// Token bucket only: `period / limit` rounded up, the time one token takes to come back.
    pub(crate) emission_ns: u64,
    /// Token bucket only: `burst * period / limit` rounded down, the exact time an empty bucket
    /// takes to refill (the rounded-up emission interval would overshoot it by a few ns).
    pub(crate) refill_ns: u64,
}

impl Quota {
    /// This limit shared by `instances`: the limit and burst divided, rounded down, at least 1.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn divided(&self, instances: u64) -> Quota {
        let instances = instances.max(1);
        let limit = (self.limit / instances).max(1);
        let mut quota = Quota {
            limit,
            ..self.clone()
        };
        if self.algorithm == Algorithm::TokenBucket {
            quota.burst = (self.burst / instances).max(1);
            quota.emission_ns = self.period_ns.div_ceil(limit);
            let refill = u128::from(quota.burst) * u128::from(self.period_ns) / u128::from(limit);
            quota.refill_ns = u64::try_from(refill).unwrap_or(u64::MAX);
        }
        quota
    }
}

/// What one limit says about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Check {
    pub(crate) allowed: bool,
    /// Requests (of cost 1) still admissible after this one, if it is admitted.
    pub(crate) remaining: u64,
    /// Time until the limit is fully restored.
    pub(crate) reset_after_ns: u64,
    /// When denied: time until a request of this cost could be admitted.
    pub(crate) retry_after_ns: u64,
}

/// The per-key state of one limit.
#[derive(Debug, Clone)]
pub(crate) enum State {
    Gcra(gcra::GcraState),
    Fixed(fixed_window::FixedWindowState),
    Counter(sliding_counter::SlidingCounterState),
    Log(sliding_log::SlidingLogState),
}

impl State {
    pub(crate) fn new(quota: &Quota) -> Self {
        match quota.algorithm {
            Algorithm::TokenBucket => State::Gcra(Default::default()),
            Algorithm::FixedWindow => State::Fixed(Default::default()),
            Algorithm::SlidingWindowCounter => State::Counter(Default::default()),
            Algorithm::SlidingWindowLog => State::Log(Default::default()),
        }
    }

    pub(crate) fn check(&mut self, quota: &Quota, now: u64, cost: u64) -> Check {
        match self {
            State::Gcra(s) => s.check(quota, now, cost),
            State::Fixed(s) => s.check(quota, now, cost),
            State::Counter(s) => s.check(quota, now, cost),
            State::Log(s) => s.check(quota, now, cost),
        }
    }

    pub(crate) fn commit(&mut self, quota: &Quota, now: u64, cost: u64) {
        match self {
            State::Gcra(s) => s.commit(quota, now, cost),
            State::Fixed(s) => s.commit(cost),
            State::Counter(s) => s.commit(cost),
            State::Log(s) => s.commit(now, cost),
        }
    }

    pub(crate) fn refund(&mut self, quota: &Quota, now: u64, counted_at: u64, cost: u64) {
        match self {
            State::Gcra(s) => s.refund(quota, now, cost),
            State::Fixed(s) => s.refund(quota, counted_at, cost),
            State::Counter(s) => s.refund(quota, counted_at, cost),
            State::Log(s) => s.refund(quota, now, counted_at, cost),
        }
    }

    /// `now`, or the latest time this state has already been moved to if that is later.
    pub(crate) fn latest(&self, now: u64) -> u64 {
        match self {
            State::Gcra(_) => now,
            State::Fixed(s) => s.latest(now),
            State::Counter(s) => s.latest(now),
            State::Log(s) => s.latest(now),
        }
    }

    /// True when the state is indistinguishable from a fresh one, so dropping it loses nothing.
    pub(crate) fn is_idle(&self, quota: &Quota, now: u64) -> bool {
        match self {
            State::Gcra(s) => s.is_idle(now),
            State::Fixed(s) => s.is_idle(quota, now),
            State::Counter(s) => s.is_idle(quota, now),
            State::Log(s) => s.is_idle(quota, now),
        }
    }
}

/// Start of the fixed window of length `period` that holds `now`.
pub(crate) fn window_start(now: u64, period: u64) -> u64 {
    now - now % period
}

pub(crate) fn nanos(d: Duration) -> u64 {
    crate::clock::duration_to_nanos(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota(algorithm: Algorithm, limit: u64, period_ns: u64) -> Quota {
        Quota {
            algorithm,
            limit,
            period_ns,
            burst: limit,
            emission_ns: period_ns.div_ceil(limit),
            refill_ns: period_ns,
        }
    }

    /// Thread A reads the clock at 999, thread B at 1000; B takes the lock first and opens the
    /// window starting at 1000. A's older reading must count in B's window, not reopen the old
    /// window (which would forget B's count and over-admit), and must not underflow.
    #[test]
    fn an_older_reading_after_a_newer_one_never_reopens_a_window() {
        for algorithm in [
            Algorithm::FixedWindow,
            Algorithm::SlidingWindowCounter,
            Algorithm::SlidingWindowLog,
            Algorithm::TokenBucket,
        ] {
            let q = quota(algorithm, 2, 1_000);
            let mut state = State::new(&q);
            let mut admitted = 0;
            for now in [1_000, 999, 998, 1_001, 999] {
                if state.check(&q, now, 1).allowed {
                    state.commit(&q, now, 1);
                    admitted += 1;
                }
            }
            assert_eq!(admitted, 2, "{algorithm:?}");
            assert!(!state.is_idle(&q, 999), "{algorithm:?}");
        }
    }
}
