//! The metrics layer's builder: where it registers, its buckets, how routes are named, the
//! sliding window.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Unit;

use super::config::{Buckets, RouteFn, Shared};
use super::layer::MetricsLayer;
use super::routes::Routes;
use super::window::{Window, WindowSettings};
use super::MetricsRegistry;
use crate::clock::{Clock, SystemClock};
use crate::ConfigError;

/// The duration histogram's buckets, in seconds (the guides').
pub const DEFAULT_BUCKETS: &[f64] = &[0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

/// Distinct route labels (and sliding windows) kept; later routes share the `other` label.
pub const DEFAULT_MAX_ROUTES: usize = 100;

/// The sliding window percentiles and rates are computed over.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(60);

/// Slots the window is kept in (it slides by a sixth: 10 s by default).
pub const DEFAULT_WINDOW_SLOTS: usize = 6;

/// Builds a [`MetricsLayer`]; from [`MetricsLayer::builder`].
///
/// ```
/// use std::time::Duration;
/// use tower_bulwark::metrics::{MetricsLayer, MetricsRegistry};
///
/// let registry = MetricsRegistry::new();
/// let layer = MetricsLayer::builder()
///     .registry(&registry)
///     .buckets([0.005, 0.02, 0.1, 0.5, 2.0])
///     .window(Duration::from_secs(300), 10)
///     .build()?;
/// # drop(layer);
/// # Ok::<(), tower_bulwark::ConfigError>(())
/// ```
pub struct MetricsLayerBuilder {
    registry: Option<MetricsRegistry>,
    buckets: Vec<f64>,
    route_of: Option<RouteFn>,
    max_routes: usize,
    window: Duration,
    slots: usize,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for MetricsLayerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsLayerBuilder")
            .field("buckets", &self.buckets)
            .field("max_routes", &self.max_routes)
            .field("window", &self.window)
            .field("slots", &self.slots)
            .finish_non_exhaustive()
    }
}

impl Default for MetricsLayerBuilder {
    fn default() -> Self {
        Self {
            registry: None,
            buckets: DEFAULT_BUCKETS.to_vec(),
            route_of: None,
            max_routes: DEFAULT_MAX_ROUTES,
            window: DEFAULT_WINDOW,
            slots: DEFAULT_WINDOW_SLOTS,
            clock: Arc::new(SystemClock::new()),
        }
    }
}

impl MetricsLayerBuilder {
    /// The registry to register the layer's families in (default: a registry of its own,
    /// [`MetricsLayer::registry`]).
    ///
    /// ```
    /// let registry = tower_bulwark::metrics::MetricsRegistry::new();
    /// let layer = tower_bulwark::metrics::MetricsLayer::builder().registry(&registry).build()?;
    /// // Families appear in the exposition once they have a sample.
    /// assert_eq!(registry.encode_prometheus(), "");
    /// # drop(layer);
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn registry(mut self, registry: &MetricsRegistry) -> Self {
        self.registry = Some(registry.clone());
        self
    }

    /// The duration histogram's bucket bounds, in seconds, increasing; default
    /// [`DEFAULT_BUCKETS`].
    ///
    /// ```
    /// let err = tower_bulwark::metrics::MetricsLayer::builder().buckets([0.5, 0.1]).build().unwrap_err();
    /// assert_eq!(err.field(), "buckets");
    /// ```
    pub fn buckets(mut self, bounds: impl IntoIterator<Item = f64>) -> Self {
        self.buckets = bounds.into_iter().collect();
        self
    }

