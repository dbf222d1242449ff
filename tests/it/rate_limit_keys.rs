//! Keys through the HTTP layer: forged forwarding headers, malformed ones, missing keys, API
//! keys, and a flood of unique keys against the `max_keys` bound.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::common::*;
use http::{HeaderName, HeaderValue, StatusCode};
use tower::Layer;
use tower_bulwark::key::{ForwardingHeader, HeaderKey, Key, PeerIp, TrustedProxyIp};
use tower_bulwark::rate_limit::{Limit, MissingKey, RateLimitLayer};

const PROXY: [u8; 4] = [10, 0, 0, 1];

fn ip(octets: [u8; 4]) -> Key {
    Key::Ip(IpAddr::from(octets))
}

/// What `key` has left, read without spending (cost 0). Call it only for keys the backend
/// already holds: reading creates the key otherwise.
fn remaining(layer: &RateLimitLayer<impl Sized>, key: &Key) -> u64 {
    layer.backend().decide_now(key, 0).limits()[0].remaining()
}

#[tokio::test]
async fn forged_forwarded_for_entries_cannot_change_the_key() {
    let (_, layer) =
        limiter_on_clock(RateLimitLayer::fixed_window(2, secs(60)).key(TrustedProxyIp::new(1)));
    let mut svc = layer.layer(inner());
    // The trusted proxy appended 198.51.100.4; everything left of it came from the client.
    let forged = [
        "1.1.1.1, 198.51.100.4",
        "2.2.2.2, 198.51.100.4",
        "3.3.3.3,4.4.4.4 , 198.51.100.4",
    ];
    let mut statuses = Vec::new();
    for xff in forged {
        let res = ok(&mut svc, from_peer(PROXY, &[("x-forwarded-for", xff)])).await;
        statuses.push(res.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 429]);
    assert_eq!(remaining(&layer, &ip([198, 51, 100, 4])), 0);

    // Another client behind the same proxy has its own limit; the proxy has none.
    let res = ok(
        &mut svc,
        from_peer(PROXY, &[("x-forwarded-for", "198.51.100.4, 198.51.100.5")]),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(legacy(res.headers()).1, 1);
    assert_eq!(layer.backend().len(), 2);
}

#[tokio::test]
async fn forged_entries_behind_two_proxies_and_in_forwarded_share_one_limit() {
    let (_, layer) =
        limiter_on_clock(RateLimitLayer::fixed_window(10, secs(60)).key(TrustedProxyIp::new(2)));
    let mut svc = layer.layer(inner());
    for xff in [
        "6.6.6.6, 203.0.113.9, 10.0.0.2",
        "7.7.7.7, 203.0.113.9, 10.0.0.2",
        "203.0.113.9, 10.0.0.2",
    ] {
        let res = ok(&mut svc, from_peer(PROXY, &[("x-forwarded-for", xff)])).await;
        assert_eq!(res.status(), StatusCode::OK);
    }
    // Two header lines form one list.
    let mut req = from_peer(PROXY, &[("x-forwarded-for", "8.8.8.8, 203.0.113.9")]);
    req.headers_mut()
        .append("x-forwarded-for", HeaderValue::from_static("10.0.0.2"));
    ok(&mut svc, req).await;
    assert_eq!(remaining(&layer, &ip([203, 0, 113, 9])), 6);
    assert_eq!(layer.backend().len(), 1);

    let (_, fwd) = limiter_on_clock(
        RateLimitLayer::fixed_window(10, secs(60))
            .key(TrustedProxyIp::new(1).header(ForwardingHeader::Forwarded)),
    );
    let mut svc = fwd.layer(inner());
    for value in [
        "for=6.6.6.6, for=198.51.100.4",
        "for=7.7.7.7;proto=http, for=\"198.51.100.4\"",
        "for=198.51.100.4:4711;by=10.0.0.1",
    ] {
        let res = ok(&mut svc, from_peer(PROXY, &[("forwarded", value)])).await;
        assert_eq!(res.status(), StatusCode::OK);
    }
    assert_eq!(remaining(&fwd, &ip([198, 51, 100, 4])), 7);
    assert_eq!(fwd.backend().len(), 1);
}

#[tokio::test]
async fn malformed_forwarding_headers_fall_back_to_the_peer() {
    let peer = [10, 9, 9, 9];
    let (_, layer) =
        limiter_on_clock(RateLimitLayer::fixed_window(100, secs(60)).key(TrustedProxyIp::new(1)));
    let mut svc = layer.layer(inner());
    let bad = [
        "",
        ",",
        " , ,",
        "1.2.3.4,",
        "not-an-ip",
        "999.1.1.1",
        "[::1",
        "]:80",
        "1.2.3.4:99999",
        "\"",
        "unknown",
        "1.2.3.4 5.6.7.8",
    ];
    for value in bad {
        let res = ok(&mut svc, from_peer(peer, &[("x-forwarded-for", value)])).await;
        assert_eq!(res.status(), StatusCode::OK, "{value:?}");
    }
    let mut req = from_peer(peer, &[]);
    req.headers_mut().insert(
        "x-forwarded-for",
        HeaderValue::from_bytes(b"\xff\xfe1.2.3.4").unwrap(),
    );
    assert_eq!(ok(&mut svc, req).await.status(), StatusCode::OK);
    // No header at all: the peer too.
    assert_eq!(
        ok(&mut svc, from_peer(peer, &[])).await.status(),
        StatusCode::OK
    );

    assert_eq!(remaining(&layer, &ip(peer)), 100 - bad.len() as u64 - 2);
    assert_eq!(layer.backend().len(), 1);

    // Malformed and no peer either: the missing-key answer, not a panic.
    let res = ok(&mut svc, get_with("/", &[("x-forwarded-for", "garbage")])).await;
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(layer.stats().missing_key, 1);
}

#[tokio::test]
async fn a_missing_key_is_refused_with_500_json_by_default() {
    let calls = Arc::new(AtomicUsize::new(0));
    let (_, layer) = limiter_on_clock(RateLimitLayer::fixed_window(10, secs(60)).key(PeerIp));
    let mut svc = layer.layer(counting_inner(calls.clone()));
    let res = ok(&mut svc, get("/")).await;
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        header(res.headers(), "content-type"),
        Some("application/json")
    );
    assert_no_rate_limit_headers(res.headers());
    assert_eq!(
        body_text(res).await,
        r#"{"error":"Rate limit key missing"}"#
    );

    // gRPC: UNKNOWN for a 500 (gRPC's HTTP to gRPC status mapping).
    let res = ok(&mut svc, grpc_call("/")).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(res.headers(), "grpc-status"), Some("2"));
    assert_eq!(
        header(res.headers(), "grpc-message"),
        Some("Rate limit key missing")
    );

    assert_eq!(calls.load(Ordering::SeqCst), 0);
    let stats = layer.stats();
    assert_eq!(
        (stats.missing_key, stats.allowed, stats.rejected),
        (2, 0, 0)
    );
    assert!(layer.backend().is_empty());
}

