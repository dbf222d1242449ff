//! A built retry layer's settings, shared by its services and their futures.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::events::{Count, Counters, EventFn, RetryEvent};
use super::{Backoff, Random, RetryBudget};
use crate::clock::Clock;

pub(crate) struct Config<C> {
    pub(crate) backoff: Backoff,
    pub(crate) max_retries: u32,
    pub(crate) random: Arc<dyn Random>,
    pub(crate) classify: C,
    /// Retry requests whatever their method (the user opted in).
    pub(crate) any_method: bool,
    pub(crate) max_body: usize,
    pub(crate) attempt_timeout: Option<Duration>,
    pub(crate) deadline: Option<Duration>,
    pub(crate) max_retry_after: Duration,
    pub(crate) budget: Option<RetryBudget>,
    pub(crate) hedging: Option<super::hedge::Hedging>,
    pub(crate) on_event: Option<EventFn>,
    /// Wall time for `Retry-After` dates.
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) counters: Counters,
}

impl<C> fmt::Debug for Config<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryConfig")
            .field("backoff", &self.backoff)
            .field("max_retries", &self.max_retries)
            .field("any_method", &self.any_method)
            .field("max_body", &self.max_body)
            .field("attempt_timeout", &self.attempt_timeout)
            .field("deadline", &self.deadline)
            .field("max_retry_after", &self.max_retry_after)
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

impl<C> Config<C> {
    /// Counts and tells.
    pub(crate) fn emit(&self, event: RetryEvent) {
        match event {
            RetryEvent::Retrying { .. } => self.counters.bump(Count::Retries),
            RetryEvent::Hedged { .. } => self.counters.bump(Count::Hedges),
            RetryEvent::GaveUp { reason, .. } => {
                self.counters.bump(Count::GivenUp);
                if reason == super::GiveUp::Budget {
                    self.counters.bump(Count::BudgetExhausted);
                }
            }
        }
        tracing::debug!(%event, "retry");
        if let Some(on_event) = &self.on_event {
            on_event(&event);
        }
    }

    /// True when a request's attempts or whole life are timed.
    pub(crate) fn needs_timer(&self) -> bool {
        self.attempt_timeout.is_some() || self.deadline.is_some()
    }

    /// True when an attempt's start must be read from the clock: it is timed, or hedged.
    pub(crate) fn needs_clock(&self) -> bool {
        self.needs_timer() || self.hedging.is_some()
    }
}

/// An attempt, or the whole request, ran out of time.
///
/// ```
/// use std::time::Duration;
/// use tower_bulwark::retry::TimedOut;
///
/// let err = TimedOut::attempt(Duration::from_millis(200));
/// assert_eq!(err.to_string(), "attempt timed out after 200ms");
/// assert!(!err.is_deadline());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimedOut {
    after: Duration,
    deadline: bool,
}

impl TimedOut {
    /// One attempt took longer than the per-attempt timeout `after`.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let err = tower_bulwark::retry::TimedOut::attempt(Duration::from_secs(1));
    /// assert_eq!(err.after(), Duration::from_secs(1));
    /// ```
    pub fn attempt(after: Duration) -> Self {
        Self {
            after,
            deadline: false,
        }
    }

    /// The request's overall deadline `after` passed.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let err = tower_bulwark::retry::TimedOut::deadline(Duration::from_secs(5));
    /// assert_eq!(err.to_string(), "deadline of 5s passed");
    /// ```
    pub fn deadline(after: Duration) -> Self {
        Self {
            after,
            deadline: true,
        }
    }

    /// The timeout that passed.
    ///
    /// ```
    /// # use std::time::Duration;
    /// assert_eq!(tower_bulwark::retry::TimedOut::deadline(Duration::from_secs(5)).after().as_secs(), 5);
    /// ```
    pub fn after(&self) -> Duration {
        self.after
    }

    /// True for the overall deadline, false for one attempt's timeout.
    ///
    /// ```
    /// # use std::time::Duration;
    /// assert!(tower_bulwark::retry::TimedOut::deadline(Duration::from_secs(5)).is_deadline());
    /// ```
    pub fn is_deadline(&self) -> bool {
        self.deadline
    }
}

impl fmt::Display for TimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.deadline {
            write!(f, "deadline of {:?} passed", self.after)
        } else {
            write!(f, "attempt timed out after {:?}", self.after)
        }
    }
}

impl std::error::Error for TimedOut {}
