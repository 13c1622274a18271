use proptest::prelude::*;

use super::gcra::{Quota, ceil_secs, decide};
use super::*;

const SECOND: u64 = 1_000_000;

/// Runs requests at the given times against one key; returns each decision.
fn run(quota: Quota, times: &[u64]) -> Vec<Decision> {
    let mut tat = None;
    times
        .iter()
        .map(|&now| {
            let d = decide(tat, now, quota);
            if d.allowed {
                tat = Some(d.tat_us);
            }
            d
        })
        .collect()
}

#[test]
fn a_full_burst_passes_at_once_then_the_next_is_refused() {
    let quota = Quota::per_second(1, 3);
    let decisions = run(quota, &[0, 0, 0, 0]);
    let allowed: Vec<bool> = decisions.iter().map(|d| d.allowed).collect();
    assert_eq!(allowed, [true, true, true, false]);
    let remaining: Vec<u32> = decisions.iter().map(|d| d.remaining).collect();
    assert_eq!(remaining, [2, 1, 0, 0]);
    assert_eq!(decisions[3].retry_after, Some(Duration::from_secs(1)));
    assert_eq!(decisions[3].reset, Duration::from_secs(3));
    assert_eq!(decisions[2].reset, Duration::from_secs(3));
    assert_eq!(decisions[0].limit, 3);
}

#[test]
fn the_sustained_rate_is_one_request_per_interval() {
    // 10/s, burst 1: one request every 100 ms passes, one 99 ms after it does not.
    let quota = Quota::per_second(10, 1);
    let table: [(u64, bool); 6] = [
        (0, true),
        (99_999, false),
        (100_000, true),
        (150_000, false),
        (200_000, true),
        (200_000, false),
    ];
    let times: Vec<u64> = table.iter().map(|(t, _)| *t).collect();
    let allowed: Vec<bool> = run(quota, &times).iter().map(|d| d.allowed).collect();
    assert_eq!(allowed, table.map(|(_, a)| a));
}

#[test]
fn an_idle_key_regains_its_whole_burst() {
    let quota = Quota::per_second(2, 4);
    let mut times = vec![0; 4];
    times.extend([2 * SECOND; 5]);
    let allowed = run(quota, &times).iter().filter(|d| d.allowed).count();
    assert_eq!(allowed, 8);
}

#[test]
fn a_refused_request_does_not_move_the_tat() {
    let quota = Quota::per_second(1, 1);
    let first = decide(None, 0, quota);
    let refused = decide(Some(first.tat_us), 500_000, quota);
    assert!(!refused.allowed);
    assert_eq!(refused.tat_us, first.tat_us);
    assert_eq!(refused.retry_after, Some(Duration::from_millis(500)));
}

#[test]
fn header_seconds_round_up() {
    assert_eq!(ceil_secs(Duration::from_millis(1)), 1);
    assert_eq!(ceil_secs(Duration::from_secs(2)), 2);
    assert_eq!(ceil_secs(Duration::from_millis(2_001)), 3);
    assert_eq!(ceil_secs(Duration::ZERO), 0);
}

/// A quota and a run of arrival gaps, each gap up to two emission intervals (so runs both
/// exceed and stay under the rate).
fn quota_and_gaps() -> impl Strategy<Value = (Quota, u64, Vec<u64>)> {
    (1..=50_u32, 1..=20_u32, 0..10 * SECOND).prop_flat_map(|(rate, burst, start)| {
        let quota = Quota::per_second(rate, burst);
        (
            Just(quota),
            Just(start),
            proptest::collection::vec(0..=quota.interval_us * 2, 1..200),
        )
    })
}

proptest! {
    /// In any window of length W, at most `burst + W / T` requests pass, and every decision
    /// reports the quota's limit with a `remaining` below it.
    #[test]
    fn gcra_never_admits_more_than_burst_plus_rate((quota, start, gaps) in quota_and_gaps()) {
        let mut now = start;
        let mut tat = None;
        let mut admitted: Vec<u64> = Vec::new();
        for gap in gaps {
            now += gap;
            let d = decide(tat, now, quota);
            prop_assert_eq!(d.limit, quota.burst);
            if d.allowed {
                prop_assert!(d.remaining < quota.burst);
                prop_assert!(d.retry_after.is_none());
                tat = Some(d.tat_us);
                admitted.push(now);
            } else {
                prop_assert_eq!(d.remaining, 0);
                prop_assert_eq!(d.tat_us, tat.unwrap_or(now).max(now));
            }
        }
        for (i, &first) in admitted.iter().enumerate() {
            for (j, &last) in admitted.iter().enumerate().skip(i) {
                let count = u64::try_from(j - i + 1).unwrap();
                let bound = u64::from(quota.burst) + (last - first) / quota.interval_us;
                prop_assert!(count <= bound, "{} in {}us > {}", count, last - first, bound);
            }
        }
    }

    /// `Retry-After` is exact: a moment before it the request is still refused, at it it passes.
    #[test]
    fn gcra_retry_after_is_the_exact_wait((quota, start, gaps) in quota_and_gaps()) {
        let mut now = start;
        let mut tat = None;
        for gap in gaps {
            now += gap;
            let d = decide(tat, now, quota);
            if d.allowed {
                tat = Some(d.tat_us);
            } else {
                let wait = u64::try_from(d.retry_after.unwrap().as_micros()).unwrap();
                prop_assert!(wait > 0);
                prop_assert!(!decide(tat, now + wait - 1, quota).allowed);
                prop_assert!(decide(tat, now + wait, quota).allowed);
            }
        }
    }

    /// A quota admits its whole burst from no state, then refuses.
    #[test]
    fn gcra_admits_exactly_the_burst_at_once(rate in 1..=1_000_000_u32, burst in 1..=1_000_u32, now in 0..u64::from(u32::MAX)) {
        let quota = Quota::per_second(rate, burst);
        let mut tat = None;
        for n in 0..burst {
            let d = decide(tat, now, quota);
            prop_assert!(d.allowed);
            prop_assert_eq!(d.remaining, burst - n - 1);
            tat = Some(d.tat_us);
        }
        prop_assert!(!decide(tat, now, quota).allowed);
    }
}

#[test]
fn the_local_limiter_keeps_keys_apart() {
    let limiter = LocalLimiter::new(100);
    let quota = Quota::per_second(1, 1);
    assert!(limiter.check("a", 0, quota).allowed);
    assert!(!limiter.check("a", 0, quota).allowed);
    assert!(limiter.check("b", 0, quota).allowed);
}

#[test]
fn the_local_limiter_stays_bounded() {
    let limiter = LocalLimiter::new(SHARDS);
    let quota = Quota::per_second(1, 2);
    for i in 0..1_000 {
        limiter.check(&format!("k{i}"), 0, quota);
    }
    assert!(limiter.len() <= SHARDS, "{} keys held", limiter.len());
    // A second later every key is idle: a busy key is not lost to newcomers.
    limiter.check("busy", SECOND, quota);
    limiter.check("busy", SECOND, quota);
    for i in 0..1_000 {
        limiter.check(&format!("n{i}"), 2 * SECOND - 1, quota);
    }
    assert!(limiter.len() <= SHARDS);
}

#[tokio::test]
async fn an_unknown_class_is_not_limited() {
    let config = RateLimitConfig::default();
    let limiter = RateLimiter::new(
        &config,
        Arc::new(ManualClock::default()),
        &mut Registry::default(),
    )
    .unwrap();
    assert!(limiter.check("nope", "ip:1").await.is_none());
    assert!(limiter.check("auth", "ip:1").await.is_some());
}
