//! The label sets, each value from a bounded set: methods from the standard nine or `OTHER`,
//! routes from templates (bounded in number), status codes.

use std::sync::Arc;

use http::Method;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};

/// A method label: the standard methods, every other one as `OTHER` (a client can make up
/// methods; they must not grow the label set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum MethodLabel {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Connect,
    Options,
    Trace,
    Patch,
    Other,
}

impl MethodLabel {
    pub(crate) fn of(method: &Method) -> Self {
        match *method {
            Method::GET => Self::Get,
            Method::HEAD => Self::Head,
            Method::POST => Self::Post,
            Method::PUT => Self::Put,
            Method::DELETE => Self::Delete,
            Method::CONNECT => Self::Connect,
            Method::OPTIONS => Self::Options,
            Method::TRACE => Self::Trace,
            Method::PATCH => Self::Patch,
            _ => Self::Other,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Head => "HEAD",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Delete => "DELETE",
            Self::Connect => "CONNECT",
            Self::Options => "OPTIONS",
            Self::Trace => "TRACE",
            Self::Patch => "PATCH",
            Self::Other => "OTHER",
        }
    }
}

impl EncodeLabelValue for MethodLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

/// A route label: a template (`/users/{id}`), shared, never a raw path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct RouteLabel(pub(crate) Arc<str>);

impl EncodeLabelValue for RouteLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&&*self.0, encoder)
    }
}

/// `method`, `route`, `status_code`: the request families' labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct HttpLabels {
    pub(crate) method: MethodLabel,
    pub(crate) route: RouteLabel,
    pub(crate) status_code: u16,
}

/// `method`, `route`: the in-flight gauge's labels (no status yet).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct InFlightLabels {
    pub(crate) method: MethodLabel,
    pub(crate) route: RouteLabel,
}
