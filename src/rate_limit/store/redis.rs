//! The Redis rate-limit backend: one script call per decision, bounded by a deadline, with a
//! fail mode, a back-off on a failing Redis, and a cache of keys already refused.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use smallvec::SmallVec;

use super::denied::DeniedCache;
use super::script::{verdict, Call, LayerScript, RedisQuota};
use super::{Decision, MemoryRateLimiter, Origin, RateLimitBackend, Receipt, Verdict};
use crate::clock::{duration_to_nanos, Clock};
use crate::key::Key;
use crate::redis::{CallError, FailMode, Health, KeyNames, Permit, ProbeGuard, RedisBackend};
use crate::util::StripedCounter;

/// Rate decisions shared by every instance through Redis; built by
/// [`RateLimitBuilder::backend`](crate::rate_limit::RateLimitBuilder::backend).
///
/// Each decision is one `EVALSHA` of the layer's Lua script, which reads the server's clock,
/// checks every limit and spends the cost on all or none. A call that has not answered within
/// the deadline (default 50 ms) is given up and decided by the [`FailMode`]; after
/// consecutive failures Redis is left alone for a back-off and then probed. Keys Redis has
/// refused are answered locally until their retry time.
///
/// ```no_run
/// use std::time::Duration;
/// use tower_bulwark::{redis::RedisBackend, rate_limit::store::RedisRateLimiter};
/// use tower_bulwark::rate_limit::RateLimitLayer;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let redis = RedisBackend::connect("redis://127.0.0.1/").await?;
/// let layer = RateLimitLayer::token_bucket(100, Duration::from_secs(60)).backend(redis).build()?;
/// let backend: &RedisRateLimiter = layer.backend();
/// println!("{:?}", backend.stats());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisRateLimiter {
    inner: Arc<Inner>,
}

pub(crate) struct Settings {
    pub(crate) redis: RedisBackend,
    pub(crate) quotas: Vec<RedisQuota>,
    pub(crate) prefix: String,
    pub(crate) deadline: Duration,
    pub(crate) fail_mode: FailMode,
    /// The local limiter of `FailMode::Local`, its limits already divided.
    pub(crate) local: Option<MemoryRateLimiter>,
    pub(crate) failure_threshold: u32,
    pub(crate) backoff: Duration,
    pub(crate) max_backoff: Duration,
    pub(crate) denied_cache: usize,
    pub(crate) clock: Arc<dyn Clock>,
}

impl AsRef<Health> for Inner {
    fn as_ref(&self) -> &Health {
        &self.health
    }
}

struct Inner {
    redis: RedisBackend,
    script: LayerScript,
    names: KeyNames,
    deadline: Duration,
    fail_mode: FailMode,
    local: Option<MemoryRateLimiter>,
    health: Health,
    denied: DeniedCache,
    clock: Arc<dyn Clock>,
    nonce: AtomicU64,
    counters: RedisCounters,
}

#[derive(Default)]
struct RedisCounters {
    calls: StripedCounter,
    errors: StripedCounter,
    timeouts: StripedCounter,
    degraded: StripedCounter,
    denied_cache_hits: StripedCounter,
    refunds_dropped: StripedCounter,
}

/// What a [`RedisRateLimiter`] has done so far.
///
/// ```
/// let stats = tower_bulwark::rate_limit::store::RedisStats::default();
/// assert_eq!(stats.degraded, 0);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisStats {
    /// Script calls sent to Redis (decisions and refunds).
    pub calls: u64,
    /// Calls that failed (connection refused or lost, a script error, a bad reply).
    pub errors: u64,
    /// Calls given up at the deadline (counted in `errors` too).
    pub timeouts: u64,
    /// Decisions made by the fail mode: Redis failed, or was being left alone.
    pub degraded: u64,
    /// Decisions answered from the cache of refused keys, with no round trip.
    pub denied_cache_hits: u64,
    /// Refunds not sent: Redis was failing, or no Tokio runtime was running.
    pub refunds_dropped: u64,
    /// Times Redis began to be left alone after consecutive failures (each logged at `warn`).
    pub backoffs: u64,
}

