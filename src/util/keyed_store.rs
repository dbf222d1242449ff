//! The one bounded keyed store: a map with a hard bound on its number of keys and lossless
//! expiry of idle keys. Every keyed in-memory state of the crate (a rate limiter's counts per
//! key, a keyed breaker's circuits) lives in one, so no flood of unique keys can grow memory
//! without bound, nor lock honest newcomers out for longer than their own limit would:
//!
//! * An entry is *idle* when its state is indistinguishable from a fresh one (a token bucket
//!   that has refilled, a window that has passed, a closed circuit with nothing counted).
//!   Dropping it loses nothing. Once the store is at least half full, idle entries are swept at
//!   most once per sweep interval, by whichever request inserts a new key first after it; once
//!   it is full, a newcomer sweeps as soon as the shorter *full* interval has passed (about the
//!   time a used key takes to become idle again), so a flood of made-up keys ages out as fast
//!   as its limits allow and newcomers get entries of their own again.
//! * While `max_keys` live entries exist, a new key is not inserted: it shares one of the
//!   *overflow* entries, chosen by a hash of the key, with the other keys that did not fit.
//!   Live keys are never evicted, so a flood cannot reset a real client's limit; the flood
//!   itself stays limited (as a few keys), and with many overflow entries a newcomer shares
//!   its entry with only a slice of the flood.

use std::hash::BuildHasher;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use dashmap::DashMap;

use crate::key::Key;

/// The default bound on the keys one keyed layer holds in memory (a rate limiter's keys, a
/// keyed breaker's circuits): 100 000. Change it with the builder's `max_keys`. A rate-limit
/// key costs tens of bytes; a circuit about 1 KiB (its striped counters).
///
/// ```
/// # #[cfg(feature = "rate-limit")]
/// use tower_bulwark::rate_limit::DEFAULT_MAX_KEYS;
/// # #[cfg(not(feature = "rate-limit"))]
/// # use tower_bulwark::circuit_breaker::DEFAULT_MAX_KEYS;
///
/// assert_eq!(DEFAULT_MAX_KEYS, 100_000); // change it with `.max_keys(n)`
/// ```
pub const DEFAULT_MAX_KEYS: usize = 100_000;

/// The entry a call got: the key's own, or an overflow entry it shares.
#[derive(Debug)]
pub(crate) enum Entry<'a, V> {
    Own(&'a V),
    Overflow(&'a V),
}

impl<V> Deref for Entry<'_, V> {
    type Target = V;

    fn deref(&self) -> &V {
        match self {
            Entry::Own(v) | Entry::Overflow(v) => v,
        }
    }
}

/// How a store is swept and overflows.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sweeping {
    /// At least half full: sweep at most this often (nanoseconds of the layer's clock).
    pub(crate) every_ns: u64,
    /// Full, with a newcomer waiting: sweep at most this often.
    pub(crate) when_full_ns: u64,
    /// Overflow entries shared by the keys that do not fit.
    pub(crate) overflow_slots: usize,
}

pub(crate) struct KeyedStore<V> {
    map: DashMap<Key, V>,
    len: AtomicUsize,
    max_keys: usize,
    overflow: Box<[V]>,
    /// Picks a key's overflow entry; seeded per store, so a client cannot aim at another's.
    pick: std::collections::hash_map::RandomState,
    sweeping: Sweeping,
    /// When the last sweep ran (clock nanoseconds; `NEVER` before the first).
    last_sweep_ns: AtomicU64,
    overflowed: AtomicU64,
}

const NEVER: u64 = u64::MAX;

