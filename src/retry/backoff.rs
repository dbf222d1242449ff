//! How long to wait before each retry: exponential growth, capped, then jittered.

use std::time::Duration;

use super::Random;
use crate::error::ConfigError;

/// How a backoff delay is spread at random, so that clients that failed together do not all
/// come back together.
///
/// With `d = min(cap, base × multiplier^n)` for the `n`-th retry (from 0), as in AWS's
/// "Exponential Backoff And Jitter":
///
/// | mode | delay |
/// |---|---|
/// | [`Full`](Self::Full) (default) | uniform in `[0, d]` |
/// | [`Equal`](Self::Equal) | `d/2` + uniform in `[0, d/2]` |
/// | [`Decorrelated`](Self::Decorrelated) | uniform in `[base, min(cap, 3 × previous delay)]` |
/// | [`Proportional`](Self::Proportional) | `d × (1 ± fraction)`, uniform (±10 % is the guides') |
/// | [`None`](Self::None) | `d` exactly |
///
/// The cap applies before the jitter: a proportional delay may reach `cap × (1 + fraction)`.
///
/// ```
/// use std::time::Duration;
/// use tower_bulwark::retry::{Backoff, Jitter, SeededRandom};
///
/// let backoff = Backoff::exponential(Duration::from_secs(1)).jitter(Jitter::Equal);
/// let delay = backoff.delay(2, Duration::ZERO, &SeededRandom::new(1)); // d = 4 s
/// assert!(delay >= Duration::from_secs(2) && delay <= Duration::from_secs(4));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Jitter {
    /// Uniform in `[0, d]`: AWS measured it among the cheapest in calls and time. The default.
    Full,
    /// Half fixed, half random: `d/2 + uniform[0, d/2]`.
    Equal,
    /// Each delay drawn from `[base, 3 × previous]`, capped.
    Decorrelated,
    /// `d` spread by ± this fraction (0 to 1), as the guides' ±10 %: `Proportional(0.1)`.
    Proportional(f64),
    /// No jitter: every client waits exactly `d` (a thundering herd; for comparison).
    None,
}

/// The backoff of a retry layer: exponential from `base` by `multiplier`, capped at `cap`,
/// jittered. Defaults: base 1 s, multiplier 2, cap 30 s, [`Jitter::Full`].
///
/// ```
/// use std::time::Duration;
/// use tower_bulwark::retry::{Backoff, Jitter, SeededRandom};
///
/// let backoff = Backoff::exponential(Duration::from_millis(100))
///     .multiplier(3.0)
///     .cap(Duration::from_secs(1))
///     .jitter(Jitter::None);
/// let random = SeededRandom::new(0);
/// let delays: Vec<_> = (0..4).map(|n| backoff.delay(n, Duration::ZERO, &random)).collect();
/// assert_eq!(delays, [100, 300, 900, 1000].map(Duration::from_millis)); // capped at 1 s
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    base: Duration,
    multiplier: f64,
    cap: Duration,
    jitter: Jitter,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::exponential(Duration::from_secs(1))
    }
}

impl Backoff {
    /// Exponential backoff from `base`, multiplier 2, cap 30 s, full jitter.
    ///
    /// ```
    /// use std::time::Duration;
    /// let backoff = tower_bulwark::retry::Backoff::exponential(Duration::from_millis(50));
    /// assert_eq!(backoff.base(), Duration::from_millis(50));
    /// ```
    pub fn exponential(base: Duration) -> Self {
        Self {
            base,
            multiplier: 2.0,
            cap: Duration::from_secs(30),
            jitter: Jitter::Full,
        }
    }

    /// The factor each delay grows by (default 2; 1 is a constant delay).
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_bulwark::retry::{Backoff, Jitter, ThreadRandom};
    /// let constant = Backoff::exponential(Duration::from_secs(1)).multiplier(1.0).jitter(Jitter::None);
    /// assert_eq!(constant.delay(5, Duration::ZERO, &ThreadRandom), Duration::from_secs(1));
    /// ```
    pub fn multiplier(mut self, multiplier: f64) -> Self {
        self.multiplier = multiplier;
        self
    }

    /// The longest delay before jitter (default 30 s).
    ///
    /// ```
    /// use std::time::Duration;
    /// let backoff = tower_bulwark::retry::Backoff::default().cap(Duration::from_secs(5));
    /// assert_eq!(backoff.cap_delay(), Duration::from_secs(5));
    /// ```
    pub fn cap(mut self, cap: Duration) -> Self {
        self.cap = cap;
        self
    }

    /// How the delay is spread (default [`Jitter::Full`]).
    ///
    /// ```
    /// use tower_bulwark::retry::{Backoff, Jitter};
    /// let backoff = Backoff::default().jitter(Jitter::Proportional(0.1));
    /// assert_eq!(backoff.jitter_mode(), Jitter::Proportional(0.1));
    /// ```
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// The first delay before jitter.
    ///
    /// ```
    /// assert_eq!(tower_bulwark::retry::Backoff::default().base().as_secs(), 1);
    /// ```
    pub fn base(&self) -> Duration {
        self.base
    }

