//! gRPC status from the trailers: the breaker judges a streamed gRPC response when its body
//! ends, exactly once, however it ends.

use std::convert::Infallible;
use std::future::ready;

use bytes::Bytes;
use futures_util::stream;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use tower::{service_fn, Layer, ServiceExt};
use tower_bulwark::circuit_breaker::{CircuitBreakerLayer, CircuitState};
use tower_bulwark::response::ResponseBody;

type Frames = stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>;

/// A gRPC response streaming one message, then trailers with `grpc-status: code`.
/// (A stream is not a `LayerBody`: it travels wrapped in `ResponseBody`.)
fn grpc_response(code: &'static str) -> Response<ResponseBody<StreamBody<Frames>>> {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static(code));
    let frames = vec![
        Ok(Frame::data(Bytes::from_static(b"\0\0\0\0\0"))),
        Ok(Frame::trailers(trailers)),
    ];
    let mut res = Response::new(ResponseBody::inner(StreamBody::new(stream::iter(frames))));
    res.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/grpc"));
    res
}

/// A gRPC call: a POST (as every gRPC call is) with a gRPC content type.
fn grpc_request() -> Request<()> {
    let mut req = Request::new(());
    *req.method_mut() = http::Method::POST;
    req.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/grpc"));
    req
}

#[tokio::test]
async fn a_failing_status_in_the_trailers_counts_once_the_body_ends() {
    let layer = CircuitBreakerLayer::consecutive_failures(1)
        .build()
        .unwrap();
    let svc = layer.layer(service_fn(|_: Request<()>| {
        ready(Ok::<_, Infallible>(grpc_response("14")))
    }));
    let res = svc.clone().oneshot(grpc_request()).await.unwrap();
    assert_eq!(res.status(), 200);
    // Headers alone say nothing: not judged yet.
    assert_eq!(layer.circuit().stats().failures, 0);
    assert_eq!(layer.circuit().state(), CircuitState::Closed);
    let collected = res.into_body().collect().await.unwrap();
    assert_eq!(collected.trailers().unwrap()["grpc-status"], "14");
    let stats = layer.circuit().stats();
    assert_eq!((stats.failures, stats.successes), (1, 0));
    assert_eq!(layer.circuit().state(), CircuitState::Open);
    let refused = svc.oneshot(grpc_request()).await.unwrap();
    assert_eq!(refused.headers()["grpc-status"], "14");
}

/// A breaker inside another (a keyed one inside a global one, say): both watch the same body,
/// and each hears the trailers' status.
#[tokio::test]
async fn nested_breakers_both_judge_the_trailers() {
    for (code, state, failures) in [
        ("0", CircuitState::Closed, 0),
        ("14", CircuitState::Open, 3),
    ] {
        let outer = CircuitBreakerLayer::consecutive_failures(3)
            .build()
            .unwrap();
        let inner = CircuitBreakerLayer::consecutive_failures(3)
            .build()
            .unwrap();
        let svc = outer.layer(inner.layer(service_fn(move |_: Request<()>| {
            ready(Ok::<_, Infallible>(grpc_response(code)))
        })));
        for _ in 0..3 {
            let res = svc.clone().oneshot(grpc_request()).await.unwrap();
            res.into_body().collect().await.unwrap();
        }
        for layer in [&outer, &inner] {
            assert_eq!(layer.circuit().state(), state, "grpc-status {code}");
            assert_eq!(
                layer.circuit().stats().failures,
                failures,
                "grpc-status {code}"
            );
        }
    }
}

#[tokio::test]
async fn an_ok_or_caller_status_in_the_trailers_is_a_success() {
    for code in ["0", "5"] {
        let layer = CircuitBreakerLayer::consecutive_failures(1)
            .build()
            .unwrap();
        let svc = layer.layer(service_fn(move |_: Request<()>| {
            ready(Ok::<_, Infallible>(grpc_response(code)))
        }));
        let res = svc.oneshot(grpc_request()).await.unwrap();
        res.into_body().collect().await.unwrap();
        let stats = layer.circuit().stats();
        assert_eq!(
            (stats.failures, stats.successes),
            (0, 1),
            "grpc-status {code}"
        );
        assert_eq!(layer.circuit().state(), CircuitState::Closed);
    }
}

