//! The in-memory rate-limit backend.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use smallvec::SmallVec;

use super::{Decision, LimitStatus, Origin, RateLimitBackend, Receipt, Verdict};
use crate::clock::Clock;
use crate::key::Key;
use crate::rate_limit::algorithm::{gcra, nanos, Algorithm, Check, Quota, State};
use crate::util::{KeyedStore, Sweeping};

/// One key's state.
enum Slot {
    /// A lone token bucket: its TAT, updated by compare-and-swap, as governor does. No lock.
    Tat(AtomicU64),
    /// Anything else (several limits, or windows): checked and committed under one lock, so
    /// several limits are all-or-nothing. Boxed, so the common lone token bucket keeps map
    /// entries small (more of them fit in cache).
    Locked(Box<Mutex<SmallVec<[State; 2]>>>),
}

/// Rate decisions kept in process memory.
///
/// Built by [`RateLimitLayer`](crate::rate_limit::RateLimitLayer)'s builder; shared by every clone
/// of the layer's services. Bounded: at most `max_keys` keys, idle keys swept (see the
/// builder's `max_keys`).
///
/// ```
/// use std::time::Duration;
/// use tower_bulwark::rate_limit::store::MemoryRateLimiter;
/// use tower_bulwark::{key::Key, rate_limit::RateLimitLayer};
///
/// let layer = RateLimitLayer::fixed_window(10, Duration::from_secs(1)).build()?;
/// let backend: &MemoryRateLimiter = layer.backend();
/// assert!(backend.decide_now(&Key::from("tenant-7"), 1).allowed());
/// assert_eq!(backend.len(), 1);
/// # Ok::<(), tower_bulwark::ConfigError>(())
/// ```
pub struct MemoryRateLimiter {
    quotas: Arc<[Quota]>,
    store: KeyedStore<Slot>,
    /// [`Key::Global`]'s state, outside the map: a global limit pays for no hashing or shard lock.
    global: Slot,
    clock: Arc<dyn Clock>,
    lone_token_bucket: bool,
    /// One more than the largest capacity: a larger cost is refused alike, so it is clamped to
    /// this (the Redis scripts do the same, and agree on its `Retry-After`).
    max_cost: u64,
}

impl std::fmt::Debug for MemoryRateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryRateLimiter")
            .field("quotas", &self.quotas)
            .field("keys", &self.store.len())
            .finish_non_exhaustive()
    }
}

/// Overflow entries for a store of `max_keys`: one per 64 keys (at least one, at most 4 096),
/// so a newcomer in a full store shares its entry with a small slice of a flood, and the flood
/// as a whole gets at most about 1.6 % more than the keys it displaced.
fn overflow_slots(max_keys: usize) -> usize {
    (max_keys / 64).clamp(1, 4_096)
}

impl MemoryRateLimiter {
    pub(crate) fn new(quotas: Arc<[Quota]>, max_keys: usize, clock: Arc<dyn Clock>) -> Self {
        let lone_token_bucket = quotas.len() == 1 && quotas[0].algorithm == Algorithm::TokenBucket;
        // Sweep idle keys about once per shortest period (at least every 10 ms, at most every
        // minute): often enough that idle keys do not crowd out new ones for long, rarely enough
        // that sweeping costs nothing per request.
        let shortest = quotas.iter().map(|q| q.period_ns).min().unwrap_or(1);
        let sweep_every_ns = shortest.clamp(10_000_000, 60_000_000_000);
        // Full, a newcomer sweeps once a key used once could have become idle again (one
        // emission of the fastest limit), so a flood of made-up keys ages out as fast as its
        // limits allow; at most every 100 ms, so a flood cannot make every request walk the map.
        let fastest = quotas
            .iter()
            .map(|q| q.period_ns / q.limit.max(1))
            .min()
            .unwrap_or(1);
        let sweeping = Sweeping {
            every_ns: sweep_every_ns,
            when_full_ns: fastest.clamp(100_000_000, sweep_every_ns.max(100_000_000)),
            overflow_slots: overflow_slots(max_keys),
        };
        let max_cost = quotas
            .iter()
            .map(|q| {
                if q.algorithm == Algorithm::TokenBucket {
                    q.burst
                } else {
                    q.limit
                }
            })
            .max()
            .unwrap_or(0)
            .saturating_add(1);
        Self {
            max_cost,
            global: Self::fresh_slot(&quotas, lone_token_bucket),
            store: KeyedStore::new(max_keys, sweeping, || {
                Self::fresh_slot(&quotas, lone_token_bucket)
            }),
            quotas,
            clock,
            lone_token_bucket,
        }
    }

