//! The metrics layer inside axum: values after a known sequence of requests, read back by
//! parsing the exposition with an independent parser (prometheus-parse); bounded labels;
//! percentiles and SLOs on paused time; gRPC trailers; bodies dropped early.

use std::borrow::Cow;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body::Frame;
use http_body_util::BodyExt;
use tower::ServiceExt;
use tower_bulwark::clock::{ManualClock, TokioClock};
use tower_bulwark::metrics::{MetricsLayer, MetricsRegistry, Objective, Slo, Verdict};

/// The exposition, parsed by prometheus-parse. (That parser reads no label value holding a
/// brace, which axum's `{id}` templates do: the tests that go through it use plain routes,
/// and the demo's check reads templated ones with Python's prometheus_client parser.)
fn scrape(registry: &MetricsRegistry) -> prometheus_parse::Scrape {
    let text = registry.encode_prometheus();
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap()
}

/// The value of the sample `metric` with exactly these labels (among others it may have).
fn value(scrape: &prometheus_parse::Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            other => panic!("{metric} is {other:?}"),
        })
}

fn histogram(
    scrape: &prometheus_parse::Scrape,
    metric: &str,
    labels: &[(&str, &str)],
) -> Vec<(f64, f64)> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            prometheus_parse::Value::Histogram(counts) => {
                counts.iter().map(|c| (c.less_than, c.count)).collect()
            }
            other => panic!("{metric} is {other:?}"),
        })
        .unwrap_or_default()
}

async fn send(app: &Router, method: &str, path: &str) -> StatusCode {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .body(axum::body::Body::empty())
        .unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    res.into_body().collect().await.unwrap();
    status
}

#[tokio::test]
async fn a_known_sequence_reads_back_from_the_exposition() {
    let clock = ManualClock::new();
    let registry = MetricsRegistry::new();
    let metrics = MetricsLayer::builder()
        .registry(&registry)
        .clock(clock.clone())
        .build()
        .unwrap();
    let (slow, fast) = (clock.clone(), clock.clone());
    let app = Router::new()
        .route(
            "/users",
            get(move || {
                // Each call takes 30 ms of the layer's clock.
                slow.advance(Duration::from_millis(30));
                async { "user" }
            }),
        )
        .route(
            "/boom",
            get(move || {
                fast.advance(Duration::from_millis(700));
                async { StatusCode::INTERNAL_SERVER_ERROR }
            }),
        )
        .layer(metrics.clone());
    for _ in 1..=3 {
        assert_eq!(send(&app, "GET", "/users").await, 200);
    }
    assert_eq!(send(&app, "DELETE", "/users").await, 405);
    assert_eq!(send(&app, "BREW", "/users").await, 405);
    assert_eq!(send(&app, "GET", "/boom").await, 500);
    for path in ["/nope", "/users/1"] {
        assert_eq!(send(&app, "GET", path).await, 404);
    }

    let s = scrape(&registry);
    let users_ok = [
        ("method", "GET"),
        ("route", "/users"),
        ("status_code", "200"),
    ];
    assert_eq!(value(&s, "http_requests_total", &users_ok), Some(3.0));
    assert_eq!(
        value(
            &s,
            "http_requests_total",
            &[("method", "DELETE"), ("status_code", "405")]
        ),
        Some(1.0)
    );
    // A made-up method shares one label.
    assert_eq!(
        value(
            &s,
            "http_requests_total",
            &[("method", "OTHER"), ("route", "/users")]
        ),
        Some(1.0)
    );
    // Unmatched paths: one constant route label, never the raw path.
    assert_eq!(
        value(
            &s,
            "http_requests_total",
            &[("route", "unmatched"), ("status_code", "404")]
        ),
        Some(2.0)
    );
    assert!(s
        .samples
        .iter()
        .all(|x| x.labels.get("route") != Some("/nope")));
    // 30 ms each: all three in the 0.05 bucket, none in 0.01.
    let buckets = histogram(&s, "http_request_duration_seconds", &users_ok);
    assert!(buckets.contains(&(0.01, 0.0)), "{buckets:?}");
    assert!(buckets.contains(&(0.05, 3.0)), "{buckets:?}");
    assert!(buckets.contains(&(f64::INFINITY, 3.0)), "{buckets:?}");
    assert_eq!(
        value(&s, "http_request_duration_seconds_count", &users_ok),
        Some(3.0)
    );
    let boom = [("route", "/boom"), ("status_code", "500")];
    let buckets = histogram(&s, "http_request_duration_seconds", &boom);
    assert!(
        buckets.contains(&(0.5, 0.0)) && buckets.contains(&(1.0, 1.0)),
        "{buckets:?}"
    );
    // Nothing in flight once every body ended.
    assert_eq!(
        value(
            &s,
            "http_requests_in_flight",
            &[("route", "/users"), ("method", "GET")]
        ),
        Some(0.0)
    );
    // In code: 8 requests, one server error; the route's own window.
    let all = metrics.latency();
    assert_eq!(all.count, 8);
    assert_eq!(all.error_rate, 1.0 / 8.0);
    assert_eq!(metrics.route_latency("/users").unwrap().count, 5);
}

