//! The validator store in memory: one entry per URI in the shared bounded keyed store, each
//! holding a few variants and the end of its quarantine.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use smallvec::SmallVec;

use super::{Limits, StoreKey, Stored, MAX_VARIANTS};
use crate::clock::{duration_to_nanos, Clock};
use crate::key::Key;
use crate::util::{Entry, KeyedStore, Sweeping};

#[derive(Debug)]
struct Variant {
    id: u64,
    expires_ns: u64,
    stored: Arc<Stored>,
}

#[derive(Debug, Default)]
struct Record {
    /// No validators are taken before this (clock nanoseconds): the URI was just invalidated.
    quarantine_until_ns: u64,
    variants: SmallVec<[Variant; 2]>,
}

impl Record {
    /// Nothing live: dropping it loses nothing.
    fn is_idle(&self, now: u64) -> bool {
        now >= self.quarantine_until_ns && self.variants.iter().all(|v| now >= v.expires_ns)
    }
}

pub(crate) struct MemoryStore {
    records: KeyedStore<Mutex<Record>>,
    limits: Limits,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("uris", &self.records.len())
            .finish_non_exhaustive()
    }
}

impl MemoryStore {
    pub(crate) fn new(max_keys: usize, limits: Limits, clock: Arc<dyn Clock>) -> Self {
        let sweeping = Sweeping {
            every_ns: duration_to_nanos(Duration::from_secs(10)),
            when_full_ns: duration_to_nanos(Duration::from_secs(1)),
            // Never written: a URI that does not fit is simply not stored.
            overflow_slots: 1,
        };
        Self {
            records: KeyedStore::new(max_keys, sweeping, || Mutex::new(Record::default())),
            limits,
            clock,
        }
    }

    fn now(&self) -> u64 {
        duration_to_nanos(self.clock.now())
    }

    pub(crate) fn len(&self) -> usize {
        self.records.len()
    }

    pub(crate) fn lookup(&self, key: &StoreKey) -> Option<Arc<Stored>> {
        let now = self.now();
        self.records
            .with_existing(&key.uri, |record| {
                let record = record.lock().ok()?;
                record
                    .variants
                    .iter()
                    .find(|v| v.id == key.variant && now < v.expires_ns)
                    .map(|v| Arc::clone(&v.stored))
            })
            .flatten()
    }

    pub(crate) fn remember(&self, key: &StoreKey, stored: Stored, ttl: Duration) {
        let now = self.now();
        let expires_ns = now.saturating_add(duration_to_nanos(ttl.min(self.limits.max_ttl)));
        let stored = Arc::new(stored);
        self.records.with(
            &key.uri,
            now,
            || Mutex::new(Record::default()),
            |record| record.lock().is_ok_and(|r| r.is_idle(now)),
            |entry| {
                let Entry::Own(record) = entry else { return };
                let Ok(mut record) = record.lock() else {
                    return;
                };
                if now < record.quarantine_until_ns {
                    return;
                }
                record
                    .variants
                    .retain(|v| v.id != key.variant && now < v.expires_ns);
                if record.variants.len() >= MAX_VARIANTS {
                    record.variants.remove(0);
                }
                record.variants.push(Variant {
                    id: key.variant,
                    expires_ns,
                    stored,
                });
            },
        );
    }

    pub(crate) fn forget(&self, uri: &Key) {
        let now = self.now();
        let until = now.saturating_add(duration_to_nanos(self.limits.quarantine));
        self.records.with(
            uri,
            now,
            || Mutex::new(Record::default()),
            |record| record.lock().is_ok_and(|r| r.is_idle(now)),
            |entry| {
                // A URI that did not fit was never stored, and a write for it cannot fit now.
                let Entry::Own(record) = entry else { return };
                if let Ok(mut record) = record.lock() {
                    record.variants.clear();
                    record.quarantine_until_ns = until;
                }
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::EntityTag;
    use crate::clock::ManualClock;
    use http::{header::ETAG, HeaderMap};

    fn stored(tag: &str) -> Stored {
        let mut headers = HeaderMap::new();
        headers.insert(ETAG, EntityTag::strong(tag).unwrap().header_value().clone());
        Stored::of(&headers).unwrap()
    }

    fn store(max_keys: usize) -> (MemoryStore, ManualClock) {
        let clock = ManualClock::new();
        let limits = Limits {
            max_ttl: Duration::from_secs(100),
            quarantine: Duration::from_secs(5),
        };
        (
            MemoryStore::new(max_keys, limits, Arc::new(clock.clone())),
            clock,
        )
    }

    fn key(uri: &str, variant: u64) -> StoreKey {
        StoreKey {
            uri: Key::Header(Arc::from(uri.as_bytes())),
            variant,
        }
    }

    #[test]
    fn entries_expire_by_the_shorter_ttl_and_variants_are_apart() {
        let (store, clock) = store(10);
        store.remember(&key("/a", 1), stored("one"), Duration::from_secs(10));
        store.remember(&key("/a", 2), stored("two"), Duration::from_secs(1_000));
        assert_eq!(
            store.lookup(&key("/a", 1)).unwrap().etag,
            stored("one").etag
        );
        assert_eq!(
            store.lookup(&key("/a", 2)).unwrap().etag,
            stored("two").etag
        );
        assert!(store.lookup(&key("/a", 3)).is_none());
        clock.advance(Duration::from_secs(10));
        assert!(store.lookup(&key("/a", 1)).is_none());
        clock.advance(Duration::from_secs(89));
        assert!(store.lookup(&key("/a", 2)).is_some(), "max_ttl is 100 s");
        clock.advance(Duration::from_secs(1));
        assert!(store.lookup(&key("/a", 2)).is_none());
    }

    #[test]
    fn forgetting_clears_every_variant_and_quarantines_the_uri() {
        let (store, clock) = store(10);
        store.remember(&key("/a", 1), stored("one"), Duration::from_secs(60));
        store.remember(&key("/a", 2), stored("two"), Duration::from_secs(60));
        store.forget(&key("/a", 0).uri);
        assert!(store.lookup(&key("/a", 1)).is_none());
        // A read that began before the write must not store the old tag again.
        store.remember(&key("/a", 1), stored("old"), Duration::from_secs(60));
        assert!(store.lookup(&key("/a", 1)).is_none());
        clock.advance(Duration::from_secs(5));
        store.remember(&key("/a", 1), stored("new"), Duration::from_secs(60));
        assert_eq!(
            store.lookup(&key("/a", 1)).unwrap().etag,
            stored("new").etag
        );
    }

    #[test]
    fn a_full_store_stores_nothing_new_and_keeps_what_it_has() {
        let (store, _clock) = store(2);
        for n in 0..1_000 {
            store.remember(
                &key(&format!("/flood/{n}"), 0),
                stored("x"),
                Duration::from_secs(60),
            );
        }
        assert_eq!(store.len(), 2);
        assert!(store.lookup(&key("/flood/0", 0)).is_some());
        assert!(store.lookup(&key("/flood/999", 0)).is_none());
    }

    #[test]
    fn variants_per_uri_are_bounded() {
        let (store, _clock) = store(2);
        for id in 0..20 {
            store.remember(&key("/a", id), stored("x"), Duration::from_secs(60));
        }
        let live = (0..20)
            .filter(|&id| store.lookup(&key("/a", id)).is_some())
            .count();
        assert_eq!(live, MAX_VARIANTS);
        assert!(store.lookup(&key("/a", 19)).is_some());
    }
}
