//! The state machine: closed → open → half-open → closed, shared by every clone of a layer.
//!
//! The state and a generation number share one atomic word, so a call reads both at once with
//! one load: the closed path is a load to admit and one atomic update to record. Transitions
//! are rare and serialized by a mutex. A call's outcome counts only in the generation it was
//! admitted in: a slow call that started while closed cannot close a breaker that has since
//! opened and gone half-open.

use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::config::{CircuitEvent, CircuitState, Config, Trip};
use super::fleet::Tally;
use super::window::{CountWindow, TimeWindow, Totals};
use crate::clock::duration_to_nanos;
use crate::util::StripedCounts;

#[cfg(feature = "redis")]
mod follow;

const CLOSED: u64 = 0;
const OPEN: u64 = 1;
const HALF_OPEN: u64 = 2;

fn state_of(word: u64) -> u64 {
    word & 3
}

fn generation_of(word: u64) -> u64 {
    word >> 2
}

fn public(state: u64) -> CircuitState {
    match state {
        OPEN => CircuitState::Open,
        HALF_OPEN => CircuitState::HalfOpen,
        _ => CircuitState::Closed,
    }
}

/// No force; forced open; forced closed.
const FREE: u8 = 0;
const FORCED_OPEN: u8 = 1;
const FORCED_CLOSED: u8 = 2;

/// How long a caller refused in half-open (every probe slot taken) is told to wait.
const HALF_OPEN_RETRY: Duration = Duration::from_secs(1);

/// A failure-rate window. The count window takes no lock; the time window's buckets move
/// with the clock and are kept under one.
enum Window {
    None,
    Count(CountWindow),
    Time(Mutex<TimeWindow>),
}

/// A circuit breaker's shared state: query it, force it, reset it. Every clone of a layer and
/// of its services shares one; get it with [`CircuitBreakerLayer::circuit`](super::CircuitBreakerLayer::circuit).
///
/// ```
/// use std::time::Duration;
/// use tower_bulwark::circuit_breaker::{CircuitBreakerLayer, CircuitState};
///
/// let layer = CircuitBreakerLayer::consecutive_failures(5).build()?;
/// let circuit = layer.circuit();
/// assert_eq!(circuit.state(), CircuitState::Closed);
/// circuit.force_open();
/// assert_eq!(circuit.state(), CircuitState::Open);
/// circuit.reset();
/// assert_eq!(circuit.state(), CircuitState::Closed);
/// # Ok::<(), tower_bulwark::ConfigError>(())
/// ```
pub struct Circuit {
    config: Config,
    /// `generation << 2 | state`.
    word: AtomicU64,
    forced: AtomicU8,
    /// Clock nanoseconds until which an open breaker refuses.
    open_until: AtomicU64,
    /// Closed, consecutive policy: failures in a row.
    consecutive: AtomicU32,
    /// Half-open: probes in flight, tagged with the generation they belong to
    /// (`generation << 32 | count`), so a slot taken or given back late, in an earlier
    /// half-open period, can never count in a later one. And successes so far.
    probes: AtomicU64,
    /// How many probes may run at once: the configured bound, or, in a fleet, 0 until this
    /// instance holds the fleet's probe lease.
    probe_cap: AtomicU32,
    /// Clock nanoseconds until which `probe_cap` holds (a fleet's lease runs out); after it,
    /// no new probe. `u64::MAX` in memory.
    cap_until: AtomicU64,
    successes: AtomicU32,
    window: Window,
    transition: Mutex<()>,
    counters: Counters,
    /// Outcomes not yet told to the fleet (a breaker shared through Redis).
    pub(super) tally: Option<Tally>,
}

/// The circuit's counters, striped together: one cache line per thread's stripe for all six
/// (a keyed layer holds thousands of circuits: six separately striped counters would cost
/// 6 KiB each).
type Counters = StripedCounts<6>;

