//! Helpers shared by the integration tests: a small inner HTTP service, request builders and
//! response readers. No helper sleeps; time moves only through a `ManualClock`.
#![allow(dead_code)]

#[cfg(feature = "circuit-breaker")]
pub mod breaker;
#[cfg(feature = "cache")]
pub mod cache;
#[cfg(all(feature = "redis", feature = "circuit-breaker"))]
pub mod fleet;
pub mod redis_server;
#[cfg(feature = "retry")]
pub mod upstream;
use std::fmt;
use std::future::{ready, Ready};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use proptest::test_runner::{Config as ProptestConfig, FileFailurePersistence};
use tower::util::ServiceFn;
use tower::{Service, ServiceExt};
use tower_bulwark::clock::ManualClock;

/// The request and inner response body of the HTTP tests.
pub type Body = Full<Bytes>;

/// The layered service's response.
pub type Res = Response<Body>;

/// The error the inner service fails with on `/error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InnerError;

impl fmt::Display for InnerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("inner service failed")
    }
}

impl std::error::Error for InnerError {}

type InnerFn = fn(Request<Body>) -> Ready<Result<Response<Body>, InnerError>>;

/// The type of [`inner`].
pub type Inner = ServiceFn<InnerFn>;

fn respond(req: Request<Body>) -> Ready<Result<Response<Body>, InnerError>> {
    let path = req.uri().path();
    if path == "/error" {
        return ready(Err(InnerError));
    }
    let mut res = Response::new(Full::new(Bytes::from_static(b"ok")));
    if let Some(code) = path.strip_prefix("/status/") {
        *res.status_mut() = StatusCode::from_u16(code.parse().unwrap()).unwrap();
    }
    if path == "/own-headers" {
        res.headers_mut()
            .insert("x-ratelimit-limit", "77".parse().unwrap());
        res.headers_mut()
            .insert("retry-after", "5".parse().unwrap());
    }
    ready(Ok(res))
}

/// The inner service: `200 ok` by default, `/status/{code}` answers with that status, `/error`
/// fails with [`InnerError`], `/own-headers` sets its own `X-RateLimit-Limit: 77`.
pub fn inner() -> Inner {
    tower::service_fn(respond as InnerFn)
}

/// Like [`inner`], counting the calls that reach it.
pub fn counting_inner(
    calls: Arc<AtomicUsize>,
) -> impl Service<
    Request<Body>,
    Response = Response<Body>,
    Error = InnerError,
    Future = Ready<Result<Response<Body>, InnerError>>,
> + Clone {
    tower::service_fn(move |req| {
        calls.fetch_add(1, Ordering::SeqCst);
        respond(req)
    })
}

/// `ProptestConfig::with_cases(cases)`, its regressions kept beside the test's source file
/// (`tests/it/<module>.proptest-regressions`, where they were when each file was a test binary
/// of its own). Proptest's default looks under the nearest folder holding a `main.rs` instead
/// (`tests/proptest-regressions/<module>.txt`), and would miss them.
pub fn proptest_cases(cases: u32) -> ProptestConfig {
    ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..ProptestConfig::with_cases(cases)
    }
}

/// `builder` on a fresh `ManualClock` at zero, built: the clock (for the test to move) and the
/// layer.
#[cfg(feature = "rate-limit")]
pub fn limiter_on_clock<K>(
    builder: tower_bulwark::rate_limit::RateLimitBuilder<K>,
) -> (ManualClock, tower_bulwark::rate_limit::RateLimitLayer<K>) {
    let clock = ManualClock::new();
    let layer = builder.clock(clock.clone()).build().unwrap();
    (clock, layer)
}

/// A builder with every one of `limits`, in order.
#[cfg(feature = "rate-limit")]
pub fn with_limits(
    limits: &[tower_bulwark::rate_limit::Limit],
) -> tower_bulwark::rate_limit::RateLimitBuilder {
    limits.iter().fold(
        tower_bulwark::rate_limit::RateLimitLayer::builder(),
        |builder, limit| builder.limit(limit.clone()),
    )
}

/// A manual clock at zero.
pub fn clock() -> ManualClock {
    ManualClock::new()
}

pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

pub fn ms(m: u64) -> Duration {
    Duration::from_millis(m)
}

