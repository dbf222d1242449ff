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
pub trait RateLimitBackend: Send + Sync + 'static {
    /// Decides whether `key` may spend `cost` now, and spends it if so.
    fn decide(&self, key: &Key, cost: u64) -> Verdict;

    /// Gives back `cost` spent by a request admitted at `counted_at` (a [`Verdict::counted_at`]).
    fn refund(&self, key: &Key, cost: u64, counted_at: Duration);
}

/// The outcome of one rate decision, with what the response headers need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub(crate) allowed: bool,
    pub(crate) retry_after: Duration,
    pub(crate) limits: SmallVec<[LimitStatus; 2]>,
    pub(crate) counted_at: Duration,
}

impl Verdict {
    /// Whether the request was admitted (and its cost spent).
    pub fn allowed(&self) -> bool {
        self.allowed
    }

    /// When denied: how long until the same request could be admitted.
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }

    /// The state of each configured limit, in the order they were configured.
    pub fn limits(&self) -> &[LimitStatus] {
        &self.limits
    }

    /// The backend's time of the decision; hand it back to [`RateLimitBackend::refund`].
    pub fn counted_at(&self) -> Duration {
        self.counted_at
    }
}

/// One limit's state after a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitStatus {
    pub(crate) remaining: u64,
    pub(crate) reset_after: Duration,
}

impl LimitStatus {
    /// Requests of cost 1 that could still be admitted now.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// Time until the limit is fully restored.
    pub fn reset_after(&self) -> Duration {
        self.reset_after
    }
}

/// A backend could not decide (network error, timeout). The memory backend never fails;
/// networked backends will.
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
