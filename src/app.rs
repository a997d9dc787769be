//! `Application`: builds the whole service from `Settings` and runs it, telling a service
//! manager how it is (`service_manager`).

mod service_manager;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use actix::{Actor, Addr};
use actix_web::dev::Server;
use actix_web::{web, App, HttpServer};
use anyhow::Context as _;
use cqrs_es::persist::PersistedEventStore;
use cqrs_es::CqrsFramework;

use crate::actors::{RenewalScheduler, ResumePending, Shutdown, Supervisor};
use crate::adapters::acme::{AcmeClient, CertificateAuthority, Issuers};
use crate::adapters::certificate_keys::CertificateKeys;
use crate::adapters::dns::{DnsLookup, HickoryDnsLookup};
use crate::adapters::dns_server::{ChallengeZone, DnsServer, TcpLimits};
use crate::adapters::event_repository::{EventRepository, Upcasters};
use crate::adapters::store::{lock_sqlite_exclusively, SqliteReplicaLock, Store};
use crate::adapters::vault::{KeyRing, KeyVault};
use crate::adapters::webhook_sender::WebhookSender;
use crate::app_state::{AppState, DomainLocks, RecordedEdgeReads};
use crate::audit::checkpoints::{self, AuditSigner};
use crate::deliveries;
use crate::domain::renewal::RenewalPolicy;
use crate::http;
use crate::read::edge_index::{self, EdgeIndex};
use crate::read::edge_material::MaterialCache;
use crate::read::projector::ViewProjector;
use crate::read::token_table::{self, TokenTable};
use crate::read::view_reader::ViewReader;
use crate::read::zone_follower;
use crate::settings::{redact_url_password, Settings};
use crate::tasks::{spawn_supervised, AbortOnDrop, StopStreams, Stopping};

/// The running service: its HTTP server and its supervisor.
pub struct Application {
    address: SocketAddr,
    server: Server,
    supervisor: Addr<Supervisor>,
    renewals: Addr<RenewalScheduler>,
    /// The background tasks (catch-up, checkpoints, commit listener), ended before the runtime
    /// is: a database connection dropped after it panics in sqlx and aborts the process.
    background: Vec<actix_web::rt::task::JoinHandle<()>>,
    /// The thread the periodic health checks run on (see [`on_a_thread_of_its_own`]), stopped
    /// and joined before the runtime ends, as the background tasks are.
    health_checks: actix::Arbiter,
    /// The delegation zone's DNS server, when `DELEGATION_ZONE` is set.
    dns_server: Option<DnsServer>,
    /// Ends the following streams when a stop signal arrives.
    stop_streams: StopStreams,
    /// What handlers share; the service manager is told when it is ready.
    state: Arc<AppState>,
    /// Held for the life of the process in SQLite mode: one process per database.
    _sqlite_lock: Option<SqliteReplicaLock>,
}

