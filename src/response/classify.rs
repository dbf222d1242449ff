//! The one outcome classifier: what a finished call says about the service that answered it.
//! The breaker counts failures with it, the rate limiter's refunds (`skip_failed`,
//! `skip_successful`) ask it whether a call failed, and the next layers (retry, metrics) read
//! the same answer, so that "failed" means one thing across the crate.

use http::{HeaderMap, HeaderName, StatusCode};

const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// How a call ended, as this crate's layers judge it.
///
/// ```
/// use http::{HeaderMap, StatusCode};
/// use tower_bulwark::response::Outcome;
///
/// let none = HeaderMap::new();
/// assert_eq!(Outcome::of_response(StatusCode::OK, &none), Outcome::Success);
/// assert_eq!(Outcome::of_response(StatusCode::NOT_FOUND, &none), Outcome::ClientError);
/// assert_eq!(Outcome::of_response(StatusCode::BAD_GATEWAY, &none), Outcome::Failure);
///
/// // gRPC: HTTP 200 with the status in `grpc-status` (headers, or trailers at the body's end).
/// let mut grpc = HeaderMap::new();
/// grpc.insert("grpc-status", "14".parse().unwrap()); // UNAVAILABLE
/// assert_eq!(Outcome::of_response(StatusCode::OK, &grpc), Outcome::Failure);
/// grpc.insert("grpc-status", "5".parse().unwrap()); // NOT_FOUND: the caller's doing
/// assert_eq!(Outcome::of_response(StatusCode::OK, &grpc), Outcome::ClientError);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Outcome {
    /// The call succeeded: a 1xx to 3xx status, gRPC `OK`.
    Success,
    /// The caller's fault, the service is fine: a 4xx; a gRPC status other than `OK` and the
    /// server's own failures (`INVALID_ARGUMENT`, `NOT_FOUND`, `RESOURCE_EXHAUSTED`, ...).
    ClientError,
    /// The service failed: a 5xx; gRPC `UNKNOWN` (2), `DEADLINE_EXCEEDED` (4), `INTERNAL`
    /// (13), `UNAVAILABLE` (14), `DATA_LOSS` (15); a transport error or timeout.
    Failure,
}

impl Outcome {
    /// The outcome of a response with `status` and `headers` (a `grpc-status` among them, if
    /// any; a gRPC response whose status travels in its trailers is judged with
    /// [`of_trailers`](Self::of_trailers) when its body ends).
    ///
    /// ```
    /// use tower_bulwark::response::Outcome;
    /// let outcome = Outcome::of_response(http::StatusCode::SERVICE_UNAVAILABLE, &http::HeaderMap::new());
    /// assert!(outcome.is_failure());
    /// ```
    #[inline]
    pub fn of_response(status: StatusCode, headers: &HeaderMap) -> Self {
        if status.is_server_error() {
            return Outcome::Failure;
        }
        match Self::of_trailers(headers) {
            Outcome::Failure => Outcome::Failure,
            _ if status.is_client_error() => Outcome::ClientError,
            outcome => outcome,
        }
    }

    /// The outcome told by an HTTP status alone: for responses that are not gRPC, whose
    /// headers carry no status of their own (no header lookup).
    ///
    /// ```
    /// use tower_bulwark::response::Outcome;
    /// assert_eq!(Outcome::of_status(http::StatusCode::TOO_MANY_REQUESTS), Outcome::ClientError);
    /// ```
    #[inline]
    pub fn of_status(status: StatusCode) -> Self {
        if status.is_server_error() {
            Outcome::Failure
        } else if status.is_client_error() {
            Outcome::ClientError
        } else {
            Outcome::Success
        }
    }

    /// The outcome told by a `grpc-status` in `headers` (trailers, or the headers of a
    /// trailers-only response): [`Success`](Self::Success) when there is none.
    ///
    /// ```
    /// use tower_bulwark::response::Outcome;
    ///
    /// let mut trailers = http::HeaderMap::new();
    /// trailers.insert("grpc-status", "13".parse().unwrap());
    /// assert_eq!(Outcome::of_trailers(&trailers), Outcome::Failure);
    /// ```
    pub fn of_trailers(headers: &HeaderMap) -> Self {
        match headers.get(GRPC_STATUS).map(|code| code.as_bytes()) {
            None | Some(b"0") => Outcome::Success,
            // The server's fault. Others (NOT_FOUND, INVALID_ARGUMENT, ...) are the caller's,
            // as 4xx are.
            Some(b"2" | b"4" | b"13" | b"14" | b"15") => Outcome::Failure,
            Some(_) => Outcome::ClientError,
        }
    }

    /// A call that ended in an error instead of a response (connection refused or reset, a
    /// timeout): a failure of the service.
    ///
    /// ```
    /// assert!(tower_bulwark::response::Outcome::of_error().is_failure());
    /// ```
    pub fn of_error() -> Self {
        Outcome::Failure
    }

    /// The service failed: what trips a breaker (and what a retry may heal).
    ///
    /// ```
    /// use tower_bulwark::response::Outcome;
    /// assert!(!Outcome::ClientError.is_failure());
    /// ```
    pub fn is_failure(self) -> bool {
        self == Outcome::Failure
    }

    /// The call did not succeed, whoever's fault it was: what a rate limit's `skip_failed`
    /// refunds and `skip_successful` keeps.
    ///
    /// ```
    /// use tower_bulwark::response::Outcome;
    /// assert!(Outcome::ClientError.is_error() && Outcome::Failure.is_error());
    /// assert!(!Outcome::Success.is_error());
    /// ```
    pub fn is_error(self) -> bool {
        self != Outcome::Success
    }
}
