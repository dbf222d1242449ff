//! One limit: an algorithm, a number of requests and a period.

use std::time::Duration;

use super::algorithm::{nanos, Algorithm, Quota};
use crate::error::ConfigError;

/// The longest period a limit may have (ten years), so window arithmetic cannot overflow.
///
/// ```
/// use std::time::Duration;
/// use tower_bulwark::rate_limit::{RateLimitLayer, MAX_PERIOD};
///
/// assert!(RateLimitLayer::fixed_window(1, MAX_PERIOD).build().is_ok());
/// let err = RateLimitLayer::fixed_window(1, MAX_PERIOD + Duration::from_secs(1)).build();
/// assert_eq!(err.unwrap_err().field(), "period");
/// ```
pub const MAX_PERIOD: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// The largest `limit` or `burst`: the largest integer an HTTP structured field can carry.
///
/// ```
/// use std::time::Duration;
/// use tower_bulwark::rate_limit::{RateLimitLayer, MAX_COUNT};
///
/// let hour = Duration::from_secs(3600);
/// assert!(RateLimitLayer::fixed_window(MAX_COUNT, hour).build().is_ok());
/// assert_eq!(RateLimitLayer::fixed_window(MAX_COUNT + 1, hour).build().unwrap_err().field(), "limit");
/// ```
pub const MAX_COUNT: u64 = 999_999_999_999_999;

/// One limit on a [`RateLimitLayer`](super::RateLimitLayer): `limit` requests per `period` by
/// one algorithm. A layer may hold several, checked together and all-or-nothing.
///
/// ```
/// use std::time::Duration;
/// use tower_bulwark::rate_limit::{Limit, RateLimitLayer};
///
/// // 10 per second with bursts of 5, and 1000 per hour.
/// let layer = RateLimitLayer::builder()
///     .limit(Limit::token_bucket(10, Duration::from_secs(1)).burst(5).name("per-second"))
///     .limit(Limit::fixed_window(1000, Duration::from_secs(3600)).name("per-hour"))
///     .build()
///     .unwrap();
/// # drop(layer);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    pub(crate) algorithm: Algorithm,
    pub(crate) limit: u64,
    pub(crate) period: Duration,
    pub(crate) burst: Option<u64>,
    pub(crate) name: Option<String>,
}

impl Limit {
    fn new(algorithm: Algorithm, limit: u64, period: Duration) -> Self {
        Self {
            algorithm,
            limit,
            period,
            burst: None,
            name: None,
        }
    }

    /// A token bucket refilling `limit` tokens per `period`, holding `burst` (default: `limit`).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_bulwark::rate_limit::Limit;
    /// let limit = Limit::token_bucket(100, Duration::from_secs(60)).burst(20);
    /// # drop(limit);
    /// ```
    pub fn token_bucket(limit: u64, period: Duration) -> Self {
        Self::new(Algorithm::TokenBucket, limit, period)
    }

    /// At most `limit` requests in any sliding window of `period` (exact).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_bulwark::rate_limit::Limit;
    /// let limit = Limit::sliding_window_log(100, Duration::from_secs(60));
    /// # drop(limit);
    /// ```
    pub fn sliding_window_log(limit: u64, period: Duration) -> Self {
        Self::new(Algorithm::SlidingWindowLog, limit, period)
    }

    /// About `limit` requests per sliding window of `period`, from two counters.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_bulwark::rate_limit::Limit;
    /// let limit = Limit::sliding_window_counter(100, Duration::from_secs(60));
    /// # drop(limit);
    /// ```
    pub fn sliding_window_counter(limit: u64, period: Duration) -> Self {
        Self::new(Algorithm::SlidingWindowCounter, limit, period)
    }

    /// At most `limit` requests per fixed window of `period`.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_bulwark::rate_limit::Limit;
    /// let limit = Limit::fixed_window(100, Duration::from_secs(60));
    /// # drop(limit);
    /// ```
    pub fn fixed_window(limit: u64, period: Duration) -> Self {
        Self::new(Algorithm::FixedWindow, limit, period)
    }

