//! The non-HTTP variant (`build_generic`): refusals and missing keys are typed, boxed errors;
//! the inner service's own errors pass through untouched.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tower::{BoxError, Layer, Service, ServiceBuilder, ServiceExt};
use tower_bulwark::clock::ManualClock;
use tower_bulwark::key::{from_fn, Key};
use tower_bulwark::rate_limit::{KeyMissing, MissingKey, RateLimitLayer, RateLimited};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Keys a request by its user name, the text before `/`; an empty name has no key.
fn user() -> impl tower_bulwark::key::KeyExtractor<String> + Clone {
    from_fn(|req: &String| {
        let name = req.split('/').next().unwrap_or_default();
        (!name.is_empty()).then(|| Key::from(name))
    })
}

/// Answers `hi {req}`, or fails with an I/O error when the request ends in `/fail`.
fn inner(
    calls: Arc<AtomicUsize>,
) -> impl Service<String, Response = String, Error = io::Error, Future = impl Send> + Clone {
    tower::service_fn(move |req: String| {
        calls.fetch_add(1, Ordering::SeqCst);
        async move {
            if req.ends_with("/fail") {
                Err(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    "upstream reset",
                ))
            } else {
                Ok(format!("hi {req}"))
            }
        }
    })
}

async fn call<S>(svc: &mut S, req: &str) -> Result<String, BoxError>
where
    S: Service<String, Response = String, Error = BoxError>,
{
    svc.ready().await?.call(req.to_owned()).await
}

fn rate_limited(err: &BoxError) -> RateLimited {
    *err.downcast_ref::<RateLimited>()
        .unwrap_or_else(|| panic!("not RateLimited: {err}"))
}

#[tokio::test]
async fn a_refusal_is_a_boxed_rate_limited_error() {
    let clock = ManualClock::new();
    clock.set(Duration::from_millis(15_250));
    let layer = RateLimitLayer::fixed_window(1, secs(60))
        .key(user())
        .clock(clock.clone())
        .build_generic()
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let mut svc = ServiceBuilder::new()
        .layer(layer.clone())
        .service(inner(calls.clone()));

    assert_eq!(call(&mut svc, "ann").await.unwrap(), "hi ann");
    let err = call(&mut svc, "ann").await.unwrap_err();
    let refusal = rate_limited(&err);
    // The window [0, 60 s) ends 44.75 s from now.
    assert_eq!(
        refusal,
        RateLimited::rate_limited(Duration::from_millis(44_750))
    );
    assert_eq!(refusal.retry_after_secs(), 45);
    assert_eq!(err.to_string(), "rate limited: retry after 45s");
    assert!(err.downcast_ref::<KeyMissing>().is_none());
    // Other keys are not affected; the refused call never reached the inner service.
    assert_eq!(call(&mut svc, "bob").await.unwrap(), "hi bob");
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    clock.set(secs(60));
    assert_eq!(call(&mut svc, "ann").await.unwrap(), "hi ann");
    let stats = layer.stats();
    assert_eq!((stats.allowed, stats.rejected), (3, 1));
}

#[tokio::test]
async fn token_bucket_retry_after_is_exact() {
    let clock = ManualClock::new();
    let layer = RateLimitLayer::token_bucket(3, secs(1)) // a token per 333 333 334 ns (period / limit, rounded up)
        .clock(clock.clone())
        .build_generic()
        .unwrap();
    let mut svc = layer.layer(inner(Arc::default()));
    for _ in 0..3 {
        call(&mut svc, "ann").await.unwrap();
    }
    let err = call(&mut svc, "ann").await.unwrap_err();
    assert_eq!(
        rate_limited(&err).retry_after(),
        Duration::from_nanos(333_333_334)
    );
    assert_eq!(rate_limited(&err).retry_after_secs(), 1);
    clock.set(Duration::from_nanos(333_333_332));
    assert!(call(&mut svc, "ann").await.is_err());
    clock.set(Duration::from_nanos(333_333_334));
    assert!(call(&mut svc, "ann").await.is_ok());
}

#[tokio::test]
async fn a_missing_key_is_a_key_missing_error() {
    let layer = RateLimitLayer::fixed_window(10, secs(60))
        .key(user())
        .clock(ManualClock::new())
        .build_generic()
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let mut svc = layer.layer(inner(calls.clone()));
    let err = call(&mut svc, "/anonymous").await.unwrap_err();
    assert_eq!(err.downcast_ref::<KeyMissing>(), Some(&KeyMissing));
    assert_eq!(err.to_string(), "rate limit key missing from request");
    assert!(err.downcast_ref::<RateLimited>().is_none());
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert_eq!(layer.stats().missing_key, 1);

    // Whatever status `Reject` names, the generic variant answers KeyMissing.
    let layer = RateLimitLayer::fixed_window(10, secs(60))
        .key(user())
        .on_missing_key(MissingKey::Reject(http::StatusCode::BAD_REQUEST))
        .clock(ManualClock::new())
        .build_generic()
        .unwrap();
    let err = call(&mut layer.layer(inner(Arc::default())), "")
        .await
        .unwrap_err();
    assert!(err.is::<KeyMissing>());
}

