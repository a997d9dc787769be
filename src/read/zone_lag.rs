//! How far behind the event feed this replica's delegation zone is, and what other replicas'
//! zones have applied: the CA may ask any replica's nameserver, so a delegated order is
//! reported ready only once every live replica serves its values.
//!
//! - Each replica's zone follower records its applied feed position in `zone_followers` after
//!   every batch it applies and at least every [`HEARTBEAT`] while idle; a replica whose row is
//!   younger than [`LIVE_WITHIN`] is live (five heartbeats: a slow write or two does not make a
//!   running replica look gone; a stopped one holds delegated orders back at most that long).
//! - The lag (feed head minus the applied position) is the `delegation_zone_lag_events` gauge,
//!   updated at each heartbeat and each `/readyz`; `/readyz` answers `503` naming the zone once
//!   the zone has been more than [`LAG_BOUND_EVENTS`] events behind for longer than
//!   [`LAG_GRACE`] (a follower that catches up within that is only busy, not behind).

use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use crate::adapters::store::Store;
use crate::metrics::METRICS;

/// How often an idle zone follower writes its row.
pub const HEARTBEAT: Duration = Duration::from_secs(2);

/// A replica whose follower wrote its row within this long is live: delegated orders wait for
/// its zone.
pub const LIVE_WITHIN: Duration = Duration::from_secs(10);

/// Events the zone may be behind the feed head without counting as behind.
pub const LAG_BOUND_EVENTS: i64 = 0;

/// How long the zone may stay behind before `/readyz` says so.
pub const LAG_GRACE: Duration = Duration::from_secs(10);

/// The lag of one zone, as observed over time.
#[derive(Debug, Default, Clone)]
pub struct LagTracker {
    /// The last position the follower applied.
    applied: i64,
    /// Since when the zone has been behind by more than [`LAG_BOUND_EVENTS`] (`None`: not now).
    behind_since: Option<Instant>,
    /// The lag at the last observation.
    lag: i64,
}

impl LagTracker {
    /// Records the follower's applied position (it only moves forward).
    pub fn applied(&mut self, position: i64) {
        self.applied = self.applied.max(position);
    }

    /// Compares the feed's head with the applied position at `now`; answers the lag in events.
    pub fn observe(&mut self, head: i64, now: Instant) -> i64 {
        self.lag = (head - self.applied).max(0);
        if self.lag > LAG_BOUND_EVENTS {
            self.behind_since.get_or_insert(now);
        } else {
            self.behind_since = None;
        }
        self.lag
    }

    /// How long the zone has been behind at `now`, once that is longer than [`LAG_GRACE`].
    pub fn behind_too_long(&self, now: Instant) -> Option<Duration> {
        let behind_for = now.saturating_duration_since(self.behind_since?);
        (behind_for > LAG_GRACE).then_some(behind_for)
    }
}

/// This process's zone: its name and its tracker (`None` without `DELEGATION_ZONE`).
static ZONE: LazyLock<Mutex<Option<(String, LagTracker)>>> = LazyLock::new(|| Mutex::new(None));

fn zone() -> std::sync::MutexGuard<'static, Option<(String, LagTracker)>> {
    ZONE.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Starts tracking the lag of the zone `name`, filled up to `position`.
pub fn track(name: &str, position: i64) {
    let mut tracker = LagTracker::default();
    tracker.applied(position);
    *zone() = Some((name.to_owned(), tracker));
}

/// Records that the follower applied the feed up to `position`.
pub fn applied(position: i64) {
    if let Some((_, tracker)) = zone().as_mut() {
        tracker.applied(position);
    }
}

/// Reads the feed head and updates the lag and its gauge; `None` when no zone is tracked or
/// the head could not be read (the store's own check says so).
async fn observe(store: &Store) -> Option<(String, i64, Option<Duration>)> {
    zone().as_ref()?;
    let head = match store.feed_head().await {
        Ok(head) => head,
        Err(error) => {
            tracing::debug!(%error, "could not read the feed head for the zone's lag");
            return None;
        }
    };
    let now = Instant::now();
    let mut guard = zone();
    let (name, tracker) = guard.as_mut()?;
    let lag = tracker.observe(head, now);
    METRICS.delegation_zone_lag_events.set(lag);
    Some((name.clone(), lag, tracker.behind_too_long(now)))
}

/// Updates the lag gauge (at each heartbeat of the follower).
pub async fn refresh(store: &Store) {
    observe(store).await;
}

/// What `/readyz` says about the zone: `Some` when it has been behind the feed for too long.
pub async fn readiness_problem(store: &Store) -> Option<String> {
    let (name, lag, behind_for) = observe(store).await?;
    let behind_for = behind_for?;
    Some(format!(
        "delegation zone {name} is {lag} events behind the event feed (behind for {}s)",
        behind_for.as_secs()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zone_behind_the_feed_for_longer_than_the_grace_is_reported_and_one_that_catches_up_is_not()
    {
        let start = Instant::now();
        let mut tracker = LagTracker::default();
        tracker.applied(40);
        assert_eq!(tracker.observe(40, start), 0);
        assert_eq!(tracker.behind_too_long(start + LAG_GRACE * 2), None);

        assert_eq!(tracker.observe(45, start), 5, "head minus applied");
        assert_eq!(tracker.behind_too_long(start + LAG_GRACE), None, "grace");
        assert_eq!(tracker.observe(47, start + LAG_GRACE), 7);
        let late = start + LAG_GRACE + Duration::from_secs(1);
        assert_eq!(
            tracker.behind_too_long(late),
            Some(LAG_GRACE + Duration::from_secs(1))
        );

        tracker.applied(47);
        assert_eq!(tracker.observe(47, late), 0);
        assert_eq!(tracker.behind_too_long(late + LAG_GRACE * 2), None);
        tracker.applied(3);
        assert_eq!(
            tracker.observe(47, late),
            0,
            "the position never moves back"
        );
    }
}
