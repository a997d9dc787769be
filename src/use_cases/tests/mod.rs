//! The use cases in process: a scripted CA ([`ScriptedCa`]), a DNS whose records a test sets,
//! pollers that only note what they are handed, and a real SQLite file store. The parts:
//! - `caa.rs`: CAA before an order: the fallback CA it permits, the refusal, `warn`, a failed
//!   lookup.
//! - `edge.rs`: an edge's handshake: the index, the cache, the key reads recorded once.
//! - `edge_stream.rs`: the certificate stream of the TLS edges (`read::edge_stream`).
//! - `edge_deliveries.rs`: the keys that stream hands out, recorded for whoever asked.
//! - `health.rs`: the health check before an order, and what a check records and answers.
//! - `issue.rs`: refusals, CA errors and fallback, budgets.
//! - `names.rs`: names another domain holds.
//! - `renew.rs`: the renewal lease, and what a renewal names as replaced.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{Duration, Utc};
use cqrs_es::persist::PersistedEventStore;
use cqrs_es::CqrsFramework;
use dns_handling_events::{IssuedCertificate, OrderDetails, RenewalWindow, RevocationReason};
use dns_handling_projections::DomainView;
use instant_acme::CertificateIdentifier;

use crate::adapters::acme::{AcmeError, AriAnswer, CertificateAuthority, CreatedOrder, Issuers};
use crate::adapters::certificate_keys::{CertificateKeys, OrderKey};
use crate::adapters::dns::{DnsError, DnsLookup};
use crate::adapters::event_repository::{EventRepository, Upcasters};
use crate::adapters::store::Store;
use crate::adapters::vault::{KeyEncryptionKey, KeyRing, KeyVault};
use crate::adapters::webhook_sender::WebhookSender;
use crate::app_state::{AppState, CommandOrigin, DomainLocks, RecordedEdgeReads};
use crate::audit::checkpoints::AuditSigner;
use crate::domain::aggregate::CustomDomainCommand;
use crate::domain::caa::CaaRecord;
use crate::domain::health::Resolution;
use crate::domain::renewal::RenewalPolicy;
use crate::read::edge_material::MaterialCache;
use crate::read::projector::ViewProjector;
use crate::read::view_reader::ViewReader;
use crate::settings::Settings;

mod caa;
mod checkpoints;
mod edge;
mod edge_deliveries;
mod edge_stream;
mod health;
mod issue;
mod names;
mod renew;
mod revoke;
mod tenants;
mod tokens;

/// A CA that answers as the test scripted it, and notes what it was asked.
pub(crate) struct ScriptedCa {
    directory: String,
    /// The next answers to new orders; a fresh order once they are spent.
    answers: Mutex<VecDeque<Result<CreatedOrder, AcmeError>>>,
    /// Every new order asked for: its names, and the identifier it named as replaced.
    pub(crate) asked: Mutex<Vec<(Vec<String>, Option<String>)>>,
    /// The renewal window it offers (`None`: no renewal information).
    pub(crate) window: Mutex<Option<RenewalWindow>>,
}

impl ScriptedCa {
    fn new(directory: &str) -> Arc<Self> {
        Arc::new(Self {
            directory: directory.to_owned(),
            answers: Mutex::default(),
            asked: Mutex::default(),
            window: Mutex::default(),
        })
    }

    /// The next new order is answered with `error`.
    pub(crate) fn fails_next(&self, error: AcmeError) {
        self.answers.lock().expect("lock").push_back(Err(error));
    }

    /// How many new orders it was asked for.
    pub(crate) fn orders_asked(&self) -> usize {
        self.asked.lock().expect("lock").len()
    }
}

#[async_trait]
impl CertificateAuthority for ScriptedCa {
    fn directory_url(&self) -> &str {
        &self.directory
    }

    fn new_orders_paused(&self) -> Option<AcmeError> {
        None
    }

    async fn create_order(
        &self,
        names: &[String],
        replaces: Option<&CertificateIdentifier<'static>>,
    ) -> Result<CreatedOrder, AcmeError> {
        let mut asked = self.asked.lock().expect("lock");
        asked.push((names.to_vec(), replaces.map(ToString::to_string)));
        let scripted = self.answers.lock().expect("lock").pop_front();
        scripted.unwrap_or_else(|| {
            Ok(CreatedOrder {
                order_url: format!("{}/order/{}", self.directory, asked.len()),
                // The CA holds every authorization already: nothing to publish.
                challenges: Vec::new(),
                account_id: format!("{}/acct/1", self.directory),
            })
        })
    }

