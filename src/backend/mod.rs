//! Where layers keep shared state.
//!
//! A backend answers one capability (for now: rate decisions). A decision is
//! [`Decision::Ready`] when it can be made at once, as the memory backend always does (so a layer
//! on it pays for no future, box or allocation per decision), or [`Decision::Pending`] when it
//! needs a network round trip, as the Redis backend does (feature `redis`); only then does the
//! layer hold the request while it waits.

pub mod memory;
#[cfg(feature = "redis")]
pub mod redis;

use std::fmt;
use std::future::Future;
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
/// use tower_bulwark::backend::{Decision, RateLimitBackend};
/// use tower_bulwark::{key::Key, rate_limit::RateLimitLayer};
///
/// async fn try_spend(backend: &impl RateLimitBackend, key: &Key) -> bool {
///     match backend.decide(key, 1) {
///         Decision::Ready(verdict) => verdict.allowed(),
///         Decision::Pending(decision) => decision.await.allowed(),
///     }
/// }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_bulwark::ConfigError> {
/// let layer = RateLimitLayer::fixed_window(1, Duration::from_secs(60)).build()?;
/// assert!(try_spend(layer.backend(), &Key::Int(7)).await);
/// assert!(!try_spend(layer.backend(), &Key::Int(7)).await);
/// # Ok(())
/// # }
/// ```
pub trait RateLimitBackend: Send + Sync + 'static {
    /// The decision of a backend that must wait (for a network round trip). Backends that
    /// always decide at once use [`std::future::Ready`] and never return it.
    type Pending: Future<Output = Verdict> + Send + 'static;

    /// Decides whether `key` may spend `cost` now, and spends it if so.
    fn decide(&self, key: &Key, cost: u64) -> Decision<Self::Pending>;

    /// Gives back `cost` spent by an admitted request, identified by its [`Verdict::receipt`].
    fn refund(&self, key: &Key, cost: u64, receipt: Receipt);
}

/// A decision made at once, or one still on its way.
///
/// ```
/// use std::time::Duration;
/// use tower_bulwark::backend::{Decision, RateLimitBackend};
/// use tower_bulwark::{key::Key, rate_limit::RateLimitLayer};
///
/// let layer = RateLimitLayer::fixed_window(1, Duration::from_secs(60)).build()?;
/// // The memory backend always decides at once.
/// assert!(matches!(layer.backend().decide(&Key::Global, 1), Decision::Ready(v) if v.allowed()));
/// # Ok::<(), tower_bulwark::ConfigError>(())
/// ```
#[derive(Debug)]
pub enum Decision<P> {
    /// Decided: no waiting.
    Ready(Verdict),
    /// The verdict will come from this future.
    Pending(P),
}

/// Where a verdict came from, so a refund goes back to the store that counted the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
// Without `redis` nothing falls back; without `rate-limit` nothing decides.
#[cfg_attr(not(all(feature = "redis", feature = "rate-limit")), allow(dead_code))]
pub(crate) enum Origin {
    /// The backend's own store (memory, or Redis).
    Store,
    /// A networked backend's local fallback, while its store was unreachable.
    Fallback,
    /// Nothing counted the request (a fail-open or fail-closed answer, or a cached denial).
    Nowhere,
}

/// What a refund needs to find the request it gives back: when it was counted, and where.
///
/// ```
/// use std::time::Duration;
/// use tower_bulwark::{clock::ManualClock, key::Key, rate_limit::RateLimitLayer};
///
/// let clock = ManualClock::new();
/// let layer = RateLimitLayer::fixed_window(1, Duration::from_secs(60)).clock(clock.clone()).build()?;
/// clock.advance(Duration::from_secs(2));
/// let receipt = layer.backend().decide_now(&Key::Global, 1).receipt();
/// assert_eq!(receipt.counted_at(), Duration::from_secs(2));
/// assert!(!receipt.degraded());
/// # Ok::<(), tower_bulwark::ConfigError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receipt {
    pub(crate) counted_at: Duration,
    pub(crate) origin: Origin,
}

impl Receipt {
    /// The backend's time of the decision.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_bulwark::{key::Key, rate_limit::RateLimitLayer};
    ///
    /// let layer = RateLimitLayer::fixed_window(1, Duration::from_secs(60)).build()?;
    /// let verdict = layer.backend().decide_now(&Key::Global, 1);
    /// assert_eq!(verdict.receipt().counted_at(), verdict.counted_at());
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn counted_at(&self) -> Duration {
        self.counted_at
    }

    /// True when the decision was made without the backend's shared store (see
    /// [`Verdict::degraded`]).
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_bulwark::{key::Key, rate_limit::RateLimitLayer};
    ///
    /// let layer = RateLimitLayer::fixed_window(1, Duration::from_secs(60)).build()?;
    /// assert!(!layer.backend().decide_now(&Key::Global, 1).receipt().degraded());
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn degraded(&self) -> bool {
        self.origin != Origin::Store
    }
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
    pub(crate) origin: Origin,
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

    /// What [`RateLimitBackend::refund`] needs to give this request's cost back.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_bulwark::backend::RateLimitBackend;
    /// use tower_bulwark::{key::Key, rate_limit::RateLimitLayer};
    ///
    /// let layer = RateLimitLayer::fixed_window(1, Duration::from_secs(60)).build()?;
    /// let verdict = layer.backend().decide_now(&Key::Global, 1);
    /// layer.backend().refund(&Key::Global, 1, verdict.receipt());
    /// assert!(layer.backend().decide_now(&Key::Global, 1).allowed());
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn receipt(&self) -> Receipt {
        Receipt {
            counted_at: self.counted_at,
            origin: self.origin,
        }
    }

    /// True when the decision was made without the backend's shared store: a networked backend
    /// that could not reach it answered with its fail mode (open, closed, or a local limit).
    /// The memory backend never degrades.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_bulwark::{key::Key, rate_limit::RateLimitLayer};
    ///
    /// let layer = RateLimitLayer::fixed_window(1, Duration::from_secs(60)).build()?;
    /// assert!(!layer.backend().decide_now(&Key::Global, 1).degraded());
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn degraded(&self) -> bool {
        self.origin != Origin::Store
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
