//! The end-to-end cost harness's server: one axum route, `GET /json` (a 2 KiB JSON body), in
//! one of several modes: bare, each of this crate's layers alone, the whole stack, and the
//! peers configured alike. `scripts/e2e_cost.sh` runs every mode under callgrind (instructions
//! per request) and wrk (requests per second); see BENCHMARKS.md.
//!
//! ```text
//! cargo run --release --example bench_server --features axum -- rate-limit 127.0.0.1:3100
//! cargo run --release --example bench_server --features axum -- --list
//! ```
//!
//! The server runs on a current-thread Tokio runtime: one core, no work stealing, so that
//! instruction counts repeat from run to run and the load generator can have the other core.
//! It prints `ready <addr>` on stdout once it listens. Limits are never hit (10^9 per second)
//! except in the `*-refused` modes, where every request but the first is refused.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{BoxError, Router};
use bytes::Bytes;
use http::{header, HeaderValue, StatusCode};
use http_body_util::Full;
use tower::{Layer, ServiceBuilder, ServiceExt};
use tower_bulwark::circuit_breaker::CircuitBreakerLayer;
use tower_bulwark::key::PeerIp;
use tower_bulwark::rate_limit::RateLimitLayer;
use tower_bulwark::retry::{RetryBody, RetryLayer};

/// Every mode, in the order the script measures them, with what it serves. The second field
/// names the mode whose cost it is compared with ("over its baseline").
const MODES: &[(&str, &str, &str)] = &[
    ("bare", "", "axum alone"),
    (
        "set-header",
        "noop-layer",
        "tower-http's SetResponseHeaderLayer adding Cache-Control: max-age=3600 (a policy alone)",
    ),
    (
        "cache-policy",
        "noop-layer",
        "ours: the cache layer's policy alone (Cache-Control, Expires; no ETags)",
    ),
    (
        "cache",
        "noop-layer",
        "ours: the cache layer's defaults (Cache-Control, Expires, a strong ETag of the body)",
    ),
    (
        "cache-304",
        "noop-layer",
        "ours: every request revalidates (If-None-Match added by a MapRequestLayer, as noop-layer's): 304 judged on the handler's response",
    ),
    (
        "cache-store-304",
        "noop-layer",
        "ours: as cache-304, answered by the memory validator store before the handler",
    ),
    (
        "connect-info",
        "",
        "axum served with ConnectInfo<SocketAddr> (the keyed rows' baseline)",
    ),
    (
        "noop-layer",
        "bare",
        "a layer that does nothing (tower's MapRequestLayer): what any layer costs in axum",
    ),
    (
        "noop-wrapped-body",
        "noop-layer",
        "a layer that only wraps the response body (in this crate's ResponseBody)",
    ),
    (
        "governor",
        "connect-info",
        "tower_governor, peer IP, no headers",
    ),
    (
        "governor-headers",
        "connect-info",
        "tower_governor with its x-ratelimit-* headers",
    ),
    (
        "rate-limit",
        "connect-info",
        "ours: token bucket, PeerIp, default headers (5)",
    ),
    (
        "rate-limit-no-headers",
        "connect-info",
        "ours: token bucket, PeerIp, headers off",
    ),
    (
        "rate-limit-refused",
        "connect-info",
        "ours: token bucket of 1 a minute, PeerIp: every request but the first refused (429)",
    ),
    (
        "breaker",
        "bare",
        "ours: circuit breaker, consecutive failures, closed",
    ),
    (
        "breaker-open",
        "bare",
        "ours: circuit breaker, forced open (every request 503)",
    ),
    (
        "stack",
        "connect-info",
        "ours: rate limit (default headers) + circuit breaker",
    ),
    (
        "resilience",
        "bare",
        "tower-resilience breaker + rate limiter behind HandleErrorLayer",
    ),
    (
        "metrics",
        "noop-layer",
        "ours: the metrics layer's defaults (histogram, counter, in-flight gauge by MatchedPath; sliding window)",
    ),
    (
        "axum-prometheus",
        "noop-layer",
        "axum-prometheus 0.10 (metrics + metrics-exporter-prometheus): its PrometheusMetricLayer",
    ),
    (
        "tower-http-gzip",
        "noop-layer",
        "tower-http's CompressionLayer, gzip level 6 (a fresh compressor per response)",
    ),
    (
        "compression",
        "noop-layer",
        "ours: the compression layer's defaults, gzip level 6 (a compressor reused per thread)",
    ),
    (
        "tower-http-identity",
        "noop-layer",
        "tower-http's CompressionLayer, the request's Accept-Encoding removed (nothing compressed)",
    ),
    (
        "compression-identity",
        "noop-layer",
        "ours: as tower-http-identity (Vary added, body passed on)",
    ),
    (
        "upstream-call",
        "bare",
        "the handler gets the JSON from an in-process upstream service (oneshot): the retry rows' baseline",
    ),
    (
        "retry",
        "upstream-call",
        "ours: the upstream call through RetryLayer (defaults: 3 retries, budget), no retry needed",
    ),
    (
        "tower-retry",
        "upstream-call",
        "tower::retry around the upstream call: a policy cloning the request, with a TpsBudget",
    ),
];

