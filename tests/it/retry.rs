//! The retry layer on paused Tokio time: exact backoff sequences, what is and is not retried,
//! `Retry-After` and gRPC pushback, body replay, the budget, timeouts, cancellation.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request};
use http_body_util::Full;
use tower::{Layer, Service, ServiceExt};
use tower_bulwark::retry::{
    Backoff, GiveUp, Hedge, Jitter, RetryBudget, RetryEvent, RetryLayer, RetryLayerBuilder,
    SeededRandom, TimedOut,
};
use tower_bulwark::BoxError;

use crate::common::upstream::{status, Chunks, Step, Upstream};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn ms(m: u64) -> Duration {
    Duration::from_millis(m)
}

fn ceil_ms(d: Duration) -> Duration {
    ms(d.as_nanos().div_ceil(1_000_000) as u64)
}

/// The defaults with no jitter and no budget: delays of exactly 1, 2, 4 ... s.
fn plain() -> RetryLayerBuilder {
    RetryLayer::builder().jitter(Jitter::None).no_budget()
}

fn get(path: &str) -> Request<Full<Bytes>> {
    Request::get(path).body(Full::new(Bytes::new())).unwrap()
}

fn request(method: &str, headers: &[(&str, &str)], body: &'static [u8]) -> Request<Full<Bytes>> {
    let mut req = Request::builder().method(method).uri("/r");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req.body(Full::new(Bytes::from_static(body))).unwrap()
}

fn grpc(headers: &[(&'static str, &'static str)]) -> Step {
    let mut all = vec![("content-type", "application/grpc")];
    all.extend_from_slice(headers);
    Step::Status(200, all)
}

/// Every event the layer emitted.
fn recorder() -> (
    Arc<Mutex<Vec<RetryEvent>>>,
    impl Fn(&RetryEvent) + Send + Sync,
) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    (events, move |event: &RetryEvent| {
        sink.lock().unwrap().push(*event)
    })
}

async fn status_of<B>(layer: RetryLayer, upstream: &Upstream, req: Request<B>) -> u16
where
    B: http_body::Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<BoxError> + Send,
{
    let res = layer.layer(upstream.clone()).oneshot(req).await.unwrap();
    res.status().as_u16()
}

