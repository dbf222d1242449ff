//! A scripted upstream for the retry tests: it answers each attempt with the next step of its
//! script (a status with headers, an error, or never), and records what it received and when,
//! on Tokio's paused clock.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response};
use http_body::Body as HttpBody;
use http_body_util::{BodyExt, Full};
use tokio::time::Instant;
use tower::Service;
use tower_bulwark::retry::RetryBody;
use tower_bulwark::BoxError;

/// What the upstream does with one attempt.
#[derive(Debug, Clone)]
pub enum Step {
    /// Answer with this status and headers.
    Status(u16, Vec<(&'static str, &'static str)>),
    /// Fail with this message (a transport error).
    Fail(&'static str),
    /// Never answer.
    Hang,
    /// Answer with this status after this long.
    Slow(Duration, u16),
}

/// `Step::Status` without headers.
pub fn status(code: u16) -> Step {
    Step::Status(code, Vec::new())
}

/// What the upstream received in one attempt.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Since the upstream was made.
    pub at: Duration,
    pub method: Method,
    pub body: Bytes,
    pub trailers: Option<HeaderMap>,
}

#[derive(Debug)]
struct State {
    script: VecDeque<Step>,
    /// Answered once the script is spent.
    otherwise: Step,
    seen: Vec<Seen>,
    /// Calls that ran to their answer (the others were cancelled, or hang).
    answered: usize,
    origin: Instant,
}

/// The scripted upstream; clones share the script and the record.
#[derive(Debug, Clone)]
pub struct Upstream {
    state: Arc<Mutex<State>>,
}

impl Upstream {
    /// Plays `script`, then answers `otherwise` forever.
    pub fn new(script: impl IntoIterator<Item = Step>, otherwise: Step) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                script: script.into_iter().collect(),
                otherwise,
                seen: Vec::new(),
                answered: 0,
                origin: Instant::now(),
            })),
        }
    }

    /// Every attempt so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    /// How many attempts came.
    pub fn calls(&self) -> usize {
        self.state.lock().unwrap().seen.len()
    }

    /// How many calls ran to their answer (not cancelled, not hanging).
    pub fn answered(&self) -> usize {
        self.state.lock().unwrap().answered
    }

    /// When each attempt came, from the upstream's start.
    pub fn times(&self) -> Vec<Duration> {
        self.seen().iter().map(|seen| seen.at).collect()
    }
}

impl<B> Service<Request<RetryBody<B>>> for Upstream
where
    B: HttpBody<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<BoxError> + Send,
{
    type Response = Response<Full<Bytes>>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<RetryBody<B>>) -> Self::Future {
        let state = self.state.clone();
        Box::pin(async move {
            let at = state.lock().unwrap().origin.elapsed();
            let (parts, body) = req.into_parts();
            let collected = body.collect().await.map_err(Into::into)?;
            let trailers = collected.trailers().cloned();
            let body = collected.to_bytes();
            let step = {
                let mut state = state.lock().unwrap();
                state.seen.push(Seen {
                    at,
                    method: parts.method,
                    body,
                    trailers,
                });
                let otherwise = state.otherwise.clone();
                state.script.pop_front().unwrap_or(otherwise)
            };
            let answer = |code: u16| {
                state.lock().unwrap().answered += 1;
                Response::builder()
                    .status(code)
                    .body(Full::new(Bytes::from(format!("{code}"))))
                    .unwrap()
            };
            match step {
                Step::Slow(wait, code) => {
                    tokio::time::sleep(wait).await;
                    Ok(answer(code))
                }
                Step::Status(code, headers) => {
                    state.lock().unwrap().answered += 1;
                    let mut res = Response::builder().status(code);
                    for (name, value) in headers {
                        res = res.header(name, value);
                    }
                    Ok(res.body(Full::new(Bytes::from(format!("{code}")))).unwrap())
                }
                Step::Fail(message) => Err(message.into()),
                Step::Hang => std::future::pending::<Result<_, BoxError>>().await,
            }
        })
    }
}

/// A request body in several chunks that says its exact length and ends with trailers:
/// the kind a retry must replay byte for byte.
#[derive(Debug)]
pub struct Chunks {
    chunks: VecDeque<Bytes>,
    trailers: Option<HeaderMap>,
    /// The length the body claims (may lie).
    claimed: u64,
}

impl Chunks {
    /// `chunks` then `trailers`, claiming its true length.
    pub fn new(chunks: &[&'static [u8]], trailers: Option<HeaderMap>) -> Self {
        let claimed = chunks.iter().map(|c| c.len() as u64).sum();
        Self::claiming(
            chunks.iter().map(|c| Bytes::from_static(c)).collect(),
            trailers,
            claimed,
        )
    }

    /// `chunks` then `trailers`, claiming `claimed` bytes.
    pub fn claiming(chunks: Vec<Bytes>, trailers: Option<HeaderMap>, claimed: u64) -> Self {
        Self {
            chunks: chunks.into(),
            trailers,
            claimed,
        }
    }
}

impl HttpBody for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        if let Some(chunk) = self.chunks.pop_front() {
            return Poll::Ready(Some(Ok(http_body::Frame::data(chunk))));
        }
        Poll::Ready(
            self.trailers
                .take()
                .map(|t| Ok(http_body::Frame::trailers(t))),
        )
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.claimed)
    }
}
