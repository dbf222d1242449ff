//! The cache layer on real services: the policy and its statuses, `Expires`, `Vary`, ETags
//! from bodies (and the bodies it must leave alone), HEAD through axum, a body failing while
//! read, and the validator store answering before the handler, refusing stale writes,
//! forgetting written URIs, bounded under a flood.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::{BodyExt, Full, StreamBody};
use tower::{Layer, Service, ServiceExt};
use tower_bulwark::cache::{CacheLayer, EntityTag, ValidatorStore};
use tower_bulwark::clock::ManualClock;
use tower_bulwark::response::ResponseBody;

use crate::common::cache::{send, status, Resource};
use crate::common::{body_text, Body};

fn respond_with(
    build: impl Fn(&Request<Body>) -> Response<Body> + Clone + Send + 'static,
) -> impl Service<Request<Body>, Response = Response<Body>, Error = Infallible, Future: Send> + Clone
{
    tower::service_fn(move |req: Request<Body>| std::future::ready(Ok(build(&req))))
}

fn text(body: &'static str) -> Response<Body> {
    Response::new(Full::new(Bytes::from_static(body.as_bytes())))
}

async fn get(
    svc: impl Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
    headers: &[(&str, &str)],
) -> Response<Body> {
    let mut req = Request::get("/doc");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    svc.oneshot(req.body(Body::default()).unwrap())
        .await
        .unwrap()
}

fn header<'a>(res: &'a Response<Body>, name: &str) -> Option<&'a str> {
    res.headers().get(name).map(|v| v.to_str().unwrap())
}

#[tokio::test]
async fn a_200_gets_the_policy_expires_and_a_strong_tag_of_its_body() {
    let layer = CacheLayer::builder()
        .clock(ManualClock::new())
        .build()
        .unwrap();
    let res = get(layer.layer(respond_with(|_| text("{\"id\":7}"))), &[]).await;
    assert_eq!(header(&res, "cache-control"), Some("max-age=3600"));
    assert_eq!(
        header(&res, "expires"),
        Some("Thu, 01 Jan 2026 01:00:00 GMT")
    );
    let tag = EntityTag::of_body(b"{\"id\":7}", false);
    assert_eq!(header(&res, "etag"), Some(tag.to_string().as_str()));
    assert_eq!(
        body_text(res).await,
        "{\"id\":7}",
        "the body is handed on whole"
    );
    assert_eq!(layer.stats().etags_computed, 1);
}

#[tokio::test]
async fn the_handlers_cache_control_is_kept_unless_overridden() {
    let own = |_: &Request<Body>| {
        let mut res = text("x");
        res.headers_mut()
            .insert("cache-control", "private, max-age=5".parse().unwrap());
        res
    };
    let kept = CacheLayer::max_age(Duration::from_secs(60))
        .build()
        .unwrap();
    let res = get(kept.layer(respond_with(own)), &[]).await;
    assert_eq!(header(&res, "cache-control"), Some("private, max-age=5"));
    assert_eq!(
        header(&res, "expires"),
        None,
        "no Expires beside a header it did not write"
    );

    let overriding = CacheLayer::max_age(Duration::from_secs(60))
        .public()
        .override_cache_control(true)
        .build()
        .unwrap();
    let res = get(overriding.layer(respond_with(own)), &[]).await;
    assert_eq!(header(&res, "cache-control"), Some("public, max-age=60"));
    assert!(header(&res, "expires").is_some());
}

#[tokio::test]
async fn no_store_says_expires_zero_and_no_cache_has_no_lifetime() {
    let res = get(
        CacheLayer::no_store()
            .build()
            .unwrap()
            .layer(respond_with(|_| text("x"))),
        &[],
    )
    .await;
    assert_eq!(header(&res, "cache-control"), Some("no-store"));
    assert_eq!(header(&res, "expires"), Some("0"));
    let res = get(
        CacheLayer::no_cache()
            .build()
            .unwrap()
            .layer(respond_with(|_| text("x"))),
        &[],
    )
    .await;
    assert_eq!(header(&res, "cache-control"), Some("no-cache"));
    assert_eq!(header(&res, "expires"), None);
    assert!(header(&res, "etag").is_some(), "revalidation needs a tag");
}

