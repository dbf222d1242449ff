//! What a built metrics layer holds, shared by its services and the futures of its requests.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

use super::labels::{HttpLabels, InFlightLabels, MethodLabel};
use super::routes::{Route, Routes};
use super::window::{Ended, Window};
use crate::clock::Clock;
use crate::response::{BodyEnd, Outcome};

/// A user's route function: the template a request's route label is.
pub(crate) type RouteFn =
    Arc<dyn for<'a> Fn(&'a http::request::Parts) -> Option<Cow<'a, str>> + Send + Sync>;

/// Makes each label set's histogram with the layer's buckets.
#[derive(Debug, Clone)]
pub(crate) struct Buckets(pub(crate) Arc<[f64]>);

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(self.0.iter().copied())
    }
}

pub(crate) struct Shared {
    pub(crate) duration: Family<HttpLabels, Histogram, Buckets>,
    pub(crate) requests: Family<HttpLabels, Counter>,
    pub(crate) in_flight: Family<InFlightLabels, Gauge>,
    pub(crate) dropped: Family<HttpLabels, Counter>,
    pub(crate) routes: Routes,
    pub(crate) overall: Window,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) route_of: Option<RouteFn>,
    pub(crate) registry: super::MetricsRegistry,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("routes", &self.routes.len())
            .finish_non_exhaustive()
    }
}

/// What a gRPC response's headers said: the outcome of a `grpc-status` among them
/// (trailers-only), or none (the status is to come in the trailers).
#[derive(Debug, Clone, Copy)]
pub(crate) struct GrpcHead {
    pub(crate) outcome: Option<Outcome>,
}

/// A request on its way: what it is counted under, since when, and its place in the
/// in-flight gauge (given back however the request ends).
pub(crate) struct InFlight {
    shared: Arc<Shared>,
    method: MethodLabel,
    route: Arc<Route>,
    gauge: Gauge,
    start: Duration,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

impl InFlight {
    pub(crate) fn start(shared: Arc<Shared>, method: MethodLabel, route: Arc<Route>) -> Self {
        let gauge = shared.in_flight.get_or_create_owned(&InFlightLabels {
            method,
            route: route.label.clone(),
        });
        gauge.inc();
        let start = shared.clock.now();
        Self {
            shared,
            method,
            route,
            gauge,
            start,
        }
    }

    /// Records the request: its response had `status` (`grpc`: the outcome its headers gave,
    /// for a gRPC response), and its body ended so.
    pub(crate) fn finish(self, status: StatusCode, grpc: Option<GrpcHead>, end: BodyEnd<'_>) {
        let shared = &self.shared;
        let now = shared.clock.now();
        let latency = now.saturating_sub(self.start);
        // The one classifier's answer, as the breaker reads it: a gRPC status in the
        // trailers, else in the headers; a gRPC body that ends with no status at all is what
        // clients report as a failure.
        let outcome = match (end, grpc) {
            (BodyEnd::Failed, _) => Outcome::Failure,
            (BodyEnd::Trailers(trailers), _) => Outcome::of_response(status, trailers),
            (
                _,
                Some(GrpcHead {
                    outcome: Some(outcome),
                }),
            ) => outcome,
            (BodyEnd::Finished, Some(GrpcHead { outcome: None })) => Outcome::Failure,
            _ => Outcome::of_status(status),
        };
        // A server error or a refusal counts as such even if the client then went away.
        let ended = match outcome {
            Outcome::Failure => Ended::Failed,
            _ if status == StatusCode::TOO_MANY_REQUESTS => Ended::Refused,
            _ if matches!(end, BodyEnd::Dropped) => Ended::Dropped,
            _ => Ended::Served,
        };
        let dropped = matches!(end, BodyEnd::Dropped);
        let labels = HttpLabels {
            method: self.method,
            route: self.route.label.clone(),
            status_code: status.as_u16(),
        };
        shared
            .duration
            .get_or_create(&labels)
            .observe(latency.as_secs_f64());
        shared.requests.get_or_create(&labels).inc();
        if dropped {
            shared.dropped.get_or_create(&labels).inc();
        }
        self.route.window.record(now, latency, ended);
        shared.overall.record(now, latency, ended);
    }
}
