//! What the cache layer costs, beside what users would otherwise write.
//!
//! Groups:
//! * `etag_hash/<size>`: hashing a body into an ETag, 1 KiB to 1 MiB: `xxh3_128` (ours,
//!   `EntityTag::of_body`, hex included), `md5` (the guides' choice, as they use it: digest,
//!   then hex) and `sha256` (what a "safe" choice costs). Throughput in bytes.
//! * `layer_2k_json`: one `GET` answered with a 2 KiB JSON `Full<Bytes>` by a no-op handler:
//!   * `bare`: the handler alone, the floor;
//!   * `tower_http_set_header`: tower-http's `SetResponseHeaderLayer` adding the same
//!     `Cache-Control` (a policy and nothing else);
//!   * `md5_string_compare`: the guides' middleware in Rust: read the body, MD5 it, set
//!     `ETag` and `Cache-Control`, compare `If-None-Match` as a string;
//!   * `ours_200`: our layer, defaults (policy, `Expires`, a strong ETag of the body);
//!   * `ours_304`: a matching `If-None-Match`, judged on the handler's response;
//!   * `ours_store_304`: the same, answered by the memory validator store before the handler;
//!   * `guide_304`: the guides' middleware answering the same request.
//!
//! Driven synchronously as the other benches (`drive`: one poll must complete).
//!
//! ```sh
//! cargo bench --bench cache
//! ```

mod common;

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::hint::black_box;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use common::{config, drive, json_2k, BATCH};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use http::header::{CACHE_CONTROL, ETAG, IF_NONE_MATCH};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body::Body as _;
use http_body_util::Full;
use md5::{Digest, Md5};
use tower::{Layer, Service};
use tower_bulwark::cache::{CacheLayer, EntityTag, ValidatorStore};

type Req = Request<()>;
type Res = Response<Full<Bytes>>;

fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2 + 2);
    out.push('"');
    for b in bytes {
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 0xf)] as char);
    }
    out.push('"');
    out
}

fn etag_hash(c: &mut Criterion) {
    let mut g = c.benchmark_group("etag_hash");
    for size in [1usize << 10, 16 << 10, 64 << 10, 1 << 20] {
        let body: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
        g.throughput(Throughput::Bytes(size as u64));
        let label = if size >= 1 << 20 {
            format!("{}MiB", size >> 20)
        } else {
            format!("{}KiB", size >> 10)
        };
        g.bench_with_input(BenchmarkId::new("xxh3_128", &label), &body, |b, body| {
            b.iter(|| black_box(EntityTag::of_body(black_box(body), false)))
        });
        g.bench_with_input(BenchmarkId::new("md5", &label), &body, |b, body| {
            b.iter(|| black_box(hex(&Md5::digest(black_box(body)))))
        });
        g.bench_with_input(BenchmarkId::new("sha256", &label), &body, |b, body| {
            b.iter(|| black_box(hex(&sha2::Sha256::digest(black_box(body)))))
        });
    }
    g.finish();
}

/// The guides' ETag middleware, written for tower: MD5 of the whole body, `If-None-Match`
/// compared as a string.
#[derive(Clone)]
struct GuideEtag<S>(S);

impl<S> Service<Req> for GuideEtag<S>
where
    S: Service<Req, Response = Res, Error = Infallible, Future = Ready<Result<Res, Infallible>>>,
{
    type Response = Res;
    type Error = Infallible;
    type Future = Ready<Result<Res, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let asked = req.headers().get(IF_NONE_MATCH).cloned();
        let Ok(res) = self.0.call(req).into_inner();
        let (mut parts, mut body) = res.into_parts();
        // A `Full` holds its one frame: read it as the guides' `res.body` is read.
        let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
        let data = match std::pin::Pin::new(&mut body).poll_frame(&mut cx) {
            Poll::Ready(Some(Ok(frame))) => frame.into_data().unwrap_or_default(),
            _ => Bytes::new(),
        };
        let tag = hex(&Md5::digest(&data));
        parts
            .headers
            .insert(CACHE_CONTROL, HeaderValue::from_static("max-age=3600"));
        if asked
            .as_ref()
            .is_some_and(|a| a.as_bytes() == tag.as_bytes())
        {
            parts.status = StatusCode::NOT_MODIFIED;
            return ready(Ok(Response::from_parts(parts, Full::default())));
        }
        parts
            .headers
            .insert(ETAG, HeaderValue::from_str(&tag).unwrap());
        ready(Ok(Response::from_parts(parts, Full::new(data))))
    }
}

