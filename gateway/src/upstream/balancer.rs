//! The order in which an attempt tries an upstream's instances. The first in the order whose
//! breaker admits the call gets it, so an ejected instance costs one lock, not a failed request.

use rand::Rng;

use crate::config::BalancingPolicy;

/// Indices `0..n` in the order to try them.
///
/// - Round robin starts at `turn` and goes around.
/// - P2C draws two distinct instances at random and puts the one with the lower `score` first
///   (and the other second), then the rest from a random start. Two random choices avoid both
///   herding on the single "best" instance and the blindness of pure random choice.
pub fn preference(
    policy: BalancingPolicy,
    n: usize,
    turn: usize,
    score: impl Fn(usize) -> f64,
    rng: &mut impl Rng,
) -> Vec<usize> {
    if n == 0 {
        return Vec::new();
    }
    match policy {
        BalancingPolicy::RoundRobin => (0..n).map(|i| (turn + i) % n).collect(),
        BalancingPolicy::P2c => {
            if n == 1 {
                return vec![0];
            }
            let a = rng.gen_range(0..n);
            let b = (a + rng.gen_range(1..n)) % n;
            let (first, second) = if score(b) < score(a) { (b, a) } else { (a, b) };
            let start = rng.gen_range(0..n);
            let mut order = Vec::with_capacity(n);
            order.push(first);
            order.push(second);
            order.extend(
                (0..n)
                    .map(|i| (start + i) % n)
                    .filter(|&i| i != first && i != second),
            );
            order
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    #[test]
    fn round_robin_goes_around_from_the_turn() {
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(
            preference(BalancingPolicy::RoundRobin, 3, 4, |_| 0.0, &mut rng),
            [1, 2, 0]
        );
    }

    #[test]
    fn p2c_orders_every_instance_once_with_the_better_of_two_first() {
        let mut rng = StdRng::seed_from_u64(7);
        let scores = [5.0, 1.0, 9.0, 3.0];
        for _ in 0..200 {
            let order = preference(BalancingPolicy::P2c, 4, 0, |i| scores[i], &mut rng);
            let mut sorted = order.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, [0, 1, 2, 3]);
            assert!(scores[order[0]] <= scores[order[1]]);
        }
    }

    #[test]
    fn p2c_sends_most_traffic_to_the_cheapest_and_some_to_every_other() {
        let mut rng = StdRng::seed_from_u64(3);
        let scores = [10.0, 1.0, 10.0];
        let mut firsts = [0usize; 3];
        for _ in 0..3_000 {
            firsts[preference(BalancingPolicy::P2c, 3, 0, |i| scores[i], &mut rng)[0]] += 1;
        }
        // The cheapest wins every draw it is in (2 of 3 draws); the others share the rest.
        assert!(firsts[1] > 1_800, "{firsts:?}");
        assert!(firsts[0] > 200 && firsts[2] > 200, "{firsts:?}");
    }

    #[test]
    fn one_or_no_instance() {
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(preference(BalancingPolicy::P2c, 1, 0, |_| 0.0, &mut rng), [0]);
        assert!(preference(BalancingPolicy::P2c, 0, 0, |_| 0.0, &mut rng).is_empty());
    }
}