#[tokio::test]
async fn a_body_dropped_early_is_a_cancelled_call() {
    let layer = CircuitBreakerLayer::consecutive_failures(1)
        .build()
        .unwrap();
    let svc = layer.layer(service_fn(|_: Request<()>| {
        ready(Ok::<_, Infallible>(grpc_response("14")))
    }));
    let res = svc.oneshot(grpc_request()).await.unwrap();
    let mut body = res.into_body();
    // Read the message, never the trailers, then drop the body: the reader went away.
    let first = body.frame().await.unwrap().unwrap();
    assert!(first.is_data());
    drop(body);
    let stats = layer.circuit().stats();
    assert_eq!((stats.failures, stats.successes, stats.admitted), (0, 0, 1));
    assert_eq!(layer.circuit().state(), CircuitState::Closed);
}

#[tokio::test]
async fn a_dropped_streaming_probe_frees_its_slot_without_closing_the_breaker() {
    let clock = tower_bulwark::clock::ManualClock::new();
    let layer = CircuitBreakerLayer::consecutive_failures(1)
        .half_open_successes(1)
        .clock(clock.clone())
        .build()
        .unwrap();
    let failing = layer.layer(service_fn(|_: Request<()>| {
        ready(Ok::<_, Infallible>(grpc_response("14")))
    }));
    let res = failing.clone().oneshot(grpc_request()).await.unwrap();
    res.into_body().collect().await.unwrap(); // opens it
    assert_eq!(layer.circuit().state(), CircuitState::Open);
    clock.advance(std::time::Duration::from_secs(60));
    let probe = failing.clone().oneshot(grpc_request()).await.unwrap();
    // The probe's stream is open: the one slot is taken.
    let refused = failing.clone().oneshot(grpc_request()).await.unwrap();
    assert_eq!(refused.headers()["grpc-status"], "14");
    drop(probe); // the client cancelled the stream
    assert_eq!(
        layer.circuit().state(),
        CircuitState::HalfOpen,
        "a cancel does not close it"
    );
    // The slot is free again: the next call probes.
    let next = failing.oneshot(grpc_request()).await.unwrap();
    assert!(
        next.headers().get("grpc-status").is_none(),
        "admitted as a probe"
    );
}

#[tokio::test]
async fn a_grpc_answer_with_a_proxy_error_status_is_judged_by_that_status() {
    let layer = CircuitBreakerLayer::consecutive_failures(1)
        .build()
        .unwrap();
    let svc = layer.layer(service_fn(|_: Request<()>| {
        let mut res = grpc_response("0");
        *res.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE; // a proxy in the way
        ready(Ok::<_, Infallible>(res))
    }));
    svc.oneshot(grpc_request()).await.unwrap();
    assert_eq!(layer.circuit().stats().failures, 1);
    assert_eq!(layer.circuit().state(), CircuitState::Open);
}

#[tokio::test]
async fn a_grpc_body_that_ends_without_a_status_is_a_failure() {
    let layer = CircuitBreakerLayer::consecutive_failures(1)
        .build()
        .unwrap();
    let svc = layer.layer(service_fn(|_: Request<()>| {
        let frames: Vec<Result<Frame<Bytes>, Infallible>> =
            vec![Ok(Frame::data(Bytes::from_static(b"\0\0\0\0\0")))];
        let mut res = Response::new(ResponseBody::inner(StreamBody::new(stream::iter(frames))));
        res.headers_mut()
            .insert("content-type", HeaderValue::from_static("application/grpc"));
        ready(Ok::<_, Infallible>(res))
    }));
    let res = svc.oneshot(grpc_request()).await.unwrap();
    res.into_body().collect().await.unwrap();
    assert_eq!(layer.circuit().stats().failures, 1);
    assert_eq!(layer.circuit().state(), CircuitState::Open);
}

#[tokio::test]
async fn a_status_in_the_headers_is_judged_at_once() {
    let layer = CircuitBreakerLayer::consecutive_failures(1)
        .build()
        .unwrap();
    let svc = layer.layer(service_fn(|_: Request<()>| {
        let mut res = grpc_response("0");
        // A trailers-only answer: the status is in the headers.
        res.headers_mut()
            .insert("grpc-status", HeaderValue::from_static("13"));
        ready(Ok::<_, Infallible>(res))
    }));
    let res = svc.oneshot(grpc_request()).await.unwrap();
    assert_eq!(layer.circuit().stats().failures, 1);
    assert_eq!(layer.circuit().state(), CircuitState::Open);
    // The body is not watched: reading it records nothing more.
    res.into_body().collect().await.unwrap();
    assert_eq!(layer.circuit().stats().failures, 1);
    assert_eq!(layer.circuit().stats().successes, 0);
}