/// Never hit: 10^9 per second.
const HIGH: u64 = 1_000_000_000;

fn json_body() -> &'static [u8] {
    // 2 KiB of JSON, built once.
    static BODY: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BODY.get_or_init(|| {
        let mut body = String::from("{\"items\":[");
        let mut i = 0;
        while body.len() < 2048 - 64 {
            if i > 0 {
                body.push(',');
            }
            body.push_str(&format!(
                "{{\"id\":{i},\"name\":\"item-{i:04}\",\"ok\":true}}"
            ));
            i += 1;
        }
        body.push_str("]}");
        while body.len() < 2048 {
            body.insert(body.len() - 1, ' ');
        }
        body.into_bytes()
    })
}

async fn json() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        json_body(),
    )
        .into_response()
}

/// tower-resilience's breaker counts an error or a 5xx as a failure, as ours does.
fn failed(result: &Result<Response, BoxError>) -> bool {
    result
        .as_ref()
        .map_or(true, |response| response.status().is_server_error())
}

fn router() -> Router {
    Router::new().route("/json", get(json))
}

/// What the upstream modes' handler sends its upstream, and gets back.
type UpstreamRequest<B> = http::Request<B>;
type UpstreamResponse = http::Response<Full<Bytes>>;

/// The in-process upstream: answers the JSON at once.
fn upstream<B>(
    _req: UpstreamRequest<B>,
) -> std::future::Ready<Result<UpstreamResponse, Infallible>> {
    let mut response = http::Response::new(Full::new(Bytes::from_static(json_body())));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    std::future::ready(Ok(response))
}

/// A route whose handler calls `client` (the upstream, perhaps behind a retry layer) for the
/// JSON and answers with what it got.
fn calling<S>(client: S) -> Router
where
    S: tower::Service<UpstreamRequest<Full<Bytes>>, Response = UpstreamResponse>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send,
    S::Error: std::fmt::Display,
{
    let handler = move || {
        let client = client.clone();
        async move {
            let request = http::Request::get("http://upstream/json")
                .body(Full::default())
                .unwrap_or_default();
            match client.oneshot(request).await {
                Ok(response) => response.map(axum::body::Body::new).into_response(),
                Err(error) => (StatusCode::BAD_GATEWAY, error.to_string()).into_response(),
            }
        }
    };
    Router::new().route("/json", get(handler))
}

/// `tower::retry`'s side, shared with `benches/retry.rs`.
#[path = "../benches/common/tower_retry.rs"]
mod tower_retry;
use tower_retry::TowerPolicy;