    /// Token bucket only: how many requests may pass at once (the bucket's size).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_bulwark::rate_limit::Limit;
    /// let limit = Limit::token_bucket(1, Duration::from_secs(1)).burst(10);
    /// # drop(limit);
    /// ```
    pub fn burst(mut self, burst: u64) -> Self {
        self.burst = Some(burst);
        self
    }

    /// The policy's name in the `RateLimit-Policy` and `RateLimit` headers (default `"default"`
    /// for the first limit, `"limit1"`, `"limit2"`, ... for the others).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_bulwark::rate_limit::Limit;
    /// let limit = Limit::fixed_window(1000, Duration::from_secs(86_400)).name("daily");
    /// # drop(limit);
    /// ```
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The algorithm.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_bulwark::rate_limit::{Algorithm, Limit};
    /// assert_eq!(Limit::fixed_window(1, Duration::from_secs(1)).algorithm(), Algorithm::FixedWindow);
    /// ```
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    pub(crate) fn validate(&self, index: usize) -> Result<(Quota, String), ConfigError> {
        if self.limit == 0 {
            return Err(ConfigError::new("limit", "must be > 0, got 0"));
        }
        // Header integers are structured-field integers: at most 15 digits.
        if self.limit > MAX_COUNT {
            return Err(ConfigError::new(
                "limit",
                format!("must be at most {MAX_COUNT}, got {}", self.limit),
            ));
        }
        if let Some(burst) = self.burst.filter(|&b| b > MAX_COUNT) {
            return Err(ConfigError::new(
                "burst",
                format!("must be at most {MAX_COUNT}, got {burst}"),
            ));
        }
        if self.period.is_zero() {
            return Err(ConfigError::new("period", "must be > 0, got 0s"));
        }
        if self.period > MAX_PERIOD {
            return Err(ConfigError::new(
                "period",
                format!("must be at most 10 years, got {:?}", self.period),
            ));
        }
        let period_ns = nanos(self.period);
        let mut quota = Quota {
            algorithm: self.algorithm,
            limit: self.limit,
            period_ns,
            burst: 0,
            emission_ns: 0,
            refill_ns: 0,
        };
        match (self.algorithm, self.burst) {
            (Algorithm::TokenBucket, Some(0)) => {
                return Err(ConfigError::new("burst", "must be >= 1, got 0"));
            }
            (Algorithm::TokenBucket, burst) => {
                quota.burst = burst.unwrap_or(self.limit);
                // Rounded up: a rate a hair under the limit, never over it.
                quota.emission_ns = period_ns.div_ceil(self.limit);
                let refill =
                    u128::from(quota.burst) * u128::from(period_ns) / u128::from(self.limit);
                quota.refill_ns = u64::try_from(refill).unwrap_or(u64::MAX);
                if period_ns < self.limit {
                    return Err(ConfigError::new(
                        "limit",
                        format!(
                            "must be at most one per nanosecond of `period`, got {} per {:?}",
                            self.limit, self.period
                        ),
                    ));
                }
            }
            (other, Some(burst)) => {
                return Err(ConfigError::new(
                    "burst",
                    format!(
                        "applies only to token_bucket, got burst {burst} on {}",
                        other.as_str()
                    ),
                ));
            }
            (_, None) => {}
        }
        let name = match &self.name {
            Some(name) => {
                if name.is_empty()
                    || !name
                        .bytes()
                        .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
                {
                    return Err(ConfigError::new(
                        "name",
                        format!("must be non-empty printable ASCII without quotes or backslashes, got {name:?}"),
                    ));
                }
                name.clone()
            }
            None if index == 0 => "default".to_owned(),
            None => format!("limit{index}"),
        };
        Ok((quota, name))
    }
}
