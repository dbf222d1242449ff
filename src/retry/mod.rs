//! Retries that heal transient failures without turning an outage into a retry storm.
//!
//! [`RetryLayer`] wraps a client-side service of HTTP requests (a hyper-util `Client`, a
//! tonic channel, or the service a server calls its upstreams through) and sends a failed
//! request again:
//!
//! * **when**: after a connection error or a timeout, a 429, 502, 503 or 504, or a gRPC
//!   `UNAVAILABLE` (replace it with [`retry_if`](RetryLayerBuilder::retry_if)); never after a
//!   refusal of this crate's circuit breaker (its 503 or its `CircuitOpen` error): an open
//!   breaker is not hammered;
//! * **what**: only requests that may be sent twice: idempotent methods (GET, HEAD, OPTIONS,
//!   PUT, DELETE, TRACE), requests with an `Idempotency-Key`, and gRPC calls, unless
//!   [`any_method`](RetryLayerBuilder::any_method); bodies up to 64 KiB are kept and replayed
//!   byte for byte, a larger or streaming body gets one attempt, and nothing is buffered when
//!   no retry is possible;
//! * **how often**: up to 3 retries, after exponential backoff from 1 s doubling to a cap of
//!   30 s, with full jitter (also equal, decorrelated, proportional ±10 %, none; see
//!   [`Jitter`]), or after the server's `Retry-After` (seconds or an HTTP date, capped at
//!   30 s) or gRPC `grpc-retry-pushback-ms` (a negative or malformed one means "do not
//!   retry"); an optional per-attempt timeout and overall deadline;
//! * **how much**: within a [`RetryBudget`], by default 20 % of the requests of the last 10 s
//!   plus 10 per second, so that when everything fails, retries add a fifth to the load
//!   instead of multiplying it by four.
//!
//! The inner service receives [`RetryBody`] request bodies. Errors arrive boxed, as tower's
//! own `Timeout` gives them.
//!
//! ```
//! use std::time::Duration;
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::Full;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_bulwark::retry::{RetryBody, RetryLayer};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), tower_bulwark::BoxError> {
//! // Stands in for a hyper-util `Client<_, RetryBody<Full<Bytes>>>`.
//! let upstream = service_fn(|req: Request<RetryBody<Full<Bytes>>>| async move {
//!     Ok::<_, std::convert::Infallible>(Response::new(format!("{} {}", req.method(), req.uri())))
//! });
//! let client = ServiceBuilder::new()
//!     .layer(
//!         RetryLayer::builder()
//!             .max_retries(3)
//!             .attempt_timeout(Duration::from_secs(2))
//!             .deadline(Duration::from_secs(10))
//!             .on_event(|event| eprintln!("{event}"))
//!             .build()?,
//!     )
//!     .service(upstream);
//! let res = client.oneshot(Request::get("/orders").body(Full::new(Bytes::new()))?).await?;
//! assert_eq!(res.body(), "GET /orders");
//! # Ok(())
//! # }
//! ```
//!
//! With a circuit breaker, put the retry outside and the breaker inside (the guides'
//! resilient client): each attempt asks the breaker, and an open breaker ends the retries.

mod backoff;
mod body;
mod budget;
mod builder;
mod config;
mod events;
mod future;
mod hedge;
mod hint;
mod layer;
mod policy;
mod random;
mod service;

pub use backoff::{Backoff, Jitter};
pub use body::RetryBody;
#[cfg(feature = "redis")]
pub use budget::RedisRetryBudgetBuilder;
pub use budget::{RetryBudget, RetryBudgetBuilder};
pub use builder::{RetryLayerBuilder, DEFAULT_MAX_BODY};
pub use config::TimedOut;
pub use events::{GiveUp, RetryEvent, RetryStats};
pub use future::ResponseFuture;
pub use hedge::Hedge;
pub use hint::parse_retry_after;
pub use layer::RetryLayer;
pub use policy::{DefaultRetryIf, RetryIf};
pub use random::{Random, SeededRandom, ThreadRandom};
pub use service::Retry;
