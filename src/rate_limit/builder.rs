//! The builder shared by the HTTP layer and the non-HTTP variant.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use http::request::Parts;
use http::Response;

use super::algorithm::Quota;
use super::config::{Counters, MissingKey, Policy, RateLimited, Shared};
use super::generic::GenericRateLimitLayer;
use super::headers::{HeaderConfig, ResetFormat};
use super::layer::RateLimitLayer;
use super::limit::Limit;
use super::store::MemoryRateLimiter;
use crate::clock::{Clock, SystemClock};
use crate::error::ConfigError;
use crate::key::Global;

pub use crate::util::DEFAULT_MAX_KEYS;

/// Configures a rate limit; made by [`RateLimitLayer::builder`] or one of the algorithm
/// shortcuts such as [`RateLimitLayer::token_bucket`].
///
/// Every setting has a documented default; [`build`](Self::build) checks them together and names
/// the first bad field.
///
/// ```
/// use std::time::Duration;
/// use tower_bulwark::key::PeerIp;
/// use tower_bulwark::rate_limit::RateLimitLayer;
///
/// let layer = RateLimitLayer::token_bucket(100, Duration::from_secs(60))
///     .burst(20)
///     .key(PeerIp)
///     .skip_failed(true)
///     .build()?;
/// # drop(layer);
/// # Ok::<(), tower_bulwark::ConfigError>(())
/// ```
pub struct RateLimitBuilder<K = Global> {
    limits: Vec<Limit>,
    key: K,
    missing_key: MissingKey,
    cost: Option<super::config::CostFn>,
    legacy_headers: bool,
    ietf_headers: bool,
    reset_format: ResetFormat,
    skip_successful: bool,
    skip_failed: bool,
    shadow: bool,
    max_keys: usize,
    clock: Arc<dyn Clock>,
    rejection: Option<super::config::RejectionFn>,
    /// A setting made where it cannot apply, reported by `build`.
    misplaced: Option<ConfigError>,
}

impl<K: Clone> Clone for RateLimitBuilder<K> {
    fn clone(&self) -> Self {
        Self {
            limits: self.limits.clone(),
            key: self.key.clone(),
            missing_key: self.missing_key.clone(),
            cost: self.cost.clone(),
            legacy_headers: self.legacy_headers,
            ietf_headers: self.ietf_headers,
            reset_format: self.reset_format,
            skip_successful: self.skip_successful,
            skip_failed: self.skip_failed,
            shadow: self.shadow,
            max_keys: self.max_keys,
            clock: self.clock.clone(),
            rejection: self.rejection.clone(),
            misplaced: self.misplaced.clone(),
        }
    }
}

impl<K> fmt::Debug for RateLimitBuilder<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitBuilder")
            .field("limits", &self.limits)
            .field("missing_key", &self.missing_key)
            .field("shadow", &self.shadow)
            .field("max_keys", &self.max_keys)
            .finish_non_exhaustive()
    }
}

impl RateLimitBuilder<Global> {
    pub(crate) fn new() -> Self {
        Self {
            limits: Vec::new(),
            key: Global,
            missing_key: MissingKey::default(),
            cost: None,
            legacy_headers: true,
            ietf_headers: true,
            reset_format: ResetFormat::default(),
            skip_successful: false,
            skip_failed: false,
            shadow: false,
            max_keys: DEFAULT_MAX_KEYS,
            clock: Arc::new(SystemClock::new()),
            rejection: None,
            misplaced: None,
        }
    }
}

impl<K> RateLimitBuilder<K> {
    /// Adds a limit; all limits are checked together and a request passes only if every one
    /// allows it (a request refused by one consumes nothing from the others).
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_bulwark::{key::Key, rate_limit::{Limit, RateLimitLayer}};
    ///
    /// let layer = RateLimitLayer::builder()
    ///     .limit(Limit::fixed_window(10, Duration::from_secs(1)))
    ///     .limit(Limit::fixed_window(1000, Duration::from_secs(3600)))
    ///     .build()?;
    /// let verdict = layer.backend().decide_now(&Key::Global, 1);
    /// assert_eq!(verdict.limits().len(), 2); // both limits were checked and spent
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn limit(mut self, limit: Limit) -> Self {
        self.limits.push(limit);
        self
    }