impl Application {
    /// Connects and migrates the store, starts the supervisor, resumes every pending order and
    /// binds the HTTP server. Must run inside an actix system (`#[actix_web::main]`).
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        Self::build_with_lookup(settings, None).await
    }

    /// As [`Application::build`], with TXT records looked up through `lookup` instead of the
    /// configured resolvers when given: tests wrap the real lookup to make it fail from inside.
    pub async fn build_with_lookup(
        settings: Settings,
        lookup: Option<Arc<dyn DnsLookup>>,
    ) -> anyhow::Result<Application> {
        let key = KeyRing::resolve(&settings)?;
        let signer = Arc::new(AuditSigner::resolve(&settings)?);
        let sqlite_lock = lock_sqlite_exclusively(&settings.database_url)?;
        let store = Store::connect_pooled(
            &settings.database_url,
            settings.store_timeout,
            settings.store_connections,
        )
        .await
        .with_context(|| {
            format!(
                "connecting to the store (DATABASE_URL={})",
                redact_url_password(&settings.database_url)
            )
        })?;
        store.migrate().await.context("migrating the store")?;
        let vault = KeyVault::new(store.clone(), key);
        let acme = AcmeClient::new(
            settings.acme_directory.clone(),
            settings.acme_email.clone(),
            settings.acme_ca_bundle.clone(),
            settings.external_account_binding(),
            settings.acme_profile.clone(),
            settings.acme_caa_identities.clone(),
            vault.clone(),
        );
        let mut issuers: Vec<Arc<dyn CertificateAuthority>> = vec![acme.clone()];
        for issuer in &settings.acme_fallback_issuers {
            issuers.push(AcmeClient::new(
                issuer.directory.clone(),
                issuer.contact.clone(),
                // Extra roots are extra trust, not a choice of CA: without its own, a further CA
                // is reached with ACME_CA_BUNDLE's.
                issuer
                    .ca_bundle
                    .clone()
                    .or_else(|| settings.acme_ca_bundle.clone()),
                issuer.external_account_binding(),
                settings.acme_profile.clone(),
                issuer.caa_identities.clone(),
                vault.clone(),
            ));
        }
        if settings.acme_profile.is_some() {
            // Asks the CA (its directory, and the account): a profile it does not list stops
            // the start here rather than failing every order.
            acme.check_profile().await?;
        }
        let dns: Arc<dyn DnsLookup> = match lookup {
            Some(lookup) => lookup,
            None => Arc::new(
                HickoryDnsLookup::new(&settings.dns_nameservers, settings.dns_timeout)
                    .context("setting up the DNS resolver")?,
            ),
        };
        let projector = ViewProjector::new(store.clone());
        // The views must be current before pending orders are read from them.
        let caught_up = projector
            .catch_up(|_| {})
            .await
            .context("bringing the read projections up to date")?;
        if caught_up > 0 {
            tracing::info!(caught_up, "read projections caught up with the event feed");
        }
        // Every loop of the background is started again should it panic (`tasks`).
        let mut background = vec![spawn_catch_up_loop(projector.clone())];
        if store.commit_listener().is_some() {
            // Other replicas commit too: their commits wake this one's following feed streams.
            let listening = store.clone();
            background.push(spawn_supervised("commit-listener", move || {
                let listener = listening.commit_listener();
                async move {
                    if let Some(listener) = listener {
                        listener.await;
                    }
                }
            }));
        }
        // Who this replica is to the others: its leases, and its zone follower's row.
        let replica_id = settings
            .replica_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        // The delegation zone is filled before pending orders resume, so their values are
        // served from the first lookup on.
        let dns_server = match settings.delegation() {
            Some(zone) => {
                let challenges = Arc::new(
                    ChallengeZone::with_nameserver_addresses(
                        &zone,
                        &settings.delegation_nameservers,
                        &settings.delegation_nameserver_addresses,
                    )
                    .context(
                        "setting up the delegation zone (DELEGATION_NAMESERVERS, \
                         DELEGATION_NAMESERVER_ADDRESSES)",
                    )?,
                );
                let position = zone_follower::fill(&store, &challenges)
                    .await
                    .context("filling the delegation zone from the open orders")?;
                // Started again from the position the zone was filled at: the changes since
                // are applied again in order, which leaves the zone as the feed says.
                crate::read::zone_lag::track(zone.name(), position);
                let (following, zone_values) = (store.clone(), challenges.clone());
                let interval = settings.feed_poll_interval;
                let following_as = replica_id.clone();
                background.push(spawn_supervised("zone-follower", move || {
                    zone_follower::follow(
                        following.clone(),
                        zone_values.clone(),
                        position,
                        interval,
                        following_as.clone(),
                    )
                }));
                Some(DnsServer::start(
                    &challenges,
                    &zone,
                    settings.dns_listen_addr,
                    TcpLimits {
                        max_connections: settings.dns_tcp_max_connections,
                        max_per_source: settings.dns_tcp_max_connections_per_address,
                        idle: TcpLimits::IDLE,
                        lifetime: TcpLimits::LIFETIME,
                    },
                )?)
            }
            None => None,
        };
        let domain_events = || {
            PersistedEventStore::new_snapshot_store(
                EventRepository::new(store.clone()),
                SNAPSHOT_EVERY,
            )
            .with_upcasters(vec![Box::new(Upcasters)])
        };
        let policy = RenewalPolicy {
            retry_schedule: settings.renewal_retry_schedule.clone(),
        };
        let cqrs = CqrsFramework::new(domain_events(), vec![Box::new(projector)], policy);
        background.push(checkpoints::spawn_checkpoint_loop(
            store.clone(),
            signer.clone(),
            settings.audit_checkpoint_interval,
        ));
        let webhook_events =
            || PersistedEventStore::new_event_store(EventRepository::for_webhooks(store.clone()));
        let webhooks = CqrsFramework::new(webhook_events(), vec![], ());
        let webhook_sender = WebhookSender::new(
            settings.webhook_timeout,
            settings.webhook_allow_private_targets,
        )?;
        // A CA no longer configured is asked only about what it issued, with the account stored
        // for its directory, the default contact and ACME_CA_BUNDLE's roots.
        let retired = {
            let (email, bundle, vault) = (
                settings.acme_email.clone(),
                settings.acme_ca_bundle.clone(),
                vault.clone(),
            );
            move |directory: &str| -> Arc<dyn CertificateAuthority> {
                AcmeClient::of_stored_account(
                    directory.to_owned(),
                    email.clone(),
                    bundle.clone(),
                    vault.clone(),
                )
            }
        };
        // Built from the feed in the background: `/readyz` says so until it is.
        let edges = Arc::new(EdgeIndex::default());
        let (following, index) = (store.clone(), edges.clone());
        let interval = settings.feed_poll_interval;
        background.push(spawn_supervised("edge-index", move || {
            edge_index::follow(following.clone(), index.clone(), interval)
        }));
        // Built from the tokens' log in the background: `/readyz` says so until it is.
        let token_table = Arc::new(TokenTable::default());
        let (following, table) = (store.clone(), token_table.clone());
        background.push(spawn_supervised("token-table", move || {
            token_table::follow(following.clone(), table.clone(), interval)
        }));
        let token_events =
            || PersistedEventStore::new_event_store(EventRepository::for_tokens(store.clone()));
        let (stop_streams, stopping) = Stopping::channel();
        let state = Arc::new(AppState {
            stopping,
            edge_index: edges,
            edge_material: MaterialCache::new(settings.edge_cache_entries, store.clone()),
            edge_reads: RecordedEdgeReads::default(),
            issuers: Issuers::new(issuers, Box::new(retired)),
            domain_events: domain_events(),
            domain_locks: DomainLocks::default(),
            webhooks,
            webhook_events: webhook_events(),
            webhook_sender,
            tokens: CqrsFramework::new(token_events(), vec![], ()),
            token_events: token_events(),
            token_table,
            cqrs,
            views: ViewReader::new(store.clone()),
            store,
            dns,
            certificate_keys: CertificateKeys::new(vault.clone()),
            vault,
            signer,
            settings: settings.clone(),
            replica_id,
        });
        let supervisor = Supervisor::new(state.clone()).start();
        let resumed = supervisor
            .send(ResumePending)
            .await
            .context("supervisor did not answer")?
            .context("reading pending orders")?;
        tracing::info!(resumed, "supervisor started");
        let renewals = RenewalScheduler::new(state.clone(), supervisor.clone()).start();
        let making = state.clone();
        background.push(spawn_supervised("webhook-messages", move || {
            deliveries::messages::make_messages(making.clone())
        }));
        let sending = state.clone();
        background.push(spawn_supervised("webhook-sending", move || {
            deliveries::sending::send_messages(sending.clone())
        }));
        let health_checks = on_a_thread_of_its_own(state.clone(), supervisor.clone());

        let listener = TcpListener::bind(settings.server_addr)
            .with_context(|| format!("binding SERVER_ADDR={}", settings.server_addr))?;
        let address = listener.local_addr()?;
        let services_data = web::Data::new(state.clone());
        let supervisor_data = web::Data::new(supervisor.clone());
        let mut server = HttpServer::new(move || {
            App::new()
                .wrap(http::json_errors())
                .wrap(actix_web::middleware::from_fn(http::observe::observe))
                .app_data(services_data.clone())
                .app_data(supervisor_data.clone())
                .configure(http::configure)
        });
        if let Some(workers) = settings.server_workers {
            server = server.workers(workers);
        }
        let server = server.listen(listener)?.run();
        Ok(Application {
            address,
            server,
            supervisor,
            renewals,
            background,
            health_checks,
            dns_server,
            stop_streams,
            state,
            _sqlite_lock: sqlite_lock,
        })
    }

    /// The address the server listens on (the real port when port 0 was asked for).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Where the delegation zone's DNS server listens, when there is one.
    pub fn dns_address(&self) -> Option<SocketAddr> {
        self.dns_server.as_ref().map(|server| server.address)
    }

    /// Serves until the server is stopped (SIGTERM: in-flight requests finish first, following
    /// streams end at once; SIGINT, SIGQUIT: at once), then stops the pollers. Pending orders stay in the store and resume on the next start.
    /// A service manager listening (`NOTIFY_SOCKET`) is told `READY=1` once `/readyz` would say
    /// ready, and `STOPPING=1` at the stop signal.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let notifying = service_manager::start(self.state.clone());
        // Beside actix's own handlers of the same signals. On SIGTERM actix stops gracefully,
        // waiting for the responses in flight up to its shutdown timeout (30 s), and a following
        // stream's response ends only when told (SIGINT and SIGQUIT stop at once anyway).
        let stop_streams = self.stop_streams;
        let signals = match stop_signals() {
            Ok(signal) => Some(AbortOnDrop(actix_web::rt::spawn(async move {
                let signal = signal.await;
                tracing::info!(signal, "stopping: the following streams end");
                service_manager::stopping();
                stop_streams.stop();
            }))),
            Err(error) => {
                tracing::warn!(%error, "cannot listen for stop signals: a following stream holds a graceful stop up to its timeout");
                None
            }
        };
        let result = self.server.await;
        drop(signals);
        drop(notifying);
        let _ = self.renewals.send(Shutdown).await;
        let _ = self.supervisor.send(Shutdown).await;
        for task in self.background {
            task.abort();
            let _ = task.await;
        }
        let health_checks = self.health_checks;
        if health_checks.stop() {
            let _ = actix_web::rt::task::spawn_blocking(move || health_checks.join()).await;
        }
        drop(self.dns_server);
        result
    }
}

