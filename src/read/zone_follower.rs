//! Keeps the delegation zone of this replica in step with the event feed: the CA may ask any of
//! the zone's nameservers, so every replica serves every open delegated order's values, whoever
//! created the order.
//!
//! At start the zone is filled from the domain views with an open order, then the feed is
//! followed from the views' checkpoint. The views may already be past that checkpoint; replaying
//! events they hold is harmless, since each event sets its domain's entry outright (an order
//! publishes its values, its end withdraws exactly that order's), so the zone ends where the
//! feed does. Commits of any replica wake the follower at once (see `commit_signal`).

use std::sync::Arc;
use std::time::Duration;

use dns_handling_events::CustomDomainEvent;

use crate::adapters::commit_signal::CommitWaiter;
use crate::adapters::dns_server::ChallengeZone;
use crate::adapters::store::{Store, StoreError};
use crate::read::projector::DOMAIN_VIEWS;

/// Events read per batch.
const BATCH_EVENTS: u32 = 1_000;

/// How long a failed read waits before trying again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Applies one event of `domain_id` to the zone.
pub async fn apply(zone: &ChallengeZone, domain_id: &str, event: &CustomDomainEvent) {
    match event {
        CustomDomainEvent::CertificateRequested { order, .. }
        | CustomDomainEvent::RenewalRequested { order, .. } => zone.publish(domain_id, order).await,
        CustomDomainEvent::CertificateIssued { certificate, .. } => {
            zone.withdraw(domain_id, Some(&certificate.order_id)).await;
        }
        CustomDomainEvent::IssuanceFailed { order_id, .. }
        | CustomDomainEvent::IssuanceTimedOut { order_id, .. }
        | CustomDomainEvent::RenewalFailed {
            order_id: Some(order_id),
            ..
        } => zone.withdraw(domain_id, Some(order_id)).await,
        CustomDomainEvent::DomainRemoved { .. } => zone.withdraw(domain_id, None).await,
        _ => {}
    }
}

/// Fills the zone from the views and returns the feed position to follow from.
pub async fn fill(store: &Store, zone: &ChallengeZone) -> Result<i64, StoreError> {
    // The checkpoint first: the views read next hold at least every event up to it.
    let position = store.checkpoint(DOMAIN_VIEWS).await?;
    for view in store.pending_domain_views().await? {
        if let Some(order) = view.open_order() {
            zone.publish(&view.id, order).await;
        }
    }
    Ok(position)
}

/// Follows the feed after `position` (from [`fill`]) for as long as the process runs.
pub async fn follow(
    store: Store,
    zone: Arc<ChallengeZone>,
    mut position: i64,
    fallback_poll: Duration,
) {
    let mut waiter = CommitWaiter::new();
    loop {
        let batch = match store.projection_batch(position, BATCH_EVENTS).await {
            Ok(batch) => batch,
            Err(error) => {
                tracing::warn!(%error, "could not read the feed for the delegation zone");
                tokio::time::sleep(RETRY_AFTER).await;
                continue;
            }
        };
        for row in &batch {
            match row.decode() {
                Ok(event) => apply(&zone, &row.aggregate_id, &event).await,
                Err(error) => tracing::warn!(
                    position = row.position, %error,
                    "an event the delegation zone cannot read; skipped"
                ),
            }
            position = row.position;
        }
        if batch.len() < BATCH_EVENTS as usize {
            waiter.wait(fallback_poll).await;
        }
    }
}
