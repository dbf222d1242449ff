//! The retry layer's builder: defaults from the guides, every setting checked by `build`.

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;

use super::config::Config;
use super::events::{Counters, RetryEvent};
use super::hedge::Hedging;
use super::{
    Backoff, DefaultRetryIf, Hedge, Jitter, Random, RetryBudget, RetryLayer, ThreadRandom,
};
use crate::clock::{Clock, TokioClock};
use crate::error::ConfigError;
use crate::response::GrpcCode;

/// The default bound on a request body kept for replay: 64 KiB.
pub const DEFAULT_MAX_BODY: usize = 64 * 1024;

/// Settings of a [`RetryLayer`]; from [`RetryLayer::builder`]. `C` is the predicate that
/// judges each attempt ([`DefaultRetryIf`] until [`retry_if`](Self::retry_if) replaces it).
///
/// ```
/// use std::time::Duration;
/// use tower_bulwark::retry::{Jitter, RetryLayer};
///
/// let retry = RetryLayer::builder()
///     .max_retries(2)
///     .jitter(Jitter::Equal)
///     .attempt_timeout(Duration::from_secs(2))
///     .deadline(Duration::from_secs(10))
///     .build()?;
/// # drop(retry);
/// # Ok::<(), tower_bulwark::ConfigError>(())
/// ```
#[must_use = "a builder does nothing until `build` is called"]
pub struct RetryLayerBuilder<C = DefaultRetryIf> {
    backoff: Backoff,
    max_retries: u32,
    random: Arc<dyn Random>,
    classify: C,
    any_method: bool,
    max_body: usize,
    attempt_timeout: Option<Duration>,
    deadline: Option<Duration>,
    max_retry_after: Duration,
    budget: Option<RetryBudget>,
    hedge: Option<Hedge>,
    on_event: Option<super::events::EventFn>,
    clock: Arc<dyn Clock>,
}

impl<C> std::fmt::Debug for RetryLayerBuilder<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryLayerBuilder")
            .field("backoff", &self.backoff)
            .field("max_retries", &self.max_retries)
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

impl RetryLayerBuilder {
    pub(crate) fn new() -> Self {
        Self {
            backoff: Backoff::default(),
            max_retries: 3,
            random: Arc::new(ThreadRandom),
            classify: DefaultRetryIf::default(),
            any_method: false,
            max_body: DEFAULT_MAX_BODY,
            attempt_timeout: None,
            deadline: None,
            max_retry_after: Duration::from_secs(30),
            budget: Some(RetryBudget::default()),
            hedge: None,
            on_event: None,
            clock: Arc::new(TokioClock::new()),
        }
    }

    /// The HTTP statuses retried (default 429, 502, 503, 504; only 4xx and 5xx can be).
    /// 500 is not among them by default: a server that failed halfway may have done its work.
    ///
    /// ```
    /// use http::StatusCode;
    /// use tower_bulwark::retry::RetryLayer;
    ///
    /// let retry = RetryLayer::builder()
    ///     .retry_statuses([StatusCode::INTERNAL_SERVER_ERROR, StatusCode::SERVICE_UNAVAILABLE])
    ///     .build()?;
    /// # drop(retry);
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn retry_statuses(mut self, statuses: impl IntoIterator<Item = StatusCode>) -> Self {
        self.classify = self.classify.with_statuses(statuses);
        self
    }

    /// The gRPC codes retried when a response carries its `grpc-status` in its headers
    /// (default only `UNAVAILABLE`, as the gRPC retry design advises).
    ///
    /// ```
    /// use tower_bulwark::{response::GrpcCode, retry::RetryLayer};
    ///
    /// let retry = RetryLayer::builder()
    ///     .retry_grpc_codes([GrpcCode::Unavailable, GrpcCode::ResourceExhausted])
    ///     .build()?;
    /// # drop(retry);
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn retry_grpc_codes(mut self, codes: impl IntoIterator<Item = GrpcCode>) -> Self {
        self.classify = self.classify.with_grpc_codes(codes);
        self
    }
}

/// The longest wait any setting may give (a year).
const MAX_WAIT: Duration = Duration::from_secs(365 * 24 * 3600);

impl<C> RetryLayerBuilder<C> {
    /// Retries after the first attempt (default 3; at most 100). 0 turns retrying off.
    ///
    /// ```
    /// let err = tower_bulwark::retry::RetryLayer::builder().max_retries(1000).build().unwrap_err();
    /// assert_eq!(err.field(), "max_retries");
    /// ```
    pub fn max_retries(mut self, max_retries: u32) -> Self {
        self.max_retries = max_retries;
        self
    }

