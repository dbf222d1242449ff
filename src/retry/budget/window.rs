//! The window a budget counts in: slots of time, each with its deposits and withdrawals; a
//! slot older than the window is emptied when its turn comes again. A budget the fleet shares
//! also counts here (its fallback, and its share of the fleet's traffic), and asks its fleet
//! link first.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::clock::Clock;

/// Slots per window: the window slides by a tenth of its length.
pub(super) const SLOTS: u64 = 10;

#[derive(Debug, Default)]
struct Slot {
    /// Which slot of time (from 1) the counts belong to.
    epoch: AtomicU64,
    deposits: AtomicU64,
    withdrawals: AtomicU64,
}

pub(super) struct Window {
    slots: Box<[Slot]>,
    pub(super) slot_ns: u64,
    pub(super) ratio: f64,
    /// Retries allowed per window whatever the traffic (the fleet's, when it is shared).
    pub(super) floor: u64,
    /// The epoch in which a withdrawal was last refused (0: never).
    exhausted_at: AtomicU64,
    pub(super) clock: Arc<dyn Clock>,
    /// The fleet's share of the budget, when Redis holds it.
    #[cfg(feature = "redis")]
    pub(super) fleet: Option<Arc<super::fleet::BudgetLink>>,
}

impl Window {
    pub(super) fn new(slot_ns: u64, ratio: f64, floor: u64, clock: Arc<dyn Clock>) -> Self {
        Self {
            slots: (0..SLOTS).map(|_| Slot::default()).collect(),
            slot_ns,
            ratio,
            floor,
            exhausted_at: AtomicU64::new(0),
            clock,
            #[cfg(feature = "redis")]
            fleet: None,
        }
    }

    #[inline]
    fn epoch(&self) -> u64 {
        let now = u64::try_from(self.clock.now().as_nanos()).unwrap_or(u64::MAX);
        now / self.slot_ns + 1
    }

    /// The slot of `epoch`, emptied first if it still holds an older epoch's counts. (A
    /// count added by another thread between the swap and the reset is lost: a budget is an
    /// estimate, and no lock is worth it on every request.)
    #[inline]
    fn current(&self, epoch: u64) -> &Slot {
        let slot = &self.slots[(epoch % SLOTS) as usize];
        let seen = slot.epoch.load(Ordering::Acquire);
        if seen < epoch
            && slot
                .epoch
                .compare_exchange(seen, epoch, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            slot.deposits.store(0, Ordering::Relaxed);
            slot.withdrawals.store(0, Ordering::Relaxed);
        }
        slot
    }

    /// Deposits and withdrawals of the window ending with `epoch`.
    fn totals(&self, epoch: u64) -> (u64, u64) {
        let oldest = epoch.saturating_sub(SLOTS - 1);
        self.slots
            .iter()
            .filter(|slot| (oldest..=epoch).contains(&slot.epoch.load(Ordering::Acquire)))
            .fold((0, 0), |(d, w), slot| {
                (
                    d + slot.deposits.load(Ordering::Relaxed),
                    w + slot.withdrawals.load(Ordering::Relaxed),
                )
            })
    }

    /// Retries `deposits` and `withdrawals` leave, with `floor` whatever the traffic.
    pub(super) fn allowed(&self, floor: u64, deposits: u64, withdrawals: u64) -> u64 {
        let earned = (deposits as f64 * self.ratio) as u64;
        floor.saturating_add(earned).saturating_sub(withdrawals)
    }

    /// What this instance alone allows now: the whole floor in memory, its part of the
    /// fleet's floor while it cannot reach the fleet.
    fn local_available(&self, epoch: u64) -> u64 {
        let (deposits, withdrawals) = self.totals(epoch);
        self.allowed(self.local_floor(), deposits, withdrawals)
    }

    /// This instance's own deposits over the window.
    #[cfg(feature = "redis")]
    pub(super) fn local_deposits(&self) -> u64 {
        self.totals(self.epoch()).0
    }

    fn local_floor(&self) -> u64 {
        #[cfg(feature = "redis")]
        if let Some(fleet) = &self.fleet {
            return fleet.floor_share(self.floor);
        }
        self.floor
    }

    #[inline]
    pub(super) fn deposit(&self) {
        self.deposit_at(self.epoch());
    }

    #[inline]
    pub(super) fn deposit_and_may_retry(&self) -> bool {
        let epoch = self.epoch();
        self.deposit_at(epoch);
        self.may_retry_at(epoch)
    }

    #[inline]
    fn deposit_at(&self, epoch: u64) {
        self.current(epoch).deposits.fetch_add(1, Ordering::Relaxed);
        #[cfg(feature = "redis")]
        if let Some(fleet) = &self.fleet {
            fleet.deposited();
        }
    }

    pub(super) fn try_withdraw(&self) -> bool {
        let epoch = self.epoch();
        #[cfg(feature = "redis")]
        let granted = match self.sharing() {
            Some(fleet) => fleet.try_withdraw(),
            None => self.local_available(epoch) > 0,
        };
        #[cfg(not(feature = "redis"))]
        let granted = self.local_available(epoch) > 0;
        if !granted {
            self.exhausted_at.store(epoch, Ordering::Relaxed);
            return false;
        }
        self.current(epoch)
            .withdrawals
            .fetch_add(1, Ordering::Relaxed);
        #[cfg(feature = "redis")]
        if let Some(fleet) = &self.fleet {
            fleet.withdrew();
        }
        true
    }

    pub(super) fn available(&self) -> u64 {
        #[cfg(feature = "redis")]
        if let Some(fleet) = self.sharing() {
            return fleet.available();
        }
        self.local_available(self.epoch())
    }

    /// One load while the budget is not spent (in memory, the window is only summed in a
    /// slot in which a withdrawal was refused).
    #[cfg(test)]
    #[inline]
    pub(super) fn may_retry(&self) -> bool {
        self.may_retry_at(self.epoch())
    }

    #[inline]
    fn may_retry_at(&self, epoch: u64) -> bool {
        #[cfg(feature = "redis")]
        if let Some(fleet) = self.sharing() {
            return fleet.available() > 0;
        }
        if self.exhausted_at.load(Ordering::Relaxed) != epoch {
            return true;
        }
        let available = self.local_available(epoch) > 0;
        if available {
            self.exhausted_at.store(0, Ordering::Relaxed);
        }
        available
    }

    /// The fleet link, while this instance holds a share of the fleet's budget; `None` in
    /// memory, before the first sync, and while Redis cannot be reached (the fallback).
    #[cfg(feature = "redis")]
    #[inline]
    fn sharing(&self) -> Option<&super::fleet::BudgetLink> {
        self.fleet.as_deref().filter(|fleet| fleet.holds_share())
    }
}
