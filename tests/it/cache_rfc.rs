//! The RFC 9110 §13 suite, table-driven: every precondition, each conflict of the evaluation
//! order, weak against strong comparison on both sides, lists, `*`, dates in all three
//! HTTP-date forms and malformed ones, HEAD, writes with `If-None-Match`, the exact header set
//! of a `304`. Each row runs twice: judged on the handler's response (the handler's own
//! `ETag` and `Last-Modified`), and judged before the handler (`current_etag`), where a `304`
//! or `412` must come without the handler running.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use tower::{Layer, Service, ServiceExt};
use tower_bulwark::cache::{CacheLayer, CurrentEtag, EntityTag};
use tower_bulwark::clock::ManualClock;

use crate::common::{body_text, Body};

/// The resource's `Last-Modified`, and one second either side of it.
const T: &str = "Sun, 06 Nov 1994 08:49:37 GMT";
const T_850: &str = "Sunday, 06-Nov-94 08:49:37 GMT";
const T_ASCTIME: &str = "Sun Nov  6 08:49:37 1994";
const BEFORE: &str = "Sun, 06 Nov 1994 08:49:36 GMT";
const AFTER: &str = "Sun, 06 Nov 1994 08:49:38 GMT";

/// The handler: `/doc` is "hello world" with `ETag: "v1"`, `Last-Modified: T` and the other
/// headers a 304 keeps or drops; a `Range` gets `206`; a write answers `200 stored`.
fn handler(
    calls: Arc<AtomicUsize>,
) -> impl Service<
    Request<Body>,
    Response = Response<Body>,
    Error = std::convert::Infallible,
    Future: Send,
> + Clone {
    tower::service_fn(move |req: Request<Body>| {
        calls.fetch_add(1, Ordering::SeqCst);
        let mut res = Response::new(Full::new(Bytes::from_static(b"hello world")));
        if req.method() != Method::GET && req.method() != Method::HEAD {
            *res.body_mut() = Full::new(Bytes::from_static(b"stored"));
            return std::future::ready(Ok(res));
        }
        if req.headers().contains_key("range") {
            *res.status_mut() = StatusCode::PARTIAL_CONTENT;
            *res.body_mut() = Full::new(Bytes::from_static(b"he"));
        }
        let headers = res.headers_mut();
        headers.insert("etag", "\"v1\"".parse().unwrap());
        headers.insert("last-modified", T.parse().unwrap());
        headers.insert("content-location", "/doc.en".parse().unwrap());
        headers.insert("vary", "accept".parse().unwrap());
        headers.insert("content-type", "text/plain".parse().unwrap());
        headers.insert("content-length", "11".parse().unwrap());
        headers.insert("x-custom", "1".parse().unwrap());
        std::future::ready(Ok(res))
    })
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    /// Judged on the handler's response.
    After,
    /// Judged before the handler, from `current_etag` ("v1").
    Before,
}

fn layer(mode: Mode) -> CacheLayer {
    let builder = CacheLayer::max_age(Duration::from_secs(60)).clock(ManualClock::new());
    match mode {
        Mode::After => builder,
        Mode::Before => builder.current_etag(|_: &http::request::Parts| {
            CurrentEtag::Is(EntityTag::strong("v1").unwrap())
        }),
    }
    .build()
    .unwrap()
}

async fn run(mode: Mode, method: &str, headers: &[(&str, &str)]) -> (Response<Body>, usize) {
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = layer(mode).layer(handler(calls.clone()));
    let mut req = Request::builder().method(method).uri("/doc");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let res = svc
        .oneshot(req.body(Body::default()).unwrap())
        .await
        .unwrap();
    (res, calls.load(Ordering::SeqCst))
}

/// One row: the request, and the status judged after and before the handler.
struct Row {
    method: &'static str,
    headers: &'static [(&'static str, &'static str)],
    after: u16,
    before: u16,
    why: &'static str,
}

const fn row(
    method: &'static str,
    headers: &'static [(&'static str, &'static str)],
    after: u16,
    before: u16,
    why: &'static str,
) -> Row {
    Row {
        method,
        headers,
        after,
        before,
        why,
    }
}

