//! The cache service: what a request needs is settled at `call` (nothing, the policy and an
//! ETag, or preconditions judged before the handler from `current_etag` or the store).

use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::{
    IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, IF_UNMODIFIED_SINCE, RANGE,
};
use http::{HeaderMap, Method, Request, Response};
use tower_service::Service;

use super::answer::{not_modified, precondition_failed};
use super::conditional::{evaluate, has_preconditions, Current, Verdict};
use super::config::{Config, Count};
use super::current::CurrentEtag;
use super::future::{Ctx, ResponseFuture};
use super::store::{Answer, Known, StoreKey};
use super::vary;
use crate::response::{is_grpc_call, LayerBody};

/// The service a [`CacheLayer`](super::CacheLayer) wraps around an inner service.
#[derive(Debug, Clone)]
pub struct CacheService<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S> CacheService<S> {
    pub(crate) fn new(inner: S, config: Arc<Config>) -> Self {
        Self { inner, config }
    }

    /// The inner service.
    ///
    /// ```
    /// use tower::Layer;
    /// let svc = tower_bulwark::cache::CacheLayer::builder().build()?.layer(42);
    /// assert_eq!(*svc.get_ref(), 42);
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

/// What the request's method lets the layer do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MethodKind {
    /// `GET`, `HEAD`: the policy, ETags, `304`.
    Read {
        /// `HEAD`: a response without its body gets no tag of it.
        head: bool,
    },
    /// `POST`, `PUT`, `PATCH`, `DELETE`: preconditions before the handler; the store forgets
    /// the URI after success.
    Write,
    /// Anything else passes untouched.
    Other,
}

impl MethodKind {
    pub(crate) fn is_read(self) -> bool {
        matches!(self, MethodKind::Read { .. })
    }

    fn of(method: &Method) -> Self {
        match *method {
            Method::GET => MethodKind::Read { head: false },
            Method::HEAD => MethodKind::Read { head: true },
            Method::POST | Method::PUT | Method::PATCH | Method::DELETE => MethodKind::Write,
            _ => MethodKind::Other,
        }
    }
}

/// The precondition headers of a read, copied for judging its response (the request itself
/// is gone by then): one walk over the request's headers, names compared as standard headers.
fn preconditions_of(headers: &HeaderMap) -> HeaderMap {
    let mut kept = HeaderMap::with_capacity(4);
    for (name, value) in headers {
        if name == IF_MATCH
            || name == IF_NONE_MATCH
            || name == IF_MODIFIED_SINCE
            || name == IF_UNMODIFIED_SINCE
            || name == IF_RANGE
            || name == RANGE
        {
            kept.append(name.clone(), value.clone());
        }
    }
    kept
}

/// A write is about to run: the store counts its path as changed now (and forgets it again
/// once the write succeeded), so no stale write slips in and no old `304` goes out while the
/// handler commits. With Redis this is sent in the background.
pub(crate) fn announce_write(config: &Config, method: MethodKind, key: Option<&StoreKey>) {
    if let (MethodKind::Write, Some(store), Some(key)) = (method, &config.store, key) {
        store.forget_early(&key.uri);
    }
}

/// Whether the method can create the resource where nothing is (so `If-Match` on it fails and
/// `If-None-Match: *` holds, rather than the handler's 404 deciding).
fn creates(method: &Method) -> bool {
    *method == Method::PUT || *method == Method::POST || *method == Method::PATCH
}

/// Whether the request carries `Authorization` or `Cookie` that the layer's `vary` does not
/// name.
fn personal(headers: &HeaderMap, vary: &[http::HeaderName]) -> bool {
    [http::header::AUTHORIZATION, http::header::COOKIE]
        .iter()
        .any(|name| headers.contains_key(name) && !vary.contains(name))
}

/// Whether the preconditions hold an `If-Unmodified-Since` that counts (no `If-Match`).
fn needs_a_date(headers: &HeaderMap) -> bool {
    headers.contains_key(IF_UNMODIFIED_SINCE) && !headers.contains_key(IF_MATCH)
}