#[tokio::test]
async fn a_missing_key_can_be_refused_with_400() {
    let (_, layer) = limiter_on_clock(
        RateLimitLayer::fixed_window(10, secs(60))
            .key(PeerIp)
            .on_missing_key(MissingKey::Reject(StatusCode::BAD_REQUEST)),
    );
    let mut svc = layer.layer(inner());
    let res = ok(&mut svc, get("/")).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        header(res.headers(), "content-type"),
        Some("application/json")
    );
    assert_eq!(
        body_text(res).await,
        r#"{"error":"Rate limit key missing"}"#
    );

    // gRPC: INTERNAL for a 400 (gRPC's HTTP to gRPC status mapping).
    let res = ok(&mut svc, grpc_call("/")).await;
    assert_eq!(header(res.headers(), "grpc-status"), Some("13"));

    // A request with a key is counted as usual.
    let res = ok(&mut svc, from_peer([192, 0, 2, 1], &[])).await;
    assert_eq!(legacy(res.headers()), (10, 9, 60));
}

#[tokio::test]
async fn a_missing_key_on_grpc_answers_the_code_grpc_maps_its_status_to() {
    let api_key = HeaderName::from_static("x-api-key");
    let grpc = |key: Option<&str>| {
        let mut headers = vec![("content-type", "application/grpc+proto")];
        headers.extend(key.map(|key| ("x-api-key", key)));
        post_with("/pkg.Svc/Method", &headers)
    };
    for (status, code) in [
        (StatusCode::UNAUTHORIZED, "16"),      // UNAUTHENTICATED
        (StatusCode::FORBIDDEN, "7"),          // PERMISSION_DENIED
        (StatusCode::NOT_FOUND, "12"),         // UNIMPLEMENTED
        (StatusCode::TOO_MANY_REQUESTS, "14"), // UNAVAILABLE: a 429 the user chose
    ] {
        let layer = RateLimitLayer::fixed_window(1, secs(60))
            .key(HeaderKey::new(api_key.clone()))
            .on_missing_key(MissingKey::Reject(status))
            .clock(clock())
            .build()
            .unwrap();
        let mut svc = layer.layer(inner());
        let res = ok(&mut svc, grpc(None)).await;
        assert_eq!(res.status(), StatusCode::OK, "{status}");
        assert_eq!(header(res.headers(), "grpc-status"), Some(code), "{status}");
        assert_eq!(
            header(res.headers(), "grpc-message"),
            Some("Rate limit key missing")
        );

        // The layer's own refusal keeps RESOURCE_EXHAUSTED, whatever the missing-key status.
        assert_eq!(
            ok(&mut svc, grpc(Some("k-1"))).await.status(),
            StatusCode::OK
        );
        let refused = ok(&mut svc, grpc(Some("k-1"))).await;
        assert_eq!(refused.status(), StatusCode::OK);
        assert_eq!(
            header(refused.headers(), "grpc-status"),
            Some("8"),
            "{status}"
        );
        // In any case (RFC 9110 §8.3.1).
        let upper = post_with(
            "/pkg.Svc/Method",
            &[("content-type", "APPLICATION/GRPC"), ("x-api-key", "k-1")],
        );
        let refused = ok(&mut svc, upper).await;
        assert_eq!(header(refused.headers(), "grpc-status"), Some("8"));
        assert_eq!(
            header(refused.headers(), "content-type"),
            Some("APPLICATION/GRPC")
        );
    }
}

