//! How a layer answers for itself.
//!
//! HTTP layers reject with a real [`Response`](http::Response) (so an axum `Router` needs no
//! `HandleErrorLayer`): a JSON body for HTTP clients, and for gRPC calls (a `POST` with
//! `content-type: application/grpc*`) a trailers-only gRPC response, HTTP 200 with
//! `grpc-status` and `grpc-message` in the headers. The answer is built in the inner service's own
//! body type, a [`LayerBody`] (any body wrapped in [`ResponseBody`] is one).

mod body;
mod classify;
mod grpc;
mod json;
#[cfg(any(feature = "rate-limit", feature = "circuit-breaker", feature = "retry"))]
mod refusal;

#[cfg(any(feature = "circuit-breaker", feature = "metrics"))]
pub(crate) use body::BodyEnd;
pub use body::{LayerBody, ResponseBody};
pub use classify::Outcome;
#[cfg(any(feature = "rate-limit", feature = "circuit-breaker", feature = "retry"))]
pub(crate) use grpc::grpc_answer;
#[cfg(any(
    feature = "rate-limit",
    feature = "circuit-breaker",
    feature = "retry",
    feature = "cache"
))]
pub(crate) use grpc::is_grpc_call;
#[cfg(feature = "circuit-breaker")]
pub(crate) use grpc::is_grpc_web;
pub use grpc::{grpc_rejection, is_grpc, GrpcCode};
#[cfg(feature = "rate-limit")]
pub(crate) use json::json_bytes;
#[cfg(any(feature = "rate-limit", feature = "circuit-breaker"))]
pub(crate) use json::number;
#[cfg(any(feature = "rate-limit", feature = "circuit-breaker", feature = "cache"))]
pub(crate) use json::polled_after_completion;
#[cfg(feature = "rate-limit")]
pub(crate) use json::put_u64;
#[cfg(any(feature = "rate-limit", feature = "circuit-breaker", feature = "retry"))]
pub(crate) use json::{ceil_secs, retry_json};
pub use json::{json_response, PolledAfterCompletion};
#[cfg(any(feature = "rate-limit", feature = "circuit-breaker", feature = "retry"))]
pub use refusal::{Refusal, RefusalKind};
