//! Zero or inconsistent configuration fails at `build()` with a `ConfigError` naming the field.

use std::time::Duration;

use tower_bulwark::rate_limit::{Limit, RateLimitBuilder, RateLimitLayer};
use tower_bulwark::ConfigError;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Builds the configuration as the HTTP layer and as the generic one; both must fail alike.
fn error(make: impl Fn() -> RateLimitBuilder) -> ConfigError {
    let http = make().build().unwrap_err();
    let generic = make().build_generic().unwrap_err();
    assert_eq!(http, generic);
    http
}

fn assert_error(make: impl Fn() -> RateLimitBuilder, field: &str, message: &str) {
    let err = error(make);
    assert_eq!(err.field(), field);
    assert_eq!(err.to_string(), message);
    assert_eq!(
        err.rule(),
        message.strip_prefix(&format!("`{field}` ")).unwrap()
    );
}

#[test]
fn limit_zero() {
    let all: [fn(u64, Duration) -> Limit; 4] = [
        Limit::token_bucket,
        Limit::sliding_window_log,
        Limit::sliding_window_counter,
        Limit::fixed_window,
    ];
    for make in all {
        assert_error(
            || RateLimitLayer::builder().limit(make(0, secs(1))),
            "limit",
            "`limit` must be > 0, got 0",
        );
    }
}

#[test]
fn period_zero() {
    assert_error(
        || RateLimitLayer::sliding_window_log(10, Duration::ZERO),
        "period",
        "`period` must be > 0, got 0s",
    );
    assert_error(
        || RateLimitLayer::token_bucket(10, Duration::ZERO),
        "period",
        "`period` must be > 0, got 0s",
    );
}

#[test]
fn burst_zero() {
    assert_error(
        || RateLimitLayer::token_bucket(10, secs(1)).burst(0),
        "burst",
        "`burst` must be >= 1, got 0",
    );
    assert_error(
        || RateLimitLayer::builder().limit(Limit::token_bucket(10, secs(1)).burst(0)),
        "burst",
        "`burst` must be >= 1, got 0",
    );
}

#[test]
fn burst_on_a_window_algorithm() {
    assert_error(
        || RateLimitLayer::fixed_window(10, secs(1)).burst(5),
        "burst",
        "`burst` applies only to token_bucket, got burst 5 on fixed_window",
    );
    assert_error(
        || RateLimitLayer::sliding_window_log(10, secs(1)).burst(1),
        "burst",
        "`burst` applies only to token_bucket, got burst 1 on sliding_window_log",
    );
    assert_error(
        || RateLimitLayer::sliding_window_counter(10, secs(1)).burst(20),
        "burst",
        "`burst` applies only to token_bucket, got burst 20 on sliding_window_counter",
    );
}

#[test]
fn no_limits() {
    assert_error(
        RateLimitLayer::builder,
        "limits",
        "`limits` must hold at least one limit, got none",
    );
    // `burst` or `name` with no limit to apply to is a mistake, reported by name.
    assert_error(
        || RateLimitLayer::builder().burst(3).name("x"),
        "burst",
        "`burst` must follow a limit: add one with `.limit(...)` or start from an algorithm such as `RateLimitLayer::token_bucket`",
    );
    assert_error(
        || RateLimitLayer::builder().name("x").limit(Limit::fixed_window(1, secs(1))),
        "name",
        "`name` must follow a limit: add one with `.limit(...)` or start from an algorithm such as `RateLimitLayer::token_bucket`",
    );
}

#[test]
fn max_keys_zero() {
    assert_error(
        || RateLimitLayer::fixed_window(10, secs(1)).max_keys(0),
        "max_keys",
        "`max_keys` must be > 0, got 0",
    );
}

#[test]
fn skip_successful_and_skip_failed_together() {
    assert_error(
        || {
            RateLimitLayer::fixed_window(10, secs(1))
                .skip_successful(true)
                .skip_failed(true)
        },
        "skip_failed",
        "`skip_failed` cannot be set with skip_successful: every request would be refunded",
    );
}

