//! A CA no longer configured (staging before production, as the README suggests), on both
//! stores against two Pebbles: what it issued is still its to act on. A certificate issued by
//! the first Pebble is revoked there (Pebble confirms) after a restart with only the second
//! configured, also by `DELETE ?revoke=true`; an order pending at the first when the service
//! restarts completes there; without an account stored for it, revocation is a `409` naming
//! the CA, nothing is registered, and removing without `revoke` works; when it does not answer,
//! a `502` naming it.

use std::collections::HashMap;
use std::time::Duration;

use dns_handling_testkit::{
    active_domain, pebble_and_database, verified_domain, Pebble, PebbleOptions, Service, StoreKind,
    TestDatabase,
};
use serde_json::{json, Value};

use crate::BINARY;

crate::on_both_stores!(a_certificate_of_a_ca_no_longer_configured_is_revoked_at_that_ca);
crate::on_both_stores!(an_order_pending_at_a_ca_no_longer_configured_completes_there);
crate::on_both_stores!(
    a_ca_no_longer_configured_without_a_stored_account_is_refused_with_a_409_naming_it
);
crate::on_both_stores!(a_ca_no_longer_configured_that_does_not_answer_is_a_502_naming_it);

/// A first Pebble the service starts with, a second one, a database, and the environment of
/// a service trusting both.
async fn two_cas(kind: StoreKind) -> (Pebble, Pebble, TestDatabase, HashMap<String, String>) {
    let (first, database, mut env) = pebble_and_database(kind).await;
    let second = Pebble::start(PebbleOptions::default());
    env.insert(
        "ACME_CA_BUNDLE".into(),
        first.ca_bundle_with(&[&second]).display().to_string(),
    );
    (first, second, database, env)
}

/// Stops `service` and starts it again with only `second` configured (`ACME_DIRECTORY`).
fn restart_with_only(
    mut service: Service,
    second: &Pebble,
    env: &mut HashMap<String, String>,
) -> Service {
    service.terminate();
    env.insert("ACME_DIRECTORY".into(), second.directory_url());
    Service::start(BINARY, env)
}

/// The serial of the domain's current certificate.
async fn serial(service: &Service, id: &str) -> String {
    let (code, view) = service.get(&format!("/domains/{id}")).await;
    assert_eq!(code, 200, "{view}");
    view["certificate"]["serial"]
        .as_str()
        .expect("a serial")
        .to_owned()
}

/// `DELETE /domains/{id}?revoke=true`: status and body (none for a `204`).
async fn delete_revoking(service: &Service, id: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .delete(service.url(&format!("/domains/{id}?revoke=true")))
        .send()
        .await
        .unwrap_or_else(|error| panic!("no answer: {error}\n{}", service.log()));
    let code = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (code, body)
}

async fn a_certificate_of_a_ca_no_longer_configured_is_revoked_at_that_ca(kind: StoreKind) {
    let (first, second, _database, mut env) = two_cas(kind).await;
    let service = Service::start(BINARY, &env);
    let revoked = active_domain(&service, &first, "revoked.retired-ca.test").await;
    let removed = active_domain(&service, &first, "removed.retired-ca.test").await;
    let service = restart_with_only(service, &second, &mut env);

    let serial_revoked = serial(&service, &revoked).await;
    assert_eq!(first.certificate_status(&serial_revoked)["Status"], "Valid");
    let (code, view) = service
        .post(
            &format!("/domains/{revoked}/certificate/revoke"),
            Some(json!({"reason": "keyCompromise"})),
        )
        .await;
    assert_eq!(code, 200, "{view}\n{}", service.log());
    assert_eq!(
        first.certificate_status(&serial_revoked)["Status"],
        "Revoked",
        "revoked at the CA that issued it"
    );
    assert_eq!(view["certificate"]["revocation_reason"], "keyCompromise");

    let serial_removed = serial(&service, &removed).await;
    let (code, body) = delete_revoking(&service, &removed).await;
    assert_eq!(code, 204, "{body}\n{}", service.log());
    assert_eq!(
        first.certificate_status(&serial_removed)["Status"],
        "Revoked",
        "revoked at the CA that issued it before the domain was removed"
    );
    let (code, _) = service.get(&format!("/domains/{removed}")).await;
    assert_eq!(code, 404);
}

