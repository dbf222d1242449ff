//! The one registry every layer's metrics go to, and its exposition: the Prometheus text
//! format, or OpenMetrics when the scraper asks for it, both written by prometheus-client.

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use prometheus_client::collector::Collector;
use prometheus_client::registry::Registry;
use tower_service::Service;

/// The `Content-Type` of OpenMetrics text 1.0.0.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A Prometheus registry shared by every layer that reports to it, cloned freely.
///
/// The metrics layer registers its families here; a layer's statistics (the rate limiter's
/// decisions, the breaker's states, the Redis backend's calls) are added as collectors read
/// at scrape time, so they cost nothing per request. Serve it with
/// [`service`](Self::service) at `/metrics`.
///
/// ```
/// use axum::{routing::get, Router};
/// use tower_bulwark::metrics::{MetricsLayer, MetricsRegistry};
///
/// let registry = MetricsRegistry::new();
/// let metrics = MetricsLayer::builder().registry(&registry).build()?;
/// let app: Router = Router::new()
///     .route("/api/orders", get(|| async { "[]" }))
///     .layer(metrics)
///     .route_service("/metrics", registry.service());
/// # drop(app);
/// # Ok::<(), tower_bulwark::ConfigError>(())
/// ```
#[derive(Clone, Default)]
pub struct MetricsRegistry {
    inner: Arc<Mutex<Registry>>,
}

impl std::fmt::Debug for MetricsRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsRegistry").finish_non_exhaustive()
    }
}

impl MetricsRegistry {
    /// An empty registry.
    ///
    /// ```
    /// let registry = tower_bulwark::metrics::MetricsRegistry::new();
    /// assert!(registry.encode_prometheus().is_empty());
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry whose metric names all start with `prefix_` (`myapp_http_requests_total`).
    ///
    /// ```
    /// let registry = tower_bulwark::metrics::MetricsRegistry::with_prefix("shop");
    /// # drop(registry);
    /// ```
    pub fn with_prefix(prefix: impl Into<String>) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Registry::with_prefix(prefix))),
        }
    }

    /// Runs `f` on the prometheus-client registry itself: to register the application's own
    /// metrics beside the layers'.
    ///
    /// ```
    /// use prometheus_client::metrics::counter::Counter;
    ///
    /// let registry = tower_bulwark::metrics::MetricsRegistry::new();
    /// let orders: Counter = Counter::default();
    /// registry.with_registry(|r| r.register("orders_placed", "Orders placed", orders.clone()));
    /// orders.inc();
    /// assert!(registry.encode_prometheus().contains("orders_placed_total 1"));
    /// ```
    pub fn with_registry<R>(&self, f: impl FnOnce(&mut Registry) -> R) -> R {
        f(&mut self.lock())
    }

    /// Adds a collector, read at every scrape.
    ///
    /// ```
    /// use prometheus_client::collector::Collector;
    /// use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
    /// use prometheus_client::metrics::counter::ConstCounter;
    ///
    /// #[derive(Debug)]
    /// struct Jobs;
    /// impl Collector for Jobs {
    ///     fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
    ///         let counter = ConstCounter::new(3u64);
    ///         let metric = encoder.encode_descriptor("jobs_done", "Jobs done", None, counter.metric_type())?;
    ///         counter.encode(metric)
    ///     }
    /// }
    /// let registry = tower_bulwark::metrics::MetricsRegistry::new();
    /// registry.register_collector(Box::new(Jobs));
    /// assert!(registry.encode_prometheus().contains("jobs_done_total 3"));
    /// ```
    pub fn register_collector(&self, collector: Box<dyn Collector>) {
        self.lock().register_collector(collector);
    }

    /// Everything registered, in the Prometheus text format (0.0.4).
    ///
    /// ```
    /// let registry = tower_bulwark::metrics::MetricsRegistry::new();
    /// assert_eq!(registry.encode_prometheus(), "");
    /// ```
    pub fn encode_prometheus(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail; an encoder error would leave what was written.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.lock());
        out
    }

    /// Everything registered, in OpenMetrics text (ends with `# EOF`).
    ///
    /// ```
    /// let registry = tower_bulwark::metrics::MetricsRegistry::new();
    /// assert_eq!(registry.encode_openmetrics(), "# EOF\n");
    /// ```
    pub fn encode_openmetrics(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.lock());
        out
    }

    /// A service answering every request with the exposition: OpenMetrics when the request's
    /// `Accept` names `application/openmetrics-text`, else the Prometheus text format.
    /// Mount it with axum's `route_service("/metrics", ..)`, or anywhere a tower service goes.
    ///
    /// ```
    /// use tower::ServiceExt;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let registry = tower_bulwark::metrics::MetricsRegistry::new();
    /// let res = registry.service().oneshot(http::Request::new(())).await.unwrap();
    /// assert_eq!(res.headers()["content-type"], "text/plain; version=0.0.4; charset=utf-8");
    /// # }
    /// ```
    pub fn service(&self) -> MetricsService {
        MetricsService {
            registry: self.clone(),
        }
    }

    /// The exposition a request with these headers asks for, as a response.
    fn respond(&self, headers: &HeaderMap) -> Response<Full<Bytes>> {
        let openmetrics = headers.get_all(ACCEPT).iter().any(|v| {
            v.as_bytes()
                .windows(b"application/openmetrics-text".len())
                .any(|w| w.eq_ignore_ascii_case(b"application/openmetrics-text"))
        });
        let (body, content_type) = if openmetrics {
            (self.encode_openmetrics(), OPENMETRICS_CONTENT_TYPE)
        } else {
            (
                self.encode_prometheus(),
                prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            )
        };
        let mut res = Response::new(Full::new(Bytes::from(body)));
        *res.status_mut() = StatusCode::OK;
        res.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        res
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        // A panic while registering leaves a registry still worth serving.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The exposition endpoint: from [`MetricsRegistry::service`].
///
/// ```
/// let service: tower_bulwark::metrics::MetricsService =
///     tower_bulwark::metrics::MetricsRegistry::new().service();
/// # drop(service);
/// ```
#[derive(Debug, Clone)]
pub struct MetricsService {
    registry: MetricsRegistry,
}

impl<B> Service<Request<B>> for MetricsService {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        ready(Ok(self.registry.respond(req.headers())))
    }
}
