//! The crate's main job, in one server: every layer that exists so far, in memory.
//!
//! ```text
//! cargo run --release --example demo
//! ```
//!
//! Listens on `BULWARK_ADDR` (default `127.0.0.1:3000`) and prints its routes with a curl line
//! for each.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::routing::get;
use axum::Router;
use tower_bulwark::key::{self, Key};
use tower_bulwark::rate_limit::{Limit, RateLimitLayer};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr: SocketAddr = std::env::var("BULWARK_ADDR")
        .unwrap_or_else(|_| "127.0.0.1:3000".to_owned())
        .parse()?;

    // Key by the TCP peer's IP. (With the crate's `axum` feature, `key::PeerIp` does this.)
    let peer_ip = || {
        key::from_fn(|req: &http::request::Parts| {
            req.extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|info| Key::Ip(info.0.ip()))
        })
    };

    // 5 requests at once per client, then one every 2 seconds.
    let limited = RateLimitLayer::token_bucket(5, Duration::from_secs(10))
        .key(peer_ip())
        .build()?;

    // Two limits at once, all-or-nothing: 2 per second and 20 per minute per client.
    let orders = RateLimitLayer::builder()
        .limit(Limit::sliding_window_log(2, Duration::from_secs(1)).name("per-second"))
        .limit(Limit::sliding_window_counter(20, Duration::from_secs(60)).name("per-minute"))
        .key(peer_ip())
        .build()?;

    let app = Router::new()
        .route(
            "/",
            get(|| async { "tower-bulwark demo: see the routes printed at start-up\n" }),
        )
        .route(
            "/api/limited",
            get(|| async { "ok: a token bucket, 5 at once then 1 every 2 s\n" }).layer(limited),
        )
        .route("/api/orders", get(|| async { "[]\n" }).layer(orders));

    let listener = tokio::net::TcpListener::bind(addr).await?;
    let base = format!("http://{}", listener.local_addr()?);
    println!("tower-bulwark demo listening on {base} (in memory)\n");
    println!("  GET /              no limit");
    println!("      curl -i {base}/");
    println!("  GET /api/limited   token bucket: 5 at once per client, then 1 every 2 s; the 6th quick call is a 429");
    println!("      for i in $(seq 6); do curl -s -o /dev/null -w '%{{http_code}}\\n' {base}/api/limited; done");
    println!("  GET /api/orders    2 per second AND 20 per minute per client (sliding log + sliding counter)");
    println!("      curl -i {base}/api/orders");
    println!("\nPress Ctrl-C to stop.");

    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}
