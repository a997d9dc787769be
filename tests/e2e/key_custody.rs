//! No certificate key outlives its domain, whenever it was stored: a key row stored after its
//! domain's removal was marked (the mark is an update of the rows that existed then) is still
//! destroyed, and a certificate the CA issued for an order of a domain removed meanwhile on
//! another replica, or while the CA was finalizing it, is revoked at the CA (Pebble's management
//! API confirms).

use std::time::{Duration, Instant};

use dns_handling_testkit::{
    pebble_and_database, service_env, verified_domain, CaFront, FrontTarget, Pebble, PebbleOptions,
    Service, StoreKind, TestDatabase,
};
use serde_json::Value;

use crate::BINARY;

crate::on_both_stores!(a_key_stored_after_its_domain_was_removed_is_destroyed);
crate::on_both_stores!(a_certificate_issued_while_its_domain_is_removed_is_revoked);

async fn key_rows(database: &TestDatabase, id: &str) -> Vec<String> {
    database
        .texts(&format!(
            "order_id FROM certificate_keys WHERE domain_id = '{id}'"
        ))
        .await
}

/// The `CertificateKeyDestroyed` events of the domain, once there is one of `order_id`.
async fn wait_for_destruction(database: &TestDatabase, id: &str, order_id: &str) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let destroyed: Vec<Value> = database
            .texts(&format!(
                "CAST(payload AS TEXT) FROM events WHERE aggregate_id = '{id}' \
                 AND event_type = 'CertificateKeyDestroyed' ORDER BY sequence"
            ))
            .await
            .iter()
            .map(|text| {
                serde_json::from_str::<Value>(text).expect("JSON")["CertificateKeyDestroyed"]
                    .clone()
            })
            .collect();
        if destroyed.iter().any(|event| event["order_id"] == order_id) {
            return destroyed;
        }
        assert!(
            Instant::now() < deadline,
            "the key of {order_id} was not destroyed: {destroyed:?}, rows {:?}",
            key_rows(database, id).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn a_key_stored_after_its_domain_was_removed_is_destroyed(kind: StoreKind) {
    let (pebble, database, mut env) = pebble_and_database(kind).await;
    env.insert("RENEWAL_CHECK_INTERVAL".into(), "300ms".into());
    let service = Service::start(BINARY, &env);
    let id = verified_domain(&service, &pebble, "late-key.example.test").await;
    assert_eq!(service.delete(&format!("/domains/{id}")).await, 204);
    // The removal's mark has been written, with the view, by the command and again by the
    // projection's catch-up once its checkpoint passed the removal: a key stored now is what a
    // replica finalizing an order of the domain after that leaves behind, which no mark
    // reaches.
    let removal = format!(
        "CAST(position AS TEXT) FROM events WHERE aggregate_id = '{id}' \
         AND event_type = 'DomainRemoved'"
    );
    let removal: i64 = database.texts(&removal).await[0]
        .parse()
        .expect("a position");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let checkpoint = database
            .texts("CAST(position AS TEXT) FROM projection_checkpoints WHERE name = 'domain_views'")
            .await;
        let checkpoint: i64 = checkpoint
            .first()
            .map_or(0, |p| p.parse().expect("a position"));
        if checkpoint >= removal {
            break;
        }
        assert!(Instant::now() < deadline, "the projection never caught up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    database
        .execute(&format!(
            "INSERT INTO certificate_keys (order_id, domain_id, private_key, created_at) \
             VALUES ('late-order', '{id}', 'sealed', '2026-01-01T00:00:00Z')"
        ))
        .await;
    let destroyed = wait_for_destruction(&database, &id, "late-order").await;
    let late = destroyed
        .iter()
        .find(|event| event["order_id"] == "late-order")
        .expect("recorded");
    assert_eq!(late["why"], "domain_removed", "{destroyed:?}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !key_rows(&database, &id).await.is_empty() {
        assert!(Instant::now() < deadline, "the key row is still there");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The leaf's serial as the service and Pebble's management API write it (lower-case hex).
fn leaf_serial(chain_pem: &str) -> String {
    let (_, pem) = x509_parser::pem::parse_x509_pem(chain_pem.as_bytes()).expect("PEM");
    let leaf = pem.parse_x509().expect("a certificate");
    leaf.tbs_certificate
        .raw_serial()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Waits for the first certificate chain downloaded through `front`, and then for Pebble to
/// report its leaf revoked.
async fn wait_for_revoked_download(front: &CaFront, pebble: &Pebble, log: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let chain = loop {
        if let Some(chain) = front.certificate_chains().pop() {
            break chain;
        }
        assert!(
            Instant::now() < deadline,
            "nobody downloaded the certificate the CA issued: {}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let serial = leaf_serial(&chain);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = pebble.certificate_status(&serial);
        if status["Status"] == "Revoked" {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the orphan certificate is not revoked: {status}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The domain is removed while the CA finalizes its order (Pebble has the CSR, its answer is
/// slow): the poller, stopped by the removal, still finishes the order and revokes the
/// certificate the CA issued, and the order's key goes with the domain.
async fn a_certificate_issued_while_its_domain_is_removed_is_revoked(kind: StoreKind) {
    let (pebble, database, mut env) = pebble_and_database(kind).await;
    let front = CaFront::start(&pebble);
    env.insert("ACME_DIRECTORY".into(), front.directory_url());
    env.insert("RENEWAL_CHECK_INTERVAL".into(), "300ms".into());
    let service = Service::start(BINARY, &env);
    let id = verified_domain(&service, &pebble, "midway.example.test").await;
    front.hold_answers(FrontTarget::Finalize);
    let (code, started) = service
        .post(&format!("/domains/{id}/issue-certificate"), None)
        .await;
    assert_eq!(code, 202, "{started}");
    pebble.set_txt(
        started["challenge_domain"].as_str().expect("name"),
        started["expected_txt_value"].as_str().expect("value"),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while front.requests(FrontTarget::Finalize) == 0 {
        assert!(
            Instant::now() < deadline,
            "the order never reached finalization"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(service.delete(&format!("/domains/{id}")).await, 204);
    tokio::time::sleep(Duration::from_millis(500)).await;
    front.release_answers(FrontTarget::Finalize);

    wait_for_revoked_download(&front, &pebble, || service.log()).await;
    let types = database.event_types(&id).await;
    assert!(
        !types.iter().any(|t| t == "CertificateIssued"),
        "nothing recorded for a removed domain: {types:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !key_rows(&database, &id).await.is_empty() {
        assert!(Instant::now() < deadline, "the key row is still there");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Replica B polls the order; the CA does not take its challenge response (a `503` from the
/// front) until replica A has removed the domain, so B stores the order's key after the
/// removal and finalizes the order for a domain that is gone. The certificate the CA issued is
/// revoked by B, and the key stored after the removal is destroyed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_finalized_after_its_domain_was_removed_on_another_replica_is_revoked() {
    let pebble = Pebble::start(PebbleOptions::default());
    let front = CaFront::start(&pebble);
    let database = TestDatabase::create(StoreKind::Postgres).await;
    let mut env = service_env(&pebble, &database);
    env.insert("ACME_DIRECTORY".into(), front.directory_url());
    env.insert("RENEWAL_CHECK_INTERVAL".into(), "300ms".into());
    // B's supervisor does not look for orders gone from the pending views (it would stop B's
    // poller at once) within the test: its first look is a third of the lease later.
    env.insert("LEASE_TTL".into(), "1h".into());
    let named = |name: &str| {
        let mut env = env.clone();
        env.insert("REPLICA_ID".into(), name.into());
        env
    };
    let replica_a = Service::start(BINARY, &named("replica-a"));
    let replica_b = Service::start(BINARY, &named("replica-b"));

    let id = verified_domain(&replica_b, &pebble, "orphan.example.test").await;
    let (code, started) = replica_b
        .post(&format!("/domains/{id}/issue-certificate"), None)
        .await;
    assert_eq!(code, 202, "{started}");
    front.answer_unavailable(FrontTarget::Challenge, usize::MAX, Duration::from_secs(1));
    pebble.set_txt(
        started["challenge_domain"].as_str().expect("name"),
        started["expected_txt_value"].as_str().expect("value"),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while front.requests(FrontTarget::Challenge) == 0 {
        assert!(Instant::now() < deadline, "B never told the CA to validate");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        key_rows(&database, &id).await.is_empty(),
        "no key before the CA is ready for the CSR"
    );

    assert_eq!(replica_a.delete(&format!("/domains/{id}")).await, 204);
    front.answer_unavailable(FrontTarget::Challenge, 0, Duration::ZERO);

    wait_for_revoked_download(&front, &pebble, || replica_b.log()).await;
    let types = database.event_types(&id).await;
    assert!(
        !types.iter().any(|t| t == "CertificateIssued"),
        "nothing recorded for a removed domain: {types:?}"
    );
    let order_id = database
        .texts(&format!(
            "CAST(payload AS TEXT) FROM events WHERE aggregate_id = '{id}' \
             AND event_type = 'CertificateRequested'"
        ))
        .await;
    let order_id = serde_json::from_str::<Value>(&order_id[0]).expect("JSON")
        ["CertificateRequested"]["order"]["order_id"]
        .as_str()
        .expect("an order id")
        .to_owned();
    let destroyed = wait_for_destruction(&database, &id, &order_id).await;
    assert!(
        destroyed
            .iter()
            .all(|event| event["why"] == "domain_removed"),
        "{destroyed:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !key_rows(&database, &id).await.is_empty() {
        assert!(Instant::now() < deadline, "the key row is still there");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
