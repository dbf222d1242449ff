//! Redis (feature `redis`): one connection handle, and the mechanisms every layer uses to
//! keep fleet-wide state there. This module knows no layer; each layer brings its own Lua
//! script and its argument and reply encoding, and calls these:
//!
//! | piece | what it does |
//! |---|---|
//! | [`RedisBackend`] | the shared connection (a server, or a cluster with `redis-cluster`) |
//! | key naming | `{prefix:key}:...`: one hash tag per key, so one slot; API keys hashed |
//! | script calls | `EVALSHA`, `EVAL` on `NOSCRIPT`, a deadline kept by the layer's own timer |
//! | health | after consecutive outages, leave Redis alone for a back-off, then probe once |
//! | batch sync | a task per layer that syncs local state every interval, or sooner when woken |
//!
//! The Redis rules every layer keeps: one round trip per decision or per key per sync (a
//! script, never a read-modify-write from the client), the server's clock (`TIME`), a TTL on
//! every key, a deadline on every call, and an explicit answer when Redis cannot give one: a
//! rate limiter's [`FailMode`], a breaker's local state. How the rate limiter uses Redis is
//! told in [`rate_limit`](crate::rate_limit#one-limit-for-a-fleet-feature-redis); the breaker,
//! in [`circuit_breaker`](crate::circuit_breaker#one-breaker-for-a-fleet-feature-redis); the
//! retry budget, in [`RetryBudget`](crate::retry::RetryBudget#one-budget-for-a-fleet-feature-redis).
//!
//! ```no_run
//! use std::time::Duration;
//! use tower_bulwark::redis::{FailMode, RedisBackend};
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

// The mechanisms are compiled whole with any layer that keeps state in Redis; with only one
// layer on, the other's parts have no caller.
#![cfg_attr(
    not(all(
        feature = "rate-limit",
        feature = "circuit-breaker",
        feature = "retry",
        feature = "cache"
    )),
    allow(dead_code, unused_imports)
)]

mod connection;
#[cfg(any(
    feature = "rate-limit",
    feature = "circuit-breaker",
    feature = "retry",
    feature = "cache"
))]
mod health;
#[cfg(any(
    feature = "rate-limit",
    feature = "circuit-breaker",
    feature = "retry",
    feature = "cache"
))]
mod keys;
#[cfg(any(
    feature = "rate-limit",
    feature = "circuit-breaker",
    feature = "retry",
    feature = "cache"
))]
mod script;
#[cfg(any(
    feature = "rate-limit",
    feature = "circuit-breaker",
    feature = "retry",
    feature = "cache"
))]
mod stats;
#[cfg(any(
    feature = "rate-limit",
    feature = "circuit-breaker",
    feature = "retry",
    feature = "cache"
))]
mod sync;

pub use connection::RedisBackend;
#[cfg(any(
    feature = "rate-limit",
    feature = "circuit-breaker",
    feature = "retry",
    feature = "cache"
))]
pub(crate) use health::{
    Health, Permit, ProbeGuard, DEFAULT_BACKOFF, DEFAULT_FAILURE_THRESHOLD, MAX_BACKOFF,
};
#[cfg(any(
    feature = "rate-limit",
    feature = "circuit-breaker",
    feature = "retry",
    feature = "cache"
))]
pub(crate) use keys::{check_prefix, instance_id, KeyNames, DEFAULT_PREFIX};
#[cfg(any(
    feature = "rate-limit",
    feature = "circuit-breaker",
    feature = "retry",
    feature = "cache"
))]
pub(crate) use script::{integer_list, CallError, Script};
#[cfg(any(
    feature = "rate-limit",
    feature = "circuit-breaker",
    feature = "retry",
    feature = "cache"
))]
pub use stats::FleetStats;
#[cfg(any(
    feature = "rate-limit",
    feature = "circuit-breaker",
    feature = "retry",
    feature = "cache"
))]
pub(crate) use stats::SyncCounters;
#[cfg(any(
    feature = "rate-limit",
    feature = "circuit-breaker",
    feature = "retry",
    feature = "cache"
))]
pub(crate) use sync::{each_bounded, BatchSync, Round, SyncSettings, SyncTask};

/// The default bound on one Redis call, kept by each layer's own timer: 50 ms.
///
/// ```
/// use std::time::Duration;
/// assert_eq!(tower_bulwark::redis::DEFAULT_DEADLINE, Duration::from_millis(50));
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
/// use tower_bulwark::redis::FailMode;
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
