//! Redis backends (feature `redis`): one limit, or one circuit breaker, shared by every
//! instance of a service. (The breaker's side is described in
//! [`circuit_breaker`](crate::circuit_breaker#one-breaker-for-a-fleet-feature-redis); what
//! follows is the rate limiter's.)
//!
//! How a decision is made, and why it holds across a fleet:
//!
//! - **One round trip, decided in Redis.** Each layer has one Lua script, composed from the
//!   scripts of the algorithms its limits use (`lua/*.lua`, each mirroring the in-memory
//!   algorithm). It is sent once and then called by `EVALSHA` (reloaded on `NOSCRIPT`); it
//!   checks every limit and spends the cost on all or none, so concurrent instances never
//!   read-modify-write from the client and never over-admit.
//! - **Server time.** The script reads `TIME`; instance clocks, however skewed, play no part.
//! - **Cluster-ready keys with TTLs.** Every key of one decision is `{prefix:key}:limit...`, one
//!   hash tag, so one slot; each is given a TTL from its window.
//! - **A deadline on every call** (default 50 ms), kept by the layer's own timer, and a
//!   [`FailMode`] for when Redis is down, slow or frozen. After consecutive failures Redis is
//!   left alone for a back-off (decisions use the fail mode at once), then probed by one call.
//!   Each change is logged once at `warn`; [`RedisStats`] counts degraded decisions.
//! - **Refused keys are answered locally** until their retry time: a client that keeps
//!   knocking on a limit it has hit costs no round trip.
//!
//! ```no_run
//! use std::time::Duration;
//! use tower_bulwark::backend::redis::{FailMode, RedisBackend};
//! use tower_bulwark::{key::PeerIp, rate_limit::RateLimitLayer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let redis = RedisBackend::connect("redis://127.0.0.1/").await?;
//! let layer = RateLimitLayer::token_bucket(100, Duration::from_secs(60))
//!     .key(PeerIp)
//!     .backend(redis.clone())
//!     .fail_mode(FailMode::Local { instances: 4 })
//!     .deadline(Duration::from_millis(20))
//!     .build()?;
//! # drop(layer);
//! # Ok(())
//! # }
//! ```

#[cfg(feature = "circuit-breaker")]
mod breaker;
mod connection;
#[cfg(feature = "rate-limit")]
mod denied;
#[cfg(feature = "rate-limit")]
mod health;
#[cfg(any(feature = "rate-limit", feature = "circuit-breaker"))]
mod keys;
#[cfg(feature = "rate-limit")]
mod rate_limit;
#[cfg(feature = "rate-limit")]
mod script;

#[cfg(feature = "circuit-breaker")]
pub(crate) use breaker::BreakerSync;
pub use connection::RedisBackend;
#[cfg(any(feature = "rate-limit", feature = "circuit-breaker"))]
pub(crate) use keys::check_prefix;
#[cfg(feature = "rate-limit")]
pub use rate_limit::{RedisDecision, RedisRateLimiter, RedisStats};

#[cfg(feature = "rate-limit")]
pub(crate) use rate_limit::Settings;
#[cfg(feature = "rate-limit")]
pub(crate) use script::RedisQuota;

/// The default bound on one Redis call, kept by each layer's own timer: 50 ms.
///
/// ```
/// use std::time::Duration;
/// assert_eq!(tower_bulwark::backend::redis::DEFAULT_DEADLINE, Duration::from_millis(50));
/// ```
pub const DEFAULT_DEADLINE: std::time::Duration = std::time::Duration::from_millis(50);

/// What a layer decides when Redis cannot (down, slow past the deadline, frozen, or being left
/// alone after failures).
///
/// None keeps a limit exact across an outage: `Open` admits everything while Redis is away,
/// `Closed` refuses everything, and `Local` admits up to each limit divided by `instances` per
/// instance, from the instance's own state and uncounted in Redis, so across an outage and its
/// recovery one key can be admitted up to its shared allowance plus each instance's local one.
/// "Away" lasts until a probe succeeds, up to one back-off after Redis is back. A call given up
/// at the deadline may still be counted by Redis later: that only makes the limit stricter.
///
/// ```
/// use tower_bulwark::backend::redis::FailMode;
///
/// assert_eq!(FailMode::default(), FailMode::Open);
/// let local = FailMode::Local { instances: 4 }; // each instance allows a quarter
/// # drop(local);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailMode {
    /// Admit every request (no rate-limit headers are sent). Availability first: the default,
    /// as in most API gateways.
    #[default]
    Open,
    /// Refuse every request (429, `Retry-After: 1`). Protection first.
    Closed,
    /// Decide in memory with each limit (and burst) divided by `instances`, rounded down and at
    /// least 1: while Redis is away, a fleet of that many instances admits about the shared
    /// limit in total (on top of what Redis admitted before and admits after).
    Local {
        /// How many instances share the limit.
        instances: u32,
    },
}
