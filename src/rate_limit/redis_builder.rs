//! The builder's Redis half: `.backend(redis)` and the settings that only apply to Redis.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::builder::RateLimitBuilder;
use super::generic::GenericRateLimitLayer;
use super::layer::RateLimitLayer;
use super::store::{MemoryRateLimiter, RedisQuota, RedisRateLimiter, RedisSettings as Settings};
use crate::error::ConfigError;
use crate::redis::{check_prefix, FailMode, RedisBackend, DEFAULT_PREFIX};

/// How long a Redis call may take before the fail mode decides: 50 ms.
///
/// ```
/// use std::time::Duration;
/// assert_eq!(tower_bulwark::rate_limit::DEFAULT_REDIS_DEADLINE, Duration::from_millis(50));
/// ```
pub const DEFAULT_REDIS_DEADLINE: Duration = crate::redis::DEFAULT_DEADLINE;

use crate::redis::{DEFAULT_BACKOFF, DEFAULT_FAILURE_THRESHOLD, MAX_BACKOFF};
const DEFAULT_DENIED_CACHE: usize = 10_000;

impl<K> RateLimitBuilder<K> {
    /// Keeps the limits in Redis, shared by every instance that uses the same Redis and
    /// prefix (feature `redis`). The returned builder adds the Redis settings: fail mode,
    /// deadline, prefix, back-off and the cache of refused keys.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use tower_bulwark::redis::{FailMode, RedisBackend};
    /// use tower_bulwark::rate_limit::RateLimitLayer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let redis = RedisBackend::connect("redis://127.0.0.1/").await?;
    /// let layer = RateLimitLayer::token_bucket(100, Duration::from_secs(60))
    ///     .backend(redis)
    ///     .fail_mode(FailMode::Closed)
    ///     .build()?;
    /// # drop(layer);
    /// # Ok(())
    /// # }
    /// ```
    pub fn backend(self, redis: RedisBackend) -> RedisRateLimitBuilder<K> {
        RedisRateLimitBuilder {
            base: self,
            redis,
            fail_mode: FailMode::default(),
            deadline: DEFAULT_REDIS_DEADLINE,
            prefix: DEFAULT_PREFIX.to_owned(),
            failure_threshold: DEFAULT_FAILURE_THRESHOLD,
            backoff: DEFAULT_BACKOFF,
            denied_cache: DEFAULT_DENIED_CACHE,
        }
    }
}

/// A rate limit kept in Redis; made by [`RateLimitBuilder::backend`]. Configure the limits,
/// key and headers before `.backend(..)`, the Redis settings after.
///
/// ```
/// use std::time::Duration;
/// use tower_bulwark::redis::RedisBackend;
/// use tower_bulwark::rate_limit::RateLimitLayer;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let redis = RedisBackend::connect_lazy("redis://127.0.0.1/")?;
/// let err = RateLimitLayer::token_bucket(10, Duration::from_secs(1))
///     .backend(redis)
///     .deadline(Duration::ZERO)
///     .build()
///     .unwrap_err();
/// assert_eq!(err.to_string(), "`deadline` must be > 0, got 0ns");
/// # Ok(())
/// # }
/// ```
pub struct RedisRateLimitBuilder<K> {
    base: RateLimitBuilder<K>,
    redis: RedisBackend,
    fail_mode: FailMode,
    deadline: Duration,
    prefix: String,
    failure_threshold: u32,
    backoff: Duration,
    denied_cache: usize,
}

