//! Nothing skipped, nothing silently lost: a view that missed an event is rebuilt from its
//! stream, a poller whose work dies is started again, and certificates are served from their
//! view.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use dns_handling::adapters::dns::{DnsError, DnsLookup, HickoryDnsLookup};
use dns_handling::app::Application;
use dns_handling::domain::caa::CaaRecord;
use dns_handling::domain::health::Resolution;
use dns_handling::settings::Settings;
use dns_handling_testkit::{
    issue_and_publish, pebble_and_database, run_command, verified_domain, Service, StoreKind,
    TestDatabase,
};
use serde_json::Value;

use crate::BINARY;

/// Makes every write of a `verified` domain view fail inside the database itself, as a full
/// disk or a lost connection would fail it.
async fn fail_writes_of_verified_views(database: &TestDatabase) {
    match database.kind {
        StoreKind::Sqlite => {
            database
                .execute(
                    "CREATE TRIGGER fail_verified_views BEFORE UPDATE ON domain_views \
                     WHEN NEW.status = 'verified' BEGIN SELECT RAISE(ABORT, 'injected failure'); END",
                )
                .await
        }
        StoreKind::Postgres => {
            database
                .execute(
                    "CREATE FUNCTION fail_verified_views() RETURNS trigger AS $$ \
                     BEGIN RAISE EXCEPTION 'injected failure'; END $$ LANGUAGE plpgsql",
                )
                .await;
            database
                .execute(
                    "CREATE TRIGGER fail_verified_views BEFORE UPDATE ON domain_views FOR EACH ROW \
                     WHEN (NEW.status = 'verified') EXECUTE FUNCTION fail_verified_views()",
                )
                .await;
        }
    }
}

async fn a_view_that_missed_an_event_is_rebuilt_from_its_stream_not_moved_past_it(kind: StoreKind) {
    let (pebble, database, env) = pebble_and_database(kind).await;
    let service = Service::start(BINARY, &env);
    let (id, record_name, token) = service.register("gap.example.test").await;
    pebble.set_txt(&record_name, &token);
    fail_writes_of_verified_views(&database).await;

    // The verification is recorded, but its view update fails (and so does every catch-up
    // that would write it), so the view stays at the registration.
    let (code, body) = service.post(&format!("/domains/{id}/verify"), None).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        database.event_types(&id).await,
        ["DomainRegistered", "OwnershipVerified"]
    );
    let (_, view) = service.get(&format!("/domains/{id}")).await;
    assert_eq!(
        view["status"], "pending",
        "the view update really failed: {view}"
    );

    // The next event's update finds the view one event behind: it folds the stream again.
    assert_eq!(service.delete(&format!("/domains/{id}")).await, 204);
    let stored: Value = serde_json::from_str(
        &database
            .texts(&format!("payload FROM domain_views WHERE id = '{id}'"))
            .await[0],
    )
    .expect("a stored view");
    assert_eq!(stored["last_sequence"], 3, "{stored}");
    assert_eq!(stored["removed"], true, "{stored}");
    assert_eq!(stored["status"], "verified", "{stored}");
    assert!(
        stored["verified_at"].is_string(),
        "the verification is not skipped: {stored}"
    );

    let (status, report, stderr) = run_command(BINARY, &env, &["audit", "views"]);
    assert!(status.success(), "{report}{stderr}");
    assert!(report.contains(": 0 disagree"), "{report}");
    let rebuilds = service.metric("dns_handling_view_rebuilds_total").await;
    assert!(rebuilds >= Some(1.0), "{rebuilds:?}");
}
on_both_stores!(a_view_that_missed_an_event_is_rebuilt_from_its_stream_not_moved_past_it);

/// The real lookup, which panics once, the first time it is asked after being armed: a poll
/// that dies from the inside, as a bug in any step of it would.
struct DiesOnceArmed {
    real: HickoryDnsLookup,
    armed: AtomicBool,
}

