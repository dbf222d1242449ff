//! Keyed breakers: one circuit per key (per upstream host, per tenant), bounded in number.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use http::request::Parts;
use http::{Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use super::circuit::Circuit;
use super::config::{CircuitEvent, CircuitState, Config};
use super::future::ResponseFuture;
use super::layer::ClassifyFn;
use super::service::{admit, Readiness};
use crate::key::{Key, KeyExtractor};
use crate::response::LayerBody;
use crate::util::{Entry, KeyedStore, Sweeping};

pub(crate) type KeyedEventFn = Arc<dyn Fn(&Key, &CircuitEvent) + Send + Sync>;

/// A full layer sweeps idle circuits at most this often: under a flood of new keys, a sweep
/// per request would cost O(keys) each.
const SWEEP_INTERVAL_NS: u64 = 100_000_000;

/// The circuits of a keyed layer, in the crate's one bounded keyed store.
pub(crate) struct Circuits {
    config: Config,
    on_keyed_event: Option<KeyedEventFn>,
    /// Requests with no key, and new keys while the store is full, share its one overflow
    /// circuit (a breaker's overflow is not split: one failing upstream among many unknown
    /// keys should still trip it).
    store: KeyedStore<Arc<Circuit>>,
    /// The overflow circuit has had a call: only then is it worth syncing with a fleet.
    overflow_used: AtomicBool,
}

impl Circuits {
    pub(crate) fn new(
        config: Config,
        on_keyed_event: Option<KeyedEventFn>,
        max_keys: usize,
    ) -> Self {
        let sweeping = Sweeping {
            every_ns: SWEEP_INTERVAL_NS,
            when_full_ns: SWEEP_INTERVAL_NS,
            overflow_slots: 1,
        };
        let overflow = Arc::new(Circuit::new(config.clone()));
        Self {
            store: KeyedStore::new(max_keys, sweeping, || overflow.clone()),
            config,
            on_keyed_event,
            overflow_used: AtomicBool::new(false),
        }
    }

    fn circuit(&self, key: Option<Key>) -> Arc<Circuit> {
        let Some(key) = key else {
            return self.overflow();
        };
        let now = crate::clock::duration_to_nanos(self.config.clock.now());
        let entry = self.store.with(
            &key,
            now,
            || Arc::new(Circuit::new(self.config_for(&key))),
            // Idle: closed, nothing counted, and held by nothing else (a call in flight keeps
            // its permit's clone, and its outcome must land in the circuit its key keeps using).
            |circuit| Arc::strong_count(circuit) == 1 && circuit.is_idle(),
            |entry| match entry {
                Entry::Own(circuit) => Some(circuit.clone()),
                Entry::Overflow(_) => None,
            },
        );
        entry.unwrap_or_else(|| self.overflow())
    }

    /// A new circuit's configuration: the layer's, with the keyed event callback told its key.
    fn config_for(&self, key: &Key) -> Config {
        let mut config = self.config.clone();
        if let Some(on_keyed_event) = &self.on_keyed_event {
            let (on_keyed_event, user_event, key) =
                (on_keyed_event.clone(), config.on_event.take(), key.clone());
            config.on_event = Some(Arc::new(move |event: &CircuitEvent| {
                if let Some(user_event) = &user_event {
                    user_event(event);
                }
                on_keyed_event(&key, event);
            }));
        }
        config
    }

    /// The overflow circuit, for a call.
    fn overflow(&self) -> Arc<Circuit> {
        if !self.overflow_used.load(Ordering::Relaxed)
            && !self.overflow_used.swap(true, Ordering::AcqRel)
        {
            // From now on it is synced: learn the fleet's state at once.
            self.overflow_circuit().wake_fleet();
        }
        self.overflow_circuit().clone()
    }

    /// The overflow circuit, to look at (its fleet link).
    pub(crate) fn overflow_circuit(&self) -> &Arc<Circuit> {
        &self.store.overflow_entries()[0]
    }

    /// The circuit of `key`, if it has one of its own.
    fn get(&self, key: &Key) -> Option<Arc<Circuit>> {
        self.store.with_existing(key, Arc::clone)
    }

    /// Every circuit with its key (`None`: the overflow circuit), for a fleet sync.
    #[cfg(feature = "redis")]
    pub(crate) fn snapshot(&self) -> Vec<(Option<Key>, Arc<Circuit>)> {
        let mut all = Vec::with_capacity(self.store.len() + 1);
        // Never used, it has nothing to tell and nobody to follow for.
        if self.overflow_used.load(Ordering::Relaxed) {
            all.push((None, self.overflow_circuit().clone()));
        }
        all.extend(
            self.store
                .collect(|key, circuit| (Some(key.clone()), circuit.clone())),
        );
        all
    }
}

/// A circuit breaker per key; made by
/// [`CircuitBreakerBuilder::per_key`](super::CircuitBreakerBuilder::per_key).
///
/// ```
/// use tower_bulwark::{circuit_breaker::{CircuitBreakerLayer, CircuitState}, key::{self, Key}};
///
/// // One breaker per upstream host: one failing host does not cut off the others.
/// let layer = CircuitBreakerLayer::consecutive_failures(5)
///     .per_key(key::from_fn(|parts: &http::request::Parts| {
///         parts.uri.authority().map(|a| Key::from(a.as_str()))
///     }))
///     .max_keys(1_000)
///     .build()?;
/// assert_eq!(layer.state_of(&Key::from("api.example.com")), None); // not seen yet
/// # Ok::<(), tower_bulwark::ConfigError>(())
/// ```
pub struct KeyedCircuitBreakerLayer<K> {
    key: Arc<K>,
    circuits: Arc<Circuits>,
    classify: Option<ClassifyFn>,
}

impl<K> Clone for KeyedCircuitBreakerLayer<K> {
    fn clone(&self) -> Self {
        Self {
            key: self.key.clone(),
            circuits: self.circuits.clone(),
            classify: self.classify.clone(),
        }
    }
}

impl<K> fmt::Debug for KeyedCircuitBreakerLayer<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedCircuitBreakerLayer")
            .field("keys", &self.circuits.store.len())
            .finish_non_exhaustive()
    }
}

