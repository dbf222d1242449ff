//! The bodies of the HTTP layers' responses: [`LayerBody`], the body types a layer hands back
//! untouched (its own answers built in the same type), [`ResponseBody`], the adapter that
//! makes any other body one, and the watched body that tells a layer how a response ended
//! (the body-end hook).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::{BoxBody, UnsyncBoxBody};
use http_body_util::{BodyExt, Full};
use pin_project_lite::pin_project;

use crate::util::Buffered;

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
    pub struct ResponseBody<B>
    where
        B: Body<Data = Bytes>,
    {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B>
    where
        B: Body<Data = Bytes>,
    {
        Inner { #[pin] body: B },
        Full { #[pin] body: Full<Bytes> },
        Watched { #[pin] body: Watched<B> },
        // Boxed: a body read whole (for its ETag) and handed on is the rare case, and inline
        // it would grow every response body.
        Buffered { body: Pin<Box<Watched<Buffered<ResponseBody<B>>>>> },
    }
}

/// How a watched body ended: what a layer that must see the whole response (a gRPC status in
/// the trailers) learns once, and only once.
#[derive(Debug, Clone, Copy)]
pub enum BodyEnd<'a> {
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

pub(crate) type EndHook = Box<dyn FnOnce(BodyEnd<'_>) + Send + Sync>;

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

impl<B: std::fmt::Debug> std::fmt::Debug for Watched<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watched")
            .field("body", &self.body)
            .finish_non_exhaustive()
    }
}

impl<B: Body> Watched<B> {
    fn new(body: B, on_end: EndHook) -> Self {
        // A server never polls a body that says it has ended already (hyper checks
        // `is_end_stream` first, then drops it): that body's end is now, not a drop.
        if body.is_end_stream() {
            on_end(BodyEnd::Finished);
            return Self { body, on_end: None };
        }
        Self {
            body,
            on_end: Some(on_end),
        }
    }
}

impl<B> Body for Watched<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let mut this = self.project();
        let polled = std::task::ready!(this.body.as_mut().poll_frame(cx));
        let end = match &polled {
            Some(Ok(frame)) => match frame.trailers_ref() {
                Some(trailers) => Some(BodyEnd::Trailers(trailers)),
                // The last data frame of a body that knows it has ended: hyper polls it no
                // further (it checks `is_end_stream`) and drops it, so its end is now.
                None if this.body.is_end_stream() => Some(BodyEnd::Finished),
                None => None,
            },
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

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl<B: Body<Data = Bytes> + std::fmt::Debug> std::fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut out = f.debug_struct("ResponseBody");
        match &self.kind {
            Kind::Inner { body } => out.field("inner", body),
            Kind::Full { body } => out.field("full", body),
            Kind::Watched { body } => out.field("watched", body),
            Kind::Buffered { body } => out.field("buffered", &body.body.form()),
        };
        out.finish()
    }
}

impl<B: Body<Data = Bytes>> ResponseBody<B> {
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
    pub(crate) fn watching(body: B, on_end: EndHook) -> Self {
        Self {
            kind: Kind::Watched {
                body: Watched::new(body, on_end),
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
            KindProj::Watched { body } => body.poll_frame(cx),
            KindProj::Buffered { body } => body.as_mut().poll_frame(cx),
            KindProj::Full { body } => body
                .poll_frame(cx)
                .map(|frame| frame.map(|result| result.map_err(|never| match never {}))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Watched { body } => body.body.is_end_stream(),
            Kind::Buffered { body } => body.is_end_stream(),
            Kind::Full { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            Kind::Watched { body } => body.body.size_hint(),
            Kind::Buffered { body } => body.size_hint(),
            Kind::Full { body } => body.size_hint(),
        }
    }
}

/// A response body type the HTTP layers hand back untouched: a layer answers with the inner
/// service's own body (no wrapper, so axum does not box it a second time) and builds its own
/// answers (a refusal's JSON, an empty gRPC answer, a gRPC body watched for its trailers) in
/// the same type.
///
/// Implemented for axum 0.8's `Body` (the default feature `axum-body`), `http_body_util`'s
/// `Full<Bytes>`, `BoxBody` and `UnsyncBoxBody`, `String`, and [`ResponseBody<B>`] for **any**
/// body `B`. For another body type
/// (hyper's `Incoming` from a client, `StreamBody`, tonic's `Body`), wrap it in `ResponseBody`
/// first: `MapResponseBodyLayer::new(ResponseBody::inner)` from tower-http, or
/// `.map(ResponseBody::inner)` on the response. The trait is sealed: this crate builds these
/// bodies, so it names the types it knows how to build.
///
/// A `Full` (or `String`) body carries no trailers: a gRPC answer in one (HTTP 200 without
/// `grpc-status` in its headers) is judged at once as a body that ended without a status,
/// even if it is then dropped unread.
///
/// ```
/// use std::convert::Infallible;
/// use bytes::Bytes;
/// use http_body_util::{Full, StreamBody};
/// use tower::{service_fn, Layer, ServiceExt};
/// use tower_bulwark::{circuit_breaker::CircuitBreakerLayer, response::ResponseBody};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let breaker = CircuitBreakerLayer::consecutive_failures(5).build()?;
///
/// // `Full<Bytes>` is a LayerBody: the response keeps its type.
/// let full = breaker.layer(service_fn(|_: http::Request<()>| async {
///     Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from("hi"))))
/// }));
/// let _: http::Response<Full<Bytes>> = full.oneshot(http::Request::new(())).await?;
///
/// // A stream is not: wrap it in ResponseBody.
/// let stream = breaker.layer(service_fn(|_: http::Request<()>| async {
///     let frames = futures_util::stream::iter(Vec::<Result<http_body::Frame<Bytes>, Infallible>>::new());
///     Ok::<_, Infallible>(http::Response::new(ResponseBody::inner(StreamBody::new(frames))))
/// }));
/// let res = stream.oneshot(http::Request::new(())).await?;
/// assert_eq!(res.status(), 200);
/// # Ok(())
/// # }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a body this crate's HTTP layers can answer in",
    note = "axum 0.8's body is one with the default feature `axum-body`; wrap any other body in `tower_bulwark::response::ResponseBody` (for instance with tower-http's `MapResponseBodyLayer::new(ResponseBody::inner)`); see `LayerBody` for the body types taken as they are"
)]
pub trait LayerBody: Body<Data = Bytes> + Sized + sealed::Sealed {}

pub(crate) mod sealed {
    use bytes::Bytes;

    use super::EndHook;

    /// What a layer does with its response bodies; sealed, so that it stays free to change.
    pub trait Sealed: Sized + http_body::Body {
        /// A body of the layer's own holding `bytes` (empty for a gRPC answer).
        fn from_bytes(bytes: Bytes) -> Self;
        /// This body, calling `on_end` once when it ends, however it ends.
        fn watched(self, on_end: EndHook) -> Self;
        /// This body again after a layer read it into memory (for its ETag): the whole of it
        /// replayed, or its start followed by the rest or by its error. Nothing is lost.
        fn from_buffered(body: crate::util::Buffered<Self>) -> Self;
    }
}

impl<B: Body<Data = Bytes>> LayerBody for ResponseBody<B> {}

impl<B: Body<Data = Bytes>> sealed::Sealed for ResponseBody<B> {
    fn from_bytes(bytes: Bytes) -> Self {
        Self::full(bytes)
    }

    fn from_buffered(body: Buffered<Self>) -> Self {
        let body = match body.whole() {
            Ok(data) => return Self::full(data),
            Err(body) => body,
        };
        Self {
            kind: Kind::Buffered {
                // Watched with no hook yet: a breaker outside adds one.
                body: Box::pin(Watched { body, on_end: None }),
            },
        }
    }

    fn watched(mut self, on_end: EndHook) -> Self {
        match self.kind {
            Kind::Inner { body } => Self::watching(body, on_end),
            // Watched already (a breaker inside another): each hears how the body ends.
            Kind::Watched { ref mut body } => {
                chain(&mut body.on_end, on_end);
                self
            }
            // The layer's own body: one frame, no trailers.
            Kind::Full { .. } => {
                on_end(BodyEnd::Finished);
                self
            }
            // Read whole by a cache layer: watch it as any other body.
            Kind::Buffered { ref mut body } => {
                chain(body.as_mut().project().on_end, on_end);
                self
            }
        }
    }
}

/// Adds `on_end` to the hooks in `slot`: each hears how the body ends, in order.
fn chain(slot: &mut Option<EndHook>, on_end: EndHook) {
    *slot = Some(match slot.take() {
        Some(first) => Box::new(move |end: BodyEnd<'_>| {
            first(end);
            on_end(end);
        }),
        None => on_end,
    });
}

/// The bytes of a buffered body whose rest is always ready (a `Full`, a `String`), read now.
fn drain_ready<B>(body: Buffered<B>) -> Bytes
where
    B: Body<Data = Bytes, Error = std::convert::Infallible> + Unpin,
{
    let body = match body.whole() {
        Ok(data) => return data,
        Err(body) => body,
    };
    // Longer than it said (which these bodies never are): read the rest, never lose it.
    struct Noop;
    impl std::task::Wake for Noop {
        fn wake(self: std::sync::Arc<Self>) {}
    }
    let waker = std::task::Waker::from(std::sync::Arc::new(Noop));
    let mut cx = Context::from_waker(&waker);
    let mut body = std::pin::pin!(body);
    let mut joined = bytes::BytesMut::new();
    while let Poll::Ready(Some(Ok(frame))) = body.as_mut().poll_frame(&mut cx) {
        if let Ok(data) = frame.into_data() {
            joined.extend_from_slice(&data);
        }
    }
    joined.freeze()
}

impl LayerBody for Full<Bytes> {}

impl sealed::Sealed for Full<Bytes> {
    fn from_bytes(bytes: Bytes) -> Self {
        Full::new(bytes)
    }

    fn from_buffered(body: Buffered<Self>) -> Self {
        Full::new(drain_ready(body))
    }

    /// One data frame, no trailers: it ends as it starts.
    fn watched(self, on_end: EndHook) -> Self {
        on_end(BodyEnd::Finished);
        self
    }
}

impl LayerBody for String {}

impl sealed::Sealed for String {
    /// The layer's own bodies are JSON or empty, so UTF-8; an `on_rejection` body that is
    /// not has its invalid bytes replaced (U+FFFD), as a `String` must.
    fn from_bytes(bytes: Bytes) -> Self {
        // `Vec::from` takes a uniquely held buffer without copying it.
        match String::from_utf8(Vec::from(bytes)) {
            Ok(text) => text,
            Err(err) => String::from_utf8_lossy(err.as_bytes()).into_owned(),
        }
    }

    /// The bytes came from a `String`: valid UTF-8 again.
    fn from_buffered(body: Buffered<Self>) -> Self {
        Self::from_bytes(drain_ready(body))
    }

    /// One data frame, no trailers: it ends as it starts.
    fn watched(self, on_end: EndHook) -> Self {
        on_end(BodyEnd::Finished);
        self
    }
}

impl<E: Send + 'static> LayerBody for UnsyncBoxBody<Bytes, E> {}

impl<E: Send + 'static> sealed::Sealed for UnsyncBoxBody<Bytes, E> {
    fn from_bytes(bytes: Bytes) -> Self {
        Full::new(bytes)
            .map_err(|never| match never {})
            .boxed_unsync()
    }

    fn from_buffered(body: Buffered<Self>) -> Self {
        match body.whole() {
            Ok(data) => Self::from_bytes(data),
            Err(body) => body.boxed_unsync(),
        }
    }

    fn watched(self, on_end: EndHook) -> Self {
        Watched::new(self, on_end).boxed_unsync()
    }
}

