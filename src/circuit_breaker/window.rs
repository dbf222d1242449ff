//! The failure-rate windows: the last N calls, or the calls of the last period (in buckets).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

/// Totals over a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    pub(crate) calls: u64,
    pub(crate) failures: u64,
    pub(crate) slow: u64,
}

impl Totals {
    fn add(&mut self, failure: bool, slow: bool) {
        self.calls += 1;
        self.failures += u64::from(failure);
        self.slow += u64::from(slow);
    }

    fn sub(&mut self, other: Totals) {
        self.calls -= other.calls;
        self.failures -= other.failures;
        self.slow -= other.slow;
    }
}

/// The last `size` calls, without a lock: a ring of one byte per call, and the totals packed
/// in one word, so that concurrent calls never wait for each other and a reading of the
/// totals is one load.
///
/// Every change to the totals goes with a swap in the ring (a call in, the one it replaces
/// out; `clear` takes each out the same way), so once no change is under way the totals are
/// the sum of the ring. A change counts itself in flight in the same word before its swap and
/// out with its difference after, so a reading says whether it is whole: one taken while any
/// change is under way (a swap done, its difference not yet added: it could show a failure
/// put in and not the one it replaced) is judged as nothing, never as a rate reached. The
/// next call judges again.
#[derive(Debug)]
pub(crate) struct CountWindow {
    ring: Box<[AtomicU8]>,
    /// Calls recorded so far: the next slot is `next % size`.
    next: AtomicU64,
    /// `calls | failures << 17 | slow << 34 | changes in flight << 51`.
    totals: AtomicU64,
}

/// A ring entry: empty, or a call and what it was.
const PRESENT: u8 = 1;
const FAILED: u8 = 2;
const SLOW: u8 = 4;
/// Bits of one count of the packed totals (the window holds at most 100 000 calls).
const FIELD: u32 = 17;
const FIELD_MASK: u64 = (1 << FIELD) - 1;
/// One change in flight, in the top 13 bits (8 191 at once).
const IN_FLIGHT: u64 = 1 << (3 * FIELD);

/// The packed totals one ring entry stands for.
fn packed(entry: u8) -> u64 {
    u64::from(entry & PRESENT)
        | u64::from((entry & FAILED) >> 1) << FIELD
        | u64::from((entry & SLOW) >> 2) << (2 * FIELD)
}

impl CountWindow {
    pub(crate) fn new(size: usize) -> Self {
        Self {
            ring: (0..size.max(1)).map(|_| AtomicU8::new(0)).collect(),
            next: AtomicU64::new(0),
            totals: AtomicU64::new(0),
        }
    }

    /// Puts `entry` in `slot` and the totals with it; the totals after.
    fn put(&self, slot: usize, entry: u8) -> u64 {
        match self.begin(slot, entry) {
            Some(old) => self.finish(entry, old),
            None => self.totals.load(Ordering::Acquire),
        }
    }

    /// The first half of a change: counted in flight, then swapped in. The entry it replaced.
    fn begin(&self, slot: usize, entry: u8) -> Option<u8> {
        let cell = self.ring.get(slot)?;
        self.totals.fetch_add(IN_FLIGHT, Ordering::AcqRel);
        Some(cell.swap(entry, Ordering::AcqRel))
    }

    /// The second half: the difference added, and the change counted out of flight at once.
    fn finish(&self, entry: u8, old: u8) -> u64 {
        let change = packed(entry)
            .wrapping_sub(packed(old))
            .wrapping_sub(IN_FLIGHT);
        self.totals
            .fetch_add(change, Ordering::AcqRel)
            .wrapping_add(change)
    }

    /// The totals a packed word says, or nothing if it was read with a change under way.
    fn unpack(&self, word: u64) -> Totals {
        let totals = Totals {
            calls: word & FIELD_MASK,
            failures: (word >> FIELD) & FIELD_MASK,
            slow: (word >> (2 * FIELD)) & FIELD_MASK,
        };
        let size = self.ring.len() as u64;
        if word >> (3 * FIELD) != 0
            || totals.calls > size
            || totals.failures > totals.calls
            || totals.slow > totals.calls
        {
            return Totals::default();
        }
        totals
    }

    pub(crate) fn record(&self, failure: bool, slow: bool) -> Totals {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let slot = (n % self.ring.len() as u64) as usize;
        let entry = PRESENT | if failure { FAILED } else { 0 } | if slow { SLOW } else { 0 };
        self.unpack(self.put(slot, entry))
    }

    pub(crate) fn clear(&self) {
        for slot in 0..self.ring.len() {
            self.put(slot, 0);
        }
    }

    /// True when the window holds nothing that could open the breaker: no failure, no slow
    /// call. (Forgetting successes only makes a later minimum take longer to reach.)
    pub(crate) fn is_harmless(&self) -> bool {
        // No failure, no slow call, and no change under way.
        self.totals.load(Ordering::Acquire) >> FIELD == 0
    }
}

/// The calls of the last `period`, kept in `BUCKETS` buckets: a call leaves the window a
/// bucket's width at most after `period` (the window slides by whole buckets).
#[derive(Debug)]
pub(crate) struct TimeWindow {
    bucket_ns: u64,
    /// (bucket index = time / bucket_ns, its totals), oldest first.
    buckets: VecDeque<(u64, Totals)>,
    totals: Totals,
}

/// How finely a time window slides.
pub(crate) const BUCKETS: u64 = 10;

