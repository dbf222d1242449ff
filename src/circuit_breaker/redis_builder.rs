//! The builder's Redis half: `.backend(redis)` and the settings that only apply to a breaker
//! the fleet shares.

use std::fmt;
use std::time::Duration;

use http::request::Parts;

use super::builder::{CircuitBreakerBuilder, KeyedCircuitBreakerBuilder};
use super::classify::{ClassifyResponse, DefaultClassifier};
use super::config::Config;
use super::fleet::{BreakerSync, FleetLink};
use super::generic::GenericCircuitBreakerLayer;
use super::layer::CircuitBreakerLayer;
use crate::error::ConfigError;
use crate::key::KeyExtractor;
use crate::redis::{RedisBackend, SyncSettings};

/// How often each instance tells the fleet its outcomes and reads the fleet's state, unless
/// something happens sooner (a trip, a probe, half-open): 500 ms.
///
/// ```
/// use std::time::Duration;
/// assert_eq!(tower_bulwark::circuit_breaker::DEFAULT_SYNC_INTERVAL, Duration::from_millis(500));
/// ```
pub const DEFAULT_SYNC_INTERVAL: Duration = Duration::from_millis(500);

/// The link for a breaker configured as `config`, shared as `settings` say.
pub(crate) fn fleet_link(
    settings: &SyncSettings,
    config: &Config,
) -> Result<FleetLink, ConfigError> {
    settings.check()?;
    let sync = BreakerSync::new(
        settings.redis.clone(),
        settings.prefix.clone(),
        settings.deadline,
        config,
        settings.interval,
    )?;
    Ok(FleetLink::new(sync, settings.interval))
}

impl<C> CircuitBreakerBuilder<C> {
    /// Shares the breaker with the fleet through Redis (feature `redis`): every instance
    /// feeds one state machine per key and follows it, while each call is still decided
    /// locally, with no round trip. See [`RedisCircuitBreakerBuilder`].
    ///
    /// ```no_run
    /// use tower_bulwark::{redis::RedisBackend, circuit_breaker::CircuitBreakerLayer};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let redis = RedisBackend::connect("redis://127.0.0.1/").await?;
    /// let breaker = CircuitBreakerLayer::consecutive_failures(5)
    ///     .backend(redis)
    ///     .prefix("bulwark:payments-api")
    ///     .build()?;
    /// # drop(breaker);
    /// # Ok(())
    /// # }
    /// ```
    pub fn backend(self, redis: RedisBackend) -> RedisCircuitBreakerBuilder<C> {
        RedisCircuitBreakerBuilder {
            base: self,
            settings: SyncSettings::new(redis, DEFAULT_SYNC_INTERVAL),
        }
    }
}

/// Configures a circuit breaker the fleet shares through Redis; made by
/// [`CircuitBreakerBuilder::backend`].
///
/// Each call is still admitted or refused by this instance's own copy of the breaker, so the
/// request path makes no round trip. A sync task (started by `build`, which must run inside a
/// Tokio runtime) tells the fleet this instance's outcomes every
/// [`sync_interval`](Self::sync_interval), and at once when this instance trips, a probe ends
/// or half-open begins; the fleet's state machine (one Lua script call per key, on the
/// server's clock) folds them in, and every instance follows its answer. So failures seen
/// through one instance open the breaker on every other within one interval. In half-open one
/// instance at a time holds the fleet's probe lease, so the fleet runs at most
/// `half_open_probes` probes at once.
///
/// While Redis is down, or slower than the [`deadline`](Self::deadline), each instance
/// decides alone, as a breaker in memory would (its own trips; its own probes once any lease
/// granted before has run out), tries Redis again once an interval, and says so: a `warn` log
/// and [`FleetStats`](super::FleetStats). [`Circuit::force_open`](super::Circuit::force_open),
/// `force_closed` and `reset` act on this instance only.
///
/// Give each breaker its own [`prefix`](Self::prefix): two layers with the same prefix and
/// key share one state machine.
///
/// ```
/// use std::time::Duration;
/// use tower_bulwark::{redis::RedisBackend, circuit_breaker::CircuitBreakerLayer};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let redis = RedisBackend::connect_lazy("redis://127.0.0.1/")?;
/// let breaker = CircuitBreakerLayer::failure_rate(0.5)
///     .window_time(Duration::from_secs(30))
///     .backend(redis.clone())
///     .prefix("bulwark:inventory")
///     .sync_interval(Duration::from_millis(250))
///     .deadline(Duration::from_millis(20))
///     .build()?;
/// # drop(breaker);
///
/// let err = CircuitBreakerLayer::consecutive_failures(5)
///     .backend(redis)
///     .prefix("{bad}")
///     .build()
///     .unwrap_err();
/// assert_eq!(err.field(), "prefix");
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisCircuitBreakerBuilder<C = DefaultClassifier> {
    base: CircuitBreakerBuilder<C>,
    settings: SyncSettings,
}

