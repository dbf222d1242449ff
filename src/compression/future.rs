//! The response future: once the inner service answers, `Vary`, then compress or not.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::header::{ACCEPT_RANGES, CONTENT_ENCODING, CONTENT_LENGTH};
use http::{HeaderName, HeaderValue, Response, StatusCode};
use http_body::Body;
use pin_project_lite::pin_project;

use super::body::CompressionBody;
use super::config::{Config, Count};
use super::encoder::Encoder;
use super::etag;
use super::negotiate::Encoding;
use super::skip::compressible;
use crate::headers::etag::AddedTag;
use crate::headers::vary;

/// Digests of the content as sent: wrong once it is compressed.
const CONTENT_DIGESTS: [HeaderName; 3] = [
    HeaderName::from_static("content-md5"),
    HeaderName::from_static("content-digest"),
    HeaderName::from_static("repr-digest"),
];

/// What was decided when the request came in.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) encoding: Encoding,
    pub(crate) head: bool,
    /// The suffix-less tags added to the request's `If-None-Match`.
    pub(crate) added: Vec<AddedTag>,
}

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
        plan: Plan,
        config: Option<Arc<Config>>,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(inner: F, plan: Plan, config: Arc<Config>) -> Self {
        Self {
            inner,
            plan,
            config: Some(config),
        }
    }
}

impl<F: std::fmt::Debug> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("inner", &self.inner)
            .field("encoding", &self.plan.encoding)
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
        let Some(config) = this.config.take() else {
            // Polled again after it answered: a contract breach; answer as if nothing was
            // compressed rather than panic.
            return Poll::Ready(Ok(Response::from_parts(
                parts,
                CompressionBody::identity(body),
            )));
        };
        // Whatever this answer is, another request's may be encoded: caches must key on it.
        vary::merge(&mut parts.headers, &config.vary, &config.vary_value);
        let plan = this.plan;
        let encoding = plan.encoding;
        if encoding == Encoding::Identity {
            return Poll::Ready(Ok(Response::from_parts(
                parts,
                CompressionBody::identity(body),
            )));
        }
        let size = body.size_hint();
        if compressible(&parts, size, &config) {
            // A HEAD gets the headers its GET would (its empty body has nothing to encode).
            let encoder = if plan.head {
                None
            } else {
                match Encoder::new(encoding, config.levels) {
                    Some(encoder) => Some(encoder),
                    // The codec could not make a compressor: the body goes as it is.
                    None => {
                        config.count(Count::Passed, 1);
                        return Poll::Ready(Ok(Response::from_parts(
                            parts,
                            CompressionBody::identity(body),
                        )));
                    }
                }
            };
            let whole = parts.headers.contains_key(CONTENT_LENGTH) || size.exact().is_some();
            let headers = &mut parts.headers;
            headers.insert(CONTENT_ENCODING, HeaderValue::from_static(encoding.token()));
            headers.remove(CONTENT_LENGTH);
            // Ranges would be of the compressed bytes, which are made anew each time.
            headers.remove(ACCEPT_RANGES);
            for digest in &CONTENT_DIGESTS {
                headers.remove(digest);
            }
            // Strong only if the compressed bytes are fixed: a whole body, not a stream whose
            // flushes depend on when it pauses.
            etag::derive(headers, encoding, !whole);
            let body = match encoder {
                Some(encoder) => {
                    config.count(Count::Compressed, 1);
                    CompressionBody::compressed(body, encoder, config)
                }
                None => CompressionBody::identity(body),
            };
            return Poll::Ready(Ok(Response::from_parts(parts, body)));
        }
        // A `304` for a tag this layer added: it names the compressed representation.
        if parts.status == StatusCode::NOT_MODIFIED && !plan.added.is_empty() {
            etag::derive_revalidated(&mut parts.headers, encoding, &plan.added);
        }
        config.count(Count::Passed, 1);
        Poll::Ready(Ok(Response::from_parts(
            parts,
            CompressionBody::identity(body),
        )))
    }
}
