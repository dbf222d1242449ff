//! The validator store: the `ETag` and `Last-Modified` last served per URI (and variant), so a
//! conditional request is answered (`304`, `412`) before its handler runs. In memory, bounded
//! by key count, or in Redis (feature `redis`) for a fleet.

mod memory;
#[cfg(feature = "redis")]
mod redis;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::header::{CACHE_CONTROL, CONTENT_LOCATION, ETAG, EXPIRES, LAST_MODIFIED, VARY};
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::clock::{Clock, SystemClock};
use crate::error::ConfigError;
use crate::headers::etag::EntityTag;
use crate::key::Key;
use crate::util::DEFAULT_MAX_KEYS;

/// The longest a stored validator is kept unless set otherwise: one hour. Each entry is kept
/// no longer than its response's own freshness (`max-age`) either.
pub const DEFAULT_STORE_MAX_TTL: Duration = Duration::from_secs(3600);

/// Variants (by `Vary`) kept per URI; a newer one replaces the oldest.
pub(crate) const MAX_VARIANTS: usize = 8;

/// What the store remembers of one response: its validators and the headers a `304` repeats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stored {
    pub(crate) etag: Option<EntityTag>,
    /// Whole seconds since the Unix epoch.
    pub(crate) last_modified: Option<u64>,
    /// `Cache-Control`, `Content-Location`, `ETag`, `Expires`, `Last-Modified`, `Vary`, as
    /// served.
    pub(crate) headers: HeaderMap,
}

/// The headers a `304` carries (RFC 9110 §15.4.5), and the ones the store keeps.
pub(crate) const NOT_MODIFIED_HEADERS: [HeaderName; 6] = [
    CACHE_CONTROL,
    CONTENT_LOCATION,
    ETAG,
    EXPIRES,
    LAST_MODIFIED,
    VARY,
];

impl Stored {
    /// What a response's headers say, if it has a validator at all.
    pub(crate) fn of(headers: &HeaderMap) -> Option<Self> {
        let etag = headers.get(ETAG).and_then(EntityTag::from_header);
        let last_modified = headers
            .get(LAST_MODIFIED)
            .and_then(super::conditional::date_of);
        if etag.is_none() && last_modified.is_none() {
            return None;
        }
        let mut kept = HeaderMap::new();
        for name in NOT_MODIFIED_HEADERS {
            for value in headers.get_all(&name) {
                kept.append(name.clone(), value.clone());
            }
        }
        Some(Self {
            etag,
            last_modified,
            headers: kept,
        })
    }

    /// One line per header, `name: value`: how Redis keeps it (header values hold no newline).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        for (name, value) in &self.headers {
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.push(b'\n');
        }
        out
    }

    /// The inverse of [`Stored::encode`]; `None` for anything it did not write.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        let mut headers = HeaderMap::new();
        for line in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let colon = line.iter().position(|&b| b == b':')?;
            let name = HeaderName::from_bytes(&line[..colon]).ok()?;
            let value = line.get(colon + 2..)?;
            headers.append(name, HeaderValue::from_bytes(value).ok()?);
        }
        Self::of(&headers)
    }
}

/// Where one request's validators are looked up: the path (as its XXH3-128 digest, so no
/// path is kept in clear, and every key is 16 bytes), and the variant its query and its
/// `Vary` headers pick. Keyed by path, a write forgets every query of its path at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoreKey {
    pub(crate) uri: Key,
    pub(crate) variant: u64,
}

impl StoreKey {
    pub(crate) fn of_path(path: &str) -> Key {
        let digest = xxhash_rust::xxh3::xxh3_128(path.as_bytes()).to_be_bytes();
        Key::Header(Arc::from(&digest[..]))
    }
}

/// What the store knows of a URI when a request arrives.
#[derive(Debug, Clone)]
pub(crate) enum Known {
    /// The validators last served for this variant.
    Stored(Arc<Stored>),
    /// A write changed the resource and no read has stored its new validators yet: it exists,
    /// its tag is unknown (an `If-Match` cannot be shown to hold).
    Changed,
    /// Nothing (never stored, expired, or the store could not answer).
    Nothing,
}

/// A lookup's answer: what is known, and the URI's generation (bumped by every write), which
/// a read hands back when it stores what it served, so a read that began before a write
/// never stores the old validators after it. `None` when the store did not answer.
#[derive(Debug, Clone)]
pub(crate) struct Lookup {
    pub(crate) known: Known,
    pub(crate) generation: Option<u64>,
}

impl Lookup {
    pub(crate) const UNANSWERED: Lookup = Lookup {
        known: Known::Nothing,
        generation: None,
    };
}

/// A boxed answer from the store, for the backend that has to wait for one (Redis).
pub(crate) type Pending<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// An answer from the store: at once (memory) or later (Redis).
pub(crate) enum Answer<T> {
    Ready(T),
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    Pending(Pending<T>),
}

