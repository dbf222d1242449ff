//! What a breaker is configured with, its states, its events and its refusal.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;

/// The three states of a circuit breaker.
///
/// ```
/// use tower_bulwark::circuit_breaker::CircuitState;
///
/// assert_eq!(CircuitState::HalfOpen.as_str(), "half_open");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CircuitState {
    /// Calls go through; outcomes are counted.
    Closed,
    /// Calls are refused at once until the open time is over.
    Open,
    /// A bounded number of probe calls go through; enough successes close the breaker, one
    /// failure opens it again.
    HalfOpen,
}

impl CircuitState {
    /// The state's name for logs and metrics.
    ///
    /// ```
    /// use tower_bulwark::circuit_breaker::CircuitState;
    /// assert_eq!(CircuitState::Open.as_str(), "open");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
        }
    }
}

/// Something a breaker did, given to the callback set with
/// [`on_event`](super::CircuitBreakerBuilder::on_event).
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use tower_bulwark::circuit_breaker::{CircuitBreakerLayer, CircuitEvent, CircuitState};
///
/// let seen = Arc::new(Mutex::new(Vec::new()));
/// let log = seen.clone();
/// let layer = CircuitBreakerLayer::consecutive_failures(1)
///     .on_event(move |event| log.lock().unwrap().push(event.clone()))
///     .build()?;
/// layer.circuit().force_open();
/// assert_eq!(
///     seen.lock().unwrap()[0],
///     CircuitEvent::StateChanged { from: CircuitState::Closed, to: CircuitState::Open }
/// );
/// # Ok::<(), tower_bulwark::ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CircuitEvent {
    /// The breaker moved from one state to another (or was reset or forced).
    StateChanged {
        /// The state it left.
        from: CircuitState,
        /// The state it entered.
        to: CircuitState,
    },
    /// A call was refused.
    Rejected {
        /// The state that refused it.
        state: CircuitState,
        /// How long the caller is told to wait.
        retry_after: Duration,
    },
}

/// The error of the non-HTTP variant when the breaker refuses a call. The crate's one
/// [`Refusal`](crate::response::Refusal) type, of kind
/// [`CircuitOpen`](crate::response::RefusalKind::CircuitOpen); the name is kept for code
/// written before there was one refusal type.
///
/// ```
/// use std::time::Duration;
/// use tower_bulwark::circuit_breaker::CircuitOpen;
///
/// let err = CircuitOpen::circuit_open(Duration::from_millis(1500));
/// assert_eq!(err.retry_after_secs(), 2);
/// assert_eq!(err.to_string(), "circuit breaker open: retry after 2s");
/// ```
pub type CircuitOpen = crate::response::Refusal;

/// What trips a closed breaker.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Trip {
    /// This many failures in a row.
    Consecutive { failures: u32 },
    /// A failure rate over a window, once it holds enough calls. `window_calls` for a count
    /// window, else a time window of `window_period_ns`.
    Rate {
        failure_rate: f64,
        minimum_calls: u64,
        window_calls: Option<usize>,
        window_period_ns: u64,
    },
}

/// Calls slower than `threshold` count as slow; a slow rate of `rate` trips a rate window, and
/// under the consecutive policy a slow call counts as a failure.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Slow {
    pub(crate) threshold_ns: u64,
    pub(crate) rate: f64,
}

pub(crate) type EventFn = Arc<dyn Fn(&CircuitEvent) + Send + Sync>;

#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) trip: Trip,
    pub(crate) slow: Option<Slow>,
    pub(crate) open_for: Duration,
    pub(crate) half_open_successes: u32,
    pub(crate) half_open_probes: u32,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) on_event: Option<EventFn>,
    /// Set when the fleet shares this breaker through Redis.
    pub(crate) fleet: Option<Arc<super::fleet::FleetLink>>,
}
