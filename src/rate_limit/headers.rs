//! The rate-limit response headers.
//!
//! * `X-RateLimit-Limit`, `X-RateLimit-Remaining`, `X-RateLimit-Reset`: the de-facto trio, for
//!   the limit closest to running out.
//! * `RateLimit-Policy` and `RateLimit` from draft-ietf-httpapi-ratelimit-headers in their
//!   structured-field form, one list item per limit: `"default";q=100;w=60` and
//!   `"default";r=42;t=17`.
//! * `Retry-After` on a 429, in whole seconds rounded up.
//!
//! What the numbers mean, for a limit of `L` per period `P` (`q=L`, `w=P` in `RateLimit-Policy`
//! whatever the algorithm; `r` and `t` in `RateLimit` equal `Remaining` and `Reset`):
//!
//! * token bucket: `X-RateLimit-Limit` is the **burst** (the most `Remaining` can show), not `q`;
//!   `Reset` is the time until the bucket is full again, at most `burst * P / L`;
//! * sliding window log: `Limit` is `L`; `Reset` is when the newest counted request leaves the
//!   window, at most `P`;
//! * sliding window counter: `Limit` is `L`; `Remaining` is `L` minus the weighted estimate;
//!   `Reset` is the end of the *next* fixed window (this window's requests weigh in until then),
//!   so up to `2 * P`: `t` can exceed `w`;
//! * fixed window: `Limit` is `L`; `Reset` is the end of the current window, at most `P`.
//!
//! Stacked layers each add their items to `RateLimit` and `RateLimit-Policy` (both lists); the
//! `X-RateLimit-*` trio is written as a unit, so when an inner layer (or the handler) set
//! `X-RateLimit-Limit`, its trio stands.
//!
//! Everything that does not change per request (the limits, the policy list) is rendered once,
//! when the layer is built.

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{HeaderName, HeaderValue, RETRY_AFTER};
use http::HeaderMap;
use smallvec::SmallVec;

use super::algorithm::{Algorithm, Quota};
use super::store::{LimitStatus, Verdict};
use crate::clock::Clock;
use crate::response::{ceil_secs, number, put_u64};

/// `X-RateLimit-Limit`.
///
/// ```
/// use tower_bulwark::rate_limit::headers::X_RATELIMIT_LIMIT;
///
/// let mut headers = http::HeaderMap::new();
/// headers.insert(X_RATELIMIT_LIMIT, http::HeaderValue::from_static("100"));
/// assert_eq!(headers["x-ratelimit-limit"], "100");
/// ```
pub const X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
/// `X-RateLimit-Remaining`.
///
/// ```
/// use tower_bulwark::rate_limit::headers::X_RATELIMIT_REMAINING;
///
/// let mut headers = http::HeaderMap::new();
/// headers.insert(X_RATELIMIT_REMAINING, http::HeaderValue::from_static("42"));
/// assert_eq!(headers["x-ratelimit-remaining"], "42");
/// ```
pub const X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
/// `X-RateLimit-Reset`.
///
/// ```
/// use tower_bulwark::rate_limit::headers::X_RATELIMIT_RESET;
///
/// let mut headers = http::HeaderMap::new();
/// headers.insert(X_RATELIMIT_RESET, http::HeaderValue::from_static("17"));
/// assert_eq!(headers["x-ratelimit-reset"], "17");
/// ```
pub const X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");
/// `RateLimit-Policy` (IETF draft).
///
/// ```
/// use tower_bulwark::rate_limit::headers::RATELIMIT_POLICY;
///
/// let mut headers = http::HeaderMap::new();
/// headers.insert(RATELIMIT_POLICY, http::HeaderValue::from_static(r#""default";q=100;w=60"#));
/// assert_eq!(headers["ratelimit-policy"], r#""default";q=100;w=60"#);
/// ```
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit` (IETF draft).
///
/// ```
/// use tower_bulwark::rate_limit::headers::RATELIMIT;
///
/// let mut headers = http::HeaderMap::new();
/// headers.insert(RATELIMIT, http::HeaderValue::from_static(r#""default";r=42;t=17"#));
/// assert_eq!(headers["ratelimit"], r#""default";r=42;t=17"#);
/// ```
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// How `X-RateLimit-Reset` says when the limit resets.
///
/// ```
/// # use std::{convert::Infallible, time::Duration};
/// # use tower::{service_fn, Layer, ServiceExt};
/// # use tower_bulwark::rate_limit::RateLimitLayer;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let ok = service_fn(|_: http::Request<()>| async { Ok::<_, Infallible>(http::Response::new(String::new())) });
/// use tower_bulwark::{clock::ManualClock, rate_limit::ResetFormat};
///
/// assert_eq!(ResetFormat::default(), ResetFormat::SecondsFromNow);
/// let layer = RateLimitLayer::fixed_window(10, Duration::from_secs(60))
///     .clock(ManualClock::new())
///     .build()?;
/// let res = layer.layer(ok).oneshot(http::Request::new(())).await?;
/// assert_eq!(res.headers()["x-ratelimit-reset"], "60"); // seconds from now
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResetFormat {
    /// Seconds from now, rounded up (the default; immune to client clock skew).
    #[default]
    SecondsFromNow,
    /// Seconds since the Unix epoch, rounded up (as GitHub's API does).
    UnixEpoch,
}

