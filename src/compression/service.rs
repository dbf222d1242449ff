//! The compression service: the coding is chosen when the request comes in (so that the
//! request's preconditions can be read in the service's own terms), applied when the
//! response comes out.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::{ACCEPT_ENCODING, CONTENT_TYPE};
use http::{HeaderMap, Method, Request, Response};
use tower_service::Service;

use super::body::CompressionBody;
use super::config::Config;
use super::etag;
use super::future::{Plan, ResponseFuture};
use super::negotiate::{negotiate, Encoding};

/// Compresses its inner service's responses; made by [`CompressionLayer`](super::CompressionLayer).
///
/// ```
/// use tower::{service_fn, Layer};
/// use tower_bulwark::compression::CompressionLayer;
///
/// let svc = CompressionLayer::new().layer(service_fn(|_req: http::Request<()>| async {
///     Ok::<_, std::convert::Infallible>(http::Response::new(String::from("hello")))
/// }));
/// # drop(svc);
/// ```
#[derive(Debug, Clone)]
pub struct CompressionService<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S> CompressionService<S> {
    pub(crate) fn new(inner: S, config: Arc<Config>) -> Self {
        Self { inner, config }
    }

    /// The inner service.
    ///
    /// ```
    /// use tower::{service_fn, Layer};
    /// use tower_bulwark::compression::CompressionLayer;
    ///
    /// let svc = CompressionLayer::new().layer(service_fn(|_req: http::Request<()>| async {
    ///     Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
    /// }));
    /// let _inner = svc.get_ref();
    /// ```
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for CompressionService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: http_body::Body,
{
    type Response = Response<CompressionBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let encoding = choose(&self.config, &mut req);
        let head = req.method() == Method::HEAD;
        let added = etag::strip(req.headers_mut(), encoding, self.config.offered);
        let plan = Plan {
            encoding,
            head,
            added,
        };
        ResponseFuture::new(self.inner.call(req), plan, self.config.clone())
    }
}

/// The coding this request's answer may be in.
fn choose<B>(config: &Config, req: &mut Request<B>) -> Encoding {
    if let Some(opt_out) = &config.opt_out {
        if req.headers().contains_key(opt_out) {
            // Nothing behind this layer compresses either.
            req.headers_mut().remove(ACCEPT_ENCODING);
            return Encoding::Identity;
        }
    }
    // gRPC compresses its messages itself (grpc-encoding). HEAD is negotiated as GET is:
    // its headers must be the ones a GET would get (with no body to compress).
    if is_grpc(req.headers()) {
        return Encoding::Identity;
    }
    negotiate(req.headers(), config.offered)
}

fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes().starts_with(b"application/grpc"))
}
