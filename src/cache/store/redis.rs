//! The validator store in Redis: one hash per URI (its hashed path and query) moved by
//! `validators.lua` through the shared script call, with the layer's deadline and a `Health`
//! that leaves Redis alone after outages. A lookup that fails or misses the deadline is
//! answered "nothing stored": the request is served as if there were no store.
//!
//! A write's forget that Redis did not take is *owed*: the path is kept in a small local set,
//! served as if there were no store (nothing looked up, nothing stored), and a background task
//! sends the forget again every half second until Redis takes it. So the validators a write
//! replaced never answer again from this instance once Redis is back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::Value;

use super::{Answer, Known, Limits, Lookup, StoreKey, Stored, MAX_VARIANTS};
use crate::clock::{duration_to_nanos, Clock, SystemClock};
use crate::error::{BackendError, ConfigError};
use crate::key::Key;
use crate::redis::{
    check_prefix, CallError, Health, KeyNames, Permit, ProbeGuard, RedisBackend, Script,
    DEFAULT_BACKOFF, DEFAULT_DEADLINE, DEFAULT_FAILURE_THRESHOLD, DEFAULT_PREFIX, MAX_BACKOFF,
};

const SCRIPT: &str = include_str!("validators.lua");

/// The builder's Redis settings.
#[derive(Debug, Clone)]
pub(crate) struct RedisSettings {
    backend: RedisBackend,
    pub(crate) prefix: String,
    pub(crate) deadline: Duration,
}

impl RedisSettings {
    pub(crate) fn new(backend: RedisBackend) -> Self {
        Self {
            backend,
            prefix: DEFAULT_PREFIX.to_owned(),
            deadline: DEFAULT_DEADLINE,
        }
    }
}

#[derive(Debug)]
pub(crate) struct RedisStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    redis: RedisBackend,
    names: KeyNames,
    script: Script,
    deadline: Duration,
    limits: Limits,
    health: Health,
    /// The local clock `Health` backs off by (Redis's own time is in the script).
    clock: SystemClock,
    /// Paths whose forget Redis has not taken yet, and whether a task is resending them.
    owed: Mutex<Owed>,
}

/// The forgets Redis still owes this instance: each path with a count of the forgets owed for
/// it, so a resend that succeeds settles only what was owed when it was sent.
#[derive(Debug, Default)]
struct Owed {
    paths: HashMap<Key, u64>,
    resending: bool,
}

/// The most owed forgets kept; past it, a forget that fails is only logged (its entry lives
/// until its TTL, at most `max_ttl`).
const MAX_OWED: usize = 10_000;
/// How often owed forgets are sent again.
const RESEND_EVERY: Duration = Duration::from_millis(500);

impl AsRef<Health> for Inner {
    fn as_ref(&self) -> &Health {
        &self.health
    }
}

impl RedisStore {
    pub(crate) fn new(settings: RedisSettings, limits: Limits) -> Result<Self, ConfigError> {
        check_prefix(&settings.prefix)?;
        if settings.deadline.is_zero() {
            return Err(ConfigError::new(
                "redis_deadline",
                "must be above zero, got 0s",
            ));
        }
        let names = settings.backend.key_names(settings.prefix);
        Ok(Self {
            inner: Arc::new(Inner {
                redis: settings.backend,
                names,
                script: Script::new(SCRIPT),
                deadline: settings.deadline,
                limits,
                health: Health::new(
                    "validator store",
                    "requests are served as if there were no store",
                    DEFAULT_FAILURE_THRESHOLD,
                    DEFAULT_BACKOFF,
                    MAX_BACKOFF,
                ),
                clock: SystemClock::new(),
                owed: Mutex::new(Owed::default()),
            }),
        })
    }

    pub(crate) fn lookup(&self, key: &StoreKey) -> Answer<Lookup> {
        if self.inner.is_owed(&key.uri) {
            return Answer::Ready(Lookup::UNANSWERED);
        }
        let Some(guard) = self.inner.permit() else {
            return Answer::Ready(Lookup::UNANSWERED);
        };
        let inner = Arc::clone(&self.inner);
        let (uri, variant) = (key.uri.clone(), key.variant);
        Answer::Pending(Box::pin(async move {
            let reply = inner
                .call(guard, &uri, &|cmd| {
                    cmd.arg("get").arg(variant);
                })
                .await;
            read_lookup(reply).unwrap_or(Lookup::UNANSWERED)
        }))
    }

    pub(crate) fn remember(&self, key: StoreKey, generation: u64, stored: Stored, ttl: Duration) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.inner.is_owed(&key.uri) {
            return;
        }
        let Some(guard) = self.inner.permit() else {
            return;
        };
        let inner = Arc::clone(&self.inner);
        let ttl_ms = ttl.min(inner.limits.max_ttl).as_millis().max(1) as u64;
        let payload = stored.encode();
        runtime.spawn(async move {
            let _ = inner
                .call(guard, &key.uri, &|cmd| {
                    cmd.arg("put")
                        .arg(key.variant)
                        .arg(ttl_ms)
                        .arg(&payload)
                        .arg(MAX_VARIANTS)
                        .arg(generation);
                })
                .await;
        });
    }

    pub(crate) fn forget(&self, uri: &Key) -> Answer<Result<(), BackendError>> {
        let Some(guard) = self.inner.permit() else {
            self.inner.owe(uri.clone());
            return Answer::Ready(Err(BackendError::new(
                "validator store: redis is being left alone after failures; the forget is resent",
            )));
        };
        let inner = Arc::clone(&self.inner);
        let uri = uri.clone();
        Answer::Pending(Box::pin(async move {
            let result = inner.send_forget(guard, &uri).await;
            if result.is_err() {
                inner.owe(uri);
            }
            result
        }))
    }

    /// [`forget`](Self::forget) without waiting for it (before a write's handler runs).
    pub(crate) fn forget_in_background(&self, uri: &Key) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.inner.owe(uri.clone());
            return;
        };
        if let Answer::Pending(pending) = self.forget(uri) {
            runtime.spawn(async move {
                let _ = pending.await;
            });
        }
    }
}

