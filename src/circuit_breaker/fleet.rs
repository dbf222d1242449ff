//! A breaker the fleet shares through Redis (feature `redis`): the local side.
//!
//! The request path never waits on Redis. Every call is admitted or refused by the local
//! circuit, exactly as in memory, and its outcome is tallied. One sync task per layer sends
//! each circuit's tally to the fleet's state machine (one Lua script call per key:
//! `backend/redis/lua/breaker.lua`) every `sync_interval`, and at once when this instance trips,
//! a probe ends, or a circuit enters half-open; the script answers with the fleet's state, and
//! the local circuit follows it. In half-open only the instance holding the fleet's probe lease
//! probes, so the fleet as a whole runs at most `half_open_probes` probes at once.
//!
//! While Redis cannot be reached (down, or slower than the deadline) the local circuit decides
//! alone, with its own trips and its own probes: the fallback, logged once at `warn` when it
//! begins and at `info` when it ends, and counted in [`FleetStats`].

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use tokio::sync::Notify;

use super::circuit::Circuit;
use super::keyed::Circuits;
use crate::backend::redis::BreakerSync;
use crate::backend::BackendError;
use crate::counter::StripedCounts;
use crate::error::ConfigError;
use crate::key::Key;

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

/// At most this many keys are synced at once by a keyed layer.
const CONCURRENT_SYNCS: usize = 32;

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
    pub(super) fn outcome(&self, failure: bool, slow: bool) {
        self.outcomes.bump(match (failure, slow) {
            (false, false) => GOOD,
            (true, false) => FAILED,
            (false, true) => SLOW,
            (true, true) => SLOW_FAILED,
        });
    }

    pub(super) fn probe(&self, bad: bool) {
        if bad {
            self.probe_failed.store(true, Ordering::Release);
        } else {
            self.probe_successes.fetch_add(1, Ordering::AcqRel);
        }
    }

    pub(super) fn tripped(&self) {
        self.tripped.store(true, Ordering::Release);
    }

    pub(super) fn want_to_probe(&self) {
        if !self.wants_probe.load(Ordering::Relaxed) {
            self.wants_probe.store(true, Ordering::Release);
        }
    }

    pub(super) fn mark_due(&self) {
        self.due.store(true, Ordering::Release);
    }

    pub(super) fn take_due(&self) -> bool {
        self.due.swap(false, Ordering::AcqRel)
    }

    /// The fleet has heard everything this circuit saw: forgetting it loses nothing.
    pub(super) fn is_told(&self) -> bool {
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
    pub(super) fn trip_pending(&self) -> bool {
        self.tripped.load(Ordering::Acquire) || self.probe_failed.load(Ordering::Acquire)
    }

    pub(super) fn set_generation(&self, generation: u64) {
        self.generation.store(generation, Ordering::Release);
    }

    pub(super) fn report(&self, run: u32, half_open: bool, probing: bool) -> Report {
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
    pub(super) fn commit(&self, report: &Report) {
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
    pub(super) fn restore(&self, report: &Report) {
        if report.lease == LeaseWish::Want {
            self.want_to_probe();
        }
    }
}

impl Tally {
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

/// How a fleet-shared breaker's syncs with Redis went; from
/// [`CircuitBreakerLayer::fleet_stats`](super::CircuitBreakerLayer::fleet_stats).
///
/// ```
/// let stats = tower_bulwark::circuit_breaker::FleetStats::default();
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
    /// Times the breaker fell back to deciding alone.
    pub fallbacks: u64,
    /// Deciding alone right now: the last sync could not reach Redis.
    pub in_fallback: bool,
}

/// What trips and follows: one circuit, or a keyed layer's circuits.
pub(crate) enum Source {
    One(Weak<Circuit>),
    Keyed(Weak<Circuits>),
}

/// The link between a layer's circuits and the fleet: shared by the circuits (through their
/// configuration) and the sync task.
pub(crate) struct FleetLink {
    sync: BreakerSync,
    interval: Duration,
    source: OnceLock<Source>,
    /// One sync round at a time (the task's, or an explicit `sync_fleet`): two rounds at once
    /// would send the same outcomes twice.
    round: tokio::sync::Mutex<()>,
    /// Set by the round's first failed call: the rest of the round does not wait on Redis.
    round_failed: AtomicBool,
    /// Shared with the sync task, which holds the link only weakly.
    wake: Arc<Notify>,
    fallback: AtomicBool,
    /// How long a probe lease lasts in Redis.
    lease: Duration,
    /// Local clock nanoseconds of the last call Redis answered (0: none yet).
    last_ok_ns: AtomicU64,
    syncs: AtomicU64,
    errors: AtomicU64,
    timeouts: AtomicU64,
    fallbacks: AtomicU64,
}

impl fmt::Debug for FleetLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FleetLink")
            .field("interval", &self.interval)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// Which circuits a round syncs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Which {
    Every,
    Due,
}

/// Why a sync call failed.
#[derive(Debug)]
pub(crate) enum SyncError {
    Timeout,
    Redis(BackendError),
}

impl FleetLink {
    pub(crate) fn new(sync: BreakerSync, interval: Duration) -> Self {
        Self {
            sync,
            interval,
            source: OnceLock::new(),
            round: tokio::sync::Mutex::new(()),
            round_failed: AtomicBool::new(false),
            wake: Arc::new(Notify::new()),
            fallback: AtomicBool::new(false),
            lease: interval.saturating_mul(LEASE_INTERVALS),
            last_ok_ns: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            fallbacks: AtomicU64::new(0),
        }
    }

    /// Asks the sync task for a sync now (at most one per `min_gap`).
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }

    pub(crate) fn in_fallback(&self) -> bool {
        self.fallback.load(Ordering::Acquire)
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
        FleetStats {
            syncs: self.syncs.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            timeouts: self.timeouts.load(Ordering::Relaxed),
            fallbacks: self.fallbacks.load(Ordering::Relaxed),
            in_fallback: self.in_fallback(),
        }
    }

    /// Hands the link its circuits and starts the sync task on the current Tokio runtime.
    pub(crate) fn start(self: &Arc<Self>, source: Source) -> Result<(), ConfigError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            ConfigError::new(
                "backend",
                "a breaker shared through redis must be built inside a Tokio runtime (it starts a sync task)",
            )
        })?;
        let _ = self.source.set(source);
        runtime.spawn(run(Arc::downgrade(self), self.wake.clone(), self.interval));
        Ok(())
    }

    fn circuits(&self) -> Option<Vec<(Option<Key>, Arc<Circuit>)>> {
        match self.source.get()? {
            Source::One(circuit) => Some(vec![(Some(Key::Global), circuit.upgrade()?)]),
            Source::Keyed(circuits) => Some(circuits.upgrade()?.snapshot()),
        }
    }

    /// Syncs every circuit once (`Every`), or those that asked for it since the last round
    /// (`Due`: a woken round, which must not cost a call per key each time one key trips).
    /// `None` when the layer is gone; else the first error, if any.
    pub(crate) async fn round(self: &Arc<Self>, which: Which) -> Option<Result<(), BackendError>> {
        let mut circuits = self.circuits()?;
        let _one_at_a_time = self.round.lock().await;
        // Every circuit is synced either way: what they asked for is done.
        circuits.retain(|(_, circuit)| circuit.take_due() || which == Which::Every);
        let synced = circuits.len();
        self.round_failed.store(false, Ordering::Release);
        let mut first_error = None;
        let mut answered = false;
        let mut note = |result: Result<bool, SyncError>| match result {
            Ok(called) => answered |= called,
            Err(err) => {
                first_error.get_or_insert(err);
            }
        };
        if circuits.len() == 1 {
            for (key, circuit) in circuits {
                note(self.sync_one(key, circuit).await);
            }
        } else {
            let mut running = tokio::task::JoinSet::new();
            for (key, circuit) in circuits {
                while running.len() >= CONCURRENT_SYNCS {
                    if let Some(Ok(result)) = running.join_next().await {
                        note(result);
                    }
                }
                let link = self.clone();
                running.spawn(async move { link.sync_one(key, circuit).await });
            }
            while let Some(done) = running.join_next().await {
                if let Ok(result) = done {
                    note(result);
                }
            }
        }
        tracing::debug!(
            circuits = synced,
            every = which == Which::Every,
            failed = first_error.is_some(),
            "circuit breaker: sync round with the fleet"
        );
        Some(self.settle_round(first_error, answered))
    }

    /// Syncs one circuit: `Ok(true)` when Redis answered, `Ok(false)` when it was not asked.
    async fn sync_one(&self, key: Option<Key>, circuit: Arc<Circuit>) -> Result<bool, SyncError> {
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
                self.syncs.fetch_add(1, Ordering::Relaxed);
                self.last_ok_ns.fetch_max(asked_at_ns, Ordering::AcqRel);
                view.asked_at_ns = asked_at_ns;
                view.lease_margin = self.interval;
                circuit.tally_commit(&report);
                circuit.follow(&view);
                Ok(true)
            }
            Err(err) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                if matches!(err, SyncError::Timeout) {
                    self.timeouts.fetch_add(1, Ordering::Relaxed);
                }
                self.round_failed.store(true, Ordering::Release);
                // Fall back now, not at the end of the round.
                let err = self.enter_fallback(err);
                unreachable(&circuit);
                Err(SyncError::Redis(err))
            }
        }
    }

    /// Decides alone from now on, saying so once.
    fn enter_fallback(&self, err: SyncError) -> BackendError {
        let err = match err {
            SyncError::Timeout => BackendError::new(format!(
                "redis did not answer within the deadline ({:?})",
                self.sync.deadline()
            )),
            SyncError::Redis(err) => err,
        };
        if !self.fallback.swap(true, Ordering::AcqRel) {
            self.fallbacks.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                error = %err,
                "circuit breaker: cannot sync with redis, deciding locally"
            );
        }
        err
    }

    /// Enters or leaves the fallback after a round, saying so once. Only a round in which
    /// Redis answered ends the fallback (a woken round may have had nothing to sync).
    fn settle_round(&self, error: Option<SyncError>, answered: bool) -> Result<(), BackendError> {
        match error {
            None if !answered => Ok(()),
            None => {
                if self.fallback.swap(false, Ordering::AcqRel) {
                    tracing::info!("circuit breaker: redis reachable again, following the fleet");
                }
                Ok(())
            }
            Some(err) => Err(self.enter_fallback(err)),
        }
    }
}

