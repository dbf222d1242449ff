//! The crate's main job, in one server: every layer that exists so far (rate limits, a circuit
//! breaker, retries, HTTP caching with ETags and conditional requests, compression, latency
//! metrics), in memory.
//!
//! ```text
//! cargo run --release --example demo
//! ```
//!
//! Listens on `BULWARK_ADDR` (default `127.0.0.1:3000`) and prints its routes with a curl line
//! for each. The crate's `tracing` events go to stderr, filtered by `RUST_LOG` (default `info`):
//! breaker state changes, and the warnings when Redis stops or starts answering.
//!
//! With `REDIS_URL` set and the `redis` feature on, the two rate limits, the breaker and the
//! catalog's validator store share their state through Redis with every demo instance pointed at it. The demo waits up to 1 s
//! for Redis at start-up and says whether it answered; it starts either way. While Redis does
//! not answer, each instance decides alone: the limits at half (`FailMode::Local { instances:
//! 2 }`), the breaker from its own calls.
//!
//! ```text
//! REDIS_URL=redis://127.0.0.1:6379/ cargo run --release --example demo --features redis
//! ```

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::routing::get;
use axum::Router;
use http::{Request, Response, StatusCode};
use tower::{service_fn, Layer};
use tower_bulwark::cache::{CacheLayer, ValidatorStore};
use tower_bulwark::circuit_breaker::CircuitBreakerLayer;
use tower_bulwark::key::{self, Key};
use tower_bulwark::rate_limit::{Limit, RateLimitLayer};

/// `GET /api/resilient`: the handler calls an in-process upstream the way a server calls its
/// dependencies, through the resilient client stack: retry outside (jittered backoff from
/// 100 ms, 3 retries, a budget), a circuit breaker inside (3 failures in a row open it for
/// 10 s). The upstream fails every other call with a 503, so a request usually needs one
/// retry; with `?down` it always fails, and once the breaker opens the retry layer stops at
/// once instead of hammering it.
fn resilient() -> Result<axum::routing::MethodRouter, tower_bulwark::ConfigError> {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    use axum::response::IntoResponse;
    use bytes::Bytes;
    use http_body_util::Empty;
    use tower::ServiceExt;
    use tower_bulwark::retry::{Backoff, RetryBody, RetryLayer};

    let calls = Arc::new(AtomicU64::new(0));
    let upstream = service_fn(move |req: Request<RetryBody<Empty<Bytes>>>| {
        let call = calls.fetch_add(1, Ordering::Relaxed) + 1;
        let down = req.uri().query() == Some("down");
        async move {
            let failed = down || call % 2 == 1;
            let mut res = Response::new(Body::from(if failed {
                format!("upstream call {call} failed\n")
            } else {
                format!("ok: upstream call {call} answered (the one before it failed and was retried)\n")
            }));
            if failed {
                *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            }
            Ok::<_, std::convert::Infallible>(res)
        }
    });
    let breaker = CircuitBreakerLayer::consecutive_failures(3)
        .open_for(Duration::from_secs(10))
        .build()?;
    let retry = RetryLayer::builder()
        .backoff(Backoff::exponential(Duration::from_millis(100)).cap(Duration::from_secs(1)))
        .on_event(|event| tracing::info!(%event, "GET /api/resilient"))
        .build()?;
    let client = retry.layer(breaker.layer(upstream));
    Ok(get(move |uri: http::Uri| {
        let client = client.clone();
        async move {
            let target = match uri.query() {
                Some("down") => "http://upstream/?down",
                _ => "http://upstream/",
            };
            let request = Request::get(target).body(Empty::<Bytes>::new());
            match request {
                Ok(request) => match client.oneshot(request).await {
                    Ok(res) => res.map(Body::new).into_response(),
                    Err(err) => (StatusCode::BAD_GATEWAY, format!("{err}\n")).into_response(),
                },
                Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{err}\n")).into_response(),
            }
        }
    }))
}

