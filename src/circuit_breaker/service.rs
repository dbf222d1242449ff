use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::RETRY_AFTER;
use http::{Method, Request, Response};
use tower_service::Service;

use super::circuit::{Circuit, Permit};
use super::future::ResponseFuture;
use super::layer::ClassifyFn;
use crate::response::{is_grpc_call, number, LayerBody, Refusal};

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
///     let mut res = http::Response::new(String::new());
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
    readiness: Readiness,
}

/// What the last `poll_ready` did about the inner service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Readiness {
    /// Not polled since the last call (or a clone): call the inner service as asked.
    Unknown,
    /// The inner service said it was ready.
    Ready,
    /// The breaker was open at this clock reading, so the inner service was not asked (it
    /// may be the very thing that hangs): the call is refused, or, if the breaker let it
    /// through meanwhile, told to come back.
    Skipped(u64),
}

impl Readiness {
    /// Polls `inner` only when `circuit` would let a call through: an open breaker answers at
    /// once, even while the inner service applies backpressure (a full concurrency limit in
    /// front of a hung upstream).
    pub(super) fn poll<S, R>(
        &mut self,
        circuit: &Circuit,
        inner: &mut S,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), S::Error>>
    where
        S: Service<R>,
    {
        if let Some(now) = circuit.refusing_at() {
            *self = Readiness::Skipped(now);
            return Poll::Ready(Ok(()));
        }
        let ready = inner.poll_ready(cx);
        if let Poll::Ready(Ok(())) = ready {
            *self = Readiness::Ready;
        }
        ready
    }

    /// What the coming call may do; the next call starts afresh.
    pub(super) fn take(&mut self) -> Readiness {
        std::mem::replace(self, Readiness::Unknown)
    }

    /// A permit for the call, or how long it is told to wait: a call whose poll skipped the
    /// inner service is refused without a permit (reusing that poll's clock reading).
    pub(super) fn acquire(self, circuit: &Arc<Circuit>) -> Result<Permit, Duration> {
        match self {
            Readiness::Skipped(now) => Err(circuit.refuse_unpolled(now, NOT_READY_RETRY)),
            _ => circuit.acquire(),
        }
    }
}

/// How long a caller let through after `poll_ready` skipped the inner service is told to wait.
pub(super) const NOT_READY_RETRY: Duration = Duration::from_secs(1);

impl<S> CircuitBreaker<S> {
    pub(crate) fn new(inner: S, circuit: Arc<Circuit>, classify: Option<ClassifyFn>) -> Self {
        Self {
            inner,
            circuit,
            classify,
            readiness: Readiness::Unknown,
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
            // The clone's inner service has not been polled.
            readiness: Readiness::Unknown,
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
    ResBody: LayerBody,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.readiness.poll(&self.circuit, &mut self.inner, cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let readiness = self.readiness.take();
        admit(
            &self.circuit,
            &mut self.inner,
            req,
            &self.classify,
            readiness,
        )
    }
}

/// Calls `inner` if `circuit` lets the request through, else answers for it: shared by the
/// single and the keyed breaker.
pub(crate) fn admit<S, ReqBody, ResBody>(
    circuit: &Arc<Circuit>,
    inner: &mut S,
    req: Request<ReqBody>,
    classify: &Option<ClassifyFn>,
    readiness: Readiness,
) -> ResponseFuture<S::Future, ResBody>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: LayerBody,
{
    match readiness.acquire(circuit) {
        Ok(permit) => {
            let post = req.method() == Method::POST;
            ResponseFuture::admitted(inner.call(req), permit, classify.clone(), post)
        }
        Err(retry_after) => {
            tracing::debug!(uri = %req.uri(), ?retry_after, "circuit breaker: refused");
            ResponseFuture::refused(unavailable(&req, retry_after))
        }
    }
}

/// 503 with `Retry-After` and a JSON body, or gRPC UNAVAILABLE.
fn unavailable<R, B: LayerBody>(request: &Request<R>, retry_after: Duration) -> Response<B> {
    let refusal = Refusal::circuit_open(retry_after);
    let grpc = is_grpc_call(request.method(), request.headers());
    let mut response = refusal
        // Its Retry-After fits in a header map's first allocation: no room asked.
        .answer_bytes(request.headers(), grpc, 0)
        .map(B::from_bytes);
    response
        .headers_mut()
        .insert(RETRY_AFTER, number(refusal.retry_after_secs()));
    response
}
