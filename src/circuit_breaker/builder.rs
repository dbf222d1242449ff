//! Configures a circuit breaker; `build()` checks every setting and names the first bad one.

use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::request::Parts;

use super::circuit::Circuit;
use super::classify::{ClassifyResponse, DefaultClassifier};
use super::config::{CircuitEvent, Config, EventFn, Slow, Trip};
use super::generic::GenericCircuitBreakerLayer;
use super::keyed::{Circuits, KeyedCircuitBreakerLayer, KeyedEventFn};
use super::layer::{CircuitBreakerLayer, ClassifyFn};
use crate::clock::{duration_to_nanos, Clock, SystemClock};
use crate::error::ConfigError;
use crate::key::{Key, KeyExtractor};
use crate::util::DEFAULT_MAX_KEYS;

/// Defaults (*seed*): 5 failures in a row open the breaker for 60 s; in half-open, 5 successes
/// close it and one failure opens it again.
const DEFAULT_OPEN_FOR: Duration = Duration::from_secs(60);
const DEFAULT_HALF_OPEN_SUCCESSES: u32 = 5;
const DEFAULT_HALF_OPEN_PROBES: u32 = 1;
/// Failure-rate defaults: the last 100 calls, judged once 20 are in.
const DEFAULT_WINDOW_CALLS: usize = 100;
const DEFAULT_MINIMUM_CALLS: u64 = 20;
/// A count window keeps one entry per call (per key, for keyed breakers): bounded.
const MAX_WINDOW_CALLS: usize = 100_000;

#[derive(Debug, Clone, Copy)]
enum Policy {
    Consecutive(u32),
    Rate {
        rate: f64,
        window: RateWindow,
        /// `None`: the default, capped at a count window's size.
        minimum_calls: Option<u64>,
    },
}

#[derive(Debug, Clone, Copy)]
enum RateWindow {
    Calls(usize),
    Time(Duration),
}

/// Configures a circuit breaker; made by [`CircuitBreakerLayer::consecutive_failures`] or
/// [`CircuitBreakerLayer::failure_rate`].
///
/// ```
/// use std::time::Duration;
/// use tower_bulwark::circuit_breaker::CircuitBreakerLayer;
///
/// let layer = CircuitBreakerLayer::failure_rate(0.5)
///     .window_time(Duration::from_secs(30))
///     .minimum_calls(10)
///     .slow_calls(Duration::from_secs(2), 0.8)
///     .open_for(Duration::from_secs(10))
///     .build()?;
/// # drop(layer);
/// # Ok::<(), tower_bulwark::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct CircuitBreakerBuilder<C = DefaultClassifier> {
    policy: Policy,
    slow: Option<(Duration, f64)>,
    open_for: Duration,
    half_open_successes: u32,
    half_open_probes: u32,
    clock: Arc<dyn Clock>,
    on_event: Option<EventFn>,
    classify: C,
    misplaced: Option<ConfigError>,
    #[cfg(feature = "redis")]
    pub(super) fleet: Option<crate::redis::SyncSettings>,
}

impl<C> fmt::Debug for CircuitBreakerBuilder<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerBuilder")
            .field("policy", &self.policy)
            .field("slow", &self.slow)
            .field("open_for", &self.open_for)
            .field("half_open_successes", &self.half_open_successes)
            .field("half_open_probes", &self.half_open_probes)
            .finish_non_exhaustive()
    }
}

impl CircuitBreakerBuilder {
    fn new(policy: Policy) -> Self {
        Self {
            policy,
            slow: None,
            open_for: DEFAULT_OPEN_FOR,
            half_open_successes: DEFAULT_HALF_OPEN_SUCCESSES,
            half_open_probes: DEFAULT_HALF_OPEN_PROBES,
            clock: Arc::new(SystemClock::new()),
            on_event: None,
            classify: DefaultClassifier,
            misplaced: None,
            #[cfg(feature = "redis")]
            fleet: None,
        }
    }

    pub(crate) fn consecutive(failures: u32) -> Self {
        Self::new(Policy::Consecutive(failures))
    }

