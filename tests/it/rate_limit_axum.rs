//! The layer on an axum `Router`, with no `HandleErrorLayer`: a refusal is a real 429 response.

use std::time::Duration;

use axum::body::Body;
use axum::routing::get;
use axum::Router;
use http::{Request, StatusCode};
use tower::{ServiceBuilder, ServiceExt};
use tower_bulwark::clock::ManualClock;
use tower_bulwark::rate_limit::{Limit, RateLimitLayer};

async fn send(app: &Router, req: Request<Body>) -> (StatusCode, http::HeaderMap, String) {
    let res = app.clone().oneshot(req).await.unwrap();
    let (parts, body) = res.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    (
        parts.status,
        parts.headers,
        String::from_utf8(bytes.to_vec()).unwrap(),
    )
}

fn get_req(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

fn header<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).map(|v| v.to_str().unwrap())
}

#[tokio::test]
async fn router_layer_answers_429_after_the_limit() {
    let clock = ManualClock::new();
    let limit = RateLimitLayer::fixed_window(2, Duration::from_secs(60))
        .clock(clock.clone())
        .build()
        .unwrap();
    let app = Router::new()
        .route("/hello", get(|| async { "hello" }))
        .layer(limit.clone());

    for remaining in ["1", "0"] {
        let (status, headers, body) = send(&app, get_req("/hello")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "hello");
        assert_eq!(header(&headers, "x-ratelimit-remaining"), Some(remaining));
        assert_eq!(header(&headers, "x-ratelimit-limit"), Some("2"));
    }
    clock.set(Duration::from_millis(30_500));
    let (status, headers, body) = send(&app, get_req("/hello")).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&headers, "content-type"), Some("application/json"));
    assert_eq!(header(&headers, "retry-after"), Some("30"));
    assert_eq!(header(&headers, "ratelimit"), Some(r#""default";r=0;t=30"#));
    assert_eq!(body, r#"{"error":"Too many requests","retryAfter":30}"#);

    // A router layer covers unmatched paths too: the fallback's 404 counts against the limit.
    let (status, _, _) = send(&app, get_req("/missing")).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);

    clock.set(Duration::from_secs(60));
    let (status, _, body) = send(&app, get_req("/hello")).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "hello"));
    let stats = limit.stats();
    assert_eq!((stats.allowed, stats.rejected), (3, 2));
}

#[tokio::test]
async fn route_layers_and_service_builder_stacks_limit_each_route() {
    let clock = ManualClock::new();
    let strict = RateLimitLayer::token_bucket(1, Duration::from_secs(10))
        .clock(clock.clone())
        .build()
        .unwrap();
    let both = RateLimitLayer::builder()
        .limit(Limit::sliding_window_log(3, Duration::from_secs(1)).name("per-second"))
        .limit(Limit::sliding_window_counter(4, Duration::from_secs(60)).name("per-minute"))
        .clock(clock.clone())
        .build()
        .unwrap();
    let app = Router::new()
        .route("/free", get(|| async { "free" }))
        .route("/strict", get(|| async { "strict" }).layer(strict))
        .route(
            "/orders",
            get(|| async { "[]" }).layer(ServiceBuilder::new().layer(both)),
        );

    let mut statuses = Vec::new();
    for path in [
        "/strict", "/strict", "/free", "/free", "/orders", "/orders", "/orders", "/orders",
    ] {
        statuses.push(send(&app, get_req(path)).await.0.as_u16());
    }
    assert_eq!(statuses, [200, 429, 200, 200, 200, 200, 200, 429]);

    clock.set(Duration::from_secs(1));
    let (status, headers, _) = send(&app, get_req("/orders")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        header(&headers, "ratelimit-policy"),
        Some(r#""per-second";q=3;w=1, "per-minute";q=4;w=60"#)
    );
    assert_eq!(
        header(&headers, "ratelimit"),
        Some(r#""per-second";r=2;t=1, "per-minute";r=0;t=119"#)
    );
    let (status, headers, _) = send(&app, get_req("/orders")).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    // The counter is full until the first window weighs 3 of its 4: 15 s into the next one.
    assert_eq!(header(&headers, "retry-after"), Some("74"));
    let (status, _, _) = send(&app, get_req("/free")).await;
    assert_eq!(status, StatusCode::OK);
}

/// With the crate's `axum` feature, `PeerIp` reads axum's `ConnectInfo<SocketAddr>`.
#[cfg(feature = "axum")]
#[tokio::test]
async fn peer_ip_reads_connect_info() {
    use axum::extract::ConnectInfo;
    use std::net::SocketAddr;
    use tower_bulwark::key::PeerIp;

    let limit = RateLimitLayer::fixed_window(1, Duration::from_secs(60))
        .key(PeerIp)
        .clock(ManualClock::new())
        .build()
        .unwrap();
    let app = Router::new()
        .route("/", get(|| async { "ok" }))
        .layer(limit.clone());
    let from = |octets: [u8; 4]| {
        let mut req = get_req("/");
        req.extensions_mut()
            .insert(ConnectInfo(SocketAddr::from((octets, 50_000))));
        req
    };
    let mut statuses = Vec::new();
    for peer in [[192, 0, 2, 1], [192, 0, 2, 1], [192, 0, 2, 2]] {
        statuses.push(send(&app, from(peer)).await.0.as_u16());
    }
    assert_eq!(statuses, [200, 429, 200]);
    // No ConnectInfo: the default missing-key answer.
    let (status, _, body) = send(&app, get_req("/")).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body, r#"{"error":"Rate limit key missing"}"#);
    assert_eq!(limit.backend().len(), 2);
}