#[tokio::test]
async fn only_the_configured_statuses_and_reads_get_the_policy() {
    let status = |code: u16| {
        move |_: &Request<Body>| {
            let mut res = text("x");
            *res.status_mut() = StatusCode::from_u16(code).unwrap();
            res
        }
    };
    let layer = CacheLayer::builder().build().unwrap();
    for (code, policy) in [
        (200, true),
        (204, true),
        (404, false),
        (500, false),
        (503, false),
    ] {
        let res = get(layer.layer(respond_with(status(code))), &[]).await;
        assert_eq!(
            res.headers().contains_key("cache-control"),
            policy,
            "{code}"
        );
        // Only a 200 gets a tag of its body.
        assert_eq!(res.headers().contains_key("etag"), code == 200, "{code}");
    }
    let with_404 = CacheLayer::builder().statuses([200, 404]).build().unwrap();
    let res = get(with_404.layer(respond_with(status(404))), &[]).await;
    assert!(res.headers().contains_key("cache-control"));
    let post = Request::post("/doc").body(Body::default()).unwrap();
    let res = layer
        .layer(respond_with(status(200)))
        .oneshot(post)
        .await
        .unwrap();
    assert!(!res.headers().contains_key("cache-control"));
    assert!(!res.headers().contains_key("etag"));
}

#[tokio::test]
async fn vary_is_merged_into_the_handlers_never_twice() {
    let layer = CacheLayer::builder()
        .vary([http::header::ACCEPT_ENCODING, http::header::ACCEPT_LANGUAGE])
        .build()
        .unwrap();
    let res = get(
        layer.layer(respond_with(|_| {
            let mut res = text("x");
            res.headers_mut()
                .insert("vary", "Accept-Encoding".parse().unwrap());
            res
        })),
        &[],
    )
    .await;
    let vary: Vec<&str> = res
        .headers()
        .get_all("vary")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(vary, ["accept-encoding, accept-language"]);
}

#[tokio::test]
async fn weak_tags_no_tags_and_the_handlers_own_tag() {
    let weak = CacheLayer::builder().weak_etags().build().unwrap();
    let res = get(weak.layer(respond_with(|_| text("x"))), &[]).await;
    assert!(header(&res, "etag").unwrap().starts_with("W/\""));
    // A weak tag still revalidates a read.
    let tag = header(&res, "etag").unwrap().to_owned();
    let res = get(
        weak.layer(respond_with(|_| text("x"))),
        &[("if-none-match", &tag)],
    )
    .await;
    assert_eq!(res.status(), 304);

    let off = CacheLayer::builder().without_etags().build().unwrap();
    let res = get(off.layer(respond_with(|_| text("x"))), &[]).await;
    assert_eq!(header(&res, "etag"), None);

    let own = CacheLayer::builder().build().unwrap();
    let res = get(
        own.layer(respond_with(|_| {
            let mut res = text("x");
            res.headers_mut()
                .insert("etag", "\"mine\"".parse().unwrap());
            res
        })),
        &[],
    )
    .await;
    assert_eq!(header(&res, "etag"), Some("\"mine\""));
    assert_eq!(own.stats().etags_computed, 0, "its body was not read");
}

/// A body of `chunks`, saying it is `exact` bytes long (or not saying), then failing if `fail`.
struct Chunks {
    chunks: Vec<Bytes>,
    exact: Option<u64>,
    fail: bool,
}

impl HttpBody for Chunks {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if !self.chunks.is_empty() {
            let chunk = self.chunks.remove(0);
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if std::mem::take(&mut self.fail) {
            return Poll::Ready(Some(Err(std::io::Error::other("upstream reset"))));
        }
        Poll::Ready(None)
    }

    fn size_hint(&self) -> SizeHint {
        self.exact.map_or_else(SizeHint::new, SizeHint::with_exact)
    }
}