#[tokio::test]
async fn the_route_label_is_the_matched_template() {
    let metrics = MetricsLayer::builder().build().unwrap();
    let app = Router::new()
        .route("/users/{id}", get(|| async { "u" }))
        .layer(metrics.clone());
    for id in 1..=3 {
        send(&app, "GET", &format!("/users/{id}")).await;
    }
    assert_eq!(metrics.route_latency("/users/{id}").unwrap().count, 3);
    assert_eq!(metrics.route_latency("/users/1"), None);
}

#[tokio::test]
async fn openmetrics_when_asked_and_the_prometheus_format_otherwise() {
    let metrics = MetricsLayer::builder().build().unwrap();
    let app = Router::new()
        .route("/", get(|| async { "hi" }))
        .layer(metrics.clone())
        .route_service("/metrics", metrics.registry().service());
    send(&app, "GET", "/").await;
    let ask = |accept: Option<&str>| {
        let mut req = Request::get("/metrics");
        if let Some(accept) = accept {
            req = req.header("accept", accept);
        }
        req.body(axum::body::Body::empty()).unwrap()
    };
    let res = app.clone().oneshot(ask(None)).await.unwrap();
    assert_eq!(
        res.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text =
        String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    let parsed = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    assert_eq!(
        value(&parsed, "http_requests_total", &[("route", "/")]),
        Some(1.0)
    );
    let res = app
        .oneshot(ask(Some(
            "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
        )))
        .await
        .unwrap();
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let text =
        String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
}

#[tokio::test]
async fn route_labels_stay_bounded_under_random_paths() {
    let registry = MetricsRegistry::new();
    // The worst user function: the raw path as the route. The cap still holds.
    let metrics = MetricsLayer::builder()
        .registry(&registry)
        .route(|parts| Some(Cow::Owned(parts.uri.path().to_owned())))
        .max_routes(50)
        .build()
        .unwrap();
    let app = Router::new()
        .fallback(|| async { "x" })
        .layer(metrics.clone());
    for i in 0..10_000u32 {
        send(
            &app,
            "GET",
            &format!("/r/{:x}", i.wrapping_mul(2_654_435_761)),
        )
        .await;
    }
    let s = scrape(&registry);
    let mut routes: Vec<&str> = s
        .samples
        .iter()
        .filter(|x| x.metric == "http_requests_total")
        .filter_map(|x| x.labels.get("route"))
        .collect();
    routes.sort_unstable();
    routes.dedup();
    assert_eq!(routes.len(), 51, "50 routes and `other`");
    assert_eq!(
        value(&s, "http_requests_total", &[("route", "other")]),
        Some(9_950.0)
    );
    assert!(metrics.routes().len() <= 52);

    // With axum's matched path, random paths that match nothing are all `unmatched`.
    let registry = MetricsRegistry::new();
    let metrics = MetricsLayer::builder().registry(&registry).build().unwrap();
    let app = Router::new()
        .route("/known", get(|| async { "k" }))
        .layer(metrics);
    for i in 0..10_000u32 {
        send(&app, "GET", &format!("/{i}")).await;
    }
    let s = scrape(&registry);
    assert!(s
        .samples
        .iter()
        .all(|x| matches!(x.labels.get("route"), None | Some("unmatched"))));
    assert_eq!(
        value(&s, "http_requests_total", &[("route", "unmatched")]),
        Some(10_000.0)
    );
}

#[tokio::test(start_paused = true)]
async fn percentiles_of_a_known_distribution_and_the_slo_on_paused_time() {
    let metrics = MetricsLayer::builder()
        .clock(TokioClock::new())
        .build()
        .unwrap();
    let app = Router::new()
        .route(
            "/work/{ms}",
            get(
                |axum::extract::Path(ms): axum::extract::Path<u64>| async move {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    "done"
                },
            ),
        )
        .layer(metrics.clone());
    // 1 ms to 100 ms, once each.
    for ms in 1..=100 {
        send(&app, "GET", &format!("/work/{ms}")).await;
    }
    let s = metrics.route_latency("/work/{ms}").unwrap();
    assert_eq!(s.count, 100);
    let near = |d: Option<Duration>, ms: f64| {
        let got = d.unwrap().as_secs_f64() * 1000.0;
        assert!((got - ms).abs() <= ms * 0.02, "{got} ms, not {ms} ms");
    };
    near(s.p50, 50.0);
    near(s.p95, 95.0);
    near(s.p99, 99.0);
    // Over the default objectives: p50 50 ms is not below 50 ms; p95 and p99 pass.
    let report = Slo::default().check(&s);
    let verdict = |o| {
        report
            .results
            .iter()
            .find(|r| r.objective == o)
            .unwrap()
            .verdict
    };
    assert_eq!(verdict(Objective::P50), Verdict::Fail);
    assert_eq!(verdict(Objective::P95), Verdict::Pass);
    assert_eq!(verdict(Objective::P99), Verdict::Pass);
    assert_eq!(verdict(Objective::ErrorRate), Verdict::Pass);
    assert_eq!(verdict(Objective::Availability), Verdict::Pass);
    assert!(!report.passed());
    assert!(report.window <= Duration::from_secs(60) && report.window > Duration::ZERO);
    assert!(Slo::default()
        .p50(Duration::from_millis(60))
        .check(&s)
        .passed());

    // Two minutes later the window is empty: nothing to judge.
    tokio::time::advance(Duration::from_secs(120)).await;
    let report = Slo::default().check(&metrics.latency());
    assert!(report.results.iter().all(|r| r.verdict == Verdict::NoData));
}

#[tokio::test]
async fn errors_and_refusals_count_against_the_objectives() {
    let metrics = MetricsLayer::builder().build().unwrap();
    let app = Router::new()
        .route("/ok", get(|| async { "ok" }))
        .route("/fail", get(|| async { StatusCode::BAD_GATEWAY }))
        .route("/busy", get(|| async { StatusCode::TOO_MANY_REQUESTS }))
        .layer(metrics.clone());
    for _ in 0..997 {
        send(&app, "GET", "/ok").await;
    }
    send(&app, "GET", "/fail").await;
    send(&app, "GET", "/busy").await;
    send(&app, "GET", "/busy").await;
    let s = metrics.latency();
    assert_eq!(s.count, 1000);
    assert_eq!(s.error_rate, 0.001);
    assert_eq!(s.availability, 0.997);
    assert_eq!(s.refused, 2);
    let report = Slo::default().check(&s);
    let result = |o| *report.results.iter().find(|r| r.objective == o).unwrap();
    // 0.1 % is not below 0.1 %; 99.7 % is below 99.9 %.
    assert_eq!(result(Objective::ErrorRate).verdict, Verdict::Fail);
    assert_eq!(result(Objective::ErrorRate).measured, Some(0.001));
    assert_eq!(result(Objective::Availability).verdict, Verdict::Fail);
    assert!(Slo::default()
        .error_rate(0.002)
        .availability(0.99)
        .check(&s)
        .passed());
}

/// A body of two data frames, then trailers with `grpc-status`; or one that stays open.
struct Grpc {
    frames: Vec<Frame<Bytes>>,
}

impl http_body::Body for Grpc {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.frames.is_empty() {
            return Poll::Pending;
        }
        Poll::Ready(Some(Ok(self.frames.remove(0))))
    }
}

