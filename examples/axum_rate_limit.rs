//! Per-IP and per-API-key limits on an axum router, with no `HandleErrorLayer`.
//!
//! ```text
//! cargo run --example axum_rate_limit --features axum
//! curl -i http://127.0.0.1:3001/public
//! curl -i -H 'x-api-key: k-123' http://127.0.0.1:3001/partner
//! ```
//!
//! * `/public`: 10 per minute per client IP (token bucket, bursts of 3). Behind a reverse proxy,
//!   swap `PeerIp` for `TrustedProxyIp::new(1)` so the key is the client, not the proxy.
//! * `/partner`: 100 per minute per API key (sliding window log). A request without the key is
//!   refused with 401 by the limiter itself.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use http::{HeaderName, StatusCode};
use tower_bulwark::key::{HeaderKey, PeerIp};
use tower_bulwark::rate_limit::{MissingKey, RateLimitLayer};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    support::init_logging();

    let per_ip = RateLimitLayer::token_bucket(10, Duration::from_secs(60))
        .burst(3)
        .key(PeerIp)
        .build()?;

    let per_api_key = RateLimitLayer::sliding_window_log(100, Duration::from_secs(60))
        .key(HeaderKey::new(HeaderName::from_static("x-api-key")))
        .on_missing_key(MissingKey::Reject(StatusCode::UNAUTHORIZED))
        .build()?;

    // `route_layer`, not `layer`: the limit wraps only the methods the route serves, so a POST
    // answered 405 spends no token (and a request without the key still gets the 405, not a 401).
    let app = Router::new()
        .route("/public", get(|| async { "public\n" }).route_layer(per_ip))
        .route(
            "/partner",
            get(|| async { "partner\n" }).route_layer(per_api_key),
        );

    let addr: SocketAddr = std::env::var("BULWARK_ADDR")
        .unwrap_or_else(|_| "127.0.0.1:3001".to_owned())
        .parse()?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(
        listener,
        // PeerIp reads the ConnectInfo this adds to every request.
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    Ok(())
}
