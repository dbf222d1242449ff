//! Route names interned, bounded in number: each distinct template gets one entry (its label
//! and its sliding window), at most `max_routes` of them; later ones share the overflow
//! entry. So neither a router's templates nor a user function that returns raw paths can
//! grow the label set, or memory, without bound.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use super::labels::RouteLabel;
use super::window::{Window, WindowSettings};

/// The route label of requests no route matched.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// The route label of routes beyond `max_routes`.
pub const OVERFLOW_ROUTE: &str = "other";

/// One route's label and sliding window.
#[derive(Debug)]
pub(crate) struct Route {
    pub(crate) label: RouteLabel,
    pub(crate) window: Window,
}

#[derive(Debug)]
pub(crate) struct Routes {
    known: RwLock<HashMap<Box<str>, Arc<Route>>>,
    max: usize,
    unmatched: Arc<Route>,
    overflow: Arc<Route>,
    settings: WindowSettings,
}

impl Routes {
    pub(crate) fn new(max: usize, settings: WindowSettings) -> Self {
        let entry = |name: &str| {
            Arc::new(Route {
                label: RouteLabel(name.into()),
                window: Window::new(settings),
            })
        };
        Self {
            known: RwLock::new(HashMap::new()),
            max,
            unmatched: entry(UNMATCHED_ROUTE),
            overflow: entry(OVERFLOW_ROUTE),
            settings,
        }
    }

    /// The entry for `name` (none: the unmatched entry).
    pub(crate) fn get(&self, name: Option<&str>) -> Arc<Route> {
        let Some(name) = name else {
            return self.unmatched.clone();
        };
        if let Ok(known) = self.known.read() {
            if let Some(route) = known.get(name) {
                return route.clone();
            }
            if known.len() >= self.max {
                return self.overflow.clone();
            }
        }
        let Ok(mut known) = self.known.write() else {
            return self.overflow.clone();
        };
        if let Some(route) = known.get(name) {
            return route.clone();
        }
        if known.len() >= self.max {
            return self.overflow.clone();
        }
        let route = Arc::new(Route {
            label: RouteLabel(name.into()),
            window: Window::new(self.settings),
        });
        known.insert(name.into(), route.clone());
        route
    }

    /// The entry for `name` if it has one (reading never adds).
    pub(crate) fn find(&self, name: &str) -> Option<Arc<Route>> {
        match name {
            UNMATCHED_ROUTE => return Some(self.unmatched.clone()),
            OVERFLOW_ROUTE => return Some(self.overflow.clone()),
            _ => {}
        }
        self.known.read().ok()?.get(name).cloned()
    }

    /// Every entry (the unmatched and overflow ones too).
    pub(crate) fn all(&self) -> Vec<Arc<Route>> {
        let mut all: Vec<Arc<Route>> = self
            .known
            .read()
            .map(|known| known.values().cloned().collect())
            .unwrap_or_default();
        all.push(self.unmatched.clone());
        all.push(self.overflow.clone());
        all
    }

    pub(crate) fn len(&self) -> usize {
        self.known.read().map(|known| known.len()).unwrap_or(0)
    }
}
