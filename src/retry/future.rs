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

use super::config::Config;
use super::events::{Count, GiveUp, RetryEvent};
use super::hint::{hint, Hint};
use super::policy::{is_circuit_open, refusal_of};
use super::{RetryBody, RetryIf, TimedOut};
use crate::response::{PolledAfterCompletion, RefusalKind};
use crate::util::{Collect, Collected};
use crate::BoxError;

/// What a request keeps to be sent again: its head and its buffered body.
pub(crate) struct Kept {
    pub(crate) parts: Parts,
    pub(crate) data: Bytes,
    pub(crate) trailers: Option<Box<HeaderMap>>,
}

impl Kept {
    fn request<B: Body>(&self) -> Request<RetryBody<B>> {
        Request::from_parts(
            self.parts.clone(),
            RetryBody::replay(self.data.clone(), self.trailers.clone()),
        )
    }
}

/// A request whose body is being read before its first attempt.
pub(crate) struct Reading<B> {
    collect: Collect<B>,
    parts: Option<Parts>,
}

pin_project! {
    #[project = StateProj]
    enum State<F, B>
    where
        B: Body,
    {
        /// Reading the body to keep it (boxed: a body to read is the less common case, and
        /// inline the head would grow every request's future).
        Collecting { reading: Box<Reading<B>> },
        /// An attempt is running, and perhaps its hedge.
        /// (The hedge is boxed: few requests have one, and inline it would double the size
        /// of every request's future.)
        Calling { #[pin] first: Option<F>, second: Option<Pin<Box<F>>> },
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
        // A backoff wait, or the running attempt's timeout. (Timers and a parked failure are
        // boxed: most requests need none, and inline they would triple the future's size,
        // which every request pays in moves.)
        timer: Timer,
        // When the first attempt's hedge is due (hedging only).
        hedge_timer: Timer,
        // The hedge's time has come; it goes once the service is ready.
        hedge_due: bool,
        // A hedge was sent (or given up): one per request.
        hedged: bool,
        // A copy's failure, kept while the other copy may still do better.
        parked: Option<Box<Result<S::Response, BoxError>>>,
        // When the running attempt started (only when hedging records latencies).
        attempt_started: Option<Instant>,
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
        // The attempt's span, only while a subscriber wants debug spans (boxed: most
        // servers run without, and a span is five words).
        span: Option<Box<tracing::Span>>,
    }
}

impl<S, B, C> ResponseFuture<S, B, C>
where
    S: Service<Request<RetryBody<B>>>,
    B: Body,
{
    /// One attempt, already called. `config` only if it has a timeout to keep.
    #[inline]
    pub(crate) fn once(future: S::Future, config: Option<Arc<Config<C>>>) -> Self {
        Self::new(calling(future), config, None, None, false)
    }

    /// A first attempt already called, with what it takes to send it again.
    #[inline]
    pub(crate) fn called(
        future: S::Future,
        config: Arc<Config<C>>,
        service: S,
        kept: Kept,
        grpc: bool,
    ) -> Self {
        Self::new(
            calling(future),
            Some(config),
            Some(service),
            Some(kept),
            grpc,
        )
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
            reading: Box::new(Reading {
                collect,
                parts: Some(parts),
            }),
        };
        Self::new(state, Some(config), Some(service), None, grpc)
    }

    /// (Everything is worked out before the future is made, so that it is built once, in
    /// place: it is the largest value a request moves.)
    #[inline]
    fn new(
        state: State<S::Future, B>,
        config: Option<Arc<Config<C>>>,
        service: Option<S>,
        kept: Option<Kept>,
        grpc: bool,
    ) -> Self {
        let called = matches!(state, State::Calling { .. });
        let (mut started, mut timer, mut hedge_timer, mut attempt_started) =
            (None, None, None, None);
        if let Some(config) = config.as_deref() {
            let now = config.needs_clock().then(Instant::now);
            if config.needs_timer() {
                started = now;
            }
            if let (true, Some(now)) = (called, now) {
                timer = attempt_end(config, now, now).map(sleep_until);
                if kept.is_some() {
                    hedge_timer = hedge_at(config, now).map(sleep_until);
                }
                if config.hedging.as_ref().is_some_and(|h| h.observes()) {
                    attempt_started = Some(now);
                }
            }
        }
        Self {
            state,
            timer,
            hedge_timer,
            hedge_due: false,
            hedged: false,
            parked: None,
            attempt_started,
            config,
            service,
            kept,
            attempts: u32::from(called),
            previous: Duration::ZERO,
            grpc,
            started,
            span: if called { attempt_span(1) } else { None },
        }
    }
}

