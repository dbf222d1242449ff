//! One Lua script and the one way to call it: `EVALSHA`, `EVAL` with the body where the
//! script is missing (`NOSCRIPT`), bounded by the layer's deadline, failing as a [`CallError`].
//!
//! Every layer that keeps state in Redis calls its script through here; a layer owns only its
//! Lua and how it encodes arguments and reads the reply.

use std::fmt;
use std::time::Duration;

use redis::{Cmd, ErrorKind, RedisError, ServerErrorKind, Value};

use super::RedisBackend;
use crate::error::BackendError;

/// A Lua script with its SHA-1, computed once.
#[derive(Debug)]
pub(crate) struct Script {
    body: String,
    hash: String,
}

impl Script {
    pub(crate) fn new(body: impl Into<String>) -> Self {
        let body = body.into();
        let hash = redis::Script::new(&body).get_hash().to_owned();
        Self { body, hash }
    }

    /// `EVALSHA hash numkeys keys... args...`, or `EVAL body ...` when `with_body`.
    pub(crate) fn command(
        &self,
        with_body: bool,
        keys: &[&[u8]],
        args: &(dyn Fn(&mut Cmd) + Sync),
    ) -> Cmd {
        let mut cmd = if with_body {
            let mut cmd = redis::cmd("EVAL");
            cmd.arg(&self.body);
            cmd
        } else {
            let mut cmd = redis::cmd("EVALSHA");
            cmd.arg(&self.hash);
            cmd
        };
        cmd.arg(keys.len());
        for key in keys {
            cmd.arg(*key);
        }
        args(&mut cmd);
        cmd
    }

    /// Runs the script on `keys` with `args` within `deadline`. A missing script (a restarted
    /// or new node) is loaded by an `EVAL` with its body, on that node only, in the same round
    /// trip: a cluster-wide `SCRIPT LOAD` would fail while any node is down.
    pub(crate) async fn call(
        &self,
        redis: &RedisBackend,
        deadline: Duration,
        keys: &[&[u8]],
        args: &(dyn Fn(&mut Cmd) + Sync),
    ) -> Result<Value, CallError> {
        let call = async {
            match redis.query(&self.command(false, keys, args)).await {
                Err(err) if err.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                    redis.query(&self.command(true, keys, args)).await
                }
                other => other,
            }
        };
        match tokio::time::timeout(deadline, call).await {
            Err(_) => Err(CallError::Timeout(deadline)),
            Ok(Err(err)) => Err(CallError::from_redis(&err)),
            Ok(Ok(value)) => Ok(value),
        }
    }
}

/// Why a script call gave no usable answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CallError {
    /// No answer within the deadline (a slow, frozen or black-holed Redis).
    Timeout(Duration),
    /// Redis cannot be reached or cannot serve right now (connection refused or lost, cluster
    /// down, loading): an outage.
    Unreachable(String),
    /// Redis answered, with an error or a reply the script never gives (WRONGTYPE, a
    /// permission error, a bug): not an outage, so it must not trip a back-off.
    Refused(String),
}

impl CallError {
    fn from_redis(err: &RedisError) -> Self {
        let unreachable = err.is_io_error()
            || err.is_timeout()
            || err.is_connection_dropped()
            || err.is_connection_refusal()
            || matches!(
                err.kind(),
                ErrorKind::Io
                    | ErrorKind::ClusterConnectionNotFound
                    | ErrorKind::Server(
                        ServerErrorKind::ClusterDown
                            | ServerErrorKind::MasterDown
                            | ServerErrorKind::TryAgain
                            | ServerErrorKind::BusyLoading
                            | ServerErrorKind::Moved
                            | ServerErrorKind::Ask
                            | ServerErrorKind::ReadOnly
                    )
            );
        if unreachable {
            CallError::Unreachable(format!("redis: {err}"))
        } else {
            CallError::Refused(format!("redis: {err}"))
        }
    }

    /// A reply that does not match what `script` always answers.
    pub(crate) fn bad_reply(script: &str) -> Self {
        CallError::Refused(format!("unexpected reply from the {script} script"))
    }

    /// True for what says Redis is away: counts toward the back-off.
    pub(crate) fn is_outage(&self) -> bool {
        !matches!(self, CallError::Refused(_))
    }

    pub(crate) fn is_timeout(&self) -> bool {
        matches!(self, CallError::Timeout(_))
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Timeout(deadline) => {
                write!(f, "redis gave no answer within the {deadline:?} deadline")
            }
            CallError::Unreachable(message) | CallError::Refused(message) => f.write_str(message),
        }
    }
}

impl From<CallError> for BackendError {
    fn from(err: CallError) -> Self {
        BackendError::new(err.to_string())
    }
}

/// Reads a reply of non-negative integers of any length.
pub(crate) fn integer_list(value: Value) -> Option<Vec<u64>> {
    let Value::Array(items) = value else {
        return None;
    };
    items
        .into_iter()
        .map(|item| match item {
            Value::Int(n) => u64::try_from(n).ok(),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_read_strictly() {
        let ints = |v: &[i64]| Value::Array(v.iter().map(|n| Value::Int(*n)).collect());
        assert_eq!(integer_list(ints(&[-1])), None);
        assert_eq!(integer_list(Value::Nil), None);
        assert_eq!(integer_list(ints(&[3, 4, 5])), Some(vec![3, 4, 5]));
        assert_eq!(integer_list(Value::Array(vec![Value::Nil])), None);
    }

    #[test]
    fn only_outages_trip_a_back_off() {
        assert!(CallError::Timeout(Duration::from_millis(5)).is_outage());
        assert!(CallError::Unreachable("x".into()).is_outage());
        assert!(!CallError::bad_reply("rate-limit").is_outage());
        assert_eq!(
            CallError::Timeout(Duration::from_millis(50)).to_string(),
            "redis gave no answer within the 50ms deadline"
        );
    }
}
