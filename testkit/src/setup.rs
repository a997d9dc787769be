//! How a test usually begins: the environment a service is started with on a test database and
//! a Pebble, and a domain taken to `verified` or `active` through the real API.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::database::{StoreKind, TestDatabase};
use crate::pebble::{Pebble, PebbleOptions};
use crate::service::Service;

/// A fixed test key-encryption key (32 bytes, base64).
pub const TEST_KEY_ENCRYPTION_KEY: &str = "dGVzdC1rZXktZW5jcnlwdGlvbi1rZXktMzItYnl0ZXM=";

/// A fixed test audit signing key (the base64 of a 32-byte Ed25519 seed).
pub const TEST_AUDIT_SIGNING_KEY: &str = "dGVzdC1hdWRpdC1zaWduaW5nLWtleS0zMi1ieXRlcyE=";

/// The environment for a service on `database` alone. PostgreSQL needs a configured
/// key-encryption key and audit signing key; SQLite tests leave them out so the generated-key
/// paths run too.
pub fn database_env(database: &TestDatabase) -> HashMap<String, String> {
    let mut env = HashMap::from([("DATABASE_URL".to_owned(), database.url.clone())]);
    if database.kind == StoreKind::Postgres {
        env.insert(
            "KEY_ENCRYPTION_KEY".to_owned(),
            TEST_KEY_ENCRYPTION_KEY.to_owned(),
        );
        env.insert(
            "AUDIT_SIGNING_KEY".to_owned(),
            TEST_AUDIT_SIGNING_KEY.to_owned(),
        );
    }
    env
}

/// Registers `name` and proves its ownership through Pebble's DNS server; returns its id.
pub async fn verified_domain(service: &Service, pebble: &Pebble, name: &str) -> String {
    let (id, record_name, token) = service.register(name).await;
    pebble.set_txt(&record_name, &token);
    let (code, body) = service.post(&format!("/domains/{id}/verify"), None).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["status"], "verified");
    id
}

/// Registers `name` with further names `alt_names` and proves its ownership through Pebble's
/// DNS server; returns its id.
pub async fn verified_domain_with_alt_names(
    service: &Service,
    pebble: &Pebble,
    name: &str,
    alt_names: &[&str],
) -> String {
    let (status, body) = service
        .post(
            "/domains",
            Some(serde_json::json!({"domain_name": name, "alt_names": alt_names})),
        )
        .await;
    assert_eq!(status, 201, "register {name}: {body}");
    let id = body["id"].as_str().expect("id").to_owned();
    pebble.set_txt(
        body["verification_record"]["name"].as_str().expect("name"),
        body["verification_token"].as_str().expect("token"),
    );
    let (code, body) = service.post(&format!("/domains/{id}/verify"), None).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["status"], "verified");
    id
}

/// Takes `name` all the way to `active`; returns its id.
pub async fn active_domain(service: &Service, pebble: &Pebble, name: &str) -> String {
    let id = verified_domain(service, pebble, name).await;
    issue_and_publish(service, pebble, &id).await;
    id
}

/// Asks for a verified domain's certificate, publishes the challenge record through Pebble's
/// DNS server and waits until the domain is `active`.
pub async fn issue_and_publish(service: &Service, pebble: &Pebble, id: &str) {
    let (code, started) = service
        .post(&format!("/domains/{id}/issue-certificate"), None)
        .await;
    assert_eq!(code, 202, "{started}");
    pebble.set_txt(
        started["challenge_domain"]
            .as_str()
            .expect("challenge_domain"),
        started["expected_txt_value"]
            .as_str()
            .expect("expected_txt_value"),
    );
    let view = service
        .wait_for_status(id, &["active", "failed"], Duration::from_secs(90))
        .await;
    assert_eq!(view["status"], "active", "{view}");
}

/// The usual start of a test: a Pebble with default options, a fresh database of `kind`, and
/// the environment a service needs for both.
pub async fn pebble_and_database(
    kind: StoreKind,
) -> (Pebble, TestDatabase, HashMap<String, String>) {
    let pebble = Pebble::start(PebbleOptions::default());
    let database = TestDatabase::create(kind).await;
    let env = service_env(&pebble, &database);
    (pebble, database, env)
}

/// The environment for a service that uses `pebble` and `database`.
pub fn service_env(pebble: &Pebble, database: &TestDatabase) -> HashMap<String, String> {
    let mut env = database_env(database);
    env.extend([
        ("ACME_DIRECTORY".to_owned(), pebble.directory_url()),
        (
            "ACME_CA_BUNDLE".to_owned(),
            pebble.ca_bundle().display().to_string(),
        ),
        ("DNS_NAMESERVERS".to_owned(), pebble.nameserver()),
        ("POLL_INTERVAL".to_owned(), "200ms".to_owned()),
        ("POLL_TIMEOUT".to_owned(), "60s".to_owned()),
        // A restarted service is the same replica: it takes its order leases back at once.
        ("REPLICA_ID".to_owned(), "test-replica".to_owned()),
    ]);
    env
}

/// Turns delegated validation on in a service's environment: `zone` served at `dns`, with two
/// nameserver names for its SOA and NS answers.
pub fn delegate_zone(env: &mut HashMap<String, String>, zone: &str, dns: SocketAddr) {
    env.insert("DELEGATION_ZONE".into(), zone.into());
    env.insert("DNS_LISTEN_ADDR".into(), dns.to_string());
    env.insert(
        "DELEGATION_NAMESERVERS".into(),
        "ns1.platform.test,ns2.platform.test".into(),
    );
}