/// `GET path` with an empty body.
pub fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::default()).unwrap()
}

/// `GET path` with the given headers.
pub fn get_with(path: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut builder = Request::get(path);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Body::default()).unwrap()
}

/// A gRPC call: `POST path` (the only method gRPC uses) with `content-type: application/grpc`.
pub fn grpc_call(path: &str) -> Request<Body> {
    post_with(path, &[("content-type", "application/grpc")])
}

/// `POST path` with the given headers.
pub fn post_with(path: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut req = get_with(path, headers);
    *req.method_mut() = http::Method::POST;
    req
}

/// `GET /` from TCP peer `peer` (a `SocketAddr` extension, as `PeerIp` reads it).
pub fn from_peer(peer: [u8; 4], headers: &[(&str, &str)]) -> Request<Body> {
    let mut req = get_with("/", headers);
    req.extensions_mut()
        .insert(SocketAddr::from((peer, 40_000)));
    req
}

/// Drives one request through `svc` (waiting for readiness first).
pub async fn send<S>(svc: &mut S, req: Request<Body>) -> Result<S::Response, S::Error>
where
    S: Service<Request<Body>>,
{
    svc.ready().await?.call(req).await
}

/// Drives one request that must not fail at the service level.
pub async fn ok<S>(svc: &mut S, req: Request<Body>) -> S::Response
where
    S: Service<Request<Body>>,
    S::Error: fmt::Debug,
{
    send(svc, req).await.expect("service error")
}

/// A header's value as text, or `None`.
pub fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).map(|v| v.to_str().unwrap())
}

/// The whole body as text.
pub async fn body_text(res: Res) -> String {
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// Asserts a refusal of an HTTP layer: `status`, a JSON body `{"error":error,"retryAfter":N}`
/// and `Retry-After: N`, N being `retry_after` whole seconds.
pub async fn assert_json_refusal(res: Res, status: u16, error: &str, retry_after: u64) {
    assert_eq!(res.status(), status);
    assert_eq!(
        header(res.headers(), "content-type"),
        Some("application/json")
    );
    assert_eq!(
        header(res.headers(), "retry-after"),
        Some(retry_after.to_string().as_str())
    );
    assert_eq!(
        body_text(res).await,
        format!(r#"{{"error":"{error}","retryAfter":{retry_after}}}"#)
    );
}

/// The cost of a request, from its `x-cost` header (default 1).
pub fn cost_header(parts: &http::request::Parts) -> u64 {
    parts
        .headers
        .get("x-cost")
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .unwrap_or(1)
}

/// `GET path` costing `cost` (its `x-cost` header, read by [`cost_header`]).
pub fn with_cost(path: &str, cost: u64) -> Request<Body> {
    get_with(path, &[("x-cost", &cost.to_string())])
}

/// Every rate-limit header the layer may set.
pub const RATE_LIMIT_HEADERS: [&str; 5] = [
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "ratelimit-policy",
    "ratelimit",
];

/// Asserts the response carries none of the rate-limit headers.
pub fn assert_no_rate_limit_headers(headers: &HeaderMap) {
    for name in RATE_LIMIT_HEADERS {
        assert!(
            headers.get(name).is_none(),
            "unexpected {name}: {:?}",
            headers.get(name)
        );
    }
}

/// The `(limit, remaining, reset)` triple of the legacy headers.
pub fn legacy(headers: &HeaderMap) -> (u64, u64, u64) {
    let read = |name: &str| -> u64 {
        header(headers, name)
            .unwrap_or_else(|| panic!("missing {name}"))
            .parse()
            .unwrap()
    };
    (
        read("x-ratelimit-limit"),
        read("x-ratelimit-remaining"),
        read("x-ratelimit-reset"),
    )
}

/// The `r` value of each item of the `RateLimit` header, in order.
pub fn ietf_remaining(headers: &HeaderMap) -> Vec<u64> {
    header(headers, "ratelimit")
        .expect("missing RateLimit")
        .split(", ")
        .map(|item| {
            let r = item
                .split(';')
                .find_map(|param| param.strip_prefix("r="))
                .expect("no r parameter");
            r.parse().unwrap()
        })
        .collect()
}
