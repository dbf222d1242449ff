//! What a built compression layer holds: read on every request, shared by its services.

use http::{HeaderName, HeaderValue};

use super::encoder::Levels;
use super::negotiate::Offered;
use crate::util::StripedCounts;

/// What the layer counts: responses compressed or passed on as they were, and the bytes
/// compressed responses took in and gave out.
pub(crate) enum Count {
    Compressed,
    Passed,
    BytesIn,
    BytesOut,
}

#[derive(Debug)]
pub(crate) struct Config {
    pub(crate) offered: Offered,
    pub(crate) levels: Levels,
    pub(crate) min_size: u64,
    pub(crate) skipped_types: Vec<Box<str>>,
    pub(crate) opt_out: Option<HeaderName>,
    /// Merged into every response's `Vary`: `accept-encoding`, and the opt-out header (the
    /// answer depends on it too).
    pub(crate) vary: Vec<HeaderName>,
    pub(crate) vary_value: HeaderValue,
    pub(crate) counts: StripedCounts<4>,
}

impl Config {
    pub(crate) fn count(&self, count: Count, n: u64) {
        self.counts.add(count as usize, n);
    }
}
