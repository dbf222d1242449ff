//! A circuit breaker on Redis itself, one per layer: after consecutive outages, stop calling
//! Redis for a back-off (doubling while probes fail, up to a cap), then let one probe through.
//! Meanwhile the layer answers at once without Redis (a rate limiter's fail mode, a breaker's
//! local state) instead of waiting out a deadline. Each change is logged once; the counts are
//! in the layer's stats.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Consecutive outages after which a layer leaves Redis alone, unless its builder says otherwise.
pub(crate) const DEFAULT_FAILURE_THRESHOLD: u32 = 3;
/// The first back-off after those outages; it doubles while probes fail.
pub(crate) const DEFAULT_BACKOFF: Duration = Duration::from_millis(500);
/// The longest back-off.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Whether a decision may call Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Permit {
    /// Redis is healthy: call it.
    Call,
    /// The back-off is over: this call is the one probe.
    Probe,
    /// Backing off (or another call is probing): use the fail mode.
    Skip,
}

/// Gives the probe slot back if a call holding it is dropped before it settles (its caller
/// went away, even before the first poll), so the slot is never held for ever. `T` is
/// whatever owns the layer's `Health`.
pub(crate) struct ProbeGuard<T: AsRef<Health>> {
    owner: std::sync::Arc<T>,
    permit: Permit,
}

impl<T: AsRef<Health>> ProbeGuard<T> {
    pub(crate) fn new(owner: std::sync::Arc<T>, permit: Permit) -> Self {
        Self { owner, permit }
    }

    /// The call finished: the caller reports its outcome itself, with this permit.
    pub(crate) fn settle(&mut self) -> Permit {
        std::mem::replace(&mut self.permit, Permit::Call)
    }
}

impl<T: AsRef<Health>> Drop for ProbeGuard<T> {
    fn drop(&mut self) {
        if self.permit == Permit::Probe {
            AsRef::<Health>::as_ref(&*self.owner).abandoned();
        }
    }
}

#[derive(Debug)]
pub(crate) struct Health {
    /// Which layer's Redis this is, for the logs: `"rate limit"`, `"circuit breaker"`...
    layer: &'static str,
    /// What the layer does while it leaves Redis alone, for the logs.
    meanwhile: &'static str,
    threshold: u32,
    base_backoff: Duration,
    max_backoff: Duration,
    failures: AtomicU32,
    /// Local-clock nanoseconds until which Redis is left alone; 0 while healthy.
    open_until: AtomicU64,
    probing: AtomicBool,
    /// The current back-off, doubled by each failed probe. Touched only on transitions.
    backoff: Mutex<Duration>,
    /// Times Redis began to be left alone.
    backoffs: AtomicU64,
}

impl Health {
    /// A health for `layer`'s calls, which does `meanwhile` while Redis is left alone: after
    /// `threshold` consecutive outages, a back-off from `base_backoff` doubling up to
    /// `max_backoff`.
    pub(crate) fn new(
        layer: &'static str,
        meanwhile: &'static str,
        threshold: u32,
        base_backoff: Duration,
        max_backoff: Duration,
    ) -> Self {
        Self {
            layer,
            meanwhile,
            threshold,
            base_backoff,
            max_backoff,
            failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            probing: AtomicBool::new(false),
            backoff: Mutex::new(base_backoff),
            backoffs: AtomicU64::new(0),
        }
    }

    /// Times Redis began to be left alone after failures.
    pub(crate) fn backoffs(&self) -> u64 {
        self.backoffs.load(Ordering::Relaxed)
    }