    /// Sets the burst of the last limit added (token bucket only; default: its `limit`).
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_bulwark::{clock::ManualClock, key::Key, rate_limit::RateLimitLayer};
    ///
    /// let layer = RateLimitLayer::token_bucket(1, Duration::from_secs(60))
    ///     .burst(3)
    ///     .clock(ManualClock::new())
    ///     .build()?;
    /// let backend = layer.backend();
    /// assert!((0..3).all(|_| backend.decide_now(&Key::Global, 1).allowed()));
    /// assert!(!backend.decide_now(&Key::Global, 1).allowed());
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn burst(self, burst: u64) -> Self {
        self.edit_last("burst", |limit| limit.burst(burst))
    }

    /// Names the last limit added, for the `RateLimit-Policy` and `RateLimit` headers.
    ///
    /// ```
    /// # use std::{convert::Infallible, time::Duration};
    /// # use tower::{service_fn, Layer, ServiceExt};
    /// # use tower_bulwark::rate_limit::RateLimitLayer;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let ok = service_fn(|_: http::Request<()>| async { Ok::<_, Infallible>(http::Response::new(String::new())) });
    /// let layer = RateLimitLayer::token_bucket(100, Duration::from_secs(60))
    ///     .name("per-minute")
    ///     .build()?;
    /// let res = layer.layer(ok).oneshot(http::Request::new(())).await?;
    /// assert_eq!(res.headers()["ratelimit-policy"], r#""per-minute";q=100;w=60"#);
    /// # Ok(())
    /// # }
    /// ```
    pub fn name(self, name: impl Into<String>) -> Self {
        let name = name.into();
        self.edit_last("name", |limit| limit.name(name))
    }

    fn edit_last(mut self, field: &'static str, edit: impl FnOnce(Limit) -> Limit) -> Self {
        match self.limits.pop() {
            Some(last) => self.limits.push(edit(last)),
            None => {
                self.misplaced.get_or_insert(ConfigError::new(
                    field,
                    "must follow a limit: add one with `.limit(...)` or start from an algorithm \
                     such as `RateLimitLayer::token_bucket`",
                ));
            }
        }
        self
    }

    /// Which key requests are counted under (default [`Global`]: one limit for all).
    ///
    /// ```
    /// # use std::{convert::Infallible, time::Duration};
    /// # use tower::{service_fn, Layer, ServiceExt};
    /// # use tower_bulwark::rate_limit::RateLimitLayer;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let ok = service_fn(|_: http::Request<()>| async { Ok::<_, Infallible>(http::Response::new(String::new())) });
    /// use tower_bulwark::key::HeaderKey;
    ///
    /// let layer = RateLimitLayer::fixed_window(1, Duration::from_secs(60))
    ///     .key(HeaderKey::new(http::HeaderName::from_static("x-api-key")))
    ///     .build()?;
    /// let svc = layer.layer(ok);
    /// let req = |key: &str| http::Request::get("/").header("x-api-key", key).body(()).unwrap();
    /// assert_eq!(svc.clone().oneshot(req("alice")).await?.status(), 200);
    /// assert_eq!(svc.clone().oneshot(req("alice")).await?.status(), 429);
    /// assert_eq!(svc.clone().oneshot(req("bob")).await?.status(), 200); // a bucket of its own
    /// # Ok(())
    /// # }
    /// ```
    pub fn key<K2>(self, key: K2) -> RateLimitBuilder<K2> {
        RateLimitBuilder {
            limits: self.limits,
            key,
            missing_key: self.missing_key,
            cost: self.cost,
            legacy_headers: self.legacy_headers,
            ietf_headers: self.ietf_headers,
            reset_format: self.reset_format,
            skip_successful: self.skip_successful,
            skip_failed: self.skip_failed,
            shadow: self.shadow,
            max_keys: self.max_keys,
            clock: self.clock,
            rejection: self.rejection,
            misplaced: self.misplaced,
        }
    }

    /// The answer when the key extractor finds no key (default: reject with 500).
    ///
    /// ```
    /// # use std::{convert::Infallible, time::Duration};
    /// # use tower::{service_fn, Layer, ServiceExt};
    /// # use tower_bulwark::rate_limit::RateLimitLayer;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let ok = service_fn(|_: http::Request<()>| async { Ok::<_, Infallible>(http::Response::new(String::new())) });
    /// use tower_bulwark::{key::HeaderKey, rate_limit::MissingKey};
    ///
    /// let layer = RateLimitLayer::fixed_window(10, Duration::from_secs(1))
    ///     .key(HeaderKey::new(http::HeaderName::from_static("x-api-key")))
    ///     .on_missing_key(MissingKey::Reject(http::StatusCode::UNAUTHORIZED))
    ///     .build()?;
    /// let res = layer.layer(ok).oneshot(http::Request::new(())).await?; // no x-api-key
    /// assert_eq!(res.status(), 401);
    /// # Ok(())
    /// # }
    /// ```
    pub fn on_missing_key(mut self, answer: MissingKey) -> Self {
        self.missing_key = answer;
        self
    }