#[tokio::test]
async fn a_missing_key_can_fall_back_to_the_global_key() {
    let api_key = HeaderName::from_static("x-api-key");
    let (_, layer) = limiter_on_clock(
        RateLimitLayer::fixed_window(2, secs(60))
            .key(HeaderKey::new(api_key))
            .on_missing_key(MissingKey::Fallback(Key::Global)),
    );
    let mut svc = layer.layer(inner());
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(ok(&mut svc, get("/")).await.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 429]);
    assert_eq!(remaining(&layer, &Key::Global), 0);
    // A keyed request has its own limit.
    let res = ok(&mut svc, get_with("/", &[("x-api-key", "k-1")])).await;
    assert_eq!(legacy(res.headers()), (2, 1, 60));
    assert_eq!(layer.stats().missing_key, 0);
}

#[tokio::test]
async fn each_api_key_has_its_own_limit() {
    let (_, layer) = limiter_on_clock(
        RateLimitLayer::sliding_window_log(2, secs(60))
            .key(HeaderKey::new(HeaderName::from_static("x-api-key"))),
    );
    let mut svc = layer.layer(inner());
    let mut statuses = Vec::new();
    for api_key in ["k-1", "k-1", "k-1", "k-2", "k-2", "k-2", "k-3"] {
        let res = ok(&mut svc, get_with("/", &[("x-api-key", api_key)])).await;
        statuses.push(res.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 429, 200, 200, 429, 200]);
    let key = |k: &'static str| Key::from(HeaderValue::from_static(k));
    assert_eq!(remaining(&layer, &key("k-1")), 0);
    assert_eq!(remaining(&layer, &key("k-3")), 1);
    assert_eq!(layer.backend().len(), 3);
}