/// `GET /api/catalog` (cached: `Cache-Control`, a strong ETag, `304` answered from the
/// validator store without running the handler) and `GET`/`PUT /api/profile` (a writable
/// resource guarded by `If-Match`: its current ETag is known before the handler, so a stale
/// write gets `412` and changes nothing).
fn cached_routes(store: ValidatorStore) -> Result<Router, tower_bulwark::ConfigError> {
    use std::sync::{Arc, RwLock};

    use bytes::Bytes;
    use tower_bulwark::cache::{CurrentEtag, EntityTag};

    let catalog = CacheLayer::max_age(Duration::from_secs(60))
        .public()
        .stale_while_revalidate(Duration::from_secs(30))
        .vary([http::header::ACCEPT_LANGUAGE])
        .validator_store(store)
        .build()?;
    let served = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let catalog_route = get(move || {
        // Counts the handler's runs: a 304 from the store never gets here.
        let n = served.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        tracing::info!(handler_runs = n, "GET /api/catalog ran its handler");
        async {
            (
                [(http::header::CONTENT_TYPE, "application/json")],
                "[{\"sku\":\"tea\",\"price\":4.5},{\"sku\":\"coffee\",\"price\":3.9}]\n",
            )
        }
    })
    .layer(catalog);

    let profile = Arc::new(RwLock::new(Bytes::from_static(b"{\"name\":\"Ada\"}\n")));
    let current = profile.clone();
    let guarded = CacheLayer::no_cache()
        .private()
        .current_etag(move |parts: &http::request::Parts| {
            if parts.uri.path() != "/api/profile" {
                return CurrentEtag::Unknown;
            }
            match current.read() {
                Ok(body) => CurrentEtag::Is(EntityTag::of_body(&body, false)),
                Err(_) => CurrentEtag::Unknown,
            }
        })
        .build()?;
    let (read, write) = (profile.clone(), profile);
    let profile_route = get(move || {
        let body = read.read().map(|b| b.clone()).unwrap_or_default();
        async move { ([(http::header::CONTENT_TYPE, "application/json")], body) }
    })
    .put(move |body: Bytes| {
        if let Ok(mut profile) = write.write() {
            *profile = body;
        }
        async { StatusCode::NO_CONTENT }
    })
    .layer(guarded);
    Ok(Router::new()
        .route("/api/catalog", catalog_route)
        .route("/api/profile", profile_route)
        .route("/api/report", report_route()?))
}

/// `GET /api/report`: a large JSON body (~40 KB), compressed in the encoding the client
/// prefers. The compression layer sits outside the cache layer: the cache tags the identity
/// body, and a compressed answer carries that tag with the coding appended (`"…-gzip"`),
/// which revalidates to a `304` like any other.
fn report_route() -> Result<axum::routing::MethodRouter, tower_bulwark::ConfigError> {
    use tower_bulwark::compression::CompressionLayer;

    let mut report = String::from("[");
    for day in 1..=365 {
        if day > 1 {
            report.push(',');
        }
        report.push_str(&format!(
            "{{\"day\":{day},\"orders\":{},\"revenue\":{}.50,\"region\":\"eu-west\"}}",
            day * 7 % 101,
            day * 131 % 977
        ));
    }
    report.push_str("]\n");
    let report = bytes::Bytes::from(report);
    let cached = CacheLayer::max_age(Duration::from_secs(300))
        .public()
        .build()?;
    let route: axum::routing::MethodRouter = get(move || {
        let report = report.clone();
        async move { ([(http::header::CONTENT_TYPE, "application/json")], report) }
    })
    .layer::<_, std::convert::Infallible>(cached)
    .layer(CompressionLayer::new());
    Ok(route)
}

