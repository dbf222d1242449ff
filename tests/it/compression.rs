//! The compression layer over real bodies: each encoding read back by its standard decoder,
//! the rules for what is compressed, `Vary`, entity tags with and without the cache layer,
//! streams, trailers and malformed headers.

use std::convert::Infallible;
use std::io::Read;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, Full};
use tower::{service_fn, Layer, Service, ServiceExt};
use tower_bulwark::cache::{CacheLayer, EntityTag};
use tower_bulwark::compression::{CompressionLayer, DEFAULT_SKIPPED_CONTENT_TYPES};

use crate::common::cache::{send, Resource};
use crate::common::{get_with, Body};

/// A JSON array of `len` bytes (compressible, as API bodies are).
fn json(len: usize) -> Bytes {
    let mut body = String::from("[");
    let mut i = 0;
    while body.len() < len {
        body.push_str(&format!(
            "{{\"id\":{i},\"sku\":\"item-{i}\",\"in_stock\":true}},"
        ));
        i += 1;
    }
    body.truncate(len);
    Bytes::from(body)
}

/// A handler answering `body` with the given response headers; it records the request's
/// `Accept-Encoding` in `x-seen-accept-encoding`.
fn handler(
    body: Bytes,
    headers: &'static [(&'static str, &'static str)],
) -> impl Service<Request<Body>, Response = Response<Full<Bytes>>, Error = Infallible, Future: Send>
       + Clone {
    service_fn(move |req: Request<Body>| {
        let body = body.clone();
        async move {
            let mut res = Response::new(Full::new(body));
            for (name, value) in headers {
                res.headers_mut().append(*name, value.parse().unwrap());
            }
            if let Some(seen) = req.headers().get("accept-encoding") {
                res.headers_mut()
                    .insert("x-seen-accept-encoding", seen.clone());
            }
            Ok(res)
        }
    })
}

async fn fetch<S, B>(svc: &S, req: Request<Body>) -> (http::response::Parts, Bytes)
where
    S: Service<Request<Body>, Response = Response<B>, Error = Infallible> + Clone,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let res = svc.clone().oneshot(req).await.unwrap();
    let (parts, body) = res.into_parts();
    (parts, body.collect().await.unwrap().to_bytes())
}

fn encoding(parts: &http::response::Parts) -> Option<&str> {
    parts
        .headers
        .get("content-encoding")
        .map(|v| v.to_str().unwrap())
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut plain)
        .unwrap();
    plain
}

#[tokio::test]
async fn each_encoding_reads_back_with_its_standard_decoder() {
    let body = json(20_000);
    let svc = CompressionLayer::new().layer(handler(
        body.clone(),
        &[("content-type", "application/json")],
    ));

    let (parts, gz) = fetch(&svc, get_with("/", &[("accept-encoding", "gzip")])).await;
    assert_eq!(encoding(&parts), Some("gzip"));
    assert_eq!(parts.headers.get("content-length"), None);
    assert_eq!(gunzip(&gz), body);
    assert!(gz.len() < body.len() / 4, "{} of {}", gz.len(), body.len());

    let (parts, zlib) = fetch(&svc, get_with("/", &[("accept-encoding", "deflate")])).await;
    assert_eq!(encoding(&parts), Some("deflate"));
    let mut plain = Vec::new();
    flate2::read::ZlibDecoder::new(&zlib[..])
        .read_to_end(&mut plain)
        .unwrap();
    assert_eq!(plain, body);

    #[cfg(feature = "compression-br")]
    {
        let (parts, br) = fetch(&svc, get_with("/", &[("accept-encoding", "br")])).await;
        assert_eq!(encoding(&parts), Some("br"));
        let mut plain = Vec::new();
        brotli::Decompressor::new(&br[..], 4096)
            .read_to_end(&mut plain)
            .unwrap();
        assert_eq!(plain, body);
    }
    #[cfg(feature = "compression-zstd")]
    {
        let (parts, z) = fetch(&svc, get_with("/", &[("accept-encoding", "zstd")])).await;
        assert_eq!(encoding(&parts), Some("zstd"));
        assert_eq!(zstd::stream::decode_all(&z[..]).unwrap(), body);
    }

    // q-values: the client's preference, then the layer's.
    let (parts, _) = fetch(
        &svc,
        get_with("/", &[("accept-encoding", "gzip;q=0.5, deflate;q=0.9")]),
    )
    .await;
    assert_eq!(encoding(&parts), Some("deflate"));
    let (parts, plain) = fetch(&svc, get_with("/", &[("accept-encoding", "gzip;q=0")])).await;
    assert_eq!(encoding(&parts), None);
    assert_eq!(plain, body);
    let (parts, plain) = fetch(&svc, get_with("/", &[])).await;
    assert_eq!(encoding(&parts), None);
    assert_eq!(plain, body);
}