/// How a layer's syncs went (`None`: kept in memory).
pub(crate) fn stats_of(circuit: &Circuit) -> Option<FleetStats> {
    circuit.fleet_link().map(|link| link.stats())
}

/// One sync round now (nothing to do in memory).
pub(crate) async fn sync_now(circuit: &Circuit) -> Result<(), BackendError> {
    match circuit.fleet_link() {
        Some(link) => link.round(Which::Every).await.unwrap_or(Ok(())),
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

impl Drop for FleetLink {
    fn drop(&mut self) {
        // The layer is gone: wake the sync task so that it ends now, not an interval later.
        self.wake.notify_one();
    }
}

/// The sync task: a round every interval, or sooner when woken (then after a pause of a
/// tenth of the interval, at most 10 ms, so a burst of wakes makes one round; not while
/// deciding alone), until the layer is dropped. It holds the link only while a round runs.
async fn run(link: Weak<FleetLink>, wake: Arc<Notify>, interval: Duration) {
    let pause = (interval / 10).min(Duration::from_millis(10));
    let mut which = Which::Every;
    let mut next_full = tokio::time::Instant::now();
    loop {
        let Some(strong) = link.upgrade() else { return };
        if which == Which::Every {
            next_full = tokio::time::Instant::now() + interval;
        }
        // Deciding alone, only the interval's rounds try Redis (and the first failed call
        // ends one): a back-off of one interval, however many trips or new keys wake the task.
        let try_redis = which == Which::Every || !strong.in_fallback();
        if try_redis && strong.round(which).await.is_none() {
            return;
        }
        drop(strong);
        // Woken rounds in between do not push the next full one back.
        which = match tokio::time::timeout_at(next_full, wake.notified()).await {
            Ok(()) => {
                tokio::time::sleep(pause).await;
                Which::Due
            }
            Err(_) => Which::Every,
        };
    }
}
