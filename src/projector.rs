//! Keeps the read projections up to date with the events cqrs-es has just committed, and brings
//! them back up to date after a crash.

use async_trait::async_trait;
use cqrs_es::{EventEnvelope, Query};
use dns_handling_events::CustomDomainEvent;
use dns_handling_projections::{CertificateView, DomainView};

use crate::aggregate::CustomDomain;
use crate::store::{Store, StoreError};

/// Applies committed events to the domain and certificate views.
///
/// cqrs-es calls it in process right after the commit and before the command returns, so a
/// client that reads after a write sees the write. Applying is idempotent by sequence, so the
/// same events arriving twice change nothing; [`ViewProjector::catch_up`] repairs views that a
/// crash between commit and update left behind.
#[derive(Clone)]
pub struct ViewProjector {
    store: Store,
}

impl ViewProjector {
    /// A projector writing to `store`.
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// Applies `events` (sequence, event) of one domain on top of its stored view, or of
    /// `start` when given.
    async fn project(
        &self,
        aggregate_id: &str,
        start: Option<DomainView>,
        events: &[(u64, &CustomDomainEvent)],
    ) -> Result<(), StoreError> {
        let mut view = match start {
            Some(view) => Some(view),
            None => self.store.domain_view(aggregate_id).await?,
        };
        for (sequence, event) in events {
            match view.as_mut() {
                Some(existing) => existing.apply(*sequence, event),
                None => view = DomainView::from_registration(aggregate_id, *sequence, event),
            }
            if let Some(certificate) = CertificateView::from_event(aggregate_id, event) {
                self.store.save_certificate_view(&certificate).await?;
            }
            if matches!(event, CustomDomainEvent::DomainRemoved { .. }) {
                // The name is freed by the projection, not by the request, so that a crash
                // right after the removal was recorded still frees it (at the next catch-up).
                self.store.release_names_of(aggregate_id).await?;
            }
        }
        if let Some(view) = view {
            self.store.save_domain_view(&view).await?;
        }
        Ok(())
    }

    /// Rebuilds, from their events, the views of every domain whose view is behind; returns how
    /// many were repaired. Run at start, before the supervisor resumes pending orders.
    pub async fn catch_up(&self) -> Result<usize, StoreError> {
        let behind = self.store.aggregates_behind_their_views().await?;
        for aggregate_id in &behind {
            let events = self.store.domain_events(aggregate_id).await?;
            let events: Vec<(u64, &CustomDomainEvent)> = events
                .iter()
                .map(|(sequence, event)| (*sequence, event))
                .collect();
            let Some((first_sequence, first)) = events.first() else {
                continue;
            };
            let start = DomainView::from_registration(aggregate_id, *first_sequence, first);
            self.project(aggregate_id, start, &events[1..]).await?;
            tracing::warn!(%aggregate_id, "repaired a view left behind by an interrupted update");
        }
        Ok(behind.len())
    }
}

#[async_trait]
impl Query<CustomDomain> for ViewProjector {
    async fn dispatch(&self, aggregate_id: &str, events: &[EventEnvelope<CustomDomain>]) {
        let events: Vec<(u64, &CustomDomainEvent)> = events
            .iter()
            .map(|envelope| (envelope.sequence as u64, &envelope.payload))
            .collect();
        if let Err(error) = self.project(aggregate_id, None, &events).await {
            tracing::error!(%aggregate_id, %error, "projection update failed; it is repaired at the next start");
        }
    }
}
