//! What the metrics layer costs per request, beside axum-prometheus (metrics +
//! metrics-exporter-prometheus), both inside an axum `Router` (the `MatchedPath` they label
//! by is set by the router).
//!
//! Group `metrics_per_request`: `GET /api/items/{id}` answered with a short body, the body
//! read to its end, on a current-thread runtime:
//! * `bare`: the router alone;
//! * `ours`: `MetricsLayer` defaults (histogram, counter, in-flight gauge, sliding window);
//! * `axum_prometheus`: `PrometheusMetricLayer::pair()` (its histogram, counter and gauge).
//!
//! ```sh
//! cargo bench --bench metrics
//! ```

use std::hint::black_box;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use criterion::{criterion_group, criterion_main, Criterion};
use http::Request;
use http_body_util::BodyExt;
use tower::ServiceExt;
use tower_bulwark::metrics::MetricsLayer;

fn app() -> Router {
    Router::new().route("/api/items/{id}", get(|| async { "{\"id\":7}" }))
}

fn metrics(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let bare = app();
    let ours = app().layer(MetricsLayer::builder().build().unwrap());
    // Its recorder spawns an upkeep task: made inside the runtime.
    let (layer, _handle) =
        runtime.block_on(async { axum_prometheus::PrometheusMetricLayer::pair() });
    let peer = app().layer(layer);
    let one = |router: &Router| {
        let req = Request::get("/api/items/7")
            .body(axum::body::Body::empty())
            .unwrap();
        runtime.block_on(async {
            let res = router.clone().oneshot(req).await.unwrap();
            assert_eq!(res.status(), 200);
            black_box(res.into_body().collect().await.unwrap().to_bytes())
        })
    };
    let mut g = c.benchmark_group("metrics_per_request");
    g.bench_function("bare", |b| b.iter(|| one(&bare)));
    g.bench_function("ours", |b| b.iter(|| one(&ours)));
    g.bench_function("axum_prometheus", |b| b.iter(|| one(&peer)));
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(50);
    targets = metrics
}
criterion_main!(benches);