/// `GET /api/slo`: the guides' objectives judged over the last minute of every route.
async fn slo_json(
    metrics: tower_bulwark::metrics::MetricsLayer,
) -> impl axum::response::IntoResponse {
    use tower_bulwark::metrics::{Slo, Verdict};
    let snapshot = metrics.latency();
    let report = Slo::default().check(&snapshot);
    let results: Vec<String> = report
        .results
        .iter()
        .map(|r| {
            let verdict = match r.verdict {
                Verdict::Pass => "pass",
                Verdict::Fail => "fail",
                _ => "no_data",
            };
            let measured = r.measured.map_or("null".to_owned(), |m| format!("{m}"));
            format!(
                "{{\"objective\":\"{:?}\",\"target\":{},\"measured\":{measured},\"verdict\":\"{verdict}\"}}",
                r.objective, r.target
            )
        })
        .collect();
    let body = format!(
        "{{\"window_seconds\":{},\"requests\":{},\"passed\":{},\"objectives\":[{}]}}\n",
        report.window.as_secs_f64(),
        report.count,
        report.passed(),
        results.join(",")
    );
    ([(http::header::CONTENT_TYPE, "application/json")], body)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    support::init_logging();

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
    let limited = RateLimitLayer::token_bucket(5, Duration::from_secs(10)).key(peer_ip());

    // Two limits at once, all-or-nothing: 2 per second and 20 per minute per client.
    let orders = RateLimitLayer::builder()
        .limit(Limit::sliding_window_log(2, Duration::from_secs(1)).name("per-second"))
        .limit(Limit::sliding_window_counter(20, Duration::from_secs(60)).name("per-minute"))
        .key(peer_ip());

    // A flaky upstream behind a circuit breaker: `?fail` makes the (simulated) upstream fail;
    // 3 failures in a row open the breaker for 10 s, during which every call gets a 503 at once.
    let breaker = CircuitBreakerLayer::consecutive_failures(3)
        .open_for(Duration::from_secs(10))
        .half_open_successes(2);
    let upstream = service_fn(|req: Request<Body>| async move {
        let fail = req
            .uri()
            .query()
            .is_some_and(|q| q.split('&').any(|p| p == "fail"));
        let mut res = Response::new(Body::from(if fail {
            "upstream failed\n"
        } else {
            "ok: from the upstream\n"
        }));
        if fail {
            *res.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        }
        Ok::<_, std::convert::Infallible>(res)
    });

    // The same routes whichever backend holds the limits and the breaker.
    //
    // The limits are `route_layer`s of each method router: they wrap only the methods it serves
    // (GET, and HEAD through it), so a POST or OPTIONS answered 405 spends no token. (`.layer`
    // would wrap the 405 fallback too.) The breaker wraps a whole service: every method reaches
    // the upstream through it, and there is no 405 to exclude.
    macro_rules! app {
        ($limited:expr, $orders:expr, $breaker:expr) => {
            Router::new()
                .route_service("/api/upstream", $breaker.layer(upstream))
                .route(
                    "/",
                    get(|| async { "tower-bulwark demo: see the routes printed at start-up\n" }),
                )
                .route(
                    "/api/limited",
                    get(|| async { "ok: a token bucket, 5 at once then 1 every 2 s\n" })
                        .route_layer($limited),
                )
                .route("/api/orders", get(|| async { "[]\n" }).route_layer($orders))
        };
    }

    let redis_url = std::env::var("REDIS_URL")
        .ok()
        .filter(|url| !url.is_empty());
    // What the banner says about where the state lives: a headline, then detail lines.
    let (app, state, details, store): (Router, &str, Vec<String>, ValidatorStore) = match redis_url
    {
        #[cfg(feature = "redis")]
        Some(url) => {
            use tower_bulwark::redis::{FailMode, RedisBackend};
            // Give Redis a moment to answer, so the banner can say whether it did. If it does
            // not, a lazy handle lets the demo start anyway and connects once Redis is up;
            // until then every decision is made by the fail mode (each instance alone).
            let connected =
                tokio::time::timeout(Duration::from_secs(1), RedisBackend::connect(&url)).await;
            let (redis, answered) = match connected {
                Ok(Ok(redis)) => (redis, Ok(())),
                Ok(Err(err)) => (RedisBackend::connect_lazy(&url)?, Err(err.to_string())),
                Err(_) => (
                    RedisBackend::connect_lazy(&url)?,
                    Err("no answer within 1 s".to_owned()),
                ),
            };
            // Redis away: each instance limits on its own, each limit and burst halved (as if
            // 2 instances shared them).
            let fail_mode = FailMode::Local { instances: 2 };
            let limited = limited
                .backend(redis.clone())
                .prefix("demo:limited")
                .fail_mode(fail_mode)
                .build()?;
            let orders = orders
                .backend(redis.clone())
                .prefix("demo:orders")
                .fail_mode(fail_mode)
                .build()?;
            // Failures seen by any instance open the breaker on all of them (each instance
            // still decides every call locally; it syncs with the fleet every 200 ms).
            // The catalog's validators, shared: a reader is answered 304 by any instance.
            let store = ValidatorStore::builder()
                .redis(redis.clone())
                .redis_prefix("demo:catalog")
                .build()?;
            let breaker = breaker
                .backend(redis)
                .prefix("demo:upstream")
                .sync_interval(Duration::from_millis(200))
                .build()?;
            let what = "the limits of /api/limited and /api/orders, the breaker of /api/upstream \
                        and the validators of /api/catalog";
            let alone = "each instance decides alone: /api/limited and /api/orders at half their \
                         limits (FailMode::Local { instances: 2 }), /api/upstream's breaker from \
                         its own calls";
            let app = app!(limited, orders, breaker);
            match answered {
                Ok(()) => (
                    app,
                    "Redis answered at start-up",
                    vec![
                        format!("{what} are shared through Redis at {url} with every demo instance pointed at it"),
                        format!("if Redis stops answering (50 ms deadline), {alone}; warnings on stderr say so"),
                    ],
                    store,
                ),
                Err(reason) => (
                    app,
                    "Redis not reachable yet: deciding locally until it is",
                    vec![
                        format!("Redis at {url} did not answer at start-up: {reason}"),
                        format!("until it answers, {alone}; warnings on stderr say when that changes"),
                        format!("once it answers, {what} are shared through it with every demo instance pointed at it"),
                    ],
                    store,
                ),
            }
        }
        other => {
            let mut details = Vec::new();
            if other.is_some() {
                details.push(
                    "REDIS_URL is set but this build has no `redis` feature: it is ignored"
                        .to_owned(),
                );
                details.push(
                    "run: REDIS_URL=... cargo run --release --example demo --features redis"
                        .to_owned(),
                );
            }
            (
                app!(limited.build()?, orders.build()?, breaker.build()?),
                "in memory",
                details,
                ValidatorStore::builder().build()?,
            )
        }
    };

    let app = app
        .route("/api/resilient", resilient()?)
        .merge(cached_routes(store)?);
    // Metrics on every route above (labelled by route template), served at /metrics; the
    // SLO report over the last minute at /api/slo.
    let registry = tower_bulwark::metrics::MetricsRegistry::new();
    let metrics = tower_bulwark::metrics::MetricsLayer::builder()
        .registry(&registry)
        .build()?;
    let slo_source = metrics.clone();
    let app = app
        .layer(metrics)
        .route_service("/metrics", registry.service())
        .route("/api/slo", get(move || slo_json(slo_source.clone())));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let base = format!("http://{}", listener.local_addr()?);
    println!("tower-bulwark demo listening on {base} ({state})");
    for line in &details {
        println!("  {line}");
    }
    println!();
    println!("  GET /              no limit");
    println!("      curl -i {base}/");
    println!("  GET /api/limited   token bucket: 5 at once per client, then 1 every 2 s; the 6th quick call is a 429");
    println!("      for i in $(seq 6); do curl -s -o /dev/null -w '%{{http_code}}\\n' {base}/api/limited; done");
    println!("  GET /api/orders    2 per second AND 20 per minute per client (sliding log + sliding counter)");
    println!("      curl -i {base}/api/orders");
    println!("  GET /api/upstream  a flaky upstream behind a circuit breaker: 3 failures open it for 10 s (503 + Retry-After)");
    println!("      for i in $(seq 4); do curl -s -o /dev/null -w '%{{http_code}}\\n' '{base}/api/upstream?fail'; done; curl -i {base}/api/upstream");
    println!("      run again after the 10 s: half-open, one failed probe reopens it (500 503 503 503); two calls without ?fail close it");
    println!("  GET /api/resilient a call to a flaky upstream through retry + breaker: every other upstream call fails (503) and is retried");
    println!("      curl -i {base}/api/resilient   # ?down: the upstream always fails; 3 retries, then the breaker opens and nothing is retried");
    println!("  GET /api/catalog   cached: Cache-Control, a strong ETag; asked again with it, a 304 from the validator store (the handler does not run)");
    println!("      tag=$(curl -si {base}/api/catalog | tr -d '\\r' | sed -n 's/^etag: //Ip'); curl -i {base}/api/catalog -H \"If-None-Match: $tag\"");
    println!("  PUT /api/profile   a write guarded by If-Match: the tag you read, or a 412 and nothing changes");
    println!("      tag=$(curl -si {base}/api/profile | tr -d '\\r' | sed -n 's/^etag: //Ip'); curl -i -X PUT {base}/api/profile -H \"If-Match: $tag\" -d '{{\"name\":\"Grace\"}}'");
    println!("      curl -i -X PUT {base}/api/profile -H 'If-Match: \"stale\"' -d '{{\"name\":\"Mallory\"}}'   # 412");
    println!("  GET /api/report    a 40 KB JSON report, compressed (gzip, deflate; br, zstd with their features) and tagged per encoding");
    println!("      curl -s --compressed -D - -o /dev/null {base}/api/report   # content-encoding, etag \"...-gzip\", vary: accept-encoding");
    println!("      curl -s -H 'x-no-compression: 1' {base}/api/report | wc -c   # the opt-out: the identity body");
    println!("  GET /metrics       Prometheus metrics of every route (OpenMetrics with Accept: application/openmetrics-text)");
    println!("      curl -s {base}/metrics | grep http_requests_total");
    println!("  GET /api/slo       the SLO check (p50 < 50 ms, p95 < 200 ms, p99 < 500 ms, errors < 0.1 %, availability >= 99.9 %) over the last minute");
    println!("      curl -s {base}/api/slo");
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