impl<K> fmt::Debug for RedisRateLimitBuilder<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisRateLimitBuilder")
            .field("base", &self.base)
            .field("fail_mode", &self.fail_mode)
            .field("deadline", &self.deadline)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl<K> RedisRateLimitBuilder<K> {
    /// What to decide when Redis cannot answer in time. Default [`FailMode::Open`].
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_bulwark::{redis::{FailMode, RedisBackend}, rate_limit::RateLimitLayer};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let redis = RedisBackend::connect_lazy("redis://127.0.0.1/")?;
    /// let err = RateLimitLayer::token_bucket(10, Duration::from_secs(1))
    ///     .backend(redis)
    ///     .fail_mode(FailMode::Local { instances: 0 })
    ///     .build()
    ///     .unwrap_err();
    /// assert_eq!(err.field(), "fail_mode");
    /// # Ok(())
    /// # }
    /// ```
    pub fn fail_mode(mut self, mode: FailMode) -> Self {
        self.fail_mode = mode;
        self
    }

    /// The longest a request waits for Redis, reconnects included, before the fail mode
    /// decides. Default [`DEFAULT_REDIS_DEADLINE`] (50 ms).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_bulwark::{redis::RedisBackend, rate_limit::RateLimitLayer};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let redis = RedisBackend::connect_lazy("redis://127.0.0.1/")?;
    /// let layer = RateLimitLayer::token_bucket(10, Duration::from_secs(1))
    ///     .backend(redis)
    ///     .deadline(Duration::from_millis(20))
    ///     .build()?;
    /// # drop(layer);
    /// # Ok(())
    /// # }
    /// ```
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// The first part of every Redis key (default `bulwark`). Layers that should not share
    /// counts need different prefixes (or different limit names): keys are
    /// `{prefix:key}:name:algorithm:limit:period_ms`.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_bulwark::{redis::RedisBackend, rate_limit::RateLimitLayer};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let redis = RedisBackend::connect_lazy("redis://127.0.0.1/")?;
    /// let err = RateLimitLayer::token_bucket(10, Duration::from_secs(1))
    ///     .backend(redis)
    ///     .prefix("orders{v2}")
    ///     .build()
    ///     .unwrap_err();
    /// assert_eq!(err.field(), "prefix");
    /// # Ok(())
    /// # }
    /// ```
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Consecutive Redis failures after which Redis is left alone for the back-off. Default 3.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_bulwark::{redis::RedisBackend, rate_limit::RateLimitLayer};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let redis = RedisBackend::connect_lazy("redis://127.0.0.1/")?;
    /// let layer = RateLimitLayer::token_bucket(10, Duration::from_secs(1))
    ///     .backend(redis)
    ///     .failure_threshold(5)
    ///     .build()?;
    /// # drop(layer);
    /// # Ok(())
    /// # }
    /// ```
    pub fn failure_threshold(mut self, failures: u32) -> Self {
        self.failure_threshold = failures;
        self
    }

    /// How long Redis is left alone after the failure threshold, before one probe; each failed
    /// probe doubles it, up to 30 s. Default 500 ms. Measured on the layer's clock.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_bulwark::{redis::RedisBackend, rate_limit::RateLimitLayer};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let redis = RedisBackend::connect_lazy("redis://127.0.0.1/")?;
    /// let layer = RateLimitLayer::token_bucket(10, Duration::from_secs(1))
    ///     .backend(redis)
    ///     .backoff(Duration::from_secs(1))
    ///     .build()?;
    /// # drop(layer);
    /// # Ok(())
    /// # }
    /// ```
    pub fn backoff(mut self, backoff: Duration) -> Self {
        self.backoff = backoff;
        self
    }

    /// How many refused keys are remembered and answered locally until their retry time
    /// (default 10 000; 0 turns the cache off).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_bulwark::{redis::RedisBackend, rate_limit::RateLimitLayer};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let redis = RedisBackend::connect_lazy("redis://127.0.0.1/")?;
    /// let layer = RateLimitLayer::token_bucket(10, Duration::from_secs(1))
    ///     .backend(redis)
    ///     .denied_cache(0)
    ///     .build()?;
    /// # drop(layer);
    /// # Ok(())
    /// # }
    /// ```
    pub fn denied_cache(mut self, max_keys: usize) -> Self {
        self.denied_cache = max_keys;
        self
    }

    fn check(&self) -> Result<(), ConfigError> {
        if self.deadline.is_zero() {
            return Err(ConfigError::new("deadline", "must be > 0, got 0ns"));
        }
        check_prefix(&self.prefix)?;
        if self.failure_threshold == 0 {
            return Err(ConfigError::new("failure_threshold", "must be >= 1, got 0"));
        }
        if self.backoff.is_zero() {
            return Err(ConfigError::new("backoff", "must be > 0, got 0ns"));
        }
        if let FailMode::Local { instances: 0 } = self.fail_mode {
            return Err(ConfigError::new(
                "fail_mode",
                "Local { instances } must be >= 1, got 0",
            ));
        }
        Ok(())
    }

    fn into_shared(self) -> Result<Arc<super::config::Shared<K, RedisRateLimiter>>, ConfigError> {
        self.check()?;
        let Self {
            base,
            redis,
            fail_mode,
            deadline,
            prefix,
            failure_threshold,
            backoff,
            denied_cache,
        } = self;
        base.into_shared_with(|quotas, names, max_keys, clock| {
            let redis_quotas = quotas
                .iter()
                .zip(names)
                .map(|(quota, name)| RedisQuota::new(quota, name))
                .collect::<Result<Vec<_>, _>>()?;
            let (local, divided) = match fail_mode {
                FailMode::Local { instances } => {
                    let divided: Arc<[_]> = quotas
                        .iter()
                        .map(|q| q.divided(u64::from(instances)))
                        .collect();
                    let local = MemoryRateLimiter::new(divided.clone(), max_keys, clock.clone());
                    (Some(local), Some(divided))
                }
                _ => (None, None),
            };
            let backend = RedisRateLimiter::new(Settings {
                redis,
                quotas: redis_quotas,
                prefix,
                deadline,
                fail_mode,
                local,
                failure_threshold,
                backoff,
                max_backoff: MAX_BACKOFF.max(backoff),
                denied_cache,
                clock,
            });
            Ok((backend, divided))
        })
    }

    /// Checks the configuration and builds the HTTP layer on Redis.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_bulwark::{redis::RedisBackend, rate_limit::RateLimitLayer};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let redis = RedisBackend::connect_lazy("redis://127.0.0.1/")?;
    /// let err = RateLimitLayer::fixed_window(10, Duration::from_micros(10))
    ///     .backend(redis)
    ///     .build()
    ///     .unwrap_err();
    /// assert_eq!(err.to_string(), "`period` must be >= 1ms with the redis backend, got 10µs");
    /// # Ok(())
    /// # }
    /// ```
    pub fn build(self) -> Result<RateLimitLayer<K, RedisRateLimiter>, ConfigError> {
        Ok(RateLimitLayer::from_shared(self.into_shared()?))
    }

    /// Checks the configuration and builds the variant for any `tower::Service` on Redis.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_bulwark::{redis::RedisBackend, rate_limit::RateLimitLayer};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let redis = RedisBackend::connect_lazy("redis://127.0.0.1/")?;
    /// let layer = RateLimitLayer::fixed_window(10, Duration::from_secs(1))
    ///     .backend(redis)
    ///     .build_generic()?;
    /// # drop(layer);
    /// # Ok(())
    /// # }
    /// ```
    pub fn build_generic(self) -> Result<GenericRateLimitLayer<K, RedisRateLimiter>, ConfigError> {
        self.base.check_generic()?;
        Ok(GenericRateLimitLayer::from_shared(self.into_shared()?))
    }
}