    fn fresh_slot(quotas: &[Quota], lone_token_bucket: bool) -> Slot {
        if lone_token_bucket {
            Slot::Tat(AtomicU64::new(0))
        } else {
            Slot::Locked(Box::new(Mutex::new(
                quotas.iter().map(State::new).collect(),
            )))
        }
    }

    /// Decides synchronously: the memory backend never waits.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_bulwark::{key::Key, rate_limit::RateLimitLayer};
    ///
    /// let layer = RateLimitLayer::fixed_window(1, Duration::from_secs(60)).build()?;
    /// assert!(layer.backend().decide_now(&Key::Int(1), 1).allowed());
    /// assert!(!layer.backend().decide_now(&Key::Int(1), 1).allowed());
    /// assert!(layer.backend().decide_now(&Key::Int(2), 1).allowed()); // keys count apart
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn decide_now(&self, key: &Key, cost: u64) -> Verdict {
        let now = nanos(self.clock.now());
        let cost = cost.min(self.max_cost);
        let decide = |slot: &Slot| match slot {
            Slot::Tat(tat) => self.decide_lone_token_bucket(tat, now, cost),
            Slot::Locked(states) => self.decide_locked(states, now, cost),
        };
        if let Key::Global = key {
            return decide(&self.global);
        }
        self.store.with(
            key,
            now,
            || Self::fresh_slot(&self.quotas, self.lone_token_bucket),
            |slot| self.is_idle(slot, now),
            |slot| decide(&slot),
        )
    }

    /// Live keys held in the keyed store (at most `max_keys`). [`Key::Global`] is held apart,
    /// outside the store, and not counted.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_bulwark::{key::Key, rate_limit::RateLimitLayer};
    ///
    /// let layer = RateLimitLayer::fixed_window(10, Duration::from_secs(60)).build()?;
    /// layer.backend().decide_now(&Key::Global, 1);
    /// layer.backend().decide_now(&Key::Int(1), 1);
    /// assert_eq!(layer.backend().len(), 1); // the global key is not counted
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn len(&self) -> usize {
        self.store.len()
    }

    /// True when no key is held.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_bulwark::{key::Key, rate_limit::RateLimitLayer};
    ///
    /// let layer = RateLimitLayer::fixed_window(10, Duration::from_secs(60)).build()?;
    /// assert!(layer.backend().is_empty());
    /// layer.backend().decide_now(&Key::from("tenant-7"), 1);
    /// assert!(!layer.backend().is_empty());
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Decisions made on the shared overflow entry because `max_keys` keys were live.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_bulwark::{key::Key, rate_limit::RateLimitLayer};
    ///
    /// let layer = RateLimitLayer::fixed_window(10, Duration::from_secs(60)).max_keys(2).build()?;
    /// for n in 0..5 {
    ///     layer.backend().decide_now(&Key::Int(n), 1);
    /// }
    /// assert_eq!(layer.backend().overflowed(), 3); // keys 2, 3 and 4 found no room
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn overflowed(&self) -> u64 {
        self.store.overflowed()
    }

    fn decide_lone_token_bucket(&self, tat: &AtomicU64, now: u64, cost: u64) -> Verdict {
        let quota = &self.quotas[0];
        let mut current = tat.load(Ordering::Acquire);
        loop {
            let (check, new_tat) = gcra::decide(current, quota, now, cost);
            if !check.allowed {
                return verdict(now, &[check]);
            }
            match tat.compare_exchange_weak(current, new_tat, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return verdict(now, &[check]),
                Err(actual) => current = actual,
            }
        }
    }

