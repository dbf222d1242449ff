//! Latency metrics: Prometheus families for every request, in-process percentiles and rates
//! over a sliding window, SLO checks, and the one registry every layer reports to.
//!
//! # Prometheus
//!
//! Through [prometheus-client](https://docs.rs/prometheus-client) (its registry and both
//! text formats: nothing here writes the exposition by hand), with these families:
//!
//! | family | type | labels |
//! |---|---|---|
//! | `http_request_duration_seconds` | histogram, buckets [`DEFAULT_BUCKETS`] (0.01 to 5 s) | `method`, `route`, `status_code` |
//! | `http_requests_total` | counter | `method`, `route`, `status_code` |
//! | `http_requests_in_flight` | gauge | `method`, `route` |
//! | `http_response_bodies_dropped_total` | counter | `method`, `route`, `status_code` |
//!
//! A request is measured from its arrival until its response body ends (the shared body-end
//! hook, the one the circuit breaker uses): a streamed response counts its whole stream. A
//! body the client drops before its end is recorded with its duration so far, and counted
//! in `http_response_bodies_dropped_total`.
//!
//! Labels stay bounded whatever clients send: `method` is one of the nine standard methods
//! or `OTHER`; `route` is the route's template (axum's `MatchedPath` with the `axum`
//! feature, or [`route`](MetricsLayerBuilder::route)'s function), [`UNMATCHED_ROUTE`] when
//! there is none, and at most [`max_routes`](MetricsLayerBuilder::max_routes) distinct
//! values ([`OVERFLOW_ROUTE`] beyond), so a flood of random paths adds nothing.
//!
//! Why prometheus-client rather than `metrics` + an exporter: it is a library's tool, an
//! explicit registry the application owns (no global recorder to install, or to collide with
//! the application's), typed label sets checked at compile time, and OpenMetrics as well as
//! the Prometheus text format from one registry.
//!
//! # Percentiles and SLOs, in code
//!
//! Every request also goes into a sliding window (60 s in six slots by default) of HDR
//! histograms (the hdrhistogram crate), per route and overall: [`MetricsLayer::latency`] and
//! [`MetricsLayer::route_latency`] give p50, p95, p99, the count, the error rate and the
//! availability over it; [`Slo`] judges them (by default the guides' objectives: p50 < 50 ms,
//! p95 < 200 ms, p99 < 500 ms, error rate < 0.1 %, availability ≥ 99.9 %). A *server error*
//! is what the crate's one outcome classifier calls a failure (a 5xx, a gRPC server-side
//! code, a body that failed); *availability* also counts requests refused with 429 as not
//! served.
//!
//! # Example
//!
//! ```
//! use axum::{routing::get, Router};
//! use tower_bulwark::metrics::{MetricsLayer, MetricsRegistry, Slo};
//!
//! let registry = MetricsRegistry::new();
//! let metrics = MetricsLayer::builder().registry(&registry).build()?;
//! let app: Router = Router::new()
//!     .route("/api/orders/{id}", get(|| async { "{}" }))
//!     .layer(metrics.clone())
//!     .route_service("/metrics", registry.service());
//! // Later, in a health check:
//! let report = Slo::default().check(&metrics.latency());
//! assert!(report.passed());
//! # drop(app);
//! # Ok::<(), tower_bulwark::ConfigError>(())
//! ```

mod builder;
mod config;
mod future;
mod labels;
mod layer;
mod registry;
mod routes;
mod service;
mod slo;
mod window;

pub use builder::{
    MetricsLayerBuilder, DEFAULT_BUCKETS, DEFAULT_MAX_ROUTES, DEFAULT_WINDOW, DEFAULT_WINDOW_SLOTS,
};
pub use future::ResponseFuture;
pub use layer::MetricsLayer;
pub use registry::{MetricsRegistry, MetricsService, OPENMETRICS_CONTENT_TYPE};
pub use routes::{OVERFLOW_ROUTE, UNMATCHED_ROUTE};
pub use service::HttpMetrics;
pub use slo::{Objective, ObjectiveResult, Slo, SloReport, Verdict};
pub use window::LatencySnapshot;