/// Acts on a verdict reached before the handler: an answer of the layer's own, or the request
/// to pass on (without its `Range` when `If-Range` failed).
pub(crate) fn before_handler<ReqB, B: LayerBody>(
    verdict: Verdict,
    req: &mut Request<ReqB>,
    config: &Config,
    answer_headers: impl FnOnce() -> HeaderMap,
) -> Option<Response<B>> {
    match verdict {
        Verdict::Proceed => None,
        Verdict::IgnoreRange => {
            req.headers_mut().remove(RANGE);
            req.headers_mut().remove(IF_RANGE);
            None
        }
        Verdict::NotModified => {
            config.bump(Count::NotModified);
            config.bump(Count::AnsweredBeforeHandler);
            Some(not_modified(answer_headers()))
        }
        Verdict::PreconditionFailed => {
            config.bump(Count::PreconditionFailed);
            config.bump(Count::AnsweredBeforeHandler);
            Some(precondition_failed())
        }
    }
}

/// Judges a request by what the store knows of its URI: the validators last served; or,
/// after a write no read has followed yet, that it exists with a tag no `If-Match` can be
/// shown to name (a conditional write gets `412`: fetch it again, then retry).
///
/// A write with credentials (`personal`) is judged only by validators stored: its resource may
/// be one user's, which the store never holds, so "changed" says nothing of it.
pub(crate) fn judge_stored<ReqB, B: LayerBody>(
    known: &Known,
    personal: bool,
    req: &mut Request<ReqB>,
    config: &Config,
) -> Option<Response<B>> {
    let stored = match known {
        Known::Stored(stored) => stored,
        Known::Changed if !personal && MethodKind::of(req.method()) == MethodKind::Write => {
            // Its date is unknown too: an If-Unmodified-Since cannot be shown to hold.
            if needs_a_date(req.headers()) {
                return before_handler(Verdict::PreconditionFailed, req, config, HeaderMap::new);
            }
            let current = Current {
                exists: true,
                etag: None,
                last_modified: None,
            };
            let verdict = evaluate(req.method(), req.headers(), current);
            return before_handler(verdict, req, config, HeaderMap::new);
        }
        Known::Changed | Known::Nothing => return None,
    };
    let current = Current {
        exists: true,
        etag: stored.etag.as_ref(),
        last_modified: stored.last_modified,
    };
    let verdict = evaluate(req.method(), req.headers(), current);
    before_handler(verdict, req, config, || {
        let mut headers = stored.headers.clone();
        // The policy's `Expires` counts from this answer, not from the one stored.
        if config.is_policy(headers.get(http::header::CACHE_CONTROL)) {
            config.put_expires(&mut headers);
        }
        headers
    })
}

