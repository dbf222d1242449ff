//! Service-level objectives checked against a sliding window's figures.

use std::time::Duration;

use super::window::LatencySnapshot;

/// What an objective bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Objective {
    /// The median latency is below the target.
    P50,
    /// The 95th percentile latency is below the target.
    P95,
    /// The 99th percentile latency is below the target.
    P99,
    /// The share of server errors is below the target.
    ErrorRate,
    /// The share of requests served (no server error, not refused) is at least the target.
    Availability,
}

/// Pass, fail, or nothing to judge (no request in the window).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The objective holds.
    Pass,
    /// It does not.
    Fail,
    /// No request finished in the window: nothing was measured.
    NoData,
}

/// One objective's result.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct ObjectiveResult {
    /// Which objective.
    pub objective: Objective,
    /// Its target: seconds for latencies, a ratio (0 to 1) for the rates.
    pub target: f64,
    /// What was measured, in the same unit (`None` without requests).
    pub measured: Option<f64>,
    /// The verdict.
    pub verdict: Verdict,
}

/// The results of every objective, and the window they cover.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SloReport {
    /// The time the figures cover.
    pub window: Duration,
    /// Requests in it.
    pub count: u64,
    /// One result per objective, in the order p50, p95, p99, error rate, availability.
    pub results: Vec<ObjectiveResult>,
}

impl SloReport {
    /// Whether no objective failed (`NoData` does not fail).
    ///
    /// ```
    /// use tower_bulwark::metrics::{LatencySnapshot, Slo};
    ///
    /// let layer = tower_bulwark::metrics::MetricsLayer::builder().build()?;
    /// assert!(Slo::default().check(&layer.latency()).passed());
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn passed(&self) -> bool {
        self.results.iter().all(|r| r.verdict != Verdict::Fail)
    }
}

/// Objectives: by default the guides' (p50 < 50 ms, p95 < 200 ms, p99 < 500 ms, error rate
/// < 0.1 %, availability ≥ 99.9 %).
///
/// ```
/// use std::time::Duration;
/// use tower_bulwark::metrics::Slo;
///
/// let slo = Slo::default().p99(Duration::from_millis(300)).error_rate(0.005);
/// # drop(slo);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Slo {
    p50: Duration,
    p95: Duration,
    p99: Duration,
    error_rate: f64,
    availability: f64,
}

impl Default for Slo {
    fn default() -> Self {
        Self {
            p50: Duration::from_millis(50),
            p95: Duration::from_millis(200),
            p99: Duration::from_millis(500),
            error_rate: 0.001,
            availability: 0.999,
        }
    }
}

impl Slo {
    /// The median must be below `bound`.
    ///
    /// ```
    /// let slo = tower_bulwark::metrics::Slo::default().p50(std::time::Duration::from_millis(20));
    /// # drop(slo);
    /// ```
    pub fn p50(mut self, bound: Duration) -> Self {
        self.p50 = bound;
        self
    }

    /// The 95th percentile must be below `bound`.
    ///
    /// ```
    /// let slo = tower_bulwark::metrics::Slo::default().p95(std::time::Duration::from_millis(100));
    /// # drop(slo);
    /// ```
    pub fn p95(mut self, bound: Duration) -> Self {
        self.p95 = bound;
        self
    }

    /// The 99th percentile must be below `bound`.
    ///
    /// ```
    /// let slo = tower_bulwark::metrics::Slo::default().p99(std::time::Duration::from_secs(1));
    /// # drop(slo);
    /// ```
    pub fn p99(mut self, bound: Duration) -> Self {
        self.p99 = bound;
        self
    }

    /// The share of server errors must be below `ratio` (0.001 is 0.1 %).
    ///
    /// ```
    /// let slo = tower_bulwark::metrics::Slo::default().error_rate(0.01);
    /// # drop(slo);
    /// ```
    pub fn error_rate(mut self, ratio: f64) -> Self {
        self.error_rate = ratio;
        self
    }

    /// The share of requests served must be at least `ratio` (0.999 is 99.9 %).
    ///
    /// ```
    /// let slo = tower_bulwark::metrics::Slo::default().availability(0.99);
    /// # drop(slo);
    /// ```
    pub fn availability(mut self, ratio: f64) -> Self {
        self.availability = ratio;
        self
    }

    /// Judges `snapshot` against every objective.
    ///
    /// ```
    /// use tower_bulwark::metrics::{Slo, Verdict};
    ///
    /// let layer = tower_bulwark::metrics::MetricsLayer::builder().build()?;
    /// let report = Slo::default().check(&layer.latency());
    /// assert!(report.results.iter().all(|r| r.verdict == Verdict::NoData));
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn check(&self, snapshot: &LatencySnapshot) -> SloReport {
        let none = snapshot.count == 0;
        let latency = |objective, bound: Duration, measured: Option<Duration>| {
            let measured = measured.filter(|_| !none).map(|d| d.as_secs_f64());
            ObjectiveResult {
                objective,
                target: bound.as_secs_f64(),
                measured,
                verdict: match measured {
                    None => Verdict::NoData,
                    Some(m) if m < bound.as_secs_f64() => Verdict::Pass,
                    Some(_) => Verdict::Fail,
                },
            }
        };
        let rate = |objective, target: f64, measured: f64, pass: bool| ObjectiveResult {
            objective,
            target,
            measured: (!none).then_some(measured),
            verdict: if none {
                Verdict::NoData
            } else if pass {
                Verdict::Pass
            } else {
                Verdict::Fail
            },
        };
        SloReport {
            window: snapshot.window,
            count: snapshot.count,
            results: vec![
                latency(Objective::P50, self.p50, snapshot.p50),
                latency(Objective::P95, self.p95, snapshot.p95),
                latency(Objective::P99, self.p99, snapshot.p99),
                rate(
                    Objective::ErrorRate,
                    self.error_rate,
                    snapshot.error_rate,
                    snapshot.error_rate < self.error_rate,
                ),
                rate(
                    Objective::Availability,
                    self.availability,
                    snapshot.availability,
                    snapshot.availability >= self.availability,
                ),
            ],
        }
    }
}
