//! The measuring service: the route and the start are taken when the request comes in.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_service::Service;

use super::config::{InFlight, Shared};
use super::future::ResponseFuture;
use super::labels::MethodLabel;
use super::routes::Route;
use crate::response::LayerBody;

/// The service of a [`MetricsLayer`](super::MetricsLayer).
///
/// ```
/// use tower::{service_fn, Layer};
/// use tower_bulwark::metrics::MetricsLayer;
///
/// let svc = MetricsLayer::builder().build()?.layer(service_fn(|_req: http::Request<()>| async {
///     Ok::<_, std::convert::Infallible>(http::Response::new(String::from("ok")))
/// }));
/// # drop(svc);
/// # Ok::<(), tower_bulwark::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct HttpMetrics<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> HttpMetrics<S> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>) -> Self {
        Self { inner, shared }
    }
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for HttpMetrics<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ResB: LayerBody,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let method = MethodLabel::of(req.method());
        let (route, req) = route_of(&self.shared, req);
        let in_flight = InFlight::start(self.shared.clone(), method, route);
        ResponseFuture::new(self.inner.call(req), in_flight)
    }
}

/// The request's route entry: the user's function, else axum's matched path, else none.
fn route_of<B>(shared: &Shared, req: Request<B>) -> (Arc<Route>, Request<B>) {
    if let Some(route_of) = &shared.route_of {
        let (parts, body) = req.into_parts();
        let route = shared.routes.get(route_of(&parts).as_deref());
        return (route, Request::from_parts(parts, body));
    }
    #[cfg(feature = "axum")]
    {
        let matched = req
            .extensions()
            .get::<axum::extract::MatchedPath>()
            .map(|m| m.as_str());
        let route = shared.routes.get(matched);
        (route, req)
    }
    #[cfg(not(feature = "axum"))]
    (shared.routes.get(None), req)
}
