//! The metrics layer: built once, cloned freely, one [`MetricsService`](super::MetricsLayer)
//! per inner service; what it measured, read in code.

use std::sync::Arc;

use tower_layer::Layer;

use super::builder::MetricsLayerBuilder;
use super::config::Shared;
use super::service::HttpMetrics;
use super::window::LatencySnapshot;
use super::MetricsRegistry;

/// Measures every request: Prometheus families (duration histogram, request counter,
/// in-flight gauge, by method, route template and status) and in-process percentiles, error
/// rate and availability over a sliding window, per route and overall. See the
/// [module docs](super).
///
/// ```
/// use axum::{routing::get, Router};
/// use tower_bulwark::metrics::MetricsLayer;
///
/// let metrics = MetricsLayer::builder().build()?;
/// let app: Router = Router::new()
///     .route("/api/orders", get(|| async { "[]" }))
///     .layer(metrics.clone())
///     .route_service("/metrics", metrics.registry().service());
/// # drop(app);
/// # Ok::<(), tower_bulwark::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct MetricsLayer {
    shared: Arc<Shared>,
}

impl MetricsLayer {
    pub(crate) fn new(shared: Shared) -> Self {
        Self {
            shared: Arc::new(shared),
        }
    }

    /// A builder.
    ///
    /// ```
    /// let layer = tower_bulwark::metrics::MetricsLayer::builder().build()?;
    /// # drop(layer);
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn builder() -> MetricsLayerBuilder {
        MetricsLayerBuilder::default()
    }

    /// The registry the layer's families are in.
    ///
    /// ```
    /// let layer = tower_bulwark::metrics::MetricsLayer::builder().build()?;
    /// let endpoint = layer.registry().service(); // mount it at /metrics
    /// # drop(endpoint);
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn registry(&self) -> &MetricsRegistry {
        &self.shared.registry
    }

    /// Percentiles, count, error rate and availability of every request over the window.
    ///
    /// ```
    /// let layer = tower_bulwark::metrics::MetricsLayer::builder().build()?;
    /// assert_eq!(layer.latency().count, 0);
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn latency(&self) -> LatencySnapshot {
        self.shared.overall.snapshot(self.shared.clock.now())
    }

    /// The same for one route label (`None` if no request was counted under it).
    ///
    /// ```
    /// let layer = tower_bulwark::metrics::MetricsLayer::builder().build()?;
    /// assert_eq!(layer.route_latency("/api/orders"), None);
    /// assert_eq!(layer.route_latency("unmatched").map(|s| s.count), Some(0));
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn route_latency(&self, route: &str) -> Option<LatencySnapshot> {
        let now = self.shared.clock.now();
        self.shared
            .routes
            .find(route)
            .map(|route| route.window.snapshot(now))
    }

    /// Every route label with its figures (routes without a request in the window too).
    ///
    /// ```
    /// let layer = tower_bulwark::metrics::MetricsLayer::builder().build()?;
    /// let routes = layer.routes();
    /// assert!(routes.iter().any(|(route, _)| route == "unmatched"));
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn routes(&self) -> Vec<(String, LatencySnapshot)> {
        let now = self.shared.clock.now();
        let mut all: Vec<(String, LatencySnapshot)> = self
            .shared
            .routes
            .all()
            .into_iter()
            .map(|route| (route.label.0.to_string(), route.window.snapshot(now)))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = HttpMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        HttpMetrics::new(inner, self.shared.clone())
    }
}
