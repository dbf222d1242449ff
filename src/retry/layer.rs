//! The retry layer: built once, cloned freely, one [`Retry`] service per inner service.

use std::sync::Arc;

use tower_layer::Layer;

use super::config::Config;
use super::{DefaultRetryIf, Retry, RetryBudget, RetryLayerBuilder, RetryStats};

/// Retries failed calls of the service it wraps, with jittered exponential backoff, within a
/// retry budget; see the [module docs](super).
///
/// ```
/// use std::time::Duration;
/// use tower_bulwark::retry::RetryLayer;
///
/// let retry = RetryLayer::builder().max_retries(2).build()?;
/// let counters = retry.clone(); // clones share settings, budget and counters
/// assert_eq!(counters.stats().requests, 0);
/// # Ok::<(), tower_bulwark::ConfigError>(())
/// ```
#[derive(Debug)]
pub struct RetryLayer<C = DefaultRetryIf> {
    config: Arc<Config<C>>,
}

impl<C> Clone for RetryLayer<C> {
    fn clone(&self) -> Self {
        Self {
            config: self.config.clone(),
        }
    }
}

impl RetryLayer {
    /// A builder with the defaults: 3 retries, backoff from 1 s doubling to a cap of 30 s
    /// with full jitter, 429/502/503/504 and errors retried, idempotent requests only,
    /// bodies up to 64 KiB replayed, a budget of 20 % plus 10 per second.
    ///
    /// ```
    /// let retry = tower_bulwark::retry::RetryLayer::builder().build()?;
    /// # drop(retry);
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn builder() -> RetryLayerBuilder {
        RetryLayerBuilder::new()
    }
}

impl<C> RetryLayer<C> {
    pub(crate) fn from_config(config: Config<C>) -> Self {
        Self {
            config: Arc::new(config),
        }
    }

    /// The counters of every service this layer (and its clones) made.
    ///
    /// ```
    /// let retry = tower_bulwark::retry::RetryLayer::builder().build()?;
    /// assert_eq!(retry.stats().retries, 0);
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn stats(&self) -> RetryStats {
        self.config.counters.stats()
    }

    /// The layer's retry budget, `None` after [`no_budget`](RetryLayerBuilder::no_budget).
    ///
    /// ```
    /// let retry = tower_bulwark::retry::RetryLayer::builder().build()?;
    /// assert_eq!(retry.budget().map(|b| b.available()), Some(100));
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn budget(&self) -> Option<&RetryBudget> {
        self.config.budget.as_ref()
    }
}

impl<S, C> Layer<S> for RetryLayer<C> {
    type Service = Retry<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry::new(inner, self.config.clone())
    }
}