#[tokio::test]
async fn bodies_below_the_threshold_go_as_they_are() {
    let layer = CompressionLayer::new();
    let gzip = [("accept-encoding", "gzip")];
    let small = layer.layer(handler(json(1023), &[]));
    let (parts, plain) = fetch(&small, get_with("/", &gzip)).await;
    assert_eq!(encoding(&parts), None);
    assert_eq!(plain.len(), 1023);
    assert_eq!(parts.headers["vary"], "accept-encoding, x-no-compression");
    let at = layer.layer(handler(json(1024), &[]));
    let (parts, gz) = fetch(&at, get_with("/", &gzip)).await;
    assert_eq!(encoding(&parts), Some("gzip"));
    assert_eq!(gunzip(&gz).len(), 1024);
    // A `Content-Length` says the size when the body does not.
    let declared = layer.layer(handler(json(5000), &[("content-length", "100")]));
    let (parts, _) = fetch(&declared, get_with("/", &gzip)).await;
    assert_eq!(encoding(&parts), None);
    let stats = layer.stats();
    assert_eq!((stats.compressed, stats.passed), (1, 2));
    assert_eq!(stats.bytes_in, 1024);
    assert_eq!(stats.bytes_out, gz.len() as u64);
}

#[tokio::test]
async fn the_opt_out_header_leaves_the_body_and_strips_accept_encoding() {
    let svc = CompressionLayer::new().layer(handler(json(4000), &[]));
    let (parts, plain) = fetch(
        &svc,
        get_with(
            "/",
            &[("accept-encoding", "gzip"), ("x-no-compression", "1")],
        ),
    )
    .await;
    assert_eq!(encoding(&parts), None);
    assert_eq!(plain, json(4000));
    // Nothing behind the layer saw that the client accepts gzip.
    assert_eq!(parts.headers.get("x-seen-accept-encoding"), None);
    let (parts, _) = fetch(&svc, get_with("/", &[("accept-encoding", "gzip")])).await;
    assert_eq!(parts.headers["x-seen-accept-encoding"], "gzip");
    assert_eq!(encoding(&parts), Some("gzip"));

    let custom = CompressionLayer::builder()
        .opt_out_header("x-raw")
        .build()
        .unwrap()
        .layer(handler(json(4000), &[]));
    let (parts, _) = fetch(
        &custom,
        get_with("/", &[("accept-encoding", "gzip"), ("x-raw", "")]),
    )
    .await;
    assert_eq!(encoding(&parts), None);
}

