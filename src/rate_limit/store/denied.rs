//! Keys Redis has just refused, answered locally until their retry time: a client hammering a
//! limit it has hit costs no round trip. Bounded in size.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dashmap::DashMap;

use super::{Origin, Verdict};
use crate::key::Key;

struct Denial {
    /// Local-clock nanoseconds at which Redis answered.
    at: u64,
    /// Local-clock nanoseconds until which a request of at least `cost` is refused.
    until: u64,
    cost: u64,
    verdict: Verdict,
}

pub(crate) struct DeniedCache {
    entries: DashMap<Key, Denial>,
    capacity: usize,
    /// When expired entries were last swept (local-clock nanoseconds).
    last_sweep: AtomicU64,
}

/// A full cache sweeps its expired entries at most this often.
const SWEEP_INTERVAL_NS: u64 = 100_000_000;

impl DeniedCache {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            entries: DashMap::new(),
            capacity,
            last_sweep: AtomicU64::new(0),
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The cached refusal for `key`, as it stands at `now`, if a request of `cost` is still
    /// certain to be refused. A smaller cost than the refused one may fit earlier: ask Redis.
    pub(crate) fn lookup(&self, key: &Key, cost: u64, now: u64) -> Option<Verdict> {
        if self.capacity == 0 {
            return None;
        }
        let entry = self.entries.get(key)?;
        if now >= entry.until || cost < entry.cost {
            let expired = now >= entry.until;
            drop(entry);
            if expired {
                self.entries.remove_if(key, |_, d| now >= d.until);
            }
            return None;
        }
        let elapsed = Duration::from_nanos(now.saturating_sub(entry.at));
        let mut verdict = entry.verdict.clone();
        verdict.retry_after = Duration::from_nanos(entry.until - now);
        for status in &mut verdict.limits {
            status.reset_after = status.reset_after.saturating_sub(elapsed);
        }
        verdict.origin = Origin::Nowhere;
        Some(verdict)
    }

    /// Drops `key`'s cached refusal (a refund may have made room).
    pub(crate) fn forget(&self, key: &Key) {
        if self.capacity != 0 {
            self.entries.remove(key);
        }
    }

    pub(crate) fn remember(&self, key: &Key, cost: u64, now: u64, verdict: &Verdict) {
        if self.capacity == 0 || verdict.allowed || verdict.retry_after.is_zero() {
            return;
        }
        if self.entries.len() >= self.capacity && !self.entries.contains_key(key) {
            self.sweep(now);
            if self.entries.len() >= self.capacity {
                return;
            }
        }
        let until = now.saturating_add(crate::clock::duration_to_nanos(verdict.retry_after));
        self.entries.insert(
            key.clone(),
            Denial {
                at: now,
                until,
                cost,
                verdict: verdict.clone(),
            },
        );
    }

    fn sweep(&self, now: u64) {
        let last = self.last_sweep.load(Ordering::Relaxed);
        if now.saturating_sub(last) < SWEEP_INTERVAL_NS && last != 0 {
            return;
        }
        if self
            .last_sweep
            .compare_exchange(last, now.max(1), Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            self.entries.retain(|_, d| now < d.until);
        }
    }
}

#[cfg(test)]
mod tests {
    use smallvec::smallvec;

    use super::super::LimitStatus;
    use super::*;

    fn refused(retry_ms: u64) -> Verdict {
        Verdict {
            allowed: false,
            retry_after: Duration::from_millis(retry_ms),
            limits: smallvec![LimitStatus {
                remaining: 0,
                reset_after: Duration::from_millis(retry_ms * 2),
            }],
            counted_at: Duration::ZERO,
            origin: Origin::Store,
        }
    }

    const MS: u64 = 1_000_000;

    #[test]
    fn answers_until_the_retry_time_then_forgets() {
        let cache = DeniedCache::new(10);
        let key = Key::Int(1);
        cache.remember(&key, 1, 0, &refused(100));
        let hit = cache.lookup(&key, 1, 40 * MS).expect("cached");
        assert!(!hit.allowed);
        assert_eq!(hit.retry_after, Duration::from_millis(60));
        assert_eq!(hit.limits[0].reset_after, Duration::from_millis(160));
        assert!(hit.degraded(), "a cached answer counted nothing");
        assert!(cache.lookup(&key, 1, 100 * MS).is_none());
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn a_smaller_cost_asks_redis() {
        let cache = DeniedCache::new(10);
        cache.remember(&Key::Int(1), 5, 0, &refused(100));
        assert!(cache.lookup(&Key::Int(1), 1, 0).is_none());
        assert!(cache.lookup(&Key::Int(1), 5, 0).is_some());
        assert!(cache.lookup(&Key::Int(1), 9, 0).is_some());
    }

    #[test]
    fn bounded_and_swept_when_full() {
        let cache = DeniedCache::new(2);
        cache.remember(&Key::Int(1), 1, 0, &refused(10));
        cache.remember(&Key::Int(2), 1, 0, &refused(1_000));
        cache.remember(&Key::Int(3), 1, 0, &refused(1_000));
        assert_eq!(cache.len(), 2, "full: the newcomer is not cached");
        // Key 1 has expired by 200 ms: the sweep makes room.
        cache.remember(&Key::Int(3), 1, 200 * MS, &refused(1_000));
        assert_eq!(cache.len(), 2);
        assert!(cache.lookup(&Key::Int(3), 1, 200 * MS).is_some());
        assert!(cache.lookup(&Key::Int(1), 1, 200 * MS).is_none());
    }

    #[test]
    fn capacity_zero_turns_it_off() {
        let cache = DeniedCache::new(0);
        cache.remember(&Key::Int(1), 1, 0, &refused(100));
        assert!(cache.lookup(&Key::Int(1), 1, 0).is_none());
    }
}
