//! Response compression: gzip and deflate (brotli and zstd with the `compression-br` and
//! `compression-zstd` features), negotiated by `Accept-Encoding` with its `q`-values, with the
//! guides' defaults, and entity tags that stay right.
//!
//! # What is compressed
//!
//! A response is compressed when the request accepts one of the offered encodings (the
//! highest `q` wins; ties go to zstd, then brotli, gzip, deflate) and none of these holds:
//!
//! - the request is gRPC (`application/grpc…`: gRPC compresses its own messages), or carries
//!   the opt-out header (default `x-no-compression`; `Accept-Encoding` is then removed from
//!   the request, so nothing behind this layer compresses either);
//! - the response has no body (1xx, `204`, `304`), is a range (`206`, `Content-Range`), is
//!   already encoded (`Content-Encoding`), says `Cache-Control: no-transform`, or its type is
//!   one of [`DEFAULT_SKIPPED_CONTENT_TYPES`] (images but SVG, audio, video, archives,
//!   gRPC, server-sent events) or one added with
//!   [`skip_content_type`](CompressionLayerBuilder::skip_content_type);
//! - its length is known (`Content-Length`, or the body's size hint) and below
//!   [`min_size`](CompressionLayerBuilder::min_size) (default 1024 bytes).
//!
//! A `HEAD` gets the headers its `GET` would (`Content-Encoding`, the derived tag), with its
//! empty body as it is. Every response gets `Vary: Accept-Encoding` (and the opt-out
//! header's name, which the answer depends on too), merged into its own `Vary`. A compressed
//! one loses `Content-Length` (the compressed length is known only at the end),
//! `Accept-Ranges` and content digests (`Content-Digest`, `Repr-Digest`, `Content-MD5`). A
//! streamed body is flushed whenever it pauses, so what it has sent so far reaches the
//! client; trailers pass after the compressed data. A client that weighs `identity` above
//! every offered coding gets the body as it is.
//!
//! # Entity tags
//!
//! A strong `ETag` promises the exact bytes, and compressed bytes are not the identity
//! body's. So a compressed response's strong tag gets the coding appended (`"abc"` becomes
//! `"abc-gzip"`): a strong tag of its own, right for `If-None-Match` *and* `If-Match`.
//! (Weakening it, as nginx does, would keep revalidation working but turn every write a
//! client makes with the tag of a compressed read into a `412`: `If-Match` compares
//! strongly.) A streamed body (no length known up front) is flushed when it pauses, which
//! depends on timing, so its derived tag is weak (`W/"abc-gzip"`). On the way in, the
//! suffix-less tag is added beside each suffixed one, so the service behind (the
//! [`cache`](crate::cache) layer, or a handler's own checks) finds its own tags: a
//! revalidation gets its `304`, carrying the derived tag again when the tag that matched
//! was one this layer added, and a conditional write goes through. The client's tags are
//! kept too (a service whose own tags end in `-gzip` still finds them). Weak tags of the
//! service pass unchanged; `If-Range` is never rewritten (a range is of the identity bytes,
//! which a compressed tag must not claim).
//!
//! **Order**: put this layer *outside* the cache layer, so the cache hashes the identity body
//! and this layer derives the per-encoding tag. The other way round, the cache sees a
//! compressed stream of unknown length and gives it no tag at all (never a wrong one; a test
//! shows it).
//!
//! # Cost
//!
//! The codecs are the flate2 (zlib-rs), zstd and brotli crates. A DEFLATE or zstd compressor
//! is reset and reused by the thread that finished with it (at most four idle per thread):
//! made fresh for every response, its ~270 KiB of tables are what the allocator hands back
//! to the kernel between responses, and a 2 KiB gzip response took ~40 page faults. Brotli
//! has no reset: its state is made per response. BENCHMARKS.md has the figures beside
//! tower-http's `CompressionLayer`.
//!
//! # Example
//!
//! ```
//! use axum::{routing::get, Router};
//! use tower::ServiceBuilder;
//! use tower_bulwark::{cache::CacheLayer, compression::CompressionLayer};
//!
//! let app: Router = Router::new()
//!     .route("/api/report", get(|| async { "{\"row\":1},".repeat(500) }))
//!     .layer(
//!         ServiceBuilder::new()
//!             .layer(CompressionLayer::builder().level(6).build()?) // outside ...
//!             .layer(CacheLayer::builder().build()?), // ... the cache layer
//!     );
//! # drop(app);
//! # Ok::<(), tower_bulwark::ConfigError>(())
//! ```

mod body;
mod builder;
mod config;
mod encoder;
mod etag;
mod future;
mod layer;
mod negotiate;
mod pool;
mod service;
mod skip;

pub use body::CompressionBody;
pub use builder::{
    CompressionLayerBuilder, DEFAULT_BROTLI_QUALITY, DEFAULT_DEFLATE_LEVEL, DEFAULT_MIN_SIZE,
    DEFAULT_OPT_OUT_HEADER, DEFAULT_ZSTD_LEVEL,
};
pub use future::ResponseFuture;
pub use layer::{CompressionLayer, CompressionStats};
pub use service::CompressionService;
pub use skip::DEFAULT_SKIPPED_CONTENT_TYPES;
