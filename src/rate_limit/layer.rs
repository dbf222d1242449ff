use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;

use super::builder::RateLimitBuilder;
use super::config::Shared;
use super::limit::Limit;
use super::service::RateLimit;
use super::stats::RateLimitStats;
use super::store::MemoryRateLimiter;
use crate::key::Global;

/// Applies a rate limit to an HTTP service; see the [module docs](super).
///
/// Cheap to clone: every clone, and every service it makes, shares one set of counters.
///
/// ```
/// use std::time::Duration;
/// use tower_bulwark::rate_limit::RateLimitLayer;
///
/// let layer = RateLimitLayer::sliding_window_counter(1000, Duration::from_secs(3600)).build()?;
/// assert_eq!(layer.stats().allowed, 0);
/// # Ok::<(), tower_bulwark::ConfigError>(())
/// ```
pub struct RateLimitLayer<K = Global, B = MemoryRateLimiter> {
    shared: Arc<Shared<K, B>>,
}

impl RateLimitLayer {
    /// A builder with no limit yet; add them with [`RateLimitBuilder::limit`].
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_bulwark::rate_limit::{Limit, RateLimitLayer};
    ///
    /// let layer = RateLimitLayer::builder()
    ///     .limit(Limit::sliding_window_log(5, Duration::from_secs(1)))
    ///     .build()?;
    /// # drop(layer);
    /// assert_eq!(RateLimitLayer::builder().build().unwrap_err().field(), "limits");
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn builder() -> RateLimitBuilder {
        RateLimitBuilder::new()
    }

    /// A token bucket (GCRA): `limit` per `period`, bursts up to `limit` (change with `.burst`).
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_bulwark::{clock::ManualClock, key::Key, rate_limit::RateLimitLayer};
    ///
    /// let layer = RateLimitLayer::token_bucket(2, Duration::from_secs(1))
    ///     .clock(ManualClock::new())
    ///     .build()?;
    /// let backend = layer.backend();
    /// assert!(backend.decide_now(&Key::Global, 1).allowed());
    /// assert!(backend.decide_now(&Key::Global, 1).allowed());
    /// let refused = backend.decide_now(&Key::Global, 1);
    /// assert_eq!(refused.retry_after(), Duration::from_millis(500)); // one token every 500 ms
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn token_bucket(limit: u64, period: Duration) -> RateLimitBuilder {
        Self::builder().limit(Limit::token_bucket(limit, period))
    }

    /// A sliding window log: at most `limit` in any window of `period`, exactly.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_bulwark::{clock::ManualClock, key::Key, rate_limit::RateLimitLayer};
    ///
    /// let clock = ManualClock::new();
    /// let layer = RateLimitLayer::sliding_window_log(1, Duration::from_secs(10))
    ///     .clock(clock.clone())
    ///     .build()?;
    /// assert!(layer.backend().decide_now(&Key::Global, 1).allowed());
    /// clock.advance(Duration::from_secs(9)); // still within 10 s of the first request
    /// assert!(!layer.backend().decide_now(&Key::Global, 1).allowed());
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn sliding_window_log(limit: u64, period: Duration) -> RateLimitBuilder {
        Self::builder().limit(Limit::sliding_window_log(limit, period))
    }

    /// A sliding window counter: about `limit` per sliding `period`, in two counters per key.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_bulwark::{clock::ManualClock, key::Key, rate_limit::RateLimitLayer};
    ///
    /// let layer = RateLimitLayer::sliding_window_counter(100, Duration::from_secs(60))
    ///     .clock(ManualClock::new())
    ///     .build()?;
    /// let verdict = layer.backend().decide_now(&Key::Global, 1);
    /// assert_eq!(verdict.limits()[0].remaining(), 99);
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn sliding_window_counter(limit: u64, period: Duration) -> RateLimitBuilder {
        Self::builder().limit(Limit::sliding_window_counter(limit, period))
    }

    /// A fixed window: at most `limit` per aligned window of `period`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_bulwark::{clock::ManualClock, key::Key, rate_limit::RateLimitLayer};
    ///
    /// let clock = ManualClock::new();
    /// let layer = RateLimitLayer::fixed_window(1, Duration::from_secs(1))
    ///     .clock(clock.clone())
    ///     .build()?;
    /// assert!(layer.backend().decide_now(&Key::Global, 1).allowed());
    /// assert!(!layer.backend().decide_now(&Key::Global, 1).allowed());
    /// clock.advance(Duration::from_secs(1)); // a new window
    /// assert!(layer.backend().decide_now(&Key::Global, 1).allowed());
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn fixed_window(limit: u64, period: Duration) -> RateLimitBuilder {
        Self::builder().limit(Limit::fixed_window(limit, period))
    }
}

impl<K, B> RateLimitLayer<K, B> {
    pub(crate) fn from_shared(shared: Arc<Shared<K, B>>) -> Self {
        Self { shared }
    }

    /// The layer's decision counters so far.
    ///
    /// ```
    /// # use std::{convert::Infallible, time::Duration};
    /// # use tower::{service_fn, Layer, ServiceExt};
    /// # use tower_bulwark::rate_limit::RateLimitLayer;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let ok = service_fn(|_: http::Request<()>| async { Ok::<_, Infallible>(http::Response::new(String::new())) });
    /// let layer = RateLimitLayer::fixed_window(1, Duration::from_secs(60)).build()?;
    /// let svc = layer.layer(ok);
    /// svc.clone().oneshot(http::Request::new(())).await?;
    /// svc.clone().oneshot(http::Request::new(())).await?;
    /// let stats = layer.stats();
    /// assert_eq!((stats.allowed, stats.rejected), (1, 1));
    /// # Ok(())
    /// # }
    /// ```
    pub fn stats(&self) -> RateLimitStats {
        self.shared.counters.snapshot()
    }

    /// The backend holding the layer's state (for example to read how many keys it holds).
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_bulwark::rate_limit::RateLimitLayer;
    ///
    /// let layer = RateLimitLayer::fixed_window(10, Duration::from_secs(1)).build()?;
    /// assert!(layer.backend().is_empty());
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn backend(&self) -> &B {
        &self.shared.backend
    }
}

impl<K, B> Clone for RateLimitLayer<K, B> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<K, B> fmt::Debug for RateLimitLayer<K, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl<S, K, B> Layer<S> for RateLimitLayer<K, B> {
    type Service = RateLimit<S, K, B>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit::new(inner, self.shared.clone())
    }
}
