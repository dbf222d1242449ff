//! How a circuit follows the fleet (feature `redis`): what a sync reports, and the fleet's
//! answer applied to the local state machine.

use std::sync::atomic::Ordering;

use std::sync::Arc;

use super::{generation_of, probe_tag, state_of, Circuit, COUNT_MASK, FREE, HALF_OPEN, OPEN};
use crate::circuit_breaker::fleet::{FleetLink, FleetView, Report};
use crate::clock::duration_to_nanos;

impl Circuit {
    pub(crate) fn fleet_link(&self) -> Option<&Arc<FleetLink>> {
        self.config.fleet.as_ref()
    }

    /// Whether this circuit asked for a sync since the last; clears the request.
    pub(crate) fn take_due(&self) -> bool {
        self.tally.as_ref().is_some_and(|tally| tally.take_due())
    }

    /// What to tell the fleet: the outcomes since the last report that reached it.
    pub(crate) fn fleet_report(&self) -> Option<Report> {
        let tally = self.tally.as_ref()?;
        let word = self.word.load(Ordering::Acquire);
        let half_open = state_of(word) == HALF_OPEN && self.forced.load(Ordering::Acquire) == FREE;
        let probes = self.probes.load(Ordering::Acquire);
        let in_flight =
            probes & !COUNT_MASK == probe_tag(generation_of(word)) && probes & COUNT_MASK > 0;
        Some(tally.report(
            self.consecutive.load(Ordering::Acquire),
            half_open,
            in_flight,
        ))
    }

    /// Follows the fleet's state (a forced circuit keeps its force). A trip or failed probe
    /// not yet told to the fleet keeps this circuit open whatever the fleet said before it.
    pub(crate) fn follow(&self, view: &FleetView) {
        let Some(tally) = &self.tally else { return };
        tally.set_generation(view.generation);
        if self.forced.load(Ordering::Acquire) != FREE {
            return;
        }
        let now = self.now_ns();
        let word = self.word.load(Ordering::Acquire);
        let local = state_of(word);
        let fleet = view.state;
        if local == OPEN && fleet != OPEN && tally.trip_pending() {
            return;
        }
        // The fleet's open time, on this instance's clock.
        let until = now.saturating_add(duration_to_nanos(view.open_left));
        if fleet != local {
            self.transition_to(Some(word), fleet, until, None);
        }
        match fleet {
            // Already open here (a trip of its own): the fleet's time is the one to keep.
            OPEN if state_of(self.word.load(Ordering::Acquire)) == OPEN => {
                self.open_until.store(until, Ordering::Release);
            }
            HALF_OPEN => {
                // Probe no longer than the lease surely lasts: what is left of it less a
                // margin, counted from before the call that got it (the server granted it
                // later, so it ends later).
                let safe = view.lease_left.saturating_sub(view.lease_margin);
                let cap = if safe.is_zero() {
                    0
                } else {
                    self.config.half_open_probes
                };
                self.probe_cap.store(cap, Ordering::Release);
                let until = view.asked_at_ns.saturating_add(duration_to_nanos(safe));
                self.cap_until.store(until, Ordering::Release);
            }
            _ => {}
        }
    }

    pub(crate) fn tally_commit(&self, report: &Report) {
        if let Some(tally) = &self.tally {
            tally.commit(report);
        }
    }

    pub(crate) fn tally_restore(&self, report: &Report) {
        if let Some(tally) = &self.tally {
            tally.restore(report);
        }
    }

    /// Redis could not be reached: once any lease granted before has surely run out, probe on
    /// this instance's own bound.
    pub(crate) fn fleet_unreachable(&self) {
        if self
            .config
            .fleet
            .as_ref()
            .is_some_and(|link| link.may_probe_alone(self.now_ns()))
        {
            self.probe_cap
                .store(self.config.half_open_probes, Ordering::Release);
            self.cap_until.store(u64::MAX, Ordering::Release);
        }
    }

    pub(crate) fn now_nanos(&self) -> u64 {
        self.now_ns()
    }
}
