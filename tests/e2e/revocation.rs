//! Revocation and key custody, on both stores against Pebble: a revoked certificate is revoked
//! at Pebble (its management API confirms) and replaced; removing with `revoke=true` revokes
//! first; keys of removed domains and of expired certificates are destroyed, each with an event.

use std::time::{Duration, Instant};

use dns_handling_testkit::{
    active_domain, pebble_and_database, service_env, verified_domain, Pebble, PebbleOptions,
    Service, StoreKind, TestDatabase,
};
use serde_json::{json, Value};

use crate::BINARY;

crate::on_both_stores!(a_revoked_certificate_is_revoked_at_the_ca_and_replaced);
crate::on_both_stores!(removing_with_revoke_revokes_first_and_destroys_the_domain_s_keys);
crate::on_both_stores!(the_key_of_an_expired_certificate_is_destroyed_and_the_current_one_kept);

async fn wait_for_view(service: &Service, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, view) = service.get(&format!("/domains/{id}")).await;
        if done(&view) {
            return view;
        }
        assert!(Instant::now() < deadline, "not reached: {view}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the domain has an event of `event_type`; answers the payloads of that type.
async fn wait_for_event(database: &TestDatabase, id: &str, event_type: &str) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let payloads = database
            .texts(&format!(
                "CAST(payload AS TEXT) FROM events WHERE aggregate_id = '{id}' \
                 AND event_type = '{event_type}' ORDER BY sequence"
            ))
            .await;
        if !payloads.is_empty() {
            return payloads
                .iter()
                .map(|text| serde_json::from_str::<Value>(text).expect("JSON")[event_type].clone())
                .collect();
        }
        assert!(Instant::now() < deadline, "no {event_type} for {id}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn key_rows(database: &TestDatabase, id: &str) -> Vec<String> {
    database
        .texts(&format!(
            "order_id FROM certificate_keys WHERE domain_id = '{id}'"
        ))
        .await
}

/// Publishes the records a renewal asks for (none when the CA still holds a valid
/// authorization: the order then goes on by itself).
fn publish(pebble: &Pebble, challenges: &Value) {
    for challenge in challenges.as_array().into_iter().flatten() {
        pebble.set_txt(
            challenge["challenge_domain"].as_str().expect("name"),
            challenge["expected_txt_value"].as_str().expect("value"),
        );
    }
}

async fn a_revoked_certificate_is_revoked_at_the_ca_and_replaced(kind: StoreKind) {
    let (pebble, database, mut env) = pebble_and_database(kind).await;
    env.insert("RENEWAL_CHECK_INTERVAL".into(), "300ms".into());
    let service = Service::start(BINARY, &env);
    let verified = verified_domain(&service, &pebble, "unrevocable.example.test").await;
    let (code, body) = service
        .post(
            &format!("/domains/{verified}/certificate/revoke"),
            Some(json!({})),
        )
        .await;
    assert_eq!(code, 404, "no certificate to revoke: {body}");
    assert_eq!(
        database.event_types(&verified).await.len(),
        2,
        "nothing recorded"
    );
    let id = active_domain(&service, &pebble, "revoke.example.test").await;
    let before = database.event_types(&id).await;
    let (code, body) = service
        .post(
            &format!("/domains/{id}/certificate/revoke"),
            Some(json!({"reason": "stolen"})),
        )
        .await;
    assert_eq!(code, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap_or("").contains("stolen"),
        "{body}"
    );
    let after = database.event_types(&id).await;
    assert!(
        !after.contains(&"CertificateRevoked".to_owned()),
        "{after:?} after {before:?}"
    );

    let (_, first) = service.get(&format!("/domains/{id}")).await;
    let serial = first["certificate"]["serial"]
        .as_str()
        .expect("serial")
        .to_owned();
    assert_eq!(pebble.certificate_status(&serial)["Status"], "Valid");
    let (code, view) = service
        .post(
            &format!("/domains/{id}/certificate/revoke"),
            Some(json!({"reason": "keyCompromise"})),
        )
        .await;
    assert_eq!(code, 200, "{view}");
    assert_eq!(
        pebble.certificate_status(&serial)["Status"],
        "Revoked",
        "Pebble confirms"
    );
    assert_eq!(
        view["certificate"]["revocation_reason"], "keyCompromise",
        "{view}"
    );
    assert_eq!(
        view["renewal"]["in_progress"], true,
        "the replacement is ordered at once: {view}"
    );
    assert_eq!(view["renewal"]["reason"], "revoked");
    // Revoked for keyCompromise: its key is destroyed at once, and never handed out again.
    let destroyed = wait_for_event(&database, &id, "CertificateKeyDestroyed").await;
    assert_eq!(destroyed[0]["why"], "key_compromised", "{destroyed:?}");
    assert_eq!(destroyed[0]["certificate_id"], first["certificate"]["id"]);
    let (code, key) = service.get(&format!("/domains/{id}/certificate/key")).await;
    assert!(code == 400 || code == 404, "{code} {key}");
    assert!(key.get("private_key_pem").is_none(), "{key}");
    let (code, again) = service
        .post(
            &format!("/domains/{id}/certificate/revoke"),
            Some(json!({})),
        )
        .await;
    assert_eq!(code, 400, "{again}");
    assert!(
        again["error"]
            .as_str()
            .unwrap_or("")
            .contains("revoked already"),
        "{again}"
    );

    publish(&pebble, &view["renewal"]["challenges"]);
    let first_id = first["certificate"]["id"].clone();
    wait_for_view(&service, &id, |view| view["certificate"]["id"] != first_id).await;
    let (_, history) = service.get(&format!("/domains/{id}/certificates")).await;
    let items = history["items"].as_array().expect("items");
    assert_eq!(
        items[0]["renewal_reason"],
        "revoked",
        "{history} {:?}",
        database.event_types(&id).await
    );
    assert_eq!(items[1]["revocation_reason"], "keyCompromise", "{history}");
    assert!(items[1]["revoked_at"].is_string(), "{history}");
}

async fn removing_with_revoke_revokes_first_and_destroys_the_domain_s_keys(kind: StoreKind) {
    let (pebble, database, mut env) = pebble_and_database(kind).await;
    env.insert("RENEWAL_CHECK_INTERVAL".into(), "300ms".into());
    let service = Service::start(BINARY, &env);
    let id = active_domain(&service, &pebble, "gone.example.test").await;
    let (_, view) = service.get(&format!("/domains/{id}")).await;
    let serial = view["certificate"]["serial"]
        .as_str()
        .expect("serial")
        .to_owned();
    assert_eq!(
        key_rows(&database, &id).await.len(),
        1,
        "the certificate's key is kept"
    );
    let code = service.delete(&format!("/domains/{id}?revoke=true")).await;
    assert_eq!(code, 204);
    assert_eq!(pebble.certificate_status(&serial)["Status"], "Revoked");
    let types = database.event_types(&id).await;
    let revoked = types
        .iter()
        .position(|t| t == "CertificateRevoked")
        .expect("revoked");
    let removed = types
        .iter()
        .position(|t| t == "DomainRemoved")
        .expect("removed");
    assert!(revoked < removed, "{types:?}");
    let destroyed = wait_for_event(&database, &id, "CertificateKeyDestroyed").await;
    assert_eq!(destroyed[0]["why"], "domain_removed", "{destroyed:?}");
    // The destruction is recorded before the key's row is deleted (a crash between the two
    // leaves a row the next start deletes): the row goes just after the event.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !key_rows(&database, &id).await.is_empty() {
        assert!(Instant::now() < deadline, "nothing of the key is kept");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn the_key_of_an_expired_certificate_is_destroyed_and_the_current_one_kept(kind: StoreKind) {
    let pebble = Pebble::start(PebbleOptions {
        certificate_validity_secs: Some(30),
        ..PebbleOptions::default()
    });
    let database = TestDatabase::create(kind).await;
    let mut env = service_env(&pebble, &database);
    env.insert("RENEWAL_CHECK_INTERVAL".into(), "300ms".into());
    env.insert("RENEW_BEFORE".into(), "25s".into());
    let service = Service::start(BINARY, &env);
    let id = active_domain(&service, &pebble, "keys.example.test").await;
    let (_, first) = service.get(&format!("/domains/{id}")).await;
    let first_id = first["certificate"]["id"].clone();
    // Due 5 s after issuance: renewed well before the first certificate's end.
    let renewing =
        wait_for_view(&service, &id, |view| view["renewal"]["in_progress"] == true).await;
    publish(&pebble, &renewing["renewal"]["challenges"]);
    let renewed = wait_for_view(&service, &id, |view| view["certificate"]["id"] != first_id).await;
    let second_ends = chrono::DateTime::parse_from_rfc3339(
        renewed["certificate"]["not_after"]
            .as_str()
            .expect("an end"),
    )
    .expect("RFC 3339");
    let destroyed = wait_for_event(&database, &id, "CertificateKeyDestroyed").await;
    assert_eq!(destroyed[0]["why"], "certificate_expired", "{destroyed:?}");
    assert_eq!(
        destroyed[0]["certificate_id"], first_id,
        "the first certificate's key"
    );
    // The second certificate is in service for about 5 s more than the first: its key must
    // be there.
    assert!(
        chrono::Utc::now() < second_ends,
        "the test's timing: the current certificate ended before the first one's key went"
    );
    let (code, key) = service.get(&format!("/domains/{id}/certificate/key")).await;
    assert_eq!(code, 200, "the current certificate's key is kept: {key}");
    let orders = database
        .texts(&format!(
            "CAST(payload AS TEXT) FROM events WHERE aggregate_id = '{id}' AND event_type = 'CertificateIssued' ORDER BY sequence"
        ))
        .await;
    let first_order: Value = serde_json::from_str(&orders[0]).expect("JSON");
    let first_order = first_order["CertificateIssued"]["certificate"]["order_id"]
        .as_str()
        .expect("order")
        .to_owned();
    assert!(
        !key_rows(&database, &id).await.contains(&first_order),
        "its key row is gone"
    );
}