    pub(crate) fn rate(rate: f64) -> Self {
        Self::new(Policy::Rate {
            rate,
            window: RateWindow::Calls(DEFAULT_WINDOW_CALLS),
            minimum_calls: None,
        })
    }
}

impl<C> CircuitBreakerBuilder<C> {
    fn edit_rate(
        mut self,
        field: &'static str,
        edit: impl FnOnce(&mut RateWindow, &mut Option<u64>),
    ) -> Self {
        match &mut self.policy {
            Policy::Rate {
                window,
                minimum_calls,
                ..
            } => edit(window, minimum_calls),
            Policy::Consecutive(_) => {
                self.misplaced.get_or_insert(ConfigError::new(
                    field,
                    "applies only to failure_rate breakers, not consecutive_failures",
                ));
            }
        }
        self
    }

    /// Failure rate over the last `calls` calls (the default window: 100 calls).
    ///
    /// ```
    /// use tower_bulwark::circuit_breaker::CircuitBreakerLayer;
    ///
    /// let err = CircuitBreakerLayer::consecutive_failures(5).window_calls(50).build().unwrap_err();
    /// assert_eq!(err.field(), "window_calls");
    /// ```
    pub fn window_calls(self, calls: usize) -> Self {
        self.edit_rate("window_calls", |window, _| {
            *window = RateWindow::Calls(calls)
        })
    }

    /// Failure rate over the calls of the last `period` (sliding in tenths of it).
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_bulwark::circuit_breaker::CircuitBreakerLayer;
    ///
    /// let layer = CircuitBreakerLayer::failure_rate(0.5).window_time(Duration::from_secs(60)).build()?;
    /// # drop(layer);
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn window_time(self, period: Duration) -> Self {
        self.edit_rate("window_time", |window, _| {
            *window = RateWindow::Time(period)
        })
    }

    /// Calls the window must hold before its rate can open the breaker (default 20, or the
    /// window's size if it holds fewer calls). More than a count window holds is an error: the
    /// breaker could never open.
    ///
    /// ```
    /// use tower_bulwark::circuit_breaker::CircuitBreakerLayer;
    ///
    /// let err = CircuitBreakerLayer::failure_rate(0.5).minimum_calls(0).build().unwrap_err();
    /// assert_eq!(err.to_string(), "`minimum_calls` must be >= 1, got 0");
    /// ```
    pub fn minimum_calls(self, calls: u64) -> Self {
        self.edit_rate("minimum_calls", |_, minimum| *minimum = Some(calls))
    }

    /// Calls slower than `threshold` are slow. Under a failure-rate policy, a share of slow
    /// calls of at least `rate` opens the breaker (as failures do at theirs); under the
    /// consecutive policy a slow call counts as a failure.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_bulwark::circuit_breaker::CircuitBreakerLayer;
    ///
    /// let err = CircuitBreakerLayer::failure_rate(0.5)
    ///     .slow_calls(Duration::from_secs(1), 1.5)
    ///     .build()
    ///     .unwrap_err();
    /// assert_eq!(err.field(), "slow_calls");
    /// ```
    pub fn slow_calls(mut self, threshold: Duration, rate: f64) -> Self {
        self.slow = Some((threshold, rate));
        self
    }

    /// How long an open breaker refuses calls before it probes (default 60 s).
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_bulwark::circuit_breaker::CircuitBreakerLayer;
    ///
    /// let layer = CircuitBreakerLayer::consecutive_failures(5).open_for(Duration::from_secs(5)).build()?;
    /// # drop(layer);
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn open_for(mut self, duration: Duration) -> Self {
        self.open_for = duration;
        self
    }

    /// Successful probes that close a half-open breaker (default 5).
    ///
    /// ```
    /// use tower_bulwark::circuit_breaker::CircuitBreakerLayer;
    ///
    /// let err = CircuitBreakerLayer::consecutive_failures(5).half_open_successes(0).build().unwrap_err();
    /// assert_eq!(err.field(), "half_open_successes");
    /// ```
    pub fn half_open_successes(mut self, successes: u32) -> Self {
        self.half_open_successes = successes;
        self
    }

