//! When a certificate is due for renewal, and when a failed renewal is tried again: pure
//! arithmetic on times, shared by the aggregate (which decides) and the scheduler (which asks).

use std::time::Duration;

use chrono::{DateTime, Utc};
use dns_handling_events::RenewalWindow;

/// What the aggregate needs to know about renewals beyond its events: given to it as its
/// cqrs-es services, so that the settings, not the code, set the schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenewalPolicy {
    /// The waits after the 1st, 2nd, … failed attempt in a row; the last one repeats.
    pub retry_schedule: Vec<Duration>,
}

impl Default for RenewalPolicy {
    /// Let's Encrypt's advice: after 1 minute, 10 minutes, 100 minutes, then daily.
    fn default() -> Self {
        Self {
            retry_schedule: vec![
                Duration::from_secs(60),
                Duration::from_secs(600),
                Duration::from_secs(6_000),
                Duration::from_secs(86_400),
            ],
        }
    }
}

impl RenewalPolicy {
    /// When attempt `attempt + 1` is due after the `attempt`th failure in a row at `at`.
    pub fn next_attempt(&self, attempt: u32, at: DateTime<Utc>) -> DateTime<Utc> {
        let index = usize::try_from(attempt.saturating_sub(1)).unwrap_or(usize::MAX);
        let wait = self
            .retry_schedule
            .get(index)
            .or(self.retry_schedule.last())
            .copied()
            .unwrap_or(Duration::from_secs(86_400));
        at + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::days(1))
    }
}

/// When a certificate valid from `not_before` to `not_after` is due by lifetime: once less
/// than `renew_before` is left, or by default a third of its own lifetime (30 days of 90, 2 of
/// 6).
pub fn due_by_lifetime(
    not_before: DateTime<Utc>,
    not_after: DateTime<Utc>,
    renew_before: Option<Duration>,
) -> DateTime<Utc> {
    let before = match renew_before.and_then(|d| chrono::Duration::from_std(d).ok()) {
        Some(before) => before,
        None => (not_after - not_before) / 3,
    };
    not_after - before
}

/// A moment inside the CA's suggested window: `fraction` (0 to 1, drawn uniformly by the
/// caller) of the way through it, so that a CA's renewals spread over the window; a window that
/// has passed (or ends before `now`) is due `now`.
pub fn due_in_window(window: &RenewalWindow, now: DateTime<Utc>, fraction: f64) -> DateTime<Utc> {
    if window.end <= now {
        return now;
    }
    let start = window.start.max(now);
    let span = (window.end - start).num_milliseconds().max(0);
    // The product of a span in milliseconds and a fraction below 1 fits an i64.
    #[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
    let offset = (span as f64 * fraction.clamp(0.0, 1.0)) as i64;
    start + chrono::Duration::milliseconds(offset)
}

/// How long to wait before asking the CA for a certificate's window again: its `Retry-After`
/// clamped between a minute and a day (RFC 9773 §4.3 leaves the bounds to the client).
pub fn ari_recheck_after(retry_after: Duration) -> Duration {
    retry_after.clamp(Duration::from_secs(60), Duration::from_secs(86_400))
}

/// How long to wait before asking again after the CA's renewal information could not be read.
pub const ARI_RECHECK_AFTER_ERROR: Duration = Duration::from_secs(6 * 3600);

#[cfg(test)]
mod tests {
    use super::*;

    fn t(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).expect("valid")
    }

    #[test]
    fn by_default_a_certificate_is_due_with_a_third_of_its_lifetime_left() {
        let day = 86_400;
        assert_eq!(due_by_lifetime(t(0), t(90 * day), None), t(60 * day));
        assert_eq!(due_by_lifetime(t(0), t(6 * day), None), t(4 * day));
    }

    #[test]
    fn renew_before_sets_how_much_lifetime_is_left_when_due() {
        let due = due_by_lifetime(t(0), t(1000), Some(Duration::from_secs(100)));
        assert_eq!(due, t(900));
    }

    #[test]
    fn failed_renewals_are_retried_after_1_10_and_100_minutes_then_daily() {
        let policy = RenewalPolicy::default();
        assert_eq!(policy.next_attempt(1, t(0)), t(60));
        assert_eq!(policy.next_attempt(2, t(0)), t(600));
        assert_eq!(policy.next_attempt(3, t(0)), t(6_000));
        assert_eq!(policy.next_attempt(4, t(0)), t(86_400));
        assert_eq!(policy.next_attempt(40, t(0)), t(86_400));
    }

    #[test]
    fn a_due_time_in_a_window_lies_inside_it_and_a_past_window_is_due_now() {
        let window = RenewalWindow {
            start: t(100),
            end: t(200),
            explanation_url: None,
        };
        assert_eq!(due_in_window(&window, t(0), 0.0), t(100));
        assert_eq!(due_in_window(&window, t(0), 0.5), t(150));
        assert_eq!(due_in_window(&window, t(0), 1.0), t(200));
        // Already inside: from now to the end.
        assert_eq!(due_in_window(&window, t(150), 0.0), t(150));
        assert_eq!(due_in_window(&window, t(300), 0.3), t(300));
    }

    #[test]
    fn the_ca_s_retry_after_is_clamped_between_a_minute_and_a_day() {
        assert_eq!(
            ari_recheck_after(Duration::from_secs(1)),
            Duration::from_secs(60)
        );
        assert_eq!(
            ari_recheck_after(Duration::from_secs(3600)),
            Duration::from_secs(3600)
        );
        assert_eq!(
            ari_recheck_after(Duration::from_secs(10 * 86_400)),
            Duration::from_secs(86_400)
        );
    }
}
