//! A sliding time window of latencies and outcomes: `slots` HDR histograms (the hdrhistogram
//! crate), each covering `window / slots` of time, reused in turn; a read merges the slots
//! still inside the window. So percentiles, the error rate and availability describe the last
//! `window` (to within one slot), not the process's whole life.

use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;

/// Latencies are kept in microseconds, 1 µs to 60 s at two significant figures (a value is
/// within 1 % of what was recorded; longer ones count as 60 s). About 20 KiB per slot.
const MAX_MICROS: u64 = 60_000_000;
const SIGNIFICANT_FIGURES: u8 = 2;

/// How a finished request counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// Answered: 1xx to 4xx (but 429).
    Served,
    /// Refused for load or rate (429).
    Refused,
    /// A server error (5xx, a failed body, a gRPC server-side code).
    Failed,
    /// Its body was dropped before its end (the client went away).
    Dropped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WindowSettings {
    pub(crate) slot_nanos: u64,
    pub(crate) slots: usize,
}

#[derive(Debug)]
struct Slot {
    /// Which slot of time this holds (`now / slot length`); a slot from the past is cleared
    /// before it is written.
    epoch: u64,
    latencies: Histogram<u32>,
    served: u64,
    refused: u64,
    failed: u64,
    dropped: u64,
}

impl Slot {
    fn new() -> Option<Self> {
        Some(Self {
            epoch: 0,
            latencies: Histogram::new_with_bounds(1, MAX_MICROS, SIGNIFICANT_FIGURES).ok()?,
            served: 0,
            refused: 0,
            failed: 0,
            dropped: 0,
        })
    }

    fn clear(&mut self, epoch: u64) {
        self.epoch = epoch;
        self.latencies.reset();
        self.served = 0;
        self.refused = 0;
        self.failed = 0;
        self.dropped = 0;
    }
}

/// One sliding window.
#[derive(Debug)]
pub(crate) struct Window {
    settings: WindowSettings,
    slots: Box<[Mutex<Option<Slot>>]>,
}

/// What a window held when it was read: percentiles, counts and rates over the time it covers.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct LatencySnapshot {
    /// The time these figures cover (the window, or less since the first request).
    pub window: Duration,
    /// Requests finished in it (served, refused, failed, dropped).
    pub count: u64,
    /// The median latency (`None` without requests).
    pub p50: Option<Duration>,
    /// The 95th percentile latency.
    pub p95: Option<Duration>,
    /// The 99th percentile latency.
    pub p99: Option<Duration>,
    /// The highest latency.
    pub max: Option<Duration>,
    /// Server errors over requests (0 without requests).
    pub error_rate: f64,
    /// Requests answered without a server error and not refused (429), over requests (1
    /// without requests). A body the client dropped counts as served.
    pub availability: f64,
    /// Requests refused with 429.
    pub refused: u64,
    /// Requests whose body the client dropped before its end.
    pub dropped: u64,
}

impl Window {
    pub(crate) fn new(settings: WindowSettings) -> Self {
        Self {
            settings,
            slots: (0..settings.slots).map(|_| Mutex::new(None)).collect(),
        }
    }

    fn epoch(&self, now: Duration) -> u64 {
        (now.as_nanos() / u128::from(self.settings.slot_nanos.max(1))) as u64
    }

    /// Records one finished request at `now` that took `latency`.
    pub(crate) fn record(&self, now: Duration, latency: Duration, ended: Ended) {
        let epoch = self.epoch(now);
        let Some(slot) = self
            .slots
            .get((epoch % self.slots.len().max(1) as u64) as usize)
        else {
            return;
        };
        // A panic elsewhere while it was held leaves counts still worth keeping.
        let mut slot = slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if slot.is_none() {
            // The tables are made on a slot's first request: an idle route costs nothing.
            *slot = Slot::new();
        }
        let Some(slot) = slot.as_mut() else { return };
        if slot.epoch < epoch {
            slot.clear(epoch);
        } else if slot.epoch > epoch {
            // A writer late by a whole window: its sample is older than the slot's.
            return;
        }
        let micros = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        slot.latencies.saturating_record(micros);
        match ended {
            Ended::Served => slot.served += 1,
            Ended::Refused => slot.refused += 1,
            Ended::Failed => slot.failed += 1,
            Ended::Dropped => slot.dropped += 1,
        }
    }

