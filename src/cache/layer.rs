//! The cache layer: built once, cloned freely, one [`CacheService`] per inner service.

use std::sync::Arc;

use tower_layer::Layer;

use super::config::Config;
use super::service::CacheService;
use super::store::ValidatorStore;

/// Gives responses a `Cache-Control` policy and strong ETags, and answers conditional
/// requests exactly per RFC 9110 §13 (`304 Not Modified`, `412 Precondition Failed`),
/// before the handler runs when the current validator is known.
///
/// ```
/// use std::time::Duration;
/// use axum::{routing::get, Router};
/// use tower_bulwark::cache::CacheLayer;
///
/// let cached = CacheLayer::max_age(Duration::from_secs(60)).public().build()?;
/// let app: Router = Router::new()
///     .route("/api/catalog", get(|| async { "[\"tea\",\"coffee\"]" }))
///     .layer(cached);
/// # drop(app);
/// # Ok::<(), tower_bulwark::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct CacheLayer {
    config: Arc<Config>,
}

impl CacheLayer {
    pub(crate) fn new(config: Config) -> Self {
        Self {
            config: Arc::new(config),
        }
    }

    /// What the layer has done so far, counted across its services.
    ///
    /// ```
    /// let layer = tower_bulwark::cache::CacheLayer::builder().build()?;
    /// assert_eq!(layer.stats().not_modified, 0);
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn stats(&self) -> CacheStats {
        let [not_modified, precondition_failed, answered_before_handler, etags_computed, unbuffered] =
            self.config.counters.get();
        CacheStats {
            not_modified,
            precondition_failed,
            answered_before_handler,
            etags_computed,
            unbuffered,
        }
    }

    /// The validator store, if the layer has one (to [`invalidate`](ValidatorStore::invalidate)
    /// a URI changed elsewhere).
    pub fn validator_store(&self) -> Option<&ValidatorStore> {
        self.config.store.as_ref()
    }
}

/// Counts of what a [`CacheLayer`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// `304 Not Modified` answers.
    pub not_modified: u64,
    /// `412 Precondition Failed` answers.
    pub precondition_failed: u64,
    /// Of those, the ones given before the handler ran (from `current_etag` or the store).
    pub answered_before_handler: u64,
    /// ETags made by hashing a body.
    pub etags_computed: u64,
    /// `GET` responses passed on without an ETag because their body was longer than
    /// `max_body` or did not say its length (a stream).
    pub unbuffered: u64,
}

impl<S> Layer<S> for CacheLayer {
    type Service = CacheService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CacheService::new(inner, self.config.clone())
    }
}
