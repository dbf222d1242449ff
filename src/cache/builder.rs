//! The cache layer's builder: the `Cache-Control` policy, ETags, the source of the current
//! validator, the store; checked by `build`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, StatusCode};

use super::cache_control::{Policy, Visibility};
use super::config::{Config, CurrentFn, EtagMode, Statuses};
use super::current::CurrentEtag;
use super::layer::CacheLayer;
use super::store::ValidatorStore;
use crate::clock::{Clock, SystemClock};
use crate::error::ConfigError;
use crate::headers::vary;

/// The largest body the layer reads into memory to hash for its ETag unless set otherwise:
/// 1 MiB. A longer body, or one that does not say its length, passes untouched and unbuffered.
pub const DEFAULT_MAX_BODY: u64 = 1024 * 1024;

/// The statuses that get the policy unless set otherwise: the successful ones a cache may
/// store by default (RFC 9110 §15.1: 200, 203, 204, 206), and 304, which must repeat the
/// `Cache-Control` of the 200 it stands for.
pub const DEFAULT_POLICY_STATUSES: [u16; 5] = [200, 203, 204, 206, 304];

/// The longest `max-age` (or other delta-seconds) a policy takes: 2^31 s, the largest value
/// RFC 9111 §1.2.2 asks every cache to understand.
const MAX_DELTA_SECONDS: u64 = 1 << 31;

/// Builds a [`CacheLayer`]. Start from [`CacheLayer::builder`] (the default policy:
/// `max-age=3600`, strong ETags) or one of its shortcuts.
///
/// ```
/// use std::time::Duration;
/// use tower_bulwark::cache::CacheLayer;
///
/// let layer = CacheLayer::max_age(Duration::from_secs(60))
///     .public()
///     .stale_while_revalidate(Duration::from_secs(30))
///     .vary([http::header::ACCEPT_LANGUAGE])
///     .build()?;
/// # drop(layer);
/// # Ok::<(), tower_bulwark::ConfigError>(())
/// ```
#[derive(Clone)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct CacheLayerBuilder {
    policy: Policy,
    override_cache_control: bool,
    statuses: Vec<u16>,
    vary: Vec<HeaderName>,
    etag: EtagMode,
    max_body: u64,
    current: Option<CurrentFn>,
    store: Option<ValidatorStore>,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for CacheLayerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheLayerBuilder")
            .field("policy", &self.policy)
            .field("override_cache_control", &self.override_cache_control)
            .field("statuses", &self.statuses)
            .field("vary", &self.vary)
            .field("etag", &self.etag)
            .field("max_body", &self.max_body)
            .field("current_etag", &self.current.is_some())
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl Default for CacheLayerBuilder {
    fn default() -> Self {
        Self {
            policy: Policy::default(),
            override_cache_control: false,
            statuses: DEFAULT_POLICY_STATUSES.to_vec(),
            vary: Vec::new(),
            etag: EtagMode::Strong,
            max_body: DEFAULT_MAX_BODY,
            current: None,
            store: None,
            clock: Arc::new(SystemClock::new()),
        }
    }
}

