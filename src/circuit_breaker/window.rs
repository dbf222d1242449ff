//! The failure-rate windows: the last N calls, or the calls of the last period (in buckets).

use std::collections::VecDeque;

/// Totals over a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    pub(crate) calls: u64,
    pub(crate) failures: u64,
    pub(crate) slow: u64,
}

impl Totals {
    fn add(&mut self, failure: bool, slow: bool) {
        self.calls += 1;
        self.failures += u64::from(failure);
        self.slow += u64::from(slow);
    }

    fn sub(&mut self, other: Totals) {
        self.calls -= other.calls;
        self.failures -= other.failures;
        self.slow -= other.slow;
    }
}

/// The last `size` calls.
#[derive(Debug)]
pub(crate) struct CountWindow {
    size: usize,
    /// One entry per call, oldest first: (failure, slow).
    calls: VecDeque<(bool, bool)>,
    totals: Totals,
}

impl CountWindow {
    pub(crate) fn new(size: usize) -> Self {
        Self {
            size,
            calls: VecDeque::with_capacity(size),
            totals: Totals::default(),
        }
    }

    pub(crate) fn record(&mut self, failure: bool, slow: bool) -> Totals {
        if self.calls.len() == self.size {
            if let Some((f, s)) = self.calls.pop_front() {
                let mut gone = Totals::default();
                gone.add(f, s);
                self.totals.sub(gone);
            }
        }
        self.calls.push_back((failure, slow));
        self.totals.add(failure, slow);
        self.totals
    }

    pub(crate) fn clear(&mut self) {
        self.calls.clear();
        self.totals = Totals::default();
    }

    /// True when the window holds nothing that could open the breaker: no failure, no slow
    /// call. (Forgetting successes only makes a later minimum take longer to reach.)
    pub(crate) fn is_harmless(&self) -> bool {
        self.totals.failures == 0 && self.totals.slow == 0
    }
}

/// The calls of the last `period`, kept in `BUCKETS` buckets: a call leaves the window a
/// bucket's width at most after `period` (the window slides by whole buckets).
#[derive(Debug)]
pub(crate) struct TimeWindow {
    bucket_ns: u64,
    /// (bucket index = time / bucket_ns, its totals), oldest first.
    buckets: VecDeque<(u64, Totals)>,
    totals: Totals,
}

/// How finely a time window slides.
pub(crate) const BUCKETS: u64 = 10;

impl TimeWindow {
    pub(crate) fn new(period_ns: u64) -> Self {
        Self {
            bucket_ns: (period_ns / BUCKETS).max(1),
            buckets: VecDeque::with_capacity(BUCKETS as usize + 1),
            totals: Totals::default(),
        }
    }

    fn expire(&mut self, index: u64) {
        while let Some(&(oldest, totals)) = self.buckets.front() {
            if oldest + BUCKETS > index {
                break;
            }
            self.totals.sub(totals);
            self.buckets.pop_front();
        }
    }

    pub(crate) fn record(&mut self, now_ns: u64, failure: bool, slow: bool) -> Totals {
        let index = now_ns / self.bucket_ns;
        self.expire(index);
        match self.buckets.back_mut() {
            // A reading older than the newest bucket (threads race) counts in the newest.
            Some((newest, totals)) if *newest >= index => totals.add(failure, slow),
            _ => {
                let mut totals = Totals::default();
                totals.add(failure, slow);
                self.buckets.push_back((index, totals));
            }
        }
        self.totals.add(failure, slow);
        self.totals
    }

    pub(crate) fn clear(&mut self) {
        self.buckets.clear();
        self.totals = Totals::default();
    }

    /// True when no call is counted. (Buckets past the window count until the next call
    /// expires them: a conservative "not idle".)
    /// True when the window holds nothing that could open the breaker at `now_ns`: no
    /// failure or slow call in a bucket still inside the window.
    pub(crate) fn is_harmless(&mut self, now_ns: u64) -> bool {
        self.expire(now_ns / self.bucket_ns);
        self.totals.failures == 0 && self.totals.slow == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_window_keeps_the_last_n_calls() {
        let mut w = CountWindow::new(3);
        w.record(true, false);
        w.record(false, true);
        w.record(false, false);
        let t = w.record(false, false); // the first failure leaves
        assert_eq!((t.calls, t.failures, t.slow), (3, 0, 1));
        let t = w.record(true, false);
        assert_eq!((t.calls, t.failures, t.slow), (3, 1, 0));
    }

    #[test]
    fn time_window_forgets_buckets_older_than_the_period() {
        let mut w = TimeWindow::new(1_000); // buckets of 100
        w.record(0, true, false);
        w.record(550, true, true);
        let t = w.record(999, false, false);
        assert_eq!((t.calls, t.failures, t.slow), (3, 2, 1));
        // At 1000 the bucket [0,100) has left; [500,600) stays until 1500.
        let t = w.record(1_000, false, false);
        assert_eq!((t.calls, t.failures, t.slow), (3, 1, 1));
        let t = w.record(1_600, false, false);
        assert_eq!((t.calls, t.failures, t.slow), (3, 0, 0));
        let t = w.record(5_000, false, false);
        assert_eq!(t.calls, 1);
    }

    #[test]
    fn an_older_reading_counts_in_the_newest_bucket() {
        let mut w = TimeWindow::new(1_000);
        w.record(500, true, false);
        let t = w.record(450, true, false);
        assert_eq!(t.failures, 2);
    }
}
