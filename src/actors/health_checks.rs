//! The periodic health checker: every `active`, `expired`, `verified` and `moved` domain's DNS is
//! checked once per `HEALTH_CHECK_INTERVAL`, the checks of a pass spread evenly over the
//! interval (a steady trickle of queries, never a burst) with at most
//! `HEALTH_CHECK_CONCURRENCY` at once, on the one replica holding the `all-domains#health-checks`
//! lease (and only while it holds it).
//! What a check finds is recorded by the aggregate, only when an outcome changed
//! (`use_cases::health`); a domain `moved` for `MOVED_REMOVE_AFTER` is then removed, its
//! certificate revoked.

use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use dns_handling_events::DomainStatus;
use futures::StreamExt;
use tokio::time::Instant;

use super::supervisor::Supervisor;
use crate::app_state::{AppState, CommandOrigin};
use crate::use_cases::health::check_domain;
use crate::use_cases::remove::remove_if_moved_long_enough;
use crate::use_cases::work_lease::WorkLease;

/// The lease that keeps the checks on one replica: a work lease's name (`<domain id>#<work>`,
/// the `#` keeping it apart from the pollers' order leases) for work over every domain.
const LEASE: &str = "all-domains#health-checks";

/// The statuses whose domains are checked: those with a certificate in service or to come,
/// and the moved ones, which return when their routing does.
const CHECKED: [DomainStatus; 4] = [
    DomainStatus::Active,
    DomainStatus::Expired,
    DomainStatus::Verified,
    DomainStatus::Moved,
];

/// Domain views read per page when a pass lists the domains to check.
const PAGE: u32 = 500;

/// Runs the passes for the life of the process while this replica holds the lease: when the
/// lease is lost (another replica took it after this one failed to extend it), the pass under
/// way stops and this replica waits to take the lease again.
pub async fn check_health_continuously(state: Arc<AppState>, pollers: Addr<Supervisor>) {
    loop {
        let mut lease = hold_lease(&state).await;
        tracing::info!("this replica checks the domains' health");
        tokio::select! {
            () = lease.lost() => {
                tracing::warn!("the health checks' lease was lost: another replica checks");
            }
            () = run_passes(&state, &pollers) => {}
        }
    }
}

/// One pass per `HEALTH_CHECK_INTERVAL`, for ever.
async fn run_passes(state: &AppState, pollers: &Addr<Supervisor>) {
    loop {
        let started = Instant::now();
        let interval = state.settings.health_check_interval;
        match domains_to_check(state).await {
            Ok(ids) => {
                let (first, spacing) = schedule(started, Instant::now(), interval, ids.len());
                check_spread(state, pollers, ids, first, spacing).await;
            }
            Err(error) => tracing::warn!(%error, "could not list the domains to check; next pass"),
        }
        tokio::time::sleep_until(started + interval).await;
    }
}

/// Waits until this replica holds the checks' lease, trying again every `LEASE_TTL`.
async fn hold_lease(state: &AppState) -> WorkLease {
    loop {
        match WorkLease::take(state, LEASE.to_owned(), "health_checks").await {
            Ok(Some(lease)) => return lease,
            Ok(None) => {}
            Err(error) => tracing::warn!(%error, "could not take the health checks' lease"),
        }
        tokio::time::sleep(state.settings.lease_ttl).await;
    }
}

/// The ids of every domain to check this pass.
async fn domains_to_check(
    state: &AppState,
) -> Result<Vec<String>, crate::adapters::store::StoreError> {
    let mut ids = Vec::new();
    for status in CHECKED {
        let mut cursor: Option<String> = None;
        loop {
            let page = state
                .store
                .list_domain_views(Some(status), None, PAGE, cursor.as_deref())
                .await?;
            ids.extend(page.items.into_iter().map(|view| view.id));
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
    }
    Ok(ids)
}

/// When a pass's first check is due and the time between two checks' starts, for `count`
/// domains listed at `listed` by a pass that began at `started`: the checks spread over what is
/// left of the interval from when the list is ready. Spread from `started` instead, the checks
/// whose slots fell while the list was read (at a million domains, seconds of them) would all
/// start at once, a burst of queries at the users' DNS.
fn schedule(
    started: Instant,
    listed: Instant,
    interval: Duration,
    count: usize,
) -> (Instant, Duration) {
    let left = interval.saturating_sub(listed.saturating_duration_since(started));
    (listed, slot_spacing(left, count))
}

/// Checks `ids`, the `n`-th no earlier than `first + n × spacing`, at most
/// `HEALTH_CHECK_CONCURRENCY` at once; a domain moved for `MOVED_REMOVE_AFTER` is removed.
async fn check_spread(
    state: &AppState,
    pollers: &Addr<Supervisor>,
    ids: Vec<String>,
    first: Instant,
    spacing: Duration,
) {
    let concurrency = state.settings.health_check_concurrency;
    futures::stream::iter(ids.into_iter().enumerate())
        .for_each_concurrent(concurrency, |(place, id)| async move {
            let slot = first + spacing * u32::try_from(place).unwrap_or(u32::MAX);
            tokio::time::sleep_until(slot).await;
            let origin = CommandOrigin::actor("health-checker");
            let view = match check_domain(state, &id, origin.clone()).await {
                Ok((_, view)) => view,
                Err(error) => {
                    tracing::warn!(domain_id = %id, %error, "a health check could not be recorded");
                    return;
                }
            };
            if let Err(error) = remove_if_moved_long_enough(state, pollers, &view, origin).await {
                tracing::warn!(domain_id = %id, %error, "a domain moved for MOVED_REMOVE_AFTER could not be removed; next pass");
            }
        })
        .await;
}

/// The time between two checks' starts for `count` domains over `interval`.
fn slot_spacing(interval: Duration, count: usize) -> Duration {
    let count = u32::try_from(count.max(1)).unwrap_or(u32::MAX);
    interval / count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pass_spreads_its_checks_evenly_over_the_interval() {
        let interval = Duration::from_secs(6 * 3600);
        assert_eq!(
            slot_spacing(interval, 1_000_000),
            Duration::from_micros(21_600)
        );
        assert_eq!(slot_spacing(interval, 0), interval);
        assert_eq!(slot_spacing(interval, 4), Duration::from_secs(5400));
    }

    #[test]
    fn a_pass_that_took_long_to_list_spreads_its_checks_over_the_rest_of_its_interval() {
        let started = Instant::now();
        let listed = started + Duration::from_secs(10);
        let (first, spacing) = schedule(started, listed, Duration::from_secs(100), 1_000);
        assert_eq!(
            first, listed,
            "the first check waits for nothing once listed"
        );
        assert_eq!(
            spacing,
            Duration::from_millis(90),
            "90 s left for 1,000 checks"
        );
        let (_, spacing) = schedule(started, listed, Duration::from_secs(5), 10);
        assert_eq!(
            spacing,
            Duration::ZERO,
            "a list slower than the interval: no waiting"
        );
    }
}
