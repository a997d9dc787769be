//! Feed consumers stopped at an event they cannot read. A consumer that skipped such an event
//! would lose it for good (the delegation zone would miss a withdrawal or a publication, an
//! endpoint a notification); one that retried it quietly would be wedged unseen. So a consumer
//! stays on the event, says so here, and reads on once it can decode it (after an upgrade
//! that knows the event, or once the row is repaired): the `feed_consumer_stuck` gauge is 1
//! meanwhile, `/readyz` answers `503` naming it, and the log says it at error level.

use std::collections::BTreeMap;
use std::sync::{LazyLock, Mutex};

use crate::metrics::{ConsumerLabel, METRICS};

/// Where a consumer stopped, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StuckAt {
    /// The feed position of the event it cannot read.
    pub position: i64,
    /// Why it cannot.
    pub error: String,
}

/// The consumers of this process that are stopped now, by name.
static STUCK: LazyLock<Mutex<BTreeMap<String, StuckAt>>> =
    LazyLock::new(|| Mutex::new(BTreeMap::new()));

fn stuck_consumers() -> std::sync::MutexGuard<'static, BTreeMap<String, StuckAt>> {
    // A panic elsewhere while holding the lock leaves the map as it was: still usable.
    STUCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Records that `consumer` cannot read the event at `position` and stays on it. Logged at
/// error level when it first stops there, not at every retry.
pub fn stopped_at(consumer: &str, position: i64, error: &str) {
    let at = StuckAt {
        position,
        error: error.to_owned(),
    };
    let newly = stuck_consumers().insert(consumer.to_owned(), at.clone()) != Some(at);
    METRICS
        .feed_consumer_stuck
        .get_or_create(&ConsumerLabel {
            consumer: consumer.to_owned(),
        })
        .set(1);
    if newly {
        tracing::error!(
            consumer,
            position,
            error,
            "a feed consumer cannot read an event: it stays on it (nothing after it is \
             processed) until it can, after an upgrade or a repair of the row"
        );
    }
}

/// Records that `consumer` reads on (or stopped for another reason, such as its endpoint's
/// removal): it is no longer stuck.
pub fn reads_on(consumer: &str) {
    let Some(was) = stuck_consumers().remove(consumer) else {
        return;
    };
    METRICS
        .feed_consumer_stuck
        .get_or_create(&ConsumerLabel {
            consumer: consumer.to_owned(),
        })
        .set(0);
    tracing::info!(
        consumer,
        position = was.position,
        "the feed consumer reads on past the event it could not read"
    );
}

/// What `/readyz` says while a consumer is stopped; `None` when none is.
pub fn readiness_problem() -> Option<String> {
    let stuck = stuck_consumers();
    if stuck.is_empty() {
        return None;
    }
    let each: Vec<String> = stuck
        .iter()
        .map(|(consumer, at)| format!("{consumer} at position {}: {}", at.position, at.error))
        .collect();
    Some(format!(
        "feed consumers stopped at an event they cannot read: {}",
        each.join("; ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopped_consumer_is_reported_until_it_reads_on() {
        let consumer = "test-consumer-reported";
        stopped_at(consumer, 42, "unknown variant `FutureEvent`");
        let problem = readiness_problem().expect("a problem");
        assert!(
            problem.contains("test-consumer-reported at position 42"),
            "{problem}"
        );
        assert!(problem.contains("FutureEvent"), "{problem}");
        reads_on(consumer);
        assert!(readiness_problem().is_none_or(|problem| !problem.contains(consumer)));
    }
}