impl fmt::Debug for RedisRateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisRateLimiter")
            .field("prefix", &self.inner.names.prefix())
            .field("deadline", &self.inner.deadline)
            .field("fail_mode", &self.inner.fail_mode)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.finish()
}

impl RedisRateLimiter {
    pub(crate) fn new(settings: Settings) -> Self {
        Self {
            inner: Arc::new(Inner {
                names: settings.redis.key_names(settings.prefix),
                redis: settings.redis,
                script: LayerScript::new(settings.quotas),
                deadline: settings.deadline,
                fail_mode: settings.fail_mode,
                local: settings.local,
                health: Health::new(
                    "rate limit",
                    "decisions use the fail mode",
                    settings.failure_threshold,
                    settings.backoff,
                    settings.max_backoff,
                ),
                denied: DeniedCache::new(settings.denied_cache),
                clock: settings.clock,
                nonce: AtomicU64::new(random_seed()),
                counters: RedisCounters::default(),
            }),
        }
    }

    /// Counts of calls, failures, degraded decisions and cache hits.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use tower_bulwark::{redis::RedisBackend, rate_limit::RateLimitLayer};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let redis = RedisBackend::connect("redis://127.0.0.1/").await?;
    /// let layer = RateLimitLayer::token_bucket(10, Duration::from_secs(1)).backend(redis).build()?;
    /// assert_eq!(layer.backend().stats().degraded, 0);
    /// # Ok(())
    /// # }
    /// ```
    pub fn stats(&self) -> RedisStats {
        let c = &self.inner.counters;
        RedisStats {
            calls: c.calls.get(),
            errors: c.errors.get(),
            timeouts: c.timeouts.get(),
            degraded: c.degraded.get(),
            denied_cache_hits: c.denied_cache_hits.get(),
            refunds_dropped: c.refunds_dropped.get(),
            backoffs: self.inner.health.backoffs(),
        }
    }

    /// True while Redis is being left alone after failures (decisions use the fail mode).
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use tower_bulwark::{redis::RedisBackend, rate_limit::RateLimitLayer};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let redis = RedisBackend::connect("redis://127.0.0.1/").await?;
    /// let layer = RateLimitLayer::token_bucket(10, Duration::from_secs(1)).backend(redis).build()?;
    /// assert!(!layer.backend().is_backing_off());
    /// # Ok(())
    /// # }
    /// ```
    pub fn is_backing_off(&self) -> bool {
        self.inner.health.is_backing_off()
    }

    /// The Redis keys a decision for `key` touches, one per limit, all with one hash tag.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use tower_bulwark::{redis::RedisBackend, key::Key, rate_limit::RateLimitLayer};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let redis = RedisBackend::connect("redis://127.0.0.1/").await?;
    /// let layer = RateLimitLayer::token_bucket(10, Duration::from_secs(1)).backend(redis).build()?;
    /// let keys = layer.backend().redis_keys(&Key::from("tenant-7"));
    /// assert_eq!(keys, [b"{bulwark:s:tenant-7}:default:tb:10:1000".to_vec()]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn redis_keys(&self, key: &Key) -> Vec<Vec<u8>> {
        self.inner.keys(key).into_vec()
    }

    /// Decides with a fixed time in place of the server's clock, bypassing the cache, the
    /// back-off and the fail mode, for the tests that hold the scripts to the memory
    /// algorithms. Internal and unstable (feature `internal-hooks`).
    #[cfg(feature = "internal-hooks")]
    pub async fn decide_at(
        &self,
        key: &Key,
        cost: u64,
        now: Duration,
    ) -> Result<Verdict, crate::BackendError> {
        let now_us = u64::try_from(now.as_micros()).unwrap_or(u64::MAX);
        Ok(self
            .inner
            .call(key, &Call::Decide { cost }, Some(now_us))
            .await?)
    }

    /// The decision's `EVALSHA` for `key`, as the store sends it, for benchmarks that time
    /// the bare command (run it with `RedisBackend::raw_query`). Internal and unstable
    /// (feature `internal-hooks`).
    #[cfg(feature = "internal-hooks")]
    pub fn raw_command(&self, key: &Key, cost: u64) -> redis::Cmd {
        let keys = self.inner.keys(key);
        let keys: SmallVec<[&[u8]; 2]> = keys.iter().map(Vec::as_slice).collect();
        let nonce = self.inner.nonce.fetch_add(1, Ordering::Relaxed);
        let script = &self.inner.script;
        script.script().command(false, &keys, &|cmd| {
            script.args(cmd, &Call::Decide { cost }, nonce, None)
        })
    }

    /// Refunds with a fixed time in place of the server's clock; see `decide_at`. Internal
    /// and unstable (feature `internal-hooks`).
    #[cfg(feature = "internal-hooks")]
    pub async fn refund_at(
        &self,
        key: &Key,
        cost: u64,
        counted_at: Duration,
        now: Duration,
    ) -> Result<(), crate::BackendError> {
        let call = Call::Refund {
            cost,
            counted_at_us: u64::try_from(counted_at.as_micros()).unwrap_or(u64::MAX),
        };
        let now_us = u64::try_from(now.as_micros()).unwrap_or(u64::MAX);
        Ok(self.inner.call(key, &call, Some(now_us)).await.map(drop)?)
    }
}

