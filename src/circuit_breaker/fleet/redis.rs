//! The breaker's side of the Redis protocol: one hash per key (`{prefix:key}:cb`), moved by one
//! call of `breaker.lua` per key per sync. What the script is told (a [`Report`] and the
//! policy) and what it answers (a [`FleetView`]) are encoded here, and only here.

use std::time::Duration;

use redis::Cmd;

use super::link::FleetView;
use super::tally::{LeaseWish, Report, LEASE_INTERVALS};
use crate::circuit_breaker::config::{Config, Trip};
use crate::error::ConfigError;
use crate::key::Key;
use crate::redis::{instance_id, integer_list, CallError, KeyNames, RedisBackend, Script};

const SCRIPT: &str = include_str!("breaker.lua");

/// One layer's way to its keys' shared state machines.
pub(crate) struct BreakerSync {
    redis: RedisBackend,
    names: KeyNames,
    deadline: Duration,
    script: Script,
    /// Tells this instance (this layer, in this process) from the others: with a circuit's
    /// incarnation, it names the circuit's totals and its probe lease in the hash.
    instance: String,
    /// ARGV 12 to 20: the policy, the same on every call.
    policy: [String; 9],
}

impl BreakerSync {
    /// The protocol for a breaker configured as `config`, synced every `interval`: the
    /// script's policy arguments (the same on every call), the probe lease and the keys' TTL.
    pub(crate) fn new(
        redis: RedisBackend,
        prefix: String,
        deadline: Duration,
        config: &Config,
        interval: Duration,
    ) -> Result<Self, ConfigError> {
        Ok(Self {
            names: redis.key_names(prefix),
            redis,
            deadline,
            script: Script::new(SCRIPT),
            instance: instance_id(),
            policy: policy(config, interval)?,
        })
    }

    /// The Redis key of `key`'s state machine; `None` is a keyed layer's overflow circuit.
    pub(crate) fn redis_key(&self, key: Option<&Key>) -> Vec<u8> {
        let mut name = match key {
            Some(key) => self.names.tagged(key),
            None => self.names.own("overflow"),
        };
        name.extend_from_slice(b"cb");
        name
    }

    fn args(&self, cmd: &mut Cmd, report: &Report) {
        let flag = |b: bool| if b { "1" } else { "0" };
        // The totals are this circuit's: a circuit made again for the same key starts its own.
        cmd.arg(format!("{}.{}", self.instance, report.incarnation));
        match report.generation {
            Some(generation) => cmd.arg(generation),
            None => cmd.arg(""),
        };
        cmd.arg(report.calls)
            .arg(report.failures)
            .arg(report.slow)
            .arg(report.good)
            .arg(report.run)
            .arg(flag(report.tripped))
            .arg(report.probe_successes)
            .arg(flag(report.probe_failed))
            .arg(match report.lease {
                LeaseWish::Want => "1",
                LeaseWish::Keep => "0",
                LeaseWish::Release => "r",
            });
        for arg in &self.policy {
            cmd.arg(arg.as_str());
        }
        // ARGV 21, a fixed time, is for the script's own tests: production uses the server's.
        cmd.arg("");
        let [calls, failures, slow, good, probes] = report.acked;
        cmd.arg(format!("{calls},{failures},{slow},{good},{probes}"));
    }

    /// Tells the fleet `report` and reads its state, within the deadline.
    pub(crate) async fn call(
        &self,
        key: Option<&Key>,
        report: &Report,
    ) -> Result<FleetView, CallError> {
        let name = self.redis_key(key);
        let value = self
            .script
            .call(&self.redis, self.deadline, &[&name], &|cmd| {
                self.args(cmd, report)
            })
            .await?;
        view(value).ok_or_else(|| CallError::bad_reply("circuit-breaker"))
    }
}

/// Reads `{state, generation, open_left_us, lease_left_us}`.
fn view(value: redis::Value) -> Option<FleetView> {
    let numbers = integer_list(value)?;
    let [state, generation, open_left_us, lease_left_us] = *numbers.as_slice() else {
        return None;
    };
    if state > 2 {
        return None;
    }
    Some(FleetView {
        state,
        generation,
        open_left: Duration::from_micros(open_left_us),
        lease_left: Duration::from_micros(lease_left_us),
        // Filled in by the caller, which timed the call.
        asked_at_ns: 0,
        lease_margin: Duration::ZERO,
    })
}

/// ARGV 12 to 20: `policy threshold minimum window slow_rate open_us half_open_successes
/// lease_us ttl_ms`.
fn policy(config: &Config, interval: Duration) -> Result<[String; 9], ConfigError> {
    let micros = |d: Duration| d.as_micros().min(u128::from(u64::MAX)).to_string();
    let (policy, threshold, minimum, window, window_span) = match config.trip {
        Trip::Consecutive { failures } => ("c", failures.to_string(), 0, 0, Duration::ZERO),
        Trip::Rate {
            failure_rate,
            minimum_calls,
            window_calls: Some(calls),
            ..
        } => (
            "n",
            failure_rate.to_string(),
            minimum_calls,
            calls as u64,
            Duration::ZERO,
        ),
        Trip::Rate {
            failure_rate,
            minimum_calls,
            window_period_ns,
            ..
        } => {
            let period = Duration::from_nanos(window_period_ns);
            if period < Duration::from_millis(1) {
                return Err(ConfigError::new(
                    "window_time",
                    format!("must be >= 1ms with the redis backend, got {period:?}"),
                ));
            }
            let us = u64::try_from(period.as_micros()).unwrap_or(u64::MAX);
            ("t", failure_rate.to_string(), minimum_calls, us, period)
        }
    };
    // A holder renews its lease at every sync: three intervals survive one lost sync.
    let lease = interval.saturating_mul(LEASE_INTERVALS);
    // Keys outlive everything they hold; every sync renews them.
    let ttl = config
        .open_for
        .max(window_span)
        .max(interval.saturating_mul(10))
        .saturating_mul(2);
    let slow_rate = config.slow.map_or(0.0, |slow| slow.rate);
    Ok([
        policy.to_owned(),
        threshold,
        minimum.to_string(),
        window.to_string(),
        slow_rate.to_string(),
        micros(config.open_for),
        config.half_open_successes.to_string(),
        micros(lease),
        ttl.as_millis().max(1).min(u128::from(u64::MAX)).to_string(),
    ])
}
