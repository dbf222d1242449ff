//! [`ResponseBody`]: the inner service's body or the layer's own, and the watched body that
//! tells a layer how the response ended.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
#[cfg(feature = "circuit-breaker")]
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use pin_project_lite::pin_project;

pin_project! {
    /// The body of a response from a bulwark layer: the inner service's body, or the layer's own.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use http_body_util::{BodyExt, Full};
    /// use tower_bulwark::response::ResponseBody;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let body: ResponseBody<Full<Bytes>> = ResponseBody::full(Bytes::from_static(b"hi"));
    /// assert_eq!(body.collect().await.unwrap().to_bytes(), "hi");
    /// # }
    /// ```
    #[derive(Debug)]
    pub struct ResponseBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

// pin-project-lite drops attributes on variants from its projections, so the variant only the
// circuit breaker builds cannot carry a `cfg`: the enum is written once with it, once without.
#[cfg(feature = "circuit-breaker")]
pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<B> {
        Inner { #[pin] body: B },
        Full { #[pin] body: Full<Bytes> },
        Watched { #[pin] body: Watched<B> },
    }
}

#[cfg(not(feature = "circuit-breaker"))]
pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<B> {
        Inner { #[pin] body: B },
        Full { #[pin] body: Full<Bytes> },
    }
}

/// How a watched body ended: what a layer that must see the whole response (a gRPC status in
/// the trailers) learns once, and only once.
#[cfg(feature = "circuit-breaker")]
#[derive(Debug)]
pub(crate) enum BodyEnd<'a> {
    /// The trailers arrived.
    Trailers(&'a HeaderMap),
    /// The body ended without trailers.
    Finished,
    /// The body failed.
    Failed,
    /// The body was dropped before its end was read (its reader went away; or a server
    /// dropped a body that was empty from the start without polling it).
    Dropped,
}

#[cfg(feature = "circuit-breaker")]
pub(crate) type EndHook = Box<dyn FnOnce(BodyEnd<'_>) + Send + Sync>;

#[cfg(feature = "circuit-breaker")]
pin_project! {
    /// An inner body with a hook called once when it ends, however it ends.
    #[project = WatchedProj]
    pub(crate) struct Watched<B> {
        #[pin]
        body: B,
        on_end: Option<EndHook>,
    }

    impl<B> PinnedDrop for Watched<B> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(on_end) = this.project().on_end.take() {
                on_end(BodyEnd::Dropped);
            }
        }
    }
}

#[cfg(feature = "circuit-breaker")]
impl<B: std::fmt::Debug> std::fmt::Debug for Watched<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watched")
            .field("body", &self.body)
            .finish_non_exhaustive()
    }
}

#[cfg(feature = "circuit-breaker")]
impl<B> Watched<B>
where
    B: Body<Data = Bytes>,
{
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let polled = std::task::ready!(this.body.poll_frame(cx));
        let end = match &polled {
            Some(Ok(frame)) => frame.trailers_ref().map(BodyEnd::Trailers),
            Some(Err(_)) => Some(BodyEnd::Failed),
            None => Some(BodyEnd::Finished),
        };
        if let Some(end) = end {
            if let Some(on_end) = this.on_end.take() {
                on_end(end);
            }
        }
        Poll::Ready(polled)
    }
}

impl<B> ResponseBody<B> {
    /// Wraps the inner service's body.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use http_body_util::{BodyExt, Full};
    /// use tower_bulwark::response::ResponseBody;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let body = ResponseBody::inner(Full::new(Bytes::from_static(b"from the handler")));
    /// assert_eq!(body.collect().await.unwrap().to_bytes(), "from the handler");
    /// # }
    /// ```
    pub fn inner(body: B) -> Self {
        Self {
            kind: Kind::Inner { body },
        }
    }

    /// Wraps the inner service's body and calls `on_end` once when it ends: with its
    /// trailers, at its end, on its error, or when it is dropped unfinished.
    #[cfg(feature = "circuit-breaker")]
    pub(crate) fn watched(body: B, on_end: EndHook) -> Self {
        Self {
            kind: Kind::Watched {
                body: Watched {
                    body,
                    on_end: Some(on_end),
                },
            },
        }
    }

    /// A body of the layer's own.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use http_body::Body;
    /// use tower_bulwark::response::ResponseBody;
    ///
    /// let body: ResponseBody<http_body_util::Empty<Bytes>> = ResponseBody::full(Bytes::from_static(b"{}"));
    /// assert_eq!(body.size_hint().exact(), Some(2));
    /// ```
    pub fn full(bytes: Bytes) -> Self {
        Self {
            kind: Kind::Full {
                body: Full::new(bytes),
            },
        }
    }

    /// An empty body of the layer's own.
    ///
    /// ```
    /// use http_body::Body;
    /// use http_body_util::Full;
    /// use tower_bulwark::response::ResponseBody;
    ///
    /// let body: ResponseBody<Full<bytes::Bytes>> = ResponseBody::empty();
    /// assert!(body.is_end_stream());
    /// ```
    pub fn empty() -> Self {
        Self::full(Bytes::new())
    }

    /// The same body under another inner-body type. Only for the layer's own bodies, which
    /// never hold an inner body; one that did would become empty rather than panic.
    #[cfg(feature = "rate-limit")]
    pub(crate) fn retype<B2>(self) -> ResponseBody<B2> {
        match self.kind {
            Kind::Full { body } => ResponseBody {
                kind: Kind::Full { body },
            },
            Kind::Inner { .. } => ResponseBody::empty(),
            #[cfg(feature = "circuit-breaker")]
            Kind::Watched { .. } => ResponseBody::empty(),
        }
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            KindProj::Inner { body } => body.poll_frame(cx),
            #[cfg(feature = "circuit-breaker")]
            KindProj::Watched { body } => body.poll_frame(cx),
            KindProj::Full { body } => body
                .poll_frame(cx)
                .map(|frame| frame.map(|result| result.map_err(|never| match never {}))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            #[cfg(feature = "circuit-breaker")]
            Kind::Watched { body } => body.body.is_end_stream(),
            Kind::Full { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            #[cfg(feature = "circuit-breaker")]
            Kind::Watched { body } => body.body.size_hint(),
            Kind::Full { body } => body.size_hint(),
        }
    }
}
