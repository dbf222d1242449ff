//! Batch sync: the shape of fleet state that no request waits for. Each request is decided
//! from local state; a task per layer tells Redis what happened here and reads what the fleet
//! decided, every interval, or sooner when the layer wakes it (something the fleet should hear
//! at once). The task holds its layer only weakly and ends soon after the layer is dropped.
//!
//! A layer implements [`BatchSync`] (what one round does) and owns a [`SyncTask`] (the timer,
//! the wake-up, one round at a time).

use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::{Mutex, MutexGuard, Notify};

use crate::error::ConfigError;

/// Which of a layer's entries a round syncs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Round {
    /// All of them: the interval's round, or an explicit sync.
    Every,
    /// Those that asked for it since the last round: a woken round, which must not cost a
    /// call per key each time one key has news.
    Due,
}

/// What a batch-synced layer does in one round.
pub(crate) trait BatchSync: Send + Sync + 'static {
    /// Runs one round; `false` when what the layer syncs is gone (the task then ends, even if
    /// something still holds this value).
    fn round(self: Arc<Self>, round: Round) -> impl Future<Output = bool> + Send;

    /// True while Redis is left alone after failures: woken rounds are skipped, so only the
    /// interval's rounds try Redis (a back-off of one interval, however often it is woken).
    fn backing_off(&self) -> bool;
}

/// The timer and wake-up of one layer's sync task.
#[derive(Debug)]
pub(crate) struct SyncTask {
    interval: Duration,
    /// Shared with the task, which holds its layer only weakly.
    wake: Arc<Notify>,
    /// One round at a time (the task's, or an explicit sync): two rounds at once would send
    /// the same outcomes twice.
    round: Mutex<()>,
}

impl SyncTask {
    pub(crate) fn new(interval: Duration) -> Self {
        Self {
            interval,
            wake: Arc::new(Notify::new()),
            round: Mutex::new(()),
        }
    }

    pub(crate) fn interval(&self) -> Duration {
        self.interval
    }

    /// Asks for a round now (woken rounds are gathered: a pause of a tenth of the interval, at
    /// most 10 ms, lets a burst of wakes make one round).
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }

    /// Held for the length of a round.
    pub(crate) async fn exclusive(&self) -> MutexGuard<'_, ()> {
        self.round.lock().await
    }

    /// Starts the task for `layer` on the current Tokio runtime: a round every interval, or
    /// sooner when woken, until `layer` is dropped.
    pub(crate) fn start<L: BatchSync>(&self, layer: Weak<L>) -> Result<(), ConfigError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            ConfigError::new(
                "backend",
                "a layer shared through redis must be built inside a Tokio runtime (it starts a sync task)",
            )
        })?;
        runtime.spawn(run(layer, self.wake.clone(), self.interval));
        Ok(())
    }
}

impl Drop for SyncTask {
    fn drop(&mut self) {
        // The layer is gone: wake the task so that it ends now, not an interval later.
        self.wake.notify_one();
    }
}

async fn run<L: BatchSync>(layer: Weak<L>, wake: Arc<Notify>, interval: Duration) {
    let pause = (interval / 10).min(Duration::from_millis(10));
    let mut round = Round::Every;
    let mut next_full = tokio::time::Instant::now();
    loop {
        let Some(strong) = layer.upgrade() else {
            return;
        };
        if round == Round::Every {
            next_full = tokio::time::Instant::now() + interval;
        }
        if (round == Round::Every || !strong.backing_off()) && !strong.clone().round(round).await {
            return;
        }
        // The layer is held only while a round runs.
        drop(strong);
        // Woken rounds in between do not push the next full one back.
        round = match tokio::time::timeout_at(next_full, wake.notified()).await {
            Ok(()) => {
                tokio::time::sleep(pause).await;
                Round::Due
            }
            Err(_) => Round::Every,
        };
    }
}

/// Runs `call` on every item, at most `limit` at once, handing each result to `note`.
pub(crate) async fn each_bounded<T, R, Fut>(
    items: Vec<T>,
    limit: usize,
    call: impl Fn(T) -> Fut,
    mut note: impl FnMut(R),
) where
    Fut: Future<Output = R> + Send + 'static,
    R: Send + 'static,
{
    if items.len() == 1 {
        for item in items {
            note(call(item).await);
        }
        return;
    }
    let mut running = tokio::task::JoinSet::new();
    for item in items {
        while running.len() >= limit {
            if let Some(Ok(result)) = running.join_next().await {
                note(result);
            }
        }
        running.spawn(call(item));
    }
    while let Some(done) = running.join_next().await {
        if let Ok(result) = done {
            note(result);
        }
    }
}

/// Longer would leave the fleet's state unread for more than a day.
const MAX_SYNC_INTERVAL: Duration = Duration::from_secs(86_400);

/// The settings of a batch-synced layer's Redis side, carried by its builder until `build`.
#[derive(Clone)]
pub(crate) struct SyncSettings {
    pub(crate) redis: super::RedisBackend,
    pub(crate) prefix: String,
    pub(crate) interval: Duration,
    pub(crate) deadline: Duration,
}

impl SyncSettings {
    /// The defaults: prefix `"bulwark"`, the [`DEFAULT_DEADLINE`](super::DEFAULT_DEADLINE),
    /// and the layer's own sync interval.
    pub(crate) fn new(redis: super::RedisBackend, interval: Duration) -> Self {
        Self {
            redis,
            prefix: super::DEFAULT_PREFIX.to_owned(),
            interval,
            deadline: super::DEFAULT_DEADLINE,
        }
    }

    /// Names the first bad setting.
    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        super::check_prefix(&self.prefix)?;
        if self.deadline.is_zero() {
            return Err(ConfigError::new("deadline", "must be > 0, got 0ns"));
        }
        if self.interval < Duration::from_millis(1) || self.interval > MAX_SYNC_INTERVAL {
            return Err(ConfigError::new(
                "sync_interval",
                format!("must be >= 1ms and <= 1 day, got {:?}", self.interval),
            ));
        }
        Ok(())
    }
}