#[tokio::test]
async fn a_missing_key_can_fall_back() {
    let layer = RateLimitLayer::fixed_window(2, secs(60))
        .key(user())
        .on_missing_key(MissingKey::Fallback(Key::from("anonymous")))
        .clock(ManualClock::new())
        .build_generic()
        .unwrap();
    let mut svc = layer.layer(inner(Arc::default()));
    assert_eq!(call(&mut svc, "/a").await.unwrap(), "hi /a");
    // Same key as the fallback.
    assert_eq!(call(&mut svc, "anonymous").await.unwrap(), "hi anonymous");
    let err = call(&mut svc, "/b").await.unwrap_err();
    assert!(err.is::<RateLimited>());
    assert_eq!(layer.stats().missing_key, 0);
}

#[tokio::test]
async fn inner_errors_pass_through() {
    let layer = RateLimitLayer::fixed_window(5, secs(60))
        .key(user())
        .clock(ManualClock::new())
        .build_generic()
        .unwrap();
    let mut svc = layer.layer(inner(Arc::default()));
    let err = call(&mut svc, "ann/fail").await.unwrap_err();
    let io = err
        .downcast_ref::<io::Error>()
        .expect("the inner io::Error");
    assert_eq!(io.kind(), io::ErrorKind::ConnectionReset);
    assert_eq!(io.to_string(), "upstream reset");
    assert!(!err.is::<RateLimited>());
    // It was admitted and counted.
    let stats = layer.stats();
    assert_eq!((stats.allowed, stats.rejected, stats.refunded), (1, 0, 0));
}

#[tokio::test]
async fn skip_failed_refunds_inner_errors() {
    let layer = RateLimitLayer::fixed_window(1, secs(60))
        .key(user())
        .skip_failed(true)
        .clock(ManualClock::new())
        .build_generic()
        .unwrap();
    let mut svc = layer.layer(inner(Arc::default()));
    for _ in 0..3 {
        let err = call(&mut svc, "ann/fail").await.unwrap_err();
        assert!(err.is::<io::Error>());
    }
    assert_eq!(call(&mut svc, "ann").await.unwrap(), "hi ann");
    assert!(call(&mut svc, "ann").await.unwrap_err().is::<RateLimited>());
    let stats = layer.stats();
    assert_eq!((stats.allowed, stats.refunded, stats.rejected), (4, 3, 1));
}

#[tokio::test]
async fn skip_successful_counts_only_inner_errors() {
    let layer = RateLimitLayer::sliding_window_log(1, secs(60))
        .key(user())
        .skip_successful(true)
        .clock(ManualClock::new())
        .build_generic()
        .unwrap();
    let mut svc = layer.layer(inner(Arc::default()));
    for _ in 0..3 {
        assert_eq!(call(&mut svc, "ann").await.unwrap(), "hi ann");
    }
    assert!(call(&mut svc, "ann/fail")
        .await
        .unwrap_err()
        .is::<io::Error>());
    assert!(call(&mut svc, "ann").await.unwrap_err().is::<RateLimited>());
    assert_eq!(layer.stats().refunded, 3);
}

#[tokio::test]
async fn shadow_mode_lets_refusals_through() {
    let layer = RateLimitLayer::fixed_window(1, secs(60))
        .shadow(true)
        .clock(ManualClock::new())
        .build_generic()
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let mut svc = layer.layer(inner(calls.clone()));
    for _ in 0..4 {
        assert_eq!(call(&mut svc, "ann").await.unwrap(), "hi ann");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    let stats = layer.stats();
    assert_eq!(
        (stats.allowed, stats.shadow_rejected, stats.rejected),
        (1, 3, 0)
    );
}

#[tokio::test]
async fn works_with_oneshot_on_a_non_http_request_type() {
    let layer = RateLimitLayer::fixed_window(1, secs(60))
        .key(from_fn(|n: &u32| Some(Key::Int(u64::from(*n % 2)))))
        .clock(ManualClock::new())
        .build_generic()
        .unwrap();
    let svc = layer.layer(tower::service_fn(|n: u32| async move {
        Ok::<_, std::convert::Infallible>(n * 2)
    }));
    assert_eq!(svc.clone().oneshot(1).await.unwrap(), 2);
    assert_eq!(svc.clone().oneshot(2).await.unwrap(), 4);
    // 3 is odd, like 1: same key.
    assert!(svc
        .clone()
        .oneshot(3)
        .await
        .unwrap_err()
        .is::<RateLimited>());
}
