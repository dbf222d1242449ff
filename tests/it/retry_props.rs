//! Bounds of every jitter mode over many draws, whatever the seed, the settings and the
//! attempt: the cap applies before the jitter, nothing is ever negative or unbounded.

use std::time::Duration;

use proptest::prelude::*;
use tower_bulwark::retry::{Backoff, Jitter, SeededRandom};

use crate::common::proptest_cases;

fn settings() -> impl Strategy<Value = (Backoff, u64)> {
    (1u64..5_000, 1.0f64..4.0, 1u64..100, any::<u64>()).prop_map(|(base_ms, mult, cap_x, seed)| {
        let base = Duration::from_millis(base_ms);
        (
            Backoff::exponential(base)
                .multiplier(mult)
                .cap(base * cap_x as u32),
            seed,
        )
    })
}

/// `min(cap, base × multiplier^n)`.
fn capped(backoff: &Backoff, n: u32, multiplier: f64) -> Duration {
    let grown = backoff.base().as_secs_f64() * multiplier.powi(n as i32);
    Duration::from_secs_f64(grown.min(backoff.cap_delay().as_secs_f64()))
}

/// A nanosecond either side: the floating point of `mul_f64`.
const EPS: Duration = Duration::from_nanos(1_000);

proptest! {
    #![proptest_config(proptest_cases(200))]

    #[test]
    fn every_mode_stays_in_its_bounds((backoff, seed) in settings(), mult in 1.0f64..4.0, fraction in 0.0f64..=1.0) {
        let backoff = backoff.multiplier(mult);
        let random = SeededRandom::new(seed);
        let cap = backoff.cap_delay();
        for n in 0..40u32 {
            let d = capped(&backoff, n, mult);
            let full = backoff.jitter(Jitter::Full).delay(n, Duration::ZERO, &random);
            prop_assert!(full <= d + EPS, "full {full:?} > {d:?}");
            let equal = backoff.jitter(Jitter::Equal).delay(n, Duration::ZERO, &random);
            prop_assert!(equal + EPS >= d / 2 && equal <= d + EPS, "equal {equal:?} vs {d:?}");
            let none = backoff.jitter(Jitter::None).delay(n, Duration::ZERO, &random);
            prop_assert!(none + EPS >= d && none <= d + EPS);
            let p = backoff.jitter(Jitter::Proportional(fraction)).delay(n, Duration::ZERO, &random);
            prop_assert!(p + EPS >= d.mul_f64(1.0 - fraction) && p <= d.mul_f64(1.0 + fraction) + EPS,
                "proportional {p:?} vs {d:?} ± {fraction}");
            prop_assert!(full <= cap + EPS && equal <= cap + EPS);
        }
        // Decorrelated: from base to three times the last delay, never past the cap.
        let mut previous = Duration::ZERO;
        for n in 0..40u32 {
            let delay = backoff.jitter(Jitter::Decorrelated).delay(n, previous, &random);
            let high = cap.min(previous.max(backoff.base()) * 3);
            prop_assert!(delay + EPS >= backoff.base() && delay <= high + EPS, "{delay:?} not in [{:?}, {high:?}]", backoff.base());
            previous = delay;
        }
    }

    #[test]
    fn full_jitter_spreads_over_its_whole_range(seed in any::<u64>()) {
        // Over 2 000 draws of a 1 s delay, each tenth of the range is hit.
        let backoff = Backoff::exponential(Duration::from_secs(1));
        let random = SeededRandom::new(seed);
        let mut tenths = [0u32; 10];
        for _ in 0..2_000 {
            let delay = backoff.delay(0, Duration::ZERO, &random);
            tenths[((delay.as_secs_f64() * 10.0) as usize).min(9)] += 1;
        }
        prop_assert!(tenths.iter().all(|&n| n > 100), "{tenths:?}");
    }
}