#[tokio::test(start_paused = true)]
async fn seeded_jitter_replays_the_exact_backoff_sequence() {
    for jitter in [
        Jitter::Full,
        Jitter::Equal,
        Jitter::Decorrelated,
        Jitter::Proportional(0.1),
    ] {
        let upstream = Upstream::new([status(503), status(502), status(504)], status(200));
        let layer = RetryLayer::builder()
            .jitter(jitter)
            .random(SeededRandom::new(11))
            .no_budget()
            .build()
            .unwrap();
        assert_eq!(status_of(layer, &upstream, get("/")).await, 200);

        // The same draws from the same seed, by hand.
        let backoff = Backoff::default().jitter(jitter);
        let random = SeededRandom::new(11);
        let mut previous = Duration::ZERO;
        let mut at = Duration::ZERO;
        let mut expected = vec![at];
        for n in 0..3 {
            let delay = backoff.delay(n, previous, &random);
            previous = delay;
            at += ceil_ms(delay); // Tokio's timers tick in whole milliseconds
            expected.push(at);
        }
        assert_eq!(upstream.times(), expected, "{jitter:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn no_jitter_doubles_up_to_the_cap_then_gives_up() {
    let upstream = Upstream::new([], status(503));
    let (events, sink) = recorder();
    let layer = plain()
        .backoff(
            Backoff::exponential(secs(1))
                .cap(secs(5))
                .jitter(Jitter::None),
        )
        .max_retries(5)
        .on_event(sink)
        .build()
        .unwrap();
    let stats = layer.clone();
    assert_eq!(status_of(layer, &upstream, get("/")).await, 503);
    // 1, 2, 4, then the cap of 5, 5.
    assert_eq!(upstream.times(), [0, 1, 3, 7, 12, 17].map(secs));
    let events = events.lock().unwrap();
    assert_eq!(events.len(), 6);
    assert_eq!(
        events[5],
        RetryEvent::GaveUp {
            attempts: 6,
            reason: GiveUp::Attempts
        }
    );
    let stats = stats.stats();
    assert_eq!(
        (
            stats.requests,
            stats.attempts,
            stats.retries,
            stats.given_up
        ),
        (1, 6, 5, 1)
    );
}

#[tokio::test(start_paused = true)]
async fn success_and_other_failures_are_not_retried() {
    for code in [200, 201, 304, 400, 404, 409, 500, 501] {
        let upstream = Upstream::new([status(code)], status(200));
        let layer = plain().build().unwrap();
        assert_eq!(status_of(layer, &upstream, get("/")).await, code);
        assert_eq!(upstream.calls(), 1, "{code}");
    }
    for code in [429, 502, 503, 504] {
        let upstream = Upstream::new([status(code)], status(200));
        assert_eq!(
            status_of(plain().build().unwrap(), &upstream, get("/")).await,
            200
        );
        assert_eq!(upstream.calls(), 2, "{code}");
    }
}

#[tokio::test(start_paused = true)]
async fn transport_errors_are_retried_and_the_last_one_returned() {
    let upstream = Upstream::new([Step::Fail("connection refused")], status(200));
    assert_eq!(
        status_of(plain().build().unwrap(), &upstream, get("/")).await,
        200
    );
    assert_eq!(upstream.times(), [secs(0), secs(1)]);

    let upstream = Upstream::new([], Step::Fail("connection reset"));
    let service = plain()
        .max_retries(2)
        .build()
        .unwrap()
        .layer(upstream.clone());
    let err = service.oneshot(get("/")).await.unwrap_err();
    assert_eq!(err.to_string(), "connection reset");
    assert_eq!(upstream.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_predicate_replaces_what_is_retried() {
    let upstream = Upstream::new([status(500), status(503)], status(200));
    let layer = plain()
        .retry_if(|result: &Result<http::Response<Full<Bytes>>, BoxError>| {
            matches!(result, Ok(res) if res.status() == 500)
        })
        .build()
        .unwrap();
    let service = layer.layer(upstream.clone());
    let res = service.oneshot(get("/")).await.unwrap();
    assert_eq!(res.status(), 503); // 500 retried, 503 no longer
    assert_eq!(upstream.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn non_idempotent_requests_get_one_attempt_unless_keyed_or_opted_in() {
    for method in ["POST", "PATCH"] {
        let upstream = Upstream::new([status(503)], status(200));
        let req = request(method, &[], b"order");
        assert_eq!(
            status_of(plain().build().unwrap(), &upstream, req).await,
            503
        );
        assert_eq!(upstream.calls(), 1);
        assert_eq!(upstream.seen()[0].body, "order"); // passed through whole
    }
    for method in ["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"] {
        let upstream = Upstream::new([status(503)], status(200));
        let req = request(method, &[], b"");
        assert_eq!(
            status_of(plain().build().unwrap(), &upstream, req).await,
            200,
            "{method}"
        );
    }
    let upstream = Upstream::new([status(503)], status(200));
    let keyed = request("POST", &[("idempotency-key", "a1b2")], b"order");
    assert_eq!(
        status_of(plain().build().unwrap(), &upstream, keyed).await,
        200
    );
    assert_eq!(upstream.calls(), 2);

    let upstream = Upstream::new([status(503)], status(200));
    let layer = plain().any_method().build().unwrap();
    assert_eq!(
        status_of(layer, &upstream, request("POST", &[], b"x")).await,
        200
    );
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_a_floor_capped_and_garbage_is_ignored() {
    let cases: [(&str, Duration); 6] = [
        ("5", secs(5)),                              // longer than the backoff's 1 s
        ("0", secs(1)),                              // shorter: the backoff wins
        ("86400", secs(30)),                         // capped
        ("Thu, 01 Jan 1970 00:00:00 GMT", secs(1)),  // a date in the past
        ("Fri, 31 Dec 9999 23:59:59 GMT", secs(30)), // the far future, capped
        ("soon, please", secs(1)),                   // garbage
    ];
    for (value, wait) in cases {
        let upstream = Upstream::new(
            [Step::Status(503, vec![("retry-after", value)])],
            status(200),
        );
        assert_eq!(
            status_of(plain().build().unwrap(), &upstream, get("/")).await,
            200
        );
        assert_eq!(upstream.times(), [Duration::ZERO, wait], "{value}");
    }
    // The cap is the layer's to set.
    let upstream = Upstream::new(
        [Step::Status(429, vec![("retry-after", "20")])],
        status(200),
    );
    let layer = plain().max_retry_after(secs(3)).build().unwrap();
    assert_eq!(status_of(layer, &upstream, get("/")).await, 200);
    assert_eq!(upstream.times(), [secs(0), secs(3)]);
}

#[tokio::test(start_paused = true)]
async fn retry_after_dates_are_read_against_the_layers_wall_clock() {
    // Sun, 06 Nov 1994 08:49:37 GMT
    let clock = tower_bulwark::clock::ManualClock::with_unix_origin(secs(784_111_777));
    let upstream = Upstream::new(
        [Step::Status(
            503,
            vec![("retry-after", "Sun, 06 Nov 1994 08:49:44 GMT")],
        )],
        status(200),
    );
    let layer = plain().clock(clock).build().unwrap();
    assert_eq!(status_of(layer, &upstream, get("/")).await, 200);
    assert_eq!(upstream.times(), [secs(0), secs(7)]);
}

#[tokio::test(start_paused = true)]
async fn grpc_unavailable_is_retried_and_pushback_obeyed() {
    let call = || {
        request(
            "POST",
            &[("content-type", "application/grpc")],
            b"\0\0\0\0\0",
        )
    };
    // UNAVAILABLE, trailers-only: retried after the backoff; INTERNAL is not.
    let upstream = Upstream::new(
        [grpc(&[("grpc-status", "14")])],
        grpc(&[("grpc-status", "0")]),
    );
    assert_eq!(
        status_of(plain().build().unwrap(), &upstream, call()).await,
        200
    );
    assert_eq!(upstream.times(), [secs(0), secs(1)]);
    assert_eq!(upstream.seen()[1].body, Bytes::from_static(b"\0\0\0\0\0"));

    let upstream = Upstream::new([grpc(&[("grpc-status", "13")])], grpc(&[]));
    status_of(plain().build().unwrap(), &upstream, call()).await;
    assert_eq!(upstream.calls(), 1);

    // Pushback replaces the backoff, even when shorter.
    let upstream = Upstream::new(
        [grpc(&[
            ("grpc-status", "14"),
            ("grpc-retry-pushback-ms", "250"),
        ])],
        grpc(&[("grpc-status", "0")]),
    );
    status_of(plain().build().unwrap(), &upstream, call()).await;
    assert_eq!(upstream.times(), [ms(0), ms(250)]);

    // A negative or malformed pushback: do not retry.
    for bad in ["-1", "later"] {
        let (events, sink) = recorder();
        let upstream = Upstream::new(
            [grpc(&[
                ("grpc-status", "14"),
                ("grpc-retry-pushback-ms", bad),
            ])],
            grpc(&[("grpc-status", "0")]),
        );
        status_of(plain().on_event(sink).build().unwrap(), &upstream, call()).await;
        assert_eq!(upstream.calls(), 1, "{bad}");
        assert_eq!(
            events.lock().unwrap()[..],
            [RetryEvent::GaveUp {
                attempts: 1,
                reason: GiveUp::Pushback
            }]
        );
    }
}

#[tokio::test(start_paused = true)]
async fn bodies_are_replayed_byte_for_byte_with_their_trailers() {
    let mut trailers = HeaderMap::new();
    trailers.insert("x-checksum", "abc".parse().unwrap());
    let body = Chunks::new(
        &[b"first,", b"", b"second,", b"third"],
        Some(trailers.clone()),
    );
    let req = Request::put("/doc").body(body).unwrap();
    let upstream = Upstream::new([status(503), status(503)], status(200));
    assert_eq!(
        status_of(plain().build().unwrap(), &upstream, req).await,
        200
    );
    let seen = upstream.seen();
    assert_eq!(seen.len(), 3);
    for attempt in &seen {
        assert_eq!(attempt.body, "first,second,third");
        assert_eq!(attempt.trailers.as_ref(), Some(&trailers));
    }
}

#[tokio::test(start_paused = true)]
async fn oversize_and_streaming_bodies_are_sent_once_and_whole() {
    // Says it is larger than the bound.
    let big = Bytes::from(vec![7u8; 100 * 1024]);
    let upstream = Upstream::new([status(503)], status(200));
    let req = Request::put("/big").body(Full::new(big.clone())).unwrap();
    assert_eq!(
        status_of(plain().build().unwrap(), &upstream, req).await,
        503
    );
    assert_eq!(upstream.seen()[0].body, big);

    // Says it is small and is not: its start from memory, the rest as it comes, one attempt.
    let chunks = vec![
        Bytes::from(vec![1u8; 40_000]),
        Bytes::from(vec![2u8; 40_000]),
        Bytes::from(vec![3u8; 10]),
    ];
    let whole: Vec<u8> = chunks.iter().flat_map(|c| c.to_vec()).collect();
    let liar = Chunks::claiming(chunks, None, 10);
    let upstream = Upstream::new([status(503)], status(200));
    let req = Request::put("/liar").body(liar).unwrap();
    assert_eq!(
        status_of(plain().build().unwrap(), &upstream, req).await,
        503
    );
    assert_eq!(upstream.calls(), 1);
    assert_eq!(upstream.seen()[0].body, whole);

    // A stream of unknown length.
    let stream = futures_util::stream::iter([Ok::<_, std::convert::Infallible>(
        http_body::Frame::data(Bytes::from_static(b"streamed")),
    )]);
    let req = Request::put("/s")
        .body(http_body_util::StreamBody::new(stream))
        .unwrap();
    let upstream = Upstream::new([status(503)], status(200));
    assert_eq!(
        status_of(plain().build().unwrap(), &upstream, req).await,
        503
    );
    assert_eq!(upstream.seen()[0].body, "streamed");
}

#[tokio::test(start_paused = true)]
async fn the_budget_runs_out_and_recovers() {
    // One retry per second, whatever the traffic.
    let budget = RetryBudget::builder()
        .ratio(0.0)
        .min_per_second(1)
        .window(secs(1))
        .build()
        .unwrap();
    let (events, sink) = recorder();
    let layer = RetryLayer::builder()
        .jitter(Jitter::None)
        .backoff(Backoff::exponential(ms(10)).jitter(Jitter::None))
        .budget(budget.clone())
        .max_retries(3)
        .on_event(sink)
        .build()
        .unwrap();
    let upstream = Upstream::new([], status(503));
    let service = layer.layer(upstream.clone());
    // The first request spends the one retry and wants another; the second gets none and
    // is sent once.
    service.clone().oneshot(get("/")).await.unwrap();
    assert_eq!(upstream.calls(), 2);
    assert_eq!(
        events.lock().unwrap().last(),
        Some(&RetryEvent::GaveUp {
            attempts: 2,
            reason: GiveUp::Budget
        })
    );
    service.clone().oneshot(get("/")).await.unwrap();
    assert_eq!(upstream.calls(), 3);
    assert_eq!(events.lock().unwrap().len(), 2);
    // A window later the floor is back.
    tokio::time::advance(secs(1)).await;
    assert_eq!(budget.available(), 1);
    service.oneshot(get("/")).await.unwrap();
    assert_eq!(upstream.calls(), 5);
}

#[tokio::test(start_paused = true)]
async fn a_ratio_budget_allows_its_share_of_the_traffic() {
    let budget = RetryBudget::builder()
        .ratio(0.2)
        .min_per_second(0)
        .build()
        .unwrap();
    let layer = plain()
        .budget(budget.clone())
        .max_retries(1)
        .build()
        .unwrap();
    let stats = layer.clone();
    let upstream = Upstream::new([], status(503));
    let service = layer.layer(upstream.clone());
    for _ in 0..50 {
        service.clone().oneshot(get("/")).await.unwrap();
    }
    // 20 % of 50 requests: 10 retries, however many failed.
    assert_eq!(stats.stats().retries, 10);
    assert_eq!(upstream.calls(), 60);
    // Refused once per five requests: the others, sent while the budget was spent, were
    // sent once without keeping anything.
    assert_eq!(stats.stats().budget_exhausted, 10);
}

#[tokio::test(start_paused = true)]
async fn cancelling_mid_backoff_sends_no_further_attempt() {
    let upstream = Upstream::new([], status(503));
    let service = plain().build().unwrap().layer(upstream.clone());
    let call = tokio::spawn(service.oneshot(get("/")));
    // The first attempt fails; the layer waits 1 s.
    tokio::time::sleep(ms(500)).await;
    assert_eq!(upstream.calls(), 1);
    call.abort();
    assert!(call.await.unwrap_err().is_cancelled());
    tokio::time::sleep(secs(60)).await;
    assert_eq!(upstream.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_slow_attempt_times_out_and_is_retried() {
    let upstream = Upstream::new([Step::Hang], status(200));
    let layer = plain().attempt_timeout(ms(300)).build().unwrap();
    assert_eq!(status_of(layer, &upstream, get("/")).await, 200);
    // 300 ms of timeout, then the 1 s backoff.
    assert_eq!(upstream.times(), [ms(0), ms(1300)]);
}

#[tokio::test(start_paused = true)]
async fn the_deadline_bounds_all_attempts_and_waits() {
    let upstream = Upstream::new([], Step::Hang);
    let (events, sink) = recorder();
    let layer = plain()
        .attempt_timeout(secs(2))
        .deadline(secs(5))
        .on_event(sink)
        .build()
        .unwrap();
    let started = tokio::time::Instant::now();
    let err = layer
        .layer(upstream.clone())
        .oneshot(get("/"))
        .await
        .unwrap_err();
    // 0–2 s the first attempt, 3–5 s the second, cut by the deadline.
    assert_eq!(upstream.times(), [secs(0), secs(3)]);
    assert_eq!(started.elapsed(), secs(5));
    let timed_out = err.downcast_ref::<TimedOut>().unwrap();
    assert!(timed_out.is_deadline());
    assert_eq!(
        events.lock().unwrap().last(),
        Some(&RetryEvent::GaveUp {
            attempts: 2,
            reason: GiveUp::Deadline
        })
    );

    // A wait that would end past the deadline is not started.
    let upstream = Upstream::new([Step::Status(503, vec![("retry-after", "9")])], status(200));
    let layer = plain().deadline(secs(5)).build().unwrap();
    assert_eq!(status_of(layer, &upstream, get("/")).await, 503);
    assert_eq!(upstream.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_timeout_without_retries_is_still_enforced() {
    let upstream = Upstream::new([], Step::Hang);
    let layer = plain()
        .max_retries(0)
        .attempt_timeout(ms(100))
        .build()
        .unwrap();
    let err = layer.layer(upstream).oneshot(get("/")).await.unwrap_err();
    assert_eq!(err.to_string(), "attempt timed out after 100ms");
}

#[cfg(feature = "circuit-breaker")]
mod with_breaker {
    use super::*;
    use tower_bulwark::circuit_breaker::CircuitBreakerLayer;

    /// Retry outside, breaker inside: once the breaker opens, its 503 ends the retries.
    #[tokio::test(start_paused = true)]
    async fn an_open_breaker_is_never_hammered() {
        let upstream = Upstream::new([], status(503));
        let breaker = CircuitBreakerLayer::consecutive_failures(2)
            .open_for(secs(60))
            .clock(tower_bulwark::clock::TokioClock::new())
            .build()
            .unwrap();
        let (events, sink) = recorder();
        let retry = plain().max_retries(5).on_event(sink).build().unwrap();
        let client = tower::ServiceBuilder::new()
            .layer(retry)
            .layer(breaker)
            .service(upstream.clone());
        let res = client.oneshot(get("/")).await.unwrap();
        assert_eq!(res.status(), 503);
        // Two failures opened the breaker; the third attempt got its refusal and stopped.
        assert_eq!(upstream.calls(), 2);
        assert_eq!(events.lock().unwrap().len(), 2); // two retries, no give-up
        assert!(res.headers().contains_key("retry-after"));
    }

    /// The generic breaker's `CircuitOpen` error is not retried either.
    #[tokio::test(start_paused = true)]
    async fn a_circuit_open_error_is_not_retried() {
        let upstream = Upstream::new([], Step::Fail("down"));
        let breaker = CircuitBreakerLayer::consecutive_failures(1)
            .clock(tower_bulwark::clock::TokioClock::new())
            .build_generic()
            .unwrap();
        let (events, sink) = recorder();
        let client = tower::ServiceBuilder::new()
            .layer(plain().max_retries(5).on_event(sink).build().unwrap())
            .layer(breaker)
            .service(upstream.clone());
        let err = client.oneshot(get("/")).await.unwrap_err();
        assert!(err.to_string().contains("circuit breaker open"), "{err}");
        assert_eq!(upstream.calls(), 1);
        // One retry (the upstream's own error), then the refusal ends it: no second retry.
        assert_eq!(events.lock().unwrap().len(), 1);
    }
}

#[tokio::test(start_paused = true)]
async fn the_inner_service_is_made_ready_for_every_attempt() {
    // A concurrency limit of one: each attempt waits its turn instead of overrunning it.
    let upstream = Upstream::new([status(503)], status(200));
    let mut service = tower::ServiceBuilder::new()
        .layer(plain().build().unwrap())
        .concurrency_limit(1)
        .service(upstream.clone());
    let ready = ServiceExt::<Request<Full<Bytes>>>::ready(&mut service)
        .await
        .unwrap();
    let res = ready.call(get("/")).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(upstream.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_hedge_takes_the_first_answer_and_cancels_the_other() {
    let upstream = Upstream::new([Step::Slow(ms(500), 200)], Step::Slow(ms(20), 201));
    let (events, sink) = recorder();
    let layer = plain()
        .hedge(Hedge::after(ms(100)))
        .on_event(sink)
        .build()
        .unwrap();
    let stats = layer.clone();
    let started = tokio::time::Instant::now();
    assert_eq!(status_of(layer, &upstream, get("/")).await, 201);
    assert_eq!(started.elapsed(), ms(120)); // the hedge's answer, not the first copy's
    assert_eq!(upstream.times(), [ms(0), ms(100)]);
    tokio::time::sleep(secs(1)).await;
    assert_eq!(upstream.answered(), 1); // the slow copy was dropped, never finished
    assert_eq!(
        events.lock().unwrap()[..],
        [RetryEvent::Hedged { after: ms(100) }]
    );
    let stats = stats.stats();
    assert_eq!((stats.attempts, stats.hedges, stats.retries), (2, 1, 0));
}

#[tokio::test(start_paused = true)]
async fn a_failed_copy_waits_for_the_other() {
    // The hedge fails fast; the first copy's later success is the answer, with no retry.
    let upstream = Upstream::new([Step::Slow(ms(300), 200), status(503)], status(500));
    let layer = plain().hedge(Hedge::after(ms(100))).build().unwrap();
    let started = tokio::time::Instant::now();
    assert_eq!(status_of(layer, &upstream, get("/")).await, 200);
    assert_eq!(started.elapsed(), ms(300));
    assert_eq!(upstream.calls(), 2);

    // Both copies fail: the usual retry follows (1 s after the later failure).
    let upstream = Upstream::new([Step::Slow(ms(300), 503), status(503)], status(200));
    let layer = plain().hedge(Hedge::after(ms(100))).build().unwrap();
    assert_eq!(status_of(layer, &upstream, get("/")).await, 200);
    assert_eq!(upstream.times(), [ms(0), ms(100), ms(1300)]);
}

#[tokio::test(start_paused = true)]
async fn hedges_need_the_budget_and_a_replayable_request() {
    let spent = RetryBudget::builder()
        .ratio(0.0)
        .min_per_second(0)
        .build()
        .unwrap();
    let upstream = Upstream::new([], Step::Slow(ms(500), 200));
    let layer = RetryLayer::builder()
        .budget(spent)
        .hedge(Hedge::after(ms(100)))
        .build()
        .unwrap();
    assert_eq!(status_of(layer, &upstream, get("/")).await, 200);
    assert_eq!(upstream.calls(), 1);

    let upstream = Upstream::new([], Step::Slow(ms(500), 200));
    let layer = plain().hedge(Hedge::after(ms(100))).build().unwrap();
    assert_eq!(
        status_of(layer, &upstream, request("POST", &[], b"once")).await,
        200
    );
    assert_eq!(upstream.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_percentile_hedge_waits_for_enough_latencies() {
    // Ten fast calls in the first period; from the second, slow calls are hedged at the p50.
    let mut script: Vec<Step> = (0..10).map(|_| Step::Slow(ms(40), 200)).collect();
    script.push(Step::Slow(ms(900), 200)); // hedged
    script.push(Step::Slow(ms(10), 202)); // the hedge
    let upstream = Upstream::new(script, status(200));
    let layer = plain()
        .hedge(Hedge::at_percentile(50.0).min_samples(10))
        .build()
        .unwrap();
    let service = layer.clone().layer(upstream.clone());
    for _ in 0..10 {
        service.clone().oneshot(get("/")).await.unwrap();
    }
    assert_eq!(upstream.calls(), 10); // none hedged: no latencies to go by yet
    tokio::time::sleep(secs(10)).await;
    let started = tokio::time::Instant::now();
    let res = service.oneshot(get("/")).await.unwrap();
    assert_eq!(res.status(), 202);
    // Hedged at the p50 of 40 ms (to the histogram's three digits: 40.03 ms, a 41 ms tick),
    // answered 10 ms later.
    assert_eq!(started.elapsed(), ms(51));
    assert_eq!(layer.stats().hedges, 1);
}

#[test]
fn waits_longer_than_a_year_are_refused_at_build_not_overflowed_on_a_request() {
    let year = Duration::from_secs(365 * 24 * 3600);
    let check = |builder: tower_bulwark::retry::RetryLayerBuilder, field: &str| {
        assert_eq!(builder.build().unwrap_err().field(), field);
    };
    check(
        RetryLayer::builder().attempt_timeout(Duration::MAX),
        "attempt_timeout",
    );
    check(
        RetryLayer::builder().deadline(year + Duration::from_secs(1)),
        "deadline",
    );
    check(
        RetryLayer::builder().max_retry_after(Duration::MAX),
        "max_retry_after",
    );
    check(
        RetryLayer::builder()
            .backoff(tower_bulwark::retry::Backoff::exponential(secs(1)).cap(Duration::MAX)),
        "cap",
    );
    check(
        RetryLayer::builder().hedge(Hedge::after(Duration::MAX)),
        "hedge",
    );
    assert!(RetryLayer::builder().deadline(year).build().is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_failed_copy_in_hand_is_the_answer_when_time_runs_out() {
    // The first copy hangs; the hedge fails fast (503) and waits for it; the deadline comes:
    // the caller gets the 503 (with what it says), not a time-out.
    let upstream = Upstream::new([Step::Hang, status(503)], status(200));
    let layer = plain()
        .deadline(ms(300))
        .hedge(Hedge::after(ms(100)))
        .build()
        .unwrap();
    let started = tokio::time::Instant::now();
    assert_eq!(status_of(layer, &upstream, get("/")).await, 503);
    assert_eq!(started.elapsed(), ms(300));
    assert_eq!(upstream.calls(), 2);
}

/// 503 at once; ready for its first call only, then never again.
#[derive(Clone, Default)]
struct ReadyOnce(Arc<std::sync::atomic::AtomicUsize>);

impl tower::Service<Request<tower_bulwark::retry::RetryBody<Full<Bytes>>>> for ReadyOnce {
    type Response = http::Response<Full<Bytes>>;
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        if self.0.load(std::sync::atomic::Ordering::SeqCst) == 0 {
            std::task::Poll::Ready(Ok(()))
        } else {
            std::task::Poll::Pending
        }
    }

    fn call(
        &mut self,
        _req: Request<tower_bulwark::retry::RetryBody<Full<Bytes>>>,
    ) -> Self::Future {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let mut res = http::Response::new(Full::new(Bytes::new()));
        *res.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
        std::future::ready(Ok(res))
    }
}

#[tokio::test(start_paused = true)]
async fn the_deadline_counts_while_the_service_gets_ready() {
    let layer = plain().deadline(secs(3)).build().unwrap();
    let svc = layer.layer(ReadyOnce::default());
    let started = tokio::time::Instant::now();
    let outcome = tokio::time::timeout(secs(60), svc.oneshot(get("/"))).await;
    let err = outcome
        .expect("the request outlived its deadline")
        .unwrap_err();
    assert!(err.to_string().contains("deadline"), "{err}");
    assert_eq!(started.elapsed(), secs(3));
}
