//! The retry budget: retries may be at most a ratio of recent requests, plus a small floor,
//! so that retries cannot multiply an outage (Envoy's retry budget, `tower::retry::budget`,
//! Finagle's `RetryBudget`). A window of slots; every request deposits into the current slot,
//! every retry withdraws; a slot older than the window is emptied when its turn comes again.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, TokioClock};
use crate::error::ConfigError;

#[cfg(feature = "redis")]
mod fleet;
#[cfg(feature = "redis")]
mod redis_builder;
mod window;

#[cfg(feature = "redis")]
pub use redis_builder::RedisRetryBudgetBuilder;
use window::{Window, SLOTS};

/// How many retries a layer (or several layers sharing it) may make: at most `ratio` of the
/// requests of the last `window`, plus `min_per_second` × the window's seconds so that a
/// quiet service can still retry. Defaults: 20 %, 10 per second, a 10 s window (Envoy's 20 %;
/// `tower::retry::budget::TpsBudget`'s floor and window).
///
/// Cheap to clone: clones share one budget, so one budget can bound several routes or
/// clients together.
///
/// ```
/// use std::time::Duration;
/// use tower_bulwark::retry::RetryBudget;
///
/// let budget = RetryBudget::builder()
///     .ratio(0.1)
///     .min_per_second(0)
///     .window(Duration::from_secs(10))
///     .build()?;
/// for _ in 0..20 {
///     budget.deposit(); // one per request
/// }
/// assert!(budget.try_withdraw()); // 10 % of 20 requests: two retries
/// assert!(budget.try_withdraw());
/// assert!(!budget.try_withdraw());
/// # Ok::<(), tower_bulwark::ConfigError>(())
/// ```
///
/// # One budget for a fleet (feature `redis`)
///
/// Ten instances each with a budget of their own retry ten floors' worth in a quiet outage,
/// and each spends only what its own traffic earned. With
/// [`backend`](RetryBudgetBuilder::backend) the fleet shares one budget in Redis: the floor is
/// the fleet's, and so is the ratio. No request waits on Redis: each instance spends a
/// share it holds locally, and a sync task (one Lua script call per interval, on the
/// server's clock, one key with a TTL) tells the fleet its requests and retries and gets a new
/// share: what the fleet has left, split in proportion to each instance's requests. While
/// Redis is down or slower than the deadline, each instance decides alone with its part of
/// the floor (the floor divided by the instances it last saw) and says so in
/// [`fleet_stats`](Self::fleet_stats). See [`RedisRetryBudgetBuilder`].
#[derive(Clone)]
pub struct RetryBudget {
    inner: Arc<Window>,
}

impl fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryBudget")
            .field("ratio", &self.inner.ratio)
            .field("floor", &self.inner.floor)
            .field("window", &Duration::from_nanos(self.inner.slot_ns * SLOTS))
            .field("available", &self.available())
            .finish_non_exhaustive()
    }
}

impl Default for RetryBudget {
    fn default() -> Self {
        Self::from_config(Config::default())
    }
}

/// Settings of a [`RetryBudget`]; from [`RetryBudget::builder`].
///
/// ```
/// let budget = tower_bulwark::retry::RetryBudget::builder().ratio(0.25).build()?;
/// # drop(budget);
/// # Ok::<(), tower_bulwark::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct RetryBudgetBuilder {
    config: Config,
}

#[derive(Debug, Clone)]
struct Config {
    ratio: f64,
    min_per_second: u32,
    window: Duration,
    clock: Arc<dyn Clock>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            ratio: 0.2,
            min_per_second: 10,
            window: Duration::from_secs(10),
            clock: Arc::new(TokioClock::new()),
        }
    }
}

impl RetryBudgetBuilder {
    /// Retries allowed per request over the window (default 0.2, Envoy's 20 %); 0 to 1000.
    ///
    /// ```
    /// let err = tower_bulwark::retry::RetryBudget::builder().ratio(-1.0).build().unwrap_err();
    /// assert_eq!(err.field(), "ratio");
    /// ```
    pub fn ratio(mut self, ratio: f64) -> Self {
        self.config.ratio = ratio;
        self
    }