    /// The cost of a request, from its head (default: 1). A cost of 0 only reads the limit.
    ///
    /// A cost above a limit's capacity (`burst` for a token bucket, `limit` for the others)
    /// can never be admitted; its 429 still carries a `Retry-After` (the time until the limit
    /// is fully restored), so keep costs within capacity.
    ///
    /// ```
    /// # use std::{convert::Infallible, time::Duration};
    /// # use tower::{service_fn, Layer, ServiceExt};
    /// # use tower_bulwark::rate_limit::RateLimitLayer;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let ok = service_fn(|_: http::Request<()>| async { Ok::<_, Infallible>(http::Response::new(String::new())) });
    /// let layer = RateLimitLayer::fixed_window(10, Duration::from_secs(60))
    ///     .cost(|req| if req.uri.path() == "/export" { 10 } else { 1 })
    ///     .build()?;
    /// let res = layer.layer(ok).oneshot(http::Request::get("/export").body(())?).await?;
    /// assert_eq!(res.headers()["x-ratelimit-remaining"], "0"); // one export spent all 10
    /// # Ok(())
    /// # }
    /// ```
    pub fn cost(mut self, cost: impl Fn(&Parts) -> u64 + Send + Sync + 'static) -> Self {
        self.cost = Some(Arc::new(cost));
        self
    }

    /// Switches all rate-limit headers on or off at once (default on). `Retry-After` on a 429
    /// is always sent.
    ///
    /// ```
    /// # use std::{convert::Infallible, time::Duration};
    /// # use tower::{service_fn, Layer, ServiceExt};
    /// # use tower_bulwark::rate_limit::RateLimitLayer;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let ok = service_fn(|_: http::Request<()>| async { Ok::<_, Infallible>(http::Response::new(String::new())) });
    /// let layer = RateLimitLayer::fixed_window(10, Duration::from_secs(1))
    ///     .headers(false)
    ///     .build()?;
    /// let res = layer.layer(ok).oneshot(http::Request::new(())).await?;
    /// assert!(res.headers().is_empty());
    /// # Ok(())
    /// # }
    /// ```
    pub fn headers(self, on: bool) -> Self {
        self.legacy_headers(on).ietf_headers(on)
    }

    /// `X-RateLimit-Limit` / `-Remaining` / `-Reset` (default on).
    ///
    /// ```
    /// # use std::{convert::Infallible, time::Duration};
    /// # use tower::{service_fn, Layer, ServiceExt};
    /// # use tower_bulwark::rate_limit::RateLimitLayer;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let ok = service_fn(|_: http::Request<()>| async { Ok::<_, Infallible>(http::Response::new(String::new())) });
    /// let layer = RateLimitLayer::fixed_window(10, Duration::from_secs(1))
    ///     .legacy_headers(false)
    ///     .build()?;
    /// let res = layer.layer(ok).oneshot(http::Request::new(())).await?;
    /// assert!(!res.headers().contains_key("x-ratelimit-limit"));
    /// assert!(res.headers().contains_key("ratelimit"));
    /// # Ok(())
    /// # }
    /// ```
    pub fn legacy_headers(mut self, on: bool) -> Self {
        self.legacy_headers = on;
        self
    }

    /// The IETF draft's `RateLimit-Policy` and `RateLimit` (default on).
    ///
    /// ```
    /// # use std::{convert::Infallible, time::Duration};
    /// # use tower::{service_fn, Layer, ServiceExt};
    /// # use tower_bulwark::rate_limit::RateLimitLayer;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let ok = service_fn(|_: http::Request<()>| async { Ok::<_, Infallible>(http::Response::new(String::new())) });
    /// let layer = RateLimitLayer::fixed_window(10, Duration::from_secs(1))
    ///     .ietf_headers(false)
    ///     .build()?;
    /// let res = layer.layer(ok).oneshot(http::Request::new(())).await?;
    /// assert!(!res.headers().contains_key("ratelimit"));
    /// assert_eq!(res.headers()["x-ratelimit-limit"], "10");
    /// # Ok(())
    /// # }
    /// ```
    pub fn ietf_headers(mut self, on: bool) -> Self {
        self.ietf_headers = on;
        self
    }

