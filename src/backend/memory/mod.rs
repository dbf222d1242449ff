//! In-memory backends: synchronous, lock-light, bounded in key count.

#[cfg(feature = "rate-limit")]
mod rate_limit;
mod store;

#[cfg(feature = "rate-limit")]
pub use rate_limit::MemoryRateLimiter;
// Shared by every keyed layer; with none of them enabled it has no user yet.
#[cfg_attr(not(feature = "rate-limit"), allow(unused_imports))]
pub(crate) use store::KeyedStore;
