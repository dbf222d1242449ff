use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::{Response, StatusCode};
use pin_project_lite::pin_project;

use super::config::Refund;
use super::headers::{apply, HeaderPlan};
use crate::response::ResponseBody;

pin_project! {
    /// Response future of [`RateLimit`](super::RateLimit).
    ///
    /// ```
    /// # use std::{convert::Infallible, time::Duration};
    /// # use tower::{service_fn, Layer, ServiceExt};
    /// # use tower_bulwark::rate_limit::RateLimitLayer;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let ok = service_fn(|_: http::Request<()>| async { Ok::<_, Infallible>(http::Response::new(())) });
    /// use tower::Service;
    /// use tower_bulwark::rate_limit::ResponseFuture;
    ///
    /// let mut svc = RateLimitLayer::fixed_window(5, Duration::from_secs(1)).build()?.layer(ok);
    /// let future: ResponseFuture<_, ()> = svc.ready().await?.call(http::Request::new(()));
    /// assert_eq!(future.await?.headers()["x-ratelimit-remaining"], "4");
    /// # Ok(())
    /// # }
    /// ```
    pub struct ResponseFuture<F, B> {
        #[pin]
        kind: Kind<F, B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, B> {
        Admitted {
            #[pin]
            future: F,
            // Boxed: a plan is a few hundred bytes, and the future is moved several times.
            headers: Option<Box<HeaderPlan>>,
            refund: Option<Refund>,
        },
        Refused {
            response: Option<Response<ResponseBody<B>>>,
        },
    }
}

impl<F, B> ResponseFuture<F, B> {
    pub(crate) fn admitted(
        future: F,
        headers: Option<Box<HeaderPlan>>,
        refund: Option<Refund>,
    ) -> Self {
        Self {
            kind: Kind::Admitted {
                future,
                headers,
                refund,
            },
        }
    }

    pub(crate) fn refused(response: Response<ResponseBody<B>>) -> Self {
        Self {
            kind: Kind::Refused {
                response: Some(response),
            },
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Admitted {
                future,
                headers,
                refund,
            } => {
                let result = ready!(future.poll(cx));
                let failed = match &result {
                    Ok(response) => {
                        response.status().is_client_error() || response.status().is_server_error()
                    }
                    Err(_) => true,
                };
                if let Some(refund) = refund.take() {
                    refund.settle(failed);
                }
                Poll::Ready(result.map(|mut response| {
                    if let Some(headers) = headers.take() {
                        apply(response.headers_mut(), *headers);
                    }
                    response.map(ResponseBody::inner)
                }))
            }
            // Polled again after completing: answer rather than panic on a request path.
            KindProj::Refused { response } => {
                Poll::Ready(Ok(response.take().unwrap_or_else(|| {
                    let mut response = Response::new(ResponseBody::empty());
                    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                    response
                })))
            }
        }
    }
}

impl<F, B> fmt::Debug for ResponseFuture<F, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