    /// How a request's route label is found: `route(parts)` gives the route's template
    /// (`/users/{id}`, never the raw path), or `None` for the constant `unmatched` label.
    /// Without it (and with the `axum` feature) the label is axum's `MatchedPath`. However
    /// found, at most [`max_routes`](Self::max_routes) distinct labels are kept.
    ///
    /// ```
    /// use std::borrow::Cow;
    ///
    /// let layer = tower_bulwark::metrics::MetricsLayer::builder()
    ///     .route(|parts| parts.uri.path().starts_with("/api/").then(|| Cow::Borrowed("/api/*")))
    ///     .build()?;
    /// # drop(layer);
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn route<F>(mut self, route: F) -> Self
    where
        F: for<'a> Fn(&'a http::request::Parts) -> Option<Cow<'a, str>> + Send + Sync + 'static,
    {
        self.route_of = Some(Arc::new(route));
        self
    }

    /// Distinct route labels kept; default [`DEFAULT_MAX_ROUTES`]. Beyond them, requests
    /// count under the route `other`.
    ///
    /// ```
    /// let layer = tower_bulwark::metrics::MetricsLayer::builder().max_routes(20).build()?;
    /// # drop(layer);
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn max_routes(mut self, max: usize) -> Self {
        self.max_routes = max;
        self
    }

    /// The sliding window of the in-process percentiles and rates, kept in `slots` parts
    /// (it slides by `window / slots`); default 60 s in 6.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let err = tower_bulwark::metrics::MetricsLayer::builder()
    ///     .window(Duration::from_secs(60), 0)
    ///     .build()
    ///     .unwrap_err();
    /// assert_eq!(err.field(), "window");
    /// ```
    pub fn window(mut self, window: Duration, slots: usize) -> Self {
        self.window = window;
        self.slots = slots;
        self
    }

    /// The clock durations and the window are read from (default the system's; a
    /// `ManualClock` or `TokioClock` in tests).
    ///
    /// ```
    /// let layer = tower_bulwark::metrics::MetricsLayer::builder()
    ///     .clock(tower_bulwark::clock::ManualClock::new())
    ///     .build()?;
    /// # drop(layer);
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Checks the settings, registers the families and builds the layer.
    ///
    /// ```
    /// let err = tower_bulwark::metrics::MetricsLayer::builder().max_routes(0).build().unwrap_err();
    /// assert_eq!(err.field(), "max_routes");
    /// ```
    pub fn build(self) -> Result<MetricsLayer, ConfigError> {
        let buckets = &self.buckets;
        if buckets.is_empty()
            || buckets.iter().any(|b| !b.is_finite() || *b <= 0.0)
            || buckets.windows(2).any(|w| w[0] >= w[1])
        {
            return Err(ConfigError::new(
                "buckets",
                format!("must be positive, finite and increasing, got {buckets:?}"),
            ));
        }
        if self.max_routes == 0 {
            return Err(ConfigError::new("max_routes", "must be > 0, got 0"));
        }
        if !(1..=600).contains(&self.slots) {
            return Err(ConfigError::new(
                "window",
                format!("must have 1 to 600 slots, got {}", self.slots),
            ));
        }
        let slot_nanos =
            u64::try_from(self.window.as_nanos() / self.slots as u128).unwrap_or(u64::MAX);
        if slot_nanos < 1_000_000 {
            return Err(ConfigError::new(
                "window",
                format!(
                    "must give slots of at least 1 ms, got {:?} in {}",
                    self.window, self.slots
                ),
            ));
        }
        let settings = WindowSettings {
            slot_nanos,
            slots: self.slots,
        };
        let registry = self.registry.unwrap_or_default();
        let duration = Family::new_with_constructor(Buckets(self.buckets.into()));
        let requests = Family::default();
        let in_flight = Family::default();
        let dropped = Family::default();
        registry.with_registry(|r| {
            r.register_with_unit(
                "http_request_duration",
                "Time from a request's arrival to its response body's end",
                Unit::Seconds,
                duration.clone(),
            );
            r.register(
                "http_requests",
                "Requests answered, by method, route and status",
                requests.clone(),
            );
            r.register(
                "http_requests_in_flight",
                "Requests received whose response body has not ended",
                in_flight.clone(),
            );
            r.register(
                "http_response_bodies_dropped",
                "Responses whose body was dropped before its end (the client went away)",
                dropped.clone(),
            );
        });
        Ok(MetricsLayer::new(Shared {
            duration,
            requests,
            in_flight,
            dropped,
            routes: Routes::new(self.max_routes, settings),
            overall: Window::new(settings),
            clock: self.clock,
            route_of: self.route_of,
            registry,
        }))
    }
}
