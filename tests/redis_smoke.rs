#![cfg(feature = "redis")]
mod common;

use std::time::Duration;

use common::redis_server::RedisServer;
use tower_bulwark::backend::redis::RedisBackend;
use tower_bulwark::backend::{Decision, RateLimitBackend};
use tower_bulwark::key::Key;
use tower_bulwark::rate_limit::{Limit, RateLimitLayer};

#[tokio::test]
async fn smoke() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let redis = RedisBackend::connect(&server.url()).await.unwrap();
    for limit in [
        Limit::token_bucket(3, Duration::from_secs(10)),
        Limit::fixed_window(3, Duration::from_secs(10)),
        Limit::sliding_window_counter(3, Duration::from_secs(10)),
        Limit::sliding_window_log(3, Duration::from_secs(10)),
    ] {
        let layer = RateLimitLayer::builder()
            .limit(limit.clone())
            .backend(redis.clone())
            .build()
            .unwrap();
        let b = layer.backend();
        let mut allowed = 0;
        for _ in 0..5 {
            let v = match b.decide(&Key::from("k"), 1) {
                Decision::Ready(v) => v,
                Decision::Pending(p) => p.await,
            };
            println!("{:?} {:?}", limit.algorithm(), v);
            if v.allowed() {
                allowed += 1;
            }
        }
        println!(
            "{:?} stats {:?} keys {:?}",
            limit.algorithm(),
            b.stats(),
            server.cli(&["keys", "*"])
        );
        assert_eq!(allowed, 3);
    }
}
