//! The response future: once the inner service answers, `Vary`, then compress or not.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::header::{ACCEPT_ENCODING, ACCEPT_RANGES, CONTENT_ENCODING, CONTENT_LENGTH};
use http::{HeaderName, HeaderValue, Response, StatusCode};
use http_body::Body;
use pin_project_lite::pin_project;

use super::body::CompressionBody;
use super::config::{Config, Count};
use super::encoder::Encoder;
use super::etag;
use super::negotiate::Encoding;
use super::skip::compressible;
use crate::headers::vary;

const VARY_NAMES: &[HeaderName] = &[ACCEPT_ENCODING];

pin_project! {
    /// The future of a [`CompressionService`](super::CompressionService)'s response.
    ///
    /// ```
    /// use tower::{service_fn, Service, Layer};
    /// use tower_bulwark::compression::{CompressionLayer, ResponseFuture};
    ///
    /// let mut svc = CompressionLayer::new().layer(service_fn(|_req: http::Request<()>| async {
    ///     Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
    /// }));
    /// let _future = svc.call(http::Request::new(()));
    /// ```
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        encoding: Encoding,
        revalidated: bool,
        // Only when the request accepts an encoding: the common identity path takes no
        // reference count.
        config: Option<Arc<Config>>,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(
        inner: F,
        encoding: Encoding,
        revalidated: bool,
        config: Option<Arc<Config>>,
    ) -> Self {
        Self {
            inner,
            encoding,
            revalidated,
            config,
        }
    }
}

impl<F: std::fmt::Debug> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("inner", &self.inner)
            .field("encoding", &self.encoding)
            .finish_non_exhaustive()
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body,
{
    type Output = Result<Response<CompressionBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let (mut parts, body) = ready!(this.inner.poll(cx))?.into_parts();
        // Whatever this answer is, another request's may be encoded: caches must key on it.
        vary::merge(
            &mut parts.headers,
            VARY_NAMES,
            &HeaderValue::from_static("accept-encoding"),
        );
        let Some(config) = this.config.take() else {
            return Poll::Ready(Ok(Response::from_parts(
                parts,
                CompressionBody::identity(body),
            )));
        };
        let encoding = *this.encoding;
        if compressible(&parts, body.size_hint(), &config) {
            if let Some(encoder) = Encoder::new(encoding, config.levels) {
                let headers = &mut parts.headers;
                headers.insert(CONTENT_ENCODING, HeaderValue::from_static(encoding.token()));
                headers.remove(CONTENT_LENGTH);
                // Ranges would be of the compressed bytes, which are made anew each time.
                headers.remove(ACCEPT_RANGES);
                etag::derive(headers, encoding);
                config.count(Count::Compressed, 1);
                let body = CompressionBody::compressed(body, encoder, config);
                return Poll::Ready(Ok(Response::from_parts(parts, body)));
            }
        }
        // A `304` for a tag this layer derived: it names the compressed representation.
        if *this.revalidated && parts.status == StatusCode::NOT_MODIFIED {
            etag::derive(&mut parts.headers, encoding);
        }
        config.count(Count::Passed, 1);
        Poll::Ready(Ok(Response::from_parts(
            parts,
            CompressionBody::identity(body),
        )))
    }
}
