//! Token bucket as GCRA (the generic cell rate algorithm).
//!
//! The whole state is the *theoretical arrival time* (TAT): the instant at which the bucket would
//! be full again. A request of cost `c` moves it to `max(tat, now) + c * T`; it is admitted when
//! that lands no further than `burst * T` ahead of now. `T = period / limit`.

use super::{Check, Quota};

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct GcraState {
    pub(crate) tat: u64,
}

/// The decision and the new TAT to store if admitted; shared by the locked and lock-free paths.
pub(crate) fn decide(tat: u64, quota: &Quota, now: u64, cost: u64) -> (Check, u64) {
    let capacity = quota.burst.saturating_mul(quota.emission_ns);
    let base = tat.max(now);
    let new_tat = base.saturating_add(cost.saturating_mul(quota.emission_ns));
    let ahead = new_tat - now;
    if ahead <= capacity {
        let check = Check {
            allowed: true,
            remaining: (capacity - ahead) / quota.emission_ns,
            reset_after_ns: ahead.min(quota.refill_ns),
            retry_after_ns: 0,
        };
        (check, new_tat)
    } else {
        let used = base - now;
        let check = Check {
            allowed: false,
            remaining: capacity.saturating_sub(used) / quota.emission_ns,
            reset_after_ns: used.min(quota.refill_ns),
            retry_after_ns: ahead - capacity,
        };
        (check, tat)
    }
}

/// The TAT after giving back `cost`; never earlier than `now` (a full bucket stays full).
pub(crate) fn refunded(tat: u64, quota: &Quota, now: u64, cost: u64) -> u64 {
    tat.saturating_sub(cost.saturating_mul(quota.emission_ns))
        .max(now.min(tat))
}

impl GcraState {
    pub(crate) fn check(&mut self, quota: &Quota, now: u64, cost: u64) -> Check {
        decide(self.tat, quota, now, cost).0
    }

    pub(crate) fn commit(&mut self, quota: &Quota, now: u64, cost: u64) {
        self.tat = decide(self.tat, quota, now, cost).1;
    }

    pub(crate) fn refund(&mut self, quota: &Quota, now: u64, cost: u64) {
        self.tat = refunded(self.tat, quota, now, cost);
    }

    pub(crate) fn is_idle(&self, now: u64) -> bool {
        self.tat <= now
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rate_limit::algorithm::Algorithm;

    fn quota(limit: u64, period_ns: u64, burst: u64) -> Quota {
        Quota {
            algorithm: Algorithm::TokenBucket,
            limit,
            period_ns,
            burst,
            emission_ns: period_ns / limit,
            refill_ns: burst * period_ns / limit,
        }
    }

    #[test]
    fn admits_burst_at_once_then_the_rate() {
        let q = quota(10, 1_000, 3); // one token per 100 ns, 3 at once
        let mut s = GcraState::default();
        for expected_remaining in [2, 1, 0] {
            let c = s.check(&q, 0, 1);
            assert!(c.allowed);
            assert_eq!(c.remaining, expected_remaining);
            s.commit(&q, 0, 1);
        }
        let denied = s.check(&q, 0, 1);
        assert!(!denied.allowed);
        assert_eq!(denied.retry_after_ns, 100);
        assert_eq!(denied.reset_after_ns, 300);
        assert!(!s.check(&q, 99, 1).allowed);
        assert!(s.check(&q, 100, 1).allowed);
    }

    #[test]
    fn cost_above_burst_is_never_admitted() {
        let q = quota(10, 1_000, 3);
        let mut s = GcraState::default();
        assert!(!s.check(&q, 0, 4).allowed);
        assert!(s.check(&q, 0, 3).allowed);
    }

    #[test]
    fn refund_restores_tokens_but_never_beyond_full() {
        let q = quota(10, 1_000, 3);
        let mut s = GcraState::default();
        s.commit(&q, 0, 3);
        s.refund(&q, 0, 2);
        assert_eq!(s.tat, 100);
        s.refund(&q, 50, 5);
        assert_eq!(s.tat, 50);
        assert!(s.is_idle(50));
    }
}