    /// Probes a half-open breaker lets through at once (default 1); the rest are refused.
    ///
    /// ```
    /// use tower_bulwark::circuit_breaker::CircuitBreakerLayer;
    ///
    /// let layer = CircuitBreakerLayer::consecutive_failures(5).half_open_probes(3).build()?;
    /// # drop(layer);
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn half_open_probes(mut self, probes: u32) -> Self {
        self.half_open_probes = probes;
        self
    }

    /// The clock for open times and slow calls (default: the OS monotonic clock); tests use a
    /// [`ManualClock`](crate::clock::ManualClock).
    ///
    /// ```
    /// use tower_bulwark::{circuit_breaker::CircuitBreakerLayer, clock::ManualClock};
    ///
    /// let layer = CircuitBreakerLayer::consecutive_failures(5).clock(ManualClock::new()).build()?;
    /// # drop(layer);
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Called on every state change and refusal (keep it quick: it runs on the request path).
    /// Events are delivered after the change, outside the breaker's lock (so the callback may
    /// query or force the breaker); two changes racing on two threads may arrive out of order,
    /// so read [`Circuit::state`](super::Circuit::state) when the current state matters.
    ///
    /// ```
    /// use tower_bulwark::circuit_breaker::{CircuitBreakerLayer, CircuitEvent};
    ///
    /// let layer = CircuitBreakerLayer::consecutive_failures(5)
    ///     .on_event(|event| {
    ///         if let CircuitEvent::StateChanged { from, to } = event {
    ///             eprintln!("breaker: {} -> {}", from.as_str(), to.as_str());
    ///         }
    ///     })
    ///     .build()?;
    /// # drop(layer);
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn on_event(mut self, on_event: impl Fn(&CircuitEvent) + Send + Sync + 'static) -> Self {
        self.on_event = Some(Arc::new(on_event));
        self
    }

    /// Decides which calls are failures, instead of the default [`DefaultClassifier`] (the
    /// crate's one [`Outcome`](crate::response::Outcome) classifier). Every variant takes it
    /// here, each judging what it sees:
    ///
    /// - the HTTP layers ([`build`](Self::build), [`per_key`](Self::per_key), with or without
    ///   Redis) take a [`ClassifyResponse`](super::ClassifyResponse), any
    ///   `Fn(StatusCode, &HeaderMap) -> bool`: the status and headers (a gRPC answer whose
    ///   status comes at the end of its body is judged on its trailers). Errors from the
    ///   inner service always fail.
    /// - the generic layer ([`build_generic`](Self::build_generic)) takes a
    ///   [`ClassifyResult`](super::ClassifyResult), any `Fn(&Result<T, E>) -> bool`: the
    ///   whole result, so an error that is the caller's fault need not open it and an `Ok`
    ///   holding a 503 can.
    ///
    /// `build` refuses a classifier for results and `build_generic` one for responses, at
    /// compile time. Write the closure's parameter types out: the builder does not know yet
    /// which variant it builds. Cancelled calls record nothing whatever the classifier says.
    ///
    /// ```
    /// use http::{HeaderMap, StatusCode};
    /// use tower_bulwark::circuit_breaker::CircuitBreakerLayer;
    ///
    /// // Also count 429 from the upstream as a failure.
    /// let layer = CircuitBreakerLayer::consecutive_failures(5)
    ///     .failure_if(|status: StatusCode, _: &HeaderMap| status.is_server_error() || status == 429)
    ///     .build()?;
    /// # drop(layer);
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    ///
    /// The generic variant:
    ///
    /// ```
    /// use std::io::{Error, ErrorKind};
    /// use tower::{service_fn, Layer, ServiceExt};
    /// use tower_bulwark::circuit_breaker::{CircuitBreakerLayer, CircuitState};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// // A not-found is the caller's problem, not the dependency's.
    /// let layer = CircuitBreakerLayer::consecutive_failures(1)
    ///     .failure_if(|result: &Result<(), Error>| {
    ///         matches!(result, Err(e) if e.kind() != ErrorKind::NotFound)
    ///     })
    ///     .build_generic()?;
    /// let svc = layer.layer(service_fn(|_: ()| async { Err::<(), _>(Error::from(ErrorKind::NotFound)) }));
    /// assert!(svc.oneshot(()).await.is_err());
    /// assert_eq!(layer.circuit().state(), CircuitState::Closed);
    /// # Ok(())
    /// # }
    /// ```
    pub fn failure_if<F>(self, classify: F) -> CircuitBreakerBuilder<F> {
        CircuitBreakerBuilder {
            policy: self.policy,
            slow: self.slow,
            open_for: self.open_for,
            half_open_successes: self.half_open_successes,
            half_open_probes: self.half_open_probes,
            clock: self.clock,
            on_event: self.on_event,
            classify,
            misplaced: self.misplaced,
            #[cfg(feature = "redis")]
            fleet: self.fleet,
        }
    }

