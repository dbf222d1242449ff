//! One clock abstraction, injected into every layer.
//!
//! Layers never call `Instant::now()` themselves: they ask a [`Clock`]. In production that is
//! [`SystemClock`] (or [`TokioClock`], which follows `tokio::time::pause`, or the faster
//! `QuantaClock` with the `quanta` feature); in tests it is a
//! [`ManualClock`] that only moves when the test says so, so time logic is tested without sleeping.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of time for a layer.
///
/// `now` is monotonic time since an origin fixed when the clock was made; layers only compare
/// readings of one clock, so the origin does not matter. `unix_now` is wall-clock time, used only
/// where a header must carry an absolute time.
///
/// ```
/// use std::time::Duration;
/// use tower_bulwark::clock::{Clock, ManualClock};
///
/// let clock = ManualClock::new();
/// clock.advance(Duration::from_millis(1500));
/// assert_eq!(clock.now(), Duration::from_millis(1500));
/// ```
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// Monotonic time elapsed since this clock's origin.
    fn now(&self) -> Duration;

    /// Wall-clock time since the Unix epoch.
    fn unix_now(&self) -> Duration;
}

/// The default clock: `std::time::Instant` (the OS monotonic clock) for monotonic time,
/// `SystemTime` for wall time.
///
/// ```
/// use tower_bulwark::clock::{Clock, SystemClock};
///
/// let clock = SystemClock::new();
/// let a = clock.now();
/// assert!(clock.now() >= a);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    origin: std::time::Instant,
}

impl SystemClock {
    /// A clock whose origin is now.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_bulwark::clock::{Clock, SystemClock};
    ///
    /// let clock = SystemClock::new();
    /// assert!(clock.now() < Duration::from_secs(60)); // counts from its creation
    /// assert!(clock.unix_now() > Duration::from_secs(1_700_000_000)); // wall time
    /// ```
    pub fn new() -> Self {
        Self {
            origin: std::time::Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    fn unix_now(&self) -> Duration {
        unix_now()
    }
}

/// A faster clock on the CPU's time-stamp counter through [`quanta`], as governor uses (feature
/// `quanta`): a few nanoseconds a read, against ~25 ns for `clock_gettime` on x86-64 Linux.
///
/// Not the default because the counter is only as good as the hardware: quanta trusts it when
/// the CPU advertises an invariant TSC, without asking whether the kernel found it stable, and a
/// counter that resets (some suspend/resume or snapshot-restore paths) holds this clock at its
/// origin until it catches up. Readings on different cores are not strictly ordered; the
/// algorithms tolerate small steps back. The first one in a process calibrates the counter for
/// 10–20 ms (200 ms at most).
///
/// ```
/// use tower_bulwark::clock::{Clock, QuantaClock};
///
/// let clock = QuantaClock::new();
/// let a = clock.now();
/// assert!(clock.now() >= a);
/// ```
#[cfg(feature = "quanta")]
#[derive(Debug, Clone)]
pub struct QuantaClock {
    clock: quanta::Clock,
    origin: quanta::Instant,
}

#[cfg(feature = "quanta")]
impl QuantaClock {
    /// A clock whose origin is now.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_bulwark::clock::{Clock, QuantaClock};
    ///
    /// let clock = QuantaClock::new();
    /// assert!(clock.now() < Duration::from_secs(60)); // counts from its creation
    /// ```
    pub fn new() -> Self {
        let clock = quanta::Clock::new();
        let origin = clock.now();
        Self { clock, origin }
    }
}

#[cfg(feature = "quanta")]
impl Default for QuantaClock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(feature = "quanta")]
impl Clock for QuantaClock {
    fn now(&self) -> Duration {
        self.clock.now().saturating_duration_since(self.origin)
    }

    fn unix_now(&self) -> Duration {
        unix_now()
    }
}

fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
}

/// A clock on `tokio::time::Instant`, so `tokio::time::pause()` and `advance()` move it.
///
/// Its wall time is the origin's wall time plus the tokio time elapsed since, so it moves with
/// paused time too.
///
/// ```
/// use std::time::Duration;
/// use tower_bulwark::clock::{Clock, TokioClock};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let clock = TokioClock::new();
/// tokio::time::advance(Duration::from_secs(5)).await;
/// assert_eq!(clock.now(), Duration::from_secs(5));
/// # }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    origin: tokio::time::Instant,
    unix_origin: Duration,
}

