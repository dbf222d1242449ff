//! Hedging: when an attempt is slow, send one more copy of the request and take the first
//! good answer, cancelling the other (as `tower::hedge`, Envoy's hedging on per-try timeout,
//! Polly's hedging strategy). The copy is a withdrawal from the retry budget, so hedges cannot
//! double the load of a slow service.

use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::time::Instant;

use crate::error::ConfigError;

/// When a retry layer sends a hedge: after a fixed delay, or after the observed latency of a
/// percentile of recent attempts (only once enough are seen). Only requests that may be sent
/// twice are hedged, and only their first attempt, once.
///
/// ```
/// use std::time::Duration;
/// use tower_bulwark::retry::{Hedge, RetryLayer};
///
/// let fixed = RetryLayer::builder().hedge(Hedge::after(Duration::from_millis(50))).build()?;
/// let p95 = RetryLayer::builder()
///     .hedge(Hedge::at_percentile(95.0).min_samples(100).period(Duration::from_secs(30)))
///     .build()?;
/// # drop((fixed, p95));
/// # Ok::<(), tower_bulwark::ConfigError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hedge {
    delay: HedgeDelay,
    min_samples: u64,
    period: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum HedgeDelay {
    Fixed(Duration),
    Percentile(f64),
}

impl Hedge {
    /// A hedge once the first attempt has run for `delay`.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let hedge = tower_bulwark::retry::Hedge::after(Duration::from_millis(20));
    /// # drop(hedge);
    /// ```
    pub fn after(delay: Duration) -> Self {
        Self {
            delay: HedgeDelay::Fixed(delay),
            min_samples: 0,
            period: Duration::from_secs(10),
        }
    }

    /// A hedge once the first attempt has run longer than `percentile` (0 to 100, e.g. 95)
    /// of the attempts of the last one or two periods; none until `min_samples` (default 20)
    /// are seen. The latencies are kept in two HDR histograms (the `hdrhistogram` crate), one
    /// filling while the other is read, swapped every period (default 10 s).
    ///
    /// ```
    /// let hedge = tower_bulwark::retry::Hedge::at_percentile(99.0);
    /// # drop(hedge);
    /// ```
    pub fn at_percentile(percentile: f64) -> Self {
        Self {
            delay: HedgeDelay::Percentile(percentile),
            min_samples: 20,
            period: Duration::from_secs(10),
        }
    }

    /// Attempts to observe before a percentile hedge is sent (default 20).
    ///
    /// ```
    /// let hedge = tower_bulwark::retry::Hedge::at_percentile(95.0).min_samples(50);
    /// # drop(hedge);
    /// ```
    pub fn min_samples(mut self, samples: u64) -> Self {
        self.min_samples = samples;
        self
    }

    /// How long latencies are kept before the histograms swap (default 10 s).
    ///
    /// ```
    /// # use std::time::Duration;
    /// let hedge = tower_bulwark::retry::Hedge::at_percentile(95.0).period(Duration::from_secs(60));
    /// # drop(hedge);
    /// ```
    pub fn period(mut self, period: Duration) -> Self {
        self.period = period;
        self
    }

    /// The delay of a fixed hedge (`after`), `None` for a percentile one.
    pub(crate) fn fixed_delay(&self) -> Option<Duration> {
        match self.delay {
            HedgeDelay::Fixed(delay) => Some(delay),
            HedgeDelay::Percentile(_) => None,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        match self.delay {
            HedgeDelay::Fixed(delay) if delay.is_zero() => Err(ConfigError::new(
                "hedge",
                "a hedge delay must be > 0, got 0s",
            )),
            HedgeDelay::Percentile(p) if !(p > 0.0 && p < 100.0) => Err(ConfigError::new(
                "hedge",
                format!("a percentile must be in (0, 100), got {p}"),
            )),
            _ if self.period < Duration::from_millis(100) => Err(ConfigError::new(
                "hedge",
                format!("the period must be >= 100ms, got {:?}", self.period),
            )),
            _ => Ok(()),
        }
    }
}

/// A layer's hedging: its policy and, for a percentile, the latencies seen.
pub(crate) struct Hedging {
    hedge: Hedge,
    latencies: Option<Mutex<Latencies>>,
}

impl fmt::Debug for Hedging {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hedging")
            .field("hedge", &self.hedge)
            .finish()
    }
}

