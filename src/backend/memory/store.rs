//! A keyed map with a hard bound on its number of keys and lossless expiry of idle keys.
//!
//! Every keyed in-memory store of the crate is one of these, so no flood of unique keys can grow
//! memory without bound:
//!
//! * An entry is *idle* when its state is indistinguishable from a fresh one (a token bucket that
//!   has refilled, a window that has passed). Once the store is at least half full, idle entries
//!   are swept at most once per sweep interval, by whichever request inserts a new key first
//!   after it; dropping them loses nothing.
//! * When `max_keys` live entries exist, a new key is not inserted: it shares one *overflow*
//!   entry with every other key that did not fit. Live keys are never evicted, so a flood cannot
//!   reset a real client's limit, and the flood itself stays limited (as one key).

#![cfg_attr(not(feature = "rate-limit"), allow(dead_code))]

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use dashmap::DashMap;

use crate::key::Key;

pub(crate) struct KeyedStore<V> {
    map: DashMap<Key, V>,
    len: AtomicUsize,
    max_keys: usize,
    overflow: V,
    sweep_every_ns: u64,
    next_sweep_ns: AtomicU64,
    overflowed: AtomicU64,
}

impl<V> KeyedStore<V> {
    pub(crate) fn new(max_keys: usize, sweep_every_ns: u64, overflow: V) -> Self {
        Self {
            map: DashMap::new(),
            len: AtomicUsize::new(0),
            max_keys,
            overflow,
            sweep_every_ns: sweep_every_ns.max(1),
            next_sweep_ns: AtomicU64::new(0),
            overflowed: AtomicU64::new(0),
        }
    }

    /// Runs `f` on the entry for `key`, creating it with `make` if there is room.
    pub(crate) fn with<R>(
        &self,
        key: &Key,
        now: u64,
        make: impl FnOnce() -> V,
        is_idle: impl Fn(&V) -> bool,
        f: impl FnOnce(&V) -> R,
    ) -> R {
        if let Some(entry) = self.map.get(key) {
            return f(&entry);
        }
        self.sweep_if_due(now, &is_idle);
        // Reserve a place before inserting, so racing inserts cannot overshoot `max_keys`.
        if self.len.fetch_add(1, Ordering::AcqRel) >= self.max_keys {
            self.len.fetch_sub(1, Ordering::AcqRel);
            let before = self.overflowed.fetch_add(1, Ordering::Relaxed);
            // Loud enough to be seen, rare enough not to flood the log: the 1st, 2nd, 4th, ...
            if (before + 1).is_power_of_two() {
                tracing::warn!(
                    max_keys = self.max_keys,
                    overflowed = before + 1,
                    "key store full: new keys share one overflow limit until idle keys are swept \
                     (raise max_keys if this is real traffic)"
                );
            }
            return f(&self.overflow);
        }
        let mut inserted = false;
        let entry = self.map.entry(key.clone()).or_insert_with(|| {
            inserted = true;
            make()
        });
        if !inserted {
            // Another request inserted the key first: give the reservation back.
            self.len.fetch_sub(1, Ordering::AcqRel);
        }
        f(&entry.downgrade())
    }

    /// Runs `f` on the entry for `key` if the key has one of its own.
    ///
    /// Never the overflow entry: a refund for a key that overflowed, or whose idle entry was
    /// swept meanwhile, must not credit the entry the flood shares.
    pub(crate) fn with_existing<R>(&self, key: &Key, f: impl FnOnce(&V) -> R) -> Option<R> {
        self.map.get(key).map(|entry| f(&entry))
    }

    fn sweep_if_due(&self, now: u64, is_idle: &impl Fn(&V) -> bool) {
        // Below half full there is room enough: skip the walk over every entry (it runs on a
        // request's thread and write-locks each shard in turn).
        if self.len.load(Ordering::Relaxed) < self.max_keys / 2 {
            return;
        }
        let due = self.next_sweep_ns.load(Ordering::Relaxed);
        if now < due {
            return;
        }
        // One thread sweeps; the others go on.
        let next = now.saturating_add(self.sweep_every_ns);
        if self
            .next_sweep_ns
            .compare_exchange(due, next, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        let mut removed = 0;
        self.map.retain(|_, entry| {
            let idle = is_idle(entry);
            removed += usize::from(idle);
            !idle
        });
        self.len.fetch_sub(removed, Ordering::AcqRel);
    }

    /// Live keys in the store (the overflow entry not counted).
    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// How many decisions fell to the overflow entry because the store was full.
    pub(crate) fn overflowed(&self) -> u64 {
        self.overflowed.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_holds_more_than_max_keys_and_overflow_is_shared() {
        let store = KeyedStore::new(3, 1_000, AtomicU64::new(0));
        let idle = |_: &AtomicU64| false;
        for n in 0..100u64 {
            store.with(
                &Key::Int(n),
                0,
                || AtomicU64::new(0),
                idle,
                |v| v.fetch_add(1, Ordering::Relaxed),
            );
        }
        assert_eq!(store.len(), 3);
        assert_eq!(store.overflow.load(Ordering::Relaxed), 97);
        assert_eq!(store.overflowed(), 97);
        // Keys that fit keep their own entry.
        let seen = store.with(
            &Key::Int(0),
            0,
            || AtomicU64::new(0),
            idle,
            |v| v.load(Ordering::Relaxed),
        );
        assert_eq!(seen, 1);
    }

    #[test]
    fn idle_keys_are_swept_once_the_interval_passes() {
        let store = KeyedStore::new(2, 1_000, ());
        let idle = std::sync::atomic::AtomicBool::new(false);
        let is_idle = |_: &()| idle.load(Ordering::Relaxed);
        store.with(&Key::Int(1), 0, || (), is_idle, |_| ());
        // Half full: this insert sweeps (finding nothing idle); the next sweep is due at 1000.
        store.with(&Key::Int(2), 0, || (), is_idle, |_| ());
        assert_eq!(store.len(), 2);
        idle.store(true, Ordering::Relaxed);
        // Full, and no sweep is due before t = 1000: key 3 overflows.
        store.with(&Key::Int(3), 10, || (), is_idle, |_| ());
        assert_eq!(store.overflowed(), 1);
        store.with(&Key::Int(3), 1_000, || (), is_idle, |_| ());
        assert_eq!(store.len(), 1);
        assert_eq!(store.overflowed(), 1);
    }

    #[test]
    fn below_half_full_nothing_is_swept() {
        let store = KeyedStore::new(10, 1, ());
        for n in 0..4 {
            store.with(&Key::Int(n), n * 100, || (), |_: &()| true, |_| ());
        }
        assert_eq!(store.len(), 4);
    }
}
