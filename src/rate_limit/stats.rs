//! What a layer has decided so far: its counters, striped so that counting costs no contended
//! cache line.

use crate::util::StripedCounter;

/// Decision counters of one layer; read with [`RateLimitLayer::stats`](super::RateLimitLayer::stats).
///
/// ```
/// # use std::{convert::Infallible, time::Duration};
/// # use tower::{service_fn, Layer, ServiceExt};
/// # use tower_bulwark::rate_limit::RateLimitLayer;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let ok = service_fn(|_: http::Request<()>| async { Ok::<_, Infallible>(http::Response::new(String::new())) });
/// use tower_bulwark::rate_limit::RateLimitStats;
///
/// let layer = RateLimitLayer::fixed_window(1, Duration::from_secs(60)).build()?;
/// assert_eq!(layer.stats(), RateLimitStats::default()); // all zero
/// layer.clone().layer(ok).oneshot(http::Request::new(())).await?;
/// assert_eq!(layer.stats().allowed, 1);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RateLimitStats {
    /// Requests admitted.
    pub allowed: u64,
    /// Requests refused.
    pub rejected: u64,
    /// Requests that would have been refused but were let through in shadow mode.
    pub shadow_rejected: u64,
    /// Admitted requests whose cost was given back (`skip_successful` / `skip_failed`).
    pub refunded: u64,
    /// Requests without a key.
    pub missing_key: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) allowed: StripedCounter,
    pub(crate) rejected: StripedCounter,
    pub(crate) shadow_rejected: StripedCounter,
    pub(crate) refunded: StripedCounter,
    pub(crate) missing_key: StripedCounter,
}

impl Counters {
    pub(crate) fn bump(counter: &StripedCounter) {
        counter.add(1);
    }

    pub(crate) fn snapshot(&self) -> RateLimitStats {
        RateLimitStats {
            allowed: self.allowed.get(),
            rejected: self.rejected.get(),
            shadow_rejected: self.shadow_rejected.get(),
            refunded: self.refunded.get(),
            missing_key: self.missing_key.get(),
        }
    }
}
