//! What the use cases, the HTTP handlers and the actors share: handles on the command side, the
//! store, the CAs and DNS, and who caused a command. Handles only: what is done with them is
//! `use_cases/`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use cqrs_es::persist::PersistedEventStore;
use cqrs_es::CqrsFramework;

use crate::adapters::acme::Issuers;
use crate::adapters::certificate_keys::CertificateKeys;
use crate::adapters::dns::DnsLookup;
use crate::adapters::event_repository::EventRepository;
use crate::adapters::store::Store;
use crate::adapters::vault::KeyVault;
use crate::adapters::webhook_sender::WebhookSender;
use crate::audit::checkpoints::AuditSigner;
use crate::domain::access_token::AccessToken;
use crate::domain::aggregate::CustomDomain;
use crate::domain::webhook_endpoint::WebhookEndpoint;
use crate::read::edge_index::EdgeIndex;
use crate::read::edge_material::MaterialCache;
use crate::read::token_table::TokenTable;
use crate::read::view_reader::ViewReader;
use crate::settings::Settings;
use crate::tasks::Stopping;

/// The event store of custom domains (table `events`, with snapshots).
pub type DomainEventStore = PersistedEventStore<EventRepository, CustomDomain>;

/// The cqrs-es framework for custom domains over the configured store.
pub type DomainCqrs = CqrsFramework<CustomDomain, DomainEventStore>;

/// The event store of webhook endpoints (table `webhook_events`).
pub type WebhookEventStore = PersistedEventStore<EventRepository, WebhookEndpoint>;

/// The cqrs-es framework for webhook endpoints.
pub type WebhookCqrs = CqrsFramework<WebhookEndpoint, WebhookEventStore>;

/// The event store of access tokens (table `token_events`).
pub type TokenEventStore = PersistedEventStore<EventRepository, AccessToken>;

/// The cqrs-es framework for access tokens.
pub type TokenCqrs = CqrsFramework<AccessToken, TokenEventStore>;

/// The shared parts of the running service.
pub struct AppState {
    /// Executes commands against the aggregate and persists the events.
    pub cqrs: DomainCqrs,
    /// Loads a domain's aggregate as its events make it (what the framework would decide on).
    pub domain_events: DomainEventStore,
    /// Read projections and the service's other tables.
    pub store: Store,
    /// Single domain views for the API, concurrent reads coalesced into one query.
    pub views: ViewReader,
    /// Every CA: the configured ones in the order orders try them, and the retired ones that
    /// issued what the store still has.
    pub issuers: Issuers,
    /// TXT lookups.
    pub dns: Arc<dyn DnsLookup>,
    /// Private keys, encrypted at rest.
    pub vault: KeyVault,
    /// The certificate keys of orders: read, or generated and stored before first use.
    pub certificate_keys: CertificateKeys,
    /// Signs checkpoints of the log; its key is never stored.
    pub signer: Arc<AuditSigner>,
    /// The effective settings.
    pub settings: Settings,
    /// This process's name as a lease owner: unique per start.
    pub replica_id: String,
    /// Executes commands against webhook endpoints.
    pub webhooks: WebhookCqrs,
    /// Loads webhook endpoints (the same events the framework writes).
    pub webhook_events: WebhookEventStore,
    /// Delivers webhook messages.
    pub webhook_sender: WebhookSender,
    /// Executes commands against access tokens.
    pub tokens: TokenCqrs,
    /// Loads access tokens (the same events the framework writes).
    pub token_events: TokenEventStore,
    /// The managed tokens every request is checked against (kept from their log).
    pub token_table: Arc<TokenTable>,
    /// Serialises, per domain within this process, the requests that decide its next order.
    pub domain_locks: DomainLocks,
    /// Which certificate serves each name, for the edge routes (kept from the feed).
    pub edge_index: Arc<EdgeIndex>,
    /// The chains and keys the edge routes hand out, bounded (`EDGE_CACHE_ENTRIES`).
    pub edge_material: MaterialCache,
    /// The edges' key reads this process saw recorded.
    pub edge_reads: RecordedEdgeReads,
    /// Says when the process is stopping: the streams that follow end then.
    pub stopping: Stopping,
}

/// Who caused a command, recorded as the metadata of the events it produces.
#[derive(Debug, Clone, Default)]
pub struct CommandOrigin(pub HashMap<String, String>);

impl CommandOrigin {
    /// Commands issued by a background actor.
    pub fn actor(name: &str) -> Self {
        Self(HashMap::from([("actor".to_owned(), name.to_owned())]))
    }
}

/// Serialises, per domain within this process, the calls that decide what its next order
/// covers: concurrent `issue-certificate` calls create one ACME order, not one per call, and a
/// new set of alt names does not slip in between reading the names and recording the order.
#[derive(Default)]
pub struct DomainLocks(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl DomainLocks {
    /// The lock of `domain_id` (held by awaiting its `lock()`).
    pub fn lock_for(&self, domain_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Drop locks nobody holds, so the map stays as small as the set of calls in flight.
        locks.retain(|_, lock| Arc::strong_count(lock) > 1);
        locks.entry(domain_id.to_owned()).or_default().clone()
    }
}

/// The (edge, certificate) key reads this process saw recorded: a repeat skips the command
/// altogether (the aggregate would record nothing for it either, after a load). Forgotten
/// whole past [`RecordedEdgeReads::LIMIT`]: a forgotten read costs one command that records
/// nothing, never a second event.
#[derive(Default)]
pub struct RecordedEdgeReads(Mutex<HashSet<String>>);

impl RecordedEdgeReads {
    /// The most reads remembered.
    pub const LIMIT: usize = 100_000;

    fn key(edge: &str, certificate_id: &str) -> String {
        // An edge's name holds no space.
        format!("{edge} {certificate_id}")
    }

    fn reads(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether `edge`'s read of `certificate_id` was seen recorded.
    pub fn contains(&self, edge: &str, certificate_id: &str) -> bool {
        self.reads().contains(&Self::key(edge, certificate_id))
    }

    /// Notes that `edge`'s read of `certificate_id` is recorded.
    pub fn insert(&self, edge: &str, certificate_id: &str) {
        let mut reads = self.reads();
        if reads.len() >= Self::LIMIT {
            reads.clear();
        }
        reads.insert(Self::key(edge, certificate_id));
    }

    /// Forgets every read (as a process that starts does).
    pub fn forget_all(&self) {
        self.reads().clear();
    }

    /// How many reads it remembers.
    pub fn len(&self) -> usize {
        self.reads().len()
    }

    /// Whether it remembers none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::RecordedEdgeReads;

    #[test]
    fn the_edge_reads_seen_recorded_are_kept_apart_by_edge_and_forgotten_past_the_limit() {
        let reads = RecordedEdgeReads::default();
        reads.insert("edge1", "c1");
        assert!(reads.contains("edge1", "c1"));
        assert!(!reads.contains("edge2", "c1") && !reads.contains("edge1", "c2"));
        for n in 0..RecordedEdgeReads::LIMIT {
            reads.insert("edge1", &format!("other-{n}"));
        }
        assert!(reads.len() <= RecordedEdgeReads::LIMIT, "bounded");
        assert!(!reads.contains("edge1", "c1"), "forgotten");
    }
}
