//! The fleet's circuit breaker in Redis: one hash per key, moved by one script call per sync.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use redis::{Cmd, Value};

use super::keys::tagged;
use super::RedisBackend;
use crate::backend::BackendError;
use crate::circuit_breaker::fleet::{FleetView, LeaseWish, Report, SyncError};
use crate::key::Key;

const SCRIPT: &str = include_str!("lua/breaker.lua");

/// One layer's way to its keys' shared state machines.
pub(crate) struct BreakerSync {
    redis: RedisBackend,
    prefix: String,
    deadline: Duration,
    hash: String,
    /// Tells this instance (this layer, in this process) from the others: with a circuit's
    /// incarnation, it names the circuit's totals and its probe lease in the hash.
    instance: String,
    /// ARGV 12 to 20: the policy, the same on every call.
    policy: [String; 9],
}

fn instance_id() -> String {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    format!("{:016x}", hasher.finish())
}

impl BreakerSync {
    pub(crate) fn new(
        redis: RedisBackend,
        prefix: String,
        deadline: Duration,
        policy: [String; 9],
    ) -> Self {
        Self {
            redis,
            prefix,
            deadline,
            hash: redis::Script::new(SCRIPT).get_hash().to_owned(),
            instance: instance_id(),
            policy,
        }
    }

    pub(crate) fn deadline(&self) -> Duration {
        self.deadline
    }

    /// The Redis key of `key`'s state machine; `None` is a keyed layer's overflow circuit.
    pub(crate) fn redis_key(&self, key: Option<&Key>) -> Vec<u8> {
        match key {
            Some(key) => {
                let mut name = tagged(&self.prefix, key);
                name.extend_from_slice(b"cb");
                name
            }
            // No encoded key is bare `overflow`: each kind has its own prefix (`ip:`, `s:`...).
            None => format!("{{{}:overflow}}:cb", self.prefix).into_bytes(),
        }
    }

    fn command(&self, with_body: bool, key: &[u8], report: &Report) -> Cmd {
        let mut cmd = if with_body {
            let mut cmd = redis::cmd("EVAL");
            cmd.arg(SCRIPT);
            cmd
        } else {
            let mut cmd = redis::cmd("EVALSHA");
            cmd.arg(&self.hash);
            cmd
        };
        let flag = |b: bool| if b { "1" } else { "0" };
        // The totals are this circuit's: a circuit made again for the same key starts its own.
        cmd.arg(1)
            .arg(key)
            .arg(format!("{}.{}", self.instance, report.incarnation));
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
        cmd
    }

    /// Tells the fleet `report` and reads its state, within the deadline.
    pub(crate) async fn call(
        &self,
        key: Option<&Key>,
        report: &Report,
    ) -> Result<FleetView, SyncError> {
        let name = self.redis_key(key);
        let call = self
            .redis
            .eval(|with_body| self.command(with_body, &name, report));
        match tokio::time::timeout(self.deadline, call).await {
            Err(_) => Err(SyncError::Timeout),
            Ok(Err(err)) => Err(SyncError::Redis(BackendError::new(format!("redis: {err}")))),
            Ok(Ok(value)) => view(value).ok_or_else(|| {
                SyncError::Redis(BackendError::new(
                    "unexpected reply from the circuit-breaker script",
                ))
            }),
        }
    }
}

/// Reads `{state, generation, open_left_us, lease_left_us}`.
fn view(value: Value) -> Option<FleetView> {
    let Value::Array(items) = value else {
        return None;
    };
    let numbers: Vec<u64> = items
        .into_iter()
        .map(|item| match item {
            Value::Int(n) => u64::try_from(n).ok(),
            _ => None,
        })
        .collect::<Option<_>>()?;
    let [state, generation, open_left_us, lease_left_us] = numbers.as_slice() else {
        return None;
    };
    if *state > 2 {
        return None;
    }
    Some(FleetView {
        state: *state,
        generation: *generation,
        open_left: Duration::from_micros(*open_left_us),
        lease_left: Duration::from_micros(*lease_left_us),
        // Filled in by the caller, which timed the call.
        asked_at_ns: 0,
        lease_margin: Duration::ZERO,
    })
}
