//! The rate limit for any `tower::Service`: refuses with a [`RateLimited`] error, not a response.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::config::{Counters, KeyMissing, RateLimited, Refund, Shared};
use super::stats::RateLimitStats;
use super::store::MemoryRateLimiter;
use super::store::{Decision, RateLimitBackend, Verdict};
use crate::error::BoxError;
use crate::key::{Global, Key, KeyExtractor};
use crate::response::PolledAfterCompletion;

/// A rate limit for any service; built by
/// [`RateLimitBuilder::build_generic`](super::RateLimitBuilder::build_generic).
///
/// A refused request fails with a [`RateLimited`] error (boxed, as tower's own layers do; find it
/// with `downcast_ref`); a request without a key and no fallback fails with [`KeyMissing`].
///
/// ```
/// use std::time::Duration;
/// use tower::{Service, ServiceBuilder, ServiceExt};
/// use tower_bulwark::key::from_fn;
/// use tower_bulwark::rate_limit::{RateLimitLayer, RateLimited};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// // One request per minute per user name.
/// let layer = RateLimitLayer::fixed_window(1, Duration::from_secs(60))
///     .key(from_fn(|user: &String| Some(user.as_str().into())))
///     .build_generic()
///     .unwrap();
/// let mut svc = ServiceBuilder::new()
///     .layer(layer)
///     .service_fn(|user: String| async move { Ok::<_, std::io::Error>(format!("hi {user}")) });
///
/// assert_eq!(svc.ready().await.unwrap().call("ann".into()).await.unwrap(), "hi ann");
/// let err = svc.ready().await.unwrap().call("ann".into()).await.unwrap_err();
/// assert!(err.downcast_ref::<RateLimited>().is_some());
/// assert!(svc.ready().await.unwrap().call("bob".into()).await.is_ok());
/// # }
/// ```
pub struct GenericRateLimitLayer<K = Global, B = MemoryRateLimiter> {
    shared: Arc<Shared<K, B>>,
}

impl<K, B> GenericRateLimitLayer<K, B> {
    pub(crate) fn from_shared(shared: Arc<Shared<K, B>>) -> Self {
        Self { shared }
    }

    /// The layer's decision counters so far.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower::{service_fn, Layer, ServiceExt};
    /// use tower_bulwark::rate_limit::RateLimitLayer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let layer = RateLimitLayer::fixed_window(1, Duration::from_secs(60)).build_generic().unwrap();
    /// let svc = layer.layer(service_fn(|n: u32| async move { Ok::<_, std::io::Error>(n) }));
    /// assert_eq!(svc.clone().oneshot(1).await.unwrap(), 1);
    /// assert!(svc.clone().oneshot(2).await.is_err());
    /// assert_eq!((layer.stats().allowed, layer.stats().rejected), (1, 1));
    /// # }
    /// ```
    pub fn stats(&self) -> RateLimitStats {
        self.shared.counters.snapshot()
    }
}

impl<K, B> Clone for GenericRateLimitLayer<K, B> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<K, B> fmt::Debug for GenericRateLimitLayer<K, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GenericRateLimitLayer")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl<S, K, B> Layer<S> for GenericRateLimitLayer<K, B> {
    type Service = GenericRateLimit<S, K, B>;

    fn layer(&self, inner: S) -> Self::Service {
        GenericRateLimit {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// A service behind a rate limit that refuses with an error; see [`GenericRateLimitLayer`].
///
/// ```
/// use std::time::Duration;
/// use tower::{service_fn, Layer, ServiceExt};
/// use tower_bulwark::rate_limit::{GenericRateLimit, RateLimitLayer};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let layer = RateLimitLayer::token_bucket(5, Duration::from_secs(1)).build_generic().unwrap();
/// let svc: GenericRateLimit<_, _, _> = layer.layer(service_fn(|n: u32| async move {
///     Ok::<_, std::io::Error>(n * 2)
/// }));
/// assert_eq!(svc.oneshot(21).await.unwrap(), 42);
/// # }
/// ```
pub struct GenericRateLimit<S, K, B> {
    inner: S,
    shared: Arc<Shared<K, B>>,
}

impl<S: Clone, K, B> Clone for GenericRateLimit<S, K, B> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S: fmt::Debug, K, B> fmt::Debug for GenericRateLimit<S, K, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GenericRateLimit")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, K, B, Req> Service<Req> for GenericRateLimit<S, K, B>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    K: KeyExtractor<Req>,
    B: RateLimitBackend,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = GenericResponseFuture<S, Req, K, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let shared = &*self.shared;
        let Ok(key) = shared.resolve_key(shared.key.extract(&req)) else {
            return GenericResponseFuture::refused(KeyMissing.into());
        };
        match shared.backend.decide(&key, 1) {
            Decision::Ready(verdict) => {
                decided(&self.shared, &mut self.inner, req, key, verdict).into()
            }
            Decision::Pending(decision) => {
                // Take the service that was made ready; leave a clone in its place.
                let clone = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, clone);
                GenericResponseFuture {
                    kind: Kind::Deciding {
                        decision,
                        waiting: Some(Box::new((inner, req, key, self.shared.clone()))),
                    },
                }
            }
        }
    }
}

