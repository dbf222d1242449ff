//! One circuit's outcomes, counted for the fleet: what a sync reports.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::util::StripedCounts;

/// The tally's outcome kinds.
const GOOD: usize = 0;
const FAILED: usize = 1;
const SLOW: usize = 2;
const SLOW_FAILED: usize = 3;

/// A probe lease lasts this many sync intervals: a holder renews it at each sync, so it
/// survives one lost sync.
pub(crate) const LEASE_INTERVALS: u32 = 3;

/// No generation learned from the fleet yet.
const UNKNOWN: u64 = u64::MAX;

/// One circuit's outcomes, for the fleet. Reports carry running totals, and the script keeps
/// each instance's last totals: a report whose answer came too late (the script ran, the
/// deadline passed) is not counted twice when the next one carries the same outcomes.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    /// Closed-state outcomes by kind, counted since the circuit was made.
    outcomes: StripedCounts<4>,
    probe_successes: AtomicU64,
    tripped: AtomicBool,
    probe_failed: AtomicBool,
    /// A call wanted to probe (admitted, or refused for want of a slot) since the last report.
    wants_probe: AtomicBool,
    /// The fleet's generation at the last sync: outcomes since then were seen under it.
    generation: AtomicU64,
    /// Tells this circuit from an earlier one of the same key on this instance (forgotten by a
    /// keyed layer, then made again), whose totals the script still holds.
    incarnation: u64,
    /// The totals (calls, failures, slow, good, probe successes) of the last report that
    /// reached the fleet.
    acked: [AtomicU64; 5],
    /// Something happened that the fleet should hear before the next interval (a trip, a
    /// probe, half-open, a new circuit): a woken round syncs only such circuits.
    due: AtomicBool,
}

impl Tally {
    pub(crate) fn outcome(&self, failure: bool, slow: bool) {
        self.outcomes.bump(match (failure, slow) {
            (false, false) => GOOD,
            (true, false) => FAILED,
            (false, true) => SLOW,
            (true, true) => SLOW_FAILED,
        });
    }

    pub(crate) fn probe(&self, bad: bool) {
        if bad {
            self.probe_failed.store(true, Ordering::Release);
        } else {
            self.probe_successes.fetch_add(1, Ordering::AcqRel);
        }
    }

    pub(crate) fn tripped(&self) {
        self.tripped.store(true, Ordering::Release);
    }

    pub(crate) fn want_to_probe(&self) {
        if !self.wants_probe.load(Ordering::Relaxed) {
            self.wants_probe.store(true, Ordering::Release);
        }
    }

    pub(crate) fn mark_due(&self) {
        self.due.store(true, Ordering::Release);
    }

    pub(crate) fn take_due(&self) -> bool {
        self.due.swap(false, Ordering::AcqRel)
    }

    /// The fleet has heard everything this circuit saw: forgetting it loses nothing.
    pub(crate) fn is_told(&self) -> bool {
        self.totals()
            .iter()
            .zip(&self.acked)
            .all(|(total, acked)| *total == acked.load(Ordering::Acquire))
            && !self.trip_pending()
    }

    /// Calls, failures, slow, good, probe successes: since the circuit was made.
    fn totals(&self) -> [u64; 5] {
        let outcomes = self.outcomes.get();
        let o = |i: usize| outcomes[i];
        let probe_successes = self.probe_successes.load(Ordering::Acquire);
        [
            o(GOOD) + o(FAILED) + o(SLOW) + o(SLOW_FAILED),
            o(FAILED) + o(SLOW_FAILED),
            o(SLOW) + o(SLOW_FAILED),
            o(GOOD),
            probe_successes,
        ]
    }

    /// This instance opened (a trip or a failed probe) and the fleet has not heard yet.
    pub(crate) fn trip_pending(&self) -> bool {
        self.tripped.load(Ordering::Acquire) || self.probe_failed.load(Ordering::Acquire)
    }

    pub(crate) fn set_generation(&self, generation: u64) {
        self.generation.store(generation, Ordering::Release);
    }

    pub(crate) fn report(&self, run: u32, half_open: bool, probing: bool) -> Report {
        let [calls, failures, slow, good, probe_successes] = self.totals();
        let generation = self.generation.load(Ordering::Acquire);
        Report {
            incarnation: self.incarnation,
            generation: (generation != UNKNOWN).then_some(generation),
            calls,
            failures,
            slow,
            good,
            run,
            tripped: self.tripped.load(Ordering::Acquire),
            probe_successes,
            acked: std::array::from_fn(|i| self.acked[i].load(Ordering::Acquire)),
            probe_failed: self.probe_failed.load(Ordering::Acquire),
            lease: match (
                half_open,
                self.wants_probe.swap(false, Ordering::AcqRel) || probing,
            ) {
                (false, _) => LeaseWish::Release,
                (true, true) => LeaseWish::Want,
                (true, false) => LeaseWish::Keep,
            },
        }
    }

    /// The report reached the fleet: its trip or failed probe is told.
    pub(crate) fn commit(&self, report: &Report) {
        let totals = [
            report.calls,
            report.failures,
            report.slow,
            report.good,
            report.probe_successes,
        ];
        for (acked, total) in self.acked.iter().zip(totals) {
            acked.fetch_max(total, Ordering::AcqRel);
        }
        if report.tripped {
            self.tripped.store(false, Ordering::Release);
        }
        if report.probe_failed {
            self.probe_failed.store(false, Ordering::Release);
        }
    }

    /// The report did not reach the fleet: a wish to probe still stands.
    pub(crate) fn restore(&self, report: &Report) {
        if report.lease == LeaseWish::Want {
            self.want_to_probe();
        }
    }
}

impl Tally {
    /// The tally of a new circuit of a layer linked to the fleet; the new circuit asks for a
    /// sync at once, to learn the fleet's state.
    pub(crate) fn for_link(link: &super::FleetLink) -> Self {
        link.wake();
        Self::new()
    }

    pub(crate) fn new() -> Self {
        static INCARNATIONS: AtomicU64 = AtomicU64::new(0);
        Self {
            generation: AtomicU64::new(UNKNOWN),
            incarnation: INCARNATIONS.fetch_add(1, Ordering::Relaxed),
            due: AtomicBool::new(true),
            ..Self::default()
        }
    }
}

/// What one circuit tells the fleet at a sync: running totals since the circuit was made.
#[derive(Debug, Clone)]
pub(crate) struct Report {
    /// Which circuit of this instance the totals are of.
    pub(crate) incarnation: u64,
    /// The fleet generation the outcomes since the last sync were seen under (`None` before
    /// the first sync).
    pub(crate) generation: Option<u64>,
    pub(crate) calls: u64,
    pub(crate) failures: u64,
    pub(crate) slow: u64,
    /// Calls neither failed nor slow.
    pub(crate) good: u64,
    /// This instance's current run of failed or slow calls.
    pub(crate) run: u32,
    pub(crate) tripped: bool,
    pub(crate) probe_successes: u64,
    pub(crate) probe_failed: bool,
    pub(crate) lease: LeaseWish,
    /// The totals (calls, failures, slow, good, probe successes) the fleet last confirmed:
    /// what the script counts from if it lost this instance's.
    pub(crate) acked: [u64; 5],
}

/// What an instance asks of the half-open probe lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LeaseWish {
    /// Calls want to probe here (or a probe is running): take or renew it.
    Want,
    /// Half-open, but nothing to probe: keep it if held, without renewing it.
    Keep,
    /// Not half-open here: give it back if held.
    Release,
}