fn layer_2k_json(c: &mut Criterion) {
    let body = json_2k();
    let handler = {
        let body = body.clone();
        tower::service_fn(move |_req: Req| {
            ready(Ok::<_, Infallible>(Response::new(Full::new(body.clone()))))
        })
    };
    let plain = || Request::get("/api/items").body(()).unwrap();
    let ours_tag = EntityTag::of_body(&body, false);
    let guide_tag = hex(&Md5::digest(&body));
    let conditional = move || {
        Request::get("/api/items")
            .header(IF_NONE_MATCH, ours_tag.header_value().clone())
            .body(())
            .unwrap()
    };
    let guide_conditional = move || {
        Request::get("/api/items")
            .header(IF_NONE_MATCH, guide_tag.as_str())
            .body(())
            .unwrap()
    };

    let mut g = c.benchmark_group("layer_2k_json");
    let mut bare = handler.clone();
    g.bench_function("bare", |b| {
        b.iter_batched(plain, |req| black_box(drive(&mut bare, req)).ok(), BATCH)
    });

    let mut set_header = tower_http::set_header::SetResponseHeaderLayer::overriding(
        CACHE_CONTROL,
        HeaderValue::from_static("max-age=3600"),
    )
    .layer(handler.clone());
    g.bench_function("tower_http_set_header", |b| {
        b.iter_batched(
            plain,
            |req| black_box(drive(&mut set_header, req)).ok(),
            BATCH,
        )
    });

    let mut guide = GuideEtag(handler.clone());
    g.bench_function("md5_string_compare", |b| {
        b.iter_batched(plain, |req| black_box(drive(&mut guide, req)).ok(), BATCH)
    });

    let layer = CacheLayer::builder().build().unwrap();
    let mut ours = layer.layer(handler.clone());
    assert!(drive(&mut ours, plain())
        .unwrap()
        .headers()
        .contains_key(ETAG));
    g.bench_function("ours_200", |b| {
        b.iter_batched(plain, |req| black_box(drive(&mut ours, req)).ok(), BATCH)
    });
    assert_eq!(drive(&mut ours, conditional()).unwrap().status(), 304);
    g.bench_function("ours_304", |b| {
        b.iter_batched(
            conditional.clone(),
            |req| black_box(drive(&mut ours, req)).ok(),
            BATCH,
        )
    });

    let store = ValidatorStore::builder().build().unwrap();
    let stored = CacheLayer::builder()
        .validator_store(store)
        .build()
        .unwrap();
    let mut ours_store = stored.layer(handler.clone());
    drive(&mut ours_store, plain()).unwrap();
    assert_eq!(drive(&mut ours_store, conditional()).unwrap().status(), 304);
    assert_eq!(stored.stats().answered_before_handler, 1);
    g.bench_function("ours_store_304", |b| {
        b.iter_batched(
            conditional.clone(),
            |req| black_box(drive(&mut ours_store, req)).ok(),
            BATCH,
        )
    });

    assert_eq!(
        drive(&mut guide, guide_conditional()).unwrap().status(),
        304
    );
    g.bench_function("guide_304", |b| {
        b.iter_batched(
            guide_conditional.clone(),
            |req| black_box(drive(&mut guide, req)).ok(),
            BATCH,
        )
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = config(Duration::from_secs(3), 50);
    targets = etag_hash, layer_2k_json
}
criterion_main!(benches);