/// Calls let through and dropped before they finished.
const CANCELLED: usize = 0;
const REJECTED: usize = 1;
const SUCCESSES: usize = 2;
const FAILURES: usize = 3;
const SLOW: usize = 4;
const OPENED: usize = 5;

/// What a [`Circuit`] has seen so far.
///
/// ```
/// let stats = tower_bulwark::circuit_breaker::CircuitStats::default();
/// assert_eq!(stats.rejected, 0);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CircuitStats {
    /// Calls let through (closed, or as half-open probes) that have finished or were cancelled:
    /// `successes + failures` plus the cancelled. (Counted when they end, so a closed call
    /// costs no extra counter.)
    pub admitted: u64,
    /// Calls refused (open, or half-open with every probe slot taken).
    pub rejected: u64,
    /// Outcomes recorded as successes.
    pub successes: u64,
    /// Outcomes recorded as failures.
    pub failures: u64,
    /// Outcomes slower than the slow-call threshold (also counted above).
    pub slow: u64,
    /// Times the breaker opened (for a breaker shared through Redis, on this instance: by
    /// its own failures or following the fleet).
    pub opened: u64,
}

impl fmt::Debug for Circuit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Circuit")
            .field("state", &self.state())
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// A call let through, to be settled with its outcome. Dropped unsettled (the call was
/// cancelled), it records nothing and gives back its half-open probe slot.
pub(crate) struct Permit {
    circuit: Arc<Circuit>,
    generation: u64,
    probe: bool,
    started_ns: u64,
    settled: bool,
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("probe", &self.probe)
            .finish_non_exhaustive()
    }
}

impl Permit {
    /// Records the call's outcome.
    #[inline]
    pub(crate) fn settle(mut self, failure: bool) {
        self.settled = true;
        let outcome = if failure {
            Outcome::Failure
        } else {
            Outcome::Success
        };
        self.circuit
            .record(self.generation, self.probe, self.started_ns, outcome);
    }
}

impl Drop for Permit {
    #[inline]
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        self.circuit.counters.bump(CANCELLED);
        // A call cancelled after running past the slow threshold (an outer timeout gave up on
        // a hung upstream) is a slow call: the very thing slow-call detection is for.
        if self.circuit.ran_slow(self.started_ns) {
            self.circuit.record(
                self.generation,
                self.probe,
                self.started_ns,
                Outcome::CancelledSlow,
            );
        } else if self.probe {
            self.circuit.release_probe(self.generation);
        }
    }
}

/// How a call ended, as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Success,
    Failure,
    /// Cancelled after the slow threshold: counts as slow, neither success nor failure.
    CancelledSlow,
}

impl Circuit {
    pub(crate) fn new(config: Config) -> Self {
        let window = match config.trip {
            Trip::Consecutive { .. } => Window::None,
            Trip::Rate {
                window_calls: Some(n),
                ..
            } => Window::Count(CountWindow::new(n)),
            Trip::Rate {
                window_period_ns, ..
            } => Window::Time(Mutex::new(TimeWindow::new(window_period_ns))),
        };
        Self {
            word: AtomicU64::new(CLOSED),
            forced: AtomicU8::new(FREE),
            open_until: AtomicU64::new(0),
            consecutive: AtomicU32::new(0),
            probes: AtomicU64::new(0),
            probe_cap: AtomicU32::new(config.half_open_probes),
            cap_until: AtomicU64::new(u64::MAX),
            successes: AtomicU32::new(0),
            window,
            transition: Mutex::new(()),
            counters: Counters::default(),
            // A new circuit learns the fleet's state at the next sync: made now (a new tally is
            // due for one).
            tally: config.fleet.as_deref().map(Tally::for_link),
            config,
        }
    }

    fn now_ns(&self) -> u64 {
        duration_to_nanos(self.config.clock.now())
    }