#[tokio::test]
async fn an_empty_api_key_is_a_missing_key() {
    let layer = RateLimitLayer::fixed_window(1, secs(60))
        .key(HeaderKey::new(HeaderName::from_static("x-api-key")))
        .on_missing_key(MissingKey::Reject(StatusCode::UNAUTHORIZED))
        .clock(clock())
        .build()
        .unwrap();
    let mut svc = layer.layer(inner());
    // Two clients sending the header empty (or blank) share no bucket: each gets the
    // missing-key answer, none is counted.
    for peer in [[192, 0, 2, 1], [192, 0, 2, 2]] {
        for blank in ["", " ", "\t "] {
            let res = ok(&mut svc, from_peer(peer, &[("x-api-key", blank)])).await;
            assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{blank:?}");
            assert_no_rate_limit_headers(res.headers());
            assert_eq!(
                body_text(res).await,
                r#"{"error":"Rate limit key missing"}"#
            );
        }
    }
    assert!(layer.backend().is_empty());
    let stats = layer.stats();
    assert_eq!(
        (stats.missing_key, stats.allowed, stats.rejected),
        (6, 0, 0)
    );
    // A real key is still counted.
    let res = ok(&mut svc, get_with("/", &[("x-api-key", "k-1")])).await;
    assert_eq!(legacy(res.headers()), (1, 0, 60));
}

/// The n-th distinct client IP.
fn nth_ip(n: u32) -> [u8; 4] {
    let [_, a, b, c] = n.to_be_bytes();
    [10, a, b, c]
}

#[tokio::test]
async fn a_flood_of_unique_keys_stays_within_max_keys() {
    let (clock, layer) = limiter_on_clock(
        RateLimitLayer::fixed_window(10, secs(60))
            .key(PeerIp)
            .max_keys(1_000),
    );
    let mut svc = layer.layer(inner());

    let (mut admitted, mut refused) = (0, 0);
    for n in 0..50_000 {
        match ok(&mut svc, from_peer(nth_ip(n), &[])).await.status() {
            StatusCode::OK => admitted += 1,
            StatusCode::TOO_MANY_REQUESTS => refused += 1,
            other => panic!("unexpected {other}"),
        }
    }
    let backend = layer.backend();
    assert_eq!(backend.len(), 1_000);
    // 1 000 keys got their own slot; the other 49 000 share the 15 overflow entries of a
    // store of 1 000 (one per 64 keys), each of which admits 10.
    assert_eq!(backend.overflowed(), 49_000);
    assert_eq!((admitted, refused), (1_150, 48_850));
    assert_eq!(
        (layer.stats().allowed, layer.stats().rejected),
        (1_150, 48_850)
    );

    // Keys that fit kept their own limit: the flood did not evict or reset them.
    let res = ok(&mut svc, from_peer(nth_ip(0), &[])).await;
    assert_eq!(legacy(res.headers()), (10, 8, 60));
    assert_eq!(backend.overflowed(), 49_000);

    // A period later every key is idle: the next new key sweeps them and gets its own slot.
    clock.set(secs(60));
    let res = ok(&mut svc, from_peer(nth_ip(60_000), &[])).await;
    assert_eq!(legacy(res.headers()), (10, 9, 60));
    assert_eq!(backend.len(), 1);
    assert_eq!(backend.overflowed(), 49_000);
    for n in 60_001..61_000 {
        let res = ok(&mut svc, from_peer(nth_ip(n), &[])).await;
        assert_eq!(legacy(res.headers()).1, 9);
    }
    assert_eq!(backend.len(), 1_000);
    let res = ok(&mut svc, from_peer(nth_ip(61_000), &[])).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(backend.len(), 1_000);
    assert_eq!(backend.overflowed(), 49_001);
}