impl<K> KeyedCircuitBreakerLayer<K> {
    pub(crate) fn new(key: K, circuits: Arc<Circuits>, classify: Option<ClassifyFn>) -> Self {
        Self {
            key: Arc::new(key),
            circuits,
            classify,
        }
    }

    /// The circuit of `key`, if it has one (a key's circuit is made on its first request).
    ///
    /// ```
    /// use tower_bulwark::{circuit_breaker::CircuitBreakerLayer, key::{Global, Key}};
    ///
    /// let layer = CircuitBreakerLayer::consecutive_failures(5).per_key(Global).build()?;
    /// assert!(layer.circuit_of(&Key::Global).is_none());
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn circuit_of(&self, key: &Key) -> Option<Arc<Circuit>> {
        self.circuits.get(key)
    }

    /// The state of `key`'s circuit, if it has one.
    ///
    /// ```
    /// use tower_bulwark::{circuit_breaker::CircuitBreakerLayer, key::{Global, Key}};
    ///
    /// let layer = CircuitBreakerLayer::consecutive_failures(5).per_key(Global).build()?;
    /// assert_eq!(layer.state_of(&Key::Global), None);
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn state_of(&self, key: &Key) -> Option<CircuitState> {
        self.circuits.get(key).map(|c| c.state())
    }

    /// How many keys have a circuit (at most `max_keys`).
    ///
    /// ```
    /// use tower_bulwark::{circuit_breaker::CircuitBreakerLayer, key::Global};
    ///
    /// let layer = CircuitBreakerLayer::consecutive_failures(5).per_key(Global).build()?;
    /// assert_eq!(layer.len(), 0);
    /// assert!(layer.is_empty());
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn len(&self) -> usize {
        self.circuits.store.len()
    }