fn grpc_response(status: Option<&'static str>) -> http::Response<axum::body::Body> {
    let mut frames = vec![Frame::data(Bytes::from_static(b"\0\0\0\0\0"))];
    if let Some(status) = status {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", status.parse().unwrap());
        frames.push(Frame::trailers(trailers));
    }
    http::Response::builder()
        .header("content-type", "application/grpc")
        .body(axum::body::Body::new(Grpc { frames }))
        .unwrap()
}

#[tokio::test]
async fn grpc_status_in_trailers_and_a_body_dropped_early() {
    let registry = MetricsRegistry::new();
    let metrics = MetricsLayer::builder()
        .registry(&registry)
        .route(|parts| Some(Cow::Owned(parts.uri.path().to_owned())))
        .build()
        .unwrap();
    let svc = tower::Layer::layer(
        &metrics,
        tower::service_fn(|req: Request<axum::body::Body>| async move {
            let status = match req.uri().path() {
                "/pkg.Svc/Ok" => Some("0"),
                "/pkg.Svc/Down" => Some("14"),
                _ => None,
            };
            Ok::<_, Infallible>(grpc_response(status))
        }),
    );
    let call = |path: &str| {
        Request::post(path)
            .header("content-type", "application/grpc")
            .body(axum::body::Body::empty())
            .unwrap()
    };
    for path in ["/pkg.Svc/Ok", "/pkg.Svc/Down"] {
        let res = svc.clone().oneshot(call(path)).await.unwrap();
        let mut body = res.into_body();
        while let Some(frame) = body.frame().await {
            if frame.unwrap().is_trailers() {
                break;
            }
        }
    }
    // UNAVAILABLE in the trailers is a server error; OK is not.
    assert_eq!(
        metrics.route_latency("/pkg.Svc/Ok").unwrap().error_rate,
        0.0
    );
    assert_eq!(
        metrics.route_latency("/pkg.Svc/Down").unwrap().error_rate,
        1.0
    );

    // A stream the client stops reading: in flight until it is dropped, then counted.
    let res = svc.clone().oneshot(call("/pkg.Svc/Stream")).await.unwrap();
    let mut body = res.into_body();
    body.frame().await.unwrap().unwrap();
    let in_flight = [("route", "/pkg.Svc/Stream")];
    assert_eq!(
        value(&scrape(&registry), "http_requests_in_flight", &in_flight),
        Some(1.0)
    );
    drop(body);
    let s = scrape(&registry);
    assert_eq!(value(&s, "http_requests_in_flight", &in_flight), Some(0.0));
    assert_eq!(
        value(&s, "http_response_bodies_dropped_total", &in_flight),
        Some(1.0)
    );
    assert_eq!(metrics.route_latency("/pkg.Svc/Stream").unwrap().dropped, 1);
}

