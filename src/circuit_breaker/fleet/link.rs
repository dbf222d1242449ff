//! The link between a layer's circuits and the fleet: the sync rounds, the fallback, the stats.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use super::redis::BreakerSync;
use crate::circuit_breaker::circuit::Circuit;
use crate::circuit_breaker::keyed::Circuits;
use crate::error::ConfigError;
use crate::key::Key;
use crate::redis::{
    each_bounded, BatchSync, CallError, FleetStats, Health, Permit, Round, SyncCounters, SyncTask,
};
use crate::BackendError;

/// The fleet's answer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FleetView {
    /// 0 closed, 1 open, 2 half-open: the circuit's own encoding.
    pub(crate) state: u64,
    pub(crate) generation: u64,
    pub(crate) open_left: Duration,
    /// What is left of this instance's probe lease (zero: not its own).
    pub(crate) lease_left: Duration,
    /// Local clock nanoseconds just before the call that got this answer.
    pub(crate) asked_at_ns: u64,
    /// What this instance does not rely on at the end of a lease (a late sync, a slow
    /// clock): one interval.
    pub(crate) lease_margin: Duration,
}

/// What trips and follows: one circuit, or a keyed layer's circuits.
pub(crate) enum Source {
    One(Weak<Circuit>),
    Keyed(Weak<Circuits>),
}

/// At most this many keys are synced at once by a keyed layer.
const CONCURRENT_SYNCS: usize = 32;

/// The link between a layer's circuits and the fleet: shared by the circuits (through their
/// configuration) and the sync task.
pub(crate) struct FleetLink {
    sync: BreakerSync,
    task: SyncTask,
    source: OnceLock<Source>,
    /// Set by the round's first failed call: the rest of the round does not wait on Redis.
    round_failed: std::sync::atomic::AtomicBool,
    /// Whether Redis is reachable: deciding alone (the fallback) while it is left alone.
    health: Health,
    /// How long a probe lease lasts in Redis.
    lease: Duration,
    /// Local clock nanoseconds of the last call Redis answered (0: none yet).
    last_ok_ns: AtomicU64,
    counters: SyncCounters,
}