/// What the headers of an admitted request need from its verdict, kept in its response future
/// until the response is there: the limits' numbers, not rendered values (rendering happens
/// once, straight into the response's map).
#[derive(Debug)]
pub(crate) struct PendingHeaders {
    config: Arc<HeaderConfig>,
    limits: SmallVec<[LimitStatus; 2]>,
    unix_now: Duration,
}

impl PendingHeaders {
    pub(crate) fn write(self, headers: &mut HeaderMap) {
        self.config
            .write(headers, &self.limits, self.unix_now, None);
    }
}

#[derive(Debug, Clone)]
pub(crate) struct HeaderConfig {
    pub(crate) legacy: bool,
    pub(crate) ietf: bool,
    pub(crate) reset: ResetFormat,
    names: Vec<String>,
    limit_values: Vec<HeaderValue>,
    policy: HeaderValue,
}

impl HeaderConfig {
    pub(crate) fn new(
        quotas: &[Quota],
        names: Vec<String>,
        legacy: bool,
        ietf: bool,
        reset: ResetFormat,
    ) -> Self {
        // A token bucket can hold `burst`, so that is the most `Remaining` can show.
        let limit_values = quotas
            .iter()
            .map(|q| match q.algorithm {
                Algorithm::TokenBucket => number(q.burst),
                _ => number(q.limit),
            })
            .collect();
        let mut policy = BytesMut::new();
        for (quota, name) in quotas.iter().zip(&names) {
            if !policy.is_empty() {
                policy.put_slice(b", ");
            }
            let window = ceil_secs(std::time::Duration::from_nanos(quota.period_ns));
            let _ = put_item(&mut policy, name, (b'q', quota.limit), (b'w', window));
        }
        // Names were checked to be printable ASCII, so the value is always valid.
        let policy =
            HeaderValue::from_maybe_shared(policy.freeze()).unwrap_or(HeaderValue::from_static(""));
        Self {
            legacy,
            ietf,
            reset,
            names,
            limit_values,
            policy,
        }
    }

    /// Whether any rate-limit header is on (`Retry-After` on a 429 is sent regardless).
    pub(crate) fn any(&self) -> bool {
        self.legacy || self.ietf
    }

    /// The clock reading the reset needs, taken when the verdict is (`Reset` as a Unix time
    /// is the decision's time plus the wait): zero when it is not needed.
    pub(crate) fn unix_now(&self, clock: &dyn Clock) -> Duration {
        match self.reset {
            ResetFormat::UnixEpoch if self.legacy => clock.unix_now(),
            _ => Duration::ZERO,
        }
    }

    /// What an admitted request's headers need, for [`PendingHeaders::write`].
    pub(crate) fn pending(
        self: &Arc<Self>,
        verdict: &Verdict,
        clock: &dyn Clock,
    ) -> PendingHeaders {
        PendingHeaders {
            config: self.clone(),
            limits: verdict.limits.clone(),
            unix_now: self.unix_now(clock),
        }
    }