impl<V> KeyedStore<V> {
    pub(crate) fn new(max_keys: usize, sweeping: Sweeping, make_overflow: impl Fn() -> V) -> Self {
        let slots = sweeping.overflow_slots.max(1);
        Self {
            map: DashMap::new(),
            len: AtomicUsize::new(0),
            max_keys,
            overflow: (0..slots).map(|_| make_overflow()).collect(),
            pick: std::collections::hash_map::RandomState::new(),
            sweeping: Sweeping {
                every_ns: sweeping.every_ns.max(1),
                when_full_ns: sweeping.when_full_ns.max(1),
                overflow_slots: slots,
            },
            last_sweep_ns: AtomicU64::new(NEVER),
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
        f: impl FnOnce(Entry<'_, V>) -> R,
    ) -> R {
        if let Some(entry) = self.map.get(key) {
            return f(Entry::Own(&entry));
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
                    "key store full: new keys share overflow entries until idle keys are swept \
                     (raise max_keys if this is real traffic)"
                );
            }
            return f(Entry::Overflow(self.overflow_of(key)));
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
        f(Entry::Own(&entry.downgrade()))
    }

    /// The overflow entry `key` shares.
    pub(crate) fn overflow_of(&self, key: &Key) -> &V {
        let slot = if self.overflow.len() == 1 {
            0
        } else {
            // The remainder of a division by a `usize` fits one.
            (self.pick.hash_one(key) % self.overflow.len() as u64) as usize
        };
        &self.overflow[slot]
    }

    /// Every overflow entry.
    pub(crate) fn overflow_entries(&self) -> &[V] {
        &self.overflow
    }

    /// Runs `f` on the entry for `key` if the key has one of its own.
    ///
    /// Never an overflow entry: a refund for a key that overflowed, or whose idle entry was
    /// swept meanwhile, must not credit an entry the flood shares.
    pub(crate) fn with_existing<R>(&self, key: &Key, f: impl FnOnce(&V) -> R) -> Option<R> {
        self.map.get(key).map(|entry| f(&entry))
    }

    /// Every key with its own entry, and `f` of its entry (a fleet sync's round).
    #[cfg(feature = "redis")]
    pub(crate) fn collect<R>(&self, f: impl Fn(&Key, &V) -> R) -> Vec<R> {
        self.map.iter().map(|e| f(e.key(), e.value())).collect()
    }

    fn sweep_if_due(&self, now: u64, is_idle: &impl Fn(&V) -> bool) {
        let len = self.len.load(Ordering::Relaxed);
        // Below half full there is room enough: skip the walk over every entry (it runs on a
        // request's thread and write-locks each shard in turn).
        if len < self.max_keys / 2 {
            return;
        }
        let gap = if len >= self.max_keys {
            self.sweeping.when_full_ns
        } else {
            self.sweeping.every_ns
        };
        let last = self.last_sweep_ns.load(Ordering::Relaxed);
        if last != NEVER && now.saturating_sub(last) < gap {
            return;
        }
        // One thread sweeps; the others go on.
        if self
            .last_sweep_ns
            .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
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

    /// Live keys in the store (the overflow entries not counted).
    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// How many calls fell to an overflow entry because the store was full.
    pub(crate) fn overflowed(&self) -> u64 {
        self.overflowed.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sweeping(every_ns: u64, when_full_ns: u64, overflow_slots: usize) -> Sweeping {
        Sweeping {
            every_ns,
            when_full_ns,
            overflow_slots,
        }
    }

    #[test]
    fn never_holds_more_than_max_keys_and_overflow_is_shared() {
        let store = KeyedStore::new(3, sweeping(1_000, 1_000, 1), || AtomicU64::new(0));
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
        assert_eq!(store.overflow[0].load(Ordering::Relaxed), 97);
        assert_eq!(store.overflowed(), 97);
        // Keys that fit keep their own entry.
        let seen = store.with(
            &Key::Int(0),
            0,
            || AtomicU64::new(0),
            idle,
            |v| (matches!(v, Entry::Own(_)), v.load(Ordering::Relaxed)),
        );
        assert_eq!(seen, (true, 1));
    }

    #[test]
    fn overflowing_keys_spread_over_the_overflow_entries() {
        let store = KeyedStore::new(1, sweeping(1_000, 1_000, 64), || AtomicU64::new(0));
        for n in 0..6_400u64 {
            store.with(
                &Key::Int(n),
                0,
                || AtomicU64::new(0),
                |_: &AtomicU64| false,
                |v| v.fetch_add(1, Ordering::Relaxed),
            );
        }
        let counts: Vec<u64> = store
            .overflow_entries()
            .iter()
            .map(|v| v.load(Ordering::Relaxed))
            .collect();
        assert_eq!(counts.iter().sum::<u64>(), 6_399);
        // A hash spreads them: no entry holds a large share of the flood.
        assert!(counts.iter().all(|&n| n < 400), "{counts:?}");
        // A key always gets the same one.
        let a = store.overflow_of(&Key::Int(12_345)) as *const _;
        assert_eq!(a, store.overflow_of(&Key::Int(12_345)) as *const _);
    }

    #[test]
    fn idle_keys_are_swept_once_the_interval_passes() {
        let store = KeyedStore::new(2, sweeping(1_000, 1_000, 1), || ());
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
    fn a_full_store_sweeps_on_its_shorter_interval() {
        let store = KeyedStore::new(2, sweeping(1_000_000, 100, 1), || ());
        let idle = std::sync::atomic::AtomicBool::new(false);
        let is_idle = |_: &()| idle.load(Ordering::Relaxed);
        store.with(&Key::Int(1), 0, || (), is_idle, |_| ());
        store.with(&Key::Int(2), 0, || (), is_idle, |_| ()); // sweeps at 0, nothing idle
        idle.store(true, Ordering::Relaxed);
        store.with(&Key::Int(3), 50, || (), is_idle, |_| ());
        assert_eq!(store.overflowed(), 1, "the full interval has not passed");
        // Full: 100 ns after the last sweep is enough, not the half-full million.
        store.with(&Key::Int(3), 100, || (), is_idle, |_| ());
        assert_eq!((store.len(), store.overflowed()), (1, 1));
    }

    #[test]
    fn below_half_full_nothing_is_swept() {
        let store = KeyedStore::new(10, sweeping(1, 1, 1), || ());
        for n in 0..4 {
            store.with(&Key::Int(n), n * 100, || (), |_: &()| true, |_| ());
        }
        assert_eq!(store.len(), 4);
    }
}
