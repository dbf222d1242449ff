//! Every integration test of tower-bulwark, in one test binary (`cargo test --test it`): one
//! link instead of one per file, and one shared [`common`] module (the inner services, request
//! builders and response readers, the private `redis-server` harness, the fleet helpers).
//!
//! Each module below was a test binary of its own; the features it needs are on its `mod`
//! line. The tests run on parallel threads of this one process, so none may rely on process
//! isolation: no global tracing subscriber, no environment variable set by a test, no fixed
//! port (the Redis harness hands out ports no other test of this process holds). Time moves
//! only through a `ManualClock` or Tokio's paused clock.
//!
//! Run one module with a filter, e.g. `cargo test --all-features --test it redis_fleet::`.

mod common;

#[cfg(feature = "cache")]
mod cache_http;
#[cfg(feature = "cache")]
mod cache_props;
#[cfg(feature = "cache")]
mod cache_rfc;
#[cfg(feature = "circuit-breaker")]
mod circuit_breaker;
#[cfg(feature = "circuit-breaker")]
mod circuit_breaker_grpc;
#[cfg(feature = "circuit-breaker")]
mod circuit_breaker_hardening;
#[cfg(feature = "circuit-breaker")]
mod circuit_breaker_keyed;
#[cfg(all(feature = "compression", feature = "cache"))]
mod compression;
#[cfg(all(feature = "metrics", feature = "axum"))]
mod metrics;
#[cfg(feature = "rate-limit")]
mod rate_limit_axum;
#[cfg(feature = "rate-limit")]
mod rate_limit_config;
#[cfg(feature = "rate-limit")]
mod rate_limit_generic;
#[cfg(feature = "rate-limit")]
mod rate_limit_hardening;
#[cfg(feature = "rate-limit")]
mod rate_limit_http;
#[cfg(feature = "rate-limit")]
mod rate_limit_keys;
#[cfg(feature = "rate-limit")]
mod rate_limit_props;
#[cfg(all(feature = "redis", feature = "cache"))]
mod redis_cache;
#[cfg(all(feature = "redis", feature = "circuit-breaker"))]
mod redis_circuit_breaker;
#[cfg(all(feature = "redis", feature = "circuit-breaker"))]
mod redis_circuit_breaker_faults;
#[cfg(all(feature = "redis", feature = "rate-limit"))]
mod redis_fleet;
mod redis_harness;
#[cfg(all(feature = "redis", feature = "rate-limit"))]
mod redis_rate_limit;
#[cfg(all(feature = "redis", feature = "retry"))]
mod redis_retry_budget;
#[cfg(feature = "retry")]
mod retry;
#[cfg(feature = "retry")]
mod retry_props;
#[cfg(all(feature = "rate-limit", feature = "circuit-breaker"))]
mod shared_mechanisms;
