//! When a failed event is tried again.

use std::time::Duration;

use rand::Rng;

#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base: Duration,
    pub cap: Duration,
}

impl RetryPolicy {
    /// The wait after failed attempt number `attempt` (1-based), or `None` when the budget is
    /// spent and the event goes to the dead-letter queue.
    ///
    /// The nominal delay doubles from `base` up to `cap`; the actual one is drawn from its upper
    /// half ("equal jitter"): retries of events that failed together spread out, yet each
    /// wait is never shorter than the one before.
    pub fn delay_after(&self, attempt: u32, rng: &mut impl Rng) -> Option<Duration> {
        if attempt >= self.max_attempts {
            return None;
        }
        let doublings = attempt.saturating_sub(1).min(31);
        let nominal = self.base.saturating_mul(1 << doublings).min(self.cap);
        let half = nominal / 2;
        Some(half + half.mul_f64(rng.r#gen::<f64>()))
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    const POLICY: RetryPolicy = RetryPolicy {
        max_attempts: 6,
        base: Duration::from_millis(1000),
        cap: Duration::from_secs(8),
    };

    #[test]
    fn delays_double_within_jitter_and_stop_at_the_budget() {
        let mut rng = StdRng::seed_from_u64(7);
        for (attempt, nominal_ms) in [(1, 1000u64), (2, 2000), (3, 4000), (4, 8000), (5, 8000)] {
            let delay = POLICY.delay_after(attempt, &mut rng).unwrap();
            let nominal = Duration::from_millis(nominal_ms);
            assert!(
                delay >= nominal / 2 && delay <= nominal,
                "attempt {attempt}: {delay:?}"
            );
        }
        assert_eq!(POLICY.delay_after(6, &mut rng), None);
        assert_eq!(POLICY.delay_after(60, &mut rng), None);
    }

    #[test]
    fn jitter_spreads_simultaneous_failures() {
        let mut rng = StdRng::seed_from_u64(1);
        let delays: std::collections::HashSet<_> = (0..50)
            .map(|_| POLICY.delay_after(3, &mut rng).unwrap())
            .collect();
        assert!(delays.len() > 40);
    }

    #[test]
    fn huge_attempt_numbers_do_not_overflow() {
        let policy = RetryPolicy {
            max_attempts: u32::MAX,
            ..POLICY
        };
        let delay = policy
            .delay_after(u32::MAX - 1, &mut rand::thread_rng())
            .unwrap();
        assert!(delay <= POLICY.cap);
    }
}
