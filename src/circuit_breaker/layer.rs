use std::fmt;
use std::sync::Arc;

use tower_layer::Layer;

use super::builder::CircuitBreakerBuilder;
use super::circuit::Circuit;
use super::classify::ClassifyResponse;
use super::service::CircuitBreaker;

/// A `failure_if` classifier, shared by the layer's services and futures; `None` is the
/// default, judged inline (no indirect call on the common path).
pub(crate) type ClassifyFn = Arc<dyn ClassifyResponse>;

/// A circuit breaker for HTTP (and gRPC) services: stops calling a failing service, answers
/// at once while open (503 with `Retry-After`, or gRPC `UNAVAILABLE`), and probes carefully
/// before closing. Works around a handler or an upstream client alike.
///
/// ```
/// use std::time::Duration;
/// use tower_bulwark::circuit_breaker::CircuitBreakerLayer;
///
/// // The seed's defaults: 5 failures in a row open it for 60 s; 5 probe successes close it.
/// let breaker = CircuitBreakerLayer::consecutive_failures(5)
///     .open_for(Duration::from_secs(60))
///     .build()?;
/// # drop(breaker);
/// # Ok::<(), tower_bulwark::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct CircuitBreakerLayer {
    circuit: Arc<Circuit>,
    classify: Option<ClassifyFn>,
}

impl fmt::Debug for CircuitBreakerLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerLayer")
            .field("circuit", &self.circuit)
            .finish_non_exhaustive()
    }
}

impl CircuitBreakerLayer {
    /// A breaker that opens after `failures` failures in a row.
    ///
    /// ```
    /// use tower_bulwark::circuit_breaker::CircuitBreakerLayer;
    ///
    /// let layer = CircuitBreakerLayer::consecutive_failures(5).build()?;
    /// # drop(layer);
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn consecutive_failures(failures: u32) -> CircuitBreakerBuilder {
        CircuitBreakerBuilder::consecutive(failures)
    }

    /// A breaker that opens when at least `rate` (0 to 1] of the calls in its window failed,
    /// once the window holds `minimum_calls` (defaults: the last 100 calls, at least 20).
    ///
    /// ```
    /// use tower_bulwark::circuit_breaker::CircuitBreakerLayer;
    ///
    /// let err = CircuitBreakerLayer::failure_rate(0.0).build().unwrap_err();
    /// assert_eq!(err.to_string(), "`failure_rate` rate must be in (0, 1], got 0");
    /// ```
    pub fn failure_rate(rate: f64) -> CircuitBreakerBuilder {
        CircuitBreakerBuilder::rate(rate)
    }

    pub(crate) fn new(circuit: Arc<Circuit>, classify: Option<ClassifyFn>) -> Self {
        Self { circuit, classify }
    }

    /// The breaker's shared state: query, force, reset, stats.
    ///
    /// ```
    /// use tower_bulwark::circuit_breaker::{CircuitBreakerLayer, CircuitState};
    ///
    /// let layer = CircuitBreakerLayer::consecutive_failures(5).build()?;
    /// assert_eq!(layer.circuit().state(), CircuitState::Closed);
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn circuit(&self) -> &Circuit {
        &self.circuit
    }

    /// How this breaker's syncs with the fleet have gone (feature `redis`): calls, errors,
    /// timeouts, fallbacks, and whether it decides alone right now. `None` for a breaker kept
    /// in memory.
    ///
    /// ```
    /// use tower_bulwark::circuit_breaker::CircuitBreakerLayer;
    ///
    /// let layer = CircuitBreakerLayer::consecutive_failures(5).build()?;
    /// assert_eq!(layer.fleet_stats(), None); // kept in memory
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    #[cfg(feature = "redis")]
    pub fn fleet_stats(&self) -> Option<super::FleetStats> {
        super::fleet::stats_of(&self.circuit)
    }

    /// Syncs with the fleet now (feature `redis`): sends the outcomes seen here and follows
    /// the fleet's state, without waiting for the sync interval (at start-up, before a
    /// graceful shutdown, in tests). The error is Redis's, when it could not be reached within
    /// the deadline; the breaker then decides alone until a sync succeeds. Nothing to do for a
    /// breaker kept in memory.
    ///
    /// ```
    /// use tower_bulwark::circuit_breaker::CircuitBreakerLayer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let layer = CircuitBreakerLayer::consecutive_failures(5).build()?;
    /// layer.sync_fleet().await?; // kept in memory: nothing to sync
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "redis")]
    pub async fn sync_fleet(&self) -> Result<(), crate::BackendError> {
        super::fleet::sync_now(&self.circuit).await
    }
}

impl<S> Layer<S> for CircuitBreakerLayer {
    type Service = CircuitBreaker<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker::new(inner, self.circuit.clone(), self.classify.clone())
    }
}