const ROWS: &[Row] = &[
    row("GET", &[], 200, 200, "no precondition"),
    // If-None-Match: weak comparison, lists, `*`, malformed elements.
    row(
        "GET",
        &[("if-none-match", "\"v1\"")],
        304,
        304,
        "INM matches",
    ),
    row(
        "GET",
        &[("if-none-match", "W/\"v1\"")],
        304,
        304,
        "INM compares weakly",
    ),
    row(
        "GET",
        &[("if-none-match", "\"v2\"")],
        200,
        200,
        "INM differs",
    ),
    row(
        "GET",
        &[("if-none-match", "\"v2\", \"v1\"")],
        304,
        304,
        "INM list",
    ),
    row(
        "GET",
        &[("if-none-match", " ,\"v2\" ,\t\"v1\" , ")],
        304,
        304,
        "INM list, odd spacing",
    ),
    row(
        "GET",
        &[("if-none-match", "\"v2\""), ("if-none-match", "\"v1\"")],
        304,
        304,
        "INM over two lines",
    ),
    row(
        "GET",
        &[("if-none-match", "\"x,y\", \"v1\"")],
        304,
        304,
        "INM quoted comma, then the tag",
    ),
    row(
        "GET",
        &[("if-none-match", "\"v1,x\"")],
        200,
        200,
        "INM quoted comma is part of the tag",
    ),
    row("GET", &[("if-none-match", "*")], 304, 304, "INM *"),
    row(
        "GET",
        &[("if-none-match", "v1")],
        200,
        200,
        "INM unquoted never matches",
    ),
    row(
        "GET",
        &[("if-none-match", "\"v1")],
        200,
        200,
        "INM unterminated never matches",
    ),
    // If-Match: strong comparison.
    row("GET", &[("if-match", "\"v1\"")], 200, 200, "IM matches"),
    row("GET", &[("if-match", "\"v2\"")], 412, 412, "IM differs"),
    row(
        "GET",
        &[("if-match", "W/\"v1\"")],
        412,
        412,
        "IM compares strongly",
    ),
    row(
        "GET",
        &[("if-match", "\"v0\", \"v1\"")],
        200,
        200,
        "IM list",
    ),
    row(
        "GET",
        &[("if-match", "*")],
        200,
        200,
        "IM * with a representation",
    ),
    row(
        "GET",
        &[("if-match", "garbage")],
        412,
        412,
        "IM malformed never matches",
    ),
    // If-Modified-Since, all three date forms, malformed.
    row("GET", &[("if-modified-since", T)], 304, 304, "IMS equal"),
    row(
        "GET",
        &[("if-modified-since", AFTER)],
        304,
        304,
        "IMS later",
    ),
    row(
        "GET",
        &[("if-modified-since", BEFORE)],
        200,
        200,
        "IMS earlier",
    ),
    row(
        "GET",
        &[("if-modified-since", T_850)],
        304,
        304,
        "IMS in RFC 850 form",
    ),
    row(
        "GET",
        &[("if-modified-since", T_ASCTIME)],
        304,
        304,
        "IMS in asctime form",
    ),
    row(
        "GET",
        &[("if-modified-since", "Sun, 06 Nov 1994 08:49:37")],
        200,
        200,
        "IMS malformed",
    ),
    row(
        "GET",
        &[("if-modified-since", "yesterday")],
        200,
        200,
        "IMS nonsense",
    ),
    // If-Unmodified-Since.
    row("GET", &[("if-unmodified-since", T)], 200, 200, "IUS equal"),
    row(
        "GET",
        &[("if-unmodified-since", BEFORE)],
        412,
        412,
        "IUS earlier",
    ),
    row(
        "GET",
        &[("if-unmodified-since", AFTER)],
        200,
        200,
        "IUS later",
    ),
    row(
        "GET",
        &[("if-unmodified-since", "soon")],
        200,
        200,
        "IUS malformed",
    ),
    // The evaluation order.
    row(
        "GET",
        &[("if-match", "\"v2\""), ("if-none-match", "\"v1\"")],
        412,
        412,
        "IM before INM",
    ),
    row(
        "GET",
        &[("if-match", "\"v1\""), ("if-none-match", "\"v1\"")],
        304,
        304,
        "IM holds, then INM",
    ),
    row(
        "GET",
        &[("if-match", "\"v1\""), ("if-unmodified-since", BEFORE)],
        200,
        200,
        "IUS ignored beside IM",
    ),
    row(
        "GET",
        &[("if-unmodified-since", BEFORE), ("if-none-match", "\"v1\"")],
        412,
        412,
        "IUS before INM",
    ),
    row(
        "GET",
        &[("if-none-match", "\"v2\""), ("if-modified-since", T)],
        200,
        200,
        "IMS ignored beside INM",
    ),
    row(
        "GET",
        &[("if-none-match", "\"v1\""), ("if-modified-since", BEFORE)],
        304,
        304,
        "INM decides, not IMS",
    ),
    // HEAD is judged as GET.
    row("HEAD", &[("if-none-match", "\"v1\"")], 304, 304, "HEAD INM"),
    row("HEAD", &[("if-match", "\"v2\"")], 412, 412, "HEAD IM"),
    row("HEAD", &[("if-modified-since", T)], 304, 304, "HEAD IMS"),
    // Writes: judged only before the handler; after it, a change already made stands.
    row("PUT", &[("if-match", "\"v1\"")], 200, 200, "PUT IM holds"),
    row("PUT", &[("if-match", "\"v2\"")], 200, 412, "PUT IM stale"),
    row(
        "PUT",
        &[("if-match", "W/\"v1\"")],
        200,
        412,
        "PUT IM weak never matches",
    ),
    row(
        "POST",
        &[("if-none-match", "\"v1\"")],
        200,
        412,
        "POST INM matches: 412, not 304",
    ),
    row(
        "PUT",
        &[("if-none-match", "*")],
        200,
        412,
        "PUT create-only on an existing resource",
    ),
    row(
        "DELETE",
        &[("if-match", "\"v2\"")],
        200,
        412,
        "DELETE IM stale",
    ),
    row("PATCH", &[("if-match", "*")], 200, 200, "PATCH IM *"),
    row(
        "PUT",
        &[("if-modified-since", AFTER)],
        200,
        200,
        "IMS only for GET and HEAD",
    ),
];