impl Inner {
    async fn send_forget(&self, guard: ProbeGuard<Inner>, uri: &Key) -> Result<(), BackendError> {
        let changed_ms = self.limits.max_ttl.as_millis().max(1) as u64;
        self.call(guard, uri, &|cmd| {
            cmd.arg("forget").arg(changed_ms);
        })
        .await
        .map(drop)
        .map_err(BackendError::from)
    }

    fn is_owed(&self, uri: &Key) -> bool {
        // Nothing owed is the common case: one uncontended lock, no hashing.
        self.owed
            .lock()
            .is_ok_and(|owed| !owed.paths.is_empty() && owed.paths.contains_key(uri))
    }

    /// Keeps `uri` until Redis takes its forget, and starts the task that resends it.
    fn owe(self: &Arc<Self>, uri: Key) {
        let start = {
            let Ok(mut owed) = self.owed.lock() else {
                return;
            };
            if owed.paths.len() >= MAX_OWED && !owed.paths.contains_key(&uri) {
                tracing::warn!(
                    max = MAX_OWED,
                    "validator store: too many forgets owed by redis; this one is dropped (its entry lives until its TTL)"
                );
                return;
            }
            *owed.paths.entry(uri).or_insert(0) += 1;
            !std::mem::replace(&mut owed.resending, true)
        };
        if !start {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            if let Ok(mut owed) = self.owed.lock() {
                owed.resending = false;
            }
            return;
        };
        // The task holds the store weakly (it ends with it), and says it is gone however it
        // ends (a runtime shutting down drops it mid-sleep).
        let resender = Resender(Arc::downgrade(self));
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(RESEND_EVERY).await;
                let Some(inner) = resender.0.upgrade() else {
                    return;
                };
                if !inner.resend_owed().await {
                    return;
                }
            }
        });
    }

    /// One round of resending; false once nothing is owed (the task then ends). Sent even
    /// while `Health` leaves Redis alone (as ordinary calls, not probes): other instances may
    /// be reading the replaced validators meanwhile.
    async fn resend_owed(self: &Arc<Self>) -> bool {
        let round: Vec<(Key, u64)> = match self.owed.lock() {
            Ok(owed) => owed
                .paths
                .iter()
                .take(64)
                .map(|(k, n)| (k.clone(), *n))
                .collect(),
            Err(_) => return false,
        };
        for (uri, count) in round {
            let guard = ProbeGuard::new(Arc::clone(self), Permit::Call);
            if self.send_forget(guard, &uri).await.is_err() {
                break;
            }
            if let Ok(mut owed) = self.owed.lock() {
                // Settled only if no forget was owed for it meanwhile.
                if owed.paths.get(&uri) == Some(&count) {
                    owed.paths.remove(&uri);
                }
            }
        }
        match self.owed.lock() {
            Ok(mut owed) if owed.paths.is_empty() => {
                owed.resending = false;
                false
            }
            Ok(_) => true,
            Err(_) => false,
        }
    }
}

/// The resending task's handle on its store; clears the "resending" flag when the task ends,
/// however it ends, so a later failure starts a new one.
struct Resender(std::sync::Weak<Inner>);

impl Drop for Resender {
    fn drop(&mut self) {
        if let Some(inner) = self.0.upgrade() {
            if let Ok(mut owed) = inner.owed.lock() {
                owed.resending = false;
            }
        }
    }
}

/// `{generation, changed, headers or nil}`, or `None` for a reply the script does not give.
fn read_lookup(reply: Result<Value, CallError>) -> Option<Lookup> {
    let Ok(Value::Array(items)) = reply else {
        return None;
    };
    let [generation, changed, headers] = items.as_slice() else {
        return None;
    };
    let (Value::Int(generation), Value::Int(changed)) = (generation, changed) else {
        return None;
    };
    let known = match headers {
        Value::BulkString(bytes) => {
            Stored::decode(bytes).map_or(Known::Nothing, |s| Known::Stored(Arc::new(s)))
        }
        _ if *changed == 1 => Known::Changed,
        _ => Known::Nothing,
    };
    Some(Lookup {
        known,
        generation: u64::try_from(*generation).ok(),
    })
}

impl Inner {
    fn now_ns(&self) -> u64 {
        duration_to_nanos(self.clock.now())
    }

    /// A guard holding the permit to call Redis, or `None` while Redis is left alone.
    fn permit(self: &Arc<Self>) -> Option<ProbeGuard<Inner>> {
        match self.health.permit(self.now_ns()) {
            Permit::Skip => None,
            permit => Some(ProbeGuard::new(Arc::clone(self), permit)),
        }
    }

    async fn call(
        &self,
        mut guard: ProbeGuard<Inner>,
        uri: &Key,
        args: &(dyn Fn(&mut redis::Cmd) + Sync),
    ) -> Result<Value, CallError> {
        let mut key = self.names.tagged(uri);
        key.extend_from_slice(b"cv");
        let result = self
            .script
            .call(&self.redis, self.deadline, &[&key], args)
            .await;
        let permit = guard.settle();
        match &result {
            Err(err) if err.is_outage() => {
                tracing::debug!(error = %err, "validator store: redis failed, serving without it");
                self.health.failed(permit, self.now_ns(), err);
            }
            _ => self.health.succeeded(permit),
        }
        result
    }
}