    /// Retries allowed per second whatever the traffic (default 10): the floor that lets a
    /// service with few requests retry at all.
    ///
    /// ```
    /// let budget = tower_bulwark::retry::RetryBudget::builder().min_per_second(0).build()?;
    /// assert_eq!(budget.available(), 0); // no requests yet, no floor
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn min_per_second(mut self, min_per_second: u32) -> Self {
        self.config.min_per_second = min_per_second;
        self
    }

    /// How far back requests count (default 10 s; from 1 s to 1 h). The window slides by a
    /// tenth of its length.
    ///
    /// ```
    /// use std::time::Duration;
    /// let err = tower_bulwark::retry::RetryBudget::builder().window(Duration::ZERO).build().unwrap_err();
    /// assert_eq!(err.field(), "window");
    /// ```
    pub fn window(mut self, window: Duration) -> Self {
        self.config.window = window;
        self
    }

    /// The clock the window follows (default [`TokioClock`], which paused tokio time moves).
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_bulwark::{clock::ManualClock, retry::RetryBudget};
    ///
    /// let clock = ManualClock::new();
    /// let budget = RetryBudget::builder().min_per_second(1).clock(clock.clone()).build()?;
    /// assert_eq!(budget.available(), 10); // 1/s over a 10 s window
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.config.clock = Arc::new(clock);
        self
    }

    /// Checks the settings and makes the budget.
    ///
    /// ```
    /// let budget = tower_bulwark::retry::RetryBudget::builder().build()?;
    /// assert_eq!(budget.available(), 100); // the floor: 10/s over 10 s
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn build(self) -> Result<RetryBudget, ConfigError> {
        self.check()?;
        Ok(RetryBudget::from_config(self.config))
    }

    fn check(&self) -> Result<(), ConfigError> {
        let Config { ratio, window, .. } = &self.config;
        if !(ratio.is_finite() && (0.0..=1000.0).contains(ratio)) {
            return Err(ConfigError::new(
                "ratio",
                format!("must be in [0, 1000], got {ratio}"),
            ));
        }
        if *window < Duration::from_secs(1) || *window > Duration::from_secs(3600) {
            return Err(ConfigError::new(
                "window",
                format!("must be from 1s to 1h, got {window:?}"),
            ));
        }
        Ok(())
    }
}

impl RetryBudget {
    /// A budget with the defaults to change: 20 %, 10 per second, a 10 s window.
    ///
    /// ```
    /// let budget = tower_bulwark::retry::RetryBudget::builder().ratio(0.5).build()?;
    /// # drop(budget);
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn builder() -> RetryBudgetBuilder {
        RetryBudgetBuilder {
            config: Config::default(),
        }
    }

    fn from_config(config: Config) -> Self {
        Self {
            inner: Arc::new(Self::window(config)),
        }
    }

    fn window(config: Config) -> Window {
        let slot_ns = (config.window.as_nanos() as u64 / SLOTS).max(1);
        let floor = u64::from(config.min_per_second).saturating_mul(config.window.as_secs());
        Window::new(slot_ns, config.ratio, floor, config.clock)
    }

    /// Counts one request (the retry layer calls it once per request, not per attempt).
    ///
    /// ```
    /// let budget = tower_bulwark::retry::RetryBudget::builder().min_per_second(0).ratio(1.0).build()?;
    /// budget.deposit();
    /// assert_eq!(budget.available(), 1);
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    #[inline]
    pub fn deposit(&self) {
        self.inner.deposit();
    }

    /// Takes one retry from the budget: `false` when it is spent.
    ///
    /// ```
    /// let budget = tower_bulwark::retry::RetryBudget::builder().min_per_second(0).build()?;
    /// assert!(!budget.try_withdraw()); // nothing deposited, no floor
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn try_withdraw(&self) -> bool {
        self.inner.try_withdraw()
    }

