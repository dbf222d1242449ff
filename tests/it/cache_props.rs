//! Arbitrary bytes in every precondition header (and `Range`), for every method, judged
//! after the handler, before it (`current_etag`) and by the store: never a panic, never a 5xx,
//! only the statuses the RFC allows, and never a `412` where no precondition that can fail a
//! read (`If-Match`, `If-Unmodified-Since`) was sent.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response};
use http_body_util::{BodyExt, Full};
use proptest::prelude::*;
use tower::{Layer, ServiceExt};
use tower_bulwark::cache::{CacheLayer, CurrentEtag, EntityTag, ValidatorStore};
use tower_bulwark::clock::ManualClock;

use crate::common::{proptest_cases, Body};

const NAMES: [&str; 6] = [
    "if-match",
    "if-none-match",
    "if-modified-since",
    "if-unmodified-since",
    "if-range",
    "range",
];

/// Bytes a header value can hold, biased toward the characters the parsers look at.
fn value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..40),
        proptest::collection::vec(
            prop_oneof![
                Just(b'"'),
                Just(b','),
                Just(b' '),
                Just(b'*'),
                Just(b'W'),
                Just(b'/'),
                Just(b'v'),
                Just(b'1'),
                Just(b'\t'),
                Just(0x80u8),
            ],
            0..20
        ),
        Just(b"Sun, 06 Nov 1994 08:49:37 GMT".to_vec()),
        Just(b"\"v1\"".to_vec()),
        Just(b"W/\"v1\"".to_vec()),
    ]
}

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        Just(Method::GET),
        Just(Method::HEAD),
        Just(Method::PUT),
        Just(Method::POST),
        Just(Method::DELETE),
        Just(Method::PATCH),
        Just(Method::OPTIONS),
    ]
}

fn layers(store: &ValidatorStore) -> [CacheLayer; 3] {
    let base = || CacheLayer::max_age(Duration::from_secs(60)).clock(ManualClock::new());
    [
        base().build().unwrap(),
        base()
            .current_etag(|_: &http::request::Parts| EntityTag::strong("v1").ok())
            .build()
            .unwrap(),
        base().validator_store(store.clone()).build().unwrap(),
    ]
}

fn handler(req: Request<Body>) -> std::future::Ready<Result<Response<Body>, Infallible>> {
    let mut res = Response::new(Full::new(Bytes::from_static(b"hello")));
    res.headers_mut().insert(
        "last-modified",
        "Sun, 06 Nov 1994 08:49:37 GMT".parse().unwrap(),
    );
    if req.headers().contains_key("range") {
        *res.status_mut() = http::StatusCode::PARTIAL_CONTENT;
    }
    std::future::ready(Ok(res))
}

proptest! {
    #![proptest_config(proptest_cases(300))]

    #[test]
    fn any_header_bytes_get_an_allowed_answer(
        method in method(),
        headers in proptest::collection::vec((0..NAMES.len(), value()), 0..6),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let clock = ManualClock::new();
        let store = ValidatorStore::builder().clock(clock).build().unwrap();
        let mut req = Request::builder().method(method.clone()).uri("/doc");
        let mut sent = Vec::new();
        for (name, bytes) in &headers {
            // Bytes no header value may hold never reach a service: skip them.
            if let Ok(value) = HeaderValue::from_bytes(bytes) {
                req = req.header(NAMES[*name], value);
                sent.push(NAMES[*name]);
            }
        }
        let req = req.body(Body::default()).unwrap();
        for layer in layers(&store) {
            // Fill the store first, so its judgement is exercised too.
            let svc = layer.layer(tower::service_fn(handler));
            let prime = Request::get("/doc").body(Body::default()).unwrap();
            runtime.block_on(svc.clone().oneshot(prime)).unwrap();
            let mut again = Request::builder().method(req.method()).uri("/doc");
            for (name, value) in req.headers() {
                again = again.header(name, value);
            }
            let res = runtime
                .block_on(svc.oneshot(again.body(Body::default()).unwrap()))
                .unwrap();
            let status = res.status().as_u16();
            prop_assert!([200, 206, 304, 412].contains(&status), "{status}");
            let can_fail_a_read = sent.iter().any(|n| *n == "if-match" || *n == "if-unmodified-since");
            if (method == Method::GET || method == Method::HEAD) && !can_fail_a_read {
                prop_assert!(status != 412, "a read without If-Match or If-Unmodified-Since got 412");
            }
            let body = runtime.block_on(res.into_body().collect()).unwrap().to_bytes();
            if status == 304 {
                prop_assert!(body.is_empty());
            }
            if status == 200 {
                prop_assert_eq!(&body[..], b"hello");
            }
        }
    }

    #[test]
    fn any_current_tag_text_is_taken_or_refused_cleanly(text in ".{0,20}") {
        match EntityTag::strong(&text) {
            Ok(tag) => prop_assert_eq!(tag.opaque(), text.as_str()),
            Err(_) => {
                let refused = |c: char| c == '"' || c == ' ' || c.is_control();
                prop_assert!(text.chars().any(refused), "{:?} was refused", text);
            }
        }
        let _ = CurrentEtag::from(EntityTag::strong(&text).ok());
    }
}