impl Inner {
    fn keys(&self, key: &Key) -> SmallVec<[Vec<u8>; 2]> {
        let base = self.names.tagged(key);
        self.script
            .quotas()
            .iter()
            .flat_map(RedisQuota::suffixes)
            .map(|suffix| {
                let mut name = Vec::with_capacity(base.len() + suffix.len());
                name.extend_from_slice(&base);
                name.extend_from_slice(suffix.as_bytes());
                name
            })
            .collect()
    }

    fn now_ns(&self) -> u64 {
        duration_to_nanos(self.clock.now())
    }

    /// One script call, bounded by the deadline.
    async fn call(
        &self,
        key: &Key,
        call: &Call,
        fixed_now_us: Option<u64>,
    ) -> Result<Verdict, CallError> {
        let keys = self.keys(key);
        let keys: SmallVec<[&[u8]; 2]> = keys.iter().map(Vec::as_slice).collect();
        let nonce = self.nonce.fetch_add(1, Ordering::Relaxed);
        let args = |cmd: &mut redis::Cmd| self.script.args(cmd, call, nonce, fixed_now_us);
        self.counters.calls.add(1);
        let result = self
            .script
            .script()
            .call(&self.redis, self.deadline, &keys, &args)
            .await
            .and_then(|value| match call {
                Call::Decide { .. } => verdict(value, self.script.quotas().len()),
                Call::Refund { .. } => Ok(Verdict {
                    allowed: true,
                    retry_after: Duration::ZERO,
                    limits: SmallVec::new(),
                    counted_at: Duration::ZERO,
                    origin: Origin::Store,
                }),
            });
        if let Err(err) = &result {
            self.counters.errors.add(1);
            if err.is_timeout() {
                self.counters.timeouts.add(1);
            }
        }
        result
    }

    /// `guard` is made by the caller and moved in: a probe dropped before it ends (even before
    /// its first poll: the client went away) must not hold the one probe slot for ever.
    async fn decide_remote(
        self: Arc<Self>,
        key: Key,
        cost: u64,
        mut guard: ProbeGuard<Inner>,
    ) -> Verdict {
        // Read before the call: a refusal's retry time counts from before Redis read its
        // clock, not from when the answer was finally polled.
        let sent_at = self.now_ns();
        let result = self.call(&key, &Call::Decide { cost }, None).await;
        let permit = guard.settle();
        match result {
            Ok(verdict) => {
                self.health.succeeded(permit);
                self.denied.remember(&key, cost, sent_at, &verdict);
                verdict
            }
            Err(err) => {
                tracing::debug!(key = %key.redacted(), error = %err, "rate limit: redis failed, using the fail mode");
                if err.is_outage() {
                    self.health.failed(permit, self.now_ns(), &err);
                } else {
                    // Redis answered, wrongly (a script error, a bad reply): not an outage.
                    self.health.succeeded(permit);
                }
                self.fallback(&key, cost)
            }
        }
    }

