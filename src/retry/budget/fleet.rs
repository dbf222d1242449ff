//! A retry budget the fleet shares through Redis (feature `redis`): the local side.
//!
//! No request waits on Redis. Each instance counts its requests and retries in memory, as a
//! budget in memory does, and spends a share of the fleet's allowance that it holds locally.
//! A sync task tells the fleet this instance's running totals every interval (one call of
//! `budget.lua`), and the script replaces its share: what the fleet has left, split in
//! proportion to each instance's requests (plus one, so that a quiet fleet splits the floor
//! evenly), never more than the other instances' shares leave. Shares are leases: reported
//! and granted retries together never exceed the allowance, so the fleet together retries at
//! most its ratio of the fleet's requests plus one floor, however many instances there are.
//!
//! While Redis cannot be reached the instance decides alone, from its own window, with its
//! part of the floor (the floor divided by the instances last seen): the fallback, logged
//! once at `warn` when it begins and at `info` when it ends, and counted in [`FleetStats`].

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use super::window::{Window, SLOTS};
use crate::error::ConfigError;
use crate::key::Key;
use crate::redis::{
    instance_id, integer_list, BatchSync, CallError, FleetStats, Health, Permit, Round, Script,
    SyncCounters, SyncSettings, SyncTask,
};

const SCRIPT: &str = include_str!("budget.lua");

/// The fleet's totals over the window, as the script answers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FleetTotals {
    deposits: u64,
    withdrawals: u64,
    instances: u64,
    /// This instance's new share.
    grant: u64,
}

/// The link between one budget (all its clones) and the fleet's.
pub(crate) struct BudgetLink {
    settings: SyncSettings,
    /// `{prefix:global}:rb`.
    key: Vec<u8>,
    script: Script,
    instance: String,
    /// ARGV 7 to 12: slot length, slots, TTL, how long an instance counts, ratio, floor.
    shape: [String; 6],
    window: OnceLock<Weak<Window>>,
    task: SyncTask,
    health: Health,
    counters: SyncCounters,
    /// Running totals since the budget was made: what the fleet is told.
    deposits: AtomicU64,
    withdrawals: AtomicU64,
    /// The totals of the last report Redis answered.
    acked: Mutex<(u64, u64)>,
    /// The share of the fleet's allowance still to spend here (negative: overspent since the
    /// share was computed).
    share: AtomicI64,
    /// Whether a share was ever granted.
    granted: AtomicBool,
    /// Instances that reported within the window, at the last sync (at least 1).
    instances: AtomicU64,
}

