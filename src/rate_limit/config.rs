//! What every service of one layer shares: the key extractor, the store, the policy, the
//! counters. Built once by the builder and held in one `Arc`.

pub(crate) use super::refund::Refund;
pub(crate) use super::stats::Counters;

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use http::request::Parts;
use http::{Response, StatusCode};

use super::headers::HeaderConfig;
use super::store::{RateLimitBackend, Verdict};
use crate::clock::Clock;
use crate::key::Key;

/// The answer for a request from which the key extractor gets no key.
///
/// ```
/// # use std::{convert::Infallible, time::Duration};
/// # use tower::{service_fn, Layer, ServiceExt};
/// # use tower_bulwark::rate_limit::RateLimitLayer;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let ok = service_fn(|_: http::Request<()>| async { Ok::<_, Infallible>(http::Response::new(String::new())) });
/// use tower_bulwark::{key::{HeaderKey, Key}, rate_limit::MissingKey};
///
/// assert_eq!(MissingKey::default(), MissingKey::Reject(http::StatusCode::INTERNAL_SERVER_ERROR));
/// let layer = RateLimitLayer::fixed_window(100, Duration::from_secs(60))
///     .key(HeaderKey::new(http::HeaderName::from_static("x-api-key")))
///     .on_missing_key(MissingKey::Fallback(Key::from("anonymous"))) // share one limit
///     .build()?;
/// assert_eq!(layer.layer(ok).oneshot(http::Request::new(())).await?.status(), 200);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MissingKey {
    /// Refuse it with this status (for gRPC, mapped by `response::GrpcCode::from_http`).
    /// The default is `Reject(500)`: a missing peer address is a server misconfiguration.
    Reject(StatusCode),
    /// Count it under this key instead (for example [`Key::Global`]).
    Fallback(Key),
}

impl Default for MissingKey {
    fn default() -> Self {
        MissingKey::Reject(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

/// A request refused by a rate limit; also the error of the non-HTTP variant. The crate's one
/// [`Refusal`](crate::response::Refusal) type, of kind
/// [`RateLimited`](crate::response::RefusalKind::RateLimited); the name is kept for code
/// written before there was one refusal type.
///
/// ```
/// use std::time::Duration;
/// use tower_bulwark::rate_limit::RateLimited;
///
/// let err = RateLimited::rate_limited(Duration::from_millis(1500));
/// assert_eq!(err.retry_after_secs(), 2);
/// assert_eq!(err.to_string(), "rate limited: retry after 2s");
/// ```
pub type RateLimited = crate::response::Refusal;

/// The error of the non-HTTP variant when the key extractor finds no key and no fallback is set.
///
/// ```
/// use tower::{service_fn, Layer, ServiceExt};
/// use tower_bulwark::{key::from_fn, rate_limit::{KeyMissing, RateLimitLayer}};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let layer = RateLimitLayer::fixed_window(10, std::time::Duration::from_secs(1))
///     .key(from_fn(|_: &u32| None)) // never finds a key
///     .build_generic()
///     .unwrap();
/// let svc = layer.layer(service_fn(|n: u32| async move { Ok::<_, std::io::Error>(n) }));
/// let err = svc.oneshot(7).await.unwrap_err();
/// assert!(err.downcast_ref::<KeyMissing>().is_some());
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeyMissing;

impl fmt::Display for KeyMissing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("rate limit key missing from request")
    }
}

impl std::error::Error for KeyMissing {}

pub(crate) type CostFn = Arc<dyn Fn(&Parts) -> u64 + Send + Sync>;
pub(crate) type RejectionFn = Arc<dyn Fn(&RateLimited) -> Response<Bytes> + Send + Sync>;

pub(crate) struct Policy {
    pub(crate) headers: Arc<HeaderConfig>,
    /// For verdicts of a networked backend's local fallback, when its limits differ (divided
    /// among instances): the headers then describe what was applied.
    pub(crate) fallback_headers: Option<Arc<HeaderConfig>>,
    pub(crate) missing_key: MissingKey,
    pub(crate) cost: Option<CostFn>,
    pub(crate) skip_successful: bool,
    pub(crate) skip_failed: bool,
    pub(crate) shadow: bool,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) rejection: Option<RejectionFn>,
}

pub(crate) struct Shared<K, B> {
    pub(crate) key: K,
    pub(crate) backend: B,
    pub(crate) policy: Policy,
    pub(crate) counters: Counters,
}

impl Policy {
    /// The header configuration that describes `verdict`'s limits.
    pub(crate) fn headers_for(&self, verdict: &Verdict) -> &Arc<HeaderConfig> {
        match &self.fallback_headers {
            Some(fallback) if verdict.origin.is_fallback() => fallback,
            _ => &self.headers,
        }
    }
}

impl<K: Send + Sync + 'static, B: RateLimitBackend> Shared<K, B> {
    /// The key to count under: the extracted one, else the fallback; `Err` carries the
    /// rejection status when there is neither.
    pub(crate) fn resolve_key(&self, extracted: Option<Key>) -> Result<Key, StatusCode> {
        match (extracted, &self.policy.missing_key) {
            (Some(key), _) => Ok(key),
            (None, MissingKey::Fallback(key)) => Ok(key.clone()),
            (None, MissingKey::Reject(status)) => {
                Counters::bump(&self.counters.missing_key);
                Err(*status)
            }
        }
    }

    /// What an admitted request must carry to be refunded later, if refunds are on.
    pub(crate) fn refund_for(
        self: &Arc<Self>,
        key: Key,
        cost: u64,
        verdict: &Verdict,
    ) -> Option<Refund> {
        let policy = &self.policy;
        if cost == 0 || !(policy.skip_successful || policy.skip_failed) || !verdict.origin.counted()
        {
            return None;
        }
        Some(Refund {
            sink: self.clone(),
            key,
            cost,
            receipt: verdict.receipt(),
            on_success: policy.skip_successful,
            on_failure: policy.skip_failed,
        })
    }
}