#[tokio::test]
async fn responses_that_must_not_be_compressed_are_not() {
    let gzip = [("accept-encoding", "gzip")];
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("cache-control", "public, No-Transform")], "no-transform"),
        (&[("content-type", "image/png")], "an image"),
        (&[("content-type", "IMAGE/JPEG")], "an image, any case"),
        (&[("content-type", "video/mp4")], "a video"),
        (&[("content-type", "application/zip")], "an archive"),
        (&[("content-type", "font/woff2")], "a compressed font"),
        (
            &[("content-type", "text/event-stream")],
            "server-sent events",
        ),
        (
            &[("content-type", "application/grpc+proto")],
            "a gRPC response",
        ),
        (&[("content-encoding", "br")], "already encoded"),
        (&[("content-range", "bytes 0-99/5000")], "a range"),
    ];
    for (headers, why) in cases {
        let headers: &'static [(&'static str, &'static str)] =
            Box::leak(headers.to_vec().into_boxed_slice());
        let svc = CompressionLayer::new().layer(handler(json(4000), headers));
        let (parts, body) = fetch(&svc, get_with("/", &gzip)).await;
        let want = headers
            .iter()
            .find(|(n, _)| *n == "content-encoding")
            .map(|(_, v)| *v);
        assert_eq!(encoding(&parts), want, "{why}");
        assert_eq!(body, json(4000), "{why}");
    }
    assert!(DEFAULT_SKIPPED_CONTENT_TYPES.contains(&"image/"));

    // SVG is text: compressed.
    let svg =
        CompressionLayer::new().layer(handler(json(4000), &[("content-type", "image/svg+xml")]));
    assert_eq!(
        encoding(&fetch(&svg, get_with("/", &gzip)).await.0),
        Some("gzip")
    );
    // A type the user adds.
    let ndjson = CompressionLayer::builder()
        .skip_content_type("application/x-ndjson")
        .build()
        .unwrap()
        .layer(handler(
            json(4000),
            &[("content-type", "application/x-ndjson; charset=utf-8")],
        ));
    assert_eq!(
        encoding(&fetch(&ndjson, get_with("/", &gzip)).await.0),
        None
    );

    // gRPC requests, and statuses without a body.
    let svc = CompressionLayer::new().layer(handler(json(4000), &[]));
    let grpc = get_with(
        "/",
        &[
            ("accept-encoding", "gzip"),
            ("content-type", "application/grpc"),
        ],
    );
    assert_eq!(encoding(&fetch(&svc, grpc).await.0), None);
    for status in [204, 304, 206] {
        let svc =
            CompressionLayer::new().layer(service_fn(move |_req: Request<Body>| async move {
                let mut res = Response::new(Full::new(json(4000)));
                *res.status_mut() = StatusCode::from_u16(status).unwrap();
                Ok::<_, Infallible>(res)
            }));
        assert_eq!(
            encoding(&fetch(&svc, get_with("/", &gzip)).await.0),
            None,
            "{status}"
        );
    }
}

#[tokio::test]
async fn vary_is_merged_on_every_response() {
    let gzip = [("accept-encoding", "gzip")];
    let with_vary = CompressionLayer::new().layer(handler(json(4000), &[("vary", "Origin")]));
    let (parts, _) = fetch(&with_vary, get_with("/", &gzip)).await;
    assert_eq!(parts.headers.get_all("vary").iter().count(), 1);
    assert_eq!(
        parts.headers["vary"],
        "origin, accept-encoding, x-no-compression"
    );
    let (parts, _) = fetch(&with_vary, get_with("/", &[])).await;
    assert_eq!(
        parts.headers["vary"],
        "origin, accept-encoding, x-no-compression"
    );
    let already =
        CompressionLayer::new().layer(handler(json(4000), &[("vary", "Accept-Encoding")]));
    let (parts, _) = fetch(&already, get_with("/", &gzip)).await;
    assert_eq!(
        parts.headers["vary"], "accept-encoding, x-no-compression",
        "already there: not named twice"
    );
    let star = CompressionLayer::new().layer(handler(json(4000), &[("vary", "*")]));
    let (parts, _) = fetch(&star, get_with("/", &gzip)).await;
    assert_eq!(parts.headers["vary"], "*");
}

