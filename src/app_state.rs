//! What the HTTP handlers and the actors share: the command side, the store, ACME and DNS.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use dns_handling_events::{OrderDetails, Validation};
use dns_handling_projections::DomainView;
use instant_acme::CertificateIdentifier;

use cqrs_es::persist::PersistedEventStore;
use cqrs_es::{AggregateError, CqrsFramework};

use crate::adapters::acme::{AcmeClient, AcmeError};
use crate::adapters::certificate_keys::CertificateKeys;
use crate::adapters::dns::DnsLookup;
use crate::adapters::event_repository::EventRepository;
use crate::adapters::store::{SpentUnits, Store};
use crate::adapters::vault::KeyVault;
use crate::adapters::webhook_sender::WebhookSender;
use crate::audit::checkpoints::AuditSigner;
use crate::domain::aggregate::{CustomDomain, CustomDomainCommand, DomainError};
use crate::domain::delegation::{DelegationRecord, DelegationZone};
use crate::domain::webhook_endpoint::{WebhookEndpoint, WebhookEndpointError};
use crate::read::view_reader::ViewReader;
use crate::settings::Settings;

/// The cqrs-es framework for custom domains over the configured store.
pub type DomainCqrs =
    CqrsFramework<CustomDomain, PersistedEventStore<EventRepository, CustomDomain>>;

/// The event store of webhook endpoints (table `webhook_events`).
pub type WebhookEventStore = PersistedEventStore<EventRepository, WebhookEndpoint>;

/// The cqrs-es framework for webhook endpoints.
pub type WebhookCqrs = CqrsFramework<WebhookEndpoint, WebhookEventStore>;

/// The shared parts of the running service.
pub struct AppState {
    /// Executes commands against the aggregate and persists the events.
    pub cqrs: DomainCqrs,
    /// Read projections and the service's other tables.
    pub store: Store,
    /// Single domain views for the API, concurrent reads coalesced into one query.
    pub views: ViewReader,
    /// The ACME client of the first CA (`ACME_DIRECTORY`), with its account.
    pub acme: Arc<AcmeClient>,
    /// Every CA, in the order orders try them: the first, then `ACME_FALLBACK_ISSUERS`.
    pub issuers: Vec<Arc<AcmeClient>>,
    /// Clients of CAs no longer configured that issued an order or a certificate the store
    /// still has (staging before production, say), by directory: built on first need and
    /// kept, each with the account stored for its directory and never a new one. Only what
    /// that CA issued goes there (polling, revocation, renewal information); new orders go to
    /// `issuers` alone.
    pub retired_issuers: std::sync::RwLock<HashMap<String, Arc<AcmeClient>>>,
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
}

/// A store failure met while keeping a budget.
fn store_failed(error: crate::adapters::store::StoreError) -> AcmeError {
    AcmeError::Vault(crate::adapters::vault::VaultError::Store(error))
}

/// The budget of new orders, by ACME directory.
pub const NEW_ORDERS: &str = "new_orders";

/// The budget of failed validations, by name.
pub const FAILED_VALIDATIONS: &str = "failed_validations";

