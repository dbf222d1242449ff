//! Keyed breakers: one circuit per key (per upstream host, per tenant), bounded in number.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
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
use crate::response::ResponseBody;

/// The default bound on circuits one keyed layer holds.
pub(crate) const DEFAULT_MAX_KEYS: usize = 10_000;

pub(crate) type KeyedEventFn = Arc<dyn Fn(&Key, &CircuitEvent) + Send + Sync>;

/// The circuits of a keyed layer.
pub(crate) struct Circuits {
    config: Config,
    on_keyed_event: Option<KeyedEventFn>,
    map: DashMap<Key, Arc<Circuit>>,
    /// About how many circuits the map holds: counted on insert, recounted after a sweep, so
    /// a miss does not read-lock every shard (`DashMap::len`) to check the bound.
    count: AtomicUsize,
    max_keys: usize,
    /// Shared by requests with no key, and by new keys while the map is full.
    overflow: Arc<Circuit>,
    /// The overflow circuit has had a call: only then is it worth syncing with a fleet.
    overflow_used: AtomicBool,
    overflowed: AtomicU64,
    /// When the map was last swept (clock nanoseconds; `NEVER` before the first).
    last_sweep: AtomicU64,
}

impl Circuits {
    pub(crate) fn new(
        config: Config,
        on_keyed_event: Option<KeyedEventFn>,
        max_keys: usize,
    ) -> Self {
        Self {
            overflow: Arc::new(Circuit::new(config.clone())),
            config,
            on_keyed_event,
            map: DashMap::new(),
            count: AtomicUsize::new(0),
            overflow_used: AtomicBool::new(false),
            max_keys,
            overflowed: AtomicU64::new(0),
            last_sweep: AtomicU64::new(NEVER),
        }
    }

    fn circuit(&self, key: Option<Key>) -> Arc<Circuit> {
        let Some(key) = key else {
            return self.overflow();
        };
        if let Some(circuit) = self.map.get(&key) {
            return circuit.clone();
        }
        if self.count.load(Ordering::Relaxed) >= self.max_keys {
            self.sweep();
            if self.count.load(Ordering::Relaxed) >= self.max_keys {
                let n = self.overflowed.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    tracing::warn!(
                        max_keys = self.max_keys,
                        overflowed = n,
                        "circuit breaker: too many keys, newcomers share one circuit"
                    );
                }
                return self.overflow();
            }
        }
        let entry = match self.map.entry(key.clone()) {
            Entry::Occupied(entry) => return entry.get().clone(),
            Entry::Vacant(entry) => entry,
        };
        self.count.fetch_add(1, Ordering::Relaxed);
        entry
            .insert({
                let mut config = self.config.clone();
                if let Some(on_keyed_event) = &self.on_keyed_event {
                    let (on_keyed_event, user_event) =
                        (on_keyed_event.clone(), config.on_event.take());
                    config.on_event = Some(Arc::new(move |event: &CircuitEvent| {
                        if let Some(user_event) = &user_event {
                            user_event(event);
                        }
                        on_keyed_event(&key, event);
                    }));
                }
                Arc::new(Circuit::new(config))
            })
            .clone()
    }
}

impl Circuits {
    /// The overflow circuit, for a call.
    fn overflow(&self) -> Arc<Circuit> {
        if !self.overflow_used.load(Ordering::Relaxed)
            && !self.overflow_used.swap(true, Ordering::AcqRel)
        {
            // From now on it is synced: learn the fleet's state at once.
            #[cfg(feature = "redis")]
            self.overflow.wake_fleet();
        }
        self.overflow.clone()
    }

    /// The overflow circuit, to look at (its fleet link).
    #[cfg(feature = "redis")]
    pub(crate) fn overflow_circuit(&self) -> &Arc<Circuit> {
        &self.overflow
    }

    /// Every circuit with its key (`None`: the overflow circuit), for a fleet sync.
    #[cfg(feature = "redis")]
    pub(crate) fn snapshot(&self) -> Vec<(Option<Key>, Arc<Circuit>)> {
        let mut all = Vec::with_capacity(self.map.len() + 1);
        // Never used, it has nothing to tell and nobody to follow for.
        if self.overflow_used.load(Ordering::Relaxed) {
            all.push((None, self.overflow.clone()));
        }
        all.extend(
            self.map
                .iter()
                .map(|entry| (Some(entry.key().clone()), entry.value().clone())),
        );
        all
    }
}

/// A full map is swept at most this often: under a flood of new keys, a sweep per request
/// would cost O(keys) each.
const SWEEP_INTERVAL_NS: u64 = 100_000_000;
const NEVER: u64 = u64::MAX;

impl Circuits {
    /// Forgets idle circuits: closed, nothing counted, and held by nothing else (a call in
    /// flight keeps its permit's clone, and its outcome must land in the circuit its key keeps
    /// using). At most once per `SWEEP_INTERVAL_NS`.
    fn sweep(&self) {
        let now = crate::clock::duration_to_nanos(self.config.clock.now());
        let last = self.last_sweep.load(Ordering::Relaxed);
        if last != NEVER && now.saturating_sub(last) < SWEEP_INTERVAL_NS {
            return;
        }
        if self
            .last_sweep
            .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            self.map
                .retain(|_, circuit| Arc::strong_count(circuit) > 1 || !circuit.is_idle());
            self.count.store(self.map.len(), Ordering::Relaxed);
        }
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
            .field("keys", &self.circuits.map.len())
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
        self.circuits.map.get(key).map(|c| c.clone())
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
        self.circuits.map.get(key).map(|c| c.state())
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
        self.circuits.map.len()
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
        self.circuits.map.is_empty()
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
        &self.circuits.overflow
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
        super::fleet::stats_of(&self.circuits.overflow)
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
    pub async fn sync_fleet(&self) -> Result<(), crate::backend::BackendError> {
        super::fleet::sync_now(&self.circuits.overflow).await
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
///     let mut res = http::Response::new(());
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
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let (parts, body) = req.into_parts();
        let circuit = self.layer.circuits.circuit(self.layer.key.extract(&parts));
        let req = Request::from_parts(parts, body);
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
