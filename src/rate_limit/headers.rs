//! The rate-limit response headers.
//!
//! * `X-RateLimit-Limit`, `X-RateLimit-Remaining`, `X-RateLimit-Reset`: the de-facto trio, for
//!   the limit closest to running out.
//! * `RateLimit-Policy` and `RateLimit` from draft-ietf-httpapi-ratelimit-headers in their
//!   structured-field form, one list item per limit: `"default";q=100;w=60` and
//!   `"default";r=42;t=17`.
//! * `Retry-After` on a 429, in whole seconds rounded up.
//!
//! Stacked layers each add their items to `RateLimit` and `RateLimit-Policy` (both lists); for
//! the single-valued headers the innermost layer's value stands.
//!
//! Everything that does not change per request (the limits, the policy list) is rendered once,
//! when the layer is built.

use std::fmt::Write as _;

use http::header::{HeaderName, HeaderValue, RETRY_AFTER};
use http::HeaderMap;
use smallvec::SmallVec;

use super::algorithm::{Algorithm, Quota};
use crate::backend::Verdict;
use crate::clock::Clock;
use crate::response::ceil_secs;

/// `X-RateLimit-Limit`.
pub const X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
/// `X-RateLimit-Remaining`.
pub const X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
/// `X-RateLimit-Reset`.
pub const X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");
/// `RateLimit-Policy` (IETF draft).
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit` (IETF draft).
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// How `X-RateLimit-Reset` says when the limit resets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResetFormat {
    /// Seconds from now, rounded up (the default; immune to client clock skew).
    #[default]
    SecondsFromNow,
    /// Seconds since the Unix epoch, rounded up (as GitHub's API does).
    UnixEpoch,
}

/// Headers to set on one response, computed when the decision is made.
pub(crate) type HeaderPlan = SmallVec<[(HeaderName, HeaderValue); 6]>;

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
                Algorithm::TokenBucket => HeaderValue::from(q.burst),
                _ => HeaderValue::from(q.limit),
            })
            .collect();
        let mut policy = String::new();
        for (quota, name) in quotas.iter().zip(&names) {
            if !policy.is_empty() {
                policy.push_str(", ");
            }
            let window = ceil_secs(std::time::Duration::from_nanos(quota.period_ns));
            let _ = write!(policy, "\"{name}\";q={};w={window}", quota.limit);
        }
        // Names were checked to be printable ASCII, so the value is always valid.
        let policy = HeaderValue::from_str(&policy).unwrap_or(HeaderValue::from_static(""));
        Self {
            legacy,
            ietf,
            reset,
            names,
            limit_values,
            policy,
        }
    }

    /// The headers for `verdict`; `Retry-After` too when the request is refused.
    pub(crate) fn plan(&self, verdict: &Verdict, clock: &dyn Clock) -> HeaderPlan {
        let mut plan = HeaderPlan::new();
        if self.legacy {
            // The limit closest to running out speaks for all; on a tie, the one resetting last.
            let binding = verdict
                .limits
                .iter()
                .enumerate()
                .min_by_key(|(_, s)| (s.remaining, std::cmp::Reverse(s.reset_after)));
            if let Some((index, status)) = binding {
                let reset = match self.reset {
                    ResetFormat::SecondsFromNow => ceil_secs(status.reset_after),
                    ResetFormat::UnixEpoch => ceil_secs(clock.unix_now() + status.reset_after),
                };
                plan.push((X_RATELIMIT_LIMIT, self.limit_values[index].clone()));
                plan.push((X_RATELIMIT_REMAINING, HeaderValue::from(status.remaining)));
                plan.push((X_RATELIMIT_RESET, HeaderValue::from(reset)));
            }
        }
        if self.ietf {
            let mut value = String::with_capacity(24 * verdict.limits.len());
            for (status, name) in verdict.limits.iter().zip(&self.names) {
                if !value.is_empty() {
                    value.push_str(", ");
                }
                let _ = write!(
                    value,
                    "\"{name}\";r={};t={}",
                    status.remaining,
                    ceil_secs(status.reset_after)
                );
            }
            if let Ok(value) = HeaderValue::try_from(value) {
                plan.push((RATELIMIT_POLICY, self.policy.clone()));
                plan.push((RATELIMIT, value));
            }
        }
        if !verdict.allowed {
            plan.push((RETRY_AFTER, HeaderValue::from(retry_after_secs(verdict))));
        }
        plan
    }
}

/// `Retry-After` in whole seconds, rounded up, and never 0 for a refusal (0 invites a hot loop).
pub(crate) fn retry_after_secs(verdict: &Verdict) -> u64 {
    ceil_secs(verdict.retry_after).max(1)
}

/// Adds the planned headers to a response that may already carry an inner layer's.
///
/// `RateLimit` and `RateLimit-Policy` are lists, so each layer's items are appended; the
/// single-valued headers (`X-RateLimit-*`, `Retry-After`) keep the inner layer's value.
pub(crate) fn apply(headers: &mut HeaderMap, plan: HeaderPlan) {
    for (name, value) in plan {
        if name == RATELIMIT || name == RATELIMIT_POLICY {
            headers.append(name, value);
        } else if let http::header::Entry::Vacant(slot) = headers.entry(name) {
            slot.insert(value);
        }
    }
}