impl CacheLayerBuilder {
    /// `max-age`: how long any cache may reuse the response without asking (default
    /// one hour). Sets `Expires` to now plus this, too.
    ///
    /// ```
    /// # use std::time::Duration;
    /// use tower_bulwark::cache::CacheLayer;
    ///
    /// let layer = CacheLayer::builder().max_age(Duration::from_secs(300)).build()?;
    /// # drop(layer);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn max_age(mut self, age: Duration) -> Self {
        self.policy.max_age = Some(age);
        self
    }

    /// No `max-age` (nor `Expires`): for a policy of other directives only.
    ///
    /// ```
    /// # use std::time::Duration;
    /// use tower_bulwark::cache::CacheLayer;
    ///
    /// let layer = CacheLayer::builder().without_max_age().no_cache().build()?;
    /// # drop(layer);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn without_max_age(mut self) -> Self {
        self.policy.max_age = None;
        self
    }

    /// `s-maxage`: how long shared caches (CDNs, proxies) may reuse it, instead of `max-age`.
    ///
    /// ```
    /// # use std::time::Duration;
    /// use tower_bulwark::cache::CacheLayer;
    ///
    /// let layer = CacheLayer::builder().s_maxage(Duration::from_secs(600)).build()?;
    /// # drop(layer);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn s_maxage(mut self, age: Duration) -> Self {
        self.policy.s_maxage = Some(age);
        self
    }

    /// `public`: shared caches may store it, even for an authenticated request.
    ///
    /// ```
    /// # use std::time::Duration;
    /// use tower_bulwark::cache::CacheLayer;
    ///
    /// let layer = CacheLayer::builder().public().build()?;
    /// # drop(layer);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn public(mut self) -> Self {
        self.policy.visibility = Visibility::Public;
        self
    }

    /// `private`: only the client's own cache may store it.
    ///
    /// ```
    /// # use std::time::Duration;
    /// use tower_bulwark::cache::CacheLayer;
    ///
    /// let layer = CacheLayer::builder().private().build()?;
    /// # drop(layer);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn private(mut self) -> Self {
        self.policy.visibility = Visibility::Private;
        self
    }

    /// `no-cache`: caches must revalidate (a conditional request, answered `304` while the
    /// ETag holds) before each reuse.
    ///
    /// ```
    /// # use std::time::Duration;
    /// use tower_bulwark::cache::CacheLayer;
    ///
    /// let layer = CacheLayer::builder().no_cache().build()?;
    /// # drop(layer);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn no_cache(mut self) -> Self {
        self.policy.no_cache = true;
        self
    }

    /// `no-store`: no cache keeps it at all; drops `max-age` and sets `Expires: 0`.
    ///
    /// ```
    /// # use std::time::Duration;
    /// use tower_bulwark::cache::CacheLayer;
    ///
    /// let layer = CacheLayer::builder().no_store().build()?;
    /// # drop(layer);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn no_store(mut self) -> Self {
        self.policy.no_store = true;
        self.policy.max_age = None;
        self
    }

    /// `must-revalidate`: once stale, never reused without revalidation.
    ///
    /// ```
    /// # use std::time::Duration;
    /// use tower_bulwark::cache::CacheLayer;
    ///
    /// let layer = CacheLayer::builder().must_revalidate().build()?;
    /// # drop(layer);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn must_revalidate(mut self) -> Self {
        self.policy.must_revalidate = true;
        self
    }

    /// `proxy-revalidate`: `must-revalidate` for shared caches only.
    ///
    /// ```
    /// # use std::time::Duration;
    /// use tower_bulwark::cache::CacheLayer;
    ///
    /// let layer = CacheLayer::builder().proxy_revalidate().build()?;
    /// # drop(layer);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn proxy_revalidate(mut self) -> Self {
        self.policy.proxy_revalidate = true;
        self
    }

    /// `immutable`: the response never changes while fresh (versioned assets); clients skip
    /// revalidating it on reload.
    ///
    /// ```
    /// # use std::time::Duration;
    /// use tower_bulwark::cache::CacheLayer;
    ///
    /// let layer = CacheLayer::max_age(Duration::from_secs(31_536_000)).immutable().build()?;
    /// # drop(layer);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn immutable(mut self) -> Self {
        self.policy.immutable = true;
        self
    }

    /// `no-transform`: intermediaries must not change the content (no recompression).
    ///
    /// ```
    /// # use std::time::Duration;
    /// use tower_bulwark::cache::CacheLayer;
    ///
    /// let layer = CacheLayer::builder().no_transform().build()?;
    /// # drop(layer);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn no_transform(mut self) -> Self {
        self.policy.no_transform = true;
        self
    }

    /// `stale-while-revalidate` (RFC 5861): a cache may serve it this long after it goes
    /// stale while it revalidates in the background.
    ///
    /// ```
    /// # use std::time::Duration;
    /// use tower_bulwark::cache::CacheLayer;
    ///
    /// let layer = CacheLayer::builder().stale_while_revalidate(Duration::from_secs(30)).build()?;
    /// # drop(layer);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stale_while_revalidate(mut self, window: Duration) -> Self {
        self.policy.stale_while_revalidate = Some(window);
        self
    }

    /// `stale-if-error` (RFC 5861): a cache may serve it this long after it goes stale when
    /// the origin fails.
    ///
    /// ```
    /// # use std::time::Duration;
    /// use tower_bulwark::cache::CacheLayer;
    ///
    /// let layer = CacheLayer::builder().stale_if_error(Duration::from_secs(86_400)).build()?;
    /// # drop(layer);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stale_if_error(mut self, window: Duration) -> Self {
        self.policy.stale_if_error = Some(window);
        self
    }

    /// Replace a `Cache-Control` the handler set itself (default: the handler's is kept, and
    /// the policy's `Expires` is not added beside it).
    ///
    /// ```
    /// # use std::time::Duration;
    /// use tower_bulwark::cache::CacheLayer;
    ///
    /// let layer = CacheLayer::builder().override_cache_control(true).build()?;
    /// # drop(layer);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn override_cache_control(mut self, yes: bool) -> Self {
        self.override_cache_control = yes;
        self
    }

    /// The response statuses that get the policy (default [`DEFAULT_POLICY_STATUSES`]).
    ///
    /// ```
    /// # use std::time::Duration;
    /// use tower_bulwark::cache::CacheLayer;
    ///
    /// let layer = CacheLayer::builder().statuses([200, 404]).build()?;
    /// # drop(layer);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn statuses(mut self, statuses: impl IntoIterator<Item = u16>) -> Self {
        self.statuses = statuses.into_iter().collect();
        self
    }

    /// Request headers the response varies on, merged into its `Vary` (never twice). With a
    /// validator store, they also pick which stored variant a request gets.
    ///
    /// ```
    /// # use std::time::Duration;
    /// use tower_bulwark::cache::CacheLayer;
    ///
    /// let layer = CacheLayer::builder().vary([http::header::ACCEPT_LANGUAGE]).build()?;
    /// # drop(layer);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn vary(mut self, names: impl IntoIterator<Item = HeaderName>) -> Self {
        self.vary = names.into_iter().collect();
        self
    }

    /// Weak ETags (`W/"…"`) instead of strong ones: for responses whose bytes may differ while
    /// meaning the same (a timestamp in a page). `If-Match` and `If-Range` never match them.
    ///
    /// ```
    /// # use std::time::Duration;
    /// use tower_bulwark::cache::CacheLayer;
    ///
    /// let layer = CacheLayer::builder().weak_etags().build()?;
    /// # drop(layer);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn weak_etags(mut self) -> Self {
        self.etag = EtagMode::Weak;
        self
    }

    /// No ETags from the body (a handler's own, and [`current_etag`](Self::current_etag)'s,
    /// still count).
    ///
    /// ```
    /// # use std::time::Duration;
    /// use tower_bulwark::cache::CacheLayer;
    ///
    /// let layer = CacheLayer::builder().without_etags().build()?;
    /// # drop(layer);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn without_etags(mut self) -> Self {
        self.etag = EtagMode::Off;
        self
    }

    /// The largest body read into memory to hash (default [`DEFAULT_MAX_BODY`]).
    ///
    /// ```
    /// # use std::time::Duration;
    /// use tower_bulwark::cache::CacheLayer;
    ///
    /// let layer = CacheLayer::builder().max_body(256 * 1024).build()?;
    /// # drop(layer);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn max_body(mut self, bytes: u64) -> Self {
        self.max_body = bytes;
        self
    }

    /// Where the resource's current ETag comes from before the handler runs (a version
    /// column, a counter): a request with preconditions is then judged before its handler,
    /// so a stale `If-Match` write gets `412` and changes nothing, and a matching
    /// `If-None-Match` read gets `304` without running the handler. Return a tag, `None` for
    /// "no current representation", or [`CurrentEtag::Unknown`] to let the handler's response
    /// decide. A `GET` response without an `ETag` of its own gets this tag.
    ///
    /// ```
    /// use std::sync::{atomic::{AtomicU64, Ordering}, Arc};
    /// use tower_bulwark::cache::{CacheLayer, CurrentEtag, EntityTag};
    ///
    /// let version = Arc::new(AtomicU64::new(1));
    /// let layer = CacheLayer::builder()
    ///     .current_etag(move |parts: &http::request::Parts| {
    ///         if parts.uri.path() != "/api/profile" {
    ///             return CurrentEtag::Unknown;
    ///         }
    ///         let v = version.load(Ordering::Acquire);
    ///         EntityTag::strong(&format!("v{v}")).map_or(CurrentEtag::Unknown, CurrentEtag::Is)
    ///     })
    ///     .build()?;
    /// # drop(layer);
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn current_etag<F, R>(mut self, current: F) -> Self
    where
        F: Fn(&http::request::Parts) -> R + Send + Sync + 'static,
        R: Into<CurrentEtag>,
    {
        self.current = Some(Arc::new(move |parts: &http::request::Parts| {
            current(parts).into()
        }));
        self
    }

    /// Remembers the validators served per URI in `store`, so conditional requests are
    /// answered before the handler runs. Opt-in: it is safe only when **every change** to a
    /// stored resource goes through a layer with the same store (a successful unsafe request
    /// forgets its URI) or is announced with [`ValidatorStore::invalidate`], and the
    /// response depends on nothing but the URI and the [`vary`](Self::vary) headers (not on a
    /// cookie or an `Authorization` it does not vary on). A fleet needs the Redis store: a
    /// memory store forgets only what its own instance changed. Entries live no longer than
    /// the response's freshness (`max-age`); `no-store` and `no-cache` responses are not
    /// kept. The store catches stale writes, not two writes racing with the same tag: for a
    /// strict compare-and-set, check the version in the handler's own write.
    ///
    /// ```
    /// # use std::time::Duration;
    /// use tower_bulwark::cache::CacheLayer;
    ///
    /// let layer = CacheLayer::builder().validator_store(tower_bulwark::cache::ValidatorStore::builder().build()?).build()?;
    /// # drop(layer);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn validator_store(mut self, store: ValidatorStore) -> Self {
        self.store = Some(store);
        self
    }

    /// The clock `Expires` is computed from (its wall-clock half). For tests.
    ///
    /// ```
    /// # use std::time::Duration;
    /// use tower_bulwark::cache::CacheLayer;
    ///
    /// let layer = CacheLayer::builder().clock(tower_bulwark::clock::ManualClock::new()).build()?;
    /// # drop(layer);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Checks the settings and builds the layer.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the bad field: a duration over 2^31 s, `no_store` beside a
    /// lifetime, a status outside 100..=599, a `Vary` of `*`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_bulwark::cache::CacheLayer;
    ///
    /// let err = CacheLayer::no_store().max_age(Duration::from_secs(60)).build().unwrap_err();
    /// assert_eq!(err.field(), "no_store");
    /// ```
    pub fn build(self) -> Result<CacheLayer, ConfigError> {
        let policy = &self.policy;
        for (field, value) in [
            ("max_age", policy.max_age),
            ("s_maxage", policy.s_maxage),
            ("stale_while_revalidate", policy.stale_while_revalidate),
            ("stale_if_error", policy.stale_if_error),
        ] {
            if let Some(d) = value {
                if d.as_secs() > MAX_DELTA_SECONDS {
                    return Err(ConfigError::new(
                        field,
                        format!("must be at most 2^31 s, got {}s", d.as_secs()),
                    ));
                }
                if d.subsec_nanos() != 0 {
                    return Err(ConfigError::new(
                        field,
                        format!("must be whole seconds (Cache-Control counts seconds), got {d:?}"),
                    ));
                }
            }
        }
        if policy.no_store
            && (policy.max_age.is_some()
                || policy.s_maxage.is_some()
                || policy.immutable
                || policy.stale_while_revalidate.is_some())
        {
            return Err(ConfigError::new(
                "no_store",
                "contradicts max-age, s-maxage, immutable and stale-while-revalidate: a response \
                 no cache keeps has no lifetime",
            ));
        }
        let mut statuses = Statuses::default();
        for &code in &self.statuses {
            let status = StatusCode::from_u16(code).map_err(|_| {
                ConfigError::new("statuses", format!("must be in 100..=599, got {code}"))
            })?;
            statuses.insert(status);
        }
        if let Some(star) = self.vary.iter().find(|n| n.as_str() == "*") {
            return Err(ConfigError::new(
                "vary",
                format!("`{star}` means the response cannot be reused: set it in the handler"),
            ));
        }
        let mut vary_names: Vec<HeaderName> = Vec::new();
        for name in self.vary {
            if !vary_names.contains(&name) {
                vary_names.push(name);
            }
        }
        let cache_control = policy.render();
        let cache_control = (!cache_control.is_empty()).then_some(cache_control);
        Ok(CacheLayer::new(Config::new(
            cache_control,
            policy.expires(),
            self.override_cache_control,
            statuses,
            vary::render(&vary_names),
            vary_names,
            self.etag,
            self.max_body,
            self.current,
            self.store,
            self.clock,
        )))
    }
}

