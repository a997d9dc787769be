//! Keeps the read projections up to date with the events cqrs-es has just committed.

use async_trait::async_trait;
use cqrs_es::{EventEnvelope, Query};
use dns_handling_projections::{CertificateView, DomainView};

use crate::aggregate::CustomDomain;
use crate::store::{Store, StoreError};

/// Applies committed events to the domain and certificate views.
///
/// cqrs-es calls it in process right after the commit and before the command returns, so a
/// client that reads after a write sees the write. Applying is idempotent by sequence, so the
/// same events arriving twice change nothing.
pub struct ViewProjector {
    store: Store,
}

impl ViewProjector {
    /// A projector writing to `store`.
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    async fn project(
        &self,
        aggregate_id: &str,
        events: &[EventEnvelope<CustomDomain>],
    ) -> Result<(), StoreError> {
        let mut view = self.store.domain_view(aggregate_id).await?;
        for envelope in events {
            let sequence = envelope.sequence as u64;
            match view.as_mut() {
                Some(existing) => existing.apply(sequence, &envelope.payload),
                None => {
                    view = DomainView::from_registration(aggregate_id, sequence, &envelope.payload)
                }
            }
            if let Some(certificate) = CertificateView::from_event(aggregate_id, &envelope.payload)
            {
                self.store.save_certificate_view(&certificate).await?;
            }
        }
        if let Some(view) = view {
            self.store.save_domain_view(&view).await?;
        }
        Ok(())
    }
}

#[async_trait]
impl Query<CustomDomain> for ViewProjector {
    async fn dispatch(&self, aggregate_id: &str, events: &[EventEnvelope<CustomDomain>]) {
        if let Err(error) = self.project(aggregate_id, events).await {
            tracing::error!(%aggregate_id, %error, "projection update failed");
        }
    }
}