    async fn complete_order(
        &self,
        _order: &OrderDetails,
        _key: &OrderKey<'_>,
    ) -> Result<IssuedCertificate, AcmeError> {
        Err(AcmeError::Unavailable {
            context: "not scripted".into(),
            source: None,
        })
    }

    async fn renewal_info(&self, _chain_pem: &str) -> Result<Option<AriAnswer>, AcmeError> {
        Ok(self
            .window
            .lock()
            .expect("lock")
            .clone()
            .map(|window| AriAnswer {
                window,
                retry_after: std::time::Duration::from_secs(3600),
            }))
    }

    async fn revoke(&self, _chain_pem: &str, _reason: RevocationReason) -> Result<(), AcmeError> {
        Ok(())
    }

    async fn check_directory(&self) -> Result<(), String> {
        Ok(())
    }

    /// `caN.test` for the CA at `https://caN.test/directory`.
    async fn caa_identities(&self) -> Result<Vec<String>, AcmeError> {
        let host = self
            .directory
            .trim_start_matches("https://")
            .split('/')
            .next()
            .unwrap_or_default();
        Ok(vec![host.to_owned()])
    }

    async fn account_url(&self) -> Result<String, AcmeError> {
        Ok(format!("{}/acct/1", self.directory))
    }
}

/// DNS whose TXT records (`.0`), CAA records (`.1`; `None`: the lookup fails) and addresses
/// (`.2`; absent: NXDOMAIN) the test publishes; no CNAMEs. A view set in `.3` is written over
/// the store's at the next address lookup, so that a test sees which read of a domain a use
/// case answers with: the one before its lookups or one after.
#[derive(Default)]
pub(crate) struct ScriptedDns(
    Mutex<HashMap<String, Vec<String>>>,
    pub(crate) Mutex<HashMap<String, Option<Vec<CaaRecord>>>>,
    pub(crate) Mutex<HashMap<String, Resolution>>,
    pub(crate) Mutex<Option<(Store, DomainView)>>,
);

#[async_trait]
impl DnsLookup for ScriptedDns {
    async fn txt_values(&self, name: &str) -> Result<Vec<String>, DnsError> {
        Ok(self
            .0
            .lock()
            .expect("lock")
            .get(name)
            .cloned()
            .unwrap_or_default())
    }

    async fn cname_target(&self, _name: &str) -> Result<Option<String>, DnsError> {
        Ok(None)
    }

    async fn caa_records(&self, name: &str) -> Result<Vec<CaaRecord>, DnsError> {
        match self.1.lock().expect("lock").get(name) {
            Some(Some(records)) => Ok(records.clone()),
            Some(None) => Err(DnsError {
                name: name.to_owned(),
                reason: "SERVFAIL (scripted)".into(),
            }),
            None => Ok(Vec::new()),
        }
    }

    async fn resolve_addresses(&self, name: &str) -> Result<Resolution, DnsError> {
        let rewrite = self.3.lock().expect("lock").take();
        if let Some((store, view)) = rewrite {
            overwrite_view(&store, view).await;
        }
        Ok(self
            .2
            .lock()
            .expect("lock")
            .get(name)
            .cloned()
            .unwrap_or(Resolution::NoSuchName))
    }

    fn describe(&self) -> String {
        "scripted".into()
    }
}

/// Writes `view` over the store's view of its domain, as no event would.
pub(crate) async fn overwrite_view(store: &Store, view: DomainView) {
    store
        .write_projection(crate::adapters::store::ProjectionWrite {
            views: &[view],
            ..Default::default()
        })
        .await
        .expect("the view overwritten");
}

/// A CAA `issue` or `issuewild` record naming `issuer`.
pub(crate) fn caa_issue(tag: &str, issuer: &str) -> CaaRecord {
    CaaRecord {
        flags: 0,
        tag: tag.into(),
        value: issuer.into(),
        issuer: Some(crate::domain::caa::CaaIssuer {
            domain: Some(issuer.into()),
            parameters: Vec::new(),
        }),
    }
}

/// Pollers that note the orders they are handed.
#[derive(Default)]
pub(crate) struct NotedPollers {
    /// Every order handed over: the domain, the order, whether it renews.
    pub(crate) started: Mutex<Vec<(String, OrderDetails, bool)>>,
    /// Every domain whose polling was stopped.
    pub(crate) stopped: Mutex<Vec<String>>,
}