#[tokio::test]
async fn every_row_of_the_table_in_both_modes() {
    let mut failures = Vec::new();
    for row in ROWS {
        for mode in [Mode::After, Mode::Before] {
            let (res, calls) = run(mode, row.method, row.headers).await;
            let want = if mode == Mode::After {
                row.after
            } else {
                row.before
            };
            if res.status() != want {
                failures.push(format!(
                    "{mode:?} {} {:?} ({}): got {}, want {want}",
                    row.method,
                    row.headers,
                    row.why,
                    res.status()
                ));
            }
            // Before the handler, a 304 or 412 decided by tags alone never runs it (a date
            // needs the handler's `Last-Modified`).
            let dated = row.headers.iter().any(|(name, _)| name.ends_with("-since"));
            if mode == Mode::Before && want != 200 && !dated && calls != 0 {
                failures.push(format!("{} {:?}: the handler ran", row.method, row.headers));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn a_304_carries_exactly_the_headers_rfc_9110_lists_and_no_body() {
    let (res, _) = run(Mode::After, "GET", &[("if-none-match", "\"v1\"")]).await;
    assert_eq!(res.status(), 304);
    let mut names: Vec<&str> = res.headers().keys().map(|n| n.as_str()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "cache-control",
            "content-location",
            "etag",
            "expires",
            "vary"
        ],
        "no content-type, content-length, last-modified (an ETag is there) or x-custom"
    );
    assert_eq!(res.headers()["etag"], "\"v1\"");
    assert_eq!(res.headers()["cache-control"], "max-age=60");
    assert_eq!(res.headers()["expires"], "Thu, 01 Jan 2026 00:01:00 GMT");
    assert_eq!(body_text(res).await, "");

    // Judged before the handler: what the layer knows (the tag and its policy).
    let (res, calls) = run(Mode::Before, "GET", &[("if-none-match", "\"v1\"")]).await;
    assert_eq!((res.status().as_u16(), calls), (304, 0));
    let mut names: Vec<&str> = res.headers().keys().map(|n| n.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["cache-control", "etag", "expires"]);
}

#[tokio::test]
async fn a_412_says_why_in_json() {
    let (res, _) = run(Mode::After, "GET", &[("if-match", "\"v2\"")]).await;
    assert_eq!(res.status(), 412);
    assert_eq!(res.headers()["content-type"], "application/json");
    let body = body_text(res).await;
    assert!(body.contains("\"precondition_failed\""), "{body}");
}

#[tokio::test]
async fn if_range_judged_before_the_handler_drops_a_stale_range() {
    let range = ("range", "bytes=0-1");
    for (if_range, want) in [
        ("\"v1\"", 206),
        ("\"v2\"", 200),
        ("W/\"v1\"", 200),
        // No date is known before the handler: a date cannot be shown to match.
        (T, 200),
        ("nonsense", 200),
    ] {
        let (res, calls) = run(Mode::Before, "GET", &[range, ("if-range", if_range)]).await;
        assert_eq!(res.status(), want, "If-Range: {if_range}");
        assert_eq!(calls, 1);
    }
    // If-Range applies to GET only: a HEAD keeps its Range.
    let (res, _) = run(Mode::Before, "HEAD", &[range, ("if-range", "\"v2\"")]).await;
    assert_eq!(res.status(), 206);
}

#[tokio::test]
async fn a_missing_resource_fails_if_match_and_passes_create_only() {
    let calls = Arc::new(AtomicUsize::new(0));
    let layer = CacheLayer::builder()
        .current_etag(|_: &http::request::Parts| CurrentEtag::Missing)
        .build()
        .unwrap();
    let svc = layer.layer(handler(calls.clone()));
    let put = |name: &str, value: &str| {
        Request::put("/doc")
            .header(name, value)
            .body(Body::default())
            .unwrap()
    };
    let res = svc.clone().oneshot(put("if-match", "*")).await.unwrap();
    assert_eq!(res.status(), 412);
    let res = svc
        .clone()
        .oneshot(put("if-none-match", "*"))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}