fn app(mode: &str) -> Result<(Router, bool), Box<dyn std::error::Error>> {
    let second = Duration::from_secs(1);
    // (the router, whether it is served with ConnectInfo)
    Ok(match mode {
        "bare" => (router(), false),
        "connect-info" => (router(), true),
        "noop-layer" => {
            let layer = tower::util::MapRequestLayer::new(|req: axum::extract::Request| req);
            (router().layer(layer), false)
        }
        "noop-wrapped-body" => {
            let layer = tower_http::map_response_body::MapResponseBodyLayer::new(
                tower_bulwark::response::ResponseBody::inner,
            );
            (router().layer(layer), false)
        }
        "governor" | "governor-headers" => {
            use tower_governor::governor::GovernorConfigBuilder;
            use tower_governor::GovernorLayer;
            let mut config = GovernorConfigBuilder::default();
            config.per_nanosecond(1).burst_size(u32::MAX);
            if mode == "governor-headers" {
                let config = config.use_headers().finish().ok_or("governor config")?;
                (router().layer(GovernorLayer::new(config)), true)
            } else {
                let config = config.finish().ok_or("governor config")?;
                (router().layer(GovernorLayer::new(config)), true)
            }
        }
        "rate-limit" => {
            let layer = RateLimitLayer::token_bucket(HIGH, second)
                .key(PeerIp)
                .build()?;
            (router().layer(layer), true)
        }
        "rate-limit-no-headers" => {
            let layer = RateLimitLayer::token_bucket(HIGH, second)
                .key(PeerIp)
                .headers(false)
                .build()?;
            (router().layer(layer), true)
        }
        "rate-limit-refused" => {
            // One a minute, the common limit: a refusal says to come back within the minute.
            let layer = RateLimitLayer::token_bucket(1, Duration::from_secs(60))
                .key(PeerIp)
                .build()?;
            (router().layer(layer), true)
        }
        "breaker" => {
            let layer = CircuitBreakerLayer::consecutive_failures(5).build()?;
            (router().layer(layer), false)
        }
        "breaker-open" => {
            // Forced open, with the default open time (60 s): every request refused.
            let layer = CircuitBreakerLayer::consecutive_failures(5).build()?;
            layer.circuit().force_open();
            (router().layer(layer), false)
        }
        "stack" => {
            let limit = RateLimitLayer::token_bucket(HIGH, second)
                .key(PeerIp)
                .build()?;
            let breaker = CircuitBreakerLayer::consecutive_failures(5).build()?;
            (
                router().layer(ServiceBuilder::new().layer(limit).layer(breaker)),
                true,
            )
        }
        "resilience" => {
            use tower_resilience::circuitbreaker::CircuitBreakerLayer as ResilienceBreaker;
            use tower_resilience::ratelimiter::RateLimiterLayer;
            let breaker = ResilienceBreaker::builder()
                .consecutive_failures(5)
                .wait_duration_in_open(Duration::from_secs(60))
                .failure_classifier(failed)
                .build()?;
            let limiter = RateLimiterLayer::builder()
                .limit_for_period(HIGH as usize)
                .refresh_period(second)
                .timeout_duration(Duration::ZERO)
                .build()?;
            let stack = ServiceBuilder::new()
                .layer(HandleErrorLayer::new(|_: BoxError| async {
                    StatusCode::SERVICE_UNAVAILABLE
                }))
                .layer(tower::util::MapErrLayer::new(Into::<BoxError>::into))
                .layer(breaker)
                .layer(tower::util::MapErrLayer::new(Into::<BoxError>::into))
                .layer(limiter);
            // Its breaker layer is not `Clone` (as `Router::layer` needs), its services are:
            // wrap the route's service, which is what `Router::layer` does to each route.
            let route = Router::new().route_service("/json", stack.service(get(json)));
            (route, false)
        }
        "set-header" => {
            let layer = tower_http::set_header::SetResponseHeaderLayer::overriding(
                header::CACHE_CONTROL,
                HeaderValue::from_static("max-age=3600"),
            );
            (router().layer(layer), false)
        }
        "cache-policy" => {
            let layer = tower_bulwark::cache::CacheLayer::builder()
                .without_etags()
                .build()?;
            (router().layer(layer), false)
        }
        "cache" => {
            let layer = tower_bulwark::cache::CacheLayer::builder().build()?;
            (router().layer(layer), false)
        }
        "cache-304" | "cache-store-304" => {
            let mut builder = tower_bulwark::cache::CacheLayer::builder();
            if mode == "cache-store-304" {
                builder = builder
                    .validator_store(tower_bulwark::cache::ValidatorStore::builder().build()?);
            }
            let tag = tower_bulwark::cache::EntityTag::of_body(json_body(), false);
            // The client sends no precondition: this layer (noop-layer's own type) adds one.
            let revalidate =
                tower::util::MapRequestLayer::new(move |mut req: axum::extract::Request| {
                    req.headers_mut()
                        .insert(header::IF_NONE_MATCH, tag.header_value().clone());
                    req
                });
            (router().layer(builder.build()?).layer(revalidate), false)
        }
        #[cfg(feature = "metrics")]
        "metrics" => {
            let layer = tower_bulwark::metrics::MetricsLayer::builder().build()?;
            (router().layer(layer), false)
        }
        "axum-prometheus" => {
            let (layer, _handle) = axum_prometheus::PrometheusMetricLayer::pair();
            (router().layer(layer), false)
        }
        "tower-http-gzip" | "tower-http-identity" => {
            let layer = tower_http::compression::CompressionLayer::new()
                .quality(tower_http::CompressionLevel::Precise(6));
            let app = router().layer(layer);
            (
                without_accept_encoding(app, mode.ends_with("-identity")),
                false,
            )
        }
        #[cfg(feature = "compression")]
        "compression" | "compression-identity" => {
            let layer = tower_bulwark::compression::CompressionLayer::new();
            let app = router().layer(layer);
            (
                without_accept_encoding(app, mode.ends_with("-identity")),
                false,
            )
        }
        "upstream-call" => (calling(tower::service_fn(upstream::<Full<Bytes>>)), false),
        "retry" => {
            let retry = RetryLayer::builder().build()?;
            let client = retry.layer(tower::service_fn(upstream::<RetryBody<Full<Bytes>>>));
            (calling(client), false)
        }
        "tower-retry" => {
            let client = tower::retry::RetryLayer::new(TowerPolicy::new())
                .layer(tower::service_fn(upstream::<Full<Bytes>>));
            (calling(client), false)
        }
        other => return Err(format!("unknown mode {other:?}; try --list").into()),
    })
}

/// The client always sends `Accept-Encoding: gzip`; the `*-identity` modes take it off in a
/// layer outside the compression layer (of noop-layer's type, so its cost is the floor's).
fn without_accept_encoding(app: Router, remove: bool) -> Router {
    if !remove {
        return app;
    }
    app.layer(tower::util::MapRequestLayer::new(
        |mut req: axum::extract::Request| {
            req.headers_mut().remove(header::ACCEPT_ENCODING);
            req
        },
    ))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "--list".to_owned());
    if mode == "--list" {
        for (name, baseline, what) in MODES {
            println!("{name}|{baseline}|{what}");
        }
        return Ok(());
    }
    let addr: SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:3100".to_owned())
        .parse()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(&mode, addr))
}

async fn serve(mode: &str, addr: SocketAddr) -> Result<(), Box<dyn std::error::Error>> {
    let (app, connect_info) = app(mode)?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("ready {}", listener.local_addr()?);
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    if connect_info {
        // The handler does not read it: the extension is what the keyed layers key on.
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await?;
    } else {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await?;
    }
    Ok(())
}
