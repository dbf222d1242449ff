//! The HTTP layer end to end: exact header values, the 429 and gRPC answers, refunds, shadow
//! mode and several limits at once. Every value asserted here was computed by hand from the
//! algorithm; time moves only through a `ManualClock`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use bytes::Bytes;
use http::{Response, StatusCode};
use tower::{Layer, Service, ServiceExt};
use tower_bulwark::clock::{ManualClock, TokioClock};
use tower_bulwark::key::Key;
use tower_bulwark::rate_limit::{Limit, RateLimitLayer, RateLimitStats, ResetFormat};

fn assert_ietf(res: &Res, policy: &str, ratelimit: &str) {
    assert_eq!(header(res.headers(), "ratelimit-policy"), Some(policy));
    assert_eq!(header(res.headers(), "ratelimit"), Some(ratelimit));
}

/// Asserts a refusal of the HTTP layer: 429, JSON body, `Retry-After` in whole seconds.
async fn assert_429(res: Res, retry_after: u64) {
    assert_json_refusal(res, 429, "Too many requests", retry_after).await;
}

#[tokio::test]
async fn token_bucket_headers_are_exact() {
    // One token per 6 s, burst 10.
    let (clock, layer) = limiter_on_clock(RateLimitLayer::token_bucket(10, secs(60)));
    let mut svc = layer.layer(inner());
    let policy = r#""default";q=10;w=60"#;

    let res = ok(&mut svc, get("/")).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(legacy(res.headers()), (10, 9, 6));
    assert_ietf(&res, policy, r#""default";r=9;t=6"#);
    assert_eq!(header(res.headers(), "retry-after"), None);
    assert_eq!(body_text(res).await, "ok");

    for remaining in (1..=8).rev() {
        let res = ok(&mut svc, get("/")).await;
        assert_eq!(legacy(res.headers()), (10, remaining, (10 - remaining) * 6));
    }
    let res = ok(&mut svc, get("/")).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(legacy(res.headers()), (10, 0, 60));
    assert_ietf(&res, policy, r#""default";r=0;t=60"#);

    // The 11th at once: the next token comes in 6 s.
    let res = ok(&mut svc, get("/")).await;
    assert_eq!(legacy(res.headers()), (10, 0, 60));
    assert_ietf(&res, policy, r#""default";r=0;t=60"#);
    assert_429(res, 6).await;

    // 5.5 s later it is 0.5 s away: Retry-After rounds up to 1; the bucket is full in 54.5 s.
    clock.advance(ms(5_500));
    let res = ok(&mut svc, get("/")).await;
    assert_eq!(legacy(res.headers()), (10, 0, 55));
    assert_ietf(&res, policy, r#""default";r=0;t=55"#);
    assert_429(res, 1).await;

    clock.advance(ms(500)); // t = 6 s: one token back
    let res = ok(&mut svc, get("/")).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(legacy(res.headers()), (10, 0, 60));

    clock.advance(secs(12)); // t = 18 s: two tokens back
    let res = ok(&mut svc, get("/")).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(legacy(res.headers()), (10, 1, 54));
    assert_ietf(&res, policy, r#""default";r=1;t=54"#);

    assert_eq!(layer.stats(), {
        let mut s = RateLimitStats::default();
        s.allowed = 12;
        s.rejected = 2;
        s
    });
}

#[tokio::test]
async fn fixed_window_reset_is_seconds_from_now_rounded_up() {
    let clock = clock();
    clock.set(ms(54_500)); // 5.5 s before the window [0, 60 s) ends
    let layer = RateLimitLayer::fixed_window(10, secs(60))
        .clock(clock.clone())
        .build()
        .unwrap();
    let mut svc = layer.layer(inner());
    let res = ok(&mut svc, get("/")).await;
    assert_eq!(legacy(res.headers()), (10, 9, 6));
    assert_ietf(&res, r#""default";q=10;w=60"#, r#""default";r=9;t=6"#);

    // Windows are aligned to the clock's zero: at 60 s a new one starts.
    clock.set(secs(60));
    let res = ok(&mut svc, get("/")).await;
    assert_eq!(legacy(res.headers()), (10, 9, 60));
}

#[tokio::test]
async fn reset_as_unix_epoch_seconds_rounds_up() {
    // Wall time starts at 1_700_000_000.3 s.
    let clock = ManualClock::with_unix_origin(ms(1_700_000_000_300));
    clock.set(ms(54_500));
    let layer = RateLimitLayer::fixed_window(10, secs(60))
        .reset_format(ResetFormat::UnixEpoch)
        .clock(clock.clone())
        .build()
        .unwrap();
    let mut svc = layer.layer(inner());
    let res = ok(&mut svc, get("/")).await;
    // The window ends 5.5 s after 1_700_000_054.8 s, at 1_700_000_060.3 s: rounded up.
    assert_eq!(legacy(res.headers()), (10, 9, 1_700_000_061));
    // The IETF header stays relative.
    assert_ietf(&res, r#""default";q=10;w=60"#, r#""default";r=9;t=6"#);
}

#[tokio::test]
async fn sliding_window_log_headers_are_exact() {
    let (clock, layer) =
        limiter_on_clock(RateLimitLayer::sliding_window_log(3, secs(10)).cost(cost_header));
    let mut svc = layer.layer(inner());
    let policy = r#""default";q=3;w=10"#;

    let res = ok(&mut svc, get("/")).await; // t = 0
    assert_eq!(legacy(res.headers()), (3, 2, 10));
    assert_ietf(&res, policy, r#""default";r=2;t=10"#);

    clock.set(secs(4));
    let res = ok(&mut svc, with_cost("/", 2)).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(legacy(res.headers()), (3, 0, 10));

    // t = 7 s: full; the entry from t = 0 leaves the window at 10 s, the newest at 14 s.
    clock.set(secs(7));
    let res = ok(&mut svc, get("/")).await;
    assert_eq!(legacy(res.headers()), (3, 0, 7));
    assert_ietf(&res, policy, r#""default";r=0;t=7"#);
    assert_429(res, 3).await;

    clock.set(ms(9_999));
    assert_eq!(
        ok(&mut svc, get("/")).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    clock.set(secs(10));
    let res = ok(&mut svc, get("/")).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(legacy(res.headers()), (3, 0, 10));
}

#[tokio::test]
async fn sliding_window_counter_headers_are_exact() {
    let (clock, layer) = limiter_on_clock(RateLimitLayer::sliding_window_counter(10, secs(60)));
    let mut svc = layer.layer(inner());
    let policy = r#""default";q=10;w=60"#;

    for _ in 0..6 {
        ok(&mut svc, get("/")).await;
    }
    // t = 90 s, halfway through the second window: the previous 6 weigh ceil(6 * 30 / 60) = 3.
    clock.set(secs(90));
    let res = ok(&mut svc, get("/")).await;
    // Fully restored once this window has slid out: at 180 s.
    assert_eq!(legacy(res.headers()), (10, 6, 90));
    assert_ietf(&res, policy, r#""default";r=6;t=90"#);
    for remaining in (0..=5).rev() {
        let res = ok(&mut svc, get("/")).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(legacy(res.headers()), (10, remaining, 90));
    }
    // 3 + 7 = 10: full. One more fits once the previous window weighs 2: at 40 s into this
    // window (ceil(6 * 20 / 60) = 2), 10 s from now.
    let res = ok(&mut svc, get("/")).await;
    assert_eq!(legacy(res.headers()), (10, 0, 90));
    assert_ietf(&res, policy, r#""default";r=0;t=90"#);
    assert_429(res, 10).await;

    clock.set(Duration::from_nanos(99_999_999_999));
    assert_eq!(
        ok(&mut svc, get("/")).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    clock.set(secs(100));
    let res = ok(&mut svc, get("/")).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(legacy(res.headers()), (10, 0, 80));
}

/// gRPC calls are POSTs: another method with a gRPC content type is not a gRPC call, and gets
/// the HTTP answer (the method is checked before any header lookup).
#[tokio::test]
async fn a_get_with_a_grpc_content_type_is_refused_over_http() {
    let layer = RateLimitLayer::fixed_window(1, secs(60))
        .clock(clock())
        .build()
        .unwrap();
    let mut svc = layer.layer(inner());
    let get_grpc = || get_with("/pkg.Svc/Method", &[("content-type", "application/grpc")]);
    assert_eq!(ok(&mut svc, get_grpc()).await.status(), StatusCode::OK);
    let res = ok(&mut svc, get_grpc()).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(res.headers(), "grpc-status"), None);
    assert_json_refusal(res, 429, "Too many requests", 60).await;
}

#[tokio::test]
async fn grpc_requests_are_refused_with_a_grpc_status() {
    let clock = clock();
    clock.set(secs(15));
    let layer = RateLimitLayer::fixed_window(1, secs(60))
        .clock(clock.clone())
        .build()
        .unwrap();
    let mut svc = layer.layer(inner());
    let grpc = || grpc_call("/pkg.Svc/Method");

    let res = ok(&mut svc, grpc()).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(res.headers(), "grpc-status"), None);
    assert_eq!(body_text(res).await, "ok");

    // The answer's content-type echoes the request's gRPC flavour.
    for (req, content_type) in [
        (grpc(), "application/grpc"),
        (
            post_with(
                "/pkg.Svc/Method",
                &[("content-type", "application/grpc+proto")],
            ),
            "application/grpc+proto",
        ),
    ] {
        let res = ok(&mut svc, req).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(header(res.headers(), "grpc-status"), Some("8"));
        assert_eq!(
            header(res.headers(), "grpc-message"),
            Some("Too many requests")
        );
        assert_eq!(header(res.headers(), "content-type"), Some(content_type));
        assert_eq!(header(res.headers(), "retry-after"), Some("45"));
        assert_eq!(legacy(res.headers()), (1, 0, 45));
        assert_eq!(body_text(res).await, "");
    }
    assert_eq!(layer.stats().rejected, 2);
}

#[tokio::test]
async fn headers_switched_off_leave_only_retry_after_on_a_429() {
    let (clock, layer) = limiter_on_clock(RateLimitLayer::fixed_window(1, secs(60)).headers(false));
    let mut svc = layer.layer(inner());
    let res = ok(&mut svc, get("/")).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_no_rate_limit_headers(res.headers());
    assert_eq!(header(res.headers(), "retry-after"), None);

    clock.set(ms(20_250));
    let res = ok(&mut svc, get("/")).await;
    assert_no_rate_limit_headers(res.headers());
    assert_429(res, 40).await;
}

#[tokio::test]
async fn legacy_and_ietf_headers_switch_separately() {
    let (_, legacy_only) =
        limiter_on_clock(RateLimitLayer::fixed_window(5, secs(60)).ietf_headers(false));
    let res = ok(&mut legacy_only.layer(inner()), get("/")).await;
    assert_eq!(legacy(res.headers()), (5, 4, 60));
    assert_eq!(header(res.headers(), "ratelimit"), None);
    assert_eq!(header(res.headers(), "ratelimit-policy"), None);

    let (_, ietf_only) =
        limiter_on_clock(RateLimitLayer::fixed_window(5, secs(60)).legacy_headers(false));
    let res = ok(&mut ietf_only.layer(inner()), get("/")).await;
    assert_ietf(&res, r#""default";q=5;w=60"#, r#""default";r=4;t=60"#);
    for name in [
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
    ] {
        assert_eq!(header(res.headers(), name), None, "{name}");
    }
}

#[tokio::test]
async fn custom_rejection_response_gets_the_headers_it_does_not_set() {
    let clock = clock();
    clock.set(secs(15));
    let layer = RateLimitLayer::fixed_window(1, secs(60))
        .on_rejection(|refusal| {
            Response::builder()
                .status(StatusCode::SERVICE_UNAVAILABLE)
                .header("content-type", "text/plain")
                .body(Bytes::from(format!(
                    "slow down for {}s ({:?})",
                    refusal.retry_after_secs(),
                    refusal.retry_after()
                )))
                .unwrap()
        })
        .clock(clock.clone())
        .build()
        .unwrap();
    let mut svc = layer.layer(inner());
    assert_eq!(ok(&mut svc, get("/")).await.status(), StatusCode::OK);

    let res = ok(&mut svc, get("/")).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(header(res.headers(), "content-type"), Some("text/plain"));
    assert_eq!(header(res.headers(), "retry-after"), Some("45"));
    assert_eq!(legacy(res.headers()), (1, 0, 45));
    assert_ietf(&res, r#""default";q=1;w=60"#, r#""default";r=0;t=45"#);
    assert_eq!(body_text(res).await, "slow down for 45s (45s)");

    // gRPC requests still get a gRPC status.
    let res = ok(&mut svc, grpc_call("/")).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(res.headers(), "grpc-status"), Some("8"));
}

#[tokio::test]
async fn custom_rejection_keeps_its_own_retry_after() {
    let (_, layer) =
        limiter_on_clock(RateLimitLayer::fixed_window(1, secs(60)).on_rejection(|_| {
            Response::builder()
                .status(StatusCode::TOO_MANY_REQUESTS)
                .header("retry-after", "999")
                .body(Bytes::from_static(b"no"))
                .unwrap()
        }));
    let mut svc = layer.layer(inner());
    ok(&mut svc, get("/")).await;
    let res = ok(&mut svc, get("/")).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(res.headers(), "retry-after"), Some("999"));
    assert_eq!(legacy(res.headers()), (1, 0, 60));
    assert_eq!(body_text(res).await, "no");
}

#[tokio::test]
async fn an_inner_services_own_rate_limit_headers_are_kept() {
    let (_, layer) = limiter_on_clock(RateLimitLayer::fixed_window(5, secs(60)));
    let res = ok(&mut layer.layer(inner()), get("/own-headers")).await;
    // The X-RateLimit trio belongs together: the inner service set its own, so ours is not
    // mixed in (its `Remaining` would not match the inner `Limit`).
    assert_eq!(header(res.headers(), "x-ratelimit-limit"), Some("77"));
    assert_eq!(header(res.headers(), "x-ratelimit-remaining"), None);
    assert_eq!(header(res.headers(), "retry-after"), Some("5"));
    // The IETF fields are lists: ours is added.
    assert_eq!(
        header(res.headers(), "ratelimit"),
        Some(r#""default";r=4;t=60"#)
    );
}

#[tokio::test]
async fn refused_requests_never_reach_the_inner_service() {
    let calls = Arc::new(AtomicUsize::new(0));
    let (_, layer) = limiter_on_clock(RateLimitLayer::token_bucket(3, secs(3)));
    let mut svc = layer.layer(counting_inner(calls.clone()));
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(ok(&mut svc, get("/")).await.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn cost_zero_reads_the_limit_without_spending() {
    let (_, layer) = limiter_on_clock(RateLimitLayer::fixed_window(2, secs(60)).cost(cost_header));
    let mut svc = layer.layer(inner());
    for _ in 0..3 {
        let res = ok(&mut svc, with_cost("/", 0)).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(legacy(res.headers()), (2, 2, 60));
    }
    let res = ok(&mut svc, with_cost("/", 2)).await;
    assert_eq!(legacy(res.headers()), (2, 0, 60));
    let res = ok(&mut svc, with_cost("/", 1)).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test(start_paused = true)]
async fn tokio_clock_follows_paused_time() {
    let layer = RateLimitLayer::token_bucket(1, secs(10))
        .clock(TokioClock::new())
        .build()
        .unwrap();
    let mut svc = layer.layer(inner());
    assert_eq!(ok(&mut svc, get("/")).await.status(), StatusCode::OK);
    assert_429(ok(&mut svc, get("/")).await, 10).await;
    tokio::time::advance(ms(9_999)).await;
    assert_429(ok(&mut svc, get("/")).await, 1).await;
    tokio::time::advance(ms(1)).await;
    assert_eq!(ok(&mut svc, get("/")).await.status(), StatusCode::OK);
}

// ---------------------------------------------------------------------------------------------
// Refunds

/// Every algorithm with a limit of 2 per minute (the token bucket's burst is its limit).
fn two_per_minute() -> [Limit; 4] {
    [
        Limit::token_bucket(2, secs(60)),
        Limit::sliding_window_log(2, secs(60)),
        Limit::fixed_window(2, secs(60)),
        Limit::sliding_window_counter(2, secs(60)),
    ]
}

#[tokio::test]
async fn skip_successful_counts_only_failures() {
    for limit in two_per_minute() {
        let name = limit.algorithm().as_str();
        let (_, layer) =
            limiter_on_clock(RateLimitLayer::builder().limit(limit).skip_successful(true));
        let mut svc = layer.layer(inner());
        for _ in 0..5 {
            let res = ok(&mut svc, get("/")).await;
            assert_eq!(res.status(), StatusCode::OK, "{name}");
            // Counted when it arrives, given back when it succeeds.
            assert_eq!(legacy(res.headers()).1, 1, "{name}");
        }
        let res = ok(&mut svc, get("/status/500")).await;
        assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR, "{name}");
        assert_eq!(legacy(res.headers()).1, 1, "{name}");
        let res = ok(&mut svc, get("/status/502")).await;
        assert_eq!(legacy(res.headers()).1, 0, "{name}");
        // Two failures spent the limit: even a request that would succeed is refused now.
        for path in ["/status/500", "/"] {
            let res = ok(&mut svc, get(path)).await;
            assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS, "{name} {path}");
        }
        assert_eq!(
            layer.stats(),
            {
                let mut s = RateLimitStats::default();
                s.allowed = 7;
                s.rejected = 2;
                s.refunded = 5;
                s
            },
            "{name}"
        );
    }
}

#[tokio::test]
async fn skip_failed_refunds_client_and_server_errors_and_inner_errors() {
    for limit in two_per_minute() {
        let name = limit.algorithm().as_str();
        let (_, layer) = limiter_on_clock(RateLimitLayer::builder().limit(limit).skip_failed(true));
        let mut svc = layer.layer(inner());
        for path in ["/status/404", "/status/429", "/status/503", "/status/500"] {
            let res = ok(&mut svc, get(path)).await;
            assert_eq!(res.status().as_str(), &path[8..], "{name}");
            assert_eq!(legacy(res.headers()).1, 1, "{name} {path}");
        }
        // An error from the inner service passes through and is refunded too.
        assert_eq!(send(&mut svc, get("/error")).await.unwrap_err(), InnerError);
        // Redirects are not failures: counted.
        let res = ok(&mut svc, get("/status/302")).await;
        assert_eq!(legacy(res.headers()).1, 1, "{name}");
        let res = ok(&mut svc, get("/")).await;
        assert_eq!(legacy(res.headers()).1, 0, "{name}");
        let res = ok(&mut svc, get("/")).await;
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS, "{name}");
        let stats = layer.stats();
        assert_eq!(
            (stats.allowed, stats.refunded, stats.rejected),
            (7, 5, 1),
            "{name}"
        );
    }
}

#[tokio::test]
async fn a_refund_gives_back_the_whole_cost() {
    let (_, layer) = limiter_on_clock(
        RateLimitLayer::fixed_window(5, secs(60))
            .cost(cost_header)
            .skip_successful(true),
    );
    let mut svc = layer.layer(inner());
    let res = ok(&mut svc, with_cost("/", 3)).await;
    assert_eq!(legacy(res.headers()).1, 2);
    let res = ok(&mut svc, with_cost("/status/500", 3)).await;
    assert_eq!(legacy(res.headers()).1, 2);
    let res = ok(&mut svc, with_cost("/", 3)).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let res = ok(&mut svc, with_cost("/", 2)).await;
    assert_eq!(legacy(res.headers()).1, 0);
    assert_eq!(layer.stats().refunded, 2);
}

/// A refund settled after the window rolled gives back to the previous window's count.
#[tokio::test]
async fn a_late_refund_reaches_the_sliding_counters_previous_window() {
    for skip_failed in [false, true] {
        let clock = clock();
        clock.set(secs(59));
        let layer = RateLimitLayer::sliding_window_counter(2, secs(60))
            .skip_failed(skip_failed)
            .clock(clock.clone())
            .build()
            .unwrap();
        let mut svc = layer.layer(inner());
        // Decided at 59 s (in `call`), answered at 61 s.
        let pending = svc.ready().await.unwrap().call(get("/status/500"));
        clock.set(secs(61));
        assert_eq!(
            pending.await.unwrap().status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        let res = ok(&mut svc, get("/")).await;
        // Refunded: nothing weighs from the previous window. Counted: it weighs
        // ceil(1 * 59 / 60) = 1.
        let remaining = if skip_failed { 1 } else { 0 };
        assert_eq!(
            legacy(res.headers()).1,
            remaining,
            "skip_failed {skip_failed}"
        );
    }
}

/// A late token bucket refund gives back tokens but never fills the bucket beyond full.
#[tokio::test]
async fn a_late_token_bucket_refund_is_capped_at_a_full_bucket() {
    for skip_failed in [false, true] {
        let (clock, layer) = limiter_on_clock(
            RateLimitLayer::token_bucket(2, secs(60)) // one token per 30 s
                .skip_failed(skip_failed),
        );
        let mut svc = layer.layer(inner());
        let pending = svc.ready().await.unwrap().call(get("/status/500"));
        clock.set(secs(10));
        pending.await.unwrap();
        let first = legacy(ok(&mut svc, get("/")).await.headers());
        let second = ok(&mut svc, get("/")).await;
        if skip_failed {
            // Full again at 10 s: two more pass, the bucket is empty at 70 s.
            assert_eq!(first, (2, 1, 30));
            assert_eq!(legacy(second.headers()), (2, 0, 60));
        } else {
            // One token left (the other comes back at 30 s).
            assert_eq!(first, (2, 0, 50));
            assert_eq!(second.status(), StatusCode::TOO_MANY_REQUESTS);
            assert_eq!(header(second.headers(), "retry-after"), Some("20"));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Shadow mode

#[tokio::test]
async fn shadow_mode_lets_everything_through_and_counts() {
    let calls = Arc::new(AtomicUsize::new(0));
    let (_, layer) = limiter_on_clock(RateLimitLayer::fixed_window(1, secs(60)).shadow(true));
    let mut svc = layer.layer(counting_inner(calls.clone()));
    for req in [
        get("/"),
        get("/"),
        get("/"),
        grpc_call("/"),
        get("/status/404"),
    ] {
        let path = req.uri().path().to_owned();
        let res = ok(&mut svc, req).await;
        assert_ne!(res.status(), StatusCode::TOO_MANY_REQUESTS, "{path}");
        assert_no_rate_limit_headers(res.headers());
        assert_eq!(header(res.headers(), "retry-after"), None);
        assert_eq!(header(res.headers(), "grpc-status"), None);
        assert_eq!(body_text(res).await, "ok");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 5);
    assert_eq!(layer.stats(), {
        let mut s = RateLimitStats::default();
        s.allowed = 1;
        s.shadow_rejected = 4;
        s
    });
    // It still counted: the one admission spent the window.
    let verdict = layer.backend().decide_now(&Key::Global, 0);
    assert_eq!(verdict.limits()[0].remaining(), 0);
}

// ---------------------------------------------------------------------------------------------
// Several limits

#[tokio::test]
async fn a_request_refused_by_one_limit_spends_nothing_from_the_other() {
    let (clock, layer) = limiter_on_clock(
        RateLimitLayer::builder()
            .limit(Limit::token_bucket(2, secs(1)).name("per-second")) // a token per 500 ms
            .limit(Limit::fixed_window(3, secs(60)).name("per-minute")),
    );
    let mut svc = layer.layer(inner());
    let policy = r#""per-second";q=2;w=1, "per-minute";q=3;w=60"#;

    let res = ok(&mut svc, get("/")).await;
    assert_ietf(
        &res,
        policy,
        r#""per-second";r=1;t=1, "per-minute";r=2;t=60"#,
    );
    assert_eq!(legacy(res.headers()), (2, 1, 1));
    let res = ok(&mut svc, get("/")).await;
    assert_ietf(
        &res,
        policy,
        r#""per-second";r=0;t=1, "per-minute";r=1;t=60"#,
    );
    assert_eq!(legacy(res.headers()), (2, 0, 1));

    // Refused by the token bucket: the fixed window keeps its 1.
    let res = ok(&mut svc, get("/")).await;
    assert_eq!(ietf_remaining(res.headers()), [0, 1]);
    assert_eq!(legacy(res.headers()), (2, 0, 1));
    assert_429(res, 1).await;

    clock.set(secs(1));
    let res = ok(&mut svc, get("/")).await;
    assert_eq!(res.status(), StatusCode::OK, "the refusal spent the window");
    assert_ietf(
        &res,
        policy,
        r#""per-second";r=1;t=1, "per-minute";r=0;t=59"#,
    );
    assert_eq!(legacy(res.headers()), (3, 0, 59));

    // Refused by the fixed window, twice: the token bucket keeps its token.
    for _ in 0..2 {
        let res = ok(&mut svc, get("/")).await;
        assert_eq!(ietf_remaining(res.headers()), [1, 0]);
        assert_eq!(legacy(res.headers()), (3, 0, 59));
        assert_429(res, 59).await;
    }

    clock.set(secs(60));
    let res = ok(&mut svc, get("/")).await;
    assert_ietf(
        &res,
        policy,
        r#""per-second";r=1;t=1, "per-minute";r=2;t=60"#,
    );
    let stats = layer.stats();
    assert_eq!((stats.allowed, stats.rejected), (4, 3));
}

#[tokio::test]
async fn several_limits_stay_all_or_nothing_with_costs() {
    let (clock, layer) = limiter_on_clock(
        RateLimitLayer::builder()
            .limit(Limit::token_bucket(4, secs(1))) // "default": a token per 250 ms
            .limit(Limit::fixed_window(5, secs(60))) // "limit1"
            .cost(cost_header),
    );
    let mut svc = layer.layer(inner());

    let res = ok(&mut svc, with_cost("/", 3)).await;
    assert_ietf(
        &res,
        r#""default";q=4;w=1, "limit1";q=5;w=60"#,
        r#""default";r=1;t=1, "limit1";r=2;t=60"#,
    );
    // 2 more do not fit the bucket (1 token): refused, the window keeps its 2.
    let res = ok(&mut svc, with_cost("/", 2)).await;
    assert_eq!(ietf_remaining(res.headers()), [1, 2]);
    assert_429(res, 1).await;
    let res = ok(&mut svc, with_cost("/", 1)).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(ietf_remaining(res.headers()), [0, 1]);

    clock.set(secs(1));
    // The bucket is full (4) but 4 + 2 > 5 in the window: refused, the bucket keeps its 4.
    let res = ok(&mut svc, with_cost("/", 2)).await;
    assert_eq!(ietf_remaining(res.headers()), [4, 1]);
    assert_429(res, 59).await;
    let res = ok(&mut svc, with_cost("/", 1)).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_ietf(
        &res,
        r#""default";q=4;w=1, "limit1";q=5;w=60"#,
        r#""default";r=3;t=1, "limit1";r=0;t=59"#,
    );
}

/// `LimitStatus::reset_after` is "time until the limit is fully restored". When another limit
/// refuses, nothing is spent, so a limit that would have allowed must report its untouched
/// state; it reports the reset it would have had after spending instead.
#[tokio::test]
async fn a_refused_request_reports_the_untouched_reset_of_the_other_limits() {
    let (clock, layer) = limiter_on_clock(
        RateLimitLayer::builder()
            .limit(Limit::fixed_window(1, secs(60)))
            .limit(Limit::sliding_window_log(5, secs(10))),
    );
    let mut svc = layer.layer(inner());
    ok(&mut svc, get("/")).await;
    clock.set(secs(4));
    let res = ok(&mut svc, get("/")).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    // The log holds one entry, from t = 0: it is fully restored at 10 s, 6 s from now.
    assert_eq!(
        header(res.headers(), "ratelimit"),
        Some(r#""default";r=0;t=56, "limit1";r=4;t=6"#)
    );
}
