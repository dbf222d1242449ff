use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::request::Parts;
use http::{Request, Response, StatusCode};
use tower_service::Service;

use super::config::{Counters, Policy, RateLimited, Shared};
use super::future::{ResponseFuture, Waiting};
use super::headers::retry_after_secs;
use super::store::{Decision, RateLimitBackend, Verdict};
use crate::key::{with_parts, Key, KeyExtractor};
use crate::response::{grpc_answer, is_grpc_call, json_bytes, GrpcCode, LayerBody};

/// An HTTP service behind a rate limit; made by [`RateLimitLayer`](super::RateLimitLayer).
///
/// The decision is made in `call`: a refused request is answered at once with a 429 and never
/// reaches the inner service. `poll_ready` only asks the inner service.
///
/// ```
/// # use std::{convert::Infallible, time::Duration};
/// # use tower::{service_fn, Layer, ServiceExt};
/// # use tower_bulwark::rate_limit::RateLimitLayer;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let ok = service_fn(|_: http::Request<()>| async { Ok::<_, Infallible>(http::Response::new(String::new())) });
/// use tower_bulwark::rate_limit::RateLimit;
///
/// let layer = RateLimitLayer::fixed_window(1, Duration::from_secs(60)).build()?;
/// let svc: RateLimit<_, _, _> = layer.layer(ok);
/// assert_eq!(svc.clone().oneshot(http::Request::new(())).await?.status(), 200);
/// let refused = svc.clone().oneshot(http::Request::new(())).await?;
/// assert_eq!(refused.status(), 429);
/// assert_eq!(refused.headers()["retry-after"], "60");
/// # Ok(())
/// # }
/// ```
pub struct RateLimit<S, K, B> {
    inner: S,
    shared: Arc<Shared<K, B>>,
}

impl<S, K, B> RateLimit<S, K, B> {
    pub(crate) fn new(inner: S, shared: Arc<Shared<K, B>>) -> Self {
        Self { inner, shared }
    }

    /// The wrapped service.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower::Layer;
    /// use tower_bulwark::rate_limit::RateLimitLayer;
    ///
    /// #[derive(Debug, PartialEq)]
    /// struct Inner(&'static str);
    /// let svc = RateLimitLayer::fixed_window(1, Duration::from_secs(1)).build()?.layer(Inner("api"));
    /// assert_eq!(svc.get_ref(), &Inner("api"));
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: Clone, K, B> Clone for RateLimit<S, K, B> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S: fmt::Debug, K, B> fmt::Debug for RateLimit<S, K, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, K, B, ReqBody, ResBody> Service<Request<ReqBody>> for RateLimit<S, K, B>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    K: KeyExtractor<Parts>,
    B: RateLimitBackend,
    ResBody: LayerBody,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody, K, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let shared = &*self.shared;
        // The key (and the cost) read the request's head; the crate's extractors read it in
        // place, and the rest of the call moves one request, not a head and a body.
        let mut req = req;
        let key = shared.resolve_key(shared.key.extract_request(&mut req));
        let cost = match &shared.policy.cost {
            None => 1,
            Some(cost) => with_parts(&mut req, |parts| cost(parts)),
        };
        let key = match key {
            Ok(key) => key,
            Err(status) => {
                tracing::debug!(uri = %req.uri(), "rate limit: request has no key");
                return ResponseFuture::refused(missing_key_response(&req, status));
            }
        };
        match shared.backend.decide(&key, cost) {
            Decision::Ready(verdict) => {
                after_verdict(&self.shared, &mut self.inner, req, key, cost, verdict)
            }
            Decision::Pending(decision) => {
                // The decision needs a round trip: take the service that was made ready and
                // leave a clone in its place, as tower's own middleware does.
                let clone = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, clone);
                ResponseFuture::deciding(
                    decision,
                    Waiting {
                        inner,
                        request: req,
                        key,
                        cost,
                        shared: self.shared.clone(),
                    },
                )
            }
        }
    }
}

/// Counts the verdict and either calls the inner service or builds the refusal; shared by the
/// immediate path (in `call`) and the waiting one (in the response future). Builds the response
/// future itself: a future holds the inner one (hundreds of bytes in axum), and each value it
/// passes through on the way is one more copy of it.
#[inline]
pub(crate) fn after_verdict<S, K, B, ReqBody>(
    shared: &Arc<Shared<K, B>>,
    inner: &mut S,
    req: Request<ReqBody>,
    key: Key,
    cost: u64,
    verdict: Verdict,
) -> ResponseFuture<S, ReqBody, K, B>
where
    S: Service<Request<ReqBody>>,
    K: Send + Sync + 'static,
    B: RateLimitBackend,
{
    let policy = &shared.policy;
    if policy.shadow {
        if verdict.allowed {
            Counters::bump(&shared.counters.allowed);
        } else {
            Counters::bump(&shared.counters.shadow_rejected);
            tracing::debug!(key = %key.redacted(), "rate limit (shadow): would refuse");
        }
        let refund = verdict
            .allowed
            .then(|| shared.refund_for(key, cost, &verdict))
            .flatten();
        return ResponseFuture::admitted(inner.call(req), None, refund);
    }

    if !verdict.allowed {
        Counters::bump(&shared.counters.rejected);
        tracing::debug!(key = %key.redacted(), retry_after = ?verdict.retry_after, "rate limit: refused");
        return ResponseFuture::refused(too_many_requests(policy, &req, &verdict));
    }
    let headers = policy.headers.any().then(|| {
        policy
            .headers_for(&verdict)
            .pending(&verdict, &*policy.clock)
    });
    Counters::bump(&shared.counters.allowed);
    let refund = shared.refund_for(key, cost, &verdict);
    ResponseFuture::admitted(inner.call(req), headers, refund)
}

fn too_many_requests<B>(
    policy: &Policy,
    request: &Request<B>,
    verdict: &Verdict,
) -> Response<Bytes> {
    let refusal = RateLimited::rate_limited(verdict.retry_after);
    let grpc = is_grpc_call(request.method(), request.headers());
    let mut response = match &policy.rejection {
        // A replaced body is for HTTP clients: gRPC ones get the gRPC answer all the same.
        Some(respond) if !grpc => {
            let mut answer = respond(&refusal);
            answer.extensions_mut().insert(refusal);
            answer
        }
        // Room for the rate-limit headers and Retry-After.
        _ => refusal.answer_bytes(request.headers(), grpc, 6),
    };
    let config = policy.headers_for(verdict);
    config.write(
        response.headers_mut(),
        &verdict.limits,
        config.unix_now(&*policy.clock),
        Some(retry_after_secs(verdict)),
    );
    response
}

fn missing_key_response<B>(request: &Request<B>, status: StatusCode) -> Response<Bytes> {
    if is_grpc_call(request.method(), request.headers()) {
        grpc_answer(
            request.headers(),
            GrpcCode::from_http(status),
            "Rate limit key missing",
            0,
        )
    } else {
        json_bytes(
            status,
            Bytes::from_static(br#"{"error":"Rate limit key missing"}"#),
            0,
        )
    }
}
