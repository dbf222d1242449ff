//! `tower::retry`'s side of the retry comparisons, written once for the criterion bench
//! (`benches/retry.rs`) and the end-to-end server (`examples/bench_server.rs`, through
//! `#[path]`): 3 retries of 429/502/503/504 or an error, within a `TpsBudget` of our budget's
//! defaults (10 s, 10 per second, 20 %); the request is copied before each attempt (method,
//! URI, version, headers, body: everything but the extensions).

use std::future::{ready, Ready};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use tower::retry::budget::{Budget, TpsBudget};

/// A copy of `req`, as a retry policy makes one: everything but the extensions.
pub fn copy(req: &Request<Full<Bytes>>) -> Request<Full<Bytes>> {
    let mut copy = Request::new(req.body().clone());
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    copy
}

/// The policy, with its budget and attempts left.
#[derive(Clone)]
pub struct TowerPolicy {
    budget: Arc<TpsBudget>,
    retries_left: usize,
}

impl TowerPolicy {
    /// 3 retries, our budget's defaults.
    pub fn new() -> Self {
        Self {
            budget: Arc::new(TpsBudget::new(Duration::from_secs(10), 10, 0.2)),
            retries_left: 3,
        }
    }
}

impl<E> tower::retry::Policy<Request<Full<Bytes>>, Response<Full<Bytes>>, E> for TowerPolicy {
    type Future = Ready<()>;

    fn retry(
        &mut self,
        _req: &mut Request<Full<Bytes>>,
        result: &mut Result<Response<Full<Bytes>>, E>,
    ) -> Option<Self::Future> {
        let failed = result.as_ref().map_or(true, |response| {
            matches!(response.status().as_u16(), 429 | 502 | 503 | 504)
        });
        if !failed {
            self.budget.deposit();
            return None;
        }
        if self.retries_left == 0 || !self.budget.withdraw() {
            return None;
        }
        self.retries_left -= 1;
        Some(ready(()))
    }

    fn clone_request(&mut self, req: &Request<Full<Bytes>>) -> Option<Request<Full<Bytes>>> {
        Some(copy(req))
    }
}
