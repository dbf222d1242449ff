//! Without feature `redis` no breaker is linked to a fleet: these stand-ins have no values, so
//! a circuit's `Option<Tally>` and its configuration's `Option<Arc<FleetLink>>` are always
//! `None`, take no space, and every call on them compiles to nothing.

use std::sync::Arc;

use crate::circuit_breaker::circuit::Circuit;
use crate::circuit_breaker::keyed::Circuits;
use crate::error::ConfigError;

/// Nothing to start: no breaker is shared.
pub(crate) fn start_one(_circuit: &Arc<Circuit>) -> Result<(), ConfigError> {
    Ok(())
}

/// Nothing to start: no breaker is shared.
pub(crate) fn start_keyed(_circuits: &Arc<Circuits>) -> Result<(), ConfigError> {
    Ok(())
}

/// No fleet link can exist.
#[derive(Debug)]
pub(crate) enum FleetLink {}

/// No tally can exist.
#[derive(Debug)]
pub(crate) enum Tally {}

impl FleetLink {
    pub(crate) fn wake(&self) {
        match *self {}
    }

    pub(crate) fn may_probe_alone(&self, _now_ns: u64) -> bool {
        match *self {}
    }
}

impl Tally {
    pub(crate) fn for_link(link: &FleetLink) -> Self {
        match *link {}
    }

    pub(crate) fn outcome(&self, _failure: bool, _slow: bool) {
        match *self {}
    }

    pub(crate) fn probe(&self, _bad: bool) {
        match *self {}
    }

    pub(crate) fn tripped(&self) {
        match *self {}
    }

    pub(crate) fn want_to_probe(&self) {
        match *self {}
    }

    pub(crate) fn mark_due(&self) {
        match *self {}
    }

    pub(crate) fn is_told(&self) -> bool {
        match *self {}
    }
}