impl TokioClock {
    /// A clock whose origin is tokio's now.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_bulwark::clock::{Clock, TokioClock};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let clock = TokioClock::new();
    /// tokio::time::sleep(Duration::from_secs(30)).await; // paused time: returns at once
    /// assert_eq!(clock.now(), Duration::from_secs(30));
    /// # }
    /// ```
    pub fn new() -> Self {
        Self {
            origin: tokio::time::Instant::now(),
            unix_origin: unix_now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    fn unix_now(&self) -> Duration {
        self.unix_origin + self.now()
    }
}

/// A clock that moves only when told to. Clones share the same time.
///
/// Its wall time starts at a fixed instant (2026-01-01T00:00:00Z unless set with
/// [`ManualClock::with_unix_origin`]) and advances with it.
///
/// ```
/// use std::time::Duration;
/// use tower_bulwark::clock::{Clock, ManualClock};
///
/// let clock = ManualClock::with_unix_origin(Duration::from_secs(1_000));
/// let same = clock.clone();
/// clock.advance(Duration::from_secs(2));
/// assert_eq!(same.now(), Duration::from_secs(2));
/// assert_eq!(same.unix_now(), Duration::from_secs(1_002));
/// ```
#[derive(Debug, Clone)]
pub struct ManualClock {
    nanos: Arc<AtomicU64>,
    unix_origin: Duration,
}

impl ManualClock {
    /// 2026-01-01T00:00:00Z, the default wall-clock origin.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_bulwark::clock::{Clock, ManualClock};
    ///
    /// let clock = ManualClock::new();
    /// clock.advance(Duration::from_secs(86_400));
    /// assert_eq!(clock.unix_now(), ManualClock::DEFAULT_UNIX_ORIGIN + Duration::from_secs(86_400));
    /// ```
    pub const DEFAULT_UNIX_ORIGIN: Duration = Duration::from_secs(1_767_225_600);

    /// A clock at zero.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_bulwark::clock::{Clock, ManualClock};
    ///
    /// let clock = ManualClock::new();
    /// assert_eq!(clock.now(), Duration::ZERO);
    /// assert_eq!(clock.unix_now(), ManualClock::DEFAULT_UNIX_ORIGIN);
    /// ```
    pub fn new() -> Self {
        Self::with_unix_origin(Self::DEFAULT_UNIX_ORIGIN)
    }

    /// A clock at zero whose wall time starts at `unix_origin` after the Unix epoch.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_bulwark::clock::{Clock, ManualClock};
    ///
    /// let clock = ManualClock::with_unix_origin(Duration::from_secs(1_700_000_000));
    /// assert_eq!(clock.now(), Duration::ZERO); // monotonic time still starts at zero
    /// assert_eq!(clock.unix_now(), Duration::from_secs(1_700_000_000));
    /// ```
    pub fn with_unix_origin(unix_origin: Duration) -> Self {
        Self {
            nanos: Arc::new(AtomicU64::new(0)),
            unix_origin,
        }
    }

    /// Moves the clock forward by `by`.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_bulwark::clock::{Clock, ManualClock};
    /// let clock = ManualClock::new();
    /// clock.advance(Duration::from_nanos(7));
    /// assert_eq!(clock.now(), Duration::from_nanos(7));
    /// ```
    pub fn advance(&self, by: Duration) {
        self.nanos
            .fetch_add(duration_to_nanos(by), Ordering::SeqCst);
    }

    /// Sets the clock to `to` after its origin (it may go backwards: tests of skew use this).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_bulwark::clock::{Clock, ManualClock};
    /// let clock = ManualClock::new();
    /// clock.set(Duration::from_secs(9));
    /// assert_eq!(clock.now(), Duration::from_secs(9));
    /// ```
    pub fn set(&self, to: Duration) {
        self.nanos.store(duration_to_nanos(to), Ordering::SeqCst);
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::SeqCst))
    }

    fn unix_now(&self) -> Duration {
        self.unix_origin + self.now()
    }
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now(&self) -> Duration {
        (**self).now()
    }

    fn unix_now(&self) -> Duration {
        (**self).unix_now()
    }
}

/// A duration as whole nanoseconds, saturating at `u64::MAX` (about 584 years).
pub(crate) fn duration_to_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