    /// The current state. An open breaker whose time is up reads `HalfOpen`: the next call
    /// will probe.
    ///
    /// ```
    /// use tower_bulwark::circuit_breaker::{CircuitBreakerLayer, CircuitState};
    ///
    /// let layer = CircuitBreakerLayer::consecutive_failures(3).build()?;
    /// assert_eq!(layer.circuit().state(), CircuitState::Closed);
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn state(&self) -> CircuitState {
        let state = state_of(self.word.load(Ordering::Acquire));
        if state == OPEN
            && self.forced.load(Ordering::Acquire) != FORCED_OPEN
            && self.now_ns() >= self.open_until.load(Ordering::Acquire)
        {
            return CircuitState::HalfOpen;
        }
        public(state)
    }

    /// When a call now would be refused for the open time (open and its time not over, or
    /// forced open): the clock reading it was judged at, for
    /// [`refuse_unpolled`](Self::refuse_unpolled) to reuse. One load on the closed path.
    #[inline]
    pub(crate) fn refusing_at(&self) -> Option<u64> {
        if state_of(self.word.load(Ordering::Acquire)) != OPEN {
            return None;
        }
        let now = self.now_ns();
        (self.forced.load(Ordering::Acquire) == FORCED_OPEN
            || now < self.open_until.load(Ordering::Acquire))
        .then_some(now)
    }

    /// Counts of calls, outcomes and openings.
    ///
    /// ```
    /// use tower_bulwark::circuit_breaker::CircuitBreakerLayer;
    ///
    /// let layer = CircuitBreakerLayer::consecutive_failures(3).build()?;
    /// assert_eq!(layer.circuit().stats().opened, 0);
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn stats(&self) -> CircuitStats {
        let c = self.counters.get();
        let (successes, failures) = (c[SUCCESSES], c[FAILURES]);
        CircuitStats {
            admitted: successes.wrapping_add(failures).wrapping_add(c[CANCELLED]),
            rejected: c[REJECTED],
            successes,
            failures,
            slow: c[SLOW],
            opened: c[OPENED],
        }
    }

    /// Opens the breaker and keeps it open (no probes) until [`reset`](Self::reset) or
    /// [`force_closed`](Self::force_closed).
    ///
    /// ```
    /// use tower_bulwark::circuit_breaker::{CircuitBreakerLayer, CircuitState};
    ///
    /// let layer = CircuitBreakerLayer::consecutive_failures(3).build()?;
    /// layer.circuit().force_open();
    /// assert_eq!(layer.circuit().state(), CircuitState::Open);
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn force_open(&self) {
        self.move_to_forced(FORCED_OPEN, OPEN);
    }

    /// Closes the breaker and keeps it closed whatever happens, until [`reset`](Self::reset)
    /// or [`force_open`](Self::force_open).
    ///
    /// ```
    /// use tower_bulwark::circuit_breaker::{CircuitBreakerLayer, CircuitState};
    ///
    /// let layer = CircuitBreakerLayer::consecutive_failures(3).build()?;
    /// layer.circuit().force_closed();
    /// assert_eq!(layer.circuit().state(), CircuitState::Closed);
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn force_closed(&self) {
        self.move_to_forced(FORCED_CLOSED, CLOSED);
    }

    /// Lifts any force and closes the breaker with its counts cleared.
    ///
    /// ```
    /// use tower_bulwark::circuit_breaker::{CircuitBreakerLayer, CircuitState};
    ///
    /// let layer = CircuitBreakerLayer::consecutive_failures(3).build()?;
    /// layer.circuit().force_open();
    /// layer.circuit().reset();
    /// assert_eq!(layer.circuit().state(), CircuitState::Closed);
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn reset(&self) {
        self.move_to_forced(FREE, CLOSED);
    }

    /// A manual move: the force and the state change together, under the transition lock, so
    /// no caller sees one without the other.
    fn move_to_forced(&self, forced: u8, to: u64) {
        let now = self.now_ns();
        self.transition_to(None, to, self.open_end(now), Some(forced));
    }

