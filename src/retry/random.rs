//! Where the jitter's randomness comes from: a fast thread-local generator by default, or a
//! seeded one, so that a test replays the exact sequence of delays.

use std::fmt;
use std::sync::Mutex;

/// A source of random numbers for the backoff's jitter.
///
/// Not for anything secret: jitter only spreads clients apart in time.
///
/// ```
/// use tower_bulwark::retry::{Random, SeededRandom};
///
/// let a = SeededRandom::new(7);
/// let b = SeededRandom::new(7);
/// assert_eq!(a.next_u64(), b.next_u64()); // the same seed, the same sequence
/// ```
pub trait Random: Send + Sync + fmt::Debug + 'static {
    /// The next 64 random bits.
    fn next_u64(&self) -> u64;

    /// A number in `[0, 1)`, uniformly spread: the top 53 bits of [`next_u64`](Self::next_u64).
    ///
    /// ```
    /// use tower_bulwark::retry::{Random, ThreadRandom};
    /// let x = ThreadRandom.next_unit();
    /// assert!((0.0..1.0).contains(&x));
    /// ```
    fn next_unit(&self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// The default source: `fastrand`'s thread-local generator (wyrand), seeded from the OS by
/// each thread, with no lock and no shared state between threads.
///
/// ```
/// use tower_bulwark::retry::{Random, ThreadRandom};
/// assert_ne!(ThreadRandom.next_u64(), ThreadRandom.next_u64());
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct ThreadRandom;

impl Random for ThreadRandom {
    fn next_u64(&self) -> u64 {
        fastrand::u64(..)
    }
}

/// A source that replays one sequence from a seed: for tests and simulations. Shared by
/// every request of a layer, so the sequence is exact only when the requests come one at a
/// time (as in a test).
///
/// ```
/// use tower_bulwark::retry::{Random, SeededRandom};
///
/// let random = SeededRandom::new(42);
/// let first = random.next_u64();
/// assert_eq!(SeededRandom::new(42).next_u64(), first);
/// ```
#[derive(Debug)]
pub struct SeededRandom {
    rng: Mutex<fastrand::Rng>,
}

impl SeededRandom {
    /// A source whose sequence is fixed by `seed`.
    ///
    /// ```
    /// let random = tower_bulwark::retry::SeededRandom::new(1);
    /// # drop(random);
    /// ```
    pub fn new(seed: u64) -> Self {
        Self {
            rng: Mutex::new(fastrand::Rng::with_seed(seed)),
        }
    }
}

impl Random for SeededRandom {
    fn next_u64(&self) -> u64 {
        // A poisoned lock still holds a usable generator.
        let mut rng = self
            .rng
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        rng.u64(..)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_numbers_stay_below_one() {
        #[derive(Debug)]
        struct Max;
        impl Random for Max {
            fn next_u64(&self) -> u64 {
                u64::MAX
            }
        }
        assert!(Max.next_unit() < 1.0);
        let random = SeededRandom::new(3);
        assert!((0..10_000).all(|_| (0.0..1.0).contains(&random.next_unit())));
    }
}