/// Starts the periodic health checks on a thread of their own (an actix arbiter). Everything
/// else in the background shares the main thread: the feed followers, the batching of the
/// API's view reads, and the driving of the database connections opened there, which the HTTP
/// workers use too. A pass's checks (DNS answers parsed, a domain's events decoded and folded,
/// hundreds a second at a short interval) kept that thread busy enough to hold the API's reads
/// back (`bench/README.md`, the health bench).
fn on_a_thread_of_its_own(state: Arc<AppState>, pollers: Addr<Supervisor>) -> actix::Arbiter {
    let arbiter = actix::Arbiter::new();
    arbiter.spawn_fn(move || {
        drop(spawn_supervised("health-checks", move || {
            crate::actors::check_health_continuously(state.clone(), pollers.clone())
        }));
    });
    arbiter
}

/// Listens for SIGTERM, SIGINT and SIGQUIT from now on: the first to arrive ends the future,
/// with its name.
fn stop_signals() -> std::io::Result<impl std::future::Future<Output = &'static str>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut quit = signal(SignalKind::quit())?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
            _ = quit.recv() => "SIGQUIT",
        }
    })
}

/// Events between two snapshots of a domain's aggregate: a command loads the latest snapshot
/// and at most this many events after it, however long the domain's history grows (a key
/// read is an event of its stream, and so is every renewal). The events stay the truth: a
/// snapshot that no longer reads as the aggregate (its shape changed) is set aside and the
/// stream folded again, and no audit reads snapshots.
const SNAPSHOT_EVERY: usize = 100;

/// How often the projections look for events they have not applied (from another replica, or
/// an in-process update that failed).
const CATCH_UP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Keeps the projections caught up with the feed for as long as the process runs.
fn spawn_catch_up_loop(projector: ViewProjector) -> actix_web::rt::task::JoinHandle<()> {
    spawn_supervised("projection-catch-up", move || {
        projector.clone().follow(CATCH_UP_INTERVAL)
    })
}