/// The inner future and refund of an admitted call, or the error of a refused one.
type Decided<F> = Result<(F, Option<Refund>), BoxError>;

fn decided<S, K, B, Req>(
    shared: &Arc<Shared<K, B>>,
    inner: &mut S,
    req: Req,
    key: Key,
    verdict: Verdict,
) -> Decided<S::Future>
where
    S: Service<Req>,
    K: Send + Sync + 'static,
    B: RateLimitBackend,
{
    if !verdict.allowed {
        if shared.policy.shadow {
            Counters::bump(&shared.counters.shadow_rejected);
            tracing::debug!(key = %key.redacted(), "rate limit (shadow): would refuse");
            return Ok((inner.call(req), None));
        }
        Counters::bump(&shared.counters.rejected);
        tracing::debug!(key = %key.redacted(), retry_after = ?verdict.retry_after, "rate limit: refused");
        return Err(RateLimited::rate_limited(verdict.retry_after).into());
    }
    Counters::bump(&shared.counters.allowed);
    let refund = shared.refund_for(key, 1, &verdict);
    Ok((inner.call(req), refund))
}

pin_project! {
    /// Response future of [`GenericRateLimit`].
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower::{service_fn, Layer, Service, ServiceExt};
    /// use tower_bulwark::rate_limit::{GenericResponseFuture, RateLimitLayer};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let layer = RateLimitLayer::fixed_window(5, Duration::from_secs(1)).build_generic().unwrap();
    /// let mut svc = layer.layer(service_fn(|n: u32| async move { Ok::<_, std::io::Error>(n) }));
    /// let future: GenericResponseFuture<_, u32, _, _> = svc.ready().await.unwrap().call(7);
    /// assert_eq!(future.await.unwrap(), 7);
    /// # }
    /// ```
    pub struct GenericResponseFuture<S, Req, K, B>
    where
        S: Service<Req>,
        B: RateLimitBackend,
    {
        #[pin]
        kind: Kind<S, Req, K, B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<S, Req, K, B>
    where
        S: Service<Req>,
        B: RateLimitBackend,
    {
        Deciding {
            #[pin]
            decision: B::Pending,
            waiting: Option<Box<(S, Req, Key, Arc<Shared<K, B>>)>>,
        },
        Admitted {
            #[pin]
            future: S::Future,
            refund: Option<Refund>,
        },
        Refused {
            error: Option<BoxError>,
        },
    }
}

impl<S, Req, K, B> GenericResponseFuture<S, Req, K, B>
where
    S: Service<Req>,
    B: RateLimitBackend,
{
    fn refused(error: BoxError) -> Self {
        Self {
            kind: Kind::Refused { error: Some(error) },
        }
    }
}

impl<S, Req, K, B> From<Decided<S::Future>> for GenericResponseFuture<S, Req, K, B>
where
    S: Service<Req>,
    B: RateLimitBackend,
{
    fn from(decided: Decided<S::Future>) -> Self {
        match decided {
            Ok((future, refund)) => Self {
                kind: Kind::Admitted { future, refund },
            },
            Err(error) => Self::refused(error),
        }
    }
}

impl<S, Req, K, B> Future for GenericResponseFuture<S, Req, K, B>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    K: Send + Sync + 'static,
    B: RateLimitBackend,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            match self.as_mut().project().kind.project() {
                KindProj::Deciding { decision, waiting } => {
                    let verdict = ready!(decision.poll(cx));
                    let Some(waiting) = waiting.take() else {
                        return Poll::Ready(Err(PolledAfterCompletion.into()));
                    };
                    let (mut inner, req, key, shared) = *waiting;
                    let next = decided(&shared, &mut inner, req, key, verdict);
                    self.set(next.into());
                }
                KindProj::Admitted { future, refund } => {
                    let result = ready!(future.poll(cx));
                    let refund = refund.take();
                    // Done: a poll after completion must not poll the inner future again.
                    self.as_mut()
                        .project()
                        .kind
                        .set(Kind::Refused { error: None });
                    if let Some(refund) = refund {
                        refund.settle(result.is_err());
                    }
                    return Poll::Ready(result.map_err(Into::into));
                }
                KindProj::Refused { error } => {
                    return Poll::Ready(Err(error
                        .take()
                        .unwrap_or_else(|| PolledAfterCompletion.into())));
                }
            }
        }
    }
}

impl<S, Req, K, B> fmt::Debug for GenericResponseFuture<S, Req, K, B>
where
    S: Service<Req>,
    B: RateLimitBackend,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GenericResponseFuture")
            .finish_non_exhaustive()
    }
}
