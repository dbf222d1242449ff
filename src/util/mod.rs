//! Small shared mechanisms with no layer of their own: striped counters, the one bounded
//! keyed store every keyed layer keeps its per-key state in, and the one way a body is read
//! into memory within a bound and handed on.

// Compiled whole with any layer; with only one layer on, the other's parts have no caller.
#![cfg_attr(
    not(all(
        feature = "rate-limit",
        feature = "circuit-breaker",
        feature = "retry",
        feature = "cache"
    )),
    allow(dead_code, unused_imports)
)]

mod buffered_body;
mod counter;
mod keyed_store;

pub(crate) use buffered_body::{fits, Buffered, Collect, Collected};
pub(crate) use counter::{StripedCounter, StripedCounts};
pub use keyed_store::DEFAULT_MAX_KEYS;
pub(crate) use keyed_store::{Entry, KeyedStore, Sweeping};
