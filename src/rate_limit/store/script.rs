//! The Lua script of one layer: the prelude, the algorithms its limits use, and the main
//! routine that checks every limit and commits all or none, in one round trip.

use std::time::Duration;

use redis::{Cmd, Value};
use smallvec::SmallVec;

use super::{LimitStatus, Origin, Verdict};
use crate::error::ConfigError;
use crate::rate_limit::algorithm::{Algorithm, Quota};
use crate::redis::{integer_list, CallError, Script};

const PRELUDE: &str = include_str!("lua/prelude.lua");
const MAIN: &str = include_str!("lua/main.lua");

/// Lua numbers are doubles: integers are exact below 2^53, so every product the scripts form
/// must stay below it.
const EXACT: u128 = 1 << 53;

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
    /// The Redis key names of this limit, after the `{prefix:key}:` tag: one, or two for the
    /// sliding log (its entries and their total).
    suffixes: SmallVec<[String; 2]>,
    /// A cost above this is never admitted; sending it as is could overflow the script's
    /// arithmetic, so it is clamped to one more.
    capacity: u64,
}

fn too_large(field: &'static str, what: String) -> ConfigError {
    ConfigError::new(
        field,
        format!("is too large for the redis backend's exact arithmetic (below 2^53): {what}"),
    )
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
                // The TAT runs up to (burst + 1) emissions past now (a refused cost).
                if u128::from(quota.burst + 1) * u128::from(emission) >= EXACT {
                    return Err(too_large(
                        "burst",
                        format!("{} tokens of {emission}µs", quota.burst),
                    ));
                }
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
        // The sliding counter weighs a window's count by the time left in it.
        if quota.algorithm == Algorithm::SlidingWindowCounter
            && u128::from(quota.limit + 1) * u128::from(period_us) >= EXACT
        {
            return Err(too_large(
                "limit",
                format!("{} per {period_us}µs", quota.limit),
            ));
        }
        let base = format!(
            "{name}:{code}:{}:{}",
            quota.limit,
            Duration::from_micros(period_us).as_millis()
        );
        let suffixes = match quota.algorithm {
            Algorithm::SlidingWindowLog => {
                SmallVec::from_iter([format!("{base}:log"), format!("{base}:n")])
            }
            _ => SmallVec::from_iter([base]),
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
            suffixes,
            capacity: if quota.algorithm == Algorithm::TokenBucket {
                quota.burst
            } else {
                quota.limit
            },
        })
    }

    pub(crate) fn suffixes(&self) -> &[String] {
        &self.suffixes
    }
}

/// What one call asks of the script.
pub(crate) enum Call {
    Decide { cost: u64 },
    Refund { cost: u64, counted_at_us: u64 },
}

/// The composed script of one layer, with what every call repeats.
#[derive(Debug)]
pub(crate) struct LayerScript {
    script: Script,
    quotas: Vec<RedisQuota>,
    /// The largest cost worth sending: one more than the largest capacity.
    max_cost: u64,
}

impl LayerScript {
    pub(crate) fn new(quotas: Vec<RedisQuota>) -> Self {
        let mut body = String::from(PRELUDE);
        for algorithm in [
            Algorithm::TokenBucket,
            Algorithm::FixedWindow,
            Algorithm::SlidingWindowCounter,
            Algorithm::SlidingWindowLog,
        ] {
            let (code, text) = source(algorithm);
            if quotas.iter().any(|q| q.code == code) {
                body.push_str(text);
            }
        }
        body.push_str(MAIN);
        let max_cost = quotas
            .iter()
            .map(|q| q.capacity)
            .max()
            .unwrap_or(0)
            .saturating_add(1);
        Self {
            script: Script::new(body),
            quotas,
            max_cost,
        }
    }

    pub(crate) fn script(&self) -> &Script {
        &self.script
    }

    pub(crate) fn quotas(&self) -> &[RedisQuota] {
        &self.quotas
    }

    /// The arguments of one call, after the keys: `mode cost counted_at nonce now` and each
    /// limit.
    pub(crate) fn args(&self, cmd: &mut Cmd, call: &Call, nonce: u64, fixed_now_us: Option<u64>) {
        let (mode, cost, counted_at) = match *call {
            Call::Decide { cost } => ("d", cost.min(self.max_cost), 0),
            Call::Refund {
                cost,
                counted_at_us,
            } => ("r", cost.min(self.max_cost), counted_at_us),
        };
        cmd.arg(mode).arg(cost).arg(counted_at).arg(nonce);
        match fixed_now_us {
            Some(now) => cmd.arg(now),
            None => cmd.arg(""),
        };
        for quota in &self.quotas {
            cmd.arg(quota.code);
            for arg in &quota.args {
                cmd.arg(arg.as_str());
            }
        }
    }
}

fn bad_reply() -> CallError {
    CallError::bad_reply("rate-limit")
}

/// Reads the script's answer: `{allowed, retry_after, now, remaining_1, reset_after_1, ...}`.
pub(crate) fn verdict(value: Value, limits: usize) -> Result<Verdict, CallError> {
    let numbers = integer_list(value).ok_or_else(bad_reply)?;
    if numbers.len() != 3 + 2 * limits {
        return Err(bad_reply());
    }
    let (head, statuses) = numbers.split_at(3);
    Ok(Verdict {
        allowed: head[0] == 1,
        retry_after: Duration::from_micros(head[1]),
        limits: statuses
            .chunks_exact(2)
            .map(|pair| LimitStatus {
                remaining: pair[0],
                reset_after: Duration::from_micros(pair[1]),
            })
            .collect::<SmallVec<_>>(),
        counted_at: Duration::from_micros(head[2]),
        origin: Origin::Store,
    })
}