#[test]
fn a_flood_on_the_lock_free_token_bucket_stays_within_max_keys() {
    let (clock, layer) =
        limiter_on_clock(RateLimitLayer::token_bucket(1, secs(60)).max_keys(1_000));
    let backend = layer.backend();
    let admitted = (0..50_000u64)
        .filter(|&n| backend.decide_now(&Key::Int(n), 1).allowed())
        .count();
    // 1 000 own keys, and one token in each of the 15 overflow entries.
    assert_eq!(admitted, 1_015);
    assert_eq!(backend.len(), 1_000);
    assert_eq!(backend.overflowed(), 49_000);

    clock.set(secs(60));
    assert!(backend.decide_now(&Key::Int(100_000), 1).allowed());
    assert_eq!(backend.len(), 1);
    assert_eq!(backend.overflowed(), 49_000);
}

/// A flood of made-up keys at `max_keys` does not lock a new, honest client out: it shares
/// its overflow entry with a slice of the flood only, and once the flood's keys have aged out
/// (one emission after their one request) a newcomer gets an entry of its own.
#[test]
fn a_flood_at_max_keys_does_not_lock_newcomers_out() {
    let clock = clock();
    // 10 per minute, bursts of 10: a key used once is idle again after 6 s.
    let layer = RateLimitLayer::token_bucket(10, secs(60))
        .max_keys(6_400) // 100 overflow entries
        .clock(clock.clone())
        .build()
        .unwrap();
    let backend = layer.backend();
    // The flood fills the store at t = 0 ...
    for n in 0..6_400u64 {
        assert!(backend.decide_now(&Key::Int(n), 1).allowed());
    }
    assert_eq!(backend.len(), 6_400);
    // ... and goes on with 10 new keys a second.
    let (mut next, mut at_ms) = (1_000_000u64, 0u64);
    let mut flood_until = |until_ms: u64| {
        while at_ms < until_ms {
            at_ms += 100;
            clock.set(std::time::Duration::from_millis(at_ms));
            backend.decide_now(&Key::Int(next), 1);
            next += 1;
        }
    };
    flood_until(3_000);
    // At 3 s the store is full of live keys: the newcomer overflows, yet is admitted (one
    // overflow entry for everyone would have been drained by the flood long ago).
    let overflowed = backend.overflowed();
    assert!(backend.decide_now(&Key::Int(u64::MAX), 1).allowed());
    assert_eq!(backend.overflowed(), overflowed + 1);
    // From 6 s the first keys are idle: a full store sweeps them within an emission, and
    // the next newcomer gets an entry of its own.
    flood_until(20_000);
    let overflowed = backend.overflowed();
    let verdict = backend.decide_now(&Key::Int(u64::MAX - 1), 1);
    assert!(verdict.allowed());
    assert_eq!(verdict.limits()[0].remaining(), 9);
    assert_eq!(
        backend.overflowed(),
        overflowed,
        "it got an entry of its own"
    );
    assert!(backend.len() < 6_400);
}

/// Sweeping drops only idle keys: a client still inside its window keeps its count.
#[tokio::test]
async fn sweeping_keeps_live_keys() {
    let (clock, layer) = limiter_on_clock(
        RateLimitLayer::builder()
            .limit(Limit::sliding_window_log(2, secs(60)))
            .key(PeerIp)
            .max_keys(3),
    );
    let mut svc = layer.layer(inner());
    let (a, b, c, d, e) = (nth_ip(1), nth_ip(2), nth_ip(3), nth_ip(4), nth_ip(5));
    ok(&mut svc, from_peer(b, &[])).await;
    ok(&mut svc, from_peer(c, &[])).await;
    clock.set(secs(30));
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(ok(&mut svc, from_peer(a, &[])).await.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 429]);
    // Full, and no key is idle yet: d shares the overflow slot.
    assert_eq!(
        ok(&mut svc, from_peer(d, &[])).await.status(),
        StatusCode::OK
    );
    assert_eq!(layer.backend().overflowed(), 1);

    clock.set(secs(60));
    // b and c left their windows; a did not.
    let res = ok(&mut svc, from_peer(e, &[])).await;
    assert_eq!(legacy(res.headers()), (2, 1, 60));
    assert_eq!(layer.backend().len(), 2);
    let res = ok(&mut svc, from_peer(a, &[])).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(res.headers(), "retry-after"), Some("30"));
    assert_eq!(layer.backend().overflowed(), 1);
}
