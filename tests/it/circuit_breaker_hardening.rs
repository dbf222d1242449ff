//! A response future polled again after it completed answers instead of polling the inner
//! future again (an `async` block would panic on that).

use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll};

use futures_util::task::noop_waker_ref;
use http::{Request, Response};
use tower::{service_fn, Layer, Service};
use tower_bulwark::circuit_breaker::{CircuitBreakerLayer, CircuitOpen};

#[test]
fn the_http_future_polled_after_completion_answers_500() {
    let layer = CircuitBreakerLayer::consecutive_failures(5)
        .build()
        .unwrap();
    // An `async` block: polling it after it completed panics.
    let mut svc = layer.layer(service_fn(|_: Request<()>| async {
        Ok::<_, Infallible>(Response::new(String::new()))
    }));
    let mut cx = Context::from_waker(noop_waker_ref());
    assert!(svc.poll_ready(&mut cx).is_ready());
    let mut future = pin!(svc.call(Request::new(())));
    match future.as_mut().poll(&mut cx) {
        Poll::Ready(Ok(res)) => assert_eq!(res.status(), 200),
        other => panic!("unexpected {other:?}"),
    }
    match future.as_mut().poll(&mut cx) {
        Poll::Ready(Ok(res)) => assert_eq!(res.status(), 500),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(layer.circuit().stats().successes, 1, "recorded once");
}

#[test]
fn the_generic_future_polled_after_completion_errs() {
    let layer = CircuitBreakerLayer::consecutive_failures(5)
        .build_generic()
        .unwrap();
    let mut svc = layer.layer(service_fn(|n: u32| async move { Ok::<_, Infallible>(n) }));
    let mut cx = Context::from_waker(noop_waker_ref());
    assert!(svc.poll_ready(&mut cx).is_ready());
    let mut future = pin!(svc.call(7));
    assert!(matches!(future.as_mut().poll(&mut cx), Poll::Ready(Ok(7))));
    match future.as_mut().poll(&mut cx) {
        Poll::Ready(Err(err)) => assert!(err.downcast_ref::<CircuitOpen>().is_none()),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(layer.circuit().stats().successes, 1, "recorded once");
}