    fn rate_field(rate: f64, field: &'static str) -> Result<(), ConfigError> {
        if rate > 0.0 && rate <= 1.0 {
            Ok(())
        } else {
            Err(ConfigError::new(
                field,
                format!("rate must be in (0, 1], got {rate}"),
            ))
        }
    }

    fn config(&self) -> Result<Config, ConfigError> {
        if let Some(err) = &self.misplaced {
            return Err(err.clone());
        }
        let trip = match self.policy {
            Policy::Consecutive(0) => {
                return Err(ConfigError::new("failures", "must be >= 1, got 0"));
            }
            Policy::Consecutive(failures) => Trip::Consecutive { failures },
            Policy::Rate {
                rate,
                window,
                minimum_calls,
            } => {
                Self::rate_field(rate, "failure_rate")?;
                if minimum_calls == Some(0) {
                    return Err(ConfigError::new("minimum_calls", "must be >= 1, got 0"));
                }
                let mut minimum_calls = minimum_calls.unwrap_or(DEFAULT_MINIMUM_CALLS);
                let (window_calls, window_period_ns) = match window {
                    RateWindow::Calls(0) => {
                        return Err(ConfigError::new("window_calls", "must be >= 1, got 0"));
                    }
                    RateWindow::Calls(calls) if calls > MAX_WINDOW_CALLS => {
                        return Err(ConfigError::new(
                            "window_calls",
                            format!("must be at most {MAX_WINDOW_CALLS}, got {calls}"),
                        ));
                    }
                    RateWindow::Calls(calls) => {
                        let size = u64::try_from(calls).unwrap_or(u64::MAX);
                        // A window that can never hold the minimum could never open.
                        if minimum_calls > size {
                            if let Policy::Rate {
                                minimum_calls: Some(set),
                                ..
                            } = self.policy
                            {
                                return Err(ConfigError::new(
                                    "minimum_calls",
                                    format!("must be <= window_calls ({calls}), got {set}"),
                                ));
                            }
                            minimum_calls = size;
                        }
                        (Some(calls), 0)
                    }
                    RateWindow::Time(period) if period.is_zero() => {
                        return Err(ConfigError::new("window_time", "must be > 0, got 0ns"));
                    }
                    RateWindow::Time(period) => (None, duration_to_nanos(period)),
                };
                Trip::Rate {
                    failure_rate: rate,
                    minimum_calls,
                    window_calls,
                    window_period_ns,
                }
            }
        };
        let slow = match self.slow {
            None => None,
            Some((threshold, _)) if threshold.is_zero() => {
                return Err(ConfigError::new(
                    "slow_calls",
                    "threshold must be > 0, got 0ns",
                ));
            }
            Some((threshold, rate)) => {
                Self::rate_field(rate, "slow_calls")?;
                Some(Slow {
                    threshold_ns: duration_to_nanos(threshold),
                    rate,
                })
            }
        };
        if self.open_for.is_zero() {
            return Err(ConfigError::new("open_for", "must be > 0, got 0ns"));
        }
        if self.half_open_successes == 0 {
            return Err(ConfigError::new(
                "half_open_successes",
                "must be >= 1, got 0",
            ));
        }
        if self.half_open_probes == 0 {
            return Err(ConfigError::new("half_open_probes", "must be >= 1, got 0"));
        }
        #[allow(unused_mut)]
        let mut config = Config {
            trip,
            slow,
            open_for: self.open_for,
            half_open_successes: self.half_open_successes,
            half_open_probes: self.half_open_probes,
            clock: self.clock.clone(),
            on_event: self.on_event.clone(),
            fleet: None,
        };
        #[cfg(feature = "redis")]
        if let Some(fleet) = &self.fleet {
            config.fleet = Some(Arc::new(super::redis_builder::fleet_link(fleet, &config)?));
        }
        Ok(config)
    }

