//! HTTP caching, part one: a `Cache-Control` policy per layer (so per route), strong ETags
//! from the body, and conditional requests answered exactly per RFC 9110 §13 (feature
//! `cache`, on by default).
//!
//! * **Policy**: `max-age` (default 3600 s), `s-maxage`, `public` / `private`, `no-cache`,
//!   `no-store` (with `Expires: 0`), `must-revalidate`, `proxy-revalidate`, `immutable`,
//!   `no-transform`, `stale-while-revalidate`, `stale-if-error`; `Expires` from `max-age`;
//!   `Vary` merged into the handler's, never twice. A handler's own `Cache-Control` is kept
//!   unless [`override_cache_control`](CacheLayerBuilder::override_cache_control). Only
//!   [`DEFAULT_POLICY_STATUSES`] get the policy (configurable); only `GET` and `HEAD`.
//! * **ETags**: a `200` to `GET`/`HEAD` without an `ETag` of its own gets a strong one, the
//!   XXH3-128 digest of its body, when the body says it ends within
//!   [`max_body`](CacheLayerBuilder::max_body) (default 1 MiB); a stream or a longer body
//!   passes untouched and unbuffered. Weak tags on request. A handler's `ETag` and
//!   `Last-Modified` are used as they are.
//! * **Preconditions**, in the order of RFC 9110 §13.2.2: `If-Match` (strong comparison) →
//!   `If-Unmodified-Since` → `If-None-Match` (weak) → `If-Modified-Since` (`GET`/`HEAD`
//!   only) → `If-Range` (strong). A date is ignored when malformed or when its tag field is
//!   present; a tag list element that does not parse never matches. A read whose tag matches
//!   gets `304` (exactly `Cache-Control`, `Content-Location`, `Date`, `ETag`, `Expires`,
//!   `Vary`, no body); a failed precondition gets `412`; preconditions count only where the
//!   response would be a 2xx (§13.2.1).
//! * **Lost updates**: with [`current_etag`](CacheLayerBuilder::current_etag) or a
//!   [`ValidatorStore`], a `PUT`/`PATCH`/`DELETE` whose `If-Match` is stale gets `412` before
//!   its handler runs, and a matching conditional `GET` gets `304` without it. Without either,
//!   a write's preconditions are left to its handler: once a handler has changed the
//!   resource, a `2xx` is never turned into a `412` (§13.1.1).
//!
//! **Compression** (a later release) must see the ETag this layer gives: a strong tag of the
//! identity body must not go out unchanged on a compressed body. Until then, put
//! tower-http's `CompressionLayer` *inside* this layer (wrapped in
//! `MapResponseBodyLayer::new(ResponseBody::inner)`): its compressed bodies are streams of
//! unknown length, so they get no tag at all (never the identity body's), while uncompressed
//! ones keep theirs. Outside this layer it would send the identity tag on compressed bytes.
//!
//! ```
//! use std::time::Duration;
//! use axum::{routing::get, Router};
//! use http::{header, Request, StatusCode};
//! use tower::ServiceExt;
//! use tower_bulwark::cache::CacheLayer;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let app = Router::new()
//!     .route("/api/catalog", get(|| async { "[\"tea\",\"coffee\"]" }))
//!     .layer(CacheLayer::max_age(Duration::from_secs(60)).public().build()?);
//!
//! let first = app.clone().oneshot(Request::get("/api/catalog").body(axum::body::Body::empty())?).await?;
//! assert_eq!(first.headers()[header::CACHE_CONTROL], "public, max-age=60");
//! let etag = first.headers()[header::ETAG].clone();
//!
//! // The client asks again with the tag it holds: 304, no body.
//! let again = Request::get("/api/catalog")
//!     .header(header::IF_NONE_MATCH, etag)
//!     .body(axum::body::Body::empty())?;
//! let second = app.oneshot(again).await?;
//! assert_eq!(second.status(), StatusCode::NOT_MODIFIED);
//! # Ok(())
//! # }
//! ```

mod answer;
mod builder;
mod cache_control;
mod conditional;
mod config;
mod current;
mod future;
mod layer;
mod service;
mod store;
mod vary;

pub use crate::headers::etag::{EntityTag, InvalidEntityTag};
pub use builder::{CacheLayerBuilder, DEFAULT_MAX_BODY, DEFAULT_POLICY_STATUSES};
pub use cache_control::DEFAULT_MAX_AGE;
pub use current::CurrentEtag;
pub use future::ResponseFuture;
pub use layer::{CacheLayer, CacheStats};
pub use service::CacheService;
pub use store::{ValidatorStore, ValidatorStoreBuilder, DEFAULT_STORE_MAX_TTL};
