//! The response future: the request is recorded when its response body ends (through the
//! shared body-end hook), or now if the service failed.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::{Response, StatusCode};
use pin_project_lite::pin_project;

use super::config::{GrpcHead, InFlight};
use crate::response::{is_grpc, BodyEnd, LayerBody, Outcome};

pin_project! {
    /// The future of a [`MetricsLayer`](super::MetricsLayer)'s service. Dropped before the
    /// inner service answers, it records nothing but leaves the in-flight gauge.
    ///
    /// ```
    /// use tower::{service_fn, Layer, Service};
    ///
    /// let mut svc = tower_bulwark::metrics::MetricsLayer::builder().build()?
    ///     .layer(service_fn(|_req: http::Request<()>| async {
    ///         Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
    ///     }));
    /// let _future: tower_bulwark::metrics::ResponseFuture<_> = svc.call(http::Request::new(()));
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        in_flight: Option<InFlight>,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(inner: F, in_flight: InFlight) -> Self {
        Self {
            inner,
            in_flight: Some(in_flight),
        }
    }
}

impl<F: std::fmt::Debug> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: LayerBody,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let Some(in_flight) = this.in_flight.take() else {
            return Poll::Ready(result);
        };
        match result {
            Ok(response) => {
                let status = response.status();
                // A gRPC status in the headers (trailers-only) is read now; one in the
                // trailers when the body ends.
                let grpc = is_grpc(response.headers()).then(|| GrpcHead {
                    outcome: response
                        .headers()
                        .contains_key("grpc-status")
                        .then(|| Outcome::of_response(status, response.headers())),
                });
                let on_end = Box::new(move |end: BodyEnd<'_>| {
                    in_flight.finish(status, grpc, end);
                });
                Poll::Ready(Ok(response.map(|body| body.watched(on_end))))
            }
            Err(err) => {
                // No response: what the server makes of the error is a 500.
                in_flight.finish(StatusCode::INTERNAL_SERVER_ERROR, None, BodyEnd::Failed);
                Poll::Ready(Err(err))
            }
        }
    }
}
