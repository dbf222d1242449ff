//! The resilient client: a real hyper-util `Client` behind a circuit breaker, behind a retry
//! layer (retry outside, breaker inside, as the guides build it), printing every attempt.
//!
//! ```text
//! cargo run --example client_resilient --features retry,circuit-breaker,axum-body
//! cargo run --example client_resilient --features retry,circuit-breaker,axum-body -- http://127.0.0.1:3000/api/limited
//! ```
//!
//! Without an argument it starts a flaky server of its own on a free port (two 503s, the
//! second with `Retry-After: 1`, then a 200; and a route that always fails) and calls it: the
//! first request heals after two retries, the second is retried until the breaker opens, and
//! the breaker's refusal is not retried. With a URL it calls that URL five times instead: point
//! it at the demo's `/api/limited` and the 429s are retried after their `Retry-After`.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::{Layer, ServiceExt};
use tower_bulwark::circuit_breaker::CircuitBreakerLayer;
use tower_bulwark::response::ResponseBody;
use tower_bulwark::retry::{Backoff, RetryBody, RetryLayer};
use tower_http::map_response_body::MapResponseBodyLayer;

/// A server that fails the first two calls to `/flaky` (the second says when to come back),
/// then answers; `/down` always fails.
async fn flaky_server() -> Result<SocketAddr, Box<dyn std::error::Error>> {
    let calls = Arc::new(AtomicU64::new(0));
    let app = Router::new()
        .route(
            "/flaky",
            get(move || {
                let call = calls.fetch_add(1, Ordering::Relaxed) + 1;
                async move {
                    match call {
                        1 => StatusCode::SERVICE_UNAVAILABLE.into_response(),
                        2 => (
                            StatusCode::SERVICE_UNAVAILABLE,
                            [(header::RETRY_AFTER, "1")],
                        )
                            .into_response(),
                        _ => format!("ok after {call} calls\n").into_response(),
                    }
                }
            }),
        )
        .route("/down", get(|| async { StatusCode::BAD_GATEWAY }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    support::init_logging();

    // The client every attempt goes through: hyper-util's, on plain HTTP.
    let client = Client::builder(TokioExecutor::new()).build_http::<RetryBody<Full<Bytes>>>();
    // The breaker inside (3 failures in a row open it for 30 s); its answers' bodies are
    // hyper's `Incoming`, wrapped so the breaker can see where each body ends.
    let breaker = CircuitBreakerLayer::consecutive_failures(3)
        .open_for(Duration::from_secs(30))
        .build()?;
    // The retry layer outside: 3 retries, 200 ms doubling, full jitter, the default budget.
    let started = Instant::now();
    let retry = RetryLayer::builder()
        .backoff(Backoff::exponential(Duration::from_millis(200)))
        .on_event(move |event| println!("  [{:>5} ms] {event}", started.elapsed().as_millis()))
        .build()?;
    let resilient =
        retry.layer(breaker.layer(MapResponseBodyLayer::new(ResponseBody::inner).layer(client)));

    let targets: Vec<String> = match std::env::args().nth(1) {
        Some(url) => std::iter::repeat_n(url, 5).collect(),
        None => {
            let addr = flaky_server().await?;
            let base = format!("http://{addr}");
            println!("a flaky server of its own on {base}");
            vec![
                format!("{base}/flaky"),
                format!("{base}/down"),
                format!("{base}/down"),
            ]
        }
    };
    for url in targets {
        println!("GET {url}");
        let request = Request::get(url.as_str()).body(Full::<Bytes>::default())?;
        match resilient.clone().oneshot(request).await {
            Ok(response) => {
                let status = response.status();
                let body = response.into_body().collect().await?.to_bytes();
                println!("  => {status} {}", String::from_utf8_lossy(&body).trim());
            }
            Err(error) => println!("  => error: {error}"),
        }
    }
    let stats = retry.stats();
    println!(
        "requests {}, attempts {}, retries {}, given up {}; breaker {:?}",
        stats.requests,
        stats.attempts,
        stats.retries,
        stats.given_up,
        breaker.circuit().state()
    );
    Ok(())
}