    /// How many retries the budget allows now.
    ///
    /// ```
    /// let budget = tower_bulwark::retry::RetryBudget::default();
    /// assert_eq!(budget.available(), 100);
    /// ```
    pub fn available(&self) -> u64 {
        self.inner.available()
    }

    /// How this budget's syncs with the fleet have gone (feature `redis`): calls, errors,
    /// timeouts, fallbacks, and whether it decides alone right now. `None` for a budget kept
    /// in memory.
    ///
    /// ```
    /// let budget = tower_bulwark::retry::RetryBudget::default();
    /// assert_eq!(budget.fleet_stats(), None); // kept in memory
    /// ```
    #[cfg(feature = "redis")]
    pub fn fleet_stats(&self) -> Option<crate::redis::FleetStats> {
        self.inner.fleet.as_ref().map(|fleet| fleet.stats())
    }

    /// Syncs with the fleet now (feature `redis`): tells it this instance's requests and
    /// retries and takes a new share, without waiting for the sync interval (at start-up, in
    /// tests). The error is Redis's, when it could not be reached within the deadline; the
    /// budget then decides alone until a sync succeeds. Nothing to do in memory.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let budget = tower_bulwark::retry::RetryBudget::default();
    /// budget.sync_fleet().await?; // kept in memory: nothing to sync
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "redis")]
    pub async fn sync_fleet(&self) -> Result<(), crate::BackendError> {
        match &self.inner.fleet {
            Some(fleet) => Ok(fleet.sync_now().await.unwrap_or(Ok(()))?),
            None => Ok(()),
        }
    }

    /// Counts one request and says whether a retry may follow: [`deposit`](Self::deposit)
    /// and [`may_retry`](Self::may_retry) on one clock reading.
    #[inline]
    pub(crate) fn deposit_and_may_retry(&self) -> bool {
        self.inner.deposit_and_may_retry()
    }

    /// False while the budget is spent: the layer then sends requests once, without keeping
    /// their bodies. One load while it is not.
    #[cfg(test)]
    #[inline]
    pub(crate) fn may_retry(&self) -> bool {
        self.inner.may_retry()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn budget(ratio: f64, floor: u32, clock: &ManualClock) -> RetryBudget {
        RetryBudget::builder()
            .ratio(ratio)
            .min_per_second(floor)
            .clock(clock.clone())
            .build()
            .unwrap()
    }

    #[test]
    fn spent_budget_recovers_as_the_window_slides() {
        let clock = ManualClock::new();
        let budget = budget(0.5, 0, &clock);
        for _ in 0..4 {
            budget.deposit();
        }
        assert!(budget.try_withdraw() && budget.try_withdraw());
        assert!(!budget.try_withdraw());
        assert!(!budget.may_retry());
        budget.deposit();
        budget.deposit();
        assert!(budget.may_retry()); // earned one more
        assert!(budget.try_withdraw());
        assert!(!budget.try_withdraw());
        // Half the window later: the old deposits and withdrawals still count.
        clock.advance(Duration::from_secs(5));
        assert!(budget.may_retry()); // a new slot
        assert_eq!(budget.available(), 0);
        budget.deposit();
        budget.deposit();
        assert_eq!(budget.available(), 1);
        // A window after the first requests: only the last two count.
        clock.advance(Duration::from_secs(5));
        assert_eq!(budget.available(), 1);
        clock.advance(Duration::from_secs(5));
        assert_eq!(budget.available(), 0);
    }

    #[test]
    fn the_floor_is_per_second_of_window() {
        let clock = ManualClock::new();
        let budget = budget(0.0, 2, &clock);
        assert_eq!(budget.available(), 20);
        for _ in 0..20 {
            assert!(budget.try_withdraw());
        }
        assert!(!budget.try_withdraw());
        clock.advance(Duration::from_secs(10));
        assert_eq!(budget.available(), 20);
    }
}