    fn decide_locked(&self, states: &Mutex<SmallVec<[State; 2]>>, now: u64, cost: u64) -> Verdict {
        // A panic elsewhere while holding the lock leaves consistent state (each step is
        // complete), so a poisoned lock is used as is rather than failing every request.
        let mut states = states.lock().unwrap_or_else(|poison| poison.into_inner());
        // Threads read the clock before taking the lock, so a reading may be older than one
        // already applied; every limit and the refund record use the same, latest time.
        let now = states.iter().fold(now, |now, state| state.latest(now));
        let mut checks: SmallVec<[Check; 2]> = states
            .iter_mut()
            .zip(self.quotas.iter())
            .map(|(state, quota)| state.check(quota, now, cost))
            .collect();
        if checks.iter().all(|c| c.allowed) {
            for (state, quota) in states.iter_mut().zip(self.quotas.iter()) {
                state.commit(quota, now, cost);
            }
        } else {
            // Nothing was spent: a limit that would have allowed reports its state as it is,
            // which is what a check of cost 0 reads.
            for ((check, state), quota) in checks
                .iter_mut()
                .zip(states.iter_mut())
                .zip(self.quotas.iter())
            {
                if check.allowed {
                    *check = state.check(quota, now, 0);
                }
            }
        }
        verdict(now, &checks)
    }

    fn is_idle(&self, slot: &Slot, now: u64) -> bool {
        match slot {
            Slot::Tat(tat) => tat.load(Ordering::Acquire) <= now,
            Slot::Locked(states) => match states.try_lock() {
                Ok(states) => states
                    .iter()
                    .zip(self.quotas.iter())
                    .all(|(state, quota)| state.is_idle(quota, now)),
                // In use right now: not idle.
                Err(_) => false,
            },
        }
    }

    /// Gives back `cost` to `key`, for a request admitted at `counted_at`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_bulwark::{key::Key, rate_limit::RateLimitLayer};
    ///
    /// let layer = RateLimitLayer::fixed_window(1, Duration::from_secs(60)).build()?;
    /// let verdict = layer.backend().decide_now(&Key::Global, 1);
    /// layer.backend().refund_now(&Key::Global, 1, verdict.counted_at());
    /// assert!(layer.backend().decide_now(&Key::Global, 1).allowed()); // the unit came back
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn refund_now(&self, key: &Key, cost: u64, counted_at: Duration) {
        let now = nanos(self.clock.now());
        let counted_at = nanos(counted_at);
        let refund = |slot: &Slot| match slot {
            Slot::Tat(tat) => {
                let quota = &self.quotas[0];
                let _ = tat.fetch_update(Ordering::AcqRel, Ordering::Acquire, |current| {
                    Some(gcra::refunded(current, quota, now, cost))
                });
            }
            Slot::Locked(states) => {
                let mut states = states.lock().unwrap_or_else(|poison| poison.into_inner());
                for (state, quota) in states.iter_mut().zip(self.quotas.iter()) {
                    state.refund(quota, now, counted_at, cost);
                }
            }
        };
        if let Key::Global = key {
            refund(&self.global);
        } else {
            let _ = self.store.with_existing(key, refund);
        }
    }
}

fn verdict(now: u64, checks: &[Check]) -> Verdict {
    let allowed = checks.iter().all(|c| c.allowed);
    let retry_after_ns = checks
        .iter()
        .filter(|c| !c.allowed)
        .map(|c| c.retry_after_ns)
        .max()
        .unwrap_or(0);
    Verdict {
        allowed,
        retry_after: Duration::from_nanos(retry_after_ns),
        limits: checks
            .iter()
            .map(|c| LimitStatus {
                remaining: c.remaining,
                reset_after: Duration::from_nanos(c.reset_after_ns),
            })
            .collect(),
        counted_at: Duration::from_nanos(now),
        origin: Origin::Store,
    }
}

impl RateLimitBackend for MemoryRateLimiter {
    type Pending = std::future::Ready<Verdict>;

    #[inline]
    fn decide(&self, key: &Key, cost: u64) -> Decision<Self::Pending> {
        Decision::Ready(self.decide_now(key, cost))
    }

    fn refund(&self, key: &Key, cost: u64, receipt: Receipt) {
        self.refund_now(key, cost, receipt.counted_at);
    }
}
