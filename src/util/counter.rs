//! A counter that many threads bump at once without fighting over one cache line.
//!
//! Every layer counts its decisions on the request path; a single shared atomic would make every
//! core's request write the same cache line. Each thread instead adds to one of a few stripes
//! (chosen once per thread), and a read sums them.
//!
//! The first threads to count each own a stripe outright: only they write it, so they add
//! with a plain load and store, not a locked read-modify-write (which costs several
//! nanoseconds even uncontended). Threads that come later share the last stripes and add
//! atomically. (Owned for the life of the process: in a program whose first threads are
//! short-lived, every later thread shares two stripes.)

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

const STRIPES: usize = 8;
/// Stripes owned by one thread each; the rest are shared.
const OWNED: usize = STRIPES - 2;
/// Set in a slot when its thread owns the stripe.
const OWNER: usize = 1 << 16;
const STRIPE_MASK: usize = OWNER - 1;

/// One stripe per cache line (128 bytes covers adjacent-line prefetching).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Stripe(AtomicU64);

#[derive(Debug, Default)]
pub(crate) struct StripedCounter {
    stripes: [Stripe; STRIPES],
}

/// This thread's stripe, with `OWNER` set if no other thread ever writes it.
#[inline]
fn this_threads_slot() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SLOT: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    SLOT.with(|slot| {
        if slot.get() == usize::MAX {
            // Saturating: a count that wrapped would hand an owned stripe out twice.
            let n = NEXT
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    Some(n.saturating_add(1))
                })
                .unwrap_or(usize::MAX);
            slot.set(if n < OWNED {
                n | OWNER
            } else {
                OWNED + n % (STRIPES - OWNED)
            });
        }
        slot.get()
    })
}

/// Adds `n` to `counter`, a counter of stripe `slot`.
#[inline]
fn add_to(counter: &AtomicU64, slot: usize, n: u64) {
    if slot & OWNER != 0 {
        // This thread is the stripe's only writer: no update can be lost between the two.
        counter.store(
            counter.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    } else {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

impl StripedCounter {
    #[inline]
    pub(crate) fn add(&self, n: u64) {
        let slot = this_threads_slot();
        add_to(&self.stripes[slot & STRIPE_MASK].0, slot, n);
    }

    pub(crate) fn get(&self) -> u64 {
        self.stripes
            .iter()
            .map(|s| s.0.load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
    }
}

/// `N` counters bumped together by many threads: one stripe per thread holds all `N` (a single
/// cache line for small `N`), so bumping any of them costs what one [`StripedCounter`] does.
#[derive(Debug)]
pub(crate) struct StripedCounts<const N: usize> {
    stripes: [Stripes<N>; STRIPES],
}

#[derive(Debug)]
#[repr(align(128))]
struct Stripes<const N: usize>([AtomicU64; N]);

impl<const N: usize> Default for StripedCounts<N> {
    fn default() -> Self {
        Self {
            stripes: std::array::from_fn(|_| Stripes(std::array::from_fn(|_| AtomicU64::new(0)))),
        }
    }
}

impl<const N: usize> StripedCounts<N> {
    /// Adds 1 to counter `i` (ignored when out of range).
    #[inline]
    pub(crate) fn bump(&self, i: usize) {
        self.add(i, 1);
    }

    /// Adds `n` to counter `i` (ignored when out of range).
    #[inline]
    pub(crate) fn add(&self, i: usize, n: u64) {
        let slot = this_threads_slot();
        if let Some(counter) = self.stripes[slot & STRIPE_MASK].0.get(i) {
            add_to(counter, slot, n);
        }
    }

    /// Adds 1 to counters `i` and `j` on one lookup of this thread's stripe.
    #[inline]
    pub(crate) fn bump_two(&self, i: usize, j: usize) {
        let slot = this_threads_slot();
        let stripe = &self.stripes[slot & STRIPE_MASK].0;
        for k in [i, j] {
            if let Some(counter) = stripe.get(k) {
                add_to(counter, slot, 1);
            }
        }
    }

    /// Every counter's total.
    pub(crate) fn get(&self) -> [u64; N] {
        let mut totals = [0u64; N];
        for stripe in &self.stripes {
            for (total, counter) in totals.iter_mut().zip(&stripe.0) {
                *total = total.wrapping_add(counter.load(Ordering::Relaxed));
            }
        }
        totals
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn sums_every_threads_additions() {
        let counter = Arc::new(StripedCounter::default());
        let threads: Vec<_> = (0..12)
            .map(|_| {
                let counter = counter.clone();
                std::thread::spawn(move || {
                    for _ in 0..1_000 {
                        counter.add(1);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(counter.get(), 12_000);
    }

    #[test]
    fn striped_counts_keep_each_counter_apart() {
        let counts = Arc::new(StripedCounts::<3>::default());
        let threads: Vec<_> = (0..6)
            .map(|t| {
                let counts = counts.clone();
                std::thread::spawn(move || {
                    for _ in 0..100 {
                        counts.bump(t % 3);
                    }
                    counts.bump(7); // out of range: ignored
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(counts.get(), [200, 200, 200]);
    }
}