impl<E: Send + Sync + 'static> LayerBody for BoxBody<Bytes, E> {}

impl<E: Send + Sync + 'static> sealed::Sealed for BoxBody<Bytes, E> {
    fn from_bytes(bytes: Bytes) -> Self {
        Full::new(bytes).map_err(|never| match never {}).boxed()
    }

    fn from_buffered(body: Buffered<Self>) -> Self {
        match body.whole() {
            Ok(data) => Self::from_bytes(data),
            Err(body) => body.boxed(),
        }
    }

    fn watched(self, on_end: EndHook) -> Self {
        Watched::new(self, on_end).boxed()
    }
}

// axum 0.8's `axum::body::Body` is axum-core 0.5's.
#[cfg(feature = "axum-body")]
impl LayerBody for axum_core::body::Body {}

#[cfg(feature = "axum-body")]
impl sealed::Sealed for axum_core::body::Body {
    fn from_bytes(bytes: Bytes) -> Self {
        axum_core::body::Body::from(bytes)
    }

    /// A whole body becomes a plain one again (no wrapper for axum to box).
    fn from_buffered(body: Buffered<Self>) -> Self {
        match body.whole() {
            Ok(data) => axum_core::body::Body::from(data),
            Err(body) => axum_core::body::Body::new(body),
        }
    }

    fn watched(self, on_end: EndHook) -> Self {
        axum_core::body::Body::new(Watched::new(self, on_end))
    }
}