async fn through_layer(layer: &CacheLayer, body: Chunks) -> Response<ResponseBody<Chunks>> {
    let svc = layer.layer(tower::service_fn(move |_: Request<Body>| {
        let body = Chunks {
            chunks: body.chunks.clone(),
            exact: body.exact,
            fail: body.fail,
        };
        std::future::ready(Ok::<_, Infallible>(Response::new(ResponseBody::inner(
            body,
        ))))
    }));
    svc.oneshot(Request::get("/doc").body(Body::default()).unwrap())
        .await
        .unwrap()
}

fn chunks(parts: &[&'static str]) -> Vec<Bytes> {
    parts
        .iter()
        .map(|p| Bytes::from_static(p.as_bytes()))
        .collect()
}

#[tokio::test]
async fn streams_and_long_bodies_pass_untouched_and_unbuffered() {
    let layer = CacheLayer::builder().max_body(8).build().unwrap();
    // No length said: a stream.
    let res = through_layer(
        &layer,
        Chunks {
            chunks: chunks(&["ab", "cd"]),
            exact: None,
            fail: false,
        },
    )
    .await;
    assert_eq!(res.headers().get("etag"), None);
    assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "abcd");
    // Longer than the bound.
    let res = through_layer(
        &layer,
        Chunks {
            chunks: chunks(&["0123456789"]),
            exact: Some(10),
            fail: false,
        },
    )
    .await;
    assert_eq!(res.headers().get("etag"), None);
    assert_eq!(
        res.into_body().collect().await.unwrap().to_bytes(),
        "0123456789"
    );
    assert_eq!(layer.stats().unbuffered, 2);
    // Within it, over two chunks: one tag of the joined bytes.
    let res = through_layer(
        &layer,
        Chunks {
            chunks: chunks(&["ab", "cd"]),
            exact: Some(4),
            fail: false,
        },
    )
    .await;
    assert_eq!(
        res.headers()["etag"],
        EntityTag::of_body(b"abcd", false).to_string()
    );
    assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "abcd");

    // A real stream type, through `ResponseBody`.
    let stream = layer.layer(tower::service_fn(|_: Request<Body>| async {
        let frames =
            futures_util::stream::iter([Ok::<_, Infallible>(Frame::data(Bytes::from("s")))]);
        Ok::<_, Infallible>(Response::new(ResponseBody::inner(StreamBody::new(frames))))
    }));
    let res = stream
        .oneshot(Request::get("/").body(Body::default()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.headers().get("etag"), None);
    assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "s");
}

#[tokio::test]
async fn a_body_failing_while_read_reaches_the_client_as_it_was_without_a_tag() {
    let layer = CacheLayer::builder().build().unwrap();
    let res = through_layer(
        &layer,
        Chunks {
            chunks: chunks(&["part"]),
            exact: Some(10),
            fail: true,
        },
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers().get("etag"), None);
    let mut body = res.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first, "part", "what was read is not lost");
    let err = body.frame().await.unwrap().unwrap_err();
    assert_eq!(err.to_string(), "upstream reset", "nor is the error");
}