impl<C> fmt::Debug for RedisCircuitBreakerBuilder<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisCircuitBreakerBuilder")
            .field("base", &self.base)
            .field("prefix", &self.settings.prefix)
            .field("sync_interval", &self.settings.interval)
            .field("deadline", &self.settings.deadline)
            .finish_non_exhaustive()
    }
}

impl<C> RedisCircuitBreakerBuilder<C> {
    /// The start of every Redis key this breaker uses (default `"bulwark"`): keys are
    /// `{prefix:key}:cb`. No braces.
    ///
    /// ```
    /// # use tower_bulwark::{redis::RedisBackend, circuit_breaker::CircuitBreakerLayer};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let redis = RedisBackend::connect_lazy("redis://127.0.0.1/")?;
    /// let err = CircuitBreakerLayer::consecutive_failures(5).backend(redis).prefix("").build().unwrap_err();
    /// assert_eq!(err.field(), "prefix");
    /// # Ok(())
    /// # }
    /// ```
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.settings.prefix = prefix.into();
        self
    }

    /// How often outcomes are sent and the fleet's state read, unless something happens
    /// sooner (default [`DEFAULT_SYNC_INTERVAL`], 500 ms; from 1 ms to 1 day). Each sync costs
    /// one script call per key this instance holds.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_bulwark::{redis::RedisBackend, circuit_breaker::CircuitBreakerLayer};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let redis = RedisBackend::connect_lazy("redis://127.0.0.1/")?;
    /// let err = CircuitBreakerLayer::consecutive_failures(5)
    ///     .backend(redis)
    ///     .sync_interval(Duration::ZERO)
    ///     .build()
    ///     .unwrap_err();
    /// assert_eq!(err.to_string(), "`sync_interval` must be >= 1ms and <= 1 day, got 0ns");
    /// # Ok(())
    /// # }
    /// ```
    pub fn sync_interval(mut self, interval: Duration) -> Self {
        self.settings.interval = interval;
        self
    }

    /// The longest one sync call may take before this instance decides alone (default
    /// [`DEFAULT_DEADLINE`](crate::redis::DEFAULT_DEADLINE), 50 ms).
    /// Requests never wait on it.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_bulwark::{redis::RedisBackend, circuit_breaker::CircuitBreakerLayer};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let redis = RedisBackend::connect_lazy("redis://127.0.0.1/")?;
    /// let err = CircuitBreakerLayer::consecutive_failures(5)
    ///     .backend(redis)
    ///     .deadline(Duration::ZERO)
    ///     .build()
    ///     .unwrap_err();
    /// assert_eq!(err.field(), "deadline");
    /// # Ok(())
    /// # }
    /// ```
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.settings.deadline = deadline;
        self
    }

    fn into_base(self) -> CircuitBreakerBuilder<C> {
        let mut base = self.base;
        base.fleet = Some(self.settings);
        base
    }

    /// One shared breaker per key: each key has its own state machine in Redis.
    ///
    /// ```
    /// # use tower_bulwark::{redis::RedisBackend, circuit_breaker::CircuitBreakerLayer, key};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let redis = RedisBackend::connect_lazy("redis://127.0.0.1/")?;
    /// let per_upstream = CircuitBreakerLayer::consecutive_failures(5)
    ///     .backend(redis)
    ///     .per_key(key::from_fn(|parts: &http::request::Parts| {
    ///         parts.uri.authority().map(|a| key::Key::from(a.as_str()))
    ///     }))
    ///     .build()?;
    /// # drop(per_upstream);
    /// # Ok(())
    /// # }
    /// ```
    pub fn per_key<K: KeyExtractor<Parts>>(self, key: K) -> KeyedCircuitBreakerBuilder<K, C> {
        self.into_base().per_key(key)
    }

    /// Checks the configuration, builds the HTTP layer and starts its sync task.
    ///
    /// ```
    /// # use tower_bulwark::{redis::RedisBackend, circuit_breaker::CircuitBreakerLayer};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let redis = RedisBackend::connect_lazy("redis://127.0.0.1/")?;
    /// let layer = CircuitBreakerLayer::consecutive_failures(5).backend(redis).build()?;
    /// assert!(layer.fleet_stats().is_some());
    /// # Ok(())
    /// # }
    /// ```
    pub fn build(self) -> Result<CircuitBreakerLayer, ConfigError>
    where
        C: ClassifyResponse,
    {
        self.into_base().build()
    }

    /// Checks the configuration, builds the variant for any `tower::Service` and starts its
    /// sync task.
    ///
    /// ```
    /// # use tower_bulwark::{redis::RedisBackend, circuit_breaker::CircuitBreakerLayer};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let redis = RedisBackend::connect_lazy("redis://127.0.0.1/")?;
    /// let layer = CircuitBreakerLayer::consecutive_failures(5).backend(redis).build_generic()?;
    /// # drop(layer);
    /// # Ok(())
    /// # }
    /// ```
    pub fn build_generic(self) -> Result<GenericCircuitBreakerLayer<C>, ConfigError> {
        self.into_base().build_generic()
    }
}
