//! What a breaker counts as a failure: the one `failure_if` setting every variant takes on
//! its builder, judged by the HTTP layers on a response's head (and a gRPC status in its
//! trailers) and by the generic layer on the whole result.

use http::{HeaderMap, StatusCode};

use crate::response::Outcome;

/// Decides which responses of the HTTP breakers ([`build`](super::CircuitBreakerBuilder::build),
/// `per_key(..).build()`) are failures, from the status and the headers (or, for a gRPC
/// answer whose status travels at the end of its body, the trailers). Errors from the inner
/// service always are. Any `Fn(StatusCode, &HeaderMap) -> bool` is one.
///
/// ```
/// use http::{HeaderMap, StatusCode};
/// use tower_bulwark::circuit_breaker::{ClassifyResponse, DefaultClassifier};
///
/// let none = HeaderMap::new();
/// assert!(ClassifyResponse::is_failure(&DefaultClassifier, StatusCode::BAD_GATEWAY, &none));
/// let and_429 = |status: StatusCode, _: &HeaderMap| status.is_server_error() || status == 429;
/// assert!(and_429.is_failure(StatusCode::TOO_MANY_REQUESTS, &none));
/// ```
pub trait ClassifyResponse: Send + Sync + 'static {
    /// True when a response with `status` and `headers` counts as a failure.
    fn is_failure(&self, status: StatusCode, headers: &HeaderMap) -> bool;
}

impl<F> ClassifyResponse for F
where
    F: Fn(StatusCode, &HeaderMap) -> bool + Send + Sync + 'static,
{
    fn is_failure(&self, status: StatusCode, headers: &HeaderMap) -> bool {
        self(status, headers)
    }
}

/// Decides whether a call of the generic breaker
/// ([`build_generic`](super::CircuitBreakerBuilder::build_generic)) failed, from its whole
/// result. Any `Fn(&Result<T, E>) -> bool` is one.
///
/// ```
/// use tower_bulwark::circuit_breaker::{ClassifyResult, DefaultClassifier};
///
/// let result: Result<u32, std::io::Error> = Ok(7);
/// assert!(!DefaultClassifier.is_failure(&result));
/// let odd_fails = |r: &Result<u32, std::io::Error>| matches!(r, Ok(n) if n % 2 == 1);
/// assert!(odd_fails.is_failure(&result));
/// ```
pub trait ClassifyResult<T, E> {
    /// True when `result` counts as a failure.
    fn is_failure(&self, result: &Result<T, E>) -> bool;
}

impl<F, T, E> ClassifyResult<T, E> for F
where
    F: Fn(&Result<T, E>) -> bool,
{
    fn is_failure(&self, result: &Result<T, E>) -> bool {
        self(result)
    }
}

/// What every breaker counts as a failure until `failure_if` says otherwise: the crate's
/// one [`Outcome`] classifier. For the HTTP layers, errors, 5xx and a failing `grpc-status`
/// (UNKNOWN, DEADLINE_EXCEEDED, INTERNAL, UNAVAILABLE, DATA_LOSS); for the generic layer,
/// every error.
///
/// ```
/// use http::{HeaderMap, StatusCode};
/// use tower_bulwark::circuit_breaker::{ClassifyResponse, ClassifyResult, DefaultClassifier};
///
/// let none = HeaderMap::new();
/// assert!(!ClassifyResponse::is_failure(&DefaultClassifier, StatusCode::NOT_FOUND, &none));
/// assert!(ClassifyResult::is_failure(&DefaultClassifier, &Err::<(), _>("down")));
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultClassifier;

impl ClassifyResponse for DefaultClassifier {
    #[inline]
    fn is_failure(&self, status: StatusCode, headers: &HeaderMap) -> bool {
        Outcome::of_response(status, headers).is_failure()
    }
}

impl<T, E> ClassifyResult<T, E> for DefaultClassifier {
    #[inline]
    fn is_failure(&self, result: &Result<T, E>) -> bool {
        result.is_err()
    }
}
