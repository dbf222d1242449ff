//! The AWS "Exponential Backoff And Jitter" experiment (Marc Brooker, 2015), re-run through
//! this crate's retry layer on paused Tokio time: N clients start at once, each wanting one
//! write to a resource guarded by optimistic concurrency. A write takes 10 ms and succeeds only
//! if no other write overlapped it; otherwise the resource answers 503 and the client retries
//! after its backoff (base 10 ms, doubling, capped at 1 s, up to 100 retries, no budget).
//!
//! For each jitter mode, and for retrying at once (no backoff), it prints the writes the
//! resource saw (calls), when the last client was done (written, or given up after its 100
//! retries), and how many gave up, for N = 10, 50 and 100. Time is
//! Tokio's paused clock and the random source is seeded, so every run prints the same table.
//!
//! ```text
//! cargo run --example backoff_simulation --features retry
//! ```

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Empty;
use tower::{Layer, ServiceExt};
use tower_bulwark::retry::{Backoff, Jitter, RetryBody, RetryLayer, SeededRandom};

/// How long one write holds the resource.
const WRITE: Duration = Duration::from_millis(10);

/// The contended resource: which writes are running, and whether each has been overlapped.
#[derive(Default)]
struct Resource {
    running: HashMap<u64, bool>,
    next_id: u64,
    calls: u64,
}

async fn write(resource: Arc<Mutex<Resource>>) -> StatusCode {
    let id = {
        let mut r = resource.lock().unwrap_or_else(|e| e.into_inner());
        r.calls += 1;
        r.next_id += 1;
        let id = r.next_id;
        let contended = !r.running.is_empty();
        // Every running write is overlapped by this one, and this one by them.
        for overlapped in r.running.values_mut() {
            *overlapped = true;
        }
        r.running.insert(id, contended);
        id
    };
    tokio::time::sleep(WRITE).await;
    let mut r = resource.lock().unwrap_or_else(|e| e.into_inner());
    match r.running.remove(&id) {
        Some(false) => StatusCode::OK,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// One run: `clients` clients through one retry layer with `backoff`; (calls, completion, gave up).
async fn run(clients: usize, backoff: Backoff, seed: u64) -> (u64, Duration, usize) {
    let resource = Arc::new(Mutex::new(Resource::default()));
    let layer = RetryLayer::builder()
        .backoff(backoff)
        .max_retries(100)
        .no_budget()
        .random(SeededRandom::new(seed))
        .build()
        .expect("a valid retry configuration");
    let service = layer.layer(tower::service_fn({
        let resource = resource.clone();
        move |_req: Request<RetryBody<Empty<Bytes>>>| {
            let resource = resource.clone();
            async move {
                let mut response = Response::new(());
                *response.status_mut() = write(resource).await;
                Ok::<_, Infallible>(response)
            }
        }
    }));
    let started = tokio::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let service = service.clone();
        tasks.spawn(async move {
            let request = Request::put("/resource").body(Empty::<Bytes>::new());
            let status = match request {
                Ok(request) => service.oneshot(request).await.map(|r| r.status()),
                Err(err) => Err(err.into()),
            };
            (status.ok() == Some(StatusCode::OK), started.elapsed())
            // (A client that gave up is done too: its time counts.)
        });
    }
    let (mut done, mut gave_up) = (Duration::ZERO, 0);
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((succeeded, at)) => {
                done = done.max(at);
                gave_up += usize::from(!succeeded);
            }
            Err(_) => gave_up += 1,
        }
    }
    let calls = resource.lock().unwrap_or_else(|e| e.into_inner()).calls;
    (calls, done, gave_up)
}

fn modes() -> Vec<(&'static str, Backoff)> {
    let exponential = Backoff::exponential(Duration::from_millis(10)).cap(Duration::from_secs(1));
    vec![
        // Retrying at once: the shortest wait there is (Tokio timers tick in milliseconds).
        (
            "no backoff",
            Backoff::exponential(Duration::from_millis(1))
                .multiplier(1.0)
                .cap(Duration::from_millis(1))
                .jitter(Jitter::None),
        ),
        ("exponential, no jitter", exponential.jitter(Jitter::None)),
        ("full jitter", exponential.jitter(Jitter::Full)),
        ("equal jitter", exponential.jitter(Jitter::Equal)),
        (
            "decorrelated jitter",
            exponential.jitter(Jitter::Decorrelated),
        ),
    ]
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a Tokio runtime");
    println!("| clients | mode | calls | completion | gave up |");
    println!("|---:|---|---:|---:|---:|");
    for clients in [10, 50, 100] {
        for (name, backoff) in modes() {
            let (calls, done, gave_up) = runtime.block_on(run(clients, backoff, 42));
            println!(
                "| {clients} | {name} | {calls} | {} ms | {gave_up} |",
                done.as_millis()
            );
        }
    }
}