#[tokio::test]
async fn a_strong_tag_is_derived_per_encoding_and_revalidates_through_both_layers() {
    let body: &'static str = Box::leak("{\"item\":\"tea\"},".repeat(300).into_boxed_str());
    let resource = Resource::new(body);
    let identity_tag = EntityTag::of_body(body.as_bytes(), false).to_string();
    let gzip_tag = format!("\"{}-gzip\"", &identity_tag[1..identity_tag.len() - 1]);
    // A validator store, so that the cache layer judges writes before their handler.
    let store = tower_bulwark::cache::ValidatorStore::builder()
        .build()
        .unwrap();
    let cache = CacheLayer::max_age(std::time::Duration::from_secs(60))
        .validator_store(store)
        .build()
        .unwrap();
    let svc = CompressionLayer::new().layer(cache.layer(resource.service()));

    // The compressed representation has a strong tag of its own; the identity keeps its tag.
    let (parts, gz) = fetch(&svc, send("GET", &[("accept-encoding", "gzip")], "")).await;
    assert_eq!(encoding(&parts), Some("gzip"));
    assert_eq!(parts.headers["etag"], gzip_tag.as_str());
    assert_eq!(gunzip(&gz), body.as_bytes());
    let (parts, _) = fetch(&svc, send("GET", &[], "")).await;
    assert_eq!(parts.headers["etag"], identity_tag.as_str());

    // Revalidating the gzip copy: 304, with the gzip tag and Vary.
    let (parts, empty) = fetch(
        &svc,
        send(
            "GET",
            &[("accept-encoding", "gzip"), ("if-none-match", &gzip_tag)],
            "",
        ),
    )
    .await;
    assert_eq!(parts.status, 304);
    assert_eq!(parts.headers["etag"], gzip_tag.as_str());
    assert_eq!(parts.headers["vary"], "accept-encoding, x-no-compression");
    assert!(empty.is_empty());
    // The gzip tag does not match an identity answer (another representation) ...
    let (parts, _) = fetch(&svc, send("GET", &[("if-none-match", &gzip_tag)], "")).await;
    assert_eq!(parts.status, 200);
    // ... nor a deflate one.
    let (parts, _) = fetch(
        &svc,
        send(
            "GET",
            &[("accept-encoding", "deflate"), ("if-none-match", &gzip_tag)],
            "",
        ),
    )
    .await;
    assert_eq!(parts.status, 200);
    assert_eq!(encoding(&parts), Some("deflate"));
    // The identity tag still revalidates the identity copy.
    let (parts, _) = fetch(&svc, send("GET", &[("if-none-match", &identity_tag)], "")).await;
    assert_eq!(parts.status, 304);
    assert_eq!(parts.headers["etag"], identity_tag.as_str());

    // A write with the tag of a compressed read goes through (If-Match compares strongly) ...
    let (parts, _) = fetch(&svc, send("PUT", &[("if-match", &gzip_tag)], "v2")).await;
    assert_eq!(parts.status, 200);
    // ... and that tag is now stale.
    let (parts, _) = fetch(&svc, send("PUT", &[("if-match", &gzip_tag)], "v3")).await;
    assert_eq!(parts.status, 412);
}

#[tokio::test]
async fn weak_tags_pass_unchanged_and_if_range_is_not_rewritten() {
    let svc = CompressionLayer::new().layer(handler(json(4000), &[("etag", "W/\"v1\"")]));
    let (parts, _) = fetch(&svc, get_with("/", &[("accept-encoding", "gzip")])).await;
    assert_eq!(encoding(&parts), Some("gzip"));
    assert_eq!(parts.headers["etag"], "W/\"v1\"");

    let seen = service_fn(|req: Request<Body>| async move {
        let mut res = Response::new(Full::new(Bytes::new()));
        for name in ["if-range", "if-none-match"] {
            if let Some(v) = req.headers().get(name) {
                res.headers_mut().insert(
                    http::HeaderName::from_bytes(format!("x-seen-{name}").as_bytes()).unwrap(),
                    v.clone(),
                );
            }
        }
        Ok::<_, Infallible>(res)
    });
    let svc = CompressionLayer::new().layer(seen);
    let (parts, _) = fetch(
        &svc,
        get_with(
            "/",
            &[
                ("accept-encoding", "gzip"),
                ("if-range", "\"v1-gzip\""),
                ("if-none-match", "W/\"v1-gzip\", \"v2-gzip\""),
            ],
        ),
    )
    .await;
    assert_eq!(parts.headers["x-seen-if-range"], "\"v1-gzip\"");
    assert_eq!(
        parts.headers["x-seen-if-none-match"],
        // The suffix-less tags are added beside the client's (weak ones too: If-None-Match
        // compares weakly), never in their place.
        "W/\"v1-gzip\", W/\"v1\", \"v2-gzip\", \"v2\""
    );
}

#[tokio::test]
async fn the_wrong_order_gives_compressed_bytes_no_tag_at_all() {
    // The cache layer outside the compression layer sees a stream of unknown length.
    let body: &'static str = Box::leak("{\"item\":\"tea\"},".repeat(300).into_boxed_str());
    let resource = Resource::new(body);
    let svc = CacheLayer::builder().build().unwrap().layer(
        tower_http::map_response_body::MapResponseBodyLayer::new(
            tower_bulwark::response::ResponseBody::inner,
        )
        .layer(CompressionLayer::new().layer(resource.service())),
    );
    let (parts, gz) = fetch(&svc, send("GET", &[("accept-encoding", "gzip")], "")).await;
    assert_eq!(encoding(&parts), Some("gzip"));
    assert_eq!(parts.headers.get("etag"), None);
    assert_eq!(gunzip(&gz), body.as_bytes());
}

