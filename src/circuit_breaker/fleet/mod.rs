//! A breaker the fleet shares through Redis (feature `redis`): the local side.
//!
//! The request path never waits on Redis. Every call is admitted or refused by the local
//! circuit, exactly as in memory, and its outcome is tallied. One sync task per layer sends
//! each circuit's tally to the fleet's state machine (one Lua script call per key:
//! `fleet/breaker.lua`) every `sync_interval`, and at once when this instance trips,
//! a probe ends, or a circuit enters half-open; the script answers with the fleet's state, and
//! the local circuit follows it. In half-open only the instance holding the fleet's probe lease
//! probes, so the fleet as a whole runs at most `half_open_probes` probes at once.
//!
//! While Redis cannot be reached (down, or slower than the deadline) the local circuit decides
//! alone, with its own trips and its own probes: the fallback, logged once at `warn` when it
//! begins and at `info` when it ends, and counted in [`FleetStats`].

#[cfg(not(feature = "redis"))]
mod absent;
#[cfg(feature = "redis")]
mod link;
#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "redis")]
mod tally;

#[cfg(feature = "redis")]
pub use crate::redis::FleetStats;
#[cfg(not(feature = "redis"))]
pub(crate) use absent::{start_keyed, start_one, FleetLink, Tally};
#[cfg(feature = "redis")]
pub(crate) use link::{
    redis_key_of, start_keyed, start_one, stats_of, sync_now, FleetLink, FleetView,
};
#[cfg(feature = "redis")]
pub(crate) use redis::BreakerSync;
#[cfg(feature = "redis")]
pub(crate) use tally::{Report, Tally};
