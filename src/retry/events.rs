//! What a retry layer tells its users: events as they happen, and counters read at leisure.

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;

use crate::util::StripedCounts;

/// Why a request that wanted another attempt did not get one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum GiveUp {
    /// Its retries are used up (`max_retries`).
    Attempts,
    /// The retry budget is spent: retries are already a large share of the traffic.
    Budget,
    /// The next attempt would start after the overall deadline.
    Deadline,
    /// A gRPC server sent a negative or malformed `grpc-retry-pushback-ms`: do not retry.
    Pushback,
}

/// Something a retry layer did, for logs and metrics; see
/// [`on_event`](super::RetryLayerBuilder::on_event).
///
/// ```
/// use std::time::Duration;
/// use tower_bulwark::retry::{GiveUp, RetryEvent};
///
/// let event = RetryEvent::GaveUp { attempts: 4, reason: GiveUp::Attempts };
/// assert_eq!(event.to_string(), "gave up after 4 attempts: retries used up");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RetryEvent {
    /// Attempt `attempt` (from 1) failed and another follows after `delay`. `status` is the
    /// failed attempt's HTTP status, `None` for an error (a transport error, a timeout).
    Retrying {
        /// The attempt that failed, from 1.
        attempt: u32,
        /// The wait before the next attempt.
        delay: Duration,
        /// The failed attempt's status; `None` for an error.
        status: Option<StatusCode>,
    },
    /// A hedge: a second copy of a request sent because the first was slow.
    Hedged {
        /// How long the first copy had been running.
        after: Duration,
    },
    /// The caller gets the last attempt's answer although it failed.
    GaveUp {
        /// Attempts made.
        attempts: u32,
        /// Why no more.
        reason: GiveUp,
    },
}

impl std::fmt::Display for RetryEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RetryEvent::Retrying {
                attempt,
                delay,
                status,
            } => {
                write!(f, "attempt {attempt} failed (")?;
                match status {
                    Some(status) => write!(f, "{}", status.as_u16())?,
                    None => f.write_str("error")?,
                }
                write!(f, "); retrying in {delay:?}")
            }
            RetryEvent::Hedged { after } => write!(f, "hedged after {after:?}"),
            RetryEvent::GaveUp { attempts, reason } => {
                let why = match reason {
                    GiveUp::Attempts => "retries used up",
                    GiveUp::Budget => "retry budget spent",
                    GiveUp::Deadline => "deadline reached",
                    GiveUp::Pushback => "the server said not to retry",
                };
                write!(f, "gave up after {attempts} attempts: {why}")
            }
        }
    }
}

pub(crate) type EventFn = Arc<dyn Fn(&RetryEvent) + Send + Sync>;

/// A retry layer's counters since it was built; from
/// [`RetryLayer::stats`](super::RetryLayer::stats).
///
/// ```
/// let stats = tower_bulwark::retry::RetryStats::default();
/// assert_eq!(stats.requests, 0);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryStats {
    /// Requests through the layer.
    pub requests: u64,
    /// Calls of the inner service: requests, retries and hedges.
    pub attempts: u64,
    /// Retries sent.
    pub retries: u64,
    /// Hedges sent.
    pub hedges: u64,
    /// Retries the budget refused.
    pub budget_exhausted: u64,
    /// Requests answered with a failure that wanted another attempt (every [`GiveUp`]).
    pub given_up: u64,
}

/// Which counter of [`Counters`] an index is.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Count {
    Requests,
    Attempts,
    Retries,
    Hedges,
    BudgetExhausted,
    GivenUp,
}

#[derive(Debug, Default)]
pub(crate) struct Counters(StripedCounts<6>);

impl Counters {
    #[inline]
    pub(crate) fn bump(&self, count: Count) {
        self.0.bump(count as usize);
    }

    /// A request and its first attempt, counted at once.
    #[inline]
    pub(crate) fn bump_request(&self) {
        self.0
            .bump_two(Count::Requests as usize, Count::Attempts as usize);
    }

    pub(crate) fn stats(&self) -> RetryStats {
        let [requests, attempts, retries, hedges, budget_exhausted, given_up] = self.0.get();
        RetryStats {
            requests,
            attempts,
            retries,
            hedges,
            budget_exhausted,
            given_up,
        }
    }
}