    pub(crate) fn permit(&self, now_ns: u64) -> Permit {
        let until = self.open_until.load(Ordering::Acquire);
        if until == 0 {
            return Permit::Call;
        }
        if now_ns < until {
            return Permit::Skip;
        }
        match self
            .probing
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => Permit::Probe,
            Err(_) => Permit::Skip,
        }
    }

    /// True while decisions bypass Redis.
    pub(crate) fn is_backing_off(&self) -> bool {
        self.open_until.load(Ordering::Acquire) != 0
    }

    /// Only the probe closes the breaker: a late answer to a call sent before it opened says
    /// little about Redis now, and would make it flap.
    pub(crate) fn succeeded(&self, permit: Permit) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
        if permit == Permit::Probe {
            if self.open_until.swap(0, Ordering::AcqRel) != 0 {
                *self.lock_backoff() = self.base_backoff;
                tracing::info!(
                    layer = self.layer,
                    "redis reachable again: state is shared once more"
                );
            }
            self.probing.store(false, Ordering::Release);
        }
    }

    /// The probe was dropped before it ended (its caller went away): let the next decision
    /// probe instead, without waiting out another back-off.
    pub(crate) fn abandoned(&self) {
        self.probing.store(false, Ordering::Release);
    }

    pub(crate) fn failed(&self, permit: Permit, now_ns: u64, reason: &dyn std::fmt::Display) {
        let failures = self
            .failures
            .fetch_add(1, Ordering::AcqRel)
            .saturating_add(1);
        match permit {
            Permit::Probe => {
                let (before, backoff) = {
                    let mut backoff = self.lock_backoff();
                    let before = *backoff;
                    *backoff = backoff.saturating_mul(2).min(self.max_backoff);
                    (before, *backoff)
                };
                self.open_until.store(
                    now_ns.saturating_add(nanos(backoff)).max(1),
                    Ordering::Release,
                );
                self.probing.store(false, Ordering::Release);
                // Said while the back-off grows; once at its cap, every failed probe would
                // repeat the same line.
                if backoff != before {
                    tracing::warn!(layer = self.layer, %reason, ?backoff, "redis probe failed: {}", self.meanwhile);
                } else {
                    tracing::debug!(layer = self.layer, %reason, ?backoff, "redis probe failed: {}", self.meanwhile);
                }
            }
            Permit::Call if failures >= self.threshold => {
                let backoff = *self.lock_backoff();
                let until = now_ns.saturating_add(nanos(backoff)).max(1);
                if self
                    .open_until
                    .compare_exchange(0, until, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    self.backoffs.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        layer = self.layer,
                        %reason,
                        failures,
                        ?backoff,
                        "redis failing: {} until a probe succeeds",
                        self.meanwhile
                    );
                }
            }
            _ => {}
        }
    }

    fn lock_backoff(&self) -> std::sync::MutexGuard<'_, Duration> {
        self.backoff.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn nanos(d: Duration) -> u64 {
    crate::clock::duration_to_nanos(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn opens_after_threshold_probes_once_and_closes_on_success() {
        let h = Health::new(
            "test",
            "testing",
            3,
            Duration::from_secs(1),
            Duration::from_secs(4),
        );
        for _ in 0..2 {
            assert_eq!(h.permit(0), Permit::Call);
            h.failed(Permit::Call, 0, &"down");
        }
        assert_eq!(h.permit(0), Permit::Call);
        h.failed(Permit::Call, 0, &"down");
        assert_eq!(h.permit(0), Permit::Skip);
        assert_eq!(h.permit(S - 1), Permit::Skip);
        assert_eq!(h.permit(S), Permit::Probe);
        assert_eq!(h.permit(S), Permit::Skip, "one probe at a time");
        h.failed(Permit::Probe, S, &"down");
        assert_eq!(h.permit(2 * S), Permit::Skip, "back-off doubled to 2s");
        assert_eq!(h.permit(3 * S), Permit::Probe);
        h.succeeded(Permit::Probe);
        assert_eq!(h.permit(3 * S), Permit::Call);
        assert!(!h.is_backing_off());
    }

    #[test]
    fn an_abandoned_probe_frees_the_slot() {
        let h = Health::new(
            "test",
            "testing",
            1,
            Duration::from_secs(1),
            Duration::from_secs(4),
        );
        h.failed(Permit::Call, 0, &"down");
        assert_eq!(h.permit(S), Permit::Probe);
        h.abandoned();
        assert_eq!(h.permit(S), Permit::Probe, "the next decision probes");
    }

    #[test]
    fn only_the_probe_closes_it() {
        let h = Health::new(
            "test",
            "testing",
            1,
            Duration::from_secs(1),
            Duration::from_secs(4),
        );
        h.failed(Permit::Call, 0, &"down");
        h.succeeded(Permit::Call); // a late answer to a call sent before the trip
        assert!(h.is_backing_off());
        assert_eq!(h.permit(S / 2), Permit::Skip);
    }

    #[test]
    fn a_huge_backoff_saturates_instead_of_overflowing() {
        let h = Health::new("test", "testing", 1, Duration::MAX, Duration::MAX);
        h.failed(Permit::Call, 0, &"down");
        h.failed(Permit::Probe, 0, &"down");
        assert!(h.is_backing_off());
    }

    #[test]
    fn a_success_resets_the_count_of_consecutive_failures() {
        let h = Health::new(
            "test",
            "testing",
            2,
            Duration::from_secs(1),
            Duration::from_secs(4),
        );
        h.failed(Permit::Call, 0, &"x");
        h.succeeded(Permit::Call);
        h.failed(Permit::Call, 0, &"x");
        assert_eq!(h.permit(0), Permit::Call);
    }

    #[test]
    fn back_off_is_capped_and_reset_after_recovery() {
        let h = Health::new(
            "test",
            "testing",
            1,
            Duration::from_secs(1),
            Duration::from_secs(2),
        );
        h.failed(Permit::Call, 0, &"x");
        for probe_at in [S, 3 * S, 5 * S] {
            assert_eq!(h.permit(probe_at), Permit::Probe);
            h.failed(Permit::Probe, probe_at, &"x");
        }
        assert_eq!(h.permit(7 * S - 1), Permit::Skip);
        assert_eq!(h.permit(7 * S), Permit::Probe);
        h.succeeded(Permit::Probe);
        h.failed(Permit::Call, 8 * S, &"x");
        assert_eq!(
            h.permit(9 * S - 1),
            Permit::Skip,
            "back to the base back-off"
        );
        assert_eq!(h.permit(9 * S), Permit::Probe);
    }
}
