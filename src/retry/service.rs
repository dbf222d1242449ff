//! The retry service: decides at the call what a request may get (one attempt, or replays),
//! and hands the rest to its future.

use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use tower_service::Service;

use super::config::Config;
use super::events::Count;
use super::future::{Kept, ResponseFuture};
use super::policy::is_idempotent;
use super::{DefaultRetryIf, RetryBody, RetryBudget, RetryIf};
use crate::response::is_grpc_call;
use crate::util::{fits, Collect};
use crate::BoxError;

/// The service a [`RetryLayer`](super::RetryLayer) makes: it calls the inner service (which
/// takes [`RetryBody`] request bodies) once or more per request, and answers with the first
/// good response or the last failure. Errors arrive boxed ([`BoxError`]); the layer's own
/// timeouts are [`TimedOut`](super::TimedOut).
///
/// ```
/// use std::convert::Infallible;
/// use bytes::Bytes;
/// use http::{Request, Response};
/// use http_body_util::Full;
/// use tower::{service_fn, Layer, ServiceExt};
/// use tower_bulwark::retry::{RetryBody, RetryLayer};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), tower_bulwark::BoxError> {
/// let calls = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
/// let counted = calls.clone();
/// let flaky = service_fn(move |_req: Request<RetryBody<Full<Bytes>>>| {
///     let n = counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
///     async move {
///         let status = if n < 2 { 503 } else { 200 }; // fails twice, then works
///         Ok::<_, Infallible>(Response::builder().status(status).body(Full::new(Bytes::new())).unwrap())
///     }
/// });
/// let service = RetryLayer::builder().build()?.layer(flaky);
/// let res = service.oneshot(Request::new(Full::new(Bytes::new()))).await?; // paused time: no real wait
/// assert_eq!(res.status(), 200);
/// assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 3);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Retry<S, C = DefaultRetryIf> {
    inner: S,
    config: Arc<Config<C>>,
}

impl<S: Clone, C> Clone for Retry<S, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            config: self.config.clone(),
        }
    }
}

impl<S, C> Retry<S, C> {
    pub(crate) fn new(inner: S, config: Arc<Config<C>>) -> Self {
        Self { inner, config }
    }

    /// The wrapped service.
    ///
    /// ```
    /// use tower::Layer;
    /// let service = tower_bulwark::retry::RetryLayer::builder().build()?.layer(tower::service_fn(
    ///     |_: http::Request<tower_bulwark::retry::RetryBody<http_body_util::Empty<bytes::Bytes>>>| async {
    ///         Ok::<_, std::convert::Infallible>(http::Response::new(()))
    ///     },
    /// ));
    /// let _inner = service.get_ref();
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, C, B, ResB> Service<Request<B>> for Retry<S, C>
where
    S: Service<Request<RetryBody<B>>, Response = Response<ResB>> + Clone,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Unpin,
    C: RetryIf<ResB>,
{
    type Response = Response<ResB>;
    type Error = BoxError;
    type Future = ResponseFuture<S, B, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let config = &self.config;
        // One clock reading for both: the deposit, and whether the budget allows a retry.
        let budget_allows = config
            .budget
            .as_ref()
            .is_none_or(RetryBudget::deposit_and_may_retry);
        let grpc = is_grpc_call(req.method(), req.headers());
        let replayable = config.max_retries > 0
            && budget_allows
            && (config.any_method || grpc || is_idempotent(req.method(), req.headers()))
            && (req.body().is_end_stream() || fits(req.body(), config.max_body as u64));
        if !replayable {
            // One attempt, nothing kept: the body passes through untouched.
            config.counters.bump_request();
            let timed = config.needs_timer().then(|| config.clone());
            return ResponseFuture::once(self.inner.call(req.map(RetryBody::once)), timed);
        }
        let (parts, body) = req.into_parts();
        if body.is_end_stream() {
            // Nothing to read: the first attempt goes now.
            config.counters.bump_request();
            let kept = Kept {
                parts: parts.clone(),
                data: Bytes::new(),
                trailers: None,
            };
            let service = self.inner.clone();
            let request = Request::from_parts(parts, RetryBody::replay(Bytes::new(), None));
            let future = self.inner.call(request);
            return ResponseFuture::called(future, config.clone(), service, kept, grpc);
        }
        // The body is read before the first attempt, by the service made ready for it (a
        // clone takes its place here).
        config.counters.bump(Count::Requests);
        let clone = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, clone);
        let collect = Collect::new(body, config.max_body);
        ResponseFuture::collecting(collect, parts, config.clone(), ready, grpc)
    }
}
