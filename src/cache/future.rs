//! The cache layer's response future: wait for the store (Redis) if it must, call the inner
//! service, read a body within the bound for its ETag, judge the response's preconditions,
//! remember or forget its validators.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::header::{CACHE_CONTROL, ETAG, LAST_MODIFIED};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::Body;
use pin_project_lite::pin_project;
use tower_service::Service;

use super::answer::{not_modified, precondition_failed};
use super::cache_control::freshness;
use super::conditional::{date_of, evaluate, Current, Verdict};
use super::config::{Config, Count, EtagMode};
use super::service::{announce_write, judge_stored, MethodKind};
use super::store::{Answer, Lookup, Pending, StoreKey, Stored};
use super::vary;
use crate::error::BackendError;
use crate::headers::etag::EntityTag;
use crate::response::LayerBody;
use crate::util::{fits, Collect, Collected};

/// What a request carries to its response when it needs more than the policy.
#[derive(Debug)]
pub(crate) struct Ctx {
    /// A read's precondition headers, to judge its response by.
    preconditions: Option<HeaderMap>,
    pub(crate) store_key: Option<StoreKey>,
    /// The tag `current_etag` gave: a read's response without an `ETag` gets it.
    pub(crate) current: Option<EntityTag>,
    /// The URI's generation when the store was asked: a read stores what it served only with
    /// it (none: not asked, or no answer; nothing is stored).
    pub(crate) generation: Option<u64>,
    /// A write with credentials `vary` does not name (see `judge_stored`).
    pub(crate) personal: bool,
}

impl Ctx {
    pub(crate) fn new(preconditions: Option<HeaderMap>, store_key: Option<StoreKey>) -> Self {
        Self {
            preconditions,
            store_key,
            current: None,
            generation: None,
            personal: false,
        }
    }
}

pin_project! {
    /// The future of a [`CacheService`](super::CacheService) call.
    pub struct ResponseFuture<S, ReqB, B>
    where
        S: Service<Request<ReqB>>,
    {
        #[pin]
        state: State<S, ReqB, B>,
        config: Option<Arc<Config>>,
        method: MethodKind,
        // Boxed: only conditional requests and stores need it.
        ctx: Option<Box<Ctx>>,
    }
}

impl<S, ReqB, B> std::fmt::Debug for ResponseFuture<S, ReqB, B>
where
    S: Service<Request<ReqB>>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("method", &self.method)
            .finish_non_exhaustive()
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, ReqB, B>
    where
        S: Service<Request<ReqB>>,
    {
        /// Waiting for the store's answer (Redis), holding the request and a ready service.
        Lookup {
            lookup: Pending<Lookup>,
            request: Option<Request<ReqB>>,
            service: Option<S>,
        },
        Calling { #[pin] future: S::Future },
        /// Reading the body for its ETag.
        Collecting {
            parts: Option<http::response::Parts>,
            collect: Collect<B>,
        },
        /// A write succeeded: waiting until the store has forgotten its URI.
        Forgetting {
            forget: Pending<Result<(), BackendError>>,
            response: Option<Response<B>>,
        },
        /// Answered without the inner service (or its response is final).
        Answered { response: Option<Response<B>> },
    }
}

impl<S, ReqB, B> ResponseFuture<S, ReqB, B>
where
    S: Service<Request<ReqB>>,
{
    /// The inner call, untouched (a method the layer has nothing to do with).
    pub(crate) fn untouched(future: S::Future) -> Self {
        Self {
            state: State::Calling { future },
            config: None,
            method: MethodKind::Other,
            ctx: None,
        }
    }

    pub(crate) fn called(
        future: S::Future,
        config: Arc<Config>,
        method: MethodKind,
        ctx: Option<Ctx>,
    ) -> Self {
        Self {
            state: State::Calling { future },
            config: Some(config),
            method,
            ctx: ctx.map(Box::new),
        }
    }

    pub(crate) fn answered(response: Response<B>) -> Self {
        Self {
            state: State::Answered {
                response: Some(response),
            },
            config: None,
            method: MethodKind::Other,
            ctx: None,
        }
    }

    pub(crate) fn looking_up(
        lookup: Pending<Lookup>,
        request: Request<ReqB>,
        service: S,
        config: Arc<Config>,
        method: MethodKind,
        ctx: Ctx,
    ) -> Self {
        Self {
            state: State::Lookup {
                lookup,
                request: Some(request),
                service: Some(service),
            },
            config: Some(config),
            method,
            ctx: Some(Box::new(ctx)),
        }
    }
}

