//! A body read into memory within a bound, and the body that hands it on: the one mechanism
//! for buffering a body, whichever way it travels (a request read for replay by the retry
//! layer, a response read for its ETag by the cache layer). Nothing is lost: a body that turns
//! out longer than it said is handed on as its buffered start followed by the rest, a body that
//! fails while being read is handed on as its buffered start followed by its own error.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

pin_project! {
    /// A body as a buffering layer hands it on: passed through, replayed from memory, or its
    /// buffered start followed by the rest of it or by its error.
    pub struct Buffered<B>
    where
        B: Body,
    {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B>
    where
        B: Body,
    {
        /// The caller's body, for the one attempt a request without replay gets.
        Once { #[pin] body: B },
        /// A buffered copy.
        Replay { data: Option<Bytes>, trailers: Option<Box<HeaderMap>> },
        /// The buffered start of a body longer than the bound, then the rest of it.
        Prefix { data: Option<Bytes>, #[pin] rest: B },
        /// The buffered start of a body that failed while being read, then its error.
        Broken { data: Option<Bytes>, error: Option<B::Error> },
    }
}

impl<B: Body> Buffered<B> {
    /// The body as it is.
    pub(crate) fn once(body: B) -> Self {
        Self {
            kind: Kind::Once { body },
        }
    }

    /// A replay of buffered `data` and `trailers`.
    pub(crate) fn replay(data: Bytes, trailers: Option<Box<HeaderMap>>) -> Self {
        Self {
            kind: Kind::Replay {
                data: Some(data),
                trailers,
            },
        }
    }

    /// The data of a whole buffered body without trailers, or the body in any other form.
    pub(crate) fn whole(self) -> Result<Bytes, Self> {
        match self.kind {
            Kind::Replay {
                data,
                trailers: None,
            } => Ok(data.unwrap_or_default()),
            kind => Err(Self { kind }),
        }
    }

    /// Which of its forms the body is in, for `Debug`.
    pub(crate) fn form(&self) -> &'static str {
        match &self.kind {
            Kind::Once { .. } => "once",
            Kind::Replay { .. } => "replay",
            Kind::Prefix { .. } => "prefix",
            Kind::Broken { .. } => "broken",
        }
    }
}

/// The next buffered frame, if any: data first (an empty chunk is skipped), then trailers.
fn buffered<E>(
    data: &mut Option<Bytes>,
    trailers: Option<&mut Option<Box<HeaderMap>>>,
) -> Option<Result<Frame<Bytes>, E>> {
    if let Some(chunk) = data.take().filter(|chunk| !chunk.is_empty()) {
        return Some(Ok(Frame::data(chunk)));
    }
    trailers
        .and_then(Option::take)
        .map(|trailers| Ok(Frame::trailers(*trailers)))
}

impl<B> Body for Buffered<B>
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
            KindProj::Once { body } => body.poll_frame(cx),
            KindProj::Replay { data, trailers } => Poll::Ready(buffered(data, Some(trailers))),
            KindProj::Prefix { data, rest } => match buffered(data, None) {
                Some(frame) => Poll::Ready(Some(frame)),
                None => rest.poll_frame(cx),
            },
            KindProj::Broken { data, error } => {
                Poll::Ready(buffered(data, None).or_else(|| error.take().map(Err)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Once { body } => body.is_end_stream(),
            Kind::Replay { data, trailers } => {
                data.as_ref().is_none_or(Bytes::is_empty) && trailers.is_none()
            }
            Kind::Prefix { data, rest } => data.is_none() && rest.is_end_stream(),
            Kind::Broken { data, error } => data.is_none() && error.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        let len = |data: &Option<Bytes>| data.as_ref().map_or(0, |d| d.len() as u64);
        match &self.kind {
            Kind::Once { body } => body.size_hint(),
            Kind::Replay { data, .. } => SizeHint::with_exact(len(data)),
            Kind::Prefix { data, rest } => {
                let rest = rest.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(rest.lower().saturating_add(len(data)));
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper.saturating_add(len(data)));
                }
                hint
            }
            Kind::Broken { data, .. } => SizeHint::with_exact(len(data)),
        }
    }
}

/// Whether a body of this size may be buffered: it says it ends within `max` bytes.
pub(crate) fn fits<B: Body>(body: &B, max: u64) -> bool {
    body.size_hint().upper().is_some_and(|upper| upper <= max)
}

/// A body whose reading is finished: a buffered copy (for replay), or a body for one attempt.
pub(crate) enum Collected<B: Body> {
    Whole {
        data: Bytes,
        // Boxed: trailers on a request are rare, and inline they would grow every request.
        trailers: Option<Box<HeaderMap>>,
    },
    Once(Buffered<B>),
}

/// Reads a body into memory, up to `max` bytes. (`Unpin` so that the body can be handed on
/// when it turns out too long: the bodies of hyper, axum, tonic and `http-body-util` are.)
pub(crate) struct Collect<B> {
    body: Option<B>,
    // Inline: most bodies arrive in one chunk, which then costs no allocation.
    chunks: smallvec::SmallVec<[Bytes; 1]>,
    len: usize,
    max: usize,
}

impl<B> Collect<B> {
    pub(crate) fn new(body: B, max: usize) -> Self {
        Self {
            body: Some(body),
            chunks: smallvec::SmallVec::new(),
            len: 0,
            max,
        }
    }

    /// The chunks read so far as one `Bytes` (no copy for a single chunk).
    fn joined(&mut self) -> Bytes {
        match self.chunks.len() {
            0 => Bytes::new(),
            1 => self.chunks.pop().unwrap_or_default(),
            _ => {
                let mut joined = BytesMut::with_capacity(self.len);
                for chunk in self.chunks.drain(..) {
                    joined.extend_from_slice(&chunk);
                }
                joined.freeze()
            }
        }
    }
}

impl<B> Collect<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    /// Reads until the body ends, fails, or passes the bound. Polled again after it is
    /// ready, it answers an empty body.
    pub(crate) fn poll_collect(&mut self, cx: &mut Context<'_>) -> Poll<Collected<B>> {
        loop {
            let Some(body) = self.body.as_mut() else {
                return Poll::Ready(Collected::Whole {
                    data: Bytes::new(),
                    trailers: None,
                });
            };
            let frame = ready!(Pin::new(body).poll_frame(cx));
            let ended = match frame {
                None => Collected::Whole {
                    data: self.joined(),
                    trailers: None,
                },
                Some(Err(error)) => Collected::Once(Buffered {
                    kind: Kind::Broken {
                        data: Some(self.joined()),
                        error: Some(error),
                    },
                }),
                Some(Ok(frame)) => match frame.into_data() {
                    // An empty chunk adds nothing; kept, a stream of them would grow memory.
                    Ok(chunk) if chunk.is_empty() => continue,
                    Ok(chunk) => {
                        self.len = self.len.saturating_add(chunk.len());
                        self.chunks.push(chunk);
                        if self.len <= self.max {
                            continue;
                        }
                        // Longer than it said: one attempt, its start from memory.
                        let data = Some(self.joined());
                        match self.body.take() {
                            Some(rest) => Collected::Once(Buffered {
                                kind: Kind::Prefix { data, rest },
                            }),
                            None => continue,
                        }
                    }
                    // Trailers end the body.
                    Err(frame) => Collected::Whole {
                        data: self.joined(),
                        trailers: frame.into_trailers().ok().map(Box::new),
                    },
                },
            };
            self.body = None;
            return Poll::Ready(ended);
        }
    }
}
