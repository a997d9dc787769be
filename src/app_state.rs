//! What the HTTP handlers and the actors share: the command side, the store, ACME and DNS.

use std::collections::HashMap;
use std::sync::Arc;

use cqrs_es::persist::PersistedEventStore;
use cqrs_es::{AggregateError, CqrsFramework};

use crate::adapters::acme::AcmeClient;
use crate::adapters::certificate_keys::CertificateKeys;
use crate::adapters::dns::TxtLookup;
use crate::adapters::event_repository::EventRepository;
use crate::adapters::store::Store;
use crate::adapters::vault::KeyVault;
use crate::audit::checkpoints::AuditSigner;
use crate::domain::aggregate::{CustomDomain, CustomDomainCommand, DomainError};
use crate::read::view_reader::ViewReader;
use crate::settings::Settings;

/// The cqrs-es framework for custom domains over the configured store.
pub type DomainCqrs =
    CqrsFramework<CustomDomain, PersistedEventStore<EventRepository, CustomDomain>>;

/// The shared parts of the running service.
pub struct AppState {
    /// Executes commands against the aggregate and persists the events.
    pub cqrs: DomainCqrs,
    /// Read projections and the service's other tables.
    pub store: Store,
    /// Single domain views for the API, concurrent reads coalesced into one query.
    pub views: ViewReader,
    /// The ACME client with its one account.
    pub acme: Arc<AcmeClient>,
    /// TXT lookups.
    pub dns: Arc<dyn TxtLookup>,
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

impl AppState {
    /// Executes a command on one domain, recording `origin` with its events.
    pub async fn execute(
        &self,
        domain_id: &str,
        command: CustomDomainCommand,
        origin: CommandOrigin,
    ) -> Result<(), AggregateError<DomainError>> {
        self.cqrs
            .execute_with_metadata(domain_id, command, origin.0)
            .await
    }
}
