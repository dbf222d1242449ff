//! The circuit breaker for any `tower::Service`: errors are failures, a refusal is an error.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::circuit::{Circuit, Permit};
use super::classify::{ClassifyResult, DefaultClassifier};
use super::config::CircuitOpen;
use super::service::Readiness;
use crate::error::BoxError;
use crate::response::PolledAfterCompletion;

/// A circuit breaker for any `tower::Service` (a reqwest-style client, a database call): an
/// error from the inner service is a failure, and a refused call fails with [`CircuitOpen`].
///
/// ```
/// use tower::{service_fn, Layer, ServiceExt};
/// use tower_bulwark::circuit_breaker::{CircuitBreakerLayer, CircuitOpen};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let layer = CircuitBreakerLayer::consecutive_failures(1).build_generic().unwrap();
/// let svc = layer.layer(service_fn(|_: ()| async { Err::<(), _>(std::io::Error::other("down")) }));
/// assert!(svc.clone().oneshot(()).await.is_err()); // the failure opens it
/// let err = svc.oneshot(()).await.unwrap_err();
/// assert!(err.downcast_ref::<CircuitOpen>().is_some());
/// # }
/// ```
#[derive(Clone)]
pub struct GenericCircuitBreakerLayer<C = DefaultClassifier> {
    circuit: Arc<Circuit>,
    classify: C,
}

impl<C> fmt::Debug for GenericCircuitBreakerLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GenericCircuitBreakerLayer")
            .field("circuit", &self.circuit)
            .finish()
    }
}

impl<C> GenericCircuitBreakerLayer<C> {
    pub(crate) fn new(circuit: Arc<Circuit>, classify: C) -> Self {
        Self { circuit, classify }
    }

    /// The breaker's shared state.
    ///
    /// ```
    /// use tower_bulwark::circuit_breaker::{CircuitBreakerLayer, CircuitState};
    ///
    /// let layer = CircuitBreakerLayer::consecutive_failures(5).build_generic()?;
    /// assert_eq!(layer.circuit().state(), CircuitState::Closed);
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn circuit(&self) -> &Circuit {
        &self.circuit
    }

    /// How this breaker's syncs with the fleet have gone (feature `redis`): calls, errors,
    /// timeouts, fallbacks, and whether it decides alone right now. `None` for a breaker kept
    /// in memory.
    ///
    /// ```
    /// use tower_bulwark::circuit_breaker::CircuitBreakerLayer;
    ///
    /// let layer = CircuitBreakerLayer::consecutive_failures(5).build_generic()?;
    /// assert_eq!(layer.fleet_stats(), None); // kept in memory
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    #[cfg(feature = "redis")]
    pub fn fleet_stats(&self) -> Option<super::FleetStats> {
        super::fleet::stats_of(&self.circuit)
    }

    /// Syncs with the fleet now (feature `redis`): sends the outcomes seen here and follows
    /// the fleet's state, without waiting for the sync interval (at start-up, before a
    /// graceful shutdown, in tests). The error is Redis's, when it could not be reached within
    /// the deadline; the breaker then decides alone until a sync succeeds. Nothing to do for a
    /// breaker kept in memory.
    ///
    /// ```
    /// use tower_bulwark::circuit_breaker::CircuitBreakerLayer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let layer = CircuitBreakerLayer::consecutive_failures(5).build_generic()?;
    /// layer.sync_fleet().await?; // kept in memory: nothing to sync
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "redis")]
    pub async fn sync_fleet(&self) -> Result<(), crate::BackendError> {
        super::fleet::sync_now(&self.circuit).await
    }
}

impl<S, C: Clone> Layer<S> for GenericCircuitBreakerLayer<C> {
    type Service = GenericCircuitBreaker<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        GenericCircuitBreaker {
            inner,
            circuit: self.circuit.clone(),
            classify: self.classify.clone(),
            readiness: Readiness::Unknown,
        }
    }
}

/// A service behind a circuit breaker that refuses with an error; see
/// [`GenericCircuitBreakerLayer`].
///
/// ```
/// use tower::{service_fn, Layer, ServiceExt};
/// use tower_bulwark::circuit_breaker::{CircuitBreakerLayer, GenericCircuitBreaker};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let layer = CircuitBreakerLayer::consecutive_failures(5).build_generic().unwrap();
/// let svc: GenericCircuitBreaker<_> =
///     layer.layer(service_fn(|n: u32| async move { Ok::<_, std::io::Error>(n + 1) }));
/// assert_eq!(svc.oneshot(41).await.unwrap(), 42);
/// # }
/// ```
pub struct GenericCircuitBreaker<S, C = DefaultClassifier> {
    inner: S,
    circuit: Arc<Circuit>,
    classify: C,
    readiness: Readiness,
}

impl<S: Clone, C: Clone> Clone for GenericCircuitBreaker<S, C> {
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

impl<S: fmt::Debug, C> fmt::Debug for GenericCircuitBreaker<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GenericCircuitBreaker")
            .field("inner", &self.inner)
            .field("circuit", &self.circuit)
            .finish()
    }
}

impl<S, Req, C> Service<Req> for GenericCircuitBreaker<S, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: ClassifyResult<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = GenericResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.readiness
            .poll(&self.circuit, &mut self.inner, cx)
            .map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let readiness = self.readiness.take();
        match readiness.acquire(&self.circuit) {
            Ok(permit) => GenericResponseFuture {
                future: Some(self.inner.call(req)),
                permit: Some(permit),
                refused: None,
                classify: Some(self.classify.clone()),
            },
            Err(retry_after) => GenericResponseFuture {
                future: None,
                permit: None,
                refused: Some(CircuitOpen::circuit_open(retry_after)),
                classify: None,
            },
        }
    }
}

pin_project! {
    /// Response future of [`GenericCircuitBreaker`].
    ///
    /// ```
    /// use tower::{service_fn, Layer, Service, ServiceExt};
    /// use tower_bulwark::circuit_breaker::{CircuitBreakerLayer, GenericResponseFuture};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let layer = CircuitBreakerLayer::consecutive_failures(5).build_generic().unwrap();
    /// let mut svc = layer.layer(service_fn(|n: u32| async move { Ok::<_, std::io::Error>(n) }));
    /// let future: GenericResponseFuture<_> = svc.ready().await.unwrap().call(7);
    /// assert_eq!(future.await.unwrap(), 7);
    /// # }
    /// ```
    pub struct GenericResponseFuture<F, C = DefaultClassifier> {
        #[pin]
        future: Option<F>,
        permit: Option<Permit>,
        refused: Option<CircuitOpen>,
        classify: Option<C>,
    }
}

impl<F, T, E, C> Future for GenericResponseFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    C: ClassifyResult<T, E>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        match this.future.as_mut().as_pin_mut() {
            Some(future) => {
                let result = ready!(future.poll(cx));
                // Done: a poll after completion must not poll the inner future again.
                this.future.set(None);
                if let Some(permit) = this.permit.take() {
                    let failure = match this.classify.take() {
                        Some(classify) => classify.is_failure(&result),
                        None => result.is_err(),
                    };
                    permit.settle(failure);
                }
                Poll::Ready(result.map_err(Into::into))
            }
            None => Poll::Ready(Err(match this.refused.take() {
                Some(open) => open.into(),
                None => PolledAfterCompletion.into(),
            })),
        }
    }
}

impl<F, C> fmt::Debug for GenericResponseFuture<F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GenericResponseFuture")
            .finish_non_exhaustive()
    }
}