#[test]
fn duplicate_names() {
    assert_error(
        || {
            RateLimitLayer::builder()
                .limit(Limit::token_bucket(10, secs(1)).name("burst"))
                .limit(Limit::fixed_window(100, secs(60)).name("burst"))
        },
        "name",
        r#"`name` must be unique per layer, got "burst" twice"#,
    );
    // The first limit's default name is "default"; the second's "limit1".
    assert_error(
        || {
            RateLimitLayer::builder()
                .limit(Limit::token_bucket(10, secs(1)))
                .limit(Limit::fixed_window(100, secs(60)).name("default"))
        },
        "name",
        r#"`name` must be unique per layer, got "default" twice"#,
    );
    assert_error(
        || {
            RateLimitLayer::builder()
                .limit(Limit::token_bucket(10, secs(1)))
                .limit(Limit::fixed_window(100, secs(60)))
                .limit(Limit::fixed_window(1000, secs(3600)).name("limit1"))
        },
        "name",
        r#"`name` must be unique per layer, got "limit1" twice"#,
    );
}

#[test]
fn names_that_would_break_the_header() {
    for (name, shown) in [
        (r#"a"b"#, r#""a\"b""#),
        ("", r#""""#),
        ("per second", r#""per second""#),
        (r"back\slash", r#""back\\slash""#),
        ("naïve", r#""naïve""#),
        ("tab\t", r#""tab\t""#),
    ] {
        assert_error(
            || RateLimitLayer::fixed_window(10, secs(1)).name(name),
            "name",
            &format!(
                "`name` must be non-empty printable ASCII without quotes or backslashes, got {shown}"
            ),
        );
    }
    // Printable ASCII is fine, and shows up as is.
    assert!(RateLimitLayer::fixed_window(10, secs(1))
        .name("per-second_v2.1;q")
        .build()
        .is_ok());
}

#[test]
fn token_bucket_faster_than_one_per_nanosecond() {
    assert_error(
        || RateLimitLayer::token_bucket(10, Duration::from_nanos(5)),
        "limit",
        "`limit` must be at most one per nanosecond of `period`, got 10 per 5ns",
    );
    // One per nanosecond exactly is allowed; window algorithms have no such rule.
    assert!(RateLimitLayer::token_bucket(5, Duration::from_nanos(5))
        .build()
        .is_ok());
    assert!(RateLimitLayer::fixed_window(10, Duration::from_nanos(5))
        .build()
        .is_ok());
}

#[test]
fn the_first_bad_limit_is_named_in_order() {
    // The second limit's period is bad and the third's burst: the second is reported.
    assert_error(
        || {
            RateLimitLayer::builder()
                .limit(Limit::fixed_window(10, secs(1)))
                .limit(Limit::fixed_window(10, Duration::ZERO))
                .limit(Limit::token_bucket(10, secs(1)).burst(0))
        },
        "period",
        "`period` must be > 0, got 0s",
    );
}

#[test]
fn config_error_is_a_std_error() {
    let err: Box<dyn std::error::Error + Send + Sync> = Box::new(error(RateLimitLayer::builder));
    assert_eq!(
        err.to_string(),
        "`limits` must hold at least one limit, got none"
    );
}

#[test]
fn period_longer_than_ten_years() {
    assert_error(
        || RateLimitLayer::fixed_window(10, Duration::from_secs(u64::MAX)),
        "period",
        &format!(
            "`period` must be at most 10 years, got {:?}",
            Duration::from_secs(u64::MAX)
        ),
    );
    // Exactly the bound is accepted.
    assert!(
        RateLimitLayer::sliding_window_counter(10, tower_bulwark::rate_limit::MAX_PERIOD)
            .build()
            .is_ok()
    );
}