    /// The figures of the slots inside the window at `now`.
    pub(crate) fn snapshot(&self, now: Duration) -> LatencySnapshot {
        let epoch = self.epoch(now);
        let oldest = epoch.saturating_sub(self.slots.len() as u64 - 1);
        let mut merged: Option<Histogram<u32>> = None;
        let (mut served, mut refused, mut failed, mut dropped) = (0u64, 0u64, 0u64, 0u64);
        let mut first_epoch = epoch;
        for slot in self.slots.iter() {
            let slot = slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let Some(slot) = slot.as_ref() else { continue };
            if slot.epoch < oldest || slot.epoch > epoch {
                continue;
            }
            let total = slot.served + slot.refused + slot.failed + slot.dropped;
            if total == 0 {
                continue;
            }
            first_epoch = first_epoch.min(slot.epoch);
            served += slot.served;
            refused += slot.refused;
            failed += slot.failed;
            dropped += slot.dropped;
            match merged.as_mut() {
                Some(merged) => {
                    let _ = merged.add(&slot.latencies);
                }
                None => merged = Some(slot.latencies.clone()),
            }
        }
        let count = served + refused + failed + dropped;
        let at = |q: f64| {
            merged
                .as_ref()
                .filter(|h| !h.is_empty())
                .map(|h| Duration::from_micros(h.value_at_quantile(q)))
        };
        // From the start of the oldest slot with requests to now.
        let since = u128::from(first_epoch) * u128::from(self.settings.slot_nanos);
        let covered = Duration::from_nanos(
            u64::try_from(now.as_nanos().saturating_sub(since)).unwrap_or(u64::MAX),
        );
        let ratio = |n: u64| {
            if count == 0 {
                0.0
            } else {
                n as f64 / count as f64
            }
        };
        LatencySnapshot {
            window: covered,
            count,
            p50: at(0.50),
            p95: at(0.95),
            p99: at(0.99),
            max: merged
                .as_ref()
                .filter(|h| !h.is_empty())
                .map(|h| Duration::from_micros(h.max())),
            error_rate: ratio(failed),
            availability: if count == 0 {
                1.0
            } else {
                1.0 - ratio(failed + refused)
            },
            refused,
            dropped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window() -> Window {
        Window::new(WindowSettings {
            slot_nanos: 10_000_000_000,
            slots: 6,
        })
    }

    #[test]
    fn percentiles_of_a_known_distribution() {
        let w = window();
        let now = Duration::from_secs(100);
        // 1 ms to 100 ms, one each: p50 ~ 50 ms, p99 ~ 99 ms.
        for ms in 1..=100 {
            w.record(now, Duration::from_millis(ms), Ended::Served);
        }
        let s = w.snapshot(now);
        assert_eq!(s.count, 100);
        let within = |d: Option<Duration>, ms: u64| {
            let d = d.unwrap().as_micros() as f64;
            (d - ms as f64 * 1000.0).abs() <= ms as f64 * 1000.0 * 0.01
        };
        assert!(within(s.p50, 50), "{:?}", s.p50);
        assert!(within(s.p95, 95), "{:?}", s.p95);
        assert!(within(s.p99, 99), "{:?}", s.p99);
        assert_eq!(s.error_rate, 0.0);
        assert_eq!(s.availability, 1.0);
    }

    #[test]
    fn old_slots_leave_the_window() {
        let w = window();
        w.record(
            Duration::from_secs(5),
            Duration::from_millis(900),
            Ended::Failed,
        );
        w.record(
            Duration::from_secs(50),
            Duration::from_millis(1),
            Ended::Served,
        );
        let s = w.snapshot(Duration::from_secs(55));
        assert_eq!(s.count, 2);
        assert_eq!(s.error_rate, 0.5);
        // 60 s on, the first slot (0-10 s) is out of the window; its slot is reused.
        let s = w.snapshot(Duration::from_secs(65));
        assert_eq!(s.count, 1);
        assert_eq!(s.error_rate, 0.0);
        assert!(s.max.unwrap() < Duration::from_millis(2));
        w.record(
            Duration::from_secs(61),
            Duration::from_millis(3),
            Ended::Refused,
        );
        let s = w.snapshot(Duration::from_secs(65));
        assert_eq!((s.count, s.refused), (2, 1));
        assert_eq!(s.availability, 0.5);
        assert_eq!(
            s.window,
            Duration::from_secs(15),
            "from the oldest slot with requests"
        );
        let empty = w.snapshot(Duration::from_secs(1000));
        assert_eq!((empty.count, empty.p50), (0, None));
    }
}
