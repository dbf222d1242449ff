//! Sliding window counter: the current fixed window's count plus the previous window's count
//! weighted by the share of it the sliding window still covers (rounded up, so the estimate
//! never under-counts the uniform-spread assumption).

use super::{window_start, Check, Quota};

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SlidingCounterState {
    start: u64,
    current: u64,
    previous: u64,
}

/// `count * num / den`, rounded up, without overflow.
fn mul_div_ceil(count: u64, num: u64, den: u64) -> u64 {
    let product = u128::from(count) * u128::from(num);
    u64::try_from(product.div_ceil(u128::from(den))).unwrap_or(u64::MAX)
}

impl SlidingCounterState {
    fn roll(&mut self, quota: &Quota, now: u64) {
        let start = window_start(now, quota.period_ns);
        if start == self.start {
            return;
        }
        self.previous = if start == self.start + quota.period_ns {
            self.current
        } else {
            0
        };
        self.current = 0;
        self.start = start;
    }

    /// The weighted count at `now` (which lies in the current window).
    fn estimate(&self, quota: &Quota, now: u64) -> u64 {
        let left = quota.period_ns - (now - self.start);
        mul_div_ceil(self.previous, left, quota.period_ns).saturating_add(self.current)
    }

    /// Windows only move forward: a reading older than the current window counts in it.
    pub(crate) fn latest(&self, now: u64) -> u64 {
        now.max(self.start)
    }

    pub(crate) fn check(&mut self, quota: &Quota, now: u64, cost: u64) -> Check {
        let now = self.latest(now);
        self.roll(quota, now);
        let period = quota.period_ns;
        let estimate = self.estimate(quota, now);
        let after = estimate.saturating_add(cost);
        // Fully restored once this window's requests have slid out: the end of the next window.
        let reset_after = |current: u64| {
            if current > 0 {
                self.start + 2 * period - now
            } else if self.previous > 0 {
                self.start + period - now
            } else {
                0
            }
        };
        if after <= quota.limit {
            return Check {
                allowed: true,
                remaining: quota.limit - after,
                // As it will be once this request is committed.
                reset_after_ns: reset_after(self.current.saturating_add(cost)),
                retry_after_ns: 0,
            };
        }
        let reset_after_ns = reset_after(self.current);
        Check {
            allowed: false,
            remaining: quota.limit.saturating_sub(estimate),
            reset_after_ns,
            retry_after_ns: self.wait_for(quota, now, cost),
        }
    }

    /// Time until `cost` fits, as the previous window's weight decays.
    fn wait_for(&self, quota: &Quota, now: u64, cost: u64) -> u64 {
        let period = quota.period_ns;
        let elapsed = now - self.start;
        // Smallest elapsed time e in a window with counts (previous, current) at which
        // ceil(previous * (period - e) / period) + current + cost <= limit.
        let fits_at = |previous: u64, current: u64| -> Option<u64> {
            let room = quota.limit.checked_sub(current.saturating_add(cost))?;
            if previous <= room {
                return Some(0);
            }
            // previous * (period - e) <= room * period
            let max_left = u128::from(room) * u128::from(period) / u128::from(previous);
            Some(period - u64::try_from(max_left).unwrap_or(period))
        };
        match fits_at(self.previous, self.current) {
            Some(e) if e > elapsed => e - elapsed,
            Some(_) => 1,
            None => match fits_at(self.current, 0) {
                Some(e) => (self.start + period - now) + e,
                // The cost exceeds the limit: it never fits. Report a full cycle.
                None => self.start + 2 * period - now,
            },
        }
    }

    pub(crate) fn commit(&mut self, cost: u64) {
        self.current = self.current.saturating_add(cost);
    }

    pub(crate) fn refund(&mut self, quota: &Quota, counted_at: u64, cost: u64) {
        let window = window_start(counted_at, quota.period_ns);
        if window == self.start {
            self.current = self.current.saturating_sub(cost);
        } else if window + quota.period_ns == self.start {
            self.previous = self.previous.saturating_sub(cost);
        }
    }

    pub(crate) fn is_idle(&self, quota: &Quota, now: u64) -> bool {
        (self.current == 0 && self.previous == 0)
            || window_start(now, quota.period_ns) >= self.start + 2 * quota.period_ns
    }
}
