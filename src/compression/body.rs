//! The body of a response through the compression layer: the inner body as it is, or
//! compressed frame by frame, flushed whenever the inner body pauses, finished at its end,
//! its trailers passed on after the compressed data.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::config::{Config, Count};
use super::encoder::Encoder;
use crate::BoxError;

pin_project! {
    /// The body of a [`CompressionService`](super::CompressionService)'s response: the
    /// inner body untouched, or compressed as it is read.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use http_body_util::{BodyExt, Full};
    /// use tower::{service_fn, Layer, ServiceExt};
    /// use tower_bulwark::compression::CompressionLayer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    /// let svc = CompressionLayer::new().layer(service_fn(|_req: http::Request<()>| async {
    ///     Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from("x".repeat(4096)))))
    /// }));
    /// let req = http::Request::builder().header("accept-encoding", "gzip").body(())?;
    /// let res = svc.oneshot(req).await?;
    /// assert_eq!(res.headers()["content-encoding"], "gzip");
    /// let compressed = res.into_body().collect().await?.to_bytes();
    /// assert!(compressed.len() < 100);
    /// # Ok(())
    /// # }
    /// ```
    pub struct CompressionBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Identity { #[pin] body: B },
        Compressed { #[pin] body: B, state: Compressing },
    }
}

struct Compressing {
    /// Until the stream is finished (then back in the thread's pool).
    encoder: Option<Encoder>,
    /// Input taken since the last output: a pause of the inner body flushes it.
    unflushed: bool,
    phase: Phase,
    taken: u64,
    given: u64,
    config: Arc<Config>,
}

enum Phase {
    Reading,
    Trailers(HeaderMap),
    Done,
}

impl<B> CompressionBody<B> {
    pub(crate) fn identity(body: B) -> Self {
        Self {
            kind: Kind::Identity { body },
        }
    }

    pub(crate) fn compressed(body: B, encoder: Encoder, config: Arc<Config>) -> Self {
        Self {
            kind: Kind::Compressed {
                body,
                state: Compressing {
                    encoder: Some(encoder),
                    unflushed: false,
                    phase: Phase::Reading,
                    taken: 0,
                    given: 0,
                    config,
                },
            },
        }
    }
}

impl<B: std::fmt::Debug> std::fmt::Debug for CompressionBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            Kind::Identity { body } => f
                .debug_tuple("CompressionBody::Identity")
                .field(body)
                .finish(),
            Kind::Compressed { body, state } => f
                .debug_struct("CompressionBody::Compressed")
                .field("body", body)
                .field("encoder", &state.encoder)
                .finish_non_exhaustive(),
        }
    }
}

impl Compressing {
    fn encoder(&mut self) -> Result<&mut Encoder, BoxError> {
        self.encoder
            .as_mut()
            .ok_or_else(|| "the compressed stream was already finished".into())
    }

    /// The data frame for `out`, or `None` if the codec gave nothing yet.
    fn emit(&mut self, out: Vec<u8>) -> Option<Frame<Bytes>> {
        if out.is_empty() {
            return None;
        }
        self.given += out.len() as u64;
        Some(Frame::data(Bytes::from(out)))
    }

    fn finish(&mut self, out: &mut Vec<u8>, then: Phase) -> Result<(), BoxError> {
        self.encoder()?.finish(out)?;
        // The pool gets the compressor back now, not when the body is dropped.
        self.encoder = None;
        self.phase = then;
        self.config.count(Count::BytesIn, self.taken);
        self.config
            .count(Count::BytesOut, self.given + out.len() as u64);
        Ok(())
    }

    fn fail(&mut self, err: BoxError) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.phase = Phase::Done;
        self.encoder = None;
        Poll::Ready(Some(Err(err)))
    }
}

impl<B> Body for CompressionBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let (mut body, state) = match self.project().kind.project() {
            KindProj::Identity { body } => {
                return body.poll_frame(cx).map(|frame| {
                    frame.map(|frame| {
                        frame
                            .map(|frame| {
                                frame.map_data(|mut data| data.copy_to_bytes(data.remaining()))
                            })
                            .map_err(Into::into)
                    })
                });
            }
            KindProj::Compressed { body, state } => (body, state),
        };
        loop {
            match std::mem::replace(&mut state.phase, Phase::Done) {
                Phase::Done => return Poll::Ready(None),
                Phase::Trailers(trailers) => {
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers))))
                }
                Phase::Reading => state.phase = Phase::Reading,
            }
            let mut out = Vec::new();
            match body.as_mut().poll_frame(cx) {
                Poll::Pending => {
                    // The inner body pauses: what was taken so far goes out now (an event
                    // stream, a long report) instead of waiting in the codec.
                    if state.unflushed {
                        state.unflushed = false;
                        if let Err(err) = state.encoder().and_then(|e| Ok(e.flush(&mut out)?)) {
                            return state.fail(err);
                        }
                        if let Some(frame) = state.emit(out) {
                            return Poll::Ready(Some(Ok(frame)));
                        }
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(mut data) => {
                        let taken_before = state.taken;
                        let mut failed: Option<BoxError> = None;
                        match state.encoder.as_mut() {
                            None => {
                                failed = Some("the compressed stream was already finished".into())
                            }
                            Some(encoder) => {
                                while data.has_remaining() {
                                    let chunk = data.chunk();
                                    let len = chunk.len();
                                    if let Err(err) = encoder.write(chunk, &mut out) {
                                        failed = Some(err.into());
                                        break;
                                    }
                                    data.advance(len);
                                    state.taken += len as u64;
                                }
                            }
                        }
                        if let Some(err) = failed {
                            return state.fail(err);
                        }
                        // An empty frame took nothing: no flush owed for it.
                        state.unflushed |= state.taken > taken_before;
                        if let Some(frame) = state.emit(out) {
                            return Poll::Ready(Some(Ok(frame)));
                        }
                    }
                    Err(frame) => {
                        let Ok(trailers) = frame.into_trailers() else {
                            // A frame kind this crate does not know: nothing to compress.
                            continue;
                        };
                        if let Err(err) = state.finish(&mut out, Phase::Trailers(trailers)) {
                            return state.fail(err);
                        }
                        if let Some(frame) = state.emit(out) {
                            return Poll::Ready(Some(Ok(frame)));
                        }
                    }
                },
                Poll::Ready(Some(Err(err))) => return state.fail(err.into()),
                Poll::Ready(None) => {
                    if let Err(err) = state.finish(&mut out, Phase::Done) {
                        return state.fail(err);
                    }
                    return Poll::Ready(state.emit(out).map(Ok));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Identity { body } => body.is_end_stream(),
            Kind::Compressed { state, .. } => matches!(state.phase, Phase::Done),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Identity { body } => body.size_hint(),
            // The compressed length is known only at the end.
            Kind::Compressed { .. } => SizeHint::default(),
        }
    }
}
