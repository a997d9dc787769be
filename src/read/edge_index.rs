//! Keeps this replica's edge index in step with the event feed: which certificate serves each
//! name, for `GET /edge/certificate` to answer without a query. Every replica keeps its own.
//!
//! At start the index is built from the whole feed (position 0), aside: the index the edges
//! read is replaced by it at once when it is caught up, and only then is the service ready
//! (`/readyz`). Then the feed is followed, each commit of any replica waking the follower (see
//! `commit_signal`), and applied to the index the edges read. Its position is kept in memory.
//!
//! A certificate issued serves its names (read from the chain's leaf), in place of what the
//! domain served before; its revocation, its expiry, the destruction of its key and the
//! domain's removal withdraw them.
//!
//! The index ([`NameIndex`]) is laid out for a million certificates on every replica: a slab
//! of one slot per domain (16-byte UUID ids, the certificate's end, its names packed in one
//! allocation) and two hash tables of small references into it: 74 bytes per name where
//! maps of boxed names to shared entries took 279 (see `edge/names.rs`). Readers hold the lock
//! for one lookup and leave with a [`ServedEntry`] of their own, made from the slot.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockWriteGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use dns_handling_events::CustomDomainEvent;

use crate::adapters::acme::certificate_names;
use crate::adapters::store::{FeedRow, Store};
use crate::edge::names::{NameIndex, NotAHostName, ServedEntry};
use crate::metrics::METRICS;
use crate::read::built_aside::{self, FollowedModel, LiveModel};

/// The follower's name in `feed_consumer_stuck` and `/readyz`.
const CONSUMER: &str = "edge_index";

/// The events that change what the index serves (the others are not decoded).
const EVENT_TYPES: [&str; 5] = [
    "CertificateIssued",
    "CertificateRevoked",
    "CertificateExpired",
    "CertificateKeyDestroyed",
    "DomainRemoved",
];

/// The index the edge routes read, shared by the handlers and the follower.
#[derive(Debug, Default)]
pub struct EdgeIndex {
    names: RwLock<NameIndex>,
    /// Whether the index was built from the feed since the start.
    ready: AtomicBool,
}

impl EdgeIndex {
    /// The certificate serving `server_name` at `now` (`None`: not ours, or past its end).
    pub fn lookup(
        &self,
        server_name: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<ServedEntry>, NotAHostName> {
        let names = self
            .names
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        names.lookup(server_name, now)
    }

    /// Why the edge routes cannot be trusted yet: the index is not built from the feed.
    pub fn readiness_problem(&self) -> Option<String> {
        (!self.ready.load(Ordering::Acquire))
            .then(|| format!("{CONSUMER}: the edge index is not caught up with the event feed yet"))
    }
}

impl LiveModel for EdgeIndex {
    type Model = NameIndex;

    fn replace(&self, built: NameIndex) {
        METRICS.edge.index_names.set(built.len() as i64);
        *self.write() = built;
        self.ready.store(true, Ordering::Release);
    }

    fn write(&self) -> RwLockWriteGuard<'_, NameIndex> {
        self.names
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn applied(&self, index: &NameIndex) {
        METRICS.edge.index_names.set(index.len() as i64);
    }
}

/// Applies one event of `domain_id` to `index`.
pub fn apply(index: &mut NameIndex, domain_id: &str, event: &CustomDomainEvent) {
    match event {
        CustomDomainEvent::CertificateIssued { certificate, .. } => {
            let entry = ServedEntry {
                domain_id: domain_id.to_owned(),
                certificate_id: certificate.certificate_id.clone(),
                not_after: certificate.not_after,
            };
            index.serve(&certificate_names(&certificate.chain_pem), entry);
        }
        CustomDomainEvent::CertificateRevoked { certificate_id, .. }
        | CustomDomainEvent::CertificateExpired { certificate_id, .. }
        | CustomDomainEvent::CertificateKeyDestroyed {
            certificate_id: Some(certificate_id),
            ..
        } => index.withdraw_certificate(domain_id, certificate_id),
        CustomDomainEvent::DomainRemoved { .. } => index.withdraw(domain_id),
        _ => {}
    }
}

/// Builds the index from the feed, puts it in `index` (ready from then on), then follows the
/// feed for as long as the process runs, waking at each commit or after `fallback_poll`.
pub async fn follow(store: Store, index: Arc<EdgeIndex>, fallback_poll: Duration) {
    built_aside::follow(store, index, fallback_poll).await;
}

impl FollowedModel for EdgeIndex {
    type Record = FeedRow;
    const CONSUMER: &'static str = CONSUMER;
    const WHAT: &'static str = "the edge index";

    fn reads(row: &FeedRow) -> bool {
        EVENT_TYPES.contains(&row.event_type.as_str())
    }

    fn apply(index: &mut NameIndex, row: &FeedRow, event: CustomDomainEvent) {
        apply(index, &row.aggregate_id, &event);
    }
}

#[cfg(test)]
mod tests;