    /// One breaker per key (per upstream host, per tenant): the key comes from each request's
    /// head, as a rate limit's does. Requests without a key share one circuit.
    ///
    /// ```
    /// use tower_bulwark::{circuit_breaker::CircuitBreakerLayer, key::HeaderKey};
    ///
    /// let layer = CircuitBreakerLayer::consecutive_failures(5)
    ///     .per_key(HeaderKey::new(http::HeaderName::from_static("x-tenant")))
    ///     .build()?;
    /// # drop(layer);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn per_key<K: KeyExtractor<Parts>>(self, key: K) -> KeyedCircuitBreakerBuilder<K, C> {
        KeyedCircuitBreakerBuilder {
            base: self,
            key,
            max_keys: DEFAULT_MAX_KEYS,
            on_keyed_event: None,
        }
    }

    /// Checks the configuration and builds the HTTP layer.
    ///
    /// ```
    /// use tower_bulwark::circuit_breaker::CircuitBreakerLayer;
    ///
    /// let err = CircuitBreakerLayer::consecutive_failures(0).build().unwrap_err();
    /// assert_eq!(err.to_string(), "`failures` must be >= 1, got 0");
    /// ```
    ///
    /// A classifier of whole results is for [`build_generic`](Self::build_generic); `build`
    /// refuses it at compile time:
    ///
    /// ```compile_fail
    /// use tower_bulwark::circuit_breaker::CircuitBreakerLayer;
    ///
    /// let layer = CircuitBreakerLayer::consecutive_failures(5)
    ///     .failure_if(|result: &Result<u32, std::io::Error>| result.is_err())
    ///     .build();
    /// ```
    pub fn build(self) -> Result<CircuitBreakerLayer, ConfigError>
    where
        C: ClassifyResponse,
    {
        let circuit = Arc::new(Circuit::new(self.config()?));
        super::fleet::start_one(&circuit)?;
        Ok(CircuitBreakerLayer::new(circuit, shared(self.classify)))
    }

    /// Checks the configuration and builds the variant for any `tower::Service`: errors are
    /// failures (or what [`failure_if`](Self::failure_if) says), and a refusal is a
    /// [`CircuitOpen`](super::CircuitOpen) error.
    ///
    /// ```
    /// use tower_bulwark::circuit_breaker::CircuitBreakerLayer;
    ///
    /// let layer = CircuitBreakerLayer::consecutive_failures(5).build_generic()?;
    /// # drop(layer);
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    ///
    /// A classifier of HTTP responses does not fit it, and the service is refused where the
    /// layer wraps it, at compile time:
    ///
    /// ```compile_fail
    /// use http::{HeaderMap, StatusCode};
    /// use tower::{service_fn, Layer};
    /// use tower_bulwark::circuit_breaker::CircuitBreakerLayer;
    ///
    /// let layer = CircuitBreakerLayer::consecutive_failures(5)
    ///     .failure_if(|status: StatusCode, _: &HeaderMap| status == 429)
    ///     .build_generic()
    ///     .unwrap();
    /// let svc = layer.layer(service_fn(|n: u32| async move { Ok::<_, std::io::Error>(n) }));
    /// let _ = tower::ServiceExt::oneshot(svc, 1);
    /// ```
    pub fn build_generic(self) -> Result<GenericCircuitBreakerLayer<C>, ConfigError> {
        let circuit = Arc::new(Circuit::new(self.config()?));
        super::fleet::start_one(&circuit)?;
        Ok(GenericCircuitBreakerLayer::new(circuit, self.classify))
    }
}

