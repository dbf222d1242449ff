//! The validator store in memory: one entry per path in the shared bounded keyed store, each
//! holding a few variants, the path's generation and how long it counts as changed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use smallvec::SmallVec;

use super::{Known, Limits, Lookup, StoreKey, Stored, MAX_VARIANTS};
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
    /// Set by every write, never reused (see `MemoryStore::next_generation`): a read stores
    /// what it served only if no write came since its lookup.
    generation: u64,
    /// A write changed the resource: until then (clock nanoseconds), a conditional write whose
    /// variant holds no validators stored since cannot be shown to hold.
    changed_until_ns: u64,
    /// A live variant was pushed out to make room: until it would have expired, a write whose
    /// variant is missing cannot be shown to hold (a flood of queries must not open a path to
    /// stale writes).
    lossy_until_ns: u64,
    variants: SmallVec<[Variant; 2]>,
}

impl Record {
    /// Nothing live: dropping it loses nothing (its generation is never handed out again).
    fn is_idle(&self, now: u64) -> bool {
        now >= self.changed_until_ns
            && now >= self.lossy_until_ns
            && self.variants.iter().all(|v| now >= v.expires_ns)
    }
}

/// Generations a write sets have the top bit; a record no write touched has the count of
/// forgets dropped for want of room at its creation (below the top bit): the two never meet.
const WRITTEN: u64 = 1 << 63;