#[async_trait]
impl DnsLookup for DiesOnceArmed {
    async fn txt_values(&self, name: &str) -> Result<Vec<String>, DnsError> {
        if self.armed.swap(false, Ordering::SeqCst) {
            panic!("the poll of {name} dies from the inside");
        }
        self.real.txt_values(name).await
    }

    async fn cname_target(&self, name: &str) -> Result<Option<String>, DnsError> {
        self.real.cname_target(name).await
    }

    async fn caa_records(&self, name: &str) -> Result<Vec<CaaRecord>, DnsError> {
        self.real.caa_records(name).await
    }

    async fn resolve_addresses(&self, name: &str) -> Result<Resolution, DnsError> {
        self.real.resolve_addresses(name).await
    }

    fn describe(&self) -> String {
        self.real.describe()
    }
}

async fn a_poller_whose_work_dies_is_started_again_and_its_order_finishes(kind: StoreKind) {
    let (pebble, database, mut env) = pebble_and_database(kind).await;
    env.insert("SERVER_ADDR".into(), "127.0.0.1:0".into());
    let settings = Settings::from_map(&env).expect("settings");
    let lookup = Arc::new(DiesOnceArmed {
        real: HickoryDnsLookup::new(&settings.dns_nameservers, settings.dns_timeout)
            .expect("a resolver"),
        armed: AtomicBool::new(false),
    });
    // The service in this process, so that its lookup can be the one above.
    let (sender, receiver) = std::sync::mpsc::channel();
    let in_process_lookup: Arc<dyn DnsLookup> = lookup.clone();
    let server = std::thread::spawn(move || {
        dns_handling::install_crypto_provider();
        actix_web::rt::System::new().block_on(async move {
            let app = Application::build_with_lookup(settings, Some(in_process_lookup))
                .await
                .expect("the service starts");
            let _ = sender.send((app.address(), actix_web::rt::System::current()));
            let _ = app.run_until_stopped().await;
        });
    });
    let (address, system) = receiver
        .recv_timeout(Duration::from_secs(30))
        .expect("the service listens");
    let service = Service::attach(address, &env);

    let id = verified_domain(&service, &pebble, "phoenix.example.test").await;
    lookup.armed.store(true, Ordering::SeqCst);
    issue_and_publish(&service, &pebble, &id).await;
    assert!(
        !lookup.armed.load(Ordering::SeqCst),
        "the poll did die once"
    );
    let restarts = service.metric("dns_handling_poller_restarts_total").await;
    assert!(restarts >= Some(1.0), "{restarts:?}");

    // The certificate is served from its view: the answer does not read the event stream.
    let (code, certificate) = service.get(&format!("/domains/{id}/certificate")).await;
    assert_eq!(code, 200, "{certificate}");
    let chain = certificate["chain_pem"].as_str().expect("a chain");
    assert!(chain.starts_with("-----BEGIN CERTIFICATE-----"), "{chain}");
    let forged = "replace(CAST(payload AS TEXT), 'BEGIN CERTIFICATE', 'BEGIN FORGED')";
    let forged = match kind {
        StoreKind::Sqlite => forged.to_owned(),
        StoreKind::Postgres => format!("CAST({forged} AS json)"),
    };
    database
        .execute(&format!(
            "UPDATE events SET payload = {forged} \
             WHERE aggregate_id = '{id}' AND event_type = 'CertificateIssued'"
        ))
        .await;
    assert!(database
        .texts(&format!(
            "CAST(payload AS TEXT) FROM events WHERE aggregate_id = '{id}' AND event_type = 'CertificateIssued'"
        ))
        .await[0]
        .contains("BEGIN FORGED"));
    let (_, again) = service.get(&format!("/domains/{id}/certificate")).await;
    assert_eq!(again["chain_pem"], chain);

    // The in-process service is left to run until the test process ends: stopping its actix
    // system drops the PostgreSQL listener's task outside a runtime, which aborts the process.
    drop((system, server));
}
on_both_stores!(a_poller_whose_work_dies_is_started_again_and_its_order_finishes);
