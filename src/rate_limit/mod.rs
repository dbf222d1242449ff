//! Rate limiting: refuse requests over a limit with a real 429, in microseconds.
//!
//! Four algorithms, each a [`Limit`]:
//!
//! | algorithm | promise | state per key |
//! |---|---|---|
//! | [`token_bucket`](RateLimitLayer::token_bucket) (GCRA) | `burst` at once, then `limit` per `period`, evenly | one timestamp (a lock-free atomic) |
//! | [`sliding_window_log`](RateLimitLayer::sliding_window_log) | at most `limit` in any window of `period`, exactly | one entry per admitted request |
//! | [`sliding_window_counter`](RateLimitLayer::sliding_window_counter) | at most `limit` per aligned window, weighted across the boundary | two counters |
//! | [`fixed_window`](RateLimitLayer::fixed_window) | at most `limit` per aligned window | one counter |
//!
//! A layer may hold several limits (10 per second *and* 1000 per hour): a request passes only if
//! every limit allows it, and a request refused by one consumes nothing from the others.
//!
//! # Answers
//!
//! * Admitted responses carry `X-RateLimit-Limit`, `X-RateLimit-Remaining`, `X-RateLimit-Reset`
//!   and the IETF draft's `RateLimit-Policy` and `RateLimit` (see [`headers`]).
//! * Refused requests get `429 Too Many Requests` with `Retry-After` (whole seconds, rounded up)
//!   and the body `{"error":"Too many requests","retryAfter":N}` (replace it with
//!   [`RateLimitBuilder::on_rejection`]); gRPC requests get a trailers-only response with
//!   `grpc-status: 8` (`RESOURCE_EXHAUSTED`).
//! * A request without a key gets [`MissingKey`]'s answer (default 500).
//!
//! The decision is made in `call`, never by parking the caller in `poll_ready`, so an axum
//! `Router` can use the layer with no `HandleErrorLayer`. For a service that is not HTTP,
//! [`RateLimitBuilder::build_generic`] makes a layer that fails with a [`RateLimited`] error.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use axum::{routing::get, Router};
//! use tower_bulwark::{key::PeerIp, rate_limit::RateLimitLayer};
//!
//! let limit = RateLimitLayer::token_bucket(100, Duration::from_secs(60)) // 100 per minute
//!     .burst(20)
//!     .key(PeerIp)
//!     .build()?;
//! let app: Router = Router::new().route("/api/orders", get(|| async { "[]" })).layer(limit);
//! # drop(app);
//! # Ok::<(), tower_bulwark::ConfigError>(())
//! ```
//!
//! # Refunds and shadow mode
//!
//! [`skip_successful`](RateLimitBuilder::skip_successful) and
//! [`skip_failed`](RateLimitBuilder::skip_failed) count every request when it arrives, then give
//! its cost back once the response status shows it should not have counted.
//! [`shadow`](RateLimitBuilder::shadow) decides and counts but lets everything through.

pub(crate) mod algorithm;
mod builder;
mod config;
mod future;
mod generic;
pub mod headers;
mod layer;
mod limit;
#[cfg(feature = "redis")]
mod redis_builder;
mod service;

pub use algorithm::Algorithm;
pub use builder::{RateLimitBuilder, DEFAULT_MAX_KEYS};
pub use config::{KeyMissing, MissingKey, RateLimitStats, RateLimited};
pub use future::ResponseFuture;
pub use generic::{GenericRateLimit, GenericRateLimitLayer, GenericResponseFuture};
pub use headers::ResetFormat;
pub use layer::RateLimitLayer;
pub use limit::{Limit, MAX_COUNT, MAX_PERIOD};
#[cfg(feature = "redis")]
pub use redis_builder::{RedisRateLimitBuilder, DEFAULT_REDIS_DEADLINE};
pub use service::RateLimit;