pub(crate) struct MemoryStore {
    records: KeyedStore<Mutex<Record>>,
    limits: Limits,
    clock: Arc<dyn Clock>,
    /// The next generation a write sets.
    writes: AtomicU64,
    /// Forgets that found no room: a read that looked before one must not store after it.
    dropped_forgets: AtomicU64,
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
            // Never written: a path that does not fit is simply not stored.
            overflow_slots: 1,
        };
        Self {
            records: KeyedStore::new(max_keys, sweeping, || Mutex::new(Record::default())),
            limits,
            clock,
            writes: AtomicU64::new(0),
            dropped_forgets: AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        duration_to_nanos(self.clock.now())
    }

    pub(crate) fn len(&self) -> usize {
        self.records.len()
    }

    /// The generation of a path no record holds.
    fn untouched(&self) -> u64 {
        self.dropped_forgets.load(Ordering::Acquire) & !WRITTEN
    }

    pub(crate) fn lookup(&self, key: &StoreKey) -> Lookup {
        let now = self.now();
        let found = self.records.with_existing(&key.uri, |record| {
            let record = record.lock().ok()?;
            let stored = record
                .variants
                .iter()
                .find(|v| v.id == key.variant && now < v.expires_ns)
                .map(|v| Arc::clone(&v.stored));
            let known = match stored {
                Some(stored) => Known::Stored(stored),
                None if now < record.changed_until_ns || now < record.lossy_until_ns => {
                    Known::Changed
                }
                None => Known::Nothing,
            };
            Some(Lookup {
                known,
                generation: Some(record.generation),
            })
        });
        match found {
            Some(Some(lookup)) => lookup,
            Some(None) => Lookup::UNANSWERED,
            None => Lookup {
                known: Known::Nothing,
                generation: Some(self.untouched()),
            },
        }
    }

    pub(crate) fn remember(&self, key: &StoreKey, generation: u64, stored: Stored, ttl: Duration) {
        let now = self.now();
        let expires_ns = now.saturating_add(duration_to_nanos(ttl.min(self.limits.max_ttl)));
        let stored = Arc::new(stored);
        let fresh = || {
            Mutex::new(Record {
                generation: self.untouched(),
                ..Record::default()
            })
        };
        self.records.with(
            &key.uri,
            now,
            fresh,
            |record| record.lock().is_ok_and(|r| r.is_idle(now)),
            |entry| {
                let Entry::Own(record) = entry else { return };
                let Ok(mut record) = record.lock() else {
                    return;
                };
                // Written since this read looked: what it served may be the old state.
                if record.generation != generation {
                    return;
                }
                let mut evicted = None;
                record
                    .variants
                    .retain(|v| v.id != key.variant && now < v.expires_ns);
                if record.variants.len() >= MAX_VARIANTS {
                    evicted = Some(record.variants.remove(0).expires_ns);
                }
                if let Some(until) = evicted {
                    record.lossy_until_ns = record.lossy_until_ns.max(until);
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
        let until = now.saturating_add(duration_to_nanos(self.limits.max_ttl));
        let generation = WRITTEN | self.writes.fetch_add(1, Ordering::AcqRel);
        let fresh = || Mutex::new(Record::default());
        let kept = self.records.with(
            uri,
            now,
            fresh,
            |record| record.lock().is_ok_and(|r| r.is_idle(now)),
            |entry| {
                let Entry::Own(record) = entry else {
                    return false;
                };
                let Ok(mut record) = record.lock() else {
                    return false;
                };
                record.variants.clear();
                record.lossy_until_ns = 0;
                record.generation = generation;
                record.changed_until_ns = until;
                true
            },
        );
        if !kept {
            // No room for the mark: no read that looked before now may store after it.
            self.dropped_forgets.fetch_add(1, Ordering::AcqRel);
        }
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

    /// The tag stored for `key`, if any.
    fn tag(store: &MemoryStore, key: &StoreKey) -> Option<String> {
        match store.lookup(key).known {
            Known::Stored(s) => s.etag.as_ref().map(|t| t.opaque().to_owned()),
            _ => None,
        }
    }

    /// A read: look up, then store what it served with the generation it saw.
    fn read(store: &MemoryStore, key: &StoreKey, served: &str, ttl: u64) {
        let generation = store.lookup(key).generation.unwrap();
        store.remember(key, generation, stored(served), Duration::from_secs(ttl));
    }

    #[test]
    fn entries_expire_by_the_shorter_ttl_and_variants_are_apart() {
        let (store, clock) = store(10);
        read(&store, &key("/a", 1), "one", 10);
        read(&store, &key("/a", 2), "two", 1_000);
        assert_eq!(tag(&store, &key("/a", 1)).as_deref(), Some("one"));
        assert_eq!(tag(&store, &key("/a", 2)).as_deref(), Some("two"));
        assert!(tag(&store, &key("/a", 3)).is_none());
        clock.advance(Duration::from_secs(10));
        assert!(tag(&store, &key("/a", 1)).is_none());
        clock.advance(Duration::from_secs(89));
        assert!(tag(&store, &key("/a", 2)).is_some(), "max_ttl is 100 s");
        clock.advance(Duration::from_secs(1));
        assert!(tag(&store, &key("/a", 2)).is_none());
    }

    #[test]
    fn a_write_leaves_the_uri_changed_until_a_read_after_it_stores() {
        let (store, _clock) = store(10);
        read(&store, &key("/a", 1), "one", 60);
        read(&store, &key("/a", 2), "two", 60);
        // A read that looks before the write and stores after it.
        let slow = store.lookup(&key("/a", 1)).generation.unwrap();
        store.forget(&key("/a", 0).uri);
        assert!(matches!(store.lookup(&key("/a", 1)).known, Known::Changed));
        assert!(matches!(store.lookup(&key("/a", 2)).known, Known::Changed));
        store.remember(&key("/a", 1), slow, stored("old"), Duration::from_secs(60));
        assert!(
            matches!(store.lookup(&key("/a", 1)).known, Known::Changed),
            "the old state is not stored"
        );
        // A read after the write stores the new state; the other variant stays "changed".
        read(&store, &key("/a", 1), "new", 60);
        assert_eq!(tag(&store, &key("/a", 1)).as_deref(), Some("new"));
        assert!(matches!(store.lookup(&key("/a", 2)).known, Known::Changed));
    }

    #[test]
    fn a_write_to_a_uri_never_stored_marks_it_changed_too() {
        let (store, clock) = store(10);
        let slow = store.lookup(&key("/b", 0)).generation.unwrap();
        store.forget(&key("/b", 0).uri);
        store.remember(&key("/b", 0), slow, stored("old"), Duration::from_secs(60));
        assert!(matches!(store.lookup(&key("/b", 0)).known, Known::Changed));
        // Changed for max_ttl at most, then nothing is known.
        clock.advance(Duration::from_secs(100));
        assert!(matches!(store.lookup(&key("/b", 0)).known, Known::Nothing));
    }

    #[test]
    fn a_generation_is_never_handed_out_twice_even_after_its_record_is_swept() {
        let (store, clock) = store(2);
        store.forget(&key("/a", 0).uri);
        let first = store.lookup(&key("/a", 0)).generation.unwrap();
        // The record goes idle and is swept (the store is at least half full).
        clock.advance(Duration::from_secs(100));
        read(&store, &key("/b", 0), "b", 60);
        read(&store, &key("/c", 0), "c", 60);
        store.forget(&key("/a", 0).uri);
        let second = store.lookup(&key("/a", 0)).generation.unwrap();
        assert_ne!(first, second);
        store.remember(&key("/a", 0), first, stored("old"), Duration::from_secs(60));
        assert!(tag(&store, &key("/a", 0)).is_none());
    }

    #[test]
    fn a_forget_with_no_room_still_stops_reads_that_looked_before_it() {
        let (store, clock) = store(1);
        read(&store, &key("/full", 0), "x", 10);
        let slow = store.lookup(&key("/a", 0)).generation.unwrap();
        store.forget(&key("/a", 0).uri); // no room for its mark
                                         // Room again: the slow read finds it, but not its generation.
        clock.advance(Duration::from_secs(10));
        store.remember(&key("/a", 0), slow, stored("old"), Duration::from_secs(60));
        assert!(tag(&store, &key("/a", 0)).is_none());
        // A read that looks now stores.
        read(&store, &key("/a", 0), "new", 60);
        assert_eq!(tag(&store, &key("/a", 0)).as_deref(), Some("new"));
    }

    #[test]
    fn a_full_store_stores_nothing_new_and_keeps_what_it_has() {
        let (store, _clock) = store(2);
        for n in 0..1_000 {
            read(&store, &key(&format!("/flood/{n}"), 0), "x", 60);
        }
        assert_eq!(store.len(), 2);
        assert!(tag(&store, &key("/flood/0", 0)).is_some());
        assert!(tag(&store, &key("/flood/999", 0)).is_none());
    }

    #[test]
    fn variants_per_uri_are_bounded() {
        let (store, _clock) = store(2);
        for id in 0..20 {
            read(&store, &key("/a", id), "x", 60);
        }
        let live = (0..20)
            .filter(|&id| tag(&store, &key("/a", id)).is_some())
            .count();
        assert_eq!(live, MAX_VARIANTS);
        assert!(tag(&store, &key("/a", 19)).is_some());
    }
}