/// The HTTP layers keep a custom classifier behind one `Arc`, and the default as `None`, so
/// that the common path judges inline instead of through an indirect call.
fn shared<C: ClassifyResponse>(classify: C) -> Option<ClassifyFn> {
    let any: &dyn Any = &classify;
    if any.is::<DefaultClassifier>() {
        None
    } else {
        Some(Arc::new(classify))
    }
}

/// Configures one breaker per key; made by [`CircuitBreakerBuilder::per_key`].
///
/// ```
/// use tower_bulwark::{circuit_breaker::CircuitBreakerLayer, key::Global};
///
/// let err = CircuitBreakerLayer::consecutive_failures(5).per_key(Global).max_keys(0).build().unwrap_err();
/// assert_eq!(err.to_string(), "`max_keys` must be > 0, got 0");
/// ```
pub struct KeyedCircuitBreakerBuilder<K, C = DefaultClassifier> {
    base: CircuitBreakerBuilder<C>,
    key: K,
    max_keys: usize,
    on_keyed_event: Option<KeyedEventFn>,
}

impl<K, C> fmt::Debug for KeyedCircuitBreakerBuilder<K, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedCircuitBreakerBuilder")
            .field("base", &self.base)
            .field("max_keys", &self.max_keys)
            .finish_non_exhaustive()
    }
}

impl<K, C> KeyedCircuitBreakerBuilder<K, C> {
    /// At most this many keys have their own circuit (default [`DEFAULT_MAX_KEYS`], 100 000,
    /// the crate's one default for keyed state; a circuit costs about 1 KiB, so lower it for a
    /// breaker per upstream host). When full, idle
    /// circuits (closed, nothing counted) are forgotten; if none is, new keys share one
    /// overflow circuit, and a warning says so.
    ///
    /// ```
    /// use tower_bulwark::{circuit_breaker::CircuitBreakerLayer, key::Global};
    ///
    /// let layer = CircuitBreakerLayer::consecutive_failures(5).per_key(Global).max_keys(100).build()?;
    /// # drop(layer);
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn max_keys(mut self, max_keys: usize) -> Self {
        self.max_keys = max_keys;
        self
    }

    /// Called with the key on every state change and refusal of any key's circuit (beside
    /// the builder's `on_event`, which does not see the key).
    ///
    /// ```
    /// use tower_bulwark::{circuit_breaker::{CircuitBreakerLayer, CircuitEvent}, key::Global};
    ///
    /// let layer = CircuitBreakerLayer::consecutive_failures(5)
    ///     .per_key(Global)
    ///     .on_keyed_event(|key, event| {
    ///         if let CircuitEvent::StateChanged { to, .. } = event {
    ///             eprintln!("breaker for {}: {}", key.redacted(), to.as_str());
    ///         }
    ///     })
    ///     .build()?;
    /// # drop(layer);
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn on_keyed_event(
        mut self,
        on_event: impl Fn(&Key, &CircuitEvent) + Send + Sync + 'static,
    ) -> Self {
        self.on_keyed_event = Some(Arc::new(on_event));
        self
    }

    /// Checks the configuration and builds the keyed HTTP layer.
    ///
    /// ```
    /// use tower_bulwark::{circuit_breaker::CircuitBreakerLayer, key::Global};
    ///
    /// let err = CircuitBreakerLayer::consecutive_failures(0).per_key(Global).build().unwrap_err();
    /// assert_eq!(err.field(), "failures");
    /// ```
    pub fn build(self) -> Result<KeyedCircuitBreakerLayer<K>, ConfigError>
    where
        C: ClassifyResponse,
    {
        if self.max_keys == 0 {
            return Err(ConfigError::new("max_keys", "must be > 0, got 0"));
        }
        let config = self.base.config()?;
        let circuits = Arc::new(Circuits::new(config, self.on_keyed_event, self.max_keys));
        super::fleet::start_keyed(&circuits)?;
        Ok(KeyedCircuitBreakerLayer::new(
            self.key,
            circuits,
            shared(self.base.classify),
        ))
    }
}
