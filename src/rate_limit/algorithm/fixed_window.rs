//! Fixed window: a counter per window of `period`, windows aligned to the clock's origin.

use super::{window_start, Check, Quota};

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct FixedWindowState {
    start: u64,
    count: u64,
}

impl FixedWindowState {
    fn roll(&mut self, quota: &Quota, now: u64) {
        let start = window_start(now, quota.period_ns);
        if start != self.start {
            self.start = start;
            self.count = 0;
        }
    }

    /// A reading older than the window already in use (another thread read the clock later and
    /// got the lock first) counts in that window: windows only move forward.
    pub(crate) fn latest(&self, now: u64) -> u64 {
        now.max(self.start)
    }

    pub(crate) fn check(&mut self, quota: &Quota, now: u64, cost: u64) -> Check {
        let now = self.latest(now);
        self.roll(quota, now);
        let reset_after_ns = self.start + quota.period_ns - now;
        let after = self.count.saturating_add(cost);
        if after <= quota.limit {
            Check {
                allowed: true,
                remaining: quota.limit - after,
                reset_after_ns,
                retry_after_ns: 0,
            }
        } else {
            Check {
                allowed: false,
                remaining: quota.limit.saturating_sub(self.count),
                reset_after_ns,
                retry_after_ns: reset_after_ns,
            }
        }
    }

    /// Call only right after a `check` at the same instant that allowed it.
    pub(crate) fn commit(&mut self, cost: u64) {
        self.count = self.count.saturating_add(cost);
    }

    pub(crate) fn refund(&mut self, quota: &Quota, counted_at: u64, cost: u64) {
        if window_start(counted_at, quota.period_ns) == self.start {
            self.count = self.count.saturating_sub(cost);
        }
    }

    pub(crate) fn is_idle(&self, quota: &Quota, now: u64) -> bool {
        self.count == 0 || window_start(now, quota.period_ns) > self.start
    }
}