/// What to do with a response once the inner service gave it.
enum Next<B> {
    Done(Response<B>),
    Collect(http::response::Parts, Collect<B>),
    Forget(Pending<Result<(), BackendError>>, Response<B>),
}

impl<S, ReqB, B> Future for ResponseFuture<S, ReqB, B>
where
    S: Service<Request<ReqB>, Response = Response<B>>,
    B: LayerBody + Unpin,
{
    type Output = Result<Response<B>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let next = match this.state.as_mut().project() {
                StateProj::Lookup {
                    lookup,
                    request,
                    service,
                } => {
                    let found = ready!(lookup.as_mut().poll(cx));
                    let (Some(mut req), Some(mut service), Some(config)) =
                        (request.take(), service.take(), this.config.as_ref())
                    else {
                        return Poll::Ready(Ok(crate::response::polled_after_completion()));
                    };
                    let mut personal = false;
                    if let Some(ctx) = this.ctx.as_deref_mut() {
                        ctx.generation = found.generation;
                        personal = ctx.personal;
                    }
                    if let Some(answer) = judge_stored(&found.known, personal, &mut req, config) {
                        Next::Done(answer)
                    } else {
                        let key = this.ctx.as_deref().and_then(|ctx| ctx.store_key.as_ref());
                        announce_write(config, *this.method, key);
                        let future = service.call(req);
                        this.state.set(State::Calling { future });
                        continue;
                    }
                }
                StateProj::Calling { future } => {
                    let response = ready!(future.poll(cx))?;
                    match this.config.as_ref() {
                        None => return Poll::Ready(Ok(response)),
                        Some(config) => on_response(response, config, *this.method, this.ctx),
                    }
                }
                StateProj::Collecting { parts, collect } => {
                    let collected = ready!(collect.poll_collect(cx));
                    let (Some(mut parts), Some(config)) = (parts.take(), this.config.as_ref())
                    else {
                        return Poll::Ready(Ok(crate::response::polled_after_completion()));
                    };
                    let body = match collected {
                        Collected::Whole { data, trailers } => {
                            let weak = config.etag == EtagMode::Weak;
                            let tag = EntityTag::of_body(&data, weak);
                            config.bump(Count::EtagsComputed);
                            parts.headers.insert(ETAG, tag.header_value().clone());
                            B::from_buffered(crate::util::Buffered::replay(data, trailers))
                        }
                        // It failed, or was longer than it said: handed on whole, with no tag.
                        Collected::Once(body) => B::from_buffered(body),
                    };
                    conclude(
                        Response::from_parts(parts, body),
                        config,
                        *this.method,
                        this.ctx,
                    )
                }
                StateProj::Forgetting { forget, response } => {
                    if let Err(err) = ready!(forget.as_mut().poll(cx)) {
                        tracing::warn!(error = %err, "validator store: a write's URI was not forgotten; its old validators may answer until they expire");
                    }
                    match response.take() {
                        Some(response) => Next::Done(response),
                        None => return Poll::Ready(Ok(crate::response::polled_after_completion())),
                    }
                }
                StateProj::Answered { response } => match response.take() {
                    Some(response) => return Poll::Ready(Ok(response)),
                    None => return Poll::Ready(Ok(crate::response::polled_after_completion())),
                },
            };
            match next {
                Next::Done(response) => {
                    this.state.set(State::Answered { response: None });
                    return Poll::Ready(Ok(response));
                }
                Next::Collect(parts, collect) => this.state.set(State::Collecting {
                    parts: Some(parts),
                    collect,
                }),
                Next::Forget(forget, response) => this.state.set(State::Forgetting {
                    forget,
                    response: Some(response),
                }),
            }
        }
    }
}