    /// Closed, unforced, with no failure or slow call counted: nothing that could open it, so
    /// a keyed layer may forget it (a new circuit would decide the same).
    pub(crate) fn is_idle(&self) -> bool {
        state_of(self.word.load(Ordering::Acquire)) == CLOSED
            && self.forced.load(Ordering::Acquire) == FREE
            && self.consecutive.load(Ordering::Acquire) == 0
            && match &self.window {
                Window::None => true,
                Window::Count(w) => w.is_harmless(),
                Window::Time(w) => match w.try_lock() {
                    Ok(mut w) => w.is_harmless(self.now_ns()),
                    Err(_) => false,
                },
            }
            && self.fleet_told()
    }

    /// Nothing the fleet has not heard (always so in memory).
    fn fleet_told(&self) -> bool {
        self.tally.as_ref().is_none_or(Tally::is_told)
    }

    /// Asks to make a call: a permit, or how long to wait.
    #[inline]
    pub(crate) fn acquire(self: &Arc<Self>) -> Result<Permit, Duration> {
        let mut now = None;
        loop {
            let word = self.word.load(Ordering::Acquire);
            let permit = |probe: bool, started_ns: u64| Permit {
                circuit: self.clone(),
                generation: generation_of(word),
                probe,
                started_ns,
                settled: false,
            };
            match state_of(word) {
                CLOSED => {
                    let started = if self.config.slow.is_some() {
                        self.now_ns()
                    } else {
                        0
                    };
                    return Ok(permit(false, started));
                }
                OPEN => {
                    let now = *now.get_or_insert_with(|| self.now_ns());
                    let until = self.open_until.load(Ordering::Acquire);
                    if self.forced.load(Ordering::Acquire) == FORCED_OPEN {
                        return Err(self.reject(CircuitState::Open, self.config.open_for));
                    }
                    if now < until {
                        // Never more than `open_for` (a force lifted mid-way left `until` far off).
                        let wait = Duration::from_nanos(until - now).min(self.config.open_for);
                        return Err(self.reject(CircuitState::Open, wait));
                    }
                    self.move_to(Some(word), HALF_OPEN, now);
                }
                _ => {
                    let tag = probe_tag(generation_of(word));
                    let mut cap = self.probe_cap.load(Ordering::Acquire);
                    let cap_until = self.cap_until.load(Ordering::Acquire);
                    if cap_until != u64::MAX
                        && *now.get_or_insert_with(|| self.now_ns()) >= cap_until
                    {
                        cap = 0;
                    }
                    let mut probes = self.probes.load(Ordering::Acquire);
                    let taken = loop {
                        // Slots of another period: the breaker has moved on; look again.
                        if probes & !COUNT_MASK != tag {
                            break false;
                        }
                        if probes & COUNT_MASK >= u64::from(cap) {
                            if let Some(tally) = &self.tally {
                                tally.want_to_probe();
                            }
                            return Err(self.reject(CircuitState::HalfOpen, HALF_OPEN_RETRY));
                        }
                        match self.probes.compare_exchange_weak(
                            probes,
                            probes + 1,
                            Ordering::AcqRel,
                            Ordering::Acquire,
                        ) {
                            Ok(_) => break true,
                            Err(current) => probes = current,
                        }
                    };
                    if !taken {
                        std::hint::spin_loop();
                        continue;
                    }
                    if let Some(tally) = &self.tally {
                        tally.want_to_probe();
                    }
                    let started = *now.get_or_insert_with(|| self.now_ns());
                    return Ok(permit(true, started));
                }
            }
        }
    }

    /// Refuses a call whose `poll_ready` found the breaker refusing at `now` and so never
    /// polled the inner service: the call may not go on whatever the breaker says now, and it
    /// takes no permit (it must not hold a probe slot, nor count as a call). Told the open
    /// time left if the breaker still refuses, else `retry` (it let calls through meanwhile:
    /// come back and be polled properly). Counted and reported as a refusal.
    pub(crate) fn refuse_unpolled(&self, now: u64, retry: Duration) -> Duration {
        let state = state_of(self.word.load(Ordering::Acquire));
        if state == OPEN {
            if self.forced.load(Ordering::Acquire) == FORCED_OPEN {
                return self.reject(CircuitState::Open, self.config.open_for);
            }
            let until = self.open_until.load(Ordering::Acquire);
            if now < until {
                let wait = Duration::from_nanos(until - now).min(self.config.open_for);
                return self.reject(CircuitState::Open, wait);
            }
            return self.reject(CircuitState::HalfOpen, retry);
        }
        self.reject(public(state), retry)
    }

