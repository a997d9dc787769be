//! The warning that a CA's renewal information (ARI) is unavailable, said once a minute while
//! it stays so rather than once per certificate. When a CA's ARI endpoint is down, every
//! certificate it issued fails its check in turn: at 10,000 domains the log grew by 266 kB in
//! 10 s of a read bench, ten thousand warnings saying one thing. The warning says how many
//! were held back since the last one; those are logged at debug, each with its domain.

use std::fmt::Display;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How often the warning is said while the failures go on.
const EVERY: Duration = Duration::from_secs(60);

/// The failures since the last warning, for the whole process (every CA alike: an outage of
/// one is what an operator needs to hear of; the domains are in the debug lines).
static WARNINGS: Throttle = Throttle::new();

/// Logs that the renewal information of `domain_id`'s certificate is unavailable, and what
/// is done `meanwhile`: at warn once a minute, at debug otherwise.
pub(super) fn ari_unavailable(domain_id: &str, error: &dyn Display, meanwhile: &str) {
    match WARNINGS.failed(Instant::now()) {
        Some(held_back) => tracing::warn!(
            domain_id,
            %error,
            held_back,
            "renewal information unavailable; {meanwhile} (the same failure of other certificates is logged at debug for a minute, then counted here)"
        ),
        None => tracing::debug!(domain_id, %error, "renewal information unavailable; {meanwhile}"),
    }
}

/// When the last warning was said, and the failures held back since.
struct Throttle(Mutex<(Option<Instant>, u64)>);

impl Throttle {
    const fn new() -> Self {
        Self(Mutex::new((None, 0)))
    }

    /// Notes a failure at `now`: `Some(held back since the last warning)` when it is to be
    /// said at warn, `None` when it is held back.
    fn failed(&self, now: Instant) -> Option<u64> {
        let mut state = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let (last, held_back) = &mut *state;
        match last {
            Some(at) if now.saturating_duration_since(*at) < EVERY => {
                *held_back += 1;
                None
            }
            _ => {
                *last = Some(now);
                Some(std::mem::take(held_back))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_within_a_minute_of_a_warning_are_held_back_and_counted_by_the_next_one() {
        let throttle = Throttle::new();
        let start = Instant::now();
        assert_eq!(throttle.failed(start), Some(0), "the first failure is said");
        for second in 1..=59 {
            assert_eq!(throttle.failed(start + Duration::from_secs(second)), None);
        }
        assert_eq!(
            throttle.failed(start + EVERY),
            Some(59),
            "a minute on, said again with the 59 held back"
        );
        assert_eq!(
            throttle.failed(start + EVERY + Duration::from_secs(1)),
            None
        );
    }
}
