use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::RETRY_AFTER;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use tower_service::Service;

use super::circuit::Circuit;
use super::future::ResponseFuture;
use super::layer::ClassifyFn;
use crate::response::{ceil_secs, grpc_rejection, is_grpc, retry_json, GrpcCode, ResponseBody};

/// An HTTP service behind a circuit breaker; made by
/// [`CircuitBreakerLayer`](super::CircuitBreakerLayer).
///
/// ```
/// # use std::convert::Infallible;
/// # use tower::{service_fn, Layer, ServiceExt};
/// use tower_bulwark::circuit_breaker::{CircuitBreaker, CircuitBreakerLayer};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let layer = CircuitBreakerLayer::consecutive_failures(1).build()?;
/// let failing = service_fn(|_: http::Request<()>| async {
///     let mut res = http::Response::new(());
///     *res.status_mut() = http::StatusCode::BAD_GATEWAY;
///     Ok::<_, Infallible>(res)
/// });
/// let svc: CircuitBreaker<_> = layer.layer(failing);
/// assert_eq!(svc.clone().oneshot(http::Request::new(())).await?.status(), 502); // opens it
/// let refused = svc.oneshot(http::Request::new(())).await?;
/// assert_eq!(refused.status(), 503);
/// assert_eq!(refused.headers()["retry-after"], "60");
/// # Ok(())
/// # }
/// ```
pub struct CircuitBreaker<S> {
    inner: S,
    circuit: Arc<Circuit>,
    classify: Option<ClassifyFn>,
}

impl<S> CircuitBreaker<S> {
    pub(crate) fn new(inner: S, circuit: Arc<Circuit>, classify: Option<ClassifyFn>) -> Self {
        Self {
            inner,
            circuit,
            classify,
        }
    }

    /// The breaker's shared state.
    ///
    /// ```
    /// use tower::Layer;
    /// use tower_bulwark::circuit_breaker::{CircuitBreakerLayer, CircuitState};
    ///
    /// let svc = CircuitBreakerLayer::consecutive_failures(5).build()?.layer(());
    /// assert_eq!(svc.circuit().state(), CircuitState::Closed);
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn circuit(&self) -> &Circuit {
        &self.circuit
    }
}

impl<S: Clone> Clone for CircuitBreaker<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            circuit: self.circuit.clone(),
            classify: self.classify.clone(),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for CircuitBreaker<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("inner", &self.inner)
            .field("circuit", &self.circuit)
            .finish()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for CircuitBreaker<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        admit(&self.circuit, &mut self.inner, req, &self.classify)
    }
}

/// Calls `inner` if `circuit` lets the request through, else answers for it: shared by the
/// single and the keyed breaker.
pub(crate) fn admit<S, ReqBody, ResBody>(
    circuit: &Arc<Circuit>,
    inner: &mut S,
    req: Request<ReqBody>,
    classify: &Option<ClassifyFn>,
) -> ResponseFuture<S::Future, ResBody>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    match circuit.acquire() {
        Ok(permit) => ResponseFuture::admitted(inner.call(req), permit, classify.clone()),
        Err(retry_after) => {
            tracing::debug!(uri = %req.uri(), ?retry_after, "circuit breaker: refused");
            ResponseFuture::refused(unavailable(req.headers(), retry_after))
        }
    }
}

/// The default classifier: 5xx, or a gRPC status that says the server failed.
pub(crate) fn is_failure(status: StatusCode, headers: &HeaderMap) -> bool {
    if status.is_server_error() {
        return true;
    }
    // UNKNOWN, DEADLINE_EXCEEDED, INTERNAL, UNAVAILABLE, DATA_LOSS: the server's fault. Others
    // (NOT_FOUND, INVALID_ARGUMENT, ...) are the caller's, as 4xx are.
    headers
        .get(HeaderName::from_static("grpc-status"))
        .is_some_and(|code| matches!(code.as_bytes(), b"2" | b"4" | b"13" | b"14" | b"15"))
}

/// 503 with `Retry-After` and a JSON body, or gRPC UNAVAILABLE.
fn unavailable<B>(request: &HeaderMap, retry_after: Duration) -> Response<ResponseBody<B>> {
    let secs = ceil_secs(retry_after).max(1);
    let mut response = if is_grpc(request) {
        grpc_rejection(request, GrpcCode::Unavailable, "Circuit breaker open")
    } else {
        retry_json(StatusCode::SERVICE_UNAVAILABLE, "Service unavailable", secs)
    };
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(secs));
    response
}