    /// How `X-RateLimit-Reset` is written (default: seconds from now).
    ///
    /// ```
    /// # use std::{convert::Infallible, time::Duration};
    /// # use tower::{service_fn, Layer, ServiceExt};
    /// # use tower_bulwark::rate_limit::RateLimitLayer;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let ok = service_fn(|_: http::Request<()>| async { Ok::<_, Infallible>(http::Response::new(String::new())) });
    /// use tower_bulwark::{clock::ManualClock, rate_limit::ResetFormat};
    ///
    /// let layer = RateLimitLayer::fixed_window(10, Duration::from_secs(60))
    ///     .reset_format(ResetFormat::UnixEpoch)
    ///     .clock(ManualClock::with_unix_origin(Duration::from_secs(1_000)))
    ///     .build()?;
    /// let res = layer.layer(ok).oneshot(http::Request::new(())).await?;
    /// assert_eq!(res.headers()["x-ratelimit-reset"], "1060"); // 1000 + the 60 s window
    /// # Ok(())
    /// # }
    /// ```
    pub fn reset_format(mut self, format: ResetFormat) -> Self {
        self.reset_format = format;
        self
    }

    /// Gives back the cost of requests that succeed (status < 400): only failures count,
    /// as for a login endpoint that limits failed attempts (default off).
    ///
    /// ```
    /// # use std::{convert::Infallible, time::Duration};
    /// # use tower::{service_fn, Layer, ServiceExt};
    /// # use tower_bulwark::rate_limit::RateLimitLayer;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let ok = service_fn(|_: http::Request<()>| async { Ok::<_, Infallible>(http::Response::new(String::new())) });
    /// let layer = RateLimitLayer::fixed_window(1, Duration::from_secs(60))
    ///     .skip_successful(true)
    ///     .build()?;
    /// let svc = layer.layer(ok); // always answers 200
    /// assert_eq!(svc.clone().oneshot(http::Request::new(())).await?.status(), 200);
    /// assert_eq!(svc.clone().oneshot(http::Request::new(())).await?.status(), 200);
    /// assert_eq!(layer.stats().refunded, 2);
    /// # Ok(())
    /// # }
    /// ```
    pub fn skip_successful(mut self, on: bool) -> Self {
        self.skip_successful = on;
        self
    }

    /// Gives back the cost of requests that fail (status >= 400, or an error from the inner
    /// service) (default off).
    ///
    /// For both refund options: a request whose response future is dropped before it completes
    /// (the client went away, a timeout fired) has no status and stays counted.
    ///
    /// ```
    /// # use std::{convert::Infallible, time::Duration};
    /// # use tower::{service_fn, Layer, ServiceExt};
    /// # use tower_bulwark::rate_limit::RateLimitLayer;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let ok = service_fn(|_: http::Request<()>| async { Ok::<_, Infallible>(http::Response::new(String::new())) });
    /// let layer = RateLimitLayer::fixed_window(1, Duration::from_secs(60))
    ///     .skip_failed(true)
    ///     .build()?;
    /// let not_found = service_fn(|_: http::Request<()>| async {
    ///     Ok::<_, Infallible>(http::Response::builder().status(404).body(String::new()).unwrap())
    /// });
    /// let svc = layer.layer(not_found);
    /// assert_eq!(svc.clone().oneshot(http::Request::new(())).await?.status(), 404);
    /// assert_eq!(svc.clone().oneshot(http::Request::new(())).await?.status(), 404); // not 429
    /// # Ok(())
    /// # }
    /// ```
    pub fn skip_failed(mut self, on: bool) -> Self {
        self.skip_failed = on;
        self
    }