#[inline]
fn calling<F, B: Body>(future: F) -> State<F, B> {
    State::Calling {
        first: Some(future),
        second: None,
    }
}

/// When the first attempt, started `now`, is hedged: `None` without hedging, or while a
/// percentile hedge has too few latencies to go by.
fn hedge_at<C>(config: &Config<C>, now: Instant) -> Option<Instant> {
    config
        .hedging
        .as_ref()
        .and_then(|hedging| hedging.delay())
        .map(|delay| now + delay)
}

/// Polls the future in `slot`, emptying it when it is done.
#[inline]
fn poll_slot<F, T, E>(
    mut slot: Pin<&mut Option<F>>,
    cx: &mut Context<'_>,
) -> Option<Result<T, BoxError>>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    let result = match slot.as_mut().as_pin_mut()?.poll(cx) {
        Poll::Ready(result) => result.map_err(Into::into),
        Poll::Pending => return None,
    };
    slot.set(None);
    Some(result)
}

/// A timer, when one is armed.
type Timer = Option<Pin<Box<Sleep>>>;

fn sleep_until(at: Instant) -> Pin<Box<Sleep>> {
    Box::pin(tokio::time::sleep_until(at))
}

/// Drops `timer` if it is armed (the check is inline: most requests never arm one).
#[inline]
fn disarm(timer: &mut Timer) {
    if timer.is_some() {
        *timer = None;
    }
}

/// True when `timer` is armed and has fired.
fn expired(timer: &mut Timer, cx: &mut Context<'_>) -> bool {
    timer
        .as_mut()
        .is_some_and(|timer| timer.as_mut().poll(cx).is_ready())
}

