//! The retry layer's response future: read the body (if it is kept for replay), call, judge,
//! wait, call again. A state machine without boxing; the timer is created only when a wait
//! or a timeout needs one.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use super::body::{Collect, Collected};
use super::config::Config;
use super::events::{Count, GiveUp, RetryEvent};
use super::hint::{hint, Hint};
use super::policy::{is_circuit_open, refusal_of};
use super::{RetryBody, RetryIf, TimedOut};
use crate::response::{PolledAfterCompletion, RefusalKind};
use crate::BoxError;

/// What a request keeps to be sent again: its head and its buffered body.
pub(crate) struct Kept {
    pub(crate) parts: Parts,
    pub(crate) data: Bytes,
    pub(crate) trailers: Option<HeaderMap>,
}

impl Kept {
    fn request<B: Body>(&self) -> Request<RetryBody<B>> {
        Request::from_parts(
            self.parts.clone(),
            RetryBody::replay(self.data.clone(), self.trailers.clone()),
        )
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B>
    where
        B: Body,
    {
        /// Reading the body to keep it.
        Collecting { collect: Collect<B>, parts: Option<Parts> },
        /// An attempt is running.
        Calling { #[pin] future: F },
        /// Waiting (on the timer) before the next attempt.
        Waiting,
        /// Waiting for the inner service to be ready for the next attempt.
        Readying,
        Done,
    }
}

pin_project! {
    /// The future of a [`Retry`](super::Retry) service's call.
    pub struct ResponseFuture<S, B, C>
    where
        S: Service<Request<RetryBody<B>>>,
        B: Body,
    {
        #[pin]
        state: State<S::Future, B>,
        // A backoff wait, or the running attempt's timeout.
        #[pin]
        timer: Option<Sleep>,
        // `None` for a request that gets one attempt and no timeout.
        config: Option<Arc<Config<C>>>,
        // The service for the next attempts; `None` for a request that gets one.
        service: Option<S>,
        // What is sent again; `None` for a request that gets one attempt.
        kept: Option<Kept>,
        attempts: u32,
        // The last backoff delay (decorrelated jitter grows from it).
        previous: Duration,
        grpc: bool,
        // When the request came, if it has a deadline or timeouts.
        started: Option<Instant>,
        span: tracing::Span,
    }
}

impl<S, B, C> ResponseFuture<S, B, C>
where
    S: Service<Request<RetryBody<B>>>,
    B: Body,
{
    /// One attempt, already called. `config` only if it has a timeout to keep.
    pub(crate) fn once(future: S::Future, config: Option<Arc<Config<C>>>) -> Self {
        Self::new(State::Calling { future }, config, None, None, false)
    }

    /// A first attempt already called, with what it takes to send it again.
    pub(crate) fn called(
        future: S::Future,
        config: Arc<Config<C>>,
        service: S,
        kept: Kept,
        grpc: bool,
    ) -> Self {
        let state = State::Calling { future };
        Self::new(state, Some(config), Some(service), Some(kept), grpc)
    }

    /// The body is read first; `service` is ready for the first attempt.
    pub(crate) fn collecting(
        collect: Collect<B>,
        parts: Parts,
        config: Arc<Config<C>>,
        service: S,
        grpc: bool,
    ) -> Self {
        let state = State::Collecting {
            collect,
            parts: Some(parts),
        };
        Self::new(state, Some(config), Some(service), None, grpc)
    }

    fn new(
        state: State<S::Future, B>,
        config: Option<Arc<Config<C>>>,
        service: Option<S>,
        kept: Option<Kept>,
        grpc: bool,
    ) -> Self {
        let called = matches!(state, State::Calling { .. });
        let mut this = Self {
            state,
            timer: None,
            config,
            service,
            kept,
            attempts: u32::from(called),
            previous: Duration::ZERO,
            grpc,
            started: None,
            span: if called {
                attempt_span(1)
            } else {
                tracing::Span::none()
            },
        };
        if let Some(config) = this.config.as_deref().filter(|c| c.needs_timer()) {
            let now = Instant::now();
            this.started = Some(now);
            if called {
                this.timer = attempt_end(config, now, now).map(tokio::time::sleep_until);
            }
        }
        this
    }
}

fn attempt_span(attempt: u32) -> tracing::Span {
    tracing::debug_span!("retry_attempt", attempt)
}

/// When the attempt starting `now` must end: its timeout or the deadline, the sooner.
fn attempt_end<C>(config: &Config<C>, started: Instant, now: Instant) -> Option<Instant> {
    let attempt = config.attempt_timeout.map(|timeout| now + timeout);
    let deadline = config.deadline.map(|deadline| started + deadline);
    match (attempt, deadline) {
        (Some(a), Some(d)) => Some(a.min(d)),
        (a, d) => a.or(d),
    }
}

impl<S, B, C, ResB> Future for ResponseFuture<S, B, C>
where
    S: Service<Request<RetryBody<B>>, Response = Response<ResB>>,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Unpin,
    C: RetryIf<ResB>,
{
    type Output = Result<Response<ResB>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Collecting { collect, parts } => {
                    let collected = ready!(collect.poll_collect(cx));
                    let Some(parts) = parts.take() else {
                        this.state.set(State::Done);
                        return Poll::Ready(Err(PolledAfterCompletion.into()));
                    };
                    let request = match collected {
                        Collected::Whole { data, trailers } => {
                            let kept = Kept {
                                parts,
                                data,
                                trailers,
                            };
                            let request = kept.request();
                            *this.kept = Some(kept);
                            request
                        }
                        // One attempt: nothing kept.
                        Collected::Once(body) => Request::from_parts(parts, body),
                    };
                    let Some(service) = this.service.as_mut() else {
                        this.state.set(State::Done);
                        return Poll::Ready(Err(PolledAfterCompletion.into()));
                    };
                    start(
                        &mut this.timer,
                        this.config,
                        *this.started,
                        this.attempts,
                        this.span,
                    );
                    let future = service.call(request);
                    this.state.set(State::Calling { future });
                }
                StateProj::Calling { future } => {
                    let result = {
                        let _attempt = this.span.enter();
                        match future.poll(cx) {
                            Poll::Ready(result) => result.map_err(Into::into),
                            Poll::Pending => {
                                let expired = this
                                    .timer
                                    .as_mut()
                                    .as_pin_mut()
                                    .is_some_and(|timer| timer.poll(cx).is_ready());
                                if !expired {
                                    return Poll::Pending;
                                }
                                Err(timed_out(this.config, *this.started).into())
                            }
                        }
                    };
                    // The attempt is over: drop its future (and its timeout) before waiting.
                    this.state.set(State::Done);
                    this.timer.set(None);
                    let (Some(config), Some(_)) = (this.config.as_deref(), this.kept.as_ref())
                    else {
                        return Poll::Ready(result);
                    };
                    let judged = Judged {
                        config,
                        attempts: *this.attempts,
                        grpc: *this.grpc,
                        started: *this.started,
                    };
                    match judged.next_delay(&result, this.previous) {
                        None => return Poll::Ready(result),
                        Some(delay) => {
                            drop(result);
                            this.timer.set(Some(tokio::time::sleep(delay)));
                            this.state.set(State::Waiting);
                        }
                    }
                }
                StateProj::Waiting => {
                    if let Some(timer) = this.timer.as_mut().as_pin_mut() {
                        ready!(timer.poll(cx));
                    }
                    this.timer.set(None);
                    this.state.set(State::Readying);
                }
                StateProj::Readying => {
                    let (Some(service), Some(kept)) = (this.service.as_mut(), this.kept.as_ref())
                    else {
                        this.state.set(State::Done);
                        return Poll::Ready(Err(PolledAfterCompletion.into()));
                    };
                    if let Err(error) = ready!(service.poll_ready(cx)) {
                        this.state.set(State::Done);
                        return Poll::Ready(Err(error.into()));
                    }
                    let request = kept.request();
                    start(
                        &mut this.timer,
                        this.config,
                        *this.started,
                        this.attempts,
                        this.span,
                    );
                    let future = service.call(request);
                    this.state.set(State::Calling { future });
                }
                StateProj::Done => return Poll::Ready(Err(PolledAfterCompletion.into())),
            }
        }
    }
}

