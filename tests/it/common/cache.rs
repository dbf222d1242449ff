//! The cache tests' resource: readers `GET` it, writers `PUT` it, every call is counted.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full};
use tower::{Service, ServiceExt};

use super::Body;

/// A resource readers `GET` and writers `PUT`; counts the calls that reach it.
#[derive(Clone, Default)]
pub struct Resource {
    pub body: Arc<Mutex<Bytes>>,
    calls: Arc<AtomicUsize>,
}

impl Resource {
    pub fn new(body: &'static str) -> Self {
        let resource = Self::default();
        *resource.body.lock().unwrap() = Bytes::from_static(body.as_bytes());
        resource
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    pub fn service(
        &self,
    ) -> impl Service<Request<Body>, Response = Response<Body>, Error = Infallible, Future: Send> + Clone
    {
        let resource = self.clone();
        tower::service_fn(move |req: Request<Body>| {
            let resource = resource.clone();
            async move {
                resource.calls.fetch_add(1, Ordering::SeqCst);
                let lang = req.headers().get("accept-language").cloned();
                if req.method() == http::Method::PUT {
                    let bytes = req.into_body().collect().await.unwrap().to_bytes();
                    *resource.body.lock().unwrap() = bytes;
                    return Ok(Response::new(Full::new(Bytes::from_static(b"saved"))));
                }
                let mut body = resource.body.lock().unwrap().to_vec();
                if let Some(lang) = lang {
                    body.extend_from_slice(lang.as_bytes());
                }
                Ok(Response::new(Full::new(Bytes::from(body))))
            }
        })
    }
}

/// `method /doc` with `headers` and `body`.
pub fn send(method: &str, headers: &[(&str, &str)], body: &'static str) -> Request<Body> {
    let mut req = Request::builder().method(method).uri("/doc");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req.body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

/// Sends `req` through `svc`: its status and headers.
pub async fn status(
    svc: &mut impl Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
    req: Request<Body>,
) -> (u16, HeaderMap) {
    let res = svc.ready().await.unwrap().call(req).await.unwrap();
    (res.status().as_u16(), res.headers().clone())
}
