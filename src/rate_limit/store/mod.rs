//! Where a rate limiter keeps its counts: in memory ([`MemoryRateLimiter`]), or in Redis so
//! that a fleet shares them ([`RedisRateLimiter`], feature `redis`).
//!
//! A decision is [`Decision::Ready`] when it can be made at once, as the memory store always
//! does (so a layer on it pays for no future, box or allocation per decision), or
//! [`Decision::Pending`] when it needs a network round trip, as the Redis store does; only
//! then does the layer hold the request while it waits.

#[cfg(feature = "redis")]
mod denied;
mod memory;
#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "redis")]
mod script;

pub use memory::MemoryRateLimiter;
#[cfg(feature = "redis")]
pub(crate) use redis::Settings as RedisSettings;
#[cfg(feature = "redis")]
pub use redis::{RedisDecision, RedisRateLimiter, RedisStats};
#[cfg(feature = "redis")]
pub(crate) use script::RedisQuota;

use std::future::Future;
use std::time::Duration;

use smallvec::SmallVec;

use crate::key::Key;

mod sealed {
    /// Only this crate's stores decide: a verdict carries what the layer's refunds and
    /// headers rely on, which an outside store could not vouch for.
    pub trait Sealed {}
}

/// A store that decides whether a key may spend `cost` against every configured limit.
///
/// Decisions are all-or-nothing across the limits: a request denied by one consumes nothing
/// from the others. The trait is sealed: it is implemented by this crate's two stores, and
/// named so that code can be generic over them (as below).
///
/// ```
/// use std::time::Duration;
/// use tower_bulwark::rate_limit::store::{Decision, RateLimitBackend};
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
pub trait RateLimitBackend: sealed::Sealed + Send + Sync + 'static {
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
/// use tower_bulwark::rate_limit::store::{Decision, RateLimitBackend};
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
pub(crate) enum Origin {
    /// The backend's own store (memory, or Redis).
    Store,
    /// A networked backend's local fallback, while its store was unreachable.
    #[cfg(feature = "redis")]
    Fallback,
    /// Nothing counted the request (a fail-open or fail-closed answer, or a cached denial).
    #[cfg(feature = "redis")]
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

impl Origin {
    /// Whether a store counted the request, so that a refund has something to give back.
    pub(crate) fn counted(self) -> bool {
        match self {
            Origin::Store => true,
            #[cfg(feature = "redis")]
            Origin::Fallback => true,
            #[cfg(feature = "redis")]
            Origin::Nowhere => false,
        }
    }

    /// Whether the local fallback of a networked store decided.
    pub(crate) fn is_fallback(self) -> bool {
        match self {
            #[cfg(feature = "redis")]
            Origin::Fallback => true,
            _ => false,
        }
    }
}

impl sealed::Sealed for MemoryRateLimiter {}
#[cfg(feature = "redis")]
impl sealed::Sealed for RedisRateLimiter {}

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
    /// use tower_bulwark::rate_limit::store::RateLimitBackend;
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
