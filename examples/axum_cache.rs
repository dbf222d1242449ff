//! The cache layer on an axum router, driven in-process: a cached read answered `304` from the
//! validator store without running its handler, and a write guarded by `If-Match`.
//!
//! ```text
//! cargo run --example axum_cache
//! ```
//!
//! Prints each request and the answer's status and headers. No server, no port: the router is
//! called with `tower::ServiceExt::oneshot`, as a test would.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::body::Body;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http::{header, Request, StatusCode};
use tower::ServiceExt;
use tower_bulwark::cache::{CacheLayer, ValidatorStore};

async fn show(
    app: &Router,
    req: Request<Body>,
) -> Result<http::HeaderMap, Box<dyn std::error::Error>> {
    let line = format!("{} {}", req.method(), req.uri());
    let asked: Vec<String> = req
        .headers()
        .iter()
        .map(|(n, v)| format!("{n}: {}", v.to_str().unwrap_or("?")))
        .collect();
    let res = app.clone().oneshot(req).await?;
    println!("{line} {asked:?}\n  -> {}", res.status());
    for (name, value) in res.headers() {
        println!("     {name}: {}", value.to_str().unwrap_or("?"));
    }
    Ok(res.headers().clone())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let note = Arc::new(RwLock::new(Bytes::from_static(b"{\"text\":\"first\"}")));
    let runs = Arc::new(AtomicU64::new(0));
    let (read, write, counted) = (note.clone(), note, runs.clone());
    let store = ValidatorStore::builder().build()?;
    let layer = CacheLayer::max_age(Duration::from_secs(60))
        .validator_store(store)
        .build()?;
    let app = Router::new().route(
        "/note",
        get(move || {
            counted.fetch_add(1, Ordering::Relaxed);
            let body = read.read().map(|b| b.clone()).unwrap_or_default();
            async move { ([(header::CONTENT_TYPE, "application/json")], body) }
        })
        .put(move |body: Bytes| {
            if let Ok(mut note) = write.write() {
                *note = body;
            }
            async { StatusCode::NO_CONTENT }
        })
        .layer(layer),
    );

    let headers = show(&app, Request::get("/note").body(Body::empty())?).await?;
    let tag = headers[header::ETAG].clone();
    let again = Request::get("/note").header(header::IF_NONE_MATCH, tag.clone());
    show(&app, again.body(Body::empty())?).await?;
    println!(
        "  (the GET handler ran {} time(s): the 304 came from the store)\n",
        runs.load(Ordering::Relaxed)
    );

    let put = Request::put("/note").header(header::IF_MATCH, tag.clone());
    show(&app, put.body(Body::from("{\"text\":\"second\"}"))?).await?;
    let stale = Request::put("/note").header(header::IF_MATCH, tag);
    show(&app, stale.body(Body::from("{\"text\":\"lost update\"}"))?).await?;
    let now = show(&app, Request::get("/note").body(Body::empty())?).await?;
    println!(
        "  (the stale write was refused with 412 before its handler ran: the store knew the note had changed; its tag is now {:?})",
        now[header::ETAG]
    );
    Ok(())
}
