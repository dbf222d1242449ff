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

type Frames = stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>;

/// A gRPC response streaming one message, then trailers with `grpc-status: code`.
fn grpc_response(code: &'static str) -> Response<StreamBody<Frames>> {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static(code));
    let frames = vec![
        Ok(Frame::data(Bytes::from_static(b"\0\0\0\0\0"))),
        Ok(Frame::trailers(trailers)),
    ];
    let mut res = Response::new(StreamBody::new(stream::iter(frames)));
    res.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/grpc"));
    res
}

fn grpc_request() -> Request<()> {
    let mut req = Request::new(());
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
async fn a_body_dropped_early_is_recorded_once_as_answered() {
    let layer = CircuitBreakerLayer::consecutive_failures(1)
        .build()
        .unwrap();
    let svc = layer.layer(service_fn(|_: Request<()>| {
        ready(Ok::<_, Infallible>(grpc_response("14")))
    }));
    let res = svc.oneshot(grpc_request()).await.unwrap();
    let mut body = res.into_body();
    // Read the message, never the trailers, then drop the body.
    let first = body.frame().await.unwrap().unwrap();
    assert!(first.is_data());
    drop(body);
    let stats = layer.circuit().stats();
    assert_eq!((stats.failures, stats.successes), (0, 1));
    assert_eq!(layer.circuit().state(), CircuitState::Closed);
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