    /// The backoff between attempts (default: 1 s, ×2, cap 30 s, full jitter).
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_bulwark::retry::{Backoff, RetryLayer};
    ///
    /// let retry = RetryLayer::builder()
    ///     .backoff(Backoff::exponential(Duration::from_millis(100)).cap(Duration::from_secs(2)))
    ///     .build()?;
    /// # drop(retry);
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// The backoff's jitter (default [`Jitter::Full`]).
    ///
    /// ```
    /// use tower_bulwark::retry::{Jitter, RetryLayer};
    /// let retry = RetryLayer::builder().jitter(Jitter::Decorrelated).build()?;
    /// # drop(retry);
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.backoff = self.backoff.jitter(jitter);
        self
    }

    /// The jitter's random source (default [`ThreadRandom`]); a [`SeededRandom`](super::SeededRandom)
    /// replays exact delays in tests.
    ///
    /// ```
    /// use tower_bulwark::retry::{RetryLayer, SeededRandom};
    /// let retry = RetryLayer::builder().random(SeededRandom::new(7)).build()?;
    /// # drop(retry);
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn random(mut self, random: impl Random) -> Self {
        self.random = Arc::new(random);
        self
    }

    /// Retry requests whatever their method, POST and PATCH too. Off by default: only
    /// idempotent methods, requests carrying an `Idempotency-Key`, and gRPC calls are retried.
    /// Turn it on only for an upstream that tolerates a request applied twice.
    ///
    /// ```
    /// let retry = tower_bulwark::retry::RetryLayer::builder().any_method().build()?;
    /// # drop(retry);
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn any_method(mut self) -> Self {
        self.any_method = true;
        self
    }

    /// The largest request body kept for replay, in bytes (default 64 KiB; at most 16 MiB). A
    /// body whose size hint says it may be larger (or a streaming body of unknown length) is
    /// sent once, unbuffered.
    ///
    /// ```
    /// let err = tower_bulwark::retry::RetryLayer::builder().max_body(1 << 30).build().unwrap_err();
    /// assert_eq!(err.field(), "max_body");
    /// ```
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// How long one attempt may take (default: no limit); a slow attempt is cancelled and
    /// counts as a failed one ([`TimedOut`](super::TimedOut)), which may be retried.
    ///
    /// ```
    /// use std::time::Duration;
    /// let err = tower_bulwark::retry::RetryLayer::builder().attempt_timeout(Duration::ZERO).build().unwrap_err();
    /// assert_eq!(err.field(), "attempt_timeout");
    /// ```
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = Some(timeout);
        self
    }

    /// How long a request may take over all its attempts and waits (default: no limit). No
    /// attempt starts that the deadline would not let finish its wait; a running attempt is
    /// cancelled at the deadline.
    ///
    /// ```
    /// use std::time::Duration;
    /// let retry = tower_bulwark::retry::RetryLayer::builder().deadline(Duration::from_secs(5)).build()?;
    /// # drop(retry);
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// The longest `Retry-After` (or gRPC pushback) waited for (default 30 s): a longer
    /// one is waited for this long.
    ///
    /// ```
    /// use std::time::Duration;
    /// let retry = tower_bulwark::retry::RetryLayer::builder().max_retry_after(Duration::from_secs(5)).build()?;
    /// # drop(retry);
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn max_retry_after(mut self, max: Duration) -> Self {
        self.max_retry_after = max;
        self
    }

    /// The retry budget (default [`RetryBudget::default`]: 20 % of the requests of the last
    /// 10 s plus 10 per second). Clones of one budget given to several layers share it.
    ///
    /// ```
    /// use tower_bulwark::retry::{RetryBudget, RetryLayer};
    ///
    /// let shared = RetryBudget::builder().ratio(0.1).build()?;
    /// let a = RetryLayer::builder().budget(shared.clone()).build()?;
    /// let b = RetryLayer::builder().budget(shared).build()?;
    /// # drop((a, b));
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn budget(mut self, budget: RetryBudget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// No retry budget: every failed attempt may be retried up to `max_retries`, however
    /// many others are. Only for tests, or a caller bounded some other way.
    ///
    /// ```
    /// let retry = tower_bulwark::retry::RetryLayer::builder().no_budget().build()?;
    /// assert!(retry.budget().is_none());
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn no_budget(mut self) -> Self {
        self.budget = None;
        self
    }

    /// Hedging (off by default): when the first attempt of a request that may be sent twice
    /// runs longer than the [`Hedge`]'s delay, one more copy is sent, and the first good
    /// answer wins; the other copy is cancelled. A hedge is a withdrawal from the retry
    /// budget. A failure of one copy waits for the other.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_bulwark::retry::{Hedge, RetryLayer};
    ///
    /// let retry = RetryLayer::builder().hedge(Hedge::after(Duration::from_millis(30))).build()?;
    /// # drop(retry);
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn hedge(mut self, hedge: Hedge) -> Self {
        self.hedge = Some(hedge);
        self
    }

    /// Called for every retry, hedge and given-up request (also logged at `debug`).
    ///
    /// ```
    /// use tower_bulwark::retry::RetryLayer;
    /// let retry = RetryLayer::builder()
    ///     .on_event(|event| eprintln!("{event}"))
    ///     .build()?;
    /// # drop(retry);
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn on_event(mut self, on_event: impl Fn(&RetryEvent) + Send + Sync + 'static) -> Self {
        self.on_event = Some(Arc::new(on_event));
        self
    }

    /// The clock whose wall time `Retry-After` dates are read against (default [`TokioClock`]).
    ///
    /// ```
    /// use tower_bulwark::{clock::ManualClock, retry::RetryLayer};
    /// let retry = RetryLayer::builder().clock(ManualClock::new()).build()?;
    /// # drop(retry);
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Replaces what is retried: `predicate` judges each attempt's whole result, response or
    /// error (boxed). A refusal of this crate's circuit breaker is still never retried, and
    /// only replayable requests get a second attempt.
    ///
    /// ```
    /// use http::Response;
    /// use http_body_util::Full;
    /// use bytes::Bytes;
    /// use tower_bulwark::{retry::RetryLayer, BoxError};
    ///
    /// let retry = RetryLayer::builder()
    ///     .retry_if(|result: &Result<Response<Full<Bytes>>, BoxError>| match result {
    ///         Ok(res) => res.status().is_server_error(),
    ///         Err(_) => true,
    ///     })
    ///     .build()?;
    /// # drop(retry);
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn retry_if<F>(self, predicate: F) -> RetryLayerBuilder<F> {
        RetryLayerBuilder {
            backoff: self.backoff,
            max_retries: self.max_retries,
            random: self.random,
            classify: predicate,
            any_method: self.any_method,
            max_body: self.max_body,
            attempt_timeout: self.attempt_timeout,
            deadline: self.deadline,
            max_retry_after: self.max_retry_after,
            budget: self.budget,
            hedge: self.hedge,
            on_event: self.on_event,
            clock: self.clock,
        }
    }

    /// Checks the settings and makes the layer. The error names the bad field.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_bulwark::retry::{Backoff, RetryLayer};
    ///
    /// let err = RetryLayer::builder()
    ///     .backoff(Backoff::exponential(Duration::from_secs(10)).cap(Duration::from_secs(1)))
    ///     .build()
    ///     .unwrap_err();
    /// assert_eq!(err.field(), "cap");
    /// ```
    pub fn build(self) -> Result<RetryLayer<C>, ConfigError> {
        self.backoff.validate()?;
        if self.max_retries > 100 {
            return Err(ConfigError::new(
                "max_retries",
                format!("must be <= 100, got {}", self.max_retries),
            ));
        }
        if self.max_body > 16 << 20 {
            return Err(ConfigError::new(
                "max_body",
                format!("must be <= 16 MiB, got {} bytes", self.max_body),
            ));
        }
        for (field, value) in [
            ("attempt_timeout", self.attempt_timeout),
            ("deadline", self.deadline),
        ] {
            if value.is_some_and(|value| value.is_zero()) {
                return Err(ConfigError::new(field, "must be > 0, got 0s"));
            }
        }
        // Every wait is added to an `Instant` on a request path, where an overflow would
        // panic: none may be longer than a year.
        let hedge_after = self.hedge.as_ref().and_then(Hedge::fixed_delay);
        for (field, value) in [
            ("attempt_timeout", self.attempt_timeout),
            ("deadline", self.deadline),
            ("max_retry_after", Some(self.max_retry_after)),
            ("cap", Some(self.backoff.cap_delay())),
            ("hedge", hedge_after),
        ] {
            if let Some(value) = value.filter(|value| *value > MAX_WAIT) {
                return Err(ConfigError::new(
                    field,
                    format!("must be at most a year ({MAX_WAIT:?}), got {value:?}"),
                ));
            }
        }
        let hedging = self.hedge.map(Hedging::new).transpose()?;
        Ok(RetryLayer::from_config(Config {
            backoff: self.backoff,
            max_retries: self.max_retries,
            random: self.random,
            classify: self.classify,
            any_method: self.any_method,
            max_body: self.max_body,
            attempt_timeout: self.attempt_timeout,
            deadline: self.deadline,
            max_retry_after: self.max_retry_after,
            budget: self.budget,
            hedging,
            on_event: self.on_event,
            clock: self.clock,
            counters: Counters::default(),
        }))
    }
}