/// The policy, and the ETag: given now, or after the body is read.
fn on_response<B>(
    mut response: Response<B>,
    config: &Config,
    method: MethodKind,
    ctx: &mut Option<Box<Ctx>>,
) -> Next<B>
where
    B: LayerBody + Unpin,
{
    if !method.is_read() {
        return conclude(response, config, method, ctx);
    }
    let status = response.status();
    if config.covers(status) {
        config.apply_policy(response.headers_mut());
    }
    if status != StatusCode::OK || response.headers().contains_key(ETAG) {
        return conclude(response, config, method, ctx);
    }
    if let Some(tag) = ctx.as_ref().and_then(|ctx| ctx.current.as_ref()) {
        response
            .headers_mut()
            .insert(ETAG, tag.header_value().clone());
        return conclude(response, config, method, ctx);
    }
    if config.etag == EtagMode::Off || is_bodiless_head(&response, method) {
        return conclude(response, config, method, ctx);
    }
    let body = response.body();
    if !fits(body, config.max_body) {
        config.bump(Count::Unbuffered);
        return conclude(response, config, method, ctx);
    }
    let max = body.size_hint().upper().unwrap_or(0).min(config.max_body);
    let (parts, body) = response.into_parts();
    // The hint fits in memory, so in a `usize`.
    Next::Collect(
        parts,
        Collect::new(body, usize::try_from(max).unwrap_or(usize::MAX)),
    )
}

/// A `HEAD` answered without the body (by a handler of its own): its tag would be the empty
/// body's, not the `GET`'s, so it gets none. (Through axum, a `HEAD` reaches the layer with the
/// `GET`'s body; axum drops it after.)
fn is_bodiless_head<B: Body>(response: &Response<B>, method: MethodKind) -> bool {
    method == MethodKind::Read { head: true } && response.body().is_end_stream()
}

/// Judges a read's preconditions by its response, remembers its validators, forgets a
/// written URI.
fn conclude<B: LayerBody>(
    response: Response<B>,
    config: &Config,
    method: MethodKind,
    ctx: &mut Option<Box<Ctx>>,
) -> Next<B> {
    let Some(ctx) = ctx.as_deref_mut() else {
        return Next::Done(response);
    };
    let status = response.status();
    match method {
        MethodKind::Read { .. } => {
            if status == StatusCode::OK {
                if let (Some(store), Some(key), Some(generation)) =
                    (&config.store, ctx.store_key.take(), ctx.generation)
                {
                    remember(store, key, generation, response.headers(), config);
                }
            }
            // RFC 9110 §13.2.1: preconditions count only where the response would be a 2xx.
            let Some(preconditions) = ctx.preconditions.as_ref() else {
                return Next::Done(response);
            };
            if !status.is_success() {
                return Next::Done(response);
            }
            let headers = response.headers();
            let etag = headers.get(ETAG).and_then(EntityTag::from_header);
            let current = Current {
                exists: true,
                etag: etag.as_ref(),
                last_modified: headers.get(LAST_MODIFIED).and_then(date_of),
            };
            // The method is GET or HEAD; which one matters only to If-Range, which cannot
            // change a response already made.
            let method = http::Method::GET;
            match evaluate(&method, preconditions, current) {
                Verdict::NotModified => {
                    config.bump(Count::NotModified);
                    let (parts, _body) = response.into_parts();
                    let mut answer = not_modified(parts.headers);
                    *answer.extensions_mut() = parts.extensions;
                    Next::Done(answer)
                }
                // A safe method changed nothing: refusing now is still true.
                Verdict::PreconditionFailed => {
                    config.bump(Count::PreconditionFailed);
                    Next::Done(precondition_failed())
                }
                Verdict::Proceed | Verdict::IgnoreRange => Next::Done(response),
            }
        }
        MethodKind::Write => {
            // A write that changed the resource (RFC 9111 §4.4: not an error) forgets it.
            let changed = status.is_success() || status.is_redirection();
            match (&config.store, ctx.store_key.as_ref()) {
                (Some(store), Some(key)) if changed => match store.forget(&key.uri) {
                    Answer::Ready(_) => Next::Done(response),
                    Answer::Pending(forget) => Next::Forget(forget, response),
                },
                _ => Next::Done(response),
            }
        }
        MethodKind::Other => Next::Done(response),
    }
}

/// Keeps a read's validators, for as long as its response is fresh, when its `Vary` is one
/// the layer picks variants by.
fn remember(
    store: &super::store::ValidatorStore,
    key: StoreKey,
    generation: u64,
    headers: &HeaderMap,
    config: &Config,
) {
    let Some(ttl) = freshness(headers.get(CACHE_CONTROL)) else {
        return;
    };
    if !vary::covered_by(headers, &config.vary) {
        return;
    }
    if let Some(stored) = Stored::of(headers) {
        store.remember(key, generation, stored, ttl);
    }
}