/// A body that hands out its chunks one poll apart (`Pending` between them), then trailers.
struct Paced {
    chunks: Vec<Bytes>,
    handed_out: Arc<AtomicUsize>,
    trailers: Option<HeaderMap>,
    pause: bool,
}

impl http_body::Body for Paced {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.pause {
            self.pause = false;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        self.pause = true;
        if !self.chunks.is_empty() {
            self.handed_out.fetch_add(1, Ordering::SeqCst);
            return Poll::Ready(Some(Ok(Frame::data(self.chunks.remove(0)))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }
}

#[tokio::test]
async fn a_pausing_stream_is_flushed_so_far_and_its_trailers_follow() {
    let handed_out = Arc::new(AtomicUsize::new(0));
    let counter = handed_out.clone();
    let svc = CompressionLayer::new().layer(service_fn(move |_req: Request<Body>| {
        let handed_out = counter.clone();
        async move {
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", "0".parse().unwrap());
            let body = Paced {
                chunks: vec![
                    Bytes::from_static(b"data: one\n\n"),
                    Bytes::from_static(b"data: two\n\n"),
                ],
                handed_out,
                trailers: Some(trailers),
                pause: false,
            };
            Ok::<_, Infallible>(Response::new(body))
        }
    }));
    let res = svc
        .oneshot(get_with("/", &[("accept-encoding", "gzip")]))
        .await
        .unwrap();
    assert_eq!(res.headers()["content-encoding"], "gzip");
    let mut body = res.into_body();
    // Read compressed frames until the first event decodes: it must, before the inner body
    // has handed out the second one (the pause flushed it, it did not wait for the end).
    let mut all = Vec::new();
    let mut decoder = flate2::write::GzDecoder::new(Vec::new());
    while decoder.get_ref().as_slice() != b"data: one\n\n" {
        assert!(
            handed_out.load(Ordering::SeqCst) <= 1,
            "the first event waited"
        );
        let data = body.frame().await.unwrap().unwrap().into_data().unwrap();
        all.extend_from_slice(&data);
        std::io::Write::write_all(&mut decoder, &data).unwrap();
        std::io::Write::flush(&mut decoder).unwrap();
        assert!(decoder.get_ref().len() <= 11);
    }
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.unwrap();
        match frame.into_data() {
            Ok(data) => {
                assert!(trailers.is_none(), "data after the trailers");
                all.extend_from_slice(&data);
            }
            Err(frame) => trailers = frame.into_trailers().ok(),
        }
    }
    assert_eq!(gunzip(&all), b"data: one\n\ndata: two\n\n");
    assert_eq!(trailers.unwrap()["grpc-status"], "0");
}

#[tokio::test]
async fn malformed_accept_encoding_never_fails_a_request() {
    let svc = CompressionLayer::new().layer(handler(json(4000), &[]));
    // Each value, and the coding it must give: a malformed element is dropped alone.
    let values: &[(&[u8], Option<&str>)] = &[
        (b";;;", None),
        (b"gzip;q=abc", None),
        (b"gzip;q=abc, deflate", Some("deflate")),
        (b"q=1", None),
        (b",", None),
        (b"gzip;q=1;q=0.5;", Some("gzip")),
        (b"\xff\xfe", None),
        (b"*;q=0.x", None),
        (b"gzip ;q= 1", Some("gzip")),
        (b"GZip;Q=0.9", Some("gzip")),
        (b"gzip;q=1.5", None),
        (b"\"gzip\"", None),
    ];
    for (value, want) in values {
        let mut req = get_with("/", &[]);
        req.headers_mut().insert(
            "accept-encoding",
            http::HeaderValue::from_bytes(value).unwrap(),
        );
        let (parts, body) = fetch(&svc, req).await;
        assert_eq!(parts.status, 200, "{value:?}");
        assert_eq!(
            encoding(&parts),
            *want,
            "{:?}",
            String::from_utf8_lossy(value)
        );
        let plain = match want {
            Some("gzip") => Bytes::from(gunzip(&body)),
            Some(_) => {
                let mut plain = Vec::new();
                flate2::read::ZlibDecoder::new(&body[..])
                    .read_to_end(&mut plain)
                    .unwrap();
                Bytes::from(plain)
            }
            None => body,
        };
        assert_eq!(plain, json(4000), "{value:?}");
    }
}

#[tokio::test]
async fn head_gets_the_headers_its_get_would() {
    let body: &'static str = Box::leak("{\"item\":\"tea\"},".repeat(300).into_boxed_str());
    let resource = Resource::new(body);
    let svc = CompressionLayer::new().layer(
        CacheLayer::builder()
            .build()
            .unwrap()
            .layer(resource.service()),
    );
    let gzip = [("accept-encoding", "gzip")];
    let (get, _) = fetch(&svc, send("GET", &gzip, "")).await;
    // (This test handler answers HEAD with a body, which a server drops; the layer leaves
    // bodies of HEAD responses alone.)
    let (head, _) = fetch(&svc, send("HEAD", &gzip, "")).await;
    for name in ["content-encoding", "etag", "vary", "content-length"] {
        assert_eq!(head.headers.get(name), get.headers.get(name), "{name}");
    }
    assert_eq!(head.headers["content-encoding"], "gzip");
    // And a HEAD revalidates like its GET.
    let tag = get.headers["etag"].to_str().unwrap().to_owned();
    let (parts, _) = fetch(
        &svc,
        send(
            "HEAD",
            &[("accept-encoding", "gzip"), ("if-none-match", &tag)],
            "",
        ),
    )
    .await;
    assert_eq!(parts.status, 304);
    assert_eq!(parts.headers["etag"], tag.as_str());
}

#[tokio::test]
async fn a_304_gets_the_suffix_only_for_the_tag_that_matched() {
    let body: &'static str = Box::leak("{\"item\":\"tea\"},".repeat(300).into_boxed_str());
    let resource = Resource::new(body);
    let identity_tag = EntityTag::of_body(body.as_bytes(), false).to_string();
    let svc = CompressionLayer::new().layer(
        CacheLayer::builder()
            .build()
            .unwrap()
            .layer(resource.service()),
    );
    // The client holds the identity copy (current) and an old gzip copy: the identity tag
    // matched, so the 304 names the identity representation.
    let tags = format!("{identity_tag}, \"old-gzip\"");
    let (parts, _) = fetch(
        &svc,
        send(
            "GET",
            &[("accept-encoding", "gzip"), ("if-none-match", &tags)],
            "",
        ),
    )
    .await;
    assert_eq!(parts.status, 304);
    assert_eq!(parts.headers["etag"], identity_tag.as_str());
    // A weakened copy of the gzip tag (a CDN's) revalidates too, and stays weak.
    let weak_gzip = format!("W/{}-gzip\"", &identity_tag[..identity_tag.len() - 1]);
    let (parts, _) = fetch(
        &svc,
        send(
            "GET",
            &[("accept-encoding", "gzip"), ("if-none-match", &weak_gzip)],
            "",
        ),
    )
    .await;
    assert_eq!(parts.status, 304);
    assert_eq!(parts.headers["etag"], weak_gzip.as_str());
}

#[tokio::test]
async fn a_streamed_body_gets_a_weak_derived_tag_and_digests_are_dropped() {
    let svc = CompressionLayer::new().layer(service_fn(|_req: Request<Body>| async {
        let body = Paced {
            chunks: vec![json(3000)],
            handed_out: Arc::new(AtomicUsize::new(0)),
            trailers: None,
            pause: false,
        };
        let mut res = Response::new(body);
        res.headers_mut().insert("etag", "\"s1\"".parse().unwrap());
        res.headers_mut()
            .insert("content-digest", "sha-256=:abc=:".parse().unwrap());
        Ok::<_, Infallible>(res)
    }));
    let (parts, gz) = fetch(&svc, get_with("/", &[("accept-encoding", "gzip")])).await;
    assert_eq!(parts.headers["etag"], "W/\"s1-gzip\"");
    assert_eq!(parts.headers.get("content-digest"), None);
    assert_eq!(gunzip(&gz), json(3000));
}

#[test]
fn the_builder_names_the_bad_field() {
    let err = CompressionLayer::builder().level(10).build().unwrap_err();
    assert_eq!(err.field(), "level");
    assert_eq!(err.to_string(), "`level` must be 0 to 9, got 10");
    let err = CompressionLayer::builder()
        .opt_out_header("bad header")
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "opt_out_header");
    let err = CompressionLayer::builder()
        .skip_content_type(" ")
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "skip_content_type");
}
