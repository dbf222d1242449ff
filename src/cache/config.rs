//! What a built cache layer holds, shared by its services and futures.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::header::{CACHE_CONTROL, EXPIRES};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use super::cache_control::Expires;
use super::conditional::date_value;
use super::current::CurrentEtag;
use super::store::ValidatorStore;
use crate::clock::Clock;
use crate::headers::vary;
use crate::util::StripedCounts;

pub(crate) type CurrentFn = Arc<dyn Fn(&http::request::Parts) -> CurrentEtag + Send + Sync>;

/// Which ETags the layer makes from bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EtagMode {
    Off,
    Strong,
    Weak,
}

/// A set of statuses, one bit each.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Statuses([u64; 10]);

impl Statuses {
    pub(crate) fn insert(&mut self, status: StatusCode) {
        let code = usize::from(status.as_u16());
        if let Some(word) = self.0.get_mut(code / 64) {
            *word |= 1 << (code % 64);
        }
    }

    pub(crate) fn contains(&self, status: StatusCode) -> bool {
        let code = usize::from(status.as_u16());
        self.0
            .get(code / 64)
            .is_some_and(|w| w & (1 << (code % 64)) != 0)
    }
}

/// The `Expires` value of the current second, made once per second, not per response.
#[derive(Debug)]
struct ExpiresCache {
    last: Mutex<Option<(u64, HeaderValue)>>,
}

pub(crate) struct Config {
    cache_control: Option<HeaderValue>,
    expires: Expires,
    override_cache_control: bool,
    statuses: Statuses,
    vary_value: HeaderValue,
    pub(crate) vary: Vec<HeaderName>,
    pub(crate) etag: EtagMode,
    pub(crate) max_body: u64,
    pub(crate) current: Option<CurrentFn>,
    pub(crate) store: Option<ValidatorStore>,
    clock: Arc<dyn Clock>,
    expires_cache: ExpiresCache,
    pub(crate) counters: StripedCounts<COUNTS>,
}

/// What the layer counts, by index into its striped counts.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Count {
    NotModified,
    PreconditionFailed,
    AnsweredBeforeHandler,
    EtagsComputed,
    Unbuffered,
}

pub(crate) const COUNTS: usize = 5;

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("cache_control", &self.cache_control)
            .field("expires", &self.expires)
            .field("vary", &self.vary)
            .field("etag", &self.etag)
            .field("max_body", &self.max_body)
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl Config {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        cache_control: Option<HeaderValue>,
        expires: Expires,
        override_cache_control: bool,
        statuses: Statuses,
        vary_value: HeaderValue,
        vary: Vec<HeaderName>,
        etag: EtagMode,
        max_body: u64,
        current: Option<CurrentFn>,
        store: Option<ValidatorStore>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            cache_control,
            expires,
            override_cache_control,
            statuses,
            vary_value,
            vary,
            etag,
            max_body,
            current,
            store,
            clock,
            expires_cache: ExpiresCache {
                last: Mutex::new(None),
            },
            counters: StripedCounts::default(),
        }
    }

    pub(crate) fn bump(&self, count: Count) {
        self.counters.bump(count as usize);
    }

    /// Whether a response of this status gets the policy.
    pub(crate) fn covers(&self, status: StatusCode) -> bool {
        self.statuses.contains(status)
    }

    /// The policy on a response's headers: `Cache-Control` (unless the handler set one and
    /// may keep it), `Expires` beside the policy's own, `Vary` merged.
    pub(crate) fn apply_policy(&self, headers: &mut HeaderMap) {
        if let Some(policy) = &self.cache_control {
            if self.override_cache_control || !headers.contains_key(CACHE_CONTROL) {
                headers.insert(CACHE_CONTROL, policy.clone());
                self.put_expires(headers);
            }
        }
        vary::merge(headers, &self.vary, &self.vary_value);
    }

    /// Whether `cache_control` is this layer's policy (so its `Expires` is the policy's).
    pub(crate) fn is_policy(&self, cache_control: Option<&HeaderValue>) -> bool {
        cache_control.is_some() && cache_control == self.cache_control.as_ref()
    }

    /// The policy's `Expires`, from now.
    pub(crate) fn put_expires(&self, headers: &mut HeaderMap) {
        match self.expires {
            Expires::None => {}
            Expires::Zero => {
                headers.insert(EXPIRES, HeaderValue::from_static("0"));
            }
            Expires::After(age) => {
                headers.insert(EXPIRES, self.expires_after(age));
            }
        }
    }

    fn expires_after(&self, age: Duration) -> HeaderValue {
        let now = self.clock.unix_now().as_secs();
        if let Ok(mut last) = self.expires_cache.last.lock() {
            if let Some((secs, value)) = last.as_ref() {
                if *secs == now {
                    return value.clone();
                }
            }
            let value = date_value(Duration::from_secs(now.saturating_add(age.as_secs())));
            *last = Some((now, value.clone()));
            return value;
        }
        date_value(Duration::from_secs(now.saturating_add(age.as_secs())))
    }
}
