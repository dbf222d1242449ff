//! An axum route calling a flaky upstream through a circuit breaker.
//!
//! ```text
//! cargo run --example axum_circuit_breaker
//! ```
//!
//! The "upstream" is simulated in-process: `POST /upstream/down` makes it fail (500),
//! `POST /upstream/up` heals it. `GET /api/quote` calls it through the breaker; `GET /breaker`
//! shows the breaker's state and counts. After 3 failures in a row the breaker opens for 10 s:
//! `/api/quote` answers 503 with `Retry-After` at once, without calling the upstream. Then one
//! probe at a time goes through; 2 successes close it again.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::routing::{get, post};
use axum::Router;
use http::{Request, Response, StatusCode};
use tower::service_fn;
use tower_bulwark::circuit_breaker::CircuitBreakerLayer;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    support::init_logging();

    let addr: SocketAddr = std::env::var("BULWARK_ADDR")
        .unwrap_or_else(|_| "127.0.0.1:3001".to_owned())
        .parse()?;
    let upstream_down = Arc::new(AtomicBool::new(false));

    let breaker = CircuitBreakerLayer::consecutive_failures(3)
        .open_for(Duration::from_secs(10))
        .half_open_successes(2)
        .on_event(|event| println!("breaker event: {event:?}"))
        .build()?;

    // The upstream, as a tower service (in a real app: a hyper or reqwest client service).
    let down = upstream_down.clone();
    let upstream = service_fn(move |_: Request<Body>| {
        let down = down.load(Ordering::Relaxed);
        async move {
            let (status, text) = if down {
                (StatusCode::INTERNAL_SERVER_ERROR, "upstream failed\n")
            } else {
                (StatusCode::OK, "a quote from upstream\n")
            };
            let mut res = Response::new(Body::from(text));
            *res.status_mut() = status;
            Ok::<_, Infallible>(res)
        }
    });

    let state = breaker.clone();
    // The breaker wraps the whole upstream service (`route_service`), so every method reaches the
    // upstream through it and no 405 is answered here. (On a method router, wrap it with
    // `route_layer`, as the rate-limit examples do; a 405 is a 4xx, never a breaker failure.)
    let app = Router::new()
        .route_service("/api/quote", tower::Layer::layer(&breaker, upstream))
        .route(
            "/breaker",
            get(move || {
                let circuit = state.circuit();
                let text = format!(
                    "state: {}\n{:?}\n",
                    circuit.state().as_str(),
                    circuit.stats()
                );
                async move { text }
            }),
        )
        .route("/upstream/down", post(set_down))
        .route("/upstream/up", post(set_up))
        .with_state(upstream_down);

    let listener = tokio::net::TcpListener::bind(addr).await?;
    let base = format!("http://{}", listener.local_addr()?);
    println!("circuit breaker example on {base}");
    println!("  curl -i {base}/api/quote            # 200 through the breaker");
    println!("  curl -X POST {base}/upstream/down    # the upstream starts failing");
    println!("  for i in $(seq 5); do curl -s -o /dev/null -w '%{{http_code}}\\n' {base}/api/quote; done   # 500 500 500 503 503");
    println!("  curl {base}/breaker                  # state: open");
    println!("  curl -X POST {base}/upstream/up; sleep 10; curl -i {base}/api/quote   # a probe, then closed after 2");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

async fn set_down(State(down): State<Arc<AtomicBool>>) -> &'static str {
    down.store(true, Ordering::Relaxed);
    "upstream is down\n"
}

async fn set_up(State(down): State<Arc<AtomicBool>>) -> &'static str {
    down.store(false, Ordering::Relaxed);
    "upstream is up\n"
}
