//! The shared mechanisms every layer answers through: one refusal type, one outcome
//! classifier, one answer for a future polled after completion, and `build_generic` refusing
//! what only an HTTP layer can apply.

use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::task::noop_waker_ref;
use http::{Request, Response, StatusCode};
use tower::{service_fn, BoxError, Layer, Service, ServiceExt};
use tower_bulwark::circuit_breaker::CircuitBreakerLayer;
use tower_bulwark::rate_limit::{RateLimitLayer, ResetFormat};
use tower_bulwark::response::{PolledAfterCompletion, Refusal, RefusalKind};

fn echo() -> impl Service<u32, Response = u32, Error = Infallible, Future = impl Send> + Clone {
    service_fn(|n: u32| async move { Ok::<_, Infallible>(n) })
}

async fn refusal_of<S>(mut svc: S) -> Refusal
where
    S: Service<u32, Response = u32, Error = BoxError>,
{
    let err = svc.ready().await.unwrap().call(1).await.unwrap_err();
    *err.downcast_ref::<Refusal>()
        .unwrap_or_else(|| panic!("not a Refusal: {err}"))
}

/// A retry layer recognises a refusal of any layer of this crate by one type.
#[tokio::test]
async fn every_generic_layer_refuses_with_the_one_refusal_type() {
    let limit = RateLimitLayer::fixed_window(1, Duration::from_secs(60))
        .build_generic()
        .unwrap();
    let limited = limit.layer(echo());
    assert_eq!(limited.clone().oneshot(1).await.unwrap(), 1);
    let refused = refusal_of(limited).await;
    assert_eq!(refused.kind(), RefusalKind::RateLimited);
    assert_eq!(refused.kind().status(), StatusCode::TOO_MANY_REQUESTS);

    let breaker = CircuitBreakerLayer::consecutive_failures(1)
        .open_for(Duration::from_secs(30))
        .build_generic()
        .unwrap();
    breaker.circuit().force_open();
    let refused = refusal_of(breaker.layer(echo())).await;
    assert_eq!(refused.kind(), RefusalKind::CircuitOpen);
    assert_eq!(refused.retry_after_secs(), 30);
    assert_eq!(refused.to_string(), "circuit breaker open: retry after 30s");
}

fn second_poll_error<S>(mut svc: S) -> BoxError
where
    S: Service<u32, Response = u32, Error = BoxError>,
{
    let mut cx = Context::from_waker(noop_waker_ref());
    assert!(svc.poll_ready(&mut cx).is_ready());
    let mut future = pin!(svc.call(7));
    assert!(matches!(future.as_mut().poll(&mut cx), Poll::Ready(Ok(7))));
    match future.as_mut().poll(&mut cx) {
        Poll::Ready(Err(err)) => err,
        other => panic!("unexpected {:?}", other.map(|r| r.ok())),
    }
}

/// Every generic future polled again after completing fails the same way, with one type.
#[test]
fn generic_futures_polled_after_completion_fail_alike() {
    let limit = RateLimitLayer::fixed_window(5, Duration::from_secs(60))
        .build_generic()
        .unwrap();
    let breaker = CircuitBreakerLayer::consecutive_failures(5)
        .build_generic()
        .unwrap();
    for err in [
        second_poll_error(limit.layer(echo())),
        second_poll_error(breaker.layer(echo())),
    ] {
        assert!(err.is::<PolledAfterCompletion>(), "{err}");
    }
}

/// A setting the generic variant cannot apply is refused by name, never silently ignored.
#[test]
fn build_generic_refuses_what_only_http_can_apply() {
    let base = || RateLimitLayer::fixed_window(5, Duration::from_secs(60));
    let field =
        |result: Result<_, tower_bulwark::ConfigError>| result.map(drop).unwrap_err().field();
    assert_eq!(field(base().cost(|_| 2).build_generic()), "cost");
    assert_eq!(
        field(
            base()
                .on_rejection(|_| Response::new(bytes::Bytes::new()))
                .build_generic()
        ),
        "on_rejection"
    );
    assert_eq!(field(base().headers(false).build_generic()), "headers");
    assert_eq!(
        field(base().legacy_headers(false).build_generic()),
        "headers"
    );
    assert_eq!(
        field(base().reset_format(ResetFormat::UnixEpoch).build_generic()),
        "headers"
    );
    // The HTTP layer takes them all.
    assert!(base().cost(|_| 2).headers(false).build().is_ok());
}

/// Refunds ask the shared classifier: a gRPC failure in a trailers-only answer (HTTP 200,
/// `grpc-status: 14`) is a failed call, refunded by `skip_failed`.
#[tokio::test]
async fn refunds_judge_grpc_statuses_like_the_breaker() {
    let layer = RateLimitLayer::fixed_window(1, Duration::from_secs(60))
        .skip_failed(true)
        .build()
        .unwrap();
    let unavailable = service_fn(|_: Request<()>| async {
        let mut res = Response::new(String::new());
        res.headers_mut()
            .insert("content-type", "application/grpc".parse().unwrap());
        res.headers_mut()
            .insert("grpc-status", "14".parse().unwrap());
        Ok::<_, Infallible>(res)
    });
    let svc = layer.layer(unavailable);
    let grpc = || {
        Request::builder()
            .header("content-type", "application/grpc")
            .body(())
            .unwrap()
    };
    for _ in 0..3 {
        let res = svc.clone().oneshot(grpc()).await.unwrap();
        // Each failed call gave its token back: the next is admitted (never RESOURCE_EXHAUSTED).
        assert_eq!(res.headers()["grpc-status"], "14");
    }
    assert_eq!(layer.stats().refunded, 3);
}