impl CacheLayer {
    /// A builder with the default policy: `Cache-Control: max-age=3600`, `Expires` an hour
    /// ahead, strong ETags on bodies up to 1 MiB, conditional requests answered.
    ///
    /// ```
    /// use tower_bulwark::cache::CacheLayer;
    ///
    /// let layer = CacheLayer::builder().build()?;
    /// # drop(layer);
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn builder() -> CacheLayerBuilder {
        CacheLayerBuilder::default()
    }

    /// A builder whose policy's `max-age` is `age`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_bulwark::cache::CacheLayer;
    ///
    /// let layer = CacheLayer::max_age(Duration::from_secs(300)).private().build()?;
    /// # drop(layer);
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn max_age(age: Duration) -> CacheLayerBuilder {
        CacheLayerBuilder::default().max_age(age)
    }

    /// A builder whose policy is `no-store` (and `Expires: 0`): for responses no cache may
    /// keep. ETags are still given, for conditional writes.
    ///
    /// ```
    /// use tower_bulwark::cache::CacheLayer;
    ///
    /// let layer = CacheLayer::no_store().build()?;
    /// # drop(layer);
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn no_store() -> CacheLayerBuilder {
        CacheLayerBuilder::default().no_store()
    }

    /// A builder whose policy is `no-cache` with no `max-age`: caches keep the response but
    /// revalidate it on every use (a cheap `304` while its ETag holds).
    ///
    /// ```
    /// use tower_bulwark::cache::CacheLayer;
    ///
    /// let layer = CacheLayer::no_cache().build()?;
    /// # drop(layer);
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn no_cache() -> CacheLayerBuilder {
        CacheLayerBuilder::default().without_max_age().no_cache()
    }
}

impl From<Option<super::EntityTag>> for CurrentEtag {
    fn from(tag: Option<super::EntityTag>) -> Self {
        match tag {
            Some(tag) => CurrentEtag::Is(tag),
            None => CurrentEtag::Missing,
        }
    }
}

impl From<super::EntityTag> for CurrentEtag {
    fn from(tag: super::EntityTag) -> Self {
        CurrentEtag::Is(tag)
    }
}