    /// The longest delay before jitter.
    ///
    /// ```
    /// assert_eq!(tower_bulwark::retry::Backoff::default().cap_delay().as_secs(), 30);
    /// ```
    pub fn cap_delay(&self) -> Duration {
        self.cap
    }

    /// How the delay is spread.
    ///
    /// ```
    /// use tower_bulwark::retry::{Backoff, Jitter};
    /// assert_eq!(Backoff::default().jitter_mode(), Jitter::Full);
    /// ```
    pub fn jitter_mode(&self) -> Jitter {
        self.jitter
    }

    /// Checks the settings: a base > 0, a multiplier ≥ 1 and finite, a cap ≥ base, a
    /// proportional fraction in `[0, 1]`. Called by the retry layer's `build`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_bulwark::retry::Backoff;
    ///
    /// let err = Backoff::default().multiplier(0.5).validate().unwrap_err();
    /// assert_eq!(err.field(), "multiplier");
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.base.is_zero() {
            return Err(ConfigError::new("base", "must be > 0, got 0s"));
        }
        if !(self.multiplier.is_finite() && self.multiplier >= 1.0) {
            return Err(ConfigError::new(
                "multiplier",
                format!("must be finite and >= 1, got {}", self.multiplier),
            ));
        }
        if self.cap < self.base {
            return Err(ConfigError::new(
                "cap",
                format!("must be >= base ({:?}), got {:?}", self.base, self.cap),
            ));
        }
        if let Jitter::Proportional(fraction) = self.jitter {
            if !(0.0..=1.0).contains(&fraction) {
                return Err(ConfigError::new(
                    "jitter",
                    format!("a proportional fraction must be in [0, 1], got {fraction}"),
                ));
            }
        }
        Ok(())
    }

    /// The delay before the `retry`-th retry (0 for the first), given the delay before the
    /// previous one (`previous`, only read by [`Jitter::Decorrelated`]; zero for the first).
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_bulwark::retry::{Backoff, SeededRandom};
    ///
    /// let backoff = Backoff::default(); // 1 s, ×2, cap 30 s, full jitter
    /// let random = SeededRandom::new(9);
    /// for n in 0..10 {
    ///     let limit = Duration::from_secs(30).min(Duration::from_secs(1 << n));
    ///     assert!(backoff.delay(n, Duration::ZERO, &random) <= limit);
    /// }
    /// ```
    pub fn delay(&self, retry: u32, previous: Duration, random: &dyn Random) -> Duration {
        let capped = self.capped(retry);
        match self.jitter {
            Jitter::None => capped,
            Jitter::Full => capped.mul_f64(random.next_unit()),
            Jitter::Equal => {
                let half = capped / 2;
                half + (capped - half).mul_f64(random.next_unit())
            }
            Jitter::Decorrelated => {
                let previous = previous.max(self.base);
                let high = self.cap.min(previous.saturating_mul(3)).max(self.base);
                self.base + (high - self.base).mul_f64(random.next_unit())
            }
            Jitter::Proportional(fraction) => {
                // 1 - fraction + 2 × fraction × u: uniform in [1 - fraction, 1 + fraction).
                let factor = 1.0 - fraction + 2.0 * fraction * random.next_unit();
                capped.mul_f64(factor.max(0.0))
            }
        }
    }

    /// `min(cap, base × multiplier^retry)`, computed in floating point so that no exponent
    /// overflows.
    fn capped(&self, retry: u32) -> Duration {
        let grown =
            self.base.as_secs_f64() * self.multiplier.powi(retry.min(i32::MAX as u32) as i32);
        if grown.is_finite() && grown < self.cap.as_secs_f64() {
            Duration::from_secs_f64(grown).min(self.cap)
        } else {
            self.cap
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retry::SeededRandom;

    #[test]
    fn the_exponent_never_overflows() {
        let backoff = Backoff::default().jitter(Jitter::None);
        let random = SeededRandom::new(0);
        assert_eq!(
            backoff.delay(u32::MAX, Duration::ZERO, &random),
            Duration::from_secs(30)
        );
        assert_eq!(
            backoff.delay(1_000, Duration::ZERO, &random),
            Duration::from_secs(30)
        );
    }

    #[test]
    fn decorrelated_grows_from_the_previous_delay() {
        let backoff = Backoff::default().jitter(Jitter::Decorrelated);
        let random = SeededRandom::new(5);
        let mut previous = Duration::ZERO;
        for n in 0..50 {
            let delay = backoff.delay(n, previous, &random);
            let high = Duration::from_secs(30).min(previous.max(Duration::from_secs(1)) * 3);
            assert!(
                delay >= Duration::from_secs(1) && delay <= high,
                "{delay:?} > {high:?}"
            );
            previous = delay;
        }
    }
}
