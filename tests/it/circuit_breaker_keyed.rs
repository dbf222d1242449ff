//! One breaker per key: keys trip apart, the number of circuits is bounded, requests without
//! a key share the overflow circuit, and keyed events name their key.

use std::convert::Infallible;
use std::future::ready;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use tower::{service_fn, Layer, ServiceExt};
use tower_bulwark::circuit_breaker::{
    CircuitBreakerLayer, CircuitEvent, CircuitState, KeyedCircuitBreakerLayer,
};
use tower_bulwark::clock::ManualClock;
use tower_bulwark::key::{HeaderKey, Key};

const UPSTREAM: HeaderName = HeaderName::from_static("x-upstream");

/// Answers 502 when the request asks for it with `x-fail`, else 200.
fn upstream(req: Request<()>) -> std::future::Ready<Result<Response<String>, Infallible>> {
    let mut res = Response::new(String::new());
    if req.headers().contains_key("x-fail") {
        *res.status_mut() = StatusCode::BAD_GATEWAY;
    }
    ready(Ok(res))
}

fn req(host: Option<&'static str>, fail: bool) -> Request<()> {
    let mut req = Request::new(());
    if let Some(host) = host {
        req.headers_mut()
            .insert(UPSTREAM, HeaderValue::from_static(host));
    }
    if fail {
        req.headers_mut()
            .insert("x-fail", HeaderValue::from_static("1"));
    }
    req
}

fn key(host: &'static str) -> Key {
    Key::from(HeaderValue::from_static(host))
}

/// One breaker per `x-upstream`, opened by two failures in a row.
fn two_failures_per_upstream() -> KeyedCircuitBreakerLayer<HeaderKey> {
    CircuitBreakerLayer::consecutive_failures(2)
        .per_key(HeaderKey::new(UPSTREAM))
        .build()
        .unwrap()
}

#[tokio::test]
async fn each_key_trips_on_its_own_failures() {
    let layer = two_failures_per_upstream();
    let svc = layer.layer(service_fn(upstream));
    for _ in 0..2 {
        assert_eq!(
            svc.clone()
                .oneshot(req(Some("a"), true))
                .await
                .unwrap()
                .status(),
            502
        );
    }
    assert_eq!(layer.state_of(&key("a")), Some(CircuitState::Open));
    assert_eq!(
        svc.clone()
            .oneshot(req(Some("a"), false))
            .await
            .unwrap()
            .status(),
        503
    );
    // b's failures so far: none; one failure does not open it, and a is not counted for b.
    assert_eq!(
        svc.clone()
            .oneshot(req(Some("b"), true))
            .await
            .unwrap()
            .status(),
        502
    );
    assert_eq!(
        svc.clone()
            .oneshot(req(Some("b"), false))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(layer.state_of(&key("b")), Some(CircuitState::Closed));
    assert_eq!(layer.len(), 2);
    assert_eq!(layer.overflow_circuit().stats().admitted, 0);
}

#[tokio::test]
async fn requests_without_a_key_share_the_overflow_circuit() {
    let layer = two_failures_per_upstream();
    let svc = layer.layer(service_fn(upstream));
    for _ in 0..2 {
        svc.clone().oneshot(req(None, true)).await.unwrap();
    }
    assert_eq!(layer.overflow_circuit().state(), CircuitState::Open);
    assert_eq!(
        svc.clone()
            .oneshot(req(None, false))
            .await
            .unwrap()
            .status(),
        503
    );
    assert!(layer.is_empty());
    // A keyed request is unaffected.
    assert_eq!(
        svc.oneshot(req(Some("a"), false)).await.unwrap().status(),
        200
    );
}

#[tokio::test]
async fn circuits_are_bounded_and_idle_ones_make_room() {
    let clock = ManualClock::new();
    let layer = CircuitBreakerLayer::consecutive_failures(3)
        .clock(clock.clone())
        .per_key(HeaderKey::new(UPSTREAM))
        .max_keys(2)
        .build()
        .unwrap();
    let svc = layer.layer(service_fn(upstream));
    // a and b each hold one failure: not idle.
    svc.clone().oneshot(req(Some("a"), true)).await.unwrap();
    svc.clone().oneshot(req(Some("b"), true)).await.unwrap();
    // Full: c shares the overflow circuit.
    svc.clone().oneshot(req(Some("c"), true)).await.unwrap();
    assert_eq!(layer.len(), 2);
    assert_eq!(layer.state_of(&key("c")), None);
    assert_eq!(layer.overflow_circuit().stats().failures, 1);
    // a recovers (a success clears its count): idle, so it can be forgotten for c...
    svc.clone().oneshot(req(Some("a"), false)).await.unwrap();
    // ...but a full map is swept at most every 100 ms (a flood of new keys must not cost a
    // sweep each): c still overflows until then.
    svc.clone().oneshot(req(Some("c"), false)).await.unwrap();
    assert_eq!(layer.state_of(&key("c")), None);
    assert_eq!(layer.overflow_circuit().stats().admitted, 2);
    clock.advance(Duration::from_millis(100));
    svc.clone().oneshot(req(Some("c"), false)).await.unwrap();
    assert_eq!(layer.len(), 2);
    assert_eq!(
        layer.state_of(&key("a")),
        None,
        "the idle circuit made room"
    );
    assert_eq!(layer.state_of(&key("c")), Some(CircuitState::Closed));
    assert_eq!(layer.state_of(&key("b")), Some(CircuitState::Closed));
    assert_eq!(
        layer.circuit_of(&key("b")).unwrap().stats().failures,
        1,
        "b kept its count"
    );
}

#[tokio::test]
async fn keyed_events_name_their_key() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let layer = CircuitBreakerLayer::consecutive_failures(1)
        .per_key(HeaderKey::new(UPSTREAM))
        .on_keyed_event(move |key, event| {
            if let CircuitEvent::StateChanged { to, .. } = event {
                log.lock().unwrap().push((key.clone(), *to));
            }
        })
        .build()
        .unwrap();
    let svc = layer.layer(service_fn(upstream));
    svc.clone().oneshot(req(Some("a"), true)).await.unwrap();
    svc.clone().oneshot(req(Some("b"), false)).await.unwrap();
    assert_eq!(*seen.lock().unwrap(), vec![(key("a"), CircuitState::Open)]);
}
