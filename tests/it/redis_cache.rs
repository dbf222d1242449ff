//! The validator store in Redis, on a private `redis-server`: two instances share what was
//! served (one answers the other's reader before its handler runs), a write through one is
//! forgotten by both, `invalidate` reaches the fleet, and with Redis frozen or killed a
//! request is served as if there were no store, within the deadline.

use std::time::{Duration, Instant};

use tower::Layer;
use tower_bulwark::cache::{CacheLayer, ValidatorStore};
use tower_bulwark::redis::RedisBackend;

use crate::common::cache::{send, status, Resource};
use crate::common::redis_server::{start_redis, RedisServer};

/// A healthy Redis on a loaded machine makes this.
const PATIENT: Duration = Duration::from_secs(5);

async fn store(server: &RedisServer, deadline: Duration) -> ValidatorStore {
    let redis = RedisBackend::connect(&server.url()).await.unwrap();
    ValidatorStore::builder()
        .redis(redis)
        .redis_deadline(deadline)
        .build()
        .unwrap()
}

fn layer(store: &ValidatorStore) -> CacheLayer {
    CacheLayer::max_age(Duration::from_secs(60))
        .validator_store(store.clone())
        .build()
        .unwrap()
}

/// Waits (bounded) until the background write of a read's validators has reached Redis.
fn wait_for_keys(server: &RedisServer, want: usize) {
    let started = Instant::now();
    loop {
        let n: usize = server.cli(&["DBSIZE"]).parse().unwrap_or(0);
        if n >= want {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the store write never came"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_instance_answers_what_another_served_and_a_write_is_forgotten_by_both() {
    let server = start_redis!();
    let (a_store, b_store) = (store(&server, PATIENT).await, store(&server, PATIENT).await);
    let (a_res, b_res) = (Resource::new("v1"), Resource::new("v1"));
    let mut a = layer(&a_store).layer(a_res.service());
    let mut b = layer(&b_store).layer(b_res.service());

    let (_, headers) = status(&mut a, send("GET", &[], "")).await;
    let v1 = headers["etag"].to_str().unwrap().to_owned();
    wait_for_keys(&server, 1);
    // The key is the hashed path (a query may carry a token), with a TTL of max-age.
    let keys = server.cli(&["KEYS", "*"]);
    assert!(!keys.contains("/doc"), "{keys}");
    let ttl: i64 = server.cli(&["PTTL", keys.trim()]).parse().unwrap();
    assert!(ttl > 0 && ttl <= 60_000, "{ttl}");

    let (code, headers) = status(&mut b, send("GET", &[("if-none-match", &v1)], "")).await;
    assert_eq!(
        (code, b_res.calls()),
        (304, 0),
        "B answered from what A served"
    );
    assert_eq!(headers["etag"], v1.as_str());
    // A stale write through B is refused before B's handler.
    let (code, _) = status(&mut b, send("PUT", &[("if-match", "\"other\"")], "x")).await;
    assert_eq!((code, b_res.calls()), (412, 0));

    // A write through A: B knows it changed (a conditional write through B is refused until a
    // read tells the store the new tag), and its next reader reaches its handler.
    let (code, _) = status(&mut a, send("PUT", &[("if-match", &v1)], "v2")).await;
    assert_eq!(code, 200);
    let (code, _) = status(&mut b, send("PUT", &[("if-match", &v1)], "stale")).await;
    assert_eq!((code, b_res.calls()), (412, 0));
    let (code, _) = status(&mut b, send("GET", &[("if-none-match", &v1)], "")).await;
    assert_eq!(
        (code, b_res.calls()),
        (304, 1),
        "judged on B's (unchanged) handler"
    );

    // `invalidate` from anywhere: the hash keeps only the generation and the "changed" mark,
    // with a TTL.
    a_store.invalidate("/doc").await.unwrap();
    let key = server.cli(&["KEYS", "*"]);
    let fields = server.cli(&["HKEYS", key.trim()]);
    let mut fields: Vec<&str> = fields.split_whitespace().collect();
    fields.sort_unstable();
    assert_eq!(fields, ["c", "g"]);
    assert!(server.cli(&["PTTL", key.trim()]).parse::<i64>().unwrap() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_is_served_around_within_the_deadline() {
    let server = start_redis!();
    let deadline = Duration::from_millis(100);
    let store = store(&server, deadline).await;
    let resource = Resource::new("v1");
    let mut svc = layer(&store).layer(resource.service());
    let (_, headers) = status(&mut svc, send("GET", &[], "")).await;
    let v1 = headers["etag"].to_str().unwrap().to_owned();
    wait_for_keys(&server, 1);

    server.freeze();
    let started = Instant::now();
    let (code, _) = status(&mut svc, send("GET", &[("if-none-match", &v1)], "")).await;
    let took = started.elapsed();
    // As if there were no store: the handler ran, its response judged (304).
    assert_eq!((code, resource.calls()), (304, 2));
    assert!(took < deadline * 10, "took {took:?}");
    // Two more time-outs: the store leaves Redis alone for a back-off (no call is sent).
    for n in 3..=4 {
        let (code, _) = status(&mut svc, send("GET", &[("if-none-match", &v1)], "")).await;
        assert_eq!((code, resource.calls()), (304, n));
    }
    // A write meanwhile: its forget is not sent, and waits for nothing.
    let started = Instant::now();
    let (code, _) = status(&mut svc, send("PUT", &[], "v2")).await;
    assert_eq!(code, 200);
    assert!(started.elapsed() < deadline * 10);
    // Redis did not take the forget: until it does, this instance serves the path as if
    // there were no store (the old tag is not answered from it) ...
    let (code, _) = status(&mut svc, send("GET", &[("if-none-match", &v1)], "")).await;
    assert_eq!((code, resource.calls()), (200, 6));
    // ... and once Redis is back, the forget is sent again: the stored v1 is gone for every
    // instance (bounded wait for the resend task, every 500 ms).
    server.thaw();
    let key = server.cli(&["KEYS", "*"]);
    let started = Instant::now();
    loop {
        let fields = server.cli(&["HKEYS", key.trim()]);
        let mut fields: Vec<&str> = fields.split_whitespace().collect();
        fields.sort_unstable();
        if fields == ["c", "g"] {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the owed forget never came: {fields:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_redis_is_served_around_and_invalidate_says_so() {
    let mut server = start_redis!();
    let store = store(&server, Duration::from_millis(200)).await;
    let resource = Resource::new("v1");
    let mut svc = layer(&store).layer(resource.service());
    server.kill();
    for n in 1..=5 {
        let (code, _) = status(&mut svc, send("GET", &[("if-none-match", "\"x\"")], "")).await;
        assert_eq!((code, resource.calls()), (200, n));
    }
    assert!(store.invalidate("/doc").await.is_err());
}