#[test]
fn the_builder_names_the_bad_field() {
    let err = MetricsLayer::builder().buckets([]).build().unwrap_err();
    assert_eq!(err.field(), "buckets");
    let err = MetricsLayer::builder()
        .buckets([0.1, f64::NAN])
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "buckets");
    let err = MetricsLayer::builder()
        .window(Duration::from_micros(10), 6)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "window");
    assert_eq!(
        MetricsLayer::builder()
            .max_routes(0)
            .build()
            .unwrap_err()
            .field(),
        "max_routes"
    );
}

/// Serves `app` on a real hyper server (axum::serve) on a free loopback port.
async fn serve(app: Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

#[tokio::test]
async fn through_a_real_server_finished_bodies_are_not_dropped_ones() {
    // hyper stops polling a body once it says it has ended, and drops it: that must count
    // as finished (its 5xx a server error), never as a body the client abandoned.
    let registry = MetricsRegistry::new();
    let metrics = MetricsLayer::builder().registry(&registry).build().unwrap();
    let app = Router::new()
        .route("/ok", get(|| async { "fine" }))
        .route("/empty", get(|| async { StatusCode::NO_CONTENT }))
        .route("/boom", get(|| async { StatusCode::INTERNAL_SERVER_ERROR }))
        .layer(metrics.clone());
    let addr = serve(app).await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<Bytes>>();
    for path in ["/ok", "/ok", "/empty", "/boom"] {
        let res = client
            .get(format!("http://{addr}{path}").parse().unwrap())
            .await
            .unwrap();
        res.into_body().collect().await.unwrap();
    }
    // The server records when it is done with the body, after the client has it: wait
    // (bounded) for the fourth.
    for _ in 0..200 {
        if metrics.latency().count == 4 {
            break;
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let s = metrics.latency();
    assert_eq!(s.count, 4);
    assert_eq!(s.dropped, 0);
    assert_eq!(s.error_rate, 0.25);
    let parsed = scrape(&registry);
    assert_eq!(
        value(&parsed, "http_response_bodies_dropped_total", &[]),
        None,
        "no body counted as dropped"
    );
    assert_eq!(
        value(
            &parsed,
            "http_requests_total",
            &[("route", "/empty"), ("status_code", "204")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&parsed, "http_requests_in_flight", &[("route", "/ok")]),
        Some(0.0)
    );
}
