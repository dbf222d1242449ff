use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::{HeaderMap, HeaderName, Response, StatusCode};
use pin_project_lite::pin_project;

use super::circuit::Permit;
use super::layer::ClassifyFn;
use crate::response::{is_grpc, is_grpc_web, polled_after_completion, BodyEnd, LayerBody, Outcome};

pin_project! {
    /// Response future of [`CircuitBreaker`](super::CircuitBreaker). Dropped before the inner
    /// service answers (cancelled), it records nothing and frees its half-open probe slot. A
    /// gRPC response without `grpc-status` in its headers is judged by its trailers, when its
    /// body ends (no trailers at all is a failure; a body dropped unfinished is a cancelled
    /// call).
    ///
    /// ```
    /// # use std::convert::Infallible;
    /// # use tower::{service_fn, Layer, Service, ServiceExt};
    /// use tower_bulwark::circuit_breaker::{CircuitBreakerLayer, ResponseFuture};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let ok = service_fn(|_: http::Request<()>| async { Ok::<_, Infallible>(http::Response::new(String::new())) });
    /// let mut svc = CircuitBreakerLayer::consecutive_failures(5).build()?.layer(ok);
    /// let future: ResponseFuture<_, String> = svc.ready().await?.call(http::Request::new(()));
    /// assert_eq!(future.await?.status(), 200);
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
            permit: Option<Permit>,
            classify: Option<ClassifyFn>,
            // gRPC requests are POSTs (HTTP/2 `:method POST`, gRPC-Web too): any other
            // method's answer is plain HTTP, judged without looking up its content type.
            post: bool,
            // Set once the inner future has completed, so it is never polled again. (A flag
            // rather than a move to another variant: that would write a whole future's worth
            // of bytes on every call.)
            done: bool,
        },
        Refused {
            // Not boxed: a refusal is the common answer while the breaker is open, and an
            // allocation per refusal costs more than the room it takes (an axum route's own
            // future is larger than a response).
            response: Option<Response<B>>,
        },
    }
}

impl<F, B> ResponseFuture<F, B> {
    pub(crate) fn admitted(
        future: F,
        permit: Permit,
        classify: Option<ClassifyFn>,
        post: bool,
    ) -> Self {
        Self {
            kind: Kind::Admitted {
                future,
                permit: Some(permit),
                classify,
                post,
                done: false,
            },
        }
    }

    pub(crate) fn refused(response: Response<B>) -> Self {
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
    B: LayerBody,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            // Polled again after completing: answer rather than panic on a request path.
            KindProj::Admitted { done: true, .. } => Poll::Ready(Ok(polled_after_completion())),
            KindProj::Admitted {
                future,
                permit,
                classify,
                post,
                done,
            } => {
                let result = ready!(future.poll(cx));
                *done = true;
                let (permit, classify) = (permit.take(), classify.take());
                let Some(permit) = permit else {
                    return Poll::Ready(result);
                };
                let response = match result {
                    Ok(response) => response,
                    Err(err) => {
                        permit.settle(true);
                        return Poll::Ready(Err(err));
                    }
                };
                let grpc = *post && is_grpc(response.headers());
                // A gRPC answer (HTTP 200, not gRPC-Web, whose trailers travel inside the body)
                // whose status is not in its headers carries it in the trailers: judge the call
                // when the body ends, exactly once.
                let status = response.status();
                if grpc
                    && status == StatusCode::OK
                    && !response.headers().contains_key(GRPC_STATUS)
                    && !is_grpc_web(response.headers())
                {
                    let on_end = Box::new(move |end: BodyEnd<'_>| {
                        let failure = match end {
                            BodyEnd::Trailers(trailers) => judge(&classify, status, trailers),
                            // A gRPC body that fails, or ends with no status at all, is what
                            // clients report as INTERNAL or UNKNOWN.
                            BodyEnd::Failed | BodyEnd::Finished => true,
                            // The caller stopped reading (cancelled): record nothing and give
                            // back a probe slot, as for a call dropped before its answer.
                            BodyEnd::Dropped => {
                                drop(permit);
                                return;
                            }
                        };
                        permit.settle(failure);
                    });
                    return Poll::Ready(Ok(response.map(|body| body.watched(on_end))));
                }
                let failure = match &classify {
                    Some(classify) => classify.is_failure(response.status(), response.headers()),
                    // Plain HTTP: the status alone (no header lookup on the common path).
                    None if !grpc => Outcome::of_status(response.status()).is_failure(),
                    None => {
                        Outcome::of_response(response.status(), response.headers()).is_failure()
                    }
                };
                permit.settle(failure);
                Poll::Ready(Ok(response))
            }
            // Polled again after completing: answer rather than panic on a request path.
            KindProj::Refused { response } => {
                Poll::Ready(Ok(response.take().unwrap_or_else(polled_after_completion)))
            }
        }
    }
}

const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

fn judge(classify: &Option<ClassifyFn>, status: StatusCode, headers: &HeaderMap) -> bool {
    match classify {
        Some(classify) => classify.is_failure(status, headers),
        None => Outcome::of_response(status, headers).is_failure(),
    }
}

impl<F, B> fmt::Debug for ResponseFuture<F, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
