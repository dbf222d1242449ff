//! What the compression layer costs, beside tower-http's `CompressionLayer` used directly.
//!
//! Groups (one `GET` answered with a 2 KiB JSON `Full<Bytes>` by a no-op handler, the body
//! read to its end, as a server writes it):
//! * `gzip_2k_json`: the request accepts gzip; level 6 in both:
//!   * `tower_http`: tower-http 0.7, a fresh compressor per response;
//!   * `ours`: this crate's layer, defaults (a compressor reused by the thread).
//! * `identity_2k_json`: no `Accept-Encoding`: what each layer costs when it compresses
//!   nothing (`bare` is the handler alone).
//!
//! Both layers run on the same DEFLATE code here: cargo unifies flate2's features, so this
//! crate's `zlib-rs` reaches tower-http too. tower-http as its users get it, on miniz_oxide, and
//! the allocator's share (page faults) are in the end-to-end table (BENCHMARKS.md).
//!
//! ```sh
//! cargo bench --bench compression
//! ```

mod common;

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::hint::black_box;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use common::{config, drive_ok, json_2k, BATCH};
use criterion::{criterion_group, criterion_main, Criterion};
use http::header::ACCEPT_ENCODING;
use http::{Request, Response};
use http_body::Body;
use http_body_util::Full;
use tower::{Layer, Service};
use tower_bulwark::compression::CompressionLayer;

type Req = Request<()>;

/// Reads a body to its end with a no-op waker (every body here is ready at once); the bytes.
fn drain<B: Body<Data = Bytes>>(body: B) -> usize
where
    B::Error: std::fmt::Debug,
{
    let mut body = std::pin::pin!(body);
    let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
    let mut len = 0;
    for _ in 0..64 {
        match Pin::as_mut(&mut body).poll_frame(&mut cx) {
            Poll::Ready(None) => return len,
            Poll::Ready(Some(frame)) => {
                if let Ok(data) = frame.unwrap().into_data() {
                    len += data.len();
                }
            }
            Poll::Pending => {}
        }
    }
    panic!("the body did not end");
}

/// Times whole responses of `svc` (call, then the body read to its end).
fn bench<S, B>(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    svc: &mut S,
    next: fn() -> Req,
) where
    S: Service<Req, Response = Response<B>>,
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    g.bench_function(name, |b| {
        b.iter_batched(
            next,
            |req| black_box(drain(drive_ok(svc, req).into_body())),
            BATCH,
        )
    });
}

fn compression(c: &mut Criterion) {
    let body = json_2k();
    let handler = tower::service_fn(
        move |_req: Req| -> Ready<Result<Response<Full<Bytes>>, Infallible>> {
            ready(Ok(Response::new(Full::new(body.clone()))))
        },
    );
    let gzip = || {
        Request::get("/api/items")
            .header(ACCEPT_ENCODING, "gzip")
            .body(())
            .unwrap()
    };
    let plain = || Request::get("/api/items").body(()).unwrap();
    let mut tower_http = tower_http::compression::CompressionLayer::new()
        .quality(tower_http::CompressionLevel::Precise(6))
        .layer(handler.clone());
    let mut ours = CompressionLayer::new().layer(handler.clone());
    // Both compress, to about the same size.
    let theirs_len = drain(drive_ok(&mut tower_http, gzip()).into_body());
    let ours_len = drain(drive_ok(&mut ours, gzip()).into_body());
    assert!(
        theirs_len < 800 && ours_len < 800,
        "{theirs_len} {ours_len}"
    );

    let mut g = c.benchmark_group("gzip_2k_json");
    bench(&mut g, "tower_http", &mut tower_http, gzip);
    bench(&mut g, "ours", &mut ours, gzip);
    g.finish();

    let mut g = c.benchmark_group("identity_2k_json");
    let mut bare = handler.clone();
    bench(&mut g, "bare", &mut bare, plain);
    bench(&mut g, "tower_http", &mut tower_http, plain);
    bench(&mut g, "ours", &mut ours, plain);
    g.finish();
}

criterion_group! {
    name = benches;
    config = config(Duration::from_secs(3), 50);
    targets = compression
}
criterion_main!(benches);
