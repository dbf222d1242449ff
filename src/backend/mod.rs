//! Where layers keep shared state.
//!
//! A backend answers one capability (for now: rate decisions). The memory backend is synchronous,
//! so a layer on it pays for no future, box or allocation per decision. Networked backends
//! (Redis, in a later release) will add an asynchronous decision path beside this one, so that
//! only they hold the request while waiting.

pub mod memory;

use std::fmt;
use std::time::Duration;

use smallvec::SmallVec;

use crate::key::Key;

/// A store that decides whether a key may spend `cost` against every configured limit.
///
/// Decisions are all-or-nothing across the limits: a request denied by one consumes nothing
/// from the others. The trait is implemented by the crate's backends; its shape may still change
/// before 1.0.
///
/// ```
/// use std::time::Duration;
/// use tower_bulwark::{backend::RateLimitBackend, key::Key, rate_limit::RateLimitLayer};
///
/// fn try_spend(backend: &impl RateLimitBackend, key: &Key) -> bool {
///     backend.decide(key, 1).allowed()
/// }
/// let layer = RateLimitLayer::fixed_window(1, Duration::from_secs(60)).build()?;
/// assert!(try_spend(layer.backend(), &Key::Int(7)));
/// assert!(!try_spend(layer.backend(), &Key::Int(7)));
/// # Ok::<(), tower_bulwark::ConfigError>(())
/// ```
pub trait RateLimitBackend: Send + Sync + 'static {
    /// Decides whether `key` may spend `cost` now, and spends it if so.
    fn decide(&self, key: &Key, cost: u64) -> Verdict;

    /// Gives back `cost` spent by a request admitted at `counted_at` (a [`Verdict::counted_at`]).
    fn refund(&self, key: &Key, cost: u64, counted_at: Duration);
}

/// The outcome of one rate decision, with what the response headers need.
///
/// ```
/// use std::time::Duration;
/// use tower_bulwark::{key::Key, rate_limit::RateLimitLayer};
///
/// let layer = RateLimitLayer::token_bucket(10, Duration::from_secs(1)).build()?;
/// let verdict = layer.backend().decide_now(&Key::Global, 1);
/// assert!(verdict.allowed());
/// assert_eq!(verdict.limits()[0].remaining(), 9);
/// # Ok::<(), tower_bulwark::ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub(crate) allowed: bool,
    pub(crate) retry_after: Duration,
    pub(crate) limits: SmallVec<[LimitStatus; 2]>,
    pub(crate) counted_at: Duration,
}

impl Verdict {
    /// Whether the request was admitted (and its cost spent).
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_bulwark::{key::Key, rate_limit::RateLimitLayer};
    ///
    /// let layer = RateLimitLayer::fixed_window(1, Duration::from_secs(60)).build()?;
    /// assert!(layer.backend().decide_now(&Key::Global, 1).allowed());
    /// assert!(!layer.backend().decide_now(&Key::Global, 1).allowed());
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn allowed(&self) -> bool {
        self.allowed
    }

    /// When denied: how long until the same request could be admitted.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_bulwark::{clock::ManualClock, key::Key, rate_limit::RateLimitLayer};
    ///
    /// let layer = RateLimitLayer::fixed_window(1, Duration::from_secs(60))
    ///     .clock(ManualClock::new())
    ///     .build()?;
    /// assert_eq!(layer.backend().decide_now(&Key::Global, 1).retry_after(), Duration::ZERO);
    /// let refused = layer.backend().decide_now(&Key::Global, 1);
    /// assert_eq!(refused.retry_after(), Duration::from_secs(60)); // the window's end
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }

    /// The state of each configured limit, in the order they were configured.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_bulwark::{key::Key, rate_limit::{Limit, RateLimitLayer}};
    ///
    /// let layer = RateLimitLayer::builder()
    ///     .limit(Limit::fixed_window(10, Duration::from_secs(1)))
    ///     .limit(Limit::fixed_window(100, Duration::from_secs(60)))
    ///     .build()?;
    /// let verdict = layer.backend().decide_now(&Key::Global, 1);
    /// let remaining: Vec<u64> = verdict.limits().iter().map(|l| l.remaining()).collect();
    /// assert_eq!(remaining, [9, 99]);
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn limits(&self) -> &[LimitStatus] {
        &self.limits
    }

    /// The backend's time of the decision; hand it back to [`RateLimitBackend::refund`].
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_bulwark::{clock::ManualClock, key::Key, rate_limit::RateLimitLayer};
    ///
    /// let clock = ManualClock::new();
    /// let layer = RateLimitLayer::fixed_window(5, Duration::from_secs(60)).clock(clock.clone()).build()?;
    /// clock.advance(Duration::from_secs(3));
    /// let verdict = layer.backend().decide_now(&Key::Global, 1);
    /// assert_eq!(verdict.counted_at(), Duration::from_secs(3));
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn counted_at(&self) -> Duration {
        self.counted_at
    }
}

/// One limit's state after a decision.
///
/// ```
/// use std::time::Duration;
/// use tower_bulwark::{clock::ManualClock, key::Key, rate_limit::RateLimitLayer};
///
/// let layer = RateLimitLayer::fixed_window(5, Duration::from_secs(60))
///     .clock(ManualClock::new())
///     .build()?;
/// let status = layer.backend().decide_now(&Key::Global, 2).limits()[0];
/// assert_eq!((status.remaining(), status.reset_after()), (3, Duration::from_secs(60)));
/// # Ok::<(), tower_bulwark::ConfigError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitStatus {
    pub(crate) remaining: u64,
    pub(crate) reset_after: Duration,
}

impl LimitStatus {
    /// Requests of cost 1 that could still be admitted now.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_bulwark::{key::Key, rate_limit::RateLimitLayer};
    ///
    /// let layer = RateLimitLayer::fixed_window(5, Duration::from_secs(60)).build()?;
    /// let verdict = layer.backend().decide_now(&Key::Global, 2); // a request of cost 2
    /// assert_eq!(verdict.limits()[0].remaining(), 3);
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// Time until the limit is fully restored.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_bulwark::{clock::ManualClock, key::Key, rate_limit::RateLimitLayer};
    ///
    /// let clock = ManualClock::new();
    /// let layer = RateLimitLayer::fixed_window(5, Duration::from_secs(60)).clock(clock.clone()).build()?;
    /// clock.advance(Duration::from_secs(45));
    /// let verdict = layer.backend().decide_now(&Key::Global, 1);
    /// assert_eq!(verdict.limits()[0].reset_after(), Duration::from_secs(15));
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn reset_after(&self) -> Duration {
        self.reset_after
    }
}

/// A backend could not decide (network error, timeout). The memory backend never fails;
/// networked backends will.
///
/// ```
/// use tower_bulwark::backend::BackendError;
///
/// let err: Box<dyn std::error::Error> = Box::new(BackendError::new("connection refused"));
/// assert_eq!(err.to_string(), "backend error: connection refused");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendError {
    message: String,
}

impl BackendError {
    /// An error with a human-readable reason.
    ///
    /// ```
    /// let err = tower_bulwark::backend::BackendError::new("redis timed out after 50ms");
    /// assert_eq!(err.to_string(), "backend error: redis timed out after 50ms");
    /// ```
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "backend error: {}", self.message)
    }
}

impl std::error::Error for BackendError {}
