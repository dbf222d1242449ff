//! In-memory backends: synchronous, lock-light, bounded in key count.

#[cfg(feature = "rate-limit")]
mod rate_limit;
mod store;

#[cfg(feature = "rate-limit")]
pub use rate_limit::MemoryRateLimiter;
pub(crate) use store::KeyedStore;