    /// The fail mode's answer.
    fn fallback(&self, key: &Key, cost: u64) -> Verdict {
        self.counters.degraded.add(1);
        let now = self.clock.now();
        let unlimited = |allowed: bool, retry_after: Duration| Verdict {
            allowed,
            retry_after,
            limits: SmallVec::new(),
            counted_at: now,
            origin: Origin::Nowhere,
        };
        match (&self.fail_mode, &self.local) {
            (FailMode::Local { .. }, Some(local)) => {
                let mut verdict = local.decide_now(key, cost);
                verdict.origin = Origin::Fallback;
                verdict
            }
            (FailMode::Closed, _) => unlimited(false, CLOSED_RETRY_AFTER),
            _ => unlimited(true, Duration::ZERO),
        }
    }
}

/// The `Retry-After` of a refusal made because Redis is unreachable and the mode is `Closed`.
const CLOSED_RETRY_AFTER: Duration = Duration::from_secs(1);

/// A decision on its way from Redis; always ends in a verdict (the fail mode's, if Redis
/// failed or missed the deadline).
///
/// ```
/// use std::time::Duration;
/// use tower_bulwark::redis::{FailMode, RedisBackend};
/// use tower_bulwark::rate_limit::store::{Decision, RateLimitBackend, RedisDecision};
/// use tower_bulwark::{key::Key, rate_limit::RateLimitLayer};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let redis = RedisBackend::connect_lazy("redis://127.0.0.1:1/")?; // nothing listens there
/// let layer = RateLimitLayer::fixed_window(10, Duration::from_secs(1))
///     .backend(redis)
///     .fail_mode(FailMode::Closed)
///     .build()?;
/// if let Decision::Pending(decision) = layer.backend().decide(&Key::Int(1), 1) {
///     let decision: RedisDecision = decision;
///     let verdict = decision.await; // the deadline passes or the connection is refused
///     assert!(!verdict.allowed() && verdict.degraded());
/// }
/// # Ok(())
/// # }
/// ```
pub struct RedisDecision {
    future: Pin<Box<dyn Future<Output = Verdict> + Send>>,
}

impl fmt::Debug for RedisDecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisDecision").finish_non_exhaustive()
    }
}

impl Future for RedisDecision {
    type Output = Verdict;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Verdict> {
        self.future.as_mut().poll(cx)
    }
}

impl RateLimitBackend for RedisRateLimiter {
    type Pending = RedisDecision;

    fn decide(&self, key: &Key, cost: u64) -> Decision<RedisDecision> {
        let inner = &self.inner;
        let now = inner.now_ns();
        if let Some(verdict) = inner.denied.lookup(key, cost, now) {
            inner.counters.denied_cache_hits.add(1);
            return Decision::Ready(verdict);
        }
        let permit = inner.health.permit(now);
        if permit == Permit::Skip {
            return Decision::Ready(inner.fallback(key, cost));
        }
        let guard = ProbeGuard::new(inner.clone(), permit);
        let future = inner.clone().decide_remote(key.clone(), cost, guard);
        Decision::Pending(RedisDecision {
            future: Box::pin(future),
        })
    }

    fn refund(&self, key: &Key, cost: u64, receipt: Receipt) {
        let inner = &self.inner;
        match receipt.origin {
            Origin::Nowhere => {}
            Origin::Fallback => {
                if let Some(local) = &inner.local {
                    local.refund_now(key, cost, receipt.counted_at);
                }
            }
            Origin::Store => {
                // The refund may make room: a cached refusal would no longer be certain.
                inner.denied.forget(key);
                let runtime = tokio::runtime::Handle::try_current();
                let (Ok(runtime), false) = (runtime, inner.health.is_backing_off()) else {
                    inner.counters.refunds_dropped.add(1);
                    return;
                };
                let inner = inner.clone();
                let key = key.clone();
                let call = Call::Refund {
                    cost,
                    counted_at_us: u64::try_from(receipt.counted_at.as_micros())
                        .unwrap_or(u64::MAX),
                };
                runtime.spawn(async move {
                    if let Err(err) = inner.call(&key, &call, None).await {
                        inner.counters.refunds_dropped.add(1);
                        tracing::debug!(key = %key.redacted(), error = %err, "rate limit: refund not sent");
                    }
                });
            }
        }
    }
}