    /// Decides and counts, but lets every request through, for rolling out a new limit; refusals
    /// show in [`RateLimitStats::shadow_rejected`](super::RateLimitStats) and in `debug` logs.
    /// No rate-limit headers are sent in shadow mode (default off).
    ///
    /// ```
    /// # use std::{convert::Infallible, time::Duration};
    /// # use tower::{service_fn, Layer, ServiceExt};
    /// # use tower_bulwark::rate_limit::RateLimitLayer;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let ok = service_fn(|_: http::Request<()>| async { Ok::<_, Infallible>(http::Response::new(String::new())) });
    /// let layer = RateLimitLayer::fixed_window(1, Duration::from_secs(60))
    ///     .shadow(true)
    ///     .build()?;
    /// let svc = layer.layer(ok);
    /// assert_eq!(svc.clone().oneshot(http::Request::new(())).await?.status(), 200);
    /// assert_eq!(svc.clone().oneshot(http::Request::new(())).await?.status(), 200);
    /// assert_eq!(layer.stats().shadow_rejected, 1);
    /// # Ok(())
    /// # }
    /// ```
    pub fn shadow(mut self, on: bool) -> Self {
        self.shadow = on;
        self
    }

    /// The most keys held in memory (default [`DEFAULT_MAX_KEYS`]). Idle keys are dropped;
    /// when this many are live, new keys share one overflow limit until room frees up.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_bulwark::{key::Key, rate_limit::RateLimitLayer};
    ///
    /// let layer = RateLimitLayer::fixed_window(10, Duration::from_secs(60))
    ///     .max_keys(1)
    ///     .build()?;
    /// layer.backend().decide_now(&Key::Int(1), 1);
    /// layer.backend().decide_now(&Key::Int(2), 1); // no room: counted on the overflow limit
    /// assert_eq!((layer.backend().len(), layer.backend().overflowed()), (1, 1));
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn max_keys(mut self, max_keys: usize) -> Self {
        self.max_keys = max_keys;
        self
    }

    /// The clock (default [`SystemClock`]); tests inject a
    /// [`ManualClock`](crate::clock::ManualClock).
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_bulwark::{clock::ManualClock, key::Key, rate_limit::RateLimitLayer};
    ///
    /// let clock = ManualClock::new();
    /// let layer = RateLimitLayer::fixed_window(1, Duration::from_secs(1))
    ///     .clock(clock.clone())
    ///     .build()?;
    /// assert!(layer.backend().decide_now(&Key::Global, 1).allowed());
    /// assert!(!layer.backend().decide_now(&Key::Global, 1).allowed());
    /// clock.advance(Duration::from_secs(1)); // the next window, no sleeping
    /// assert!(layer.backend().decide_now(&Key::Global, 1).allowed());
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Replaces the 429 response (default: JSON `{"error":"Too many requests","retryAfter":N}`).
    /// The rate-limit headers and `Retry-After` are added to it unless it sets them itself.
    /// gRPC requests still get a gRPC status.
    ///
    /// ```
    /// # use std::{convert::Infallible, time::Duration};
    /// # use tower::{service_fn, Layer, ServiceExt};
    /// # use tower_bulwark::rate_limit::RateLimitLayer;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let ok = service_fn(|_: http::Request<()>| async { Ok::<_, Infallible>(http::Response::new(String::new())) });
    /// let layer = RateLimitLayer::fixed_window(1, Duration::from_secs(60))
    ///     .on_rejection(|limited| {
    ///         let body = format!("slow down for {}s", limited.retry_after_secs());
    ///         http::Response::builder().status(503).body(body.into()).unwrap()
    ///     })
    ///     .build()?;
    /// let svc = layer.layer(ok);
    /// svc.clone().oneshot(http::Request::new(())).await?;
    /// let res = svc.clone().oneshot(http::Request::new(())).await?;
    /// assert_eq!(res.status(), 503);
    /// assert_eq!(res.headers()["retry-after"], "60"); // still added
    /// # Ok(())
    /// # }
    /// ```
    pub fn on_rejection(
        mut self,
        respond: impl Fn(&RateLimited) -> Response<Bytes> + Send + Sync + 'static,
    ) -> Self {
        self.rejection = Some(Arc::new(respond));
        self
    }

    fn validate(&self) -> Result<(Arc<[Quota]>, Vec<String>), ConfigError> {
        if let Some(err) = &self.misplaced {
            return Err(err.clone());
        }
        if self.limits.is_empty() {
            return Err(ConfigError::new(
                "limits",
                "must hold at least one limit, got none",
            ));
        }
        if self.max_keys == 0 {
            return Err(ConfigError::new("max_keys", "must be > 0, got 0"));
        }
        if self.skip_successful && self.skip_failed {
            return Err(ConfigError::new(
                "skip_failed",
                "cannot be set with skip_successful: every request would be refunded",
            ));
        }
        let mut quotas = Vec::with_capacity(self.limits.len());
        let mut names = Vec::with_capacity(self.limits.len());
        let mut seen = HashSet::new();
        for (index, limit) in self.limits.iter().enumerate() {
            let (quota, name) = limit.validate(index)?;
            if !seen.insert(name.clone()) {
                return Err(ConfigError::new(
                    "name",
                    format!("must be unique per layer, got {name:?} twice"),
                ));
            }
            quotas.push(quota);
            names.push(name);
        }
        Ok((quotas.into(), names))
    }