/// The span of one attempt; none at all unless a subscriber wants debug spans (a disabled
/// span still costs its `log` fallback on every enter and exit, on every request).
fn attempt_span(attempt: u32) -> Option<Box<tracing::Span>> {
    tracing::enabled!(tracing::Level::DEBUG)
        .then(|| Box::new(tracing::debug_span!("retry_attempt", attempt)))
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
                StateProj::Collecting { reading } => {
                    let collected = ready!(reading.collect.poll_collect(cx));
                    let Some(parts) = reading.parts.take() else {
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
                        Collected::Once(body) => Request::from_parts(parts, RetryBody::from(body)),
                    };
                    let Some(service) = this.service.as_mut() else {
                        this.state.set(State::Done);
                        return Poll::Ready(Err(PolledAfterCompletion.into()));
                    };
                    let timers = Timers {
                        timer: this.timer,
                        hedge_timer: this.hedge_timer,
                        attempt_started: this.attempt_started,
                    };
                    let replayable = this.kept.is_some();
                    start(
                        timers,
                        this.config,
                        *this.started,
                        this.attempts,
                        this.span,
                        replayable,
                    );
                    let future = service.call(request);
                    this.state.set(calling(future));
                }
                StateProj::Calling { mut first, second } => {
                    let mut second = Pin::new(second);
                    // The answer, and whether it is worth another try (judged once).
                    // (A hedge that is due but not sent yet, its service not ready, is not.)
                    let lone = second.is_none()
                        && this.timer.is_none()
                        && this.hedge_timer.is_none()
                        && this.attempt_started.is_none()
                        && !*this.hedge_due;
                    let (result, failed) = if lone {
                        // The common case, kept short: one attempt, no timer, no hedge.
                        let _attempt = this.span.as_deref().map(tracing::Span::enter);
                        let Some(attempt) = first.as_mut().as_pin_mut() else {
                            this.state.set(State::Done);
                            return Poll::Ready(Err(PolledAfterCompletion.into()));
                        };
                        let result = ready!(attempt.poll(cx)).map_err(Into::into);
                        let failed = this
                            .config
                            .as_deref()
                            .is_some_and(|config| wants_another(config, &result, *this.grpc));
                        (result, failed)
                    } else {
                        let _attempt = this.span.as_deref().map(tracing::Span::enter);
                        let mut finished = None;
                        if let Some(result) = poll_slot(first.as_mut(), cx) {
                            if let (Some(config), Some(started)) =
                                (this.config.as_deref(), this.attempt_started.take())
                            {
                                if let Some(hedging) = &config.hedging {
                                    hedging.observe(started.elapsed());
                                }
                            }
                            finished = settle(
                                result,
                                second.as_mut(),
                                this.parked,
                                this.config,
                                *this.grpc,
                            );
                        }
                        if finished.is_none() {
                            if let Some(result) = poll_slot(second.as_mut(), cx) {
                                finished = settle(
                                    result,
                                    first.as_mut(),
                                    this.parked,
                                    this.config,
                                    *this.grpc,
                                );
                            }
                        }
                        match finished {
                            Some(result) => result,
                            None => {
                                // Both still running, or one failed and the other runs on.
                                if expired(this.hedge_timer, cx) {
                                    *this.hedge_timer = None;
                                    *this.hedge_due = true;
                                }
                                if *this.hedge_due && !*this.hedged {
                                    if let Some(hedge) =
                                        send_hedge(this.service, this.kept, this.config, cx)
                                    {
                                        *this.hedged = true;
                                        second.set(hedge.map(Box::pin));
                                        continue;
                                    }
                                }
                                if !expired(this.timer, cx) {
                                    return Poll::Pending;
                                }
                                // Time is up with one copy's failure in hand: that failure
                                // (its status, its `Retry-After`) is the answer, not a
                                // time-out; with none, the time-out is.
                                let result = match this.parked.take() {
                                    Some(parked) => *parked,
                                    None => Err(timed_out(this.config, *this.started).into()),
                                };
                                let failed = this.config.as_deref().is_some_and(|config| {
                                    wants_another(config, &result, *this.grpc)
                                });
                                (result, failed)
                            }
                        }
                    };
                    // The attempt is over: drop its futures (and its timeouts) before waiting.
                    this.state.set(State::Done);
                    disarm(this.timer);
                    disarm(this.hedge_timer);
                    *this.hedge_due = false;
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
                    match judged.next_delay(&result, failed, this.previous) {
                        None => return Poll::Ready(result),
                        Some(delay) => {
                            drop(result);
                            *this.timer = Some(Box::pin(tokio::time::sleep(delay)));
                            this.state.set(State::Waiting);
                        }
                    }
                }
                StateProj::Waiting => {
                    if let Some(timer) = this.timer.as_mut() {
                        ready!(timer.as_mut().poll(cx));
                    }
                    // While the service gets ready, the deadline still counts.
                    *this.timer = match (this.config.as_deref(), *this.started) {
                        (
                            Some(Config {
                                deadline: Some(deadline),
                                ..
                            }),
                            Some(started),
                        ) => Some(Box::pin(tokio::time::sleep_until(started + *deadline))),
                        _ => None,
                    };
                    this.state.set(State::Readying);
                }
                StateProj::Readying => {
                    let (Some(service), Some(kept)) = (this.service.as_mut(), this.kept.as_ref())
                    else {
                        this.state.set(State::Done);
                        return Poll::Ready(Err(PolledAfterCompletion.into()));
                    };
                    let readiness = service.poll_ready(cx);
                    // Past the deadline while getting ready (or ready only after it): no
                    // attempt that would be cut off at once.
                    if !matches!(readiness, Poll::Ready(Err(_))) && expired(this.timer, cx) {
                        this.state.set(State::Done);
                        disarm(this.timer);
                        let deadline = this
                            .config
                            .as_deref()
                            .and_then(|config| config.deadline)
                            .unwrap_or_default();
                        return Poll::Ready(Err(TimedOut::deadline(deadline).into()));
                    }
                    if let Err(error) = ready!(readiness) {
                        this.state.set(State::Done);
                        return Poll::Ready(Err(error.into()));
                    }
                    *this.timer = None;
                    let request = kept.request();
                    let timers = Timers {
                        timer: this.timer,
                        hedge_timer: this.hedge_timer,
                        attempt_started: this.attempt_started,
                    };
                    start(
                        timers,
                        this.config,
                        *this.started,
                        this.attempts,
                        this.span,
                        true,
                    );
                    let future = service.call(request);
                    this.state.set(calling(future));
                }
                StateProj::Done => return Poll::Ready(Err(PolledAfterCompletion.into())),
            }
        }
    }
}