impl<S, ReqB, B> Service<Request<ReqB>> for CacheService<S>
where
    S: Service<Request<ReqB>, Response = Response<B>> + Clone,
    B: LayerBody + Unpin,
{
    type Response = Response<B>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqB, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqB>) -> Self::Future {
        let config = &self.config;
        let method = MethodKind::of(req.method());
        let untouched = match method {
            MethodKind::Other => true,
            MethodKind::Write => {
                (config.store.is_none() && config.current.is_none())
                    || is_grpc_call(req.method(), req.headers())
            }
            MethodKind::Read { .. } => false,
        };
        if untouched {
            return ResponseFuture::untouched(self.inner.call(req));
        }
        let conditional = has_preconditions(req.headers());
        // A read carrying credentials the response may depend on (and `vary` does not name)
        // is not the store's business: what one user was served says nothing of another's. A
        // write with them still makes the store forget its path.
        let personal = config.store.is_some() && personal(req.headers(), &config.vary);
        let store_key = config
            .store
            .as_ref()
            .filter(|_| !(personal && method.is_read()))
            .map(|_| StoreKey {
                uri: StoreKey::of_path(req.uri().path()),
                // A write is judged against the variant its own query and headers pick, as a
                // read would be.
                variant: vary::variant(req.uri().query(), req.headers(), &config.vary),
            });
        // A read looks its URI up even without preconditions: the generation it sees is what
        // lets it store what it serves (not if a write came in between); and it asks
        // `current_etag`, whose tag its response then carries (so the tag a client reads is the
        // one its write is judged by).
        let read_needs_more = method.is_read() && (store_key.is_some() || config.current.is_some());
        if !conditional && !read_needs_more {
            announce_write(config, method, store_key.as_ref());
            let ctx = store_key.map(|key| Ctx::new(None, Some(key)));
            return ResponseFuture::called(self.inner.call(req), config.clone(), method, ctx);
        }
        let preconditions =
            (conditional && method.is_read()).then(|| preconditions_of(req.headers()));
        let mut ctx = Ctx::new(preconditions, store_key);
        ctx.personal = personal;

        // The resource's current tag, from the user's function.
        if let Some(current) = &config.current {
            let (parts, body) = req.into_parts();
            let known = current(&parts);
            req = Request::from_parts(parts, body);
            if !conditional {
                if let CurrentEtag::Is(tag) = known {
                    ctx.current = Some(tag);
                }
                return ResponseFuture::called(
                    self.inner.call(req),
                    config.clone(),
                    method,
                    Some(ctx),
                );
            }
            let verdict = match &known {
                CurrentEtag::Is(tag) => Some(Current {
                    exists: true,
                    etag: Some(tag),
                    last_modified: None,
                }),
                // A read or a delete of nothing is a 404 its handler gives, and preconditions
                // do not count beside a 404 (RFC 9110 §13.2.1); a write that would create it
                // is judged.
                CurrentEtag::Missing if creates(req.method()) => Some(Current {
                    exists: false,
                    etag: None,
                    last_modified: None,
                }),
                CurrentEtag::Missing => None,
                CurrentEtag::Unknown => None,
            }
            // An `If-Unmodified-Since` (without `If-Match`) needs the date only the handler's
            // response gives: a read is then judged after the handler, as a whole.
            .filter(|_| !(method.is_read() && needs_a_date(req.headers())))
            .map(|current| evaluate(req.method(), req.headers(), current));
            if let Some(verdict) = verdict {
                let tag = match known {
                    CurrentEtag::Is(tag) => Some(tag),
                    _ => None,
                };
                let answer = before_handler(verdict, &mut req, config, || {
                    let mut headers = HeaderMap::new();
                    if let Some(tag) = &tag {
                        headers.insert(http::header::ETAG, tag.header_value().clone());
                    }
                    config.apply_policy(&mut headers);
                    headers
                });
                if let Some(answer) = answer {
                    return ResponseFuture::answered(answer);
                }
                ctx.current = tag;
                announce_write(config, method, ctx.store_key.as_ref());
                return ResponseFuture::called(
                    self.inner.call(req),
                    config.clone(),
                    method,
                    Some(ctx),
                );
            }
        }

        // What the store remembers of the URI.
        if let (Some(store), Some(key)) = (&config.store, &ctx.store_key) {
            match store.lookup(key) {
                Answer::Ready(lookup) => {
                    if let Some(answer) = judge_stored(&lookup.known, personal, &mut req, config) {
                        return ResponseFuture::answered(answer);
                    }
                    ctx.generation = lookup.generation;
                }
                Answer::Pending(lookup) => {
                    // The request waits for the store: with the service made ready for it (a
                    // clone takes its place here).
                    let clone = self.inner.clone();
                    let ready = std::mem::replace(&mut self.inner, clone);
                    return ResponseFuture::looking_up(
                        lookup,
                        req,
                        ready,
                        config.clone(),
                        method,
                        ctx,
                    );
                }
            }
        }
        announce_write(config, method, ctx.store_key.as_ref());
        ResponseFuture::called(self.inner.call(req), config.clone(), method, Some(ctx))
    }
}
