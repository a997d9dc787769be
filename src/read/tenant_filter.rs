//! Which events of the feed are one tenant's: a tenant token's `GET /events` (a page, or the
//! stream) carries only the events of its tenant's domains.
//!
//! A domain's tenant is set by its registration and never changes, so what was found once is
//! kept for the request's life. It is read from the registration itself when the event is one
//! (the stream may hand it over before the view is written), else from the domain's view
//! (kept for a removed domain too), else from the domain's first event.

use std::collections::HashMap;

use dns_handling_events::feed::FeedEvent;
use dns_handling_events::CustomDomainEvent;

use super::view_reader::ViewReader;
use crate::adapters::store::{Store, StoreError};
use crate::domain::tenant::TenantId;

/// Tells one tenant's events from the others'; see the module documentation.
pub struct TenantFilter {
    tenant: TenantId,
    views: ViewReader,
    store: Store,
    /// Whether each domain seen so far is the tenant's.
    known: HashMap<String, bool>,
}

impl TenantFilter {
    /// A filter keeping `tenant`'s events.
    pub fn new(tenant: TenantId, views: ViewReader, store: Store) -> Self {
        Self {
            tenant,
            views,
            store,
            known: HashMap::new(),
        }
    }

    /// Keeps only the tenant's events of `events`, in order.
    pub async fn keep(&mut self, events: Vec<FeedEvent>) -> Result<Vec<FeedEvent>, StoreError> {
        let mut kept = Vec::with_capacity(events.len());
        for event in events {
            if self.admits(&event).await? {
                kept.push(event);
            }
        }
        Ok(kept)
    }

    /// Whether `event` is of one of the tenant's domains.
    pub async fn admits(&mut self, event: &FeedEvent) -> Result<bool, StoreError> {
        if let Some(known) = self.known.get(&event.aggregate_id) {
            return Ok(*known);
        }
        let tenant = match registered_tenant(event) {
            Some(tenant) => tenant,
            None => match self.views.domain_view(&event.aggregate_id).await? {
                Some(view) => view.tenant,
                None => {
                    let history = self.store.domain_history(&event.aggregate_id).await?;
                    history.first().and_then(registered_tenant).flatten()
                }
            },
        };
        let own = tenant.as_deref() == Some(self.tenant.as_str());
        self.known.insert(event.aggregate_id.clone(), own);
        Ok(own)
    }
}

/// The tenant a registration names (`Some(None)`: no tenant); `None` for any other event.
fn registered_tenant(event: &FeedEvent) -> Option<Option<String>> {
    if event.event_type != "DomainRegistered" {
        return None;
    }
    match event.decode() {
        Ok(CustomDomainEvent::DomainRegistered { tenant, .. }) => Some(tenant),
        _ => None,
    }
}