/// Counts an attempt about to be called, opens its span and arms its timeout.
fn start<C>(
    timer: &mut Pin<&mut Option<Sleep>>,
    config: &Option<Arc<Config<C>>>,
    started: Option<Instant>,
    attempts: &mut u32,
    span: &mut tracing::Span,
) {
    *attempts += 1;
    *span = attempt_span(*attempts);
    if let Some(config) = config {
        config.counters.bump(Count::Attempts);
        if let Some(started) = started {
            if let Some(end) = attempt_end(config, started, Instant::now()) {
                timer.set(Some(tokio::time::sleep_until(end)));
            }
        }
    }
}

/// Which timeout fired: the deadline if it has passed, else the attempt's.
fn timed_out<C>(config: &Option<Arc<Config<C>>>, started: Option<Instant>) -> TimedOut {
    let Some(config) = config else {
        return TimedOut::attempt(Duration::ZERO);
    };
    match (config.deadline, started) {
        (Some(deadline), Some(started)) if Instant::now() >= started + deadline => {
            TimedOut::deadline(deadline)
        }
        _ => TimedOut::attempt(config.attempt_timeout.unwrap_or_default()),
    }
}

/// A finished attempt of a request that may be sent again.
struct Judged<'a, C> {
    config: &'a Config<C>,
    attempts: u32,
    grpc: bool,
    started: Option<Instant>,
}