/// How many times a command is decided again after its append lost a race.
const CONFLICT_RETRIES: u32 = 4;

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
    /// Places one ACME order for every name of the domain (a renewal names the certificate it
    /// `replaces`) and gives what the aggregate records of it: polled every `POLL_INTERVAL`,
    /// waiting for its records for `wait`. With delegated validation on, the order is
    /// `delegated` when every name's `_acme-challenge` is a CNAME to its record in the
    /// service's zone, and `manual`, saying why, when one is not.
    pub async fn place_order(
        &self,
        view: &DomainView,
        replaces: Option<(&CertificateIdentifier<'static>, &str)>,
        wait: Duration,
    ) -> Result<OrderDetails, AcmeError> {
        let names = view.names();
        // Each step boxed: inline, their futures made a request's future overflow the stack of
        // an actix worker.
        let delegation = match self.settings.delegation() {
            Some(zone) => Some((Box::pin(self.delegation_problems(&zone, view)).await, zone)),
            None => None,
        };
        let (created, acme) = Box::pin(self.create_order_somewhere(&names, replaces)).await?;
        let settings = &self.settings;
        let mut challenges = created.challenges;
        let (validation, delegation_problem) = match delegation {
            Some((problems, zone)) if problems.is_empty() => {
                for challenge in &mut challenges {
                    let record = zone.record_for(&view.verification_token, &challenge.identifier);
                    challenge.delegated_to = Some(record.target);
                }
                (Validation::Delegated, None)
            }
            Some((problems, _)) => (Validation::Manual, Some(problems.join("; "))),
            None => (Validation::Manual, None),
        };
        Ok(OrderDetails {
            order_id: uuid::Uuid::now_v7().to_string(),
            order_url: created.order_url,
            names,
            challenges,
            account_id: created.account_id,
            poll_interval_ms: u64::try_from(settings.poll_interval.as_millis()).unwrap_or(u64::MAX),
            deadline: Utc::now()
                + chrono::Duration::from_std(wait).unwrap_or_else(|_| chrono::Duration::minutes(5)),
            key_type: settings.cert_key_type,
            validation,
            delegation_problem,
            ca_directory: acme.directory_url().to_owned(),
        })
    }

    /// The client of the CA at `directory`, the one that placed an order or issued a
    /// certificate recorded with it: a configured CA's (the first CA's for an empty directory,
    /// recorded before several CAs), else that of a CA no longer configured, built once with
    /// the default contact and `ACME_CA_BUNDLE` and the account stored for its directory
    /// (see [`AcmeClient::of_stored_account`]). Never a CA other than the one named.
    pub fn acme_for(&self, directory: &str) -> Arc<AcmeClient> {
        if let Some(configured) = self.configured_acme(directory) {
            return configured.clone();
        }
        let known = self
            .retired_issuers
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(directory)
            .cloned();
        if let Some(retired) = known {
            return retired;
        }
        let mut retired = self
            .retired_issuers
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        retired
            .entry(directory.to_owned())
            .or_insert_with(|| {
                tracing::info!(
                    directory,
                    "asking a CA that is no longer configured about what it issued, with the \
                     account stored for it"
                );
                AcmeClient::of_stored_account(
                    directory.to_owned(),
                    self.settings.acme_email.clone(),
                    self.settings.acme_ca_bundle.clone(),
                    self.vault.clone(),
                )
            })
            .clone()
    }

    /// The configured CA at `directory` (the first CA for an empty directory: orders and
    /// certificates recorded before several CAs went to it); `None` for a CA no longer
    /// configured.
    pub fn configured_acme(&self, directory: &str) -> Option<&Arc<AcmeClient>> {
        if directory.is_empty() {
            return Some(&self.acme);
        }
        self.issuers
            .iter()
            .find(|acme| acme.directory_url() == directory)
    }

    /// Places the order with the first CA that takes it, within that CA's budget: the next CA
    /// is tried when one is unreachable, refuses for now (rate limits, `503`), or its budget is
    /// spent; a refusal on policy (the names, the account) is the answer. A renewal that names
    /// what it `replaces` (ARI) names it only to the CA that issued it (`replaces`' directory),
    /// and only that order is exempt from the budget. When every CA fails, the answer is the
    /// first "not now" met (a client can retry after it), else the last failure.
    ///
    /// A CA that said when to come back, or did not answer a moment ago, is skipped without
    /// spending its budget; a unit spent for an order the CA never got (it refused, or could
    /// not be reached) is given back, so an outage does not spend the budget.
    async fn create_order_somewhere(
        &self,
        names: &[String],
        replaces: Option<(&CertificateIdentifier<'static>, &str)>,
    ) -> Result<(crate::adapters::acme::CreatedOrder, &Arc<AcmeClient>), AcmeError> {
        Box::pin(self.check_name_budgets(names)).await?;
        let mut not_now = None;
        let mut last_error = None;
        for acme in &self.issuers {
            let replaces = replaces
                .filter(|(_, directory)| {
                    self.configured_acme(directory)
                        .is_some_and(|issuer| issuer.directory_url() == acme.directory_url())
                })
                .map(|(identifier, _)| identifier);
            let attempt = async {
                if let Some(paused) = acme.new_orders_paused() {
                    return Err(paused);
                }
                let spent =
                    Box::pin(self.spend_order_budget(acme.directory_url(), replaces.is_some()))
                        .await?;
                let created = Box::pin(acme.create_order(names, replaces)).await;
                if let Err(error) = &created {
                    if !error.may_have_placed_order() {
                        self.refund_order_budget(&spent).await;
                    }
                }
                created
            };
            match attempt.await {
                Ok(created) => return Ok((created, acme)),
                Err(error @ AcmeError::Refused(_)) => return Err(error),
                Err(error) => {
                    tracing::warn!(
                        directory = acme.directory_url(), %error,
                        "this CA cannot take the order now"
                    );
                    match error {
                        AcmeError::RateLimited { .. } | AcmeError::BudgetSpent { .. }
                            if not_now.is_none() =>
                        {
                            not_now = Some(error);
                        }
                        other => last_error = Some(other),
                    }
                }
            }
        }
        Err(not_now
            .or(last_error)
            .unwrap_or_else(|| AcmeError::OrderCreation {
                context: "no CA configured".into(),
                source: None,
            }))
    }

    /// Keeps the CA's limit on failed validations before it has to refuse: no order for a name
    /// whose validations failed too often in the window, whichever CA. Shared by every replica;
    /// one query for all the names.
    async fn check_name_budgets(&self, names: &[String]) -> Result<(), AcmeError> {
        let failures = self.settings.acme_failed_validation_budget;
        let left = self
            .store
            .budget_left(
                FAILED_VALIDATIONS,
                names,
                failures.limit,
                failures.chrono_window(),
            )
            .await
            .map_err(store_failed)?;
        let Err((name, retry_after)) = left else {
            return Ok(());
        };
        crate::metrics::METRICS
            .ca_refusals
            .get_or_create(&crate::metrics::BudgetLabel {
                budget: FAILED_VALIDATIONS,
            })
            .inc();
        Err(AcmeError::BudgetSpent {
            detail: format!(
                "{name} failed validation {} times within {} (ACME_FAILED_VALIDATION_BUDGET)",
                failures.limit,
                humantime::format_duration(failures.window)
            ),
            retry_after,
        })
    }

    /// Keeps a CA's limit on new orders before it has to refuse: no new order past its
    /// account's budget (an ARI renewal, which Let's Encrypt exempts, spends none). Shared by
    /// every replica. Answers the unit spent, to be given back if the CA never gets the order.
    async fn spend_order_budget(
        &self,
        directory: &str,
        ari_renewal: bool,
    ) -> Result<SpentUnits, AcmeError> {
        if ari_renewal {
            return Ok(SpentUnits::default());
        }
        let orders = self.settings.acme_new_order_budget;
        let spent = self
            .store
            .spend_budget(
                NEW_ORDERS,
                &[directory],
                orders.limit,
                orders.chrono_window(),
            )
            .await
            .map_err(store_failed)?;
        if spent.is_err() {
            crate::metrics::METRICS
                .ca_refusals
                .get_or_create(&crate::metrics::BudgetLabel { budget: NEW_ORDERS })
                .inc();
        }
        spent.map_err(|retry_after| AcmeError::BudgetSpent {
            detail: format!(
                "the account's new-order budget of {} per {} is spent (ACME_NEW_ORDER_BUDGET)",
                orders.limit,
                humantime::format_duration(orders.window)
            ),
            retry_after,
        })
    }

    /// Gives back the new-order unit of an order the CA never got. A store failure here only
    /// leaves the unit spent until it leaves the window: logged, not the caller's failure.
    async fn refund_order_budget(&self, spent: &SpentUnits) {
        if let Err(error) = self.store.refund_budget(spent).await {
            tracing::warn!(%error, "could not give back a new-order unit the CA never used");
        }
    }

    /// What stops the domain's names from being validated by delegation: for each distinct
    /// `_acme-challenge` name, its CNAME missing, pointing elsewhere, or not looked up. Checked
    /// through the configured resolvers, as the CA will follow it.
    async fn delegation_problems(&self, zone: &DelegationZone, view: &DomainView) -> Vec<String> {
        let mut records: Vec<DelegationRecord> = Vec::new();
        for name in view.names() {
            let record = zone.record_for(&view.verification_token, &name);
            if !records.contains(&record) {
                records.push(record);
            }
        }
        let lookups = records
            .iter()
            .map(|record| self.dns.cname_target(&record.name));
        let seen = futures::future::join_all(lookups).await;
        records
            .iter()
            .zip(seen)
            .filter_map(|(record, seen)| match seen {
                Ok(seen) => DelegationZone::problem_with(record, seen.as_deref()),
                Err(error) => Some(error.to_string()),
            })
            .collect()
    }

    /// The webhook endpoint `id` as its events make it (a default, not created, when it has
    /// none).
    pub async fn webhook_endpoint(
        &self,
        id: &str,
    ) -> Result<WebhookEndpoint, AggregateError<WebhookEndpointError>> {
        use cqrs_es::{AggregateContext, EventStore};
        Ok(self
            .webhook_events
            .load_aggregate(id)
            .await?
            .aggregate()
            .clone())
    }

    /// Executes a command on one domain, recording `origin` with its events.
    ///
    /// Another writer may append to the domain between the load and the append (the renewal
    /// scheduler, a poller, another replica): the append is then refused as a conflict and
    /// nothing is recorded. The command is decided again on the domain as it now stands, a few
    /// times, before the conflict reaches the caller: a request should not fail because
    /// background work recorded something a moment earlier.
    pub async fn execute(
        &self,
        domain_id: &str,
        command: CustomDomainCommand,
        origin: CommandOrigin,
    ) -> Result<(), AggregateError<DomainError>> {
        let mut conflicts = 0;
        loop {
            let result = self
                .cqrs
                .execute_with_metadata(domain_id, command.clone(), origin.0.clone())
                .await;
            match result {
                Err(AggregateError::AggregateConflict) if conflicts < CONFLICT_RETRIES => {
                    conflicts += 1;
                }
                other => return other,
            }
        }
    }
}