    fn into_shared(self) -> Result<Arc<Shared<K, MemoryRateLimiter>>, ConfigError> {
        self.into_shared_with(|quotas, _names, max_keys, clock| {
            Ok((
                MemoryRateLimiter::new(quotas.clone(), max_keys, clock),
                None,
            ))
        })
    }

    /// Validates, then builds the shared state around the backend `make` returns (given the
    /// validated quotas, their names, `max_keys` and the clock), and the limits it falls back
    /// to when degraded, if they differ (their headers must say what was applied).
    pub(crate) fn into_shared_with<B>(
        self,
        make: impl FnOnce(
            &Arc<[Quota]>,
            &[String],
            usize,
            Arc<dyn Clock>,
        ) -> Result<(B, Option<Arc<[Quota]>>), ConfigError>,
    ) -> Result<Arc<Shared<K, B>>, ConfigError> {
        let (quotas, names) = self.validate()?;
        let (backend, fallback) = make(&quotas, &names, self.max_keys, self.clock.clone())?;
        let fallback_headers = fallback.map(|fallback| {
            Arc::new(HeaderConfig::new(
                &fallback,
                names.clone(),
                self.legacy_headers,
                self.ietf_headers,
                self.reset_format,
            ))
        });
        let headers = Arc::new(HeaderConfig::new(
            &quotas,
            names,
            self.legacy_headers,
            self.ietf_headers,
            self.reset_format,
        ));
        Ok(Arc::new(Shared {
            key: self.key,
            backend,
            policy: Policy {
                headers,
                fallback_headers,
                missing_key: self.missing_key,
                cost: self.cost,
                skip_successful: self.skip_successful,
                skip_failed: self.skip_failed,
                shadow: self.shadow,
                clock: self.clock,
                rejection: self.rejection,
            },
            counters: Counters::default(),
        }))
    }

    /// Checks the configuration and builds the HTTP layer, in memory.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_bulwark::rate_limit::RateLimitLayer;
    ///
    /// let err = RateLimitLayer::token_bucket(10, Duration::from_secs(1))
    ///     .burst(0)
    ///     .build()
    ///     .unwrap_err();
    /// assert_eq!(err.to_string(), "`burst` must be >= 1, got 0");
    /// ```
    pub fn build(self) -> Result<RateLimitLayer<K>, ConfigError> {
        Ok(RateLimitLayer::from_shared(self.into_shared()?))
    }

    /// Checks the configuration and builds the variant for any `tower::Service`, which refuses
    /// with a [`RateLimited`] error instead of a response. Response headers, `cost` (it reads a
    /// request head) and `on_rejection` (it makes a response) do not apply to it: setting one
    /// is a [`ConfigError`] naming it, never silently ignored.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_bulwark::rate_limit::RateLimitLayer;
    ///
    /// let layer = RateLimitLayer::fixed_window(100, Duration::from_secs(1)).build_generic()?;
    /// # drop(layer);
    /// let err = RateLimitLayer::fixed_window(100, Duration::from_secs(1))
    ///     .headers(false)
    ///     .build_generic()
    ///     .unwrap_err();
    /// assert_eq!(err.field(), "headers");
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn build_generic(self) -> Result<GenericRateLimitLayer<K>, ConfigError> {
        self.check_generic()?;
        Ok(GenericRateLimitLayer::from_shared(self.into_shared()?))
    }

    /// The settings only an HTTP layer can apply are refused by the generic variant.
    pub(super) fn check_generic(&self) -> Result<(), ConfigError> {
        let http_only = |field| {
            Err(ConfigError::new(
                field,
                "applies only to the HTTP layer (build), not build_generic",
            ))
        };
        if self.cost.is_some() {
            return http_only("cost");
        }
        if self.rejection.is_some() {
            return http_only("on_rejection");
        }
        if !self.legacy_headers || !self.ietf_headers || self.reset_format != ResetFormat::default()
        {
            return http_only("headers");
        }
        Ok(())
    }
}