impl<C> Judged<'_, C> {
    /// The wait before the next attempt, or `None` to answer with `result`.
    fn next_delay<ResB>(
        &self,
        result: &Result<Response<ResB>, BoxError>,
        previous: &mut Duration,
    ) -> Option<Duration>
    where
        C: RetryIf<ResB>,
    {
        let config = self.config;
        let refusal = refusal_of(result);
        // An open breaker is never hammered, whatever the predicate says.
        if is_circuit_open(refusal) || !config.classify.should_retry(result) {
            return None;
        }
        let asked = match result {
            Ok(res) => {
                let now = std::time::UNIX_EPOCH + config.clock.unix_now();
                hint(res.headers(), self.grpc, now, config.max_retry_after)
            }
            Err(_) => match refusal {
                Some(refusal) if refusal.kind() == RefusalKind::RateLimited => {
                    Hint::After(refusal.retry_after().min(config.max_retry_after))
                }
                _ => Hint::None,
            },
        };
        let give_up = |reason| {
            config.emit(RetryEvent::GaveUp {
                attempts: self.attempts,
                reason,
            });
            None
        };
        if asked == Hint::Stop {
            return give_up(GiveUp::Pushback);
        }
        if self.attempts > config.max_retries {
            return give_up(GiveUp::Attempts);
        }
        let backoff = config
            .backoff
            .delay(self.attempts - 1, *previous, config.random.as_ref());
        let delay = match asked {
            // gRPC pushback replaces the backoff; `Retry-After` is a floor under it.
            Hint::Pushback(wait) => wait,
            Hint::After(wait) => wait.max(backoff),
            _ => backoff,
        };
        if let (Some(deadline), Some(started)) = (config.deadline, self.started) {
            if Instant::now() + delay >= started + deadline {
                return give_up(GiveUp::Deadline);
            }
        }
        if let Some(budget) = &config.budget {
            if !budget.try_withdraw() {
                return give_up(GiveUp::Budget);
            }
        }
        *previous = backoff;
        config.emit(RetryEvent::Retrying {
            attempt: self.attempts,
            delay,
            status: result.as_ref().ok().map(Response::status),
        });
        Some(delay)
    }
}
