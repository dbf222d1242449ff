//! Request bodies that can be sent again. A body within the bound is read whole before the
//! first attempt and replayed from memory on each one; any other body is passed through once,
//! untouched and unbuffered. The reading is the shared [`crate::util`] buffered body: nothing
//! is lost, a body that turns out longer than it said is sent once as its buffered start
//! followed by the rest, a body that fails while being read fails the one attempt with its
//! own error.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::util::Buffered;

pin_project! {
    /// The request body the retry layer's inner service receives: the caller's body passed
    /// through once, or a buffered copy replayed on every attempt. Its data is [`Bytes`] and its
    /// error the caller's body's error, so a hyper-util `Client<_, RetryBody<B>>` or a tonic
    /// channel (through `tonic::body::Body::new`) takes it as it is.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use http_body_util::{BodyExt, Full};
    /// use tower_bulwark::retry::RetryBody;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let body = RetryBody::once(Full::new(Bytes::from_static(b"hello")));
    /// assert_eq!(body.collect().await.unwrap().to_bytes(), "hello");
    /// # }
    /// ```
    pub struct RetryBody<B>
    where
        B: Body,
    {
        #[pin]
        inner: Buffered<B>,
    }
}

impl<B: Body> RetryBody<B> {
    /// The caller's body as it is, for one attempt.
    ///
    /// ```
    /// use http_body::Body;
    /// let body = tower_bulwark::retry::RetryBody::once(http_body_util::Empty::<bytes::Bytes>::new());
    /// assert!(body.is_end_stream());
    /// ```
    pub fn once(body: B) -> Self {
        Self::from(Buffered::once(body))
    }

    /// A replay of buffered `data` and `trailers`.
    pub(crate) fn replay(data: Bytes, trailers: Option<Box<HeaderMap>>) -> Self {
        Self::from(Buffered::replay(data, trailers))
    }
}

impl<B: Body> From<Buffered<B>> for RetryBody<B> {
    fn from(inner: Buffered<B>) -> Self {
        Self { inner }
    }
}

impl<B> std::fmt::Debug for RetryBody<B>
where
    B: Body,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("RetryBody")
            .field(&self.inner.form())
            .finish()
    }
}

impl<B> Body for RetryBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
