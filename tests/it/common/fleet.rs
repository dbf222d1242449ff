//! Helpers of the fleet-breaker tests (`redis_circuit_breaker*.rs`): an upstream whose answer
//! and pace a test sets, request builders, the settings the tests share, and the instances of
//! a fleet the tests sync by hand.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use tokio::sync::Semaphore;
use tower::{service_fn, Service, ServiceExt};
use tower_bulwark::circuit_breaker::{
    CircuitBreakerBuilder, CircuitBreakerLayer, KeyedCircuitBreakerBuilder,
    RedisCircuitBreakerBuilder,
};
use tower_bulwark::key::HeaderKey;
use tower_bulwark::redis::RedisBackend;

use super::redis_server::RedisServer;

/// No automatic sync during a test: the tests sync by hand.
pub const NEVER: Duration = Duration::from_secs(3600);
/// The bound on every wait for something outside the layer.
pub const PATIENCE: Duration = Duration::from_secs(20);
/// The deadline the tests configure: a healthy Redis on a loaded machine must make it.
pub const PATIENT_DEADLINE: Duration = Duration::from_secs(5);
/// The hash of an unkeyed breaker with the default prefix.
pub const GLOBAL: &str = "{bulwark:global}:cb";

/// An upstream answering with whatever status its handle holds; while held, calls hang
/// (counted in flight) until released.
#[derive(Clone)]
pub struct Upstream {
    status: Arc<AtomicU16>,
    held: Arc<AtomicBool>,
    gate: Arc<Semaphore>,
    in_flight: Arc<AtomicUsize>,
}

impl Upstream {
    pub fn new(status: u16) -> Self {
        Self {
            status: Arc::new(AtomicU16::new(status)),
            held: Arc::new(AtomicBool::new(false)),
            gate: Arc::new(Semaphore::new(0)),
            in_flight: Arc::new(AtomicUsize::new(0)),
        }
    }

    pub fn set(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    /// From now on, calls hang until [`release`](Self::release).
    pub fn hold(&self) {
        self.held.store(true, Ordering::SeqCst);
    }

    /// Lets every held call (and the next few) go on.
    pub fn release(&self) {
        self.gate.add_permits(64);
    }

    /// Calls started and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    pub fn service(
        &self,
    ) -> impl Service<Request<()>, Response = Response<String>, Error = Infallible, Future = impl Send>
           + Clone
           + Send
           + 'static {
        let this = self.clone();
        service_fn(move |_req: Request<()>| {
            let this = this.clone();
            async move {
                this.in_flight.fetch_add(1, Ordering::SeqCst);
                if this.held.load(Ordering::SeqCst) {
                    let _ = this.gate.acquire().await.map(|permit| permit.forget());
                }
                this.in_flight.fetch_sub(1, Ordering::SeqCst);
                let mut res = Response::new(String::new());
                *res.status_mut() =
                    StatusCode::from_u16(this.status.load(Ordering::SeqCst)).unwrap();
                Ok::<_, Infallible>(res)
            }
        })
    }
}

/// The status `svc` answers `req` with.
pub async fn call<S, B>(svc: &S, req: Request<()>) -> StatusCode
where
    S: Service<Request<()>, Response = Response<B>, Error = Infallible> + Clone,
{
    svc.clone().oneshot(req).await.unwrap().status()
}

pub fn req() -> Request<()> {
    Request::new(())
}

/// A request for one upstream (the key of the tests' keyed breakers).
pub fn req_for(upstream: &str) -> Request<()> {
    Request::builder()
        .header("x-upstream", upstream)
        .body(())
        .unwrap()
}

/// A connection of its own to `server`: one instance of the fleet.
pub async fn redis(server: &RedisServer) -> RedisBackend {
    RedisBackend::connect(&server.url()).await.unwrap()
}

/// `policy` as one instance of a fleet the tests sync by hand: on `redis`, no automatic sync
/// ([`NEVER`]), the [`PATIENT_DEADLINE`].
pub fn member(policy: CircuitBreakerBuilder, redis: RedisBackend) -> RedisCircuitBreakerBuilder {
    policy
        .backend(redis)
        .sync_interval(NEVER)
        .deadline(PATIENT_DEADLINE)
}

/// Instances A and B of one fleet on `server`, each made by `build` on a connection of its own.
pub async fn pair<L>(server: &RedisServer, build: impl Fn(RedisBackend) -> L) -> (L, L) {
    let a = build(redis(server).await);
    let b = build(redis(server).await);
    (a, b)
}

/// Instances A and B of one fleet on `server`: `policy()` built as a [`member`] each.
pub async fn fleet_pair(
    server: &RedisServer,
    policy: impl Fn() -> CircuitBreakerBuilder,
) -> (CircuitBreakerLayer, CircuitBreakerLayer) {
    pair(server, |redis| member(policy(), redis).build().unwrap()).await
}

/// The key of the keyed breakers: the `x-upstream` header, as [`req_for`] sets it.
pub fn upstream_key() -> HeaderKey {
    HeaderKey::new(http::HeaderName::from_static("x-upstream"))
}

/// One instance of a keyed fleet: `policy` as a [`member`] on a connection of its own to
/// `server`, one breaker per [`upstream_key`].
pub async fn keyed_member(
    server: &RedisServer,
    policy: CircuitBreakerBuilder,
) -> KeyedCircuitBreakerBuilder<HeaderKey> {
    member(policy, redis(server).await).per_key(upstream_key())
}