#[tokio::test]
async fn head_through_axum_has_the_gets_validators_and_no_body() {
    use axum::routing::get as route;
    let app = axum::Router::new()
        .route("/doc", route(|| async { "the document" }))
        .layer(CacheLayer::builder().build().unwrap());
    let res = app
        .clone()
        .oneshot(
            Request::get("/doc")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let tag = res.headers()["etag"].clone();
    assert_eq!(tag, EntityTag::of_body(b"the document", false).to_string());
    let head = Request::head("/doc")
        .body(axum::body::Body::empty())
        .unwrap();
    let res = app.clone().oneshot(head).await.unwrap();
    assert_eq!(res.headers()["etag"], tag);
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    assert!(bytes.is_empty());
    let head = Request::head("/doc")
        .header("if-none-match", tag)
        .body(axum::body::Body::empty())
        .unwrap();
    assert_eq!(app.oneshot(head).await.unwrap().status(), 304);

    // A HEAD handler of its own that answers without the body: no tag of nothing.
    let layer = CacheLayer::builder().build().unwrap();
    let res = layer
        .layer(respond_with(|_| {
            let mut res = Response::new(Body::default());
            res.headers_mut()
                .insert("content-length", "12".parse().unwrap());
            res
        }))
        .oneshot(Request::head("/doc").body(Body::default()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.headers().get("etag"), None);
}

// --- The validator store --------------------------------------------------------------------

fn stored_layer(store: &ValidatorStore) -> CacheLayer {
    CacheLayer::max_age(Duration::from_secs(60))
        .vary([http::header::ACCEPT_LANGUAGE])
        .validator_store(store.clone())
        .build()
        .unwrap()
}

fn memory_store(clock: &ManualClock) -> ValidatorStore {
    ValidatorStore::builder()
        .clock(clock.clone())
        .build()
        .unwrap()
}

#[tokio::test]
async fn the_store_answers_a_conditional_get_before_the_handler() {
    let clock = ManualClock::new();
    let store = memory_store(&clock);
    let layer = stored_layer(&store);
    let resource = Resource::new("v1 body");
    let mut svc = layer.layer(resource.service());
    let (code, headers) = status(&mut svc, send("GET", &[], "")).await;
    assert_eq!(code, 200);
    let tag = headers["etag"].to_str().unwrap().to_owned();
    assert_eq!(resource.calls(), 1);

    let (code, headers) = status(&mut svc, send("GET", &[("if-none-match", &tag)], "")).await;
    assert_eq!((code, resource.calls()), (304, 1), "answered by the store");
    assert_eq!(headers["etag"], tag.as_str());
    assert_eq!(headers["cache-control"], "max-age=60");
    assert_eq!(layer.stats().answered_before_handler, 1);

    // Another variant (Vary: accept-language) is not the stored one.
    let (code, _) = status(
        &mut svc,
        send(
            "GET",
            &[("if-none-match", &tag), ("accept-language", "fr")],
            "",
        ),
    )
    .await;
    assert_eq!((code, resource.calls()), (200, 2));

    // Stored no longer than the response is fresh (max-age=60).
    clock.advance(Duration::from_secs(60));
    let (code, _) = status(&mut svc, send("GET", &[("if-none-match", &tag)], "")).await;
    assert_eq!(
        (code, resource.calls()),
        (304, 3),
        "judged on the handler's response again"
    );
}

#[tokio::test]
async fn a_stale_if_match_write_is_refused_and_the_handler_never_runs() {
    let clock = ManualClock::new();
    let store = memory_store(&clock);
    let mut svc = stored_layer(&store).layer(Resource::new("v1").service());
    let (_, headers) = status(&mut svc, send("GET", &[], "")).await;
    let v1 = headers["etag"].to_str().unwrap().to_owned();

    let resource = Resource::new("v1");
    let mut svc = stored_layer(&store).layer(resource.service());
    // Alice writes with the tag she read: accepted, and the URI is forgotten.
    let (code, _) = status(&mut svc, send("PUT", &[("if-match", &v1)], "v2 by alice")).await;
    assert_eq!((code, resource.calls()), (200, 1));
    // Bob still holds v1 and writes at once: no read has told the store the new tag, but it
    // knows the resource changed: refused before the handler, nothing changes.
    let (code, _) = status(&mut svc, send("PUT", &[("if-match", &v1)], "v2 by bob")).await;
    assert_eq!((code, resource.calls()), (412, 1));
    // Alice's next read is not answered from what she replaced; it tells the store the tag.
    let (code, headers) = status(&mut svc, send("GET", &[("if-none-match", &v1)], "")).await;
    assert_eq!((code, resource.calls()), (200, 2));
    let v2 = headers["etag"].to_str().unwrap().to_owned();
    assert_ne!(v1, v2);
    // Bob again with v1: refused by the stored v2; with v2 (after reading it): accepted.
    let (code, _) = status(&mut svc, send("PUT", &[("if-match", &v1)], "v2 by bob")).await;
    assert_eq!((code, resource.calls()), (412, 2));
    assert_eq!(&*resource.body.lock().unwrap(), "v2 by alice");
    let (code, _) = status(&mut svc, send("PUT", &[("if-match", &v2)], "v3 by bob")).await;
    assert_eq!((code, resource.calls()), (200, 3));
}

/// A handler whose first call answers `body` only once told to: it says when it has started
/// (the receiver), and waits for the sender. Later calls answer at once.
fn held(
    body: &'static str,
) -> (
    impl Service<Request<Body>, Response = Response<Body>, Error = Infallible, Future: Send> + Clone,
    tokio::sync::oneshot::Receiver<()>,
    tokio::sync::oneshot::Sender<()>,
) {
    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    let slots = std::sync::Arc::new(std::sync::Mutex::new((Some(started_tx), Some(go_rx))));
    let handler = tower::service_fn(move |_req: Request<Body>| {
        let slots = slots.clone();
        async move {
            let (started, go) = {
                let mut slots = slots.lock().unwrap();
                (slots.0.take(), slots.1.take())
            };
            if let (Some(started), Some(go)) = (started, go) {
                let _ = started.send(());
                let _ = go.await;
            }
            Ok::<_, Infallible>(text(body))
        }
    });
    (handler, started_rx, go_tx)
}

#[tokio::test]
async fn a_read_that_began_before_a_write_does_not_store_the_old_tag() {
    let store = memory_store(&ManualClock::new());
    let layer = stored_layer(&store);
    // A slow reader: it reads the old body, then waits until the write is done.
    let (handler, started_rx, go_tx) = held("old body");
    let slow = layer.layer(handler);
    let reader = tokio::spawn(slow.oneshot(send("GET", &[], "")));
    started_rx.await.unwrap();
    let writer = layer.layer(Resource::new("x").service());
    assert_eq!(
        writer
            .oneshot(send("PUT", &[], "new"))
            .await
            .unwrap()
            .status(),
        200
    );
    go_tx.send(()).unwrap();
    let old = reader.await.unwrap().unwrap();
    let old_tag = old.headers()["etag"].to_str().unwrap().to_owned();
    // The old tag was not stored: a write naming it is refused (the store says "changed").
    let mut svc = layer.layer(Resource::new("x").service());
    let (code, _) = status(&mut svc, send("PUT", &[("if-match", &old_tag)], "y")).await;
    assert_eq!(code, 412);
}

#[tokio::test]
async fn invalidate_serves_changes_made_elsewhere() {
    let clock = ManualClock::new();
    let store = memory_store(&clock);
    let resource = Resource::new("v1");
    let mut svc = stored_layer(&store).layer(resource.service());
    let (_, headers) = status(&mut svc, send("GET", &[], "")).await;
    let v1 = headers["etag"].to_str().unwrap().to_owned();
    status(&mut svc, send("GET", &[("if-none-match", &v1)], "")).await;
    assert_eq!(resource.calls(), 1);
    // A batch job changes the resource behind the layer's back, then says so (a query after
    // the path is ignored: every query of it is forgotten).
    *resource.body.lock().unwrap() = Bytes::from_static(b"v2 from the batch");
    store.invalidate("/doc?any=1").await.unwrap();
    let (code, _) = status(&mut svc, send("GET", &[("if-none-match", &v1)], "")).await;
    assert_eq!((code, resource.calls()), (200, 2));
}

#[tokio::test]
async fn responses_no_cache_may_keep_are_not_stored() {
    let store = memory_store(&ManualClock::new());
    let layer = CacheLayer::no_store()
        .validator_store(store.clone())
        .build()
        .unwrap();
    let resource = Resource::new("secret");
    let mut svc = layer.layer(resource.service());
    let (_, headers) = status(&mut svc, send("GET", &[], "")).await;
    let tag = headers["etag"].to_str().unwrap().to_owned();
    let (code, _) = status(&mut svc, send("GET", &[("if-none-match", &tag)], "")).await;
    assert_eq!(
        (code, resource.calls()),
        (304, 2),
        "judged after the handler, every time"
    );
    assert_eq!(store.len(), Some(0));
}

#[tokio::test]
async fn a_flood_of_made_up_uris_neither_grows_the_store_nor_evicts_a_real_one() {
    let store = ValidatorStore::builder()
        .max_keys(16)
        .clock(ManualClock::new())
        .build()
        .unwrap();
    let resource = Resource::new("real");
    let mut svc = stored_layer(&store).layer(resource.service());
    let (_, headers) = status(&mut svc, send("GET", &[], "")).await;
    let tag = headers["etag"].to_str().unwrap().to_owned();
    for n in 0..2_000 {
        let req = Request::get(format!("/junk/{n}"))
            .body(Body::default())
            .unwrap();
        status(&mut svc, req).await;
    }
    assert_eq!(store.len(), Some(16));
    let calls = resource.calls();
    let (code, _) = status(&mut svc, send("GET", &[("if-none-match", &tag)], "")).await;
    assert_eq!(
        (code, resource.calls()),
        (304, calls),
        "the real URI is still answered"
    );
}

#[tokio::test]
async fn a_write_forgets_every_query_of_its_path() {
    let store = memory_store(&ManualClock::new());
    let resource = Resource::new("v1");
    let mut svc = stored_layer(&store).layer(resource.service());
    let get_q = |q: &str, tag: Option<&str>| {
        let mut req = Request::get(format!("/doc?{q}"));
        if let Some(tag) = tag {
            req = req.header("if-none-match", tag);
        }
        req.body(Body::default()).unwrap()
    };
    let (_, headers) = status(&mut svc, get_q("expand=1", None)).await;
    let tag = headers["etag"].to_str().unwrap().to_owned();
    assert_eq!(status(&mut svc, get_q("expand=1", Some(&tag))).await.0, 304);
    assert_eq!(resource.calls(), 1);
    status(&mut svc, send("PUT", &[], "v2")).await;
    assert_eq!(status(&mut svc, get_q("expand=1", Some(&tag))).await.0, 200);
    assert_eq!(resource.calls(), 3);
}

#[tokio::test]
async fn a_flood_of_queries_on_one_path_cannot_open_it_to_stale_writes() {
    let store = memory_store(&ManualClock::new());
    let resource = Resource::new("v1");
    let mut svc = stored_layer(&store).layer(resource.service());
    let (_, headers) = status(&mut svc, send("GET", &[], "")).await;
    let v1 = headers["etag"].to_str().unwrap().to_owned();
    status(&mut svc, send("PUT", &[("if-match", &v1)], "v2")).await;
    let (_, headers) = status(&mut svc, send("GET", &[], "")).await;
    let v2 = headers["etag"].to_str().unwrap().to_owned();
    // The flood pushes the real variant out of the path's few slots ...
    for n in 0..50 {
        let req = Request::get(format!("/doc?junk={n}"))
            .body(Body::default())
            .unwrap();
        status(&mut svc, req).await;
    }
    // ... yet a stale write is still refused: the store knows it lost track.
    let calls = resource.calls();
    let (code, _) = status(&mut svc, send("PUT", &[("if-match", &v1)], "lost")).await;
    assert_eq!((code, resource.calls()), (412, calls));
    // An honest writer reads again and goes through.
    status(&mut svc, send("GET", &[], "")).await;
    let (code, _) = status(&mut svc, send("PUT", &[("if-match", &v2)], "v3")).await;
    assert_eq!(code, 200);
}

#[tokio::test]
async fn requests_with_credentials_and_private_responses_stay_out_of_the_store() {
    let store = memory_store(&ManualClock::new());
    let resource = Resource::new("mine");
    let mut svc = stored_layer(&store).layer(resource.service());
    let (_, headers) = status(&mut svc, send("GET", &[("authorization", "Bearer a")], "")).await;
    let tag = headers["etag"].to_str().unwrap().to_owned();
    assert_eq!(
        store.len(),
        Some(0),
        "nothing stored for a request with credentials"
    );
    let (code, _) = status(
        &mut svc,
        send("GET", &[("cookie", "s=b"), ("if-none-match", &tag)], ""),
    )
    .await;
    assert_eq!(
        (code, resource.calls()),
        (304, 2),
        "judged on the handler's answer"
    );

    let private = CacheLayer::max_age(Duration::from_secs(60))
        .private()
        .validator_store(store.clone())
        .build()
        .unwrap();
    let mut svc = private.layer(resource.service());
    status(&mut svc, send("GET", &[], "")).await;
    assert_eq!(store.len(), Some(0), "a private response is one user's");
}

#[tokio::test]
async fn current_etag_tags_every_read_and_leaves_missing_reads_to_the_handler() {
    use tower_bulwark::cache::CurrentEtag;
    let version = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(7));
    let seen = version.clone();
    let layer = CacheLayer::builder()
        .current_etag(move |parts: &http::request::Parts| {
            if parts.uri.path() == "/gone" {
                return CurrentEtag::Missing;
            }
            let v = seen.load(std::sync::atomic::Ordering::SeqCst);
            CurrentEtag::Is(EntityTag::strong(&format!("v{v}")).unwrap())
        })
        .build()
        .unwrap();
    let resource = Resource::new("body");
    let mut svc = layer.layer(resource.service());
    // A plain read carries the version tag, not a hash of its body ...
    let (_, headers) = status(&mut svc, send("GET", &[], "")).await;
    assert_eq!(headers["etag"], "\"v7\"");
    // ... so the write that follows with it is accepted.
    let (code, _) = status(&mut svc, send("PUT", &[("if-match", "\"v7\"")], "x")).await;
    assert_eq!(code, 200);
    // A missing resource: a read or delete is the handler's (its 404 makes preconditions not
    // count); a write that would need it is refused before the handler.
    let mut gone = layer.layer(respond_with(|req| {
        let mut res = text("no such thing");
        if req.method() != http::Method::PUT {
            *res.status_mut() = StatusCode::NOT_FOUND;
        }
        res
    }));
    for (method, want) in [("GET", 404), ("DELETE", 404), ("PUT", 412)] {
        let req = Request::builder()
            .method(method)
            .uri("/gone")
            .header("if-match", "\"v7\"")
            .body(Body::default())
            .unwrap();
        assert_eq!(status(&mut gone, req).await.0, want, "{method}");
    }
    drop(version);
}

#[test]
fn builders_name_the_bad_field() {
    let err = CacheLayer::builder()
        .max_age(Duration::from_millis(1500))
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "max_age");
    let err = CacheLayer::builder()
        .s_maxage(Duration::from_secs(1 << 40))
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "s_maxage");
    let err = CacheLayer::builder()
        .statuses([200, 99])
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "statuses");
    let err = CacheLayer::builder()
        .vary([http::HeaderName::from_static("*")])
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "vary");
    let err = CacheLayer::no_store().immutable().build().unwrap_err();
    assert_eq!(err.field(), "no_store");
    let err = ValidatorStore::builder()
        .max_ttl(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "max_ttl");
}