impl fmt::Debug for BudgetLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BudgetLink")
            .field("prefix", &self.settings.prefix)
            .field("interval", &self.settings.interval)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl BudgetLink {
    /// The link for a budget whose window is `window` long, with `ratio` and `floor`.
    pub(super) fn new(
        settings: SyncSettings,
        window: Duration,
        ratio: f64,
        floor: u64,
    ) -> Result<Self, ConfigError> {
        settings.check()?;
        let names = settings.redis.key_names(settings.prefix.clone());
        let mut key = names.tagged(&Key::Global);
        key.extend_from_slice(b"rb");
        let slot_us = (window.as_micros() / u128::from(SLOTS)).max(1);
        // The hash outlives its window and a few missed syncs; every sync renews it.
        let ttl = window
            .max(settings.interval.saturating_mul(10))
            .saturating_mul(2);
        let interval = settings.interval;
        // An instance not heard from for three intervals holds no share any more.
        let live = interval.saturating_mul(3).max(window / SLOTS as u32);
        Ok(Self {
            key,
            script: Script::new(SCRIPT),
            instance: instance_id(),
            shape: [
                slot_us.to_string(),
                SLOTS.to_string(),
                ttl.as_millis().max(1).to_string(),
                live.as_micros().to_string(),
                ratio.to_string(),
                floor.to_string(),
            ],
            window: OnceLock::new(),
            task: SyncTask::new(interval),
            // The first failed call makes the instance decide alone; it tries Redis again at
            // the next interval's round.
            health: Health::new("retry budget", "deciding locally", 1, interval, interval),
            counters: SyncCounters::default(),
            deposits: AtomicU64::new(0),
            withdrawals: AtomicU64::new(0),
            acked: Mutex::new((0, 0)),
            share: AtomicI64::new(0),
            granted: AtomicBool::new(false),
            instances: AtomicU64::new(1),
            settings,
        })
    }

    /// Hands the link its window and starts the sync task on the current Tokio runtime.
    pub(super) fn start(self: &Arc<Self>, window: &Arc<Window>) -> Result<(), ConfigError> {
        let _ = self.window.set(Arc::downgrade(window));
        self.task.start(Arc::downgrade(self))
    }

    /// True while the local share decides: one was granted and Redis is reachable.
    #[inline]
    pub(super) fn holds_share(&self) -> bool {
        self.granted.load(Ordering::Acquire) && !self.health.is_backing_off()
    }

    #[inline]
    pub(super) fn deposited(&self) {
        self.deposits.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn withdrew(&self) {
        self.withdrawals.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes one retry from the local share.
    pub(super) fn try_withdraw(&self) -> bool {
        self.share
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                (left > 0).then(|| left - 1)
            })
            .is_ok()
    }

    pub(super) fn available(&self) -> u64 {
        u64::try_from(self.share.load(Ordering::Acquire)).unwrap_or(0)
    }

    /// This instance's part of the fleet's floor, for deciding alone.
    pub(super) fn floor_share(&self, floor: u64) -> u64 {
        floor / self.instances.load(Ordering::Relaxed).max(1)
    }

    pub(super) fn stats(&self) -> FleetStats {
        self.counters.stats(&self.health)
    }

    fn lock_acked(&self) -> std::sync::MutexGuard<'_, (u64, u64)> {
        // Two numbers, always written whole: a poisoned lock still holds a consistent pair.
        self.acked
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// One sync now: `None` when the budget is gone.
    pub(super) async fn sync_now(self: &Arc<Self>) -> Option<Result<(), CallError>> {
        let window = self.window.get()?.upgrade()?;
        let _one_at_a_time = self.task.exclusive().await;
        let deposits = self.deposits.load(Ordering::Acquire);
        let withdrawals = self.withdrawals.load(Ordering::Acquire);
        let local_deposits = window.local_deposits();
        let acked = *self.lock_acked();
        match self
            .call([deposits, withdrawals, acked.0, acked.1, local_deposits])
            .await
        {
            Ok(fleet) => {
                self.counters.answered();
                *self.lock_acked() = (deposits, withdrawals);
                let share = fleet.grant;
                // Retries made while the call was out were not in the fleet's totals.
                let since = self
                    .withdrawals
                    .load(Ordering::Acquire)
                    .saturating_sub(withdrawals);
                let share = i64::try_from(share).unwrap_or(i64::MAX);
                self.share.store(
                    share.saturating_sub(i64::try_from(since).unwrap_or(i64::MAX)),
                    Ordering::Release,
                );
                self.instances
                    .store(fleet.instances.max(1), Ordering::Relaxed);
                self.granted.store(true, Ordering::Release);
                // Each round is a probe of its own: one that got an answer ends the fallback.
                self.health.succeeded(Permit::Probe);
                tracing::debug!(
                    fleet_requests = fleet.deposits,
                    fleet_retries = fleet.withdrawals,
                    instances = fleet.instances,
                    share,
                    "retry budget: synced with the fleet"
                );
                Some(Ok(()))
            }
            Err(err) => {
                self.counters.failed(&err);
                let now = u64::try_from(window.clock.now().as_nanos()).unwrap_or(u64::MAX);
                self.health.failed(Permit::Call, now, &err);
                Some(Err(err))
            }
        }
    }

    /// ARGV 2 to 6: running totals, acknowledged totals, deposits over the window.
    async fn call(&self, report: [u64; 5]) -> Result<FleetTotals, CallError> {
        let value = self
            .script
            .call(
                &self.settings.redis,
                self.settings.deadline,
                &[&self.key],
                &|cmd| {
                    cmd.arg(self.instance.as_str());
                    for number in report {
                        cmd.arg(number);
                    }
                    for arg in &self.shape {
                        cmd.arg(arg.as_str());
                    }
                    // ARGV 13, a fixed time, is for the script's own tests.
                    cmd.arg("");
                },
            )
            .await?;
        let numbers = integer_list(value).ok_or_else(|| CallError::bad_reply("retry-budget"))?;
        let [deposits, withdrawals, instances, grant] = *numbers.as_slice() else {
            return Err(CallError::bad_reply("retry-budget"));
        };
        Ok(FleetTotals {
            deposits,
            withdrawals,
            instances,
            grant,
        })
    }
}

impl BatchSync for BudgetLink {
    async fn round(self: Arc<Self>, _round: Round) -> bool {
        self.sync_now().await.is_some()
    }

    fn backing_off(&self) -> bool {
        self.health.is_backing_off()
    }
}
