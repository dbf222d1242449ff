//! Sliding window log: the timestamp and cost of every admitted request in the last `period`.
//! Exact; memory per key grows with the number of requests admitted in a window.

use std::collections::VecDeque;

use super::{Check, Quota};

#[derive(Debug, Clone, Default)]
pub(crate) struct SlidingLogState {
    /// (admitted at, cost), oldest first.
    entries: VecDeque<(u64, u64)>,
    total: u64,
}

impl SlidingLogState {
    /// Forgets entries that left the window: an entry at `t` counts while `now < t + period`.
    fn prune(&mut self, quota: &Quota, now: u64) {
        while let Some(&(at, cost)) = self.entries.front() {
            if at.saturating_add(quota.period_ns) > now {
                break;
            }
            self.total -= cost;
            self.entries.pop_front();
        }
    }

    /// `now`, but never before the newest entry: the log stays in time order even when a
    /// thread that read the clock earlier gets the lock later.
    pub(crate) fn latest(&self, now: u64) -> u64 {
        self.entries.back().map_or(now, |&(at, _)| now.max(at))
    }

    pub(crate) fn check(&mut self, quota: &Quota, now: u64, cost: u64) -> Check {
        let now = self.latest(now);
        self.prune(quota, now);
        let after = self.total.saturating_add(cost);
        let expiry = |at: u64| at.saturating_add(quota.period_ns) - now;
        let reset_after_ns = self.entries.back().map_or(0, |&(at, _)| expiry(at));
        if after <= quota.limit {
            let reset_after_ns = if cost > 0 {
                quota.period_ns
            } else {
                reset_after_ns
            };
            return Check {
                allowed: true,
                remaining: quota.limit - after,
                reset_after_ns,
                retry_after_ns: 0,
            };
        }
        // Wait until enough of the oldest entries expire to make room for `cost`.
        let mut must_free = after - quota.limit;
        let mut retry_after_ns = quota.period_ns;
        for &(at, entry_cost) in &self.entries {
            must_free = must_free.saturating_sub(entry_cost);
            if must_free == 0 {
                retry_after_ns = expiry(at);
                break;
            }
        }
        Check {
            allowed: false,
            remaining: quota.limit.saturating_sub(self.total),
            reset_after_ns,
            retry_after_ns,
        }
    }

    pub(crate) fn commit(&mut self, now: u64, cost: u64) {
        if cost == 0 {
            return;
        }
        let now = self.latest(now);
        self.total = self.total.saturating_add(cost);
        match self.entries.back_mut() {
            // Requests in the same nanosecond share one entry.
            Some((at, entry_cost)) if *at == now => *entry_cost += cost,
            _ => self.entries.push_back((now, cost)),
        }
    }

    pub(crate) fn refund(&mut self, quota: &Quota, now: u64, counted_at: u64, cost: u64) {
        let expires = counted_at.saturating_add(quota.period_ns);
        if expires <= now {
            // The request's entry has left the window already; later entries are other requests.
            return;
        }
        // The request's entry is the first at or after its reading (it may have been moved
        // forward to keep the log in order), and still inside its window.
        let found = self
            .entries
            .iter()
            .position(|&(at, _)| at >= counted_at)
            .filter(|&index| self.entries[index].0 < expires);
        if let Some(index) = found {
            let entry_cost = &mut self.entries[index].1;
            let given = cost.min(*entry_cost);
            *entry_cost -= given;
            self.total -= given;
            if *entry_cost == 0 {
                self.entries.remove(index);
            }
        }
    }

    pub(crate) fn is_idle(&self, quota: &Quota, now: u64) -> bool {
        self.entries
            .back()
            .is_none_or(|&(at, _)| at.saturating_add(quota.period_ns) <= now)
    }
}
