//! Regression tests for the review's findings: each test fails on the code before its fix.

use std::net::IpAddr;

use crate::common::*;
use http::{HeaderName, HeaderValue, StatusCode};
use tower::{Layer, ServiceBuilder};
use tower_bulwark::key::{HeaderKey, Key, PeerIp, TrustedProxyIp};
use tower_bulwark::rate_limit::{Limit, RateLimitLayer, RateLimited, MAX_COUNT};

/// A client's non-UTF-8 junk on the left of `X-Forwarded-For` must not make the extractor
/// throw the whole line away and key the request by the proxy (shared by everyone).
#[tokio::test]
async fn non_utf8_bytes_left_of_the_trusted_entry_do_not_spoil_it() {
    let (_, layer) =
        limiter_on_clock(RateLimitLayer::fixed_window(1, secs(60)).key(TrustedProxyIp::new(1)));
    let mut svc = layer.layer(inner());
    let forged = |client: &str| {
        let mut req = from_peer([10, 0, 0, 1], &[]);
        let mut line = b"\x80\xff junk, ".to_vec();
        line.extend_from_slice(client.as_bytes());
        req.headers_mut()
            .insert("x-forwarded-for", HeaderValue::from_bytes(&line).unwrap());
        req
    };
    assert_eq!(ok(&mut svc, forged("203.0.113.9")).await.status(), 200);
    // Same client, refused: its key is its own IP, not the proxy's.
    assert_eq!(ok(&mut svc, forged("203.0.113.9")).await.status(), 429);
    // Another client behind the same proxy is unaffected.
    assert_eq!(ok(&mut svc, forged("203.0.113.10")).await.status(), 200);
    let key = Key::Ip(IpAddr::from([203, 0, 113, 9]));
    assert_eq!(
        layer.backend().decide_now(&key, 0).limits()[0].remaining(),
        0
    );
}

/// A refund that arrives after its request's entry left the log must not delete the entry of
/// a later request: that would let two requests into one window of a limit of one.
#[tokio::test]
async fn a_late_refund_never_removes_another_requests_log_entry() {
    let (clock, layer) =
        limiter_on_clock(RateLimitLayer::sliding_window_log(1, secs(1)).skip_successful(true));
    // A slow request: admitted at t=0, answered (200, so refunded) at t=1.5 s.
    let slow_clock = clock.clone();
    let mut slow = layer.layer(tower::service_fn(move |_req: http::Request<Body>| {
        slow_clock.set(ms(1_500));
        let response = http::Response::new(http_body_util::Full::new(bytes::Bytes::new()));
        std::future::ready(Ok::<_, std::convert::Infallible>(response))
    }));
    // B is admitted at t=1.2 s, after A's entry expired; it fails (500), so it stays counted.
    let mut svc = layer.layer(inner());
    let slow_future = {
        use tower::Service;
        std::future::poll_fn(|cx| slow.poll_ready(cx))
            .await
            .unwrap();
        slow.call(get("/"))
    };
    clock.set(ms(1_200));
    assert_eq!(ok(&mut svc, get("/status/500")).await.status(), 500);
    slow_future.await.unwrap(); // moves the clock to 1.5 s and refunds A
    assert_eq!(layer.stats().refunded, 1);
    // B's entry still holds the window until t=2.2 s.
    clock.set(ms(1_600));
    assert_eq!(ok(&mut svc, get("/")).await.status(), 429);
    clock.set(ms(2_200));
    assert_eq!(ok(&mut svc, get("/")).await.status(), 200);
}

/// A key that overflowed `max_keys` was decided on the shared overflow entry; its refund must
/// not credit that entry (the flood would get free requests).
#[tokio::test]
async fn refunds_never_credit_the_overflow_entry() {
    let (_, layer) = limiter_on_clock(
        RateLimitLayer::fixed_window(1, secs(60))
            .key(PeerIp)
            .max_keys(1)
            .skip_successful(true),
    );
    let mut svc = layer.layer(inner());
    // Takes the one slot (and, answered 200, is refunded on it).
    assert_eq!(
        ok(&mut svc, from_peer([1, 1, 1, 1], &[])).await.status(),
        StatusCode::OK
    );
    // Overflow: admitted on the shared entry, 200, "refunded" -- but not onto the overflow.
    assert_eq!(
        ok(&mut svc, from_peer([2, 2, 2, 2], &[])).await.status(),
        200
    );
    assert_eq!(layer.backend().overflowed(), 1);
    // The overflow entry stays spent for every other newcomer.
    assert_eq!(
        ok(&mut svc, from_peer([3, 3, 3, 3], &[])).await.status(),
        429
    );
}

