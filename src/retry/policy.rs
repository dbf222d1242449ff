//! What may be retried: which requests (idempotent ones, or those carrying an
//! `Idempotency-Key`, and gRPC calls) and which results (transport errors, timeouts, 429 and
//! 502–504, gRPC `UNAVAILABLE`). A refusal of this crate's own circuit breaker is never
//! retried, whatever the predicate says: it is checked before it.

use http::{HeaderMap, HeaderName, Method, Response, StatusCode};

use crate::response::{GrpcCode, Refusal, RefusalKind};
use crate::BoxError;

const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// Decides whether a finished attempt should be tried again: the predicate of
/// [`retry_if`](super::RetryLayerBuilder::retry_if), which judges the whole result, response or
/// error (every inner error arrives boxed). Any `Fn(&Result<Response<B>, BoxError>) -> bool`
/// is one.
///
/// ```
/// use http::Response;
/// use tower_bulwark::{retry::RetryIf, BoxError};
///
/// let only_503 = |result: &Result<Response<()>, BoxError>| {
///     matches!(result, Ok(res) if res.status() == 503)
/// };
/// let res = Response::builder().status(503).body(()).unwrap();
/// assert!(only_503.should_retry(&Ok(res)));
/// ```
pub trait RetryIf<B>: Send + Sync + 'static {
    /// True to try again (if the budget, the attempts left and the deadline allow).
    fn should_retry(&self, result: &Result<Response<B>, BoxError>) -> bool;

    /// As [`should_retry`](Self::should_retry), told whether the request was a gRPC call, so
    /// that a predicate can skip what only a gRPC answer carries (the default predicate reads
    /// `grpc-status` only then). The layer calls this one; by default it asks `should_retry`.
    ///
    /// ```
    /// use http::Response;
    /// use tower_bulwark::{retry::{DefaultRetryIf, RetryIf}, BoxError};
    ///
    /// let unavailable: Result<Response<()>, BoxError> =
    ///     Ok(Response::builder().header("grpc-status", "14").body(()).unwrap());
    /// assert!(DefaultRetryIf::default().should_retry_call(&unavailable, true));
    /// assert!(!DefaultRetryIf::default().should_retry_call(&unavailable, false)); // a 200 to plain HTTP
    /// ```
    fn should_retry_call(&self, result: &Result<Response<B>, BoxError>, grpc: bool) -> bool {
        let _ = grpc;
        self.should_retry(result)
    }
}

impl<B, F> RetryIf<B> for F
where
    F: Fn(&Result<Response<B>, BoxError>) -> bool + Send + Sync + 'static,
{
    fn should_retry(&self, result: &Result<Response<B>, BoxError>) -> bool {
        self(result)
    }
}

/// The default predicate: every error (connection refused or reset, a timeout) except a
/// refusal of this crate's breaker; the statuses 429, 502, 503 and 504; for a gRPC response
/// that carries its status in its headers (a trailers-only answer), `UNAVAILABLE`. Both sets
/// can be changed on the builder ([`retry_statuses`](super::RetryLayerBuilder::retry_statuses),
/// [`retry_grpc_codes`](super::RetryLayerBuilder::retry_grpc_codes)).
///
/// ```
/// use http::Response;
/// use tower_bulwark::{retry::{DefaultRetryIf, RetryIf}, BoxError};
///
/// let retry = DefaultRetryIf::default();
/// let answer = |status: u16| -> Result<Response<()>, BoxError> {
///     Ok(Response::builder().status(status).body(()).unwrap())
/// };
/// assert!(retry.should_retry(&answer(503)));
/// assert!(!retry.should_retry(&answer(500))); // may have done half its work
/// assert!(!retry.should_retry(&answer(404)));
/// let refused: Result<Response<()>, BoxError> = Err("connection refused".into());
/// assert!(retry.should_retry(&refused));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DefaultRetryIf {
    /// Bit `s - 400` set: status `s` is retried (only 4xx and 5xx can be).
    statuses: [u64; 4],
    /// Bit `c` set: gRPC code `c` is retried.
    grpc_codes: u32,
}

impl Default for DefaultRetryIf {
    fn default() -> Self {
        let mut retry = Self {
            statuses: [0; 4],
            grpc_codes: 0,
        };
        for status in [429, 502, 503, 504] {
            retry.set_status(status);
        }
        retry.grpc_codes = 1 << GrpcCode::Unavailable as u32;
        retry
    }
}

