//! Circuit breaking: stop calling a failing service, answer at once while it is down, and
//! probe carefully before trusting it again.
//!
//! A breaker is **closed** while calls succeed. It **opens** when a policy says the service is
//! failing: [`consecutive_failures`](CircuitBreakerLayer::consecutive_failures) (default 5 in a
//! row), or a [`failure_rate`](CircuitBreakerLayer::failure_rate) over the last N calls or the
//! last period, once enough calls are in; slow calls can count too
//! ([`slow_calls`](CircuitBreakerBuilder::slow_calls)). While open (default 60 s) every call is
//! refused at once: HTTP 503 with `Retry-After` (the time left, in whole seconds rounded up) and
//! a JSON body, gRPC `UNAVAILABLE`, or a [`CircuitOpen`] error from the generic variant. Then it
//! is **half-open**: a bounded number of probes go through at once (default 1), the rest are
//! refused; enough successful probes (default 5) close it, one failure opens it again. A call
//! cancelled before it finishes records nothing and frees its probe slot.
//!
//! What counts as a failure: errors from the inner service (transport errors, timeouts from an
//! inner `Timeout` layer), 5xx, and a `grpc-status` of UNKNOWN, DEADLINE_EXCEEDED, INTERNAL,
//! UNAVAILABLE or DATA_LOSS, read from the response headers or, when they have none, from the
//! trailers at the end of the body (the call is recorded once, when the body ends; a body
//! that ends with no status is a failure, one dropped unread is a cancelled call); 4xx is
//! not. Replace it with
//! [`failure_if`](CircuitBreakerBuilder::failure_if).
//!
//! ```
//! use std::time::Duration;
//! use axum::{routing::get, Router};
//! use tower_bulwark::circuit_breaker::CircuitBreakerLayer;
//!
//! let breaker = CircuitBreakerLayer::consecutive_failures(5)
//!     .open_for(Duration::from_secs(30))
//!     .build()?;
//! let circuit_state = breaker.clone(); // query or force it later: circuit_state.circuit()
//! let app: Router = Router::new()
//!     .route("/api/upstream", get(|| async { "ok" }))
//!     .layer(breaker); // a refusal is a real 503 response: no HandleErrorLayer needed
//! # drop((app, circuit_state));
//! # Ok::<(), tower_bulwark::ConfigError>(())
//! ```
//!
//! One breaker per upstream host or tenant:
//! [`per_key`](CircuitBreakerBuilder::per_key) with any [`KeyExtractor`](crate::key::KeyExtractor),
//! bounded by `max_keys`.
//!
//! # One breaker for a fleet (feature `redis`)
//!
//! [`backend(redis)`](CircuitBreakerBuilder::backend) shares the breaker (each key's, for a
//! keyed layer) with every instance pointed at the same Redis. Calls are still decided by
//! this instance's own copy, with no round trip; a sync task sends the outcomes seen here to
//! the fleet's one state machine per key (a Lua script on the server's clock, keys
//! `{prefix:key}:cb` with a TTL) every [`sync_interval`](RedisCircuitBreakerBuilder::sync_interval)
//! (500 ms by default) and at once when this instance trips, a probe ends or half-open begins,
//! and follows the fleet's answer. Failures add up across instances, and failures seen through
//! one instance open the breaker on the others within one interval. In half-open one instance
//! at a time holds the fleet's probe lease, so the fleet runs at most `half_open_probes` probes
//! at once. With Redis down or slower than the deadline (50 ms), each instance decides alone:
//! logged at `warn`, counted in [`FleetStats`].
//!
//! ```no_run
//! # #[cfg(feature = "redis")]
//! # mod example {
//! use tower_bulwark::{redis::RedisBackend, circuit_breaker::CircuitBreakerLayer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # pub async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let redis = RedisBackend::connect("redis://127.0.0.1:6379/").await?;
//! let breaker = CircuitBreakerLayer::consecutive_failures(5)
//!     .backend(redis)
//!     .prefix("bulwark:payments") // one prefix per breaker
//!     .build()?; // inside a Tokio runtime: it starts the sync task
//! # drop(breaker);
//! # Ok(())
//! # }
//! # }
//! # fn main() {}
//! ```

mod builder;
mod circuit;
mod classify;
mod config;
mod fleet;
mod future;
mod generic;
mod keyed;
mod layer;
#[cfg(feature = "redis")]
mod redis_builder;
mod service;
mod window;

pub use crate::util::DEFAULT_MAX_KEYS;
pub use builder::{CircuitBreakerBuilder, KeyedCircuitBreakerBuilder};
pub use circuit::{Circuit, CircuitStats};
pub use classify::{ClassifyResponse, ClassifyResult, DefaultClassifier};
pub use config::{CircuitEvent, CircuitOpen, CircuitState};
#[cfg(feature = "redis")]
pub use fleet::FleetStats;
pub use future::ResponseFuture;
pub use generic::{GenericCircuitBreaker, GenericCircuitBreakerLayer, GenericResponseFuture};
pub use keyed::{KeyedCircuitBreaker, KeyedCircuitBreakerLayer};
pub use layer::CircuitBreakerLayer;
#[cfg(feature = "redis")]
pub use redis_builder::{RedisCircuitBreakerBuilder, DEFAULT_SYNC_INTERVAL};
pub use service::CircuitBreaker;
