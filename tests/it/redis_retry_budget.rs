//! The retry budget a fleet shares through Redis, on a private `redis-server`: two instances
//! spend one floor and one ratio instead of one each, shares follow each instance's traffic,
//! a forgotten report is never counted twice, and with Redis killed or frozen each instance
//! decides alone, within the deadline, with its part of the floor.

use std::time::{Duration, Instant};

use crate::common::fleet::{redis, NEVER, PATIENCE, PATIENT_DEADLINE};
use crate::common::redis_server::{start_redis, RedisServer};
use tower_bulwark::retry::{RetryBudget, RetryBudgetBuilder};

/// The budget's hash with the default prefix.
const HASH: &str = "{bulwark:global}:rb";

/// One instance of a fleet the tests sync by hand.
async fn member(
    server: &RedisServer,
    budget: RetryBudgetBuilder,
    deadline: Duration,
) -> RetryBudget {
    let budget = budget
        .backend(redis(server).await)
        .sync_interval(NEVER)
        .deadline(deadline)
        .build()
        .unwrap();
    // The sync task's first round runs at start: wait for it, so that no round of the task
    // runs behind the test's back (setup, bounded).
    let started = Instant::now();
    while budget.fleet_stats().unwrap().syncs == 0 {
        assert!(started.elapsed() < PATIENCE, "the first sync never came");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    budget
}

/// A floor of 10 retries per 10 s window, nothing earned by traffic.
fn floor_only() -> RetryBudgetBuilder {
    RetryBudget::builder().ratio(0.0).min_per_second(1)
}

fn spend_all(budget: &RetryBudget) -> u64 {
    let mut spent = 0;
    while budget.try_withdraw() {
        spent += 1;
    }
    spent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_spend_one_floor_between_them() {
    let server = start_redis!();
    let a = member(&server, floor_only(), PATIENT_DEADLINE).await;
    let b = member(&server, floor_only(), PATIENT_DEADLINE).await;
    // A took the whole floor while alone; now it knows of B, and B gets what A gave back.
    a.sync_fleet().await.unwrap();
    b.sync_fleet().await.unwrap();
    // Each holds half of the fleet's floor, not a floor of its own.
    assert_eq!((a.available(), b.available()), (5, 5));
    let mut spent = 0;
    for _ in 0..6 {
        spent += spend_all(&a) + spend_all(&b);
        a.sync_fleet().await.unwrap();
        b.sync_fleet().await.unwrap();
    }
    // Alone, each would have retried 10 times.
    assert!((8..=10).contains(&spent), "the fleet retried {spent} times");
    assert!(a.available() + b.available() <= 10 - spent);
    let fields = server.cli(&["HGETALL", HASH]);
    assert!(
        fields.lines().filter(|l| l.starts_with('i')).count() == 2,
        "{fields}"
    );
    let ttl: i64 = server.cli(&["PTTL", HASH]).parse().unwrap();
    assert!(ttl > 0, "the hash has a TTL: {ttl}");
    let stats = a.fleet_stats().unwrap();
    assert!(
        stats.syncs >= 8 && stats.errors == 0 && !stats.in_fallback,
        "{stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shares_follow_each_instances_requests() {
    let server = start_redis!();
    let earned = || RetryBudget::builder().ratio(0.5).min_per_second(0);
    let a = member(&server, earned(), PATIENT_DEADLINE).await;
    let b = member(&server, earned(), PATIENT_DEADLINE).await;
    for _ in 0..40 {
        a.deposit();
    }
    a.sync_fleet().await.unwrap();
    b.sync_fleet().await.unwrap();
    a.sync_fleet().await.unwrap();
    // 40 requests earn 20 retries; A made them all: 20 × 41 / (40 + 2 instances).
    assert_eq!(a.available(), 19);
    assert_eq!(b.available(), 0);
    assert!(!b.try_withdraw());
    assert_eq!(spend_all(&a), 19);
    // B's traffic earns B its part: 80 requests earn 40, and A's unreported 19 are still
    // held by A's lease, so B gets 40 × 41 / 82 (no more than the 21 not granted to A).
    for _ in 0..40 {
        b.deposit();
    }
    b.sync_fleet().await.unwrap();
    assert_eq!(b.available(), 20);
    // A reports its 19: 21 left, but B holds 20 of them.
    a.sync_fleet().await.unwrap();
    assert_eq!(a.available(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_the_hash_forgot_is_not_counted_again() {
    let server = start_redis!();
    let a = member(
        &server,
        RetryBudget::builder().ratio(1.0).min_per_second(0),
        PATIENT_DEADLINE,
    )
    .await;
    for _ in 0..10 {
        a.deposit();
    }
    a.sync_fleet().await.unwrap();
    let deposits = |server: &RedisServer| -> u64 {
        let fields = server.cli(&["HGETALL", HASH]);
        let lines: Vec<&str> = fields.lines().collect();
        lines
            .chunks(2)
            .filter(|pair| pair[0].starts_with('d'))
            .map(|pair| pair[1].parse::<u64>().unwrap())
            .sum()
    };
    assert_eq!(deposits(&server), 10);
    // The instance's record is lost (as after an eviction); its slots are not.
    let fields = server.cli(&["HKEYS", HASH]);
    let record = fields
        .lines()
        .find(|f| f.starts_with('i'))
        .unwrap()
        .to_owned();
    server.cli(&["HDEL", HASH, &record]);
    a.sync_fleet().await.unwrap();
    assert_eq!(deposits(&server), 10, "the same 10 requests counted twice");
    a.deposit();
    a.sync_fleet().await.unwrap();
    assert_eq!(deposits(&server), 11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_killed_each_instance_decides_alone_with_its_part_of_the_floor() {
    let mut server = start_redis!();
    let a = member(&server, floor_only(), Duration::from_millis(500)).await;
    let b = member(&server, floor_only(), Duration::from_millis(500)).await;
    a.sync_fleet().await.unwrap();
    assert_eq!(spend_all(&a), 5);
    server.kill();
    assert!(a.sync_fleet().await.is_err());
    let stats = a.fleet_stats().unwrap();
    assert!(
        stats.in_fallback && stats.fallbacks == 1 && stats.errors == 1,
        "{stats:?}"
    );
    // Alone: the floor over the two instances last seen, less what A spent.
    assert_eq!(a.available(), 0);
    assert!(!a.try_withdraw());
    // B never spent: its part of the floor is whole.
    assert!(b.sync_fleet().await.is_err());
    assert_eq!(spend_all(&b), 5);
    // Back: the fleet's budget again (the restarted Redis forgot the spending).
    server.restart();
    a.sync_fleet().await.unwrap();
    assert!(!a.fleet_stats().unwrap().in_fallback);
    assert!(a.available() > 0);
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_gives_the_fallback_within_the_deadline() {
    let server = start_redis!();
    let deadline = Duration::from_millis(200);
    let a = member(&server, floor_only(), deadline).await;
    server.freeze();
    let started = Instant::now();
    let err = a.sync_fleet().await.unwrap_err();
    let took = started.elapsed();
    server.thaw();
    assert!(took < deadline * 10, "the sync took {took:?}");
    assert!(err.to_string().contains("deadline"), "{err}");
    let stats = a.fleet_stats().unwrap();
    assert!(stats.in_fallback && stats.timeouts == 1, "{stats:?}");
    // Alone with the whole floor: it saw no other instance.
    assert_eq!(a.available(), 10);
    a.sync_fleet().await.unwrap();
    assert!(!a.fleet_stats().unwrap().in_fallback);
}
