//! The Lua script of one layer: the prelude, the algorithms its limits use, and the main
//! routine that checks every limit and commits all or none, in one round trip.

use std::time::Duration;

use redis::{Script, ScriptInvocation, Value};
use smallvec::SmallVec;

use crate::backend::{BackendError, LimitStatus, Origin, Verdict};
use crate::error::ConfigError;
use crate::rate_limit::algorithm::{Algorithm, Quota};

const PRELUDE: &str = include_str!("lua/prelude.lua");
const MAIN: &str = include_str!("lua/main.lua");

fn source(algorithm: Algorithm) -> (&'static str, &'static str) {
    match algorithm {
        Algorithm::TokenBucket => ("tb", include_str!("lua/gcra.lua")),
        Algorithm::FixedWindow => ("fw", include_str!("lua/fixed_window.lua")),
        Algorithm::SlidingWindowCounter => ("sc", include_str!("lua/sliding_counter.lua")),
        Algorithm::SlidingWindowLog => ("sl", include_str!("lua/sliding_log.lua")),
    }
}

/// One limit in the script's units: microseconds of the Redis server's clock.
#[derive(Debug, Clone)]
pub(crate) struct RedisQuota {
    code: &'static str,
    /// `limit period burst emission refill`, already formatted: the same on every call.
    args: [String; 5],
    /// The part of the Redis key naming this limit: `name:algorithm:limit:period`.
    suffix: String,
}

impl RedisQuota {
    pub(crate) fn new(quota: &Quota, name: &str) -> Result<Self, ConfigError> {
        let period_us = quota.period_ns / 1_000;
        if period_us < 1_000 {
            return Err(ConfigError::new(
                "period",
                format!(
                    "must be >= 1ms with the redis backend, got {:?}",
                    Duration::from_nanos(quota.period_ns)
                ),
            ));
        }
        let (code, _) = source(quota.algorithm);
        let (burst, emission, refill) = match quota.algorithm {
            Algorithm::TokenBucket => {
                if quota.limit > period_us {
                    return Err(ConfigError::new(
                        "limit",
                        format!(
                            "must be at most one per microsecond of `period` with the redis backend, got {} per {:?}",
                            quota.limit,
                            Duration::from_nanos(quota.period_ns)
                        ),
                    ));
                }
                let emission = period_us.div_ceil(quota.limit);
                let refill =
                    u128::from(quota.burst) * u128::from(period_us) / u128::from(quota.limit);
                (
                    quota.burst,
                    emission,
                    u64::try_from(refill).unwrap_or(u64::MAX),
                )
            }
            _ => (0, 0, 0),
        };
        Ok(Self {
            code,
            args: [
                quota.limit.to_string(),
                period_us.to_string(),
                burst.to_string(),
                emission.to_string(),
                refill.to_string(),
            ],
            suffix: format!(
                "{name}:{code}:{}:{}",
                quota.limit,
                Duration::from_micros(period_us).as_millis()
            ),
        })
    }

    pub(crate) fn suffix(&self) -> &str {
        &self.suffix
    }
}

/// The composed script of one layer.
pub(crate) fn compose(quotas: &[RedisQuota]) -> Script {
    let mut text = String::from(PRELUDE);
    for algorithm in [
        Algorithm::TokenBucket,
        Algorithm::FixedWindow,
        Algorithm::SlidingWindowCounter,
        Algorithm::SlidingWindowLog,
    ] {
        let (code, body) = source(algorithm);
        if quotas.iter().any(|q| q.code == code) {
            text.push_str(body);
        }
    }
    text.push_str(MAIN);
    Script::new(&text)
}

/// What one call asks of the script.
pub(crate) enum Call {
    Decide { cost: u64 },
    Refund { cost: u64, counted_at_us: u64 },
}

/// Fills an invocation: keys first, then `mode cost counted_at nonce now` and each limit.
pub(crate) fn prepare<'a>(
    script: &'a Script,
    keys: &[Vec<u8>],
    quotas: &[RedisQuota],
    call: &Call,
    nonce: u64,
    fixed_now_us: Option<u64>,
) -> ScriptInvocation<'a> {
    let mut invocation = script.prepare_invoke();
    for key in keys {
        invocation.key(key.as_slice());
    }
    let (mode, cost, counted_at) = match *call {
        Call::Decide { cost } => ("d", cost, 0),
        Call::Refund {
            cost,
            counted_at_us,
        } => ("r", cost, counted_at_us),
    };
    invocation
        .arg(mode)
        .arg(cost)
        .arg(counted_at)
        .arg(nonce)
        .arg(fixed_now_us.map_or_else(String::new, |now| now.to_string()));
    for quota in quotas {
        invocation.arg(quota.code);
        for arg in &quota.args {
            invocation.arg(arg.as_str());
        }
    }
    invocation
}

/// Reads the script's answer: `{allowed, retry_after, now, remaining_1, reset_after_1, ...}`.
pub(crate) fn verdict(value: Value, limits: usize) -> Result<Verdict, BackendError> {
    let bad = || BackendError::new("unexpected reply from the rate-limit script");
    let Value::Array(items) = value else {
        return Err(bad());
    };
    if items.len() != 3 + 2 * limits {
        return Err(bad());
    }
    let mut numbers = items.into_iter().map(|item| match item {
        Value::Int(n) => u64::try_from(n).map_err(|_| bad()),
        _ => Err(bad()),
    });
    let mut next = || numbers.next().unwrap_or_else(|| Err(bad()));
    let allowed = next()? == 1;
    let retry_after = Duration::from_micros(next()?);
    let counted_at = Duration::from_micros(next()?);
    let mut statuses = SmallVec::new();
    for _ in 0..limits {
        let remaining = next()?;
        let reset_after = Duration::from_micros(next()?);
        statuses.push(LimitStatus {
            remaining,
            reset_after,
        });
    }
    Ok(Verdict {
        allowed,
        retry_after,
        limits: statuses,
        counted_at,
        origin: Origin::Store,
    })
}