/// The validators a layer last served per URI, shared by every layer (and, through Redis,
/// every instance) given the same store. Opt-in: see [`CacheLayerBuilder::validator_store`]
/// for when it is safe.
///
/// Cloning is cheap; clones share their entries.
///
/// ```
/// use std::time::Duration;
/// use tower_bulwark::cache::ValidatorStore;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = ValidatorStore::builder()
///     .max_keys(10_000)
///     .max_ttl(Duration::from_secs(600))
///     .build()?;
/// // A change made outside the layer (a batch job, another service):
/// store.invalidate("/api/items/7").await?;
/// # Ok(())
/// # }
/// ```
///
/// [`CacheLayerBuilder::validator_store`]: super::CacheLayerBuilder::validator_store
#[derive(Debug, Clone)]
pub struct ValidatorStore {
    backend: Arc<Backend>,
}

#[derive(Debug)]
enum Backend {
    Memory(memory::MemoryStore),
    #[cfg(feature = "redis")]
    Redis(redis::RedisStore),
}

impl ValidatorStore {
    /// A builder: in memory unless given a Redis backend.
    ///
    /// ```
    /// let store = tower_bulwark::cache::ValidatorStore::builder().max_keys(1_000).build()?;
    /// # drop(store);
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn builder() -> ValidatorStoreBuilder {
        ValidatorStoreBuilder {
            max_keys: DEFAULT_MAX_KEYS,
            max_ttl: DEFAULT_STORE_MAX_TTL,
            clock: Arc::new(SystemClock::new()),
            #[cfg(feature = "redis")]
            redis: None,
        }
    }

    /// Forgets what was served for `path` (every query and variant of it), for a change made
    /// outside the layer: the resource counts as changed, its tag unknown until a read serves
    /// it. Unsafe requests through a layer with this store do it themselves. A query after the
    /// path is ignored.
    ///
    /// # Errors
    ///
    /// With Redis, a [`BackendError`](crate::BackendError) when Redis did not answer within
    /// the deadline: the entry may then live until its TTL.
    pub async fn invalidate(&self, path: &str) -> Result<(), crate::BackendError> {
        let path = path.split_once('?').map_or(path, |(path, _)| path);
        let uri = StoreKey::of_path(path);
        match self.forget(&uri) {
            Answer::Ready(result) => result,
            Answer::Pending(pending) => pending.await,
        }
    }

    /// How many URIs the store holds (in memory; `None` for Redis, which keeps its own count).
    ///
    /// ```
    /// let store = tower_bulwark::cache::ValidatorStore::builder().build()?;
    /// assert_eq!(store.len(), Some(0));
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn len(&self) -> Option<usize> {
        match &*self.backend {
            Backend::Memory(memory) => Some(memory.len()),
            #[cfg(feature = "redis")]
            Backend::Redis(_) => None,
        }
    }

    /// Whether the store holds nothing (in memory; `None` for Redis).
    ///
    /// ```
    /// let store = tower_bulwark::cache::ValidatorStore::builder().build()?;
    /// assert_eq!(store.is_empty(), Some(true));
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn is_empty(&self) -> Option<bool> {
        self.len().map(|n| n == 0)
    }

    pub(crate) fn lookup(&self, key: &StoreKey) -> Answer<Lookup> {
        match &*self.backend {
            Backend::Memory(memory) => Answer::Ready(memory.lookup(key)),
            #[cfg(feature = "redis")]
            Backend::Redis(redis) => redis.lookup(key),
        }
    }

    /// Keeps `stored` for `key`, for at most `ttl` (and the store's own bound), unless the
    /// URI was written since its lookup (`generation`). With Redis this is sent in the
    /// background: no response waits for it.
    pub(crate) fn remember(&self, key: StoreKey, generation: u64, stored: Stored, ttl: Duration) {
        match &*self.backend {
            Backend::Memory(memory) => memory.remember(&key, generation, stored, ttl),
            #[cfg(feature = "redis")]
            Backend::Redis(redis) => redis.remember(key, generation, stored, ttl),
        }
    }

    /// Counts `uri` as changed before a write's handler runs (see `announce_write`): memory at
    /// once, Redis in the background.
    pub(crate) fn forget_early(&self, uri: &Key) {
        match &*self.backend {
            Backend::Memory(memory) => memory.forget(uri),
            #[cfg(feature = "redis")]
            Backend::Redis(redis) => redis.forget_in_background(uri),
        }
    }

    /// Forgets every variant of `uri`. Awaited before a write's response goes out, so the
    /// writer's next read is never answered from what it replaced.
    pub(crate) fn forget(&self, uri: &Key) -> Answer<Result<(), crate::BackendError>> {
        match &*self.backend {
            Backend::Memory(memory) => {
                memory.forget(uri);
                Answer::Ready(Ok(()))
            }
            #[cfg(feature = "redis")]
            Backend::Redis(redis) => redis.forget(uri),
        }
    }
}