    fn reject(&self, state: CircuitState, retry_after: Duration) -> Duration {
        self.counters.bump(REJECTED);
        if let Some(on_event) = &self.config.on_event {
            on_event(&CircuitEvent::Rejected { state, retry_after });
        }
        retry_after
    }

    /// Gives back a slot taken in `generation`'s half-open period; nothing if that period
    /// is over (its slots were reset with it).
    fn release_probe(&self, generation: u64) {
        let tag = probe_tag(generation);
        let _ = self
            .probes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n & !COUNT_MASK == tag && n & COUNT_MASK > 0).then(|| n - 1)
            });
    }

    /// True when slow calls are detected and a call started at `started_ns` has run past the
    /// threshold.
    #[inline]
    fn ran_slow(&self, started_ns: u64) -> bool {
        self.config
            .slow
            .as_ref()
            .is_some_and(|slow| self.now_ns().saturating_sub(started_ns) > slow.threshold_ns)
    }

    #[inline]
    fn record(&self, generation: u64, probe: bool, started_ns: u64, outcome: Outcome) {
        let slow = outcome == Outcome::CancelledSlow || self.ran_slow(started_ns);
        let failure = outcome == Outcome::Failure;
        match outcome {
            Outcome::Failure => self.counters.bump(FAILURES),
            Outcome::Success => self.counters.bump(SUCCESSES),
            Outcome::CancelledSlow => {}
        }
        if slow {
            self.counters.bump(SLOW);
        }
        let word = self.word.load(Ordering::Acquire);
        if generation_of(word) != generation || self.forced.load(Ordering::Acquire) != FREE {
            return;
        }
        match state_of(word) {
            CLOSED => {
                if let Some(tally) = &self.tally {
                    tally.outcome(failure, slow);
                }
                self.record_closed(word, failure, slow);
            }
            HALF_OPEN if probe => {
                if let Some(tally) = &self.tally {
                    tally.probe(failure || slow);
                    self.wake_fleet();
                }
                if failure || slow {
                    // Reopen first: the new generation voids every slot of this period, so no
                    // other caller can slip a request in between to an upstream that failed.
                    self.move_to(Some(word), OPEN, self.now_ns());
                } else {
                    self.release_probe(generation);
                    let successes = self.successes.fetch_add(1, Ordering::AcqRel) + 1;
                    if successes >= self.config.half_open_successes {
                        self.move_to(Some(word), CLOSED, self.now_ns());
                    }
                }
            }
            _ => {}
        }
    }

    #[inline]
    fn record_closed(&self, word: u64, failure: bool, slow: bool) {
        let trip = match self.config.trip {
            Trip::Consecutive { failures } => {
                if failure || slow {
                    self.consecutive.fetch_add(1, Ordering::AcqRel) + 1 >= failures
                } else {
                    if self.consecutive.load(Ordering::Relaxed) != 0 {
                        self.consecutive.store(0, Ordering::Release);
                    }
                    false
                }
            }
            Trip::Rate {
                failure_rate,
                minimum_calls,
                ..
            } => {
                let totals = match &self.window {
                    Window::Count(w) => w.record(failure, slow),
                    Window::Time(w) => lock(w).record(self.now_ns(), failure, slow),
                    Window::None => Totals::default(),
                };
                totals.calls >= minimum_calls
                    && (rate_reached(totals.failures, totals.calls, failure_rate)
                        || self
                            .config
                            .slow
                            .as_ref()
                            .is_some_and(|s| rate_reached(totals.slow, totals.calls, s.rate)))
            }
        };
        if trip {
            if let Some(tally) = &self.tally {
                tally.tripped();
                self.wake_fleet();
            }
            self.move_to(Some(word), OPEN, self.now_ns());
        }
    }

    /// Moves to `to` if the word is still `expected` (any word when `None`: a manual move).
    fn move_to(&self, expected: Option<u64>, to: u64, now: u64) {
        self.transition_to(expected, to, self.open_end(now), None);
    }

    /// When a breaker opened at `now` for the configured time lets a probe through.
    fn open_end(&self, now: u64) -> u64 {
        now.saturating_add(duration_to_nanos(self.config.open_for))
    }

    /// Moves to `to` (if the word is still `expected`), applying `forced` with it; an open
    /// state lasts until `open_until` (clock nanoseconds).
    fn transition_to(&self, expected: Option<u64>, to: u64, open_until: u64, forced: Option<u8>) {
        let from = {
            let _guard = self.transition.lock().unwrap_or_else(|p| p.into_inner());
            let word = self.word.load(Ordering::Acquire);
            if expected.is_some_and(|expected| expected != word) {
                return;
            }
            if let Some(forced) = forced {
                self.forced.store(forced, Ordering::Release);
            }
            // Reset what the new state counts before anyone can see it.
            match to {
                OPEN => {
                    let until = if self.forced.load(Ordering::Acquire) == FORCED_OPEN {
                        u64::MAX
                    } else {
                        open_until
                    };
                    self.open_until.store(until, Ordering::Release);
                    self.counters.bump(OPENED);
                }
                HALF_OPEN => {
                    self.probes
                        .store(probe_tag(generation_of(word) + 1), Ordering::Release);
                    self.successes.store(0, Ordering::Release);
                    self.probe_cap
                        .store(self.half_open_cap(), Ordering::Release);
                    self.cap_until.store(u64::MAX, Ordering::Release);
                }
                _ => {
                    self.consecutive.store(0, Ordering::Release);
                    match &self.window {
                        Window::Count(w) => w.clear(),
                        Window::Time(w) => lock(w).clear(),
                        Window::None => {}
                    }
                }
            }
            let next = ((generation_of(word) + 1) << 2) | to;
            self.word.store(next, Ordering::Release);
            state_of(word)
        };
        let (from, to) = (public(from), public(to));
        // A reset or force to the state it is already in changes nothing to report.
        if from == to {
            return;
        }
        tracing::info!(
            from = from.as_str(),
            to = to.as_str(),
            "circuit breaker state change"
        );
        if let Some(on_event) = &self.config.on_event {
            on_event(&CircuitEvent::StateChanged { from, to });
        }
    }
}

