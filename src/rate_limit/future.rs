use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_service::Service;

use super::config::{Refund, Shared};
use super::headers::PendingHeaders;
use super::service::after_verdict;
use super::store::RateLimitBackend;
use crate::key::Key;
use bytes::Bytes;

use crate::response::{polled_after_completion, LayerBody, Outcome};

pin_project! {
    /// Response future of [`RateLimit`](super::RateLimit).
    ///
    /// With the memory backend it starts admitted or refused; with a networked backend it first
    /// waits for the decision, holding the request and the inner service until then.
    ///
    /// ```
    /// # use std::{convert::Infallible, time::Duration};
    /// # use tower::{service_fn, Layer, ServiceExt};
    /// # use tower_bulwark::rate_limit::RateLimitLayer;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let ok = service_fn(|_: http::Request<()>| async { Ok::<_, Infallible>(http::Response::new(String::new())) });
    /// use tower::Service;
    /// use tower_bulwark::rate_limit::ResponseFuture;
    ///
    /// let mut svc = RateLimitLayer::fixed_window(5, Duration::from_secs(1)).build()?.layer(ok);
    /// let future: ResponseFuture<_, (), _, _> = svc.ready().await?.call(http::Request::new(()));
    /// assert_eq!(future.await?.headers()["x-ratelimit-remaining"], "4");
    /// # Ok(())
    /// # }
    /// ```
    pub struct ResponseFuture<S, ReqBody, K, B>
    where
        S: Service<Request<ReqBody>>,
        B: RateLimitBackend,
    {
        #[pin]
        kind: Kind<S, ReqBody, K, B>,
    }
}

/// What a request waiting for its decision holds.
pub(crate) struct Waiting<S, ReqBody, K, B> {
    pub(crate) inner: S,
    pub(crate) request: Request<ReqBody>,
    pub(crate) key: Key,
    pub(crate) cost: u64,
    pub(crate) shared: Arc<Shared<K, B>>,
}

pin_project! {
    #[project = KindProj]
    enum Kind<S, ReqBody, K, B>
    where
        S: Service<Request<ReqBody>>,
        B: RateLimitBackend,
    {
        Deciding {
            #[pin]
            decision: B::Pending,
            waiting: Option<Box<Waiting<S, ReqBody, K, B>>>,
        },
        Admitted {
            #[pin]
            future: S::Future,
            headers: Option<PendingHeaders>,
            // Boxed: only layers that refund have one, and every future would carry its room.
            refund: Option<Box<Refund>>,
        },
        Refused {
            // The layer's own answer, its body still as bytes: the future does not name the
            // inner service's body type, which it is turned into when polled.
            response: Option<Response<Bytes>>,
        },
    }
}

impl<S, ReqBody, K, B> ResponseFuture<S, ReqBody, K, B>
where
    S: Service<Request<ReqBody>>,
    B: RateLimitBackend,
{
    #[inline]
    pub(crate) fn admitted(
        future: S::Future,
        headers: Option<PendingHeaders>,
        refund: Option<Refund>,
    ) -> Self {
        Self {
            kind: Kind::Admitted {
                future,
                headers,
                refund: refund.map(Box::new),
            },
        }
    }

    pub(crate) fn refused(response: Response<Bytes>) -> Self {
        Self {
            kind: Kind::Refused {
                response: Some(response),
            },
        }
    }

    pub(crate) fn deciding(decision: B::Pending, waiting: Waiting<S, ReqBody, K, B>) -> Self {
        Self {
            kind: Kind::Deciding {
                decision,
                waiting: Some(Box::new(waiting)),
            },
        }
    }
}

impl<S, ReqBody, ResBody, K, B> Future for ResponseFuture<S, ReqBody, K, B>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    K: Send + Sync + 'static,
    B: RateLimitBackend,
    ResBody: LayerBody,
{
    type Output = Result<Response<ResBody>, S::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            match self.as_mut().project().kind.project() {
                KindProj::Deciding { decision, waiting } => {
                    let verdict = ready!(decision.poll(cx));
                    let Some(waiting) = waiting.take() else {
                        return Poll::Ready(Ok(polled_after_completion()));
                    };
                    let Waiting {
                        mut inner,
                        request,
                        key,
                        cost,
                        shared,
                    } = *waiting;
                    let next = after_verdict(&shared, &mut inner, request, key, cost, verdict);
                    self.set(next);
                }
                KindProj::Admitted {
                    future,
                    headers,
                    refund,
                } => {
                    let result = ready!(future.poll(cx));
                    let (headers, refund) = (headers.take(), refund.take());
                    // Done: a poll after completion must not poll the inner future again.
                    self.as_mut()
                        .project()
                        .kind
                        .set(Kind::Refused { response: None });
                    if let Some(refund) = refund {
                        let outcome = match &result {
                            Ok(response) => {
                                Outcome::of_response(response.status(), response.headers())
                            }
                            Err(_) => Outcome::of_error(),
                        };
                        refund.settle(outcome.is_error());
                    }
                    return Poll::Ready(result.map(|mut response| {
                        if let Some(headers) = headers {
                            headers.write(response.headers_mut());
                        }
                        response
                    }));
                }
                // Polled again after completing: answer rather than panic on a request path.
                KindProj::Refused { response } => {
                    let response = response
                        .take()
                        .map_or_else(polled_after_completion, |r| r.map(ResBody::from_bytes));
                    return Poll::Ready(Ok(response));
                }
            }
        }
    }
}

impl<S, ReqBody, K, B> fmt::Debug for ResponseFuture<S, ReqBody, K, B>
where
    S: Service<Request<ReqBody>>,
    B: RateLimitBackend,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