#[tokio::test]
async fn compression_inside_the_layer_never_sends_the_identity_tag_on_compressed_bytes() {
    use tower_http::compression::CompressionLayer;
    use tower_http::map_response_body::MapResponseBodyLayer;
    let body: &'static str = Box::leak("{\"item\":\"tea\"},".repeat(200).into_boxed_str());
    let layer = CacheLayer::builder().build().unwrap();
    let svc = layer.layer(
        MapResponseBodyLayer::new(ResponseBody::inner)
            .layer(CompressionLayer::new().layer(respond_with(move |_| text(body)))),
    );
    let ask = |encoding: Option<&str>, tag: Option<&str>| {
        let mut req = Request::get("/doc");
        if let Some(encoding) = encoding {
            req = req.header("accept-encoding", encoding);
        }
        if let Some(tag) = tag {
            req = req.header("if-none-match", tag);
        }
        req.body(Body::default()).unwrap()
    };
    let plain = svc.clone().oneshot(ask(None, None)).await.unwrap();
    let plain_tag = plain.headers()["etag"].to_str().unwrap().to_owned();
    assert_eq!(
        plain_tag,
        EntityTag::of_body(body.as_bytes(), false).to_string()
    );
    // The compressed body is a stream of unknown length: no tag at all, never the identity's.
    let gzip = svc.clone().oneshot(ask(Some("gzip"), None)).await.unwrap();
    assert_eq!(gzip.headers()["content-encoding"], "gzip");
    assert_eq!(gzip.headers().get("etag"), None);
    // So the identity tag never revalidates compressed bytes.
    let res = svc
        .oneshot(ask(Some("gzip"), Some(&plain_tag)))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn a_read_of_another_variant_does_not_end_the_changed_mark() {
    let store = memory_store(&ManualClock::new());
    let resource = Resource::new("v1");
    let mut svc = stored_layer(&store).layer(resource.service());
    let (_, headers) = status(&mut svc, send("GET", &[], "")).await;
    let v1 = headers["etag"].to_str().unwrap().to_owned();
    status(&mut svc, send("PUT", &[("if-match", &v1)], "v2")).await;
    // Someone reads another variant (a query): it is stored ...
    let req = Request::get("/doc?x=1").body(Body::default()).unwrap();
    status(&mut svc, req).await;
    // ... but this variant's old tag is still refused, and so is a stale date.
    let (code, _) = status(&mut svc, send("PUT", &[("if-match", &v1)], "lost")).await;
    assert_eq!(code, 412);
    let since = [("if-unmodified-since", "Sun, 06 Nov 1994 08:49:37 GMT")];
    let (code, _) = status(&mut svc, send("PUT", &since, "lost")).await;
    assert_eq!(code, 412);
    assert_eq!(&*resource.body.lock().unwrap(), "v2");
}

#[tokio::test]
async fn a_write_with_credentials_forgets_for_everyone_and_is_never_stuck() {
    let store = memory_store(&ManualClock::new());
    let resource = Resource::new("v1");
    let mut svc = stored_layer(&store).layer(resource.service());
    let (_, headers) = status(&mut svc, send("GET", &[], "")).await;
    let v1 = headers["etag"].to_str().unwrap().to_owned();
    let auth = ("authorization", "Bearer t");
    let (code, _) = status(&mut svc, send("PUT", &[auth], "v2")).await;
    assert_eq!(code, 200);
    // An anonymous reader holding v1 is not answered from the store any more.
    let calls = resource.calls();
    let (code, _) = status(&mut svc, send("GET", &[("if-none-match", &v1)], "")).await;
    assert_eq!((code, resource.calls()), (200, calls + 1));
    // A user's conditional write is judged by stored validators only: after another write
    // ("changed", nothing stored for this path), it reaches its handler.
    status(&mut svc, send("PUT", &[auth], "v3")).await;
    let (code, _) = status(
        &mut svc,
        send("PUT", &[auth, ("if-match", "\"users-own\"")], "v4"),
    )
    .await;
    assert_eq!(code, 200);
}

#[tokio::test]
async fn while_a_write_runs_a_stale_write_is_refused() {
    let store = memory_store(&ManualClock::new());
    let layer = stored_layer(&store);
    let resource = Resource::new("v1");
    let mut reader = layer.layer(resource.service());
    let (_, headers) = status(&mut reader, send("GET", &[], "")).await;
    let v1 = headers["etag"].to_str().unwrap().to_owned();
    // A write whose handler is still committing.
    let (handler, started_rx, go_tx) = held("saved");
    let slow = layer.layer(handler);
    let writing = tokio::spawn(slow.oneshot(send("PUT", &[("if-match", &v1)], "v2")));
    started_rx.await.unwrap();
    // Meanwhile another client writes with the same, soon stale, tag: refused.
    let (code, _) = status(&mut reader, send("PUT", &[("if-match", &v1)], "v2'")).await;
    assert_eq!(code, 412);
    go_tx.send(()).unwrap();
    assert_eq!(writing.await.unwrap().unwrap().status(), 200);
}