/// Builds a [`ValidatorStore`]; `build` checks the settings.
///
/// ```
/// use tower_bulwark::cache::ValidatorStore;
///
/// let err = ValidatorStore::builder().max_keys(0).build().unwrap_err();
/// assert_eq!(err.field(), "max_keys");
/// ```
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct ValidatorStoreBuilder {
    max_keys: usize,
    max_ttl: Duration,
    clock: Arc<dyn Clock>,
    #[cfg(feature = "redis")]
    redis: Option<redis::RedisSettings>,
}

impl ValidatorStoreBuilder {
    /// The most URIs kept in memory (default [`DEFAULT_MAX_KEYS`]); when full, new URIs are
    /// not stored (they are served as if there were no store) until idle ones expire.
    ///
    /// ```
    /// # use std::time::Duration;
    /// use tower_bulwark::cache::ValidatorStore;
    ///
    /// let store = ValidatorStore::builder().max_keys(10_000).build()?;
    /// # drop(store);
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn max_keys(mut self, max_keys: usize) -> Self {
        self.max_keys = max_keys;
        self
    }

    /// The longest an entry is kept (default [`DEFAULT_STORE_MAX_TTL`]); never longer than
    /// its response's freshness either. A written URI is remembered as changed this long.
    ///
    /// ```
    /// # use std::time::Duration;
    /// use tower_bulwark::cache::ValidatorStore;
    ///
    /// let store = ValidatorStore::builder().max_ttl(Duration::from_secs(600)).build()?;
    /// # drop(store);
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn max_ttl(mut self, ttl: Duration) -> Self {
        self.max_ttl = ttl;
        self
    }

    /// The clock entries expire by (memory; Redis keeps server time). For tests.
    ///
    /// ```
    /// # use std::time::Duration;
    /// use tower_bulwark::cache::ValidatorStore;
    ///
    /// let store = ValidatorStore::builder().clock(tower_bulwark::clock::ManualClock::new()).build()?;
    /// # drop(store);
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Keeps the validators in Redis, shared by every instance with the same Redis and
    /// prefix (feature `redis`), with a deadline on every call (default 50 ms): a lookup that
    /// misses it is served as if there were no store.
    ///
    /// ```no_run
    /// use tower_bulwark::{cache::ValidatorStore, redis::RedisBackend};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let redis = RedisBackend::connect("redis://127.0.0.1/").await?;
    /// let store = ValidatorStore::builder()
    ///     .redis(redis)
    ///     .redis_prefix("shop-validators")
    ///     .build()?;
    /// # drop(store);
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "redis")]
    pub fn redis(mut self, backend: crate::redis::RedisBackend) -> Self {
        self.redis = Some(redis::RedisSettings::new(backend));
        self
    }

    /// The prefix of the Redis key names (default `bulwark`); needs [`redis`](Self::redis).
    #[cfg(feature = "redis")]
    pub fn redis_prefix(mut self, prefix: impl Into<String>) -> Self {
        if let Some(redis) = self.redis.as_mut() {
            redis.prefix = prefix.into();
        }
        self
    }

    /// How long a Redis call may take (default 50 ms); needs [`redis`](Self::redis).
    #[cfg(feature = "redis")]
    pub fn redis_deadline(mut self, deadline: Duration) -> Self {
        if let Some(redis) = self.redis.as_mut() {
            redis.deadline = deadline;
        }
        self
    }

    /// Checks the settings and builds the store.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the bad field: `max_keys` zero, `max_ttl` under a second;
    /// with Redis, a bad `prefix` or a zero `deadline`.
    pub fn build(self) -> Result<ValidatorStore, ConfigError> {
        if self.max_keys == 0 {
            return Err(ConfigError::new("max_keys", "must be at least 1, got 0"));
        }
        if self.max_ttl < Duration::from_secs(1) {
            return Err(ConfigError::new(
                "max_ttl",
                format!("must be at least 1s, got {:?}", self.max_ttl),
            ));
        }
        let limits = Limits {
            max_ttl: self.max_ttl,
        };
        #[cfg(feature = "redis")]
        if let Some(settings) = self.redis {
            let store = redis::RedisStore::new(settings, limits)?;
            return Ok(ValidatorStore {
                backend: Arc::new(Backend::Redis(store)),
            });
        }
        let store = memory::MemoryStore::new(self.max_keys, limits, self.clock);
        Ok(ValidatorStore {
            backend: Arc::new(Backend::Memory(store)),
        })
    }
}

/// The time bounds both backends keep.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_ttl: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_headers_survive_their_encoding() {
        let mut headers = HeaderMap::new();
        headers.insert(ETAG, HeaderValue::from_static("\"a,b\""));
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("max-age=60"));
        headers.append(VARY, HeaderValue::from_static("accept"));
        headers.append(VARY, HeaderValue::from_static("origin"));
        headers.insert("x-other", HeaderValue::from_static("dropped"));
        let stored = Stored::of(&headers).unwrap();
        assert!(!stored.headers.contains_key("x-other"));
        assert_eq!(Stored::decode(&stored.encode()), Some(stored));
        assert_eq!(Stored::decode(b"garbage"), None);
        assert_eq!(Stored::of(&HeaderMap::new()), None);
    }
}
