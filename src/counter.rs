#![cfg_attr(not(feature = "rate-limit"), allow(dead_code))]
//! A counter that many threads bump at once without fighting over one cache line.
//!
//! Every layer counts its decisions on the request path; a single shared atomic would make every
//! core's request write the same cache line. Each thread instead adds to one of a few stripes
//! (chosen once per thread), and a read sums them.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

const STRIPES: usize = 8;

/// One stripe per cache line (128 bytes covers adjacent-line prefetching).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Stripe(AtomicU64);

#[derive(Debug, Default)]
pub(crate) struct StripedCounter {
    stripes: [Stripe; STRIPES],
}

fn this_threads_stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    STRIPE.with(|stripe| {
        if stripe.get() == usize::MAX {
            stripe.set(NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES);
        }
        stripe.get()
    })
}

impl StripedCounter {
    pub(crate) fn add(&self, n: u64) {
        self.stripes[this_threads_stripe()]
            .0
            .fetch_add(n, Ordering::Relaxed);
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
#[cfg_attr(not(feature = "circuit-breaker"), allow(dead_code))]
#[derive(Debug)]
pub(crate) struct StripedCounts<const N: usize> {
    stripes: [Stripes<N>; STRIPES],
}

#[cfg_attr(not(feature = "circuit-breaker"), allow(dead_code))]
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

#[cfg_attr(not(feature = "circuit-breaker"), allow(dead_code))]
impl<const N: usize> StripedCounts<N> {
    /// Adds 1 to counter `i` (ignored when out of range).
    pub(crate) fn bump(&self, i: usize) {
        if let Some(counter) = self.stripes[this_threads_stripe()].0.get(i) {
            counter.fetch_add(1, Ordering::Relaxed);
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