impl fmt::Debug for FleetLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FleetLink")
            .field("interval", &self.task.interval())
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl FleetLink {
    pub(crate) fn new(sync: BreakerSync, interval: Duration) -> Self {
        Self {
            sync,
            task: SyncTask::new(interval),
            source: OnceLock::new(),
            round_failed: std::sync::atomic::AtomicBool::new(false),
            // The first failed call makes the instance decide alone; it tries Redis again at
            // the next interval's round (a back-off of one interval, never longer).
            health: Health::new("circuit breaker", "deciding locally", 1, interval, interval),
            lease: interval.saturating_mul(super::tally::LEASE_INTERVALS),
            last_ok_ns: AtomicU64::new(0),
            counters: SyncCounters::default(),
        }
    }

    /// Asks the sync task for a sync now.
    pub(crate) fn wake(&self) {
        self.task.wake();
    }

    pub(crate) fn in_fallback(&self) -> bool {
        self.health.is_backing_off()
    }

    /// Deciding alone, and any lease granted before Redis was last reached has run out: this
    /// instance may probe on its own bound without a second prober somewhere else.
    pub(crate) fn may_probe_alone(&self, now_ns: u64) -> bool {
        self.in_fallback()
            && now_ns
                >= self
                    .last_ok_ns
                    .load(Ordering::Acquire)
                    .saturating_add(crate::clock::duration_to_nanos(self.lease))
    }

    pub(crate) fn stats(&self) -> FleetStats {
        self.counters.stats(&self.health)
    }

    /// Hands the link its circuits and starts the sync task on the current Tokio runtime.
    pub(crate) fn start(self: &Arc<Self>, source: Source) -> Result<(), ConfigError> {
        let _ = self.source.set(source);
        self.task.start(Arc::downgrade(self))
    }

    fn circuits(&self) -> Option<Vec<(Option<Key>, Arc<Circuit>)>> {
        match self.source.get()? {
            Source::One(circuit) => Some(vec![(Some(Key::Global), circuit.upgrade()?)]),
            Source::Keyed(circuits) => Some(circuits.upgrade()?.snapshot()),
        }
    }

    /// Syncs every circuit once (`Every`), or those that asked for it since the last round
    /// (`Due`). `None` when the layer is gone; else the first error, if any.
    pub(crate) async fn round_now(self: &Arc<Self>, round: Round) -> Option<Result<(), CallError>> {
        let mut circuits = self.circuits()?;
        let _one_at_a_time = self.task.exclusive().await;
        // Every circuit is synced either way: what they asked for is done.
        circuits.retain(|(_, circuit)| circuit.take_due() || round == Round::Every);
        let synced = circuits.len();
        self.round_failed.store(false, Ordering::Release);
        let mut first_error = None;
        let mut answered = false;
        let link = self.clone();
        each_bounded(
            circuits,
            CONCURRENT_SYNCS,
            move |(key, circuit)| {
                let link = link.clone();
                async move { link.sync_one(key, circuit).await }
            },
            |result| match result {
                Ok(called) => answered |= called,
                Err(err) => {
                    first_error.get_or_insert(err);
                }
            },
        )
        .await;
        tracing::debug!(
            circuits = synced,
            every = round == Round::Every,
            failed = first_error.is_some(),
            "circuit breaker: sync round with the fleet"
        );
        Some(self.settle_round(first_error, answered))
    }

    /// Syncs one circuit: `Ok(true)` when Redis answered, `Ok(false)` when it was not asked.
    async fn sync_one(&self, key: Option<Key>, circuit: Arc<Circuit>) -> Result<bool, CallError> {
        let Some(report) = circuit.fleet_report() else {
            return Ok(false);
        };
        let unreachable = |circuit: &Circuit| {
            circuit.tally_restore(&report);
            circuit.fleet_unreachable();
        };
        // A call of this round already failed: the rest would only wait out their deadlines.
        if self.round_failed.load(Ordering::Acquire) {
            unreachable(&circuit);
            return Ok(false);
        }
        let asked_at_ns = circuit.now_nanos();
        match self.sync.call(key.as_ref(), &report).await {
            Ok(mut view) => {
                self.counters.answered();
                self.last_ok_ns.fetch_max(asked_at_ns, Ordering::AcqRel);
                view.asked_at_ns = asked_at_ns;
                view.lease_margin = self.task.interval();
                circuit.tally_commit(&report);
                circuit.follow(&view);
                Ok(true)
            }
            Err(err) => {
                self.counters.failed(&err);
                self.round_failed.store(true, Ordering::Release);
                // Fall back now, not at the end of the round.
                self.health.failed(Permit::Call, circuit.now_nanos(), &err);
                unreachable(&circuit);
                Err(err)
            }
        }
    }

    /// Leaves the fallback after a round in which Redis answered and nothing failed (a woken
    /// round may have had nothing to sync: it proves nothing).
    fn settle_round(&self, error: Option<CallError>, answered: bool) -> Result<(), CallError> {
        match error {
            Some(err) => Err(err),
            None => {
                if answered {
                    // Each round is a probe of its own: one that got answers ends the fallback.
                    self.health.succeeded(Permit::Probe);
                }
                Ok(())
            }
        }
    }
}

impl BatchSync for FleetLink {
    async fn round(self: Arc<Self>, round: Round) -> bool {
        self.round_now(round).await.is_some()
    }

    fn backing_off(&self) -> bool {
        self.in_fallback()
    }
}

/// How a layer's syncs went (`None`: kept in memory).
pub(crate) fn stats_of(circuit: &Circuit) -> Option<FleetStats> {
    circuit.fleet_link().map(|link| link.stats())
}

/// The Redis key of `key`'s state machine, for a layer linked to the fleet.
pub(crate) fn redis_key_of(circuit: &Circuit, key: &Key) -> Option<String> {
    let name = circuit.fleet_link()?.sync.redis_key(Some(key));
    Some(String::from_utf8_lossy(&name).into_owned())
}

/// One sync round now (nothing to do in memory).
pub(crate) async fn sync_now(circuit: &Circuit) -> Result<(), BackendError> {
    match circuit.fleet_link() {
        Some(link) => Ok(link.round_now(Round::Every).await.unwrap_or(Ok(()))?),
        None => Ok(()),
    }
}

/// Starts the sync task of a one-circuit layer, if it is shared through Redis.
pub(crate) fn start_one(circuit: &Arc<Circuit>) -> Result<(), ConfigError> {
    match circuit.fleet_link() {
        Some(link) => link.start(Source::One(Arc::downgrade(circuit))),
        None => Ok(()),
    }
}

/// Starts the sync task of a keyed layer, if it is shared through Redis.
pub(crate) fn start_keyed(circuits: &Arc<Circuits>) -> Result<(), ConfigError> {
    match circuits.overflow_circuit().fleet_link() {
        Some(link) => link.start(Source::Keyed(Arc::downgrade(circuits))),
        None => Ok(()),
    }
}
