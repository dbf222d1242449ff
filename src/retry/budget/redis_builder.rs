//! The budget builder's Redis half: `.backend(redis)` and the settings that only apply to a
//! budget the fleet shares.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::fleet::BudgetLink;
use super::{RetryBudget, RetryBudgetBuilder};
use crate::error::ConfigError;
use crate::redis::{RedisBackend, SyncSettings};

/// How often each instance tells the fleet its requests and retries and takes a new share,
/// unless [`sync_interval`](RedisRetryBudgetBuilder::sync_interval) says otherwise: 500 ms, a
/// twentieth of the default window.
const DEFAULT_SYNC_INTERVAL: Duration = Duration::from_millis(500);

impl RetryBudgetBuilder {
    /// Shares the budget with the fleet through Redis (feature `redis`): every instance's
    /// requests and retries count against one budget. See
    /// [`RetryBudget`](RetryBudget#one-budget-for-a-fleet-feature-redis).
    ///
    /// ```no_run
    /// use tower_bulwark::{redis::RedisBackend, retry::{RetryBudget, RetryLayer}};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let redis = RedisBackend::connect("redis://127.0.0.1/").await?;
    /// let budget = RetryBudget::builder()
    ///     .ratio(0.2)
    ///     .backend(redis)
    ///     .prefix("bulwark:payments-client")
    ///     .build()?;
    /// let retry = RetryLayer::builder().budget(budget).build()?;
    /// # drop(retry);
    /// # Ok(())
    /// # }
    /// ```
    pub fn backend(self, redis: RedisBackend) -> RedisRetryBudgetBuilder {
        RedisRetryBudgetBuilder {
            base: self,
            settings: SyncSettings::new(redis, DEFAULT_SYNC_INTERVAL),
        }
    }
}

/// Configures a retry budget the fleet shares through Redis; made by
/// [`RetryBudgetBuilder::backend`].
///
/// `build` must run inside a Tokio runtime: it starts the sync task, whose first sync runs at
/// once. Until it is answered, and whenever Redis cannot be reached, the budget decides alone.
/// Give each budget its own [`prefix`](Self::prefix): two budgets with one prefix are one.
///
/// ```
/// use std::time::Duration;
/// use tower_bulwark::{redis::RedisBackend, retry::RetryBudget};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let redis = RedisBackend::connect_lazy("redis://127.0.0.1/")?;
/// let budget = RetryBudget::builder()
///     .backend(redis.clone())
///     .prefix("bulwark:search")
///     .sync_interval(Duration::from_millis(250))
///     .deadline(Duration::from_millis(20))
///     .build()?;
/// assert!(budget.fleet_stats().is_some());
///
/// let err = RetryBudget::builder().backend(redis).prefix("{bad}").build().unwrap_err();
/// assert_eq!(err.field(), "prefix");
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct RedisRetryBudgetBuilder {
    base: RetryBudgetBuilder,
    settings: SyncSettings,
}

impl fmt::Debug for RedisRetryBudgetBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisRetryBudgetBuilder")
            .field("base", &self.base)
            .field("prefix", &self.settings.prefix)
            .field("sync_interval", &self.settings.interval)
            .field("deadline", &self.settings.deadline)
            .finish_non_exhaustive()
    }
}

impl RedisRetryBudgetBuilder {
    /// The start of the budget's Redis key (default `"bulwark"`): the key is
    /// `{prefix:global}:rb`. No braces.
    ///
    /// ```
    /// # use tower_bulwark::{redis::RedisBackend, retry::RetryBudget};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let redis = RedisBackend::connect_lazy("redis://127.0.0.1/")?;
    /// let err = RetryBudget::builder().backend(redis).prefix("").build().unwrap_err();
    /// assert_eq!(err.field(), "prefix");
    /// # Ok(())
    /// # }
    /// ```
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.settings.prefix = prefix.into();
        self
    }

    /// How often this instance tells the fleet what it did and takes a new share (default
    /// 500 ms; from 1 ms to 1 day). One script call each. Longer lets a share go stale: an
    /// instance whose traffic grows waits up to one interval for its larger share.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_bulwark::{redis::RedisBackend, retry::RetryBudget};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let redis = RedisBackend::connect_lazy("redis://127.0.0.1/")?;
    /// let err = RetryBudget::builder()
    ///     .backend(redis)
    ///     .sync_interval(Duration::ZERO)
    ///     .build()
    ///     .unwrap_err();
    /// assert_eq!(err.field(), "sync_interval");
    /// # Ok(())
    /// # }
    /// ```
    pub fn sync_interval(mut self, interval: Duration) -> Self {
        self.settings.interval = interval;
        self
    }

    /// The longest one sync may take before this instance decides alone (default
    /// [`DEFAULT_DEADLINE`](crate::redis::DEFAULT_DEADLINE), 50 ms). Requests never wait on
    /// it.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_bulwark::{redis::RedisBackend, retry::RetryBudget};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let redis = RedisBackend::connect_lazy("redis://127.0.0.1/")?;
    /// let err = RetryBudget::builder()
    ///     .backend(redis)
    ///     .deadline(Duration::ZERO)
    ///     .build()
    ///     .unwrap_err();
    /// assert_eq!(err.field(), "deadline");
    /// # Ok(())
    /// # }
    /// ```
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.settings.deadline = deadline;
        self
    }

    /// Checks the settings, makes the budget and starts its sync task (on the current Tokio
    /// runtime: outside one, the error names `backend`).
    ///
    /// ```
    /// # use tower_bulwark::{redis::RedisBackend, retry::RetryBudget};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let redis = RedisBackend::connect_lazy("redis://127.0.0.1/")?;
    /// let budget = RetryBudget::builder().backend(redis).build()?;
    /// assert_eq!(budget.fleet_stats().map(|stats| stats.errors), Some(0));
    /// # Ok(())
    /// # }
    /// ```
    pub fn build(self) -> Result<RetryBudget, ConfigError> {
        self.base.check()?;
        let mut window = RetryBudget::window(self.base.config.clone());
        let link = Arc::new(BudgetLink::new(
            self.settings,
            self.base.config.window,
            window.ratio,
            window.floor,
        )?);
        window.fleet = Some(link.clone());
        let window = Arc::new(window);
        link.start(&window)?;
        Ok(RetryBudget { inner: window })
    }
}