    /// Writes the headers for `limits` into `headers`, and `Retry-After: retry_after` (unless
    /// the response has one).
    pub(crate) fn write(
        &self,
        headers: &mut HeaderMap,
        limits: &[LimitStatus],
        unix_now: Duration,
        retry_after: Option<u64>,
    ) {
        // The limit closest to running out speaks for all in the trio; on a tie, the one
        // resetting last.
        let binding = if self.legacy {
            limits
                .iter()
                .enumerate()
                .min_by_key(|(_, s)| (s.remaining, std::cmp::Reverse(s.reset_after)))
        } else {
            None
        };
        // A verdict with no limits (a fail-open answer) has nothing to report.
        let ietf = self.ietf && !limits.is_empty();
        // Room for what is added, at once rather than header by header (only what is added: a
        // map with room to spare is left as it is).
        headers.reserve(
            3 * usize::from(binding.is_some())
                + 2 * usize::from(ietf)
                + usize::from(retry_after.is_some()),
        );
        // The trio is written as a unit: if an inner layer or the handler set any of it, its
        // values stand and none of ours is mixed in.
        let binding = binding.filter(|_| !has_any(headers, &TRIO));

        // Every number that changes per request is written into one buffer, and each header
        // value is a slice of it: one allocation for the lot. `RateLimit` holds the binding
        // limit's `r` and `t`, which are also `Remaining` and (in seconds from now) `Reset`.
        // Sized for the worst case (20-digit numbers), a Unix-time reset included.
        let len: usize = if ietf {
            self.names.iter().map(|n| n.len() + 50).sum::<usize>() + 20
        } else {
            64
        };
        let mut buf = BytesMut::with_capacity(len);
        let mut binding_at = None;
        let mut ratelimit = 0..0;
        if ietf {
            for (index, (status, name)) in limits.iter().zip(&self.names).enumerate() {
                if !buf.is_empty() {
                    buf.put_slice(b", ");
                }
                let reset = ceil_secs(status.reset_after);
                let at = put_item(&mut buf, name, (b'r', status.remaining), (b't', reset));
                if binding.is_some_and(|(i, _)| i == index) {
                    binding_at = Some(at);
                }
            }
            ratelimit = 0..buf.len();
        }
        let trio = binding.map(|(index, status)| {
            let (remaining, reset) = binding_at.unwrap_or_else(|| {
                let remaining = put_number(&mut buf, status.remaining);
                (
                    remaining,
                    put_number(&mut buf, ceil_secs(status.reset_after)),
                )
            });
            let reset = match self.reset {
                ResetFormat::SecondsFromNow => reset,
                ResetFormat::UnixEpoch => {
                    put_number(&mut buf, ceil_secs(unix_now + status.reset_after))
                }
            };
            (index, remaining, reset)
        });
        let buf = buf.freeze();
        if let Some((index, remaining, reset)) = trio {
            headers.insert(X_RATELIMIT_LIMIT, self.limit_values[index].clone());
            if let Some(value) = value(&buf, remaining) {
                headers.insert(X_RATELIMIT_REMAINING, value);
            }
            if let Some(value) = value(&buf, reset) {
                headers.insert(X_RATELIMIT_RESET, value);
            }
        }
        if ietf {
            if let Some(value) = value(&buf, ratelimit) {
                // Appended: stacked layers each add their items to both lists.
                headers.append(RATELIMIT_POLICY, self.policy.clone());
                headers.append(RATELIMIT, value);
            }
        }
        if let Some(secs) = retry_after {
            if !headers.contains_key(RETRY_AFTER) {
                headers.insert(RETRY_AFTER, number(secs));
            }
        }
    }
}

const TRIO: [HeaderName; 3] = [X_RATELIMIT_LIMIT, X_RATELIMIT_REMAINING, X_RATELIMIT_RESET];

/// A header value of `buf[range]`: the digits and items this module writes are always valid.
fn value(buf: &Bytes, range: std::ops::Range<usize>) -> Option<HeaderValue> {
    HeaderValue::from_maybe_shared(buf.slice(range)).ok()
}

/// Writes `n`; returns where.
fn put_number(buf: &mut BytesMut, n: u64) -> std::ops::Range<usize> {
    let start = buf.len();
    put_u64(buf, n);
    start..buf.len()
}

/// Writes `"name";a=N;b=M`; returns where N and M are.
fn put_item(
    buf: &mut BytesMut,
    name: &str,
    first: (u8, u64),
    second: (u8, u64),
) -> (std::ops::Range<usize>, std::ops::Range<usize>) {
    buf.put_u8(b'"');
    buf.put_slice(name.as_bytes());
    buf.put_u8(b'"');
    buf.put_slice(&[b';', first.0, b'=']);
    let a = put_number(buf, first.1);
    buf.put_slice(&[b';', second.0, b'=']);
    let b = put_number(buf, second.1);
    (a, b)
}

/// `Retry-After` in whole seconds, rounded up, and never 0 for a refusal (0 invites a hot loop).
pub(crate) fn retry_after_secs(verdict: &Verdict) -> u64 {
    ceil_secs(verdict.retry_after).max(1)
}

/// Whether `headers` holds any of `names`. A handler's response has a few headers: comparing
/// each name costs less than hashing ours once per lookup (a custom name is hashed byte by
/// byte), so small maps are scanned and large ones looked up.
fn has_any(headers: &HeaderMap, names: &[HeaderName]) -> bool {
    if headers.keys_len() <= 8 {
        headers.keys().any(|key| names.contains(key))
    } else {
        names.iter().any(|name| headers.contains_key(name))
    }
}