    /// True when no key has a circuit yet.
    ///
    /// ```
    /// use tower_bulwark::{circuit_breaker::CircuitBreakerLayer, key::Global};
    ///
    /// let layer = CircuitBreakerLayer::consecutive_failures(5).per_key(Global).build()?;
    /// assert!(layer.is_empty());
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.circuits.store.len() == 0
    }

    /// The circuit shared by requests without a key and by new keys while `max_keys` are held.
    ///
    /// ```
    /// use tower_bulwark::{circuit_breaker::{CircuitBreakerLayer, CircuitState}, key::Global};
    ///
    /// let layer = CircuitBreakerLayer::consecutive_failures(5).per_key(Global).build()?;
    /// assert_eq!(layer.overflow_circuit().state(), CircuitState::Closed);
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn overflow_circuit(&self) -> &Circuit {
        self.circuits.overflow_circuit()
    }

    /// How this breaker's syncs with the fleet have gone (feature `redis`): calls, errors,
    /// timeouts, fallbacks, and whether it decides alone right now. `None` for a breaker kept
    /// in memory.
    ///
    /// ```
    /// use tower_bulwark::circuit_breaker::CircuitBreakerLayer;
    ///
    /// let layer = CircuitBreakerLayer::consecutive_failures(5).per_key(tower_bulwark::key::Global).build()?;
    /// assert_eq!(layer.fleet_stats(), None); // kept in memory
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    #[cfg(feature = "redis")]
    pub fn fleet_stats(&self) -> Option<super::FleetStats> {
        super::fleet::stats_of(self.circuits.overflow_circuit())
    }

    /// The Redis key holding `key`'s shared state machine (feature `redis`), for operators
    /// and tests: `None` for a breaker kept in memory. Header-derived keys (API keys) appear
    /// only as a hash.
    ///
    /// ```no_run
    /// use tower_bulwark::{circuit_breaker::CircuitBreakerLayer, key::{HeaderKey, Key}, redis::RedisBackend};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let layer = CircuitBreakerLayer::consecutive_failures(5)
    ///     .backend(RedisBackend::connect("redis://127.0.0.1/").await?)
    ///     .per_key(HeaderKey::new(http::HeaderName::from_static("x-tenant")))
    ///     .build()?;
    /// let name = layer.redis_key(&Key::from(http::HeaderValue::from_static("acme"))).unwrap();
    /// assert!(name.starts_with("{bulwark:hk:") && !name.contains("acme"));
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "redis")]
    pub fn redis_key(&self, key: &Key) -> Option<String> {
        super::fleet::redis_key_of(self.circuits.overflow_circuit(), key)
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
    /// let layer = CircuitBreakerLayer::consecutive_failures(5).per_key(tower_bulwark::key::Global).build()?;
    /// layer.sync_fleet().await?; // kept in memory: nothing to sync
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "redis")]
    pub async fn sync_fleet(&self) -> Result<(), crate::BackendError> {
        super::fleet::sync_now(self.circuits.overflow_circuit()).await
    }
}

impl<S, K> Layer<S> for KeyedCircuitBreakerLayer<K> {
    type Service = KeyedCircuitBreaker<S, K>;

    fn layer(&self, inner: S) -> Self::Service {
        KeyedCircuitBreaker {
            inner,
            layer: self.clone(),
        }
    }
}

/// An HTTP service behind one circuit breaker per key; see [`KeyedCircuitBreakerLayer`].
///
/// ```
/// # use std::convert::Infallible;
/// # use tower::{service_fn, Layer, ServiceExt};
/// use tower_bulwark::{circuit_breaker::{CircuitBreakerLayer, CircuitState, KeyedCircuitBreaker}, key::{HeaderKey, Key}};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let layer = CircuitBreakerLayer::consecutive_failures(1).per_key(HeaderKey::new(http::HeaderName::from_static("x-upstream"))).build()?;
/// let failing = service_fn(|_: http::Request<()>| async {
///     let mut res = http::Response::new(String::new());
///     *res.status_mut() = http::StatusCode::BAD_GATEWAY;
///     Ok::<_, Infallible>(res)
/// });
/// let svc: KeyedCircuitBreaker<_, _> = layer.layer(failing);
/// let req = |host: &'static str| http::Request::builder().header("x-upstream", host).body(()).unwrap();
/// svc.clone().oneshot(req("a")).await?; // a's breaker opens
/// assert_eq!(svc.clone().oneshot(req("a")).await?.status(), 503);
/// assert_eq!(svc.oneshot(req("b")).await?.status(), 502); // b has its own
/// assert_eq!(layer.state_of(&Key::from(http::HeaderValue::from_static("a"))), Some(CircuitState::Open));
/// # Ok(())
/// # }
/// ```
pub struct KeyedCircuitBreaker<S, K> {
    inner: S,
    layer: KeyedCircuitBreakerLayer<K>,
}

impl<S: Clone, K> Clone for KeyedCircuitBreaker<S, K> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            layer: self.layer.clone(),
        }
    }
}

impl<S: fmt::Debug, K> fmt::Debug for KeyedCircuitBreaker<S, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedCircuitBreaker")
            .field("inner", &self.inner)
            .field("layer", &self.layer)
            .finish()
    }
}

impl<S, K, ReqBody, ResBody> Service<Request<ReqBody>> for KeyedCircuitBreaker<S, K>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    K: KeyExtractor<Parts>,
    ResBody: LayerBody,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let mut req = req;
        let circuit = self
            .layer
            .circuits
            .circuit(self.layer.key.extract_request(&mut req));
        // The key, and so the circuit, is known only here: the inner service was polled.
        admit(
            &circuit,
            &mut self.inner,
            req,
            &self.layer.classify,
            Readiness::Ready,
        )
    }
}