async fn an_order_pending_at_a_ca_no_longer_configured_completes_there(kind: StoreKind) {
    let (first, second, _database, mut env) = two_cas(kind).await;
    env.insert("POLL_TIMEOUT".into(), "120s".into());
    let service = Service::start(BINARY, &env);
    let id = verified_domain(&service, &first, "pending.retired-ca.test").await;
    let (code, started) = service
        .post(&format!("/domains/{id}/issue-certificate"), None)
        .await;
    assert_eq!(code, 202, "{started}");
    let service = restart_with_only(service, &second, &mut env);

    // Published only now, where the first CA looks: only it can validate and issue.
    first.set_txt(
        started["challenge_domain"].as_str().expect("a name"),
        started["expected_txt_value"].as_str().expect("a value"),
    );
    let view = service
        .wait_for_status(&id, &["active", "failed"], Duration::from_secs(90))
        .await;
    assert_eq!(view["status"], "active", "{view}\n{}", service.log());
    let (_, certificate) = service.get(&format!("/domains/{id}/certificate")).await;
    assert_eq!(
        certificate["ca_directory"],
        first.directory_url(),
        "{certificate}"
    );
    let serial = certificate["serial"].as_str().expect("a serial");
    assert_eq!(first.certificate_status(serial)["Status"], "Valid");
}

async fn a_ca_no_longer_configured_without_a_stored_account_is_refused_with_a_409_naming_it(
    kind: StoreKind,
) {
    let (first, second, database, mut env) = two_cas(kind).await;
    let mut service = Service::start(BINARY, &env);
    let id = active_domain(&service, &first, "orphaned.retired-ca.test").await;
    let accounts_of_first = format!(
        "account_id FROM acme_accounts WHERE directory_url = '{}'",
        first.directory_url()
    );
    assert_eq!(database.texts(&accounts_of_first).await.len(), 1);
    service.terminate();
    // The store has no account for the first CA (credentials lost, or never copied over).
    database
        .execute(&format!(
            "DELETE FROM acme_accounts WHERE directory_url = '{}'",
            first.directory_url()
        ))
        .await;
    env.insert("ACME_DIRECTORY".into(), second.directory_url());
    let service = Service::start(BINARY, &env);
    let serial = serial(&service, &id).await;

    let (code, refused) = service
        .post(
            &format!("/domains/{id}/certificate/revoke"),
            Some(json!({})),
        )
        .await;
    assert_eq!(code, 409, "{refused}\n{}", service.log());
    let message = refused["error"].as_str().expect("an error");
    assert!(message.contains(&first.directory_url()), "{message}");
    assert!(message.contains("no longer configured"), "{message}");
    assert!(message.contains("without revoke=true"), "{message}");
    let (code, refused) = delete_revoking(&service, &id).await;
    assert_eq!(code, 409, "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .is_some_and(|message| message.contains(&first.directory_url())),
        "{refused}"
    );
    // Nothing recorded (the scheduler may record the certificate's renewal schedule meanwhile).
    let recorded = database.event_types(&id).await;
    assert!(
        !recorded
            .iter()
            .any(|kind| kind == "CertificateRevoked" || kind == "DomainRemoved"),
        "{recorded:?}"
    );
    assert!(
        database.texts(&accounts_of_first).await.is_empty(),
        "no account registered at the CA no longer configured"
    );
    assert_eq!(first.certificate_status(&serial)["Status"], "Valid");

    assert_eq!(service.delete(&format!("/domains/{id}")).await, 204);
}

async fn a_ca_no_longer_configured_that_does_not_answer_is_a_502_naming_it(kind: StoreKind) {
    let (mut first, second, database, mut env) = two_cas(kind).await;
    let service = Service::start(BINARY, &env);
    let id = active_domain(&service, &first, "unanswered.retired-ca.test").await;
    let service = restart_with_only(service, &second, &mut env);
    first.stop_acme();

    let (code, refused) = service
        .post(
            &format!("/domains/{id}/certificate/revoke"),
            Some(json!({})),
        )
        .await;
    assert_eq!(code, 502, "{refused}\n{}", service.log());
    let message = refused["error"].as_str().expect("an error");
    assert!(message.contains(&first.directory_url()), "{message}");
    assert!(message.contains("without revoke=true"), "{message}");
    let (code, refused) = delete_revoking(&service, &id).await;
    assert_eq!(code, 502, "{refused}");
    let recorded = database.event_types(&id).await;
    assert!(
        !recorded
            .iter()
            .any(|kind| kind == "CertificateRevoked" || kind == "DomainRemoved"),
        "{recorded:?}"
    );
    assert_eq!(service.delete(&format!("/domains/{id}")).await, 204);
}