impl DefaultRetryIf {
    fn set_status(&mut self, status: u16) {
        if let Some(bit) = status.checked_sub(400).filter(|bit| *bit < 200) {
            self.statuses[usize::from(bit / 64)] |= 1 << (bit % 64);
        }
    }

    pub(crate) fn with_statuses(mut self, statuses: impl IntoIterator<Item = StatusCode>) -> Self {
        self.statuses = [0; 4];
        for status in statuses {
            self.set_status(status.as_u16());
        }
        self
    }

    pub(crate) fn with_grpc_codes(mut self, codes: impl IntoIterator<Item = GrpcCode>) -> Self {
        self.grpc_codes = codes
            .into_iter()
            .fold(0, |bits, code| bits | 1 << code as u32);
        self
    }

    fn retries_status(&self, status: StatusCode) -> bool {
        status.as_u16().checked_sub(400).is_some_and(|bit| {
            bit < 200 && self.statuses[usize::from(bit / 64)] & (1 << (bit % 64)) != 0
        })
    }

    fn retries_grpc(&self, headers: &HeaderMap) -> Option<bool> {
        let code = headers.get(GRPC_STATUS)?;
        let code: u32 = code.to_str().ok()?.trim().parse().ok()?;
        Some(code < 32 && self.grpc_codes & (1 << code) != 0)
    }
}

impl<B> RetryIf<B> for DefaultRetryIf {
    fn should_retry(&self, result: &Result<Response<B>, BoxError>) -> bool {
        match result {
            // Circuit-breaker refusals are filtered before any predicate.
            Err(_) => true,
            Ok(res) => match self.retries_grpc(res.headers()) {
                Some(retry) => retry,
                None => self.retries_status(res.status()),
            },
        }
    }

    fn should_retry_call(&self, result: &Result<Response<B>, BoxError>, grpc: bool) -> bool {
        match result {
            Ok(res) if !grpc => self.retries_status(res.status()),
            _ => self.should_retry(result),
        }
    }
}

/// True when a request may be sent twice without harm: an idempotent method (RFC 9110
/// §9.2.2: GET, HEAD, OPTIONS, PUT, DELETE, TRACE), or an `Idempotency-Key` header.
pub(crate) fn is_idempotent(method: &Method, headers: &HeaderMap) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    ) || headers.contains_key(IDEMPOTENCY_KEY)
}

/// The refusal of one of this crate's layers that a result carries: in a response's
/// extensions (the HTTP layers put it there), or anywhere in an error's chain.
pub(crate) fn refusal_of<B>(result: &Result<Response<B>, BoxError>) -> Option<Refusal> {
    match result {
        Ok(res) => res.extensions().get::<Refusal>().copied(),
        Err(error) => {
            let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error.as_ref());
            while let Some(error) = cause {
                if let Some(refusal) = error.downcast_ref::<Refusal>() {
                    return Some(*refusal);
                }
                cause = error.source();
            }
            None
        }
    }
}

/// An open breaker is never hammered.
pub(crate) fn is_circuit_open(refusal: Option<Refusal>) -> bool {
    refusal.is_some_and(|refusal| refusal.kind() == RefusalKind::CircuitOpen)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_codes_are_sets() {
        let retry = DefaultRetryIf::default().with_statuses([
            StatusCode::INTERNAL_SERVER_ERROR,
            StatusCode::from_u16(599).unwrap(),
        ]);
        let judge = |status: u16, grpc: Option<&'static str>| {
            let mut res = Response::builder().status(status).body(()).unwrap();
            if let Some(code) = grpc {
                res.headers_mut().insert(GRPC_STATUS, code.parse().unwrap());
            }
            retry.should_retry(&Ok(res))
        };
        assert!(judge(500, None) && judge(599, None));
        assert!(!judge(503, None) && !judge(200, None));
        assert!(judge(200, Some("14")) && !judge(200, Some("13")));
        assert!(!judge(200, Some("garbage")) && !judge(200, Some("99")));
        // A gRPC status in the headers decides, whatever the HTTP status.
        assert!(!judge(500, Some("0")));
    }

    #[test]
    fn idempotent_methods_and_keys() {
        let none = HeaderMap::new();
        for method in ["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"] {
            assert!(is_idempotent(&method.parse().unwrap(), &none), "{method}");
        }
        for method in ["POST", "PATCH", "CONNECT", "PURGE"] {
            assert!(!is_idempotent(&method.parse().unwrap(), &none), "{method}");
        }
        let mut keyed = HeaderMap::new();
        keyed.insert(IDEMPOTENCY_KEY, "8e03978e".parse().unwrap());
        assert!(is_idempotent(&Method::POST, &keyed));
    }
}
