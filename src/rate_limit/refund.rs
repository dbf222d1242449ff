//! Refunds (`skip_successful`, `skip_failed`): a request counted when it arrived gives its
//! cost back once its outcome shows it should not have counted.

use std::sync::Arc;

use super::config::{Counters, Shared};
use super::store::{RateLimitBackend, Receipt};
use crate::key::Key;

/// Gives back a refunded request's cost; erases the key and backend types so futures need not
/// carry them.
pub(crate) trait RefundSink: Send + Sync + 'static {
    fn refund(&self, key: &Key, cost: u64, receipt: Receipt);
}

impl<K: Send + Sync + 'static, B: RateLimitBackend> RefundSink for Shared<K, B> {
    fn refund(&self, key: &Key, cost: u64, receipt: Receipt) {
        self.backend.refund(key, cost, receipt);
        Counters::bump(&self.counters.refunded);
    }
}

/// What an admitted request must give back if its outcome says it should not have counted.
pub(crate) struct Refund {
    pub(crate) sink: Arc<dyn RefundSink>,
    pub(crate) key: Key,
    pub(crate) cost: u64,
    pub(crate) receipt: Receipt,
    pub(crate) on_success: bool,
    pub(crate) on_failure: bool,
}

impl Refund {
    pub(crate) fn settle(self, failed: bool) {
        if (failed && self.on_failure) || (!failed && self.on_success) {
            self.sink.refund(&self.key, self.cost, self.receipt);
        }
    }
}
