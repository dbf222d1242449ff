//! How a batch-synced layer's calls to Redis went: the counts every such layer keeps, and the
//! one public view of them.

use std::sync::atomic::{AtomicU64, Ordering};

use super::{CallError, Health};

/// How a layer's syncs with Redis went: from
/// [`CircuitBreakerLayer::fleet_stats`](crate::circuit_breaker::CircuitBreakerLayer::fleet_stats)
/// and [`RetryBudget::fleet_stats`](crate::retry::RetryBudget::fleet_stats).
///
/// ```
/// let stats = tower_bulwark::redis::FleetStats::default();
/// assert!(!stats.in_fallback);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FleetStats {
    /// Script calls Redis answered (one per key per sync).
    pub syncs: u64,
    /// Script calls that failed, timeouts included.
    pub errors: u64,
    /// Script calls given up at the deadline.
    pub timeouts: u64,
    /// Times the layer fell back to deciding alone.
    pub fallbacks: u64,
    /// Deciding alone right now: the last sync could not reach Redis.
    pub in_fallback: bool,
}

/// The counts behind [`FleetStats`], kept by the sync side of a layer.
#[derive(Debug, Default)]
pub(crate) struct SyncCounters {
    syncs: AtomicU64,
    errors: AtomicU64,
    timeouts: AtomicU64,
}

impl SyncCounters {
    /// One call Redis answered.
    pub(crate) fn answered(&self) {
        self.syncs.fetch_add(1, Ordering::Relaxed);
    }

    /// One call that failed with `err`.
    pub(crate) fn failed(&self, err: &CallError) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if err.is_timeout() {
            self.timeouts.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The counts, with the fallbacks and the fallback now read from `health`.
    pub(crate) fn stats(&self, health: &Health) -> FleetStats {
        FleetStats {
            syncs: self.syncs.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            timeouts: self.timeouts.load(Ordering::Relaxed),
            fallbacks: health.backoffs(),
            in_fallback: health.is_backing_off(),
        }
    }
}