#[tokio::test]
async fn an_over_long_api_key_is_no_key() {
    let (_, layer) = limiter_on_clock(
        RateLimitLayer::fixed_window(5, secs(60))
            .key(HeaderKey::new(HeaderName::from_static("x-api-key")).max_len(8)),
    );
    let mut svc = layer.layer(inner());
    let long = "k".repeat(9);
    let res = ok(&mut svc, get_with("/", &[("x-api-key", &long)])).await;
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let res = ok(&mut svc, get_with("/", &[("x-api-key", "k-12345")])).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(layer.backend().len(), 1);
}

/// Stacked layers each add their policy to the `RateLimit` and `RateLimit-Policy` lists; the
/// single-valued headers keep the inner layer's value.
#[tokio::test]
async fn stacked_layers_append_to_the_ietf_lists() {
    let (_, inner_layer) =
        limiter_on_clock(RateLimitLayer::fixed_window(5, secs(10)).name("inner"));
    let (_, outer_layer) =
        limiter_on_clock(RateLimitLayer::fixed_window(100, secs(60)).name("outer"));
    let mut svc = ServiceBuilder::new()
        .layer(outer_layer)
        .layer(inner_layer)
        .service(inner());
    let res = ok(&mut svc, get("/")).await;
    let all = |name: &str| -> Vec<&str> {
        res.headers()
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    };
    assert_eq!(
        all("ratelimit-policy"),
        [r#""inner";q=5;w=10"#, r#""outer";q=100;w=60"#]
    );
    assert_eq!(
        all("ratelimit"),
        [r#""inner";r=4;t=10"#, r#""outer";r=99;t=60"#]
    );
    assert_eq!(all("x-ratelimit-limit"), ["5"]);
}

/// A token bucket's `X-RateLimit-Limit` is what `Remaining` can reach: the burst.
#[tokio::test]
async fn token_bucket_limit_header_is_the_burst() {
    let (_, layer) = limiter_on_clock(RateLimitLayer::token_bucket(1, secs(1)).burst(10));
    let mut svc = layer.layer(inner());
    let res = ok(&mut svc, get("/")).await;
    assert_eq!(header(res.headers(), "x-ratelimit-limit"), Some("10"));
    assert_eq!(header(res.headers(), "x-ratelimit-remaining"), Some("9"));
    // The policy still states the rate: 1 per second.
    assert_eq!(
        header(res.headers(), "ratelimit-policy"),
        Some(r#""default";q=1;w=1"#)
    );
}

/// A drained `token_bucket(3, 1s)` refills in exactly 1 s: the reset must say 1, not 2 (the
/// rounded-up emission interval overshoots the period by 2 ns).
#[tokio::test]
async fn token_bucket_reset_never_exceeds_the_exact_refill_time() {
    let (_, layer) = limiter_on_clock(RateLimitLayer::token_bucket(3, secs(1)));
    let mut svc = layer.layer(inner());
    for _ in 0..3 {
        ok(&mut svc, get("/")).await;
    }
    let res = ok(&mut svc, get("/")).await;
    assert_eq!(res.status(), 429);
    assert_eq!(header(res.headers(), "x-ratelimit-reset"), Some("1"));
    assert_eq!(
        header(res.headers(), "ratelimit"),
        Some(r#""default";r=0;t=1"#)
    );
}

#[test]
fn counts_beyond_a_structured_field_integer_are_refused() {
    let err = RateLimitLayer::fixed_window(MAX_COUNT + 1, secs(1))
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "limit");
    assert_eq!(
        err.to_string(),
        "`limit` must be at most 999999999999999, got 1000000000000000"
    );
    let err = RateLimitLayer::builder()
        .limit(Limit::token_bucket(1, secs(1)).burst(MAX_COUNT + 1))
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "burst");
    assert!(RateLimitLayer::fixed_window(MAX_COUNT, secs(1))
        .build()
        .is_ok());
}

/// The built-in HTTP extractors also work on whole requests, for `build_generic`.
#[tokio::test]
async fn http_extractors_work_with_the_generic_variant() {
    use tower::{Service, ServiceExt};
    let layer = RateLimitLayer::fixed_window(1, secs(60))
        .key(PeerIp)
        .clock(clock())
        .build_generic()
        .unwrap();
    let mut svc = layer.layer(inner());
    let a = || from_peer([1, 2, 3, 4], &[]);
    assert!(svc.ready().await.unwrap().call(a()).await.is_ok());
    let err = svc.ready().await.unwrap().call(a()).await.unwrap_err();
    assert!(err.downcast_ref::<RateLimited>().is_some());
    assert!(svc
        .ready()
        .await
        .unwrap()
        .call(from_peer([5, 6, 7, 8], &[]))
        .await
        .is_ok());
}

/// The `X-RateLimit` trio is one unit: a handler that sets only `-Remaining` keeps it, and the
/// layer adds none of its own trio (a mixed trio would contradict itself).
#[tokio::test]
async fn a_handlers_partial_trio_is_kept_whole() {
    let (_, layer) = limiter_on_clock(RateLimitLayer::fixed_window(5, secs(60)));
    let mut svc = layer.layer(tower::service_fn(|_req: http::Request<Body>| {
        let mut res = http::Response::new(http_body_util::Full::new(bytes::Bytes::new()));
        res.headers_mut()
            .insert("x-ratelimit-remaining", HeaderValue::from_static("999"));
        std::future::ready(Ok::<_, std::convert::Infallible>(res))
    }));
    let res = ok(&mut svc, get("/")).await;
    assert_eq!(header(res.headers(), "x-ratelimit-remaining"), Some("999"));
    assert_eq!(header(res.headers(), "x-ratelimit-limit"), None);
    assert_eq!(header(res.headers(), "x-ratelimit-reset"), None);
    assert_eq!(
        header(res.headers(), "ratelimit"),
        Some(r#""default";r=4;t=60"#)
    );
}

/// A response future polled again after it completed answers instead of polling the inner
/// future again (an `async` block would panic on that), and refunds once.
#[test]
fn a_future_polled_after_completion_answers_500_and_refunds_once() {
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll};
    use tower::Service;

    let layer = RateLimitLayer::fixed_window(5, secs(60))
        .skip_failed(true)
        .build()
        .unwrap();
    let mut svc = layer.layer(tower::service_fn(|_: http::Request<()>| async {
        let mut res = http::Response::new(String::new());
        *res.status_mut() = StatusCode::BAD_GATEWAY;
        Ok::<_, std::convert::Infallible>(res)
    }));
    let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
    assert!(svc.poll_ready(&mut cx).is_ready());
    let mut future = pin!(svc.call(http::Request::new(())));
    match future.as_mut().poll(&mut cx) {
        Poll::Ready(Ok(res)) => assert_eq!(res.status(), StatusCode::BAD_GATEWAY),
        other => panic!("unexpected {:?}", other.map(|r| r.map(|r| r.status()))),
    }
    match future.as_mut().poll(&mut cx) {
        Poll::Ready(Ok(res)) => assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR),
        other => panic!("unexpected {:?}", other.map(|r| r.map(|r| r.status()))),
    }
    assert_eq!(layer.stats().refunded, 1);
}

#[test]
fn a_generic_future_polled_after_completion_errs() {
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll};
    use tower::Service;

    let layer = RateLimitLayer::fixed_window(5, secs(60))
        .build_generic()
        .unwrap();
    let mut svc = layer.layer(tower::service_fn(|n: u32| async move {
        Ok::<_, std::convert::Infallible>(n)
    }));
    let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
    assert!(svc.poll_ready(&mut cx).is_ready());
    let mut future = pin!(svc.call(7));
    assert!(matches!(future.as_mut().poll(&mut cx), Poll::Ready(Ok(7))));
    match future.as_mut().poll(&mut cx) {
        Poll::Ready(Err(err)) => assert!(err.downcast_ref::<RateLimited>().is_none()),
        other => panic!("unexpected {:?}", other.map(|r| r.ok())),
    }
}
