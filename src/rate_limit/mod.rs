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
//!   [`RateLimitBuilder::on_rejection`]); gRPC calls (`POST`, `content-type: application/grpc*`)
//!   get a trailers-only response with
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
//!
//! # One limit for a fleet (feature `redis`)
//!
//! [`RateLimitBuilder::backend`] keeps the counts in Redis, shared by every instance that uses
//! the same Redis and prefix ([`store::RedisRateLimiter`]). How a decision is made, and why it holds across a fleet:
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
//!   [`FailMode`](crate::redis::FailMode) for when Redis is down, slow or frozen. After
//!   consecutive failures Redis is left alone for a back-off (decisions use the fail mode at
//!   once), then probed by one call. Each change is logged once at `warn`;
//!   [`RedisStats`](store::RedisStats) counts degraded decisions.
//! - **Refused keys are answered locally** until their retry time: a client that keeps
//!   knocking on a limit it has hit costs no round trip.
//! - **API keys are hashed** (SHA-256, salted with
//!   [`RedisBackend::key_secret`](crate::redis::RedisBackend::key_secret) if set) before they
//!   become key names: whoever reads Redis cannot read them.

mod algorithm;
mod builder;
mod config;
mod future;
mod generic;
pub mod headers;
mod layer;
mod limit;
#[cfg(feature = "redis")]
mod redis_builder;
mod refund;
mod service;
mod stats;
pub mod store;

pub use algorithm::Algorithm;
pub use builder::{RateLimitBuilder, DEFAULT_MAX_KEYS};
pub use config::{KeyMissing, MissingKey, RateLimited};
pub use future::ResponseFuture;
pub use generic::{GenericRateLimit, GenericRateLimitLayer, GenericResponseFuture};
pub use headers::ResetFormat;
pub use layer::RateLimitLayer;
pub use limit::{Limit, MAX_COUNT, MAX_PERIOD};
#[cfg(feature = "redis")]
pub use redis_builder::{RedisRateLimitBuilder, DEFAULT_REDIS_DEADLINE};
pub use service::RateLimit;
pub use stats::RateLimitStats;