impl TimeWindow {
    pub(crate) fn new(period_ns: u64) -> Self {
        Self {
            bucket_ns: (period_ns / BUCKETS).max(1),
            buckets: VecDeque::with_capacity(BUCKETS as usize + 1),
            totals: Totals::default(),
        }
    }

    fn expire(&mut self, index: u64) {
        while let Some(&(oldest, totals)) = self.buckets.front() {
            if oldest + BUCKETS > index {
                break;
            }
            self.totals.sub(totals);
            self.buckets.pop_front();
        }
    }

    pub(crate) fn record(&mut self, now_ns: u64, failure: bool, slow: bool) -> Totals {
        let index = now_ns / self.bucket_ns;
        self.expire(index);
        match self.buckets.back_mut() {
            // A reading older than the newest bucket (threads race) counts in the newest.
            Some((newest, totals)) if *newest >= index => totals.add(failure, slow),
            _ => {
                let mut totals = Totals::default();
                totals.add(failure, slow);
                self.buckets.push_back((index, totals));
            }
        }
        self.totals.add(failure, slow);
        self.totals
    }

    pub(crate) fn clear(&mut self) {
        self.buckets.clear();
        self.totals = Totals::default();
    }

    /// True when no call is counted. (Buckets past the window count until the next call
    /// expires them: a conservative "not idle".)
    /// True when the window holds nothing that could open the breaker at `now_ns`: no
    /// failure or slow call in a bucket still inside the window.
    pub(crate) fn is_harmless(&mut self, now_ns: u64) -> bool {
        self.expire(now_ns / self.bucket_ns);
        self.totals.failures == 0 && self.totals.slow == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_window_keeps_the_last_n_calls() {
        let w = CountWindow::new(3);
        w.record(true, false);
        w.record(false, true);
        w.record(false, false);
        let t = w.record(false, false); // the first failure leaves
        assert_eq!((t.calls, t.failures, t.slow), (3, 0, 1));
        let t = w.record(true, false);
        assert_eq!((t.calls, t.failures, t.slow), (3, 1, 0));
    }

    /// The totals the ring itself holds, counted slot by slot.
    fn recount(w: &CountWindow) -> Totals {
        let mut totals = Totals::default();
        for cell in w.ring.iter() {
            let entry = cell.load(Ordering::Acquire);
            if entry & PRESENT != 0 {
                totals.add(entry & FAILED != 0, entry & SLOW != 0);
            }
        }
        totals
    }

    /// A change swapped in but not yet counted (its thread preempted between the two): a
    /// reading taken then could show more failures than the ring ever held, so it is judged
    /// as nothing.
    #[test]
    fn a_reading_with_a_change_under_way_is_judged_as_nothing() {
        let w = CountWindow::new(4);
        for i in 0..4 {
            w.record(i % 2 == 0, false); // failure, success, failure, success
        }
        assert_eq!(w.unpack(w.totals.load(Ordering::Acquire)).failures, 2);
        // A: a success replaces the failure in slot 0, then A is preempted.
        let old = w.begin(0, PRESENT).unwrap();
        // B: a failure replaces the success in slot 1, and B reads the totals.
        let during = w.record(true, false);
        assert_eq!(
            during,
            Totals::default(),
            "3 of 4 failed: a state that never was"
        );
        // A finishes: the totals are whole again.
        w.finish(PRESENT, old);
        let after = w.unpack(w.totals.load(Ordering::Acquire));
        assert_eq!((after.calls, after.failures), (4, 2));
        assert_eq!(after, recount(&w));
    }

    /// Threads recording (and clearing) at once: once they are done, the packed totals are
    /// exactly what the ring holds, and the ring is full.
    #[test]
    fn count_window_totals_match_the_ring_after_concurrent_records_and_clears() {
        let w = std::sync::Arc::new(CountWindow::new(64));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let w = w.clone();
                std::thread::spawn(move || {
                    for i in 0..20_000u32 {
                        let totals = w.record(i % 3 == 0, (i + t) % 5 == 0);
                        // A reading mid-change is judged as nothing, never as more than the
                        // window holds.
                        assert!(totals.calls <= 64 && totals.failures <= totals.calls);
                        if t == 0 && i % 5_000 == 0 {
                            w.clear();
                        }
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let totals = w.unpack(w.totals.load(Ordering::Acquire));
        assert_eq!(totals, recount(&w));
        assert_eq!(totals.calls, 64);
        w.clear();
        assert_eq!(w.totals.load(Ordering::Acquire), 0);
        assert!(w.is_harmless());
    }

    #[test]
    fn time_window_forgets_buckets_older_than_the_period() {
        let mut w = TimeWindow::new(1_000); // buckets of 100
        w.record(0, true, false);
        w.record(550, true, true);
        let t = w.record(999, false, false);
        assert_eq!((t.calls, t.failures, t.slow), (3, 2, 1));
        // At 1000 the bucket [0,100) has left; [500,600) stays until 1500.
        let t = w.record(1_000, false, false);
        assert_eq!((t.calls, t.failures, t.slow), (3, 1, 1));
        let t = w.record(1_600, false, false);
        assert_eq!((t.calls, t.failures, t.slow), (3, 0, 0));
        let t = w.record(5_000, false, false);
        assert_eq!(t.calls, 1);
    }

    #[test]
    fn an_older_reading_counts_in_the_newest_bucket() {
        let mut w = TimeWindow::new(1_000);
        w.record(500, true, false);
        let t = w.record(450, true, false);
        assert_eq!(t.failures, 2);
    }
}