/// Two histograms of attempt latencies in microseconds: `reading` answers the percentile,
/// `filling` records; they swap every period.
struct Latencies {
    reading: Histogram<u64>,
    filling: Histogram<u64>,
    swapped_at: Instant,
}

/// Latencies are kept to three significant digits, up to an hour.
fn histogram() -> Option<Histogram<u64>> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).ok()
}

impl Hedging {
    pub(crate) fn new(hedge: Hedge) -> Result<Self, ConfigError> {
        hedge.validate()?;
        let latencies = match hedge.delay {
            HedgeDelay::Fixed(_) => None,
            HedgeDelay::Percentile(_) => {
                let (Some(reading), Some(filling)) = (histogram(), histogram()) else {
                    return Err(ConfigError::new(
                        "hedge",
                        "could not make a latency histogram",
                    ));
                };
                Some(Mutex::new(Latencies {
                    reading,
                    filling,
                    swapped_at: Instant::now(),
                }))
            }
        };
        Ok(Self { hedge, latencies })
    }

    /// How long the first attempt may run before a hedge goes; `None`: no hedge (not enough
    /// latencies seen yet).
    pub(crate) fn delay(&self) -> Option<Duration> {
        let percentile = match self.hedge.delay {
            HedgeDelay::Fixed(delay) => return Some(delay),
            HedgeDelay::Percentile(percentile) => percentile,
        };
        let mut latencies = self.latencies.as_ref()?.lock().ok()?;
        latencies.rotate(self.hedge.period);
        if latencies.reading.len() < self.hedge.min_samples.max(1) {
            return None;
        }
        let micros = latencies.reading.value_at_quantile(percentile / 100.0);
        Some(Duration::from_micros(micros.max(1)))
    }

    /// True when the layer records latencies.
    pub(crate) fn observes(&self) -> bool {
        self.latencies.is_some()
    }

    /// Records how long an attempt that answered took.
    pub(crate) fn observe(&self, took: Duration) {
        let Some(latencies) = &self.latencies else {
            return;
        };
        if let Ok(mut latencies) = latencies.lock() {
            latencies.rotate(self.hedge.period);
            let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
            latencies
                .filling
                .saturating_record(micros.clamp(1, 3_600_000_000));
        }
    }
}

impl Latencies {
    /// Swaps the histograms once a period has passed; after two periods with nothing
    /// recorded, both are empty again.
    fn rotate(&mut self, period: Duration) {
        let now = Instant::now();
        let since = now.saturating_duration_since(self.swapped_at);
        if since < period {
            return;
        }
        std::mem::swap(&mut self.reading, &mut self.filling);
        self.filling.reset();
        if since >= period * 2 {
            self.reading.reset();
        }
        self.swapped_at = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked() {
        for hedge in [
            Hedge::after(Duration::ZERO),
            Hedge::at_percentile(0.0),
            Hedge::at_percentile(100.0),
            Hedge::at_percentile(f64::NAN),
            Hedge::at_percentile(95.0).period(Duration::from_millis(1)),
        ] {
            assert_eq!(
                Hedging::new(hedge).unwrap_err().field(),
                "hedge",
                "{hedge:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_percentile_follows_what_was_seen_last_period() {
        let hedging = Hedging::new(Hedge::at_percentile(90.0).min_samples(10)).unwrap();
        assert_eq!(hedging.delay(), None);
        for ms in 1..=100 {
            hedging.observe(Duration::from_millis(ms));
        }
        // Recorded, but read only once the histograms swap.
        assert_eq!(hedging.delay(), None);
        tokio::time::advance(Duration::from_secs(10)).await;
        let p90 = hedging.delay().unwrap();
        assert!(
            p90 >= Duration::from_millis(90) && p90 <= Duration::from_millis(91),
            "{p90:?}"
        );
        // Two quiet periods: forgotten.
        tokio::time::advance(Duration::from_secs(20)).await;
        assert_eq!(hedging.delay(), None);
    }
}