impl super::Pollers for NotedPollers {
    fn start(&self, domain_id: &str, _domain_name: &str, order: &OrderDetails, renewal: bool) {
        let started = (domain_id.to_owned(), order.clone(), renewal);
        self.started.lock().expect("lock").push(started);
    }

    fn stop(&self, domain_id: &str) {
        self.stopped
            .lock()
            .expect("lock")
            .push(domain_id.to_owned());
    }
}

impl NotedPollers {
    /// How many orders were handed over.
    pub(crate) fn orders(&self) -> usize {
        self.started.lock().expect("lock").len()
    }
}

/// The service's shared state over a fresh SQLite file, with scripted CAs and DNS.
pub(crate) struct World {
    /// What the use cases are given.
    pub(crate) state: Arc<AppState>,
    /// The configured CAs, in the order orders try them.
    pub(crate) cas: Vec<Arc<ScriptedCa>>,
    /// The DNS the service looks up.
    pub(crate) dns: Arc<ScriptedDns>,
    /// The pollers the use cases hand orders to.
    pub(crate) pollers: NotedPollers,
    folder: PathBuf,
}

impl World {
    /// A world of `cas` configured CAs, with `settings` changed as the test needs.
    pub(crate) async fn new(cas: usize, change: impl FnOnce(&mut Settings)) -> Self {
        let folder = std::env::temp_dir().join(format!("use-cases-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&folder).expect("a folder");
        let mut settings = Settings {
            database_url: format!("sqlite://{}", folder.join("store.db").display()),
            ..Settings::default()
        };
        change(&mut settings);
        let store = Store::connect_with(&settings.database_url, settings.store_timeout)
            .await
            .expect("connects");
        store.migrate().await.expect("migrates");
        let vault = KeyVault::new(
            store.clone(),
            KeyRing::new(KeyEncryptionKey::generate(), Vec::new()),
        );
        let cas: Vec<Arc<ScriptedCa>> = (1..=cas)
            .map(|n| ScriptedCa::new(&format!("https://ca{n}.test/directory")))
            .collect();
        let configured = cas
            .iter()
            .map(|ca| ca.clone() as Arc<dyn CertificateAuthority>)
            .collect();
        let retired =
            |directory: &str| -> Arc<dyn CertificateAuthority> { ScriptedCa::new(directory) };
        let domain_events = || {
            PersistedEventStore::new_snapshot_store(EventRepository::new(store.clone()), 100)
                .with_upcasters(vec![Box::new(Upcasters)])
        };
        let policy = RenewalPolicy {
            retry_schedule: settings.renewal_retry_schedule.clone(),
        };
        let projector = ViewProjector::new(store.clone());
        let webhook_events =
            || PersistedEventStore::new_event_store(EventRepository::for_webhooks(store.clone()));
        let token_events =
            || PersistedEventStore::new_event_store(EventRepository::for_tokens(store.clone()));
        let dns = Arc::new(ScriptedDns::default());
        let state = Arc::new(AppState {
            tokens: CqrsFramework::new(token_events(), vec![], ()),
            token_events: token_events(),
            token_table: Arc::default(),
            cqrs: CqrsFramework::new(domain_events(), vec![Box::new(projector)], policy),
            domain_events: domain_events(),
            views: ViewReader::new(store.clone()),
            issuers: Issuers::new(configured, Box::new(retired)),
            dns: dns.clone(),
            certificate_keys: CertificateKeys::new(vault.clone()),
            vault,
            signer: Arc::new(AuditSigner::resolve(&settings).expect("a signing key")),
            replica_id: "replica-1".into(),
            webhooks: CqrsFramework::new(webhook_events(), vec![], ()),
            webhook_events: webhook_events(),
            webhook_sender: WebhookSender::new(std::time::Duration::from_secs(1), false)
                .expect("a sender"),
            domain_locks: DomainLocks::default(),
            edge_index: Arc::default(),
            edge_material: MaterialCache::new(settings.edge_cache_entries, store.clone()),
            edge_reads: RecordedEdgeReads::default(),
            // Never said: these tests stop with their runtime.
            stopping: crate::tasks::Stopping::channel().1,
            settings,
            store,
        });
        Self {
            state,
            cas,
            dns,
            pollers: NotedPollers::default(),
            folder,
        }
    }

    /// Who the test's commands come from.
    pub(crate) fn origin() -> CommandOrigin {
        CommandOrigin::actor("test")
    }

    /// The domain `name`, registered and not yet verified.
    pub(crate) async fn registered(&self, name: &str) -> DomainView {
        super::register::register(&self.state, name, &[], Self::origin())
            .await
            .expect("registered")
    }

    /// The domain `name`, registered and verified by its TXT record.
    pub(crate) async fn verified(&self, name: &str) -> DomainView {
        let view = self.registered(name).await;
        self.publish_verification(&view);
        super::verify::verify(&self.state, &view.id, Self::origin())
            .await
            .expect("verified")
    }

    /// Publishes the verification TXT record of `view`.
    pub(crate) fn publish_verification(&self, view: &DomainView) {
        self.dns.0.lock().expect("lock").insert(
            view.verification_record_name.clone(),
            vec![view.verification_token.clone()],
        );
    }

    /// Publishes `0 issue "<issuer>"` as the CAA RRset of `name`.
    pub(crate) fn forbid_by_caa(&self, name: &str, issuer: &str) {
        self.set_caa(name, Some(vec![caa_issue("issue", issuer)]));
    }

    /// Sets the CAA records of `name` (`None`: its lookup fails).
    pub(crate) fn set_caa(&self, name: &str, records: Option<Vec<CaaRecord>>) {
        self.dns
            .1
            .lock()
            .expect("lock")
            .insert(name.to_owned(), records);
    }

    /// The domain `name` with a certificate in service from the first CA, issued through an
    /// order the pollers were handed (then forgotten).
    pub(crate) async fn active(&self, name: &str) -> DomainView {
        let view = self.verified(name).await;
        let issued = super::issue::issue(&self.state, &self.pollers, &view.id, Self::origin())
            .await
            .expect("ordered");
        let not_after = Utc::now() + Duration::days(89);
        (self.finish_order(&view.id, &issued.order, leaf_pem(name), not_after)).await;
        self.pollers.started.lock().expect("lock").clear();
        self.view(&view.id).await
    }

    /// Completes `order` of domain `id` as its poller would once the CA issued: its records
    /// seen, then the certificate `chain_pem`, valid from a day ago until `not_after`. Answers
    /// the certificate's id. (The key is the caller's to store, in the form it needs.)
    pub(crate) async fn finish_order(
        &self,
        id: &str,
        order: &OrderDetails,
        chain_pem: String,
        not_after: chrono::DateTime<Utc>,
    ) -> String {
        let observed = CustomDomainCommand::TxtObserved {
            order_id: order.order_id.clone(),
            observed_values: Default::default(),
            resolver: "scripted".into(),
            at: Utc::now(),
        };
        self.execute(id, observed).await;
        let certificate_id = uuid::Uuid::now_v7().to_string();
        let finalized = CustomDomainCommand::OrderFinalized {
            certificate: IssuedCertificate {
                certificate_id: certificate_id.clone(),
                order_id: order.order_id.clone(),
                serial: "01".into(),
                not_before: Utc::now() - Duration::days(1),
                not_after,
                fingerprint_sha256: "ab".into(),
                chain_pem,
                ca_directory: order.ca_directory.clone(),
            },
            at: Utc::now(),
        };
        self.execute(id, finalized).await;
        certificate_id
    }

    /// Executes `command` on domain `id`, which must take it.
    pub(crate) async fn execute(&self, id: &str, command: CustomDomainCommand) {
        super::execute(&self.state, id, command, Self::origin())
            .await
            .expect("recorded");
    }

    /// The domain's view as the store has it.
    pub(crate) async fn view(&self, id: &str) -> DomainView {
        let view = self.state.store.domain_view(id).await.expect("read");
        view.expect("a view")
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.folder);
    }
}

/// A leaf certificate for `name` signed by a throwaway CA, with the authority key identifier a
/// renewal's `replaces` is made of.
pub(crate) fn leaf_pem(name: &str) -> String {
    let ca_key = rcgen::KeyPair::generate().expect("a key");
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let mut leaf = rcgen::CertificateParams::new(vec![name.to_owned()]).expect("params");
    leaf.use_authority_key_identifier_extension = true;
    let leaf_key = rcgen::KeyPair::generate().expect("a key");
    leaf.signed_by(&leaf_key, &issuer).expect("signed").pem()
}