impl Circuit {
    /// Probes a new half-open period may run at once: the configured bound, except in a fleet,
    /// where only the holder of the fleet's lease probes (the next sync asks for it), unless
    /// this instance decides alone and any lease granted before has run out.
    fn half_open_cap(&self) -> u32 {
        if let Some(link) = &self.config.fleet {
            if !link.may_probe_alone(self.now_ns()) {
                self.wake_fleet();
                return 0;
            }
        }
        self.config.half_open_probes
    }

    /// Asks for a sync of this circuit now, not at the next interval.
    pub(crate) fn wake_fleet(&self) {
        if let (Some(link), Some(tally)) = (&self.config.fleet, &self.tally) {
            tally.mark_due();
            link.wake();
        }
    }
}

/// The time window, even if a thread panicked holding it (its totals stay usable).
fn lock(window: &Mutex<TimeWindow>) -> MutexGuard<'_, TimeWindow> {
    window.lock().unwrap_or_else(|p| p.into_inner())
}

/// `part / whole >= rate`. The quotient is rounded once, to the double nearest the true
/// ratio, so a ratio equal to the configured decimal (7 of 25 against 0.28) compares equal;
/// `rate * whole` would round the other way (0.28 * 25 = 7.000000000000001).
fn rate_reached(part: u64, whole: u64, rate: f64) -> bool {
    whole > 0 && (part as f64 / whole as f64) >= rate
}

