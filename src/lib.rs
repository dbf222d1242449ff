//! # tower-bulwark
//!
//! Composable [Tower](https://docs.rs/tower) layers that keep HTTP and gRPC APIs fast and standing
//! under load. Each layer is a standalone `tower::Layer`, usable alone or stacked, in memory by
//! default.
//!
//! | module | what it does |
//! |---|---|
//! | [`rate_limit`] | token bucket (GCRA), sliding window log, sliding window counter, fixed window; 429 with headers |
//! | [`key`] | which bucket a request counts in: global, peer IP, client IP behind trusted proxies, header, closure |
//! | [`circuit_breaker`] | closed → open → half-open on consecutive failures, failure rates or slow calls; 503 with `Retry-After` |
//! | [`retry`] | jittered exponential backoff, `Retry-After` and gRPC pushback, body replay, retry budgets |
//! | [`cache`] | `Cache-Control` policies, strong ETags, conditional requests per RFC 9110 (304, 412), lost-update protection, a validator store |
//! | [`compression`] | gzip, deflate, brotli, zstd by `Accept-Encoding`, with the guides' defaults; ETags derived per encoding so 304s and `If-Match` stay right; compressors reused per thread |
//! | [`metrics`] | Prometheus histograms, counters and an in-flight gauge by method, route template and status; p50/p95/p99 and SLO checks over a sliding window; the `/metrics` exposition |
//! | [`clock`] | the one time source every layer reads, real or manual (for tests) |
//! | [`response`] | how layers answer for themselves: JSON for HTTP, trailers-only for gRPC |
//! | [`redis`] | (feature `redis`) one connection shared by every layer whose state a fleet shares |
//!
//! State lives in memory, bounded in keys, unless a layer is given a Redis backend: then a
//! fleet of instances shares one limit, one breaker, one retry budget and one validator store.
//! Adaptive limits are planned; the README's status table tracks them. How the
//! crate is put together is in `ARCHITECTURE.md`.
//!
//! ```
//! use std::time::Duration;
//! use axum::{routing::get, Router};
//! use tower::ServiceBuilder;
//! use tower_bulwark::{key::PeerIp, rate_limit::RateLimitLayer};
//!
//! let per_client = RateLimitLayer::token_bucket(100, Duration::from_secs(60))
//!     .burst(20)
//!     .key(PeerIp)
//!     .build()?; // a ConfigError names the bad field
//! let app: Router = Router::new()
//!     .route("/api/orders", get(|| async { "[]" }))
//!     .layer(ServiceBuilder::new().layer(per_client)); // no HandleErrorLayer needed
//! # drop(app);
//! # Ok::<(), tower_bulwark::ConfigError>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

#[cfg(feature = "cache")]
pub mod cache;
#[cfg(feature = "circuit-breaker")]
pub mod circuit_breaker;
pub mod clock;
#[cfg(feature = "compression")]
pub mod compression;
mod error;
#[cfg(any(feature = "cache", feature = "compression"))]
mod headers;
pub mod key;
#[cfg(feature = "metrics")]
pub mod metrics;
#[cfg(feature = "rate-limit")]
pub mod rate_limit;
#[cfg(feature = "redis")]
pub mod redis;
pub mod response;
#[cfg(feature = "retry")]
pub mod retry;
mod util;

pub use error::{BackendError, BoxError, ConfigError};

// The README's Rust samples are compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