/// What a copy's `result` means while the other copy may still be running in `other`: the
/// answer (the other is cancelled), or `None` to wait for the other (a failure worth another
/// try is parked; the later of two failures is the answer).
#[inline]
fn settle<F, T, C>(
    result: Result<Response<T>, BoxError>,
    mut other: Pin<&mut Option<F>>,
    parked: &mut Option<Box<Result<Response<T>, BoxError>>>,
    config: &Option<Arc<Config<C>>>,
    grpc: bool,
) -> Option<(Result<Response<T>, BoxError>, bool)>
where
    C: RetryIf<T>,
{
    let failed = config
        .as_deref()
        .is_some_and(|config| wants_another(config, &result, grpc));
    if other.is_some() && failed {
        *parked = Some(Box::new(result));
        return None;
    }
    other.set(None);
    parked.take();
    Some((result, failed))
}

/// True when `result` would be retried: the predicate says so, and it is no open breaker's.
fn wants_another<C: RetryIf<T>, T>(
    config: &Config<C>,
    result: &Result<Response<T>, BoxError>,
    grpc: bool,
) -> bool {
    // The predicate first: a success needs no look for a refusal.
    config.classify.should_retry_call(result, grpc) && !is_circuit_open(refusal_of(result))
}

/// The hedge of a request, if the service is ready and the budget allows it; `None` while
/// the service is not ready. A refused budget gives up hedging this request.
fn send_hedge<S, B, C>(
    service: &mut Option<S>,
    kept: &Option<Kept>,
    config: &Option<Arc<Config<C>>>,
    cx: &mut Context<'_>,
) -> Option<Option<S::Future>>
where
    S: Service<Request<RetryBody<B>>>,
    B: Body,
{
    let (Some(service), Some(kept), Some(config)) =
        (service.as_mut(), kept.as_ref(), config.as_deref())
    else {
        return Some(None);
    };
    match service.poll_ready(cx) {
        Poll::Pending => return None,
        Poll::Ready(Err(_)) => return Some(None),
        Poll::Ready(Ok(())) => {}
    }
    if config
        .budget
        .as_ref()
        .is_some_and(|budget| !budget.try_withdraw())
    {
        return Some(None);
    }
    config.counters.bump(Count::Attempts);
    let after = config
        .hedging
        .as_ref()
        .and_then(|h| h.delay())
        .unwrap_or_default();
    config.emit(RetryEvent::Hedged { after });
    Some(Some(service.call(kept.request())))
}

/// The timers and clock readings an attempt starts.
struct Timers<'a> {
    timer: &'a mut Timer,
    hedge_timer: &'a mut Timer,
    attempt_started: &'a mut Option<Instant>,
}

/// Counts an attempt about to be called, opens its span and arms its timeout (and, for the
/// first attempt of a request that may be sent twice, its hedge).
fn start<C>(
    timers: Timers<'_>,
    config: &Option<Arc<Config<C>>>,
    started: Option<Instant>,
    attempts: &mut u32,
    span: &mut Option<Box<tracing::Span>>,
    replayable: bool,
) {
    *attempts += 1;
    *span = attempt_span(*attempts);
    let Some(config) = config else {
        return;
    };
    config.counters.bump(Count::Attempts);
    if !config.needs_clock() {
        return;
    }
    let now = Instant::now();
    if let Some(end) = started.and_then(|started| attempt_end(config, started, now)) {
        *timers.timer = Some(sleep_until(end));
    }
    if let Some(hedging) = &config.hedging {
        if *attempts == 1 && replayable {
            if let Some(at) = hedge_at(config, now) {
                *timers.hedge_timer = Some(sleep_until(at));
            }
        }
        if hedging.observes() {
            *timers.attempt_started = Some(now);
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
    /// The wait before the next attempt, or `None` to answer with `result`; `failed` is
    /// [`wants_another`]'s verdict on it.
    fn next_delay<ResB>(
        &self,
        result: &Result<Response<ResB>, BoxError>,
        failed: bool,
        previous: &mut Duration,
    ) -> Option<Duration> {
        let config = self.config;
        if !failed {
            return None;
        }
        let asked = match result {
            Ok(res) => {
                let now = std::time::UNIX_EPOCH + config.clock.unix_now();
                hint(res.headers(), self.grpc, now, config.max_retry_after)
            }
            Err(_) => match refusal_of(result) {
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