/// The low 32 bits of `probes` count slots; the high 32 are the generation's tag.
const COUNT_MASK: u64 = 0xFFFF_FFFF;

fn probe_tag(generation: u64) -> u64 {
    generation << 32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::circuit_breaker::config::Slow;
    use crate::clock::ManualClock;

    fn circuit(clock: &ManualClock) -> Arc<Circuit> {
        Arc::new(Circuit::new(Config {
            trip: Trip::Consecutive { failures: 1 },
            slow: None,
            open_for: Duration::from_secs(1),
            half_open_successes: 1,
            half_open_probes: 1,
            clock: Arc::new(clock.clone()),
            on_event: None,
            fleet: None,
        }))
    }

    /// A probe of an earlier half-open period, given back late, must not free a slot of the
    /// current one (which would let two probes through), nor take one (which would leak it).
    #[test]
    fn a_stale_probe_touches_no_slot_of_a_later_half_open_period() {
        let clock = ManualClock::new();
        let c = circuit(&clock);
        c.acquire().unwrap().settle(true); // opens
        clock.advance(Duration::from_secs(1));
        let stale = c.acquire().unwrap(); // the probe of the first half-open period
        assert_eq!(c.state(), CircuitState::HalfOpen);
        // Another instance's verdict, say: reopen, then half-open again.
        let word = c.word.load(Ordering::Acquire);
        c.move_to(Some(word), OPEN, c.now_ns());
        clock.advance(Duration::from_secs(1));
        let current = c.acquire().unwrap(); // the one slot of the new period
        assert!(c.acquire().is_err(), "one probe at a time");
        drop(stale); // given back late: must not free the new period's slot
        assert!(
            c.acquire().is_err(),
            "the stale probe freed a slot it did not hold"
        );
        drop(current);
        assert!(c.acquire().is_ok(), "the current probe's slot came back");
    }

    fn slow_circuit(clock: &ManualClock) -> Arc<Circuit> {
        Arc::new(Circuit::new(Config {
            trip: Trip::Consecutive { failures: 1 },
            slow: Some(Slow {
                threshold_ns: 1_000_000_000,
                rate: 1.0,
            }),
            open_for: Duration::from_secs(60),
            half_open_successes: 1,
            half_open_probes: 1,
            clock: Arc::new(clock.clone()),
            on_event: None,
            fleet: None,
        }))
    }

    /// An outer timeout gives up on a hung upstream: the cancelled call ran past the slow
    /// threshold, so it counts as slow (here, under the consecutive policy, as a failure).
    #[test]
    fn a_call_cancelled_after_the_slow_threshold_counts_as_slow() {
        let clock = ManualClock::new();
        let c = slow_circuit(&clock);
        let permit = c.acquire().unwrap();
        clock.advance(Duration::from_secs(2));
        drop(permit);
        assert_eq!(c.state(), CircuitState::Open);
        let stats = c.stats();
        assert_eq!(
            (stats.slow, stats.failures, stats.successes, stats.admitted),
            (1, 0, 0, 1)
        );
    }

    #[test]
    fn a_call_cancelled_before_the_slow_threshold_records_nothing() {
        let clock = ManualClock::new();
        let c = slow_circuit(&clock);
        let permit = c.acquire().unwrap();
        clock.advance(Duration::from_millis(500));
        drop(permit);
        assert_eq!(c.state(), CircuitState::Closed);
        assert_eq!(c.stats().slow, 0);
    }

    #[test]
    fn exact_decimal_rates_compare_equal() {
        assert!(rate_reached(7, 25, 0.28));
        assert!(rate_reached(55, 100, 0.55));
        assert!(!rate_reached(6, 25, 0.28));
        assert!(!rate_reached(0, 0, 0.5));
    }
}
