//! What this process remembers of a CA between new orders: the `Retry-After` it gave with a
//! refusal, and that it did not answer. Kept per CA, not per request, so that the next due
//! domain (in the same renewal tick, or the next client request) is not sent to a CA that has
//! just said "not now", or has just been found down, and so that the wait for a CA that does
//! not answer is paid once rather than once per domain.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::AcmeError;

/// Why the CA did not answer, kept for every refusal the pause answers while it holds.
pub(super) type SharedCause = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// The first pause after the CA did not answer; it doubles with every further failure in a row.
const FIRST_UNANSWERED_PAUSE: Duration = Duration::from_secs(1);

/// The longest pause after the CA did not answer: a CA back up is asked again within this.
const LONGEST_UNANSWERED_PAUSE: Duration = Duration::from_secs(60);

/// Why new orders are not sent to a CA for now.
#[derive(Debug, Clone)]
enum Why {
    /// It refused for now, saying until when (`Retry-After`).
    RefusedForNow(String),
    /// It could not be reached, or did not answer in time, `in_a_row` times: the last time
    /// when `context`, because of `cause`.
    Unanswered {
        context: &'static str,
        cause: SharedCause,
        in_a_row: u32,
    },
}

/// A CA's pause on new orders, shared by every caller of one [`super::AcmeClient`].
#[derive(Debug, Default)]
pub(super) struct NewOrderPause(Mutex<Option<(DateTime<Utc>, Why)>>);

impl NewOrderPause {
    /// The refusal to answer without asking the CA, while a pause holds at `now`.
    pub(super) fn check(&self, directory: &str, now: DateTime<Utc>) -> Option<AcmeError> {
        let state = self.lock();
        let (until, why) = state.as_ref().filter(|(until, _)| *until > now)?;
        Some(match why {
            Why::RefusedForNow(detail) => AcmeError::RateLimited {
                detail: detail.clone(),
                retry_after: Some(*until),
            },
            Why::Unanswered { context, cause, .. } => AcmeError::unreachable(
                format!(
                    "{directory} did not answer ({context}); it is not asked again before {}",
                    until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                ),
                cause.clone(),
            ),
        })
    }

    /// The CA refused for now until `until`: nothing is sent to it before then.
    pub(super) fn refused_until(&self, until: DateTime<Utc>, detail: &str) {
        let mut state = self.lock();
        // A later pause already known stays: the CA's longest word holds.
        if state.as_ref().is_some_and(|(known, _)| *known > until) {
            return;
        }
        *state = Some((until, Why::RefusedForNow(detail.to_owned())));
    }

    /// The CA did not answer at `now` (when `context`, because of `cause`): pause for a while
    /// that doubles with every failure in a row, from a second up to a minute.
    pub(super) fn unanswered(&self, now: DateTime<Utc>, context: &'static str, cause: SharedCause) {
        let mut state = self.lock();
        let in_a_row = match state.as_ref() {
            Some((_, Why::Unanswered { in_a_row, .. })) => in_a_row.saturating_add(1),
            _ => 1,
        };
        let pause = FIRST_UNANSWERED_PAUSE
            .saturating_mul(2u32.saturating_pow(in_a_row.saturating_sub(1).min(16)))
            .min(LONGEST_UNANSWERED_PAUSE);
        let until = now + chrono::Duration::from_std(pause).unwrap_or(chrono::Duration::MAX);
        if let Some((known, Why::RefusedForNow(_))) = state.as_ref() {
            if *known > until {
                return;
            }
        }
        *state = Some((
            until,
            Why::Unanswered {
                context,
                cause,
                in_a_row,
            },
        ));
    }

    /// The CA answered: the pause of a CA that did not answer ends (a `Retry-After` it gave
    /// still holds until its time).
    pub(super) fn answered(&self) {
        let mut state = self.lock();
        if matches!(state.as_ref(), Some((_, Why::Unanswered { .. }))) {
            *state = None;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(DateTime<Utc>, Why)>> {
        // Nothing done under the lock can leave the state half-written: a poisoned lock's value
        // is as good as any.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CA: &str = "https://ca.example/directory";

    /// What a CA that refuses connections causes.
    fn refused() -> SharedCause {
        Arc::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused))
    }

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_800_000_000 + seconds, 0).expect("a time")
    }

    #[test]
    fn a_ca_that_refused_for_now_is_not_asked_before_its_retry_after() {
        let pause = NewOrderPause::default();
        pause.refused_until(at(3600), "rateLimited");
        match pause.check(CA, at(10)) {
            Some(AcmeError::RateLimited { retry_after, .. }) => {
                assert_eq!(retry_after, Some(at(3600)))
            }
            other => panic!("{other:?}"),
        }
        assert!(pause.check(CA, at(3600)).is_none());
    }

    #[test]
    fn a_ca_that_did_not_answer_is_paused_ever_longer_up_to_a_minute() {
        let pause = NewOrderPause::default();
        let mut waits = Vec::new();
        for _ in 0..9 {
            pause.unanswered(at(0), "connecting", refused());
            let until = (0..=120)
                .find(|s| pause.check(CA, at(*s)).is_none())
                .expect("a pause ends");
            waits.push(until);
        }
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert!(matches!(
            pause.check(CA, at(0)),
            Some(AcmeError::Unreachable { .. })
        ));
    }

    #[test]
    fn an_answer_ends_the_pause_of_a_ca_that_did_not_answer_but_not_its_retry_after() {
        let pause = NewOrderPause::default();
        pause.unanswered(at(0), "connecting", refused());
        pause.answered();
        assert!(pause.check(CA, at(0)).is_none());
        pause.refused_until(at(600), "serverInternal");
        pause.answered();
        pause.unanswered(at(0), "connecting", refused());
        assert!(matches!(
            pause.check(CA, at(30)),
            Some(AcmeError::RateLimited { .. })
        ));
    }
}
