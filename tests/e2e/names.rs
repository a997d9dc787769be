//! Several names per certificate, on both stores against Pebble: the domain, `www` and the
//! wildcard in one order and one certificate; a shared challenge name that needs both values;
//! a value never published; a changed set; every refusal with nothing stored; a crash between
//! the order and finalization.

use std::time::Duration;

use dns_handling_testkit::{
    pebble_and_database, verified_domain_with_alt_names, Pebble, Service, StoreKind, TestDatabase,
};
use serde_json::{json, Value};

use crate::issuance::verify_chain;
use crate::BINARY;

const DOMAIN: &str = "shop.names.test";
const WWW: &str = "www.shop.names.test";
const WILDCARD: &str = "*.shop.names.test";

crate::on_both_stores!(apex_www_and_wildcard_are_issued_in_one_certificate);
crate::on_both_stores!(a_shared_challenge_name_is_not_finalized_until_both_values_are_published);
crate::on_both_stores!(a_value_never_published_fails_the_order_naming_its_name);
crate::on_both_stores!(a_changed_set_is_issued_at_the_retry);
crate::on_both_stores!(every_refused_set_of_names_stores_nothing);
crate::on_both_stores!(a_crash_between_the_order_and_finalization_resumes_with_every_name);

/// Registers `DOMAIN` with `alt_names` and proves its ownership; returns its id.
async fn verified_with(service: &Service, pebble: &Pebble, alt_names: &[&str]) -> String {
    verified_domain_with_alt_names(service, pebble, DOMAIN, alt_names).await
}

/// The `challenges` of a `202`, as (identifier, challenge_domain, expected_txt_value).
fn challenges(started: &Value) -> Vec<(String, String, String)> {
    started["challenges"]
        .as_array()
        .unwrap_or_else(|| panic!("no challenges in {started}"))
        .iter()
        .map(|c| {
            let field = |name: &str| c[name].as_str().expect(name).to_owned();
            (
                field("identifier"),
                field("challenge_domain"),
                field("expected_txt_value"),
            )
        })
        .collect()
}

/// Publishes the challenge values of the identifiers `which`.
fn publish(pebble: &Pebble, challenges: &[(String, String, String)], which: &[&str]) {
    for (identifier, name, value) in challenges {
        if which.contains(&identifier.as_str()) {
            pebble.set_txt(name, value);
        }
    }
}

async fn issue(service: &Service, id: &str) -> Value {
    let (code, started) = service
        .post(&format!("/domains/{id}/issue-certificate"), None)
        .await;
    assert_eq!(code, 202, "{started}");
    started
}

/// The names of the domain's certificate as the API reads them, and its chain.
async fn certificate_names(service: &Service, id: &str) -> (Vec<String>, String) {
    let (code, certificate) = service.get(&format!("/domains/{id}/certificate")).await;
    assert_eq!(code, 200, "{certificate}");
    let mut names: Vec<String> = certificate["names"]
        .as_array()
        .expect("names")
        .iter()
        .map(|n| n.as_str().expect("a name").to_owned())
        .collect();
    names.sort();
    let chain = certificate["chain_pem"].as_str().expect("chain").to_owned();
    (names, chain)
}

/// The DNS names in the leaf's subjectAltName, read here from the PEM itself.
fn subject_alt_names(chain_pem: &str) -> Vec<String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(chain_pem.as_bytes()).expect("PEM");
    let leaf = pem.parse_x509().expect("leaf");
    let san = leaf
        .subject_alternative_name()
        .expect("one SAN extension")
        .expect("a SAN extension");
    let mut names: Vec<String> = san
        .value
        .general_names
        .iter()
        .map(|name| match name {
            x509_parser::extensions::GeneralName::DNSName(dns) => (*dns).to_owned(),
            other => panic!("a non-DNS name in the SAN: {other:?}"),
        })
        .collect();
    names.sort();
    names
}

fn sorted(names: &[&str]) -> Vec<String> {
    let mut names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    names.sort();
    names
}

async fn apex_www_and_wildcard_are_issued_in_one_certificate(kind: StoreKind) {
    let (pebble, database, env) = pebble_and_database(kind).await;
    let service = Service::start(BINARY, &env);
    let id = verified_with(&service, &pebble, &["WWW.Shop.Names.Test.", WILDCARD]).await;
    let (_, view) = service.get(&format!("/domains/{id}")).await;
    assert_eq!(
        view["alt_names"],
        json!([WWW, WILDCARD]),
        "normalised: {view}"
    );

    let started = issue(&service, &id).await;
    let all = challenges(&started);
    let mut identifiers: Vec<&str> = all.iter().map(|(i, _, _)| i.as_str()).collect();
    identifiers.sort_unstable();
    assert_eq!(identifiers, sorted(&[DOMAIN, WWW, WILDCARD]), "{started}");
    // The domain and its wildcard share one challenge name; the seed's fields are the domain's.
    let shared = format!("_acme-challenge.{DOMAIN}.");
    for (identifier, name, _) in &all {
        let expected = if identifier == WWW {
            format!("_acme-challenge.{WWW}.")
        } else {
            shared.clone()
        };
        assert_eq!(name, &expected, "{identifier}");
    }
    assert_eq!(started["challenge_domain"], shared.as_str());
    let own = all.iter().find(|(i, _, _)| i == DOMAIN).expect("own");
    assert_eq!(started["expected_txt_value"], own.2.as_str());
    let instructions = started["instructions"].as_str().expect("instructions");
    assert!(instructions.contains("side by side"), "{instructions}");
    for (_, _, value) in &all {
        assert!(instructions.contains(value.as_str()), "{instructions}");
    }
    let (_, view) = service.get(&format!("/domains/{id}")).await;
    assert_eq!(
        view["challenges"].as_array().map(Vec::len),
        Some(3),
        "{view}"
    );

    publish(&pebble, &all, &[DOMAIN, WWW, WILDCARD]);
    let view = service
        .wait_for_status(&id, &["active", "failed"], Duration::from_secs(90))
        .await;
    assert_eq!(view["status"], "active", "{view}");
    let (names, chain) = certificate_names(&service, &id).await;
    assert_eq!(names, sorted(&[DOMAIN, WWW, WILDCARD]));
    assert_eq!(subject_alt_names(&chain), names, "exactly the three");
    let root = pebble.issuing_root_pem();
    for host in [DOMAIN, WWW, "anything.shop.names.test"] {
        verify_chain(&root, &chain, host);
    }
    // The order's names are in its event.
    let payloads = database
        .texts(&format!(
            "CAST(payload AS TEXT) FROM events WHERE aggregate_id = '{id}' \
             AND event_type = 'CertificateRequested'"
        ))
        .await;
    let order: Value = serde_json::from_str(&payloads[0]).expect("JSON");
    let ordered = order["CertificateRequested"]["order"]["names"].clone();
    assert_eq!(ordered, json!([DOMAIN, WWW, WILDCARD]));
}

async fn a_shared_challenge_name_is_not_finalized_until_both_values_are_published(kind: StoreKind) {
    let (pebble, database, env) = pebble_and_database(kind).await;
    let service = Service::start(BINARY, &env);
    let id = verified_with(&service, &pebble, &[WWW, WILDCARD]).await;
    let all = challenges(&issue(&service, &id).await);
    // Everything but the wildcard's value, which shares the domain's name.
    publish(&pebble, &all, &[DOMAIN, WWW]);
    // Twenty poll intervals (200 ms each) with the shared name holding one of its two values.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (_, view) = service.get(&format!("/domains/{id}")).await;
    assert_eq!(view["status"], "certificate_pending", "{view}");
    assert_eq!(
        database.event_types(&id).await,
        [
            "DomainRegistered",
            "OwnershipVerified",
            "HealthChanged",
            "CertificateRequested"
        ],
        "nothing observed, nothing told to the CA"
    );
    publish(&pebble, &all, &[WILDCARD]);
    let view = service
        .wait_for_status(&id, &["active", "failed"], Duration::from_secs(90))
        .await;
    assert_eq!(view["status"], "active", "{view}");
    let (names, _) = certificate_names(&service, &id).await;
    assert_eq!(names, sorted(&[DOMAIN, WWW, WILDCARD]));
}

async fn a_value_never_published_fails_the_order_naming_its_name(kind: StoreKind) {
    let (pebble, _database, mut env) = pebble_and_database(kind).await;
    env.insert("POLL_TIMEOUT".into(), "3s".into());
    let service = Service::start(BINARY, &env);
    let id = verified_with(&service, &pebble, &[WWW]).await;
    let all = challenges(&issue(&service, &id).await);
    publish(&pebble, &all, &[DOMAIN]);
    let view = service
        .wait_for_status(&id, &["active", "failed"], Duration::from_secs(30))
        .await;
    assert_eq!(view["status"], "failed", "{view}");
    assert_eq!(view["failure_reason"]["code"], "dns_timeout", "{view}");
    let detail = view["failure_reason"]["detail"].as_str().expect("detail");
    assert!(detail.contains(WWW), "{detail}");
    assert!(
        !detail.contains(&format!("of {DOMAIN}")),
        "the published one is not named: {detail}"
    );
}

async fn a_changed_set_is_issued_at_the_retry(kind: StoreKind) {
    let (pebble, _database, mut env) = pebble_and_database(kind).await;
    env.insert("POLL_TIMEOUT".into(), "2s".into());
    let service = Service::start(BINARY, &env);
    let id = verified_with(&service, &pebble, &[WILDCARD]).await;
    issue(&service, &id).await;
    let view = service
        .wait_for_status(&id, &["failed"], Duration::from_secs(30))
        .await;
    assert_eq!(view["failure_reason"]["code"], "dns_timeout", "{view}");

    let (code, view) = service
        .put(
            &format!("/domains/{id}/alt_names"),
            json!({"alt_names": [WWW, "api.shop.names.test"]}),
        )
        .await;
    assert_eq!(code, 200, "{view}");
    assert_eq!(view["alt_names"], json!([WWW, "api.shop.names.test"]));
    assert_eq!(
        view["status"], "failed",
        "a new set does not change the status"
    );
    // The same set again records nothing more.
    let (_, before) = service.get(&format!("/domains/{id}/events")).await;
    let (code, _) = service
        .put(
            &format!("/domains/{id}/alt_names"),
            json!({"alt_names": [WWW, "api.shop.names.test"]}),
        )
        .await;
    assert_eq!(code, 200);
    let (_, after) = service.get(&format!("/domains/{id}/events")).await;
    assert_eq!(before, after);

    let (code, body) = service.post(&format!("/domains/{id}/retry"), None).await;
    assert_eq!(code, 200, "{body}");
    let all = challenges(&issue(&service, &id).await);
    let mut identifiers: Vec<&str> = all.iter().map(|(i, _, _)| i.as_str()).collect();
    identifiers.sort_unstable();
    assert_eq!(identifiers, sorted(&[DOMAIN, WWW, "api.shop.names.test"]));
    // Pebble's DNS server keeps the first attempt's values: the new ones sit beside them.
    publish(&pebble, &all, &[DOMAIN, WWW, "api.shop.names.test"]);
    let view = service
        .wait_for_status(&id, &["active", "failed"], Duration::from_secs(90))
        .await;
    assert_eq!(view["status"], "active", "{view}");
    let (names, chain) = certificate_names(&service, &id).await;
    assert_eq!(names, sorted(&[DOMAIN, WWW, "api.shop.names.test"]));
    assert_eq!(subject_alt_names(&chain), names);

    // The dropped wildcard is free for another domain again; a name still held is not.
    let (code, body) = service
        .post(
            "/domains",
            Some(json!({"domain_name": "other.names.test", "alt_names": []})),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    let (code, body) = service
        .post("/domains", Some(json!({"domain_name": WWW})))
        .await;
    assert_eq!(code, 409, "{body}");
    assert!(body["error"].as_str().unwrap_or("").contains(WWW), "{body}");
}

/// What a refusal must leave as it was: every event, and every name claim.
async fn stored_state(database: &TestDatabase) -> (i64, Vec<String>) {
    let events = database.count("events").await;
    let mut claims = database
        .texts("domain_name || ' ' || domain_id FROM domain_names")
        .await;
    claims.sort();
    (events, claims)
}

async fn every_refused_set_of_names_stores_nothing(kind: StoreKind) {
    let (_pebble, database, env) = pebble_and_database(kind).await;
    let service = Service::start(BINARY, &env);
    let (code, first) = service
        .post(
            "/domains",
            Some(json!({"domain_name": DOMAIN, "alt_names": [WWW]})),
        )
        .await;
    assert_eq!(code, 201, "{first}");
    let id = first["id"].as_str().expect("id").to_owned();
    let before = stored_state(&database).await;

    let too_many: Vec<String> = (0..100).map(|n| format!("n{n}.other.names.test")).collect();
    let refusals: Vec<(Value, u16, &str)> = vec![
        (
            json!({"domain_name": "other.names.test", "alt_names": ["www.elsewhere.test"]}),
            400,
            "www.elsewhere.test",
        ),
        (
            json!({"domain_name": "other.names.test", "alt_names": ["*.*.other.names.test"]}),
            400,
            "*.*.other.names.test",
        ),
        (
            json!({"domain_name": "other.names.test", "alt_names": ["www.*.other.names.test"]}),
            400,
            "www.*.other.names.test",
        ),
        (
            json!({"domain_name": "other.names.test", "alt_names": ["a.other.names.test", "A.other.names.test."]}),
            400,
            "a.other.names.test",
        ),
        (
            json!({"domain_name": "other.names.test", "alt_names": ["other.names.test"]}),
            400,
            "other.names.test",
        ),
        (
            json!({"domain_name": "other.names.test", "alt_names": ["bad_label.other.names.test"]}),
            400,
            "bad_label.other.names.test",
        ),
        (
            json!({"domain_name": "other.names.test", "alt_names": too_many}),
            400,
            "at most 100",
        ),
        (
            json!({"domain_name": "other.names.test", "alt_names": "www.other.names.test"}),
            400,
            "expected a sequence",
        ),
        // The alt name of another live domain, as a name of this one.
        (json!({"domain_name": WWW}), 409, WWW),
    ];
    for (body, status, named) in refusals {
        let (code, answer) = service.post("/domains", Some(body.clone())).await;
        assert_eq!(code, status, "{body} -> {answer}");
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(error.contains(named), "{body} -> {error}");
        assert_eq!(stored_state(&database).await, before, "after {body}");
    }

    // A domain whose alt name another live domain holds: 409, and its own name stays free.
    let (code, answer) = service
        .post(
            "/domains",
            Some(json!({"domain_name": "names.test", "alt_names": [WWW]})),
        )
        .await;
    assert_eq!(code, 409, "{answer}");
    assert!(
        answer["error"].as_str().unwrap_or("").contains(WWW),
        "{answer}"
    );
    assert_eq!(stored_state(&database).await, before);

    // PUT: the same refusals leave the set, the events and the claims as they were.
    let (code, other) = service
        .post("/domains", Some(json!({"domain_name": "names.test"})))
        .await;
    assert_eq!(code, 201, "{other}");
    let other_id = other["id"].as_str().expect("id").to_owned();
    let before = stored_state(&database).await;
    let put_refusals: Vec<(Value, u16, &str)> = vec![
        (
            json!({"alt_names": ["www.elsewhere.test"]}),
            400,
            "www.elsewhere.test",
        ),
        (
            json!({"alt_names": ["*shop.names.test"]}),
            400,
            "*shop.names.test",
        ),
        (json!({"alt_names": [DOMAIN]}), 400, DOMAIN),
        (json!({"alt_names": [WWW, WWW]}), 400, WWW),
        (json!({"names": [WWW]}), 400, "names"),
    ];
    for (body, status, named) in put_refusals {
        let (code, answer) = service
            .put(&format!("/domains/{id}/alt_names"), body.clone())
            .await;
        assert_eq!(code, status, "{body} -> {answer}");
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(error.contains(named), "{body} -> {error}");
        assert_eq!(stored_state(&database).await, before, "after {body}");
    }
    // names.test's wildcard covers shop.names.test's names, but no name is the same: allowed.
    // Taking shop.names.test's www as names.test's own alt name is not.
    let (code, answer) = service
        .put(
            &format!("/domains/{other_id}/alt_names"),
            json!({"alt_names": [WWW]}),
        )
        .await;
    assert_eq!(code, 409, "{answer}");
    assert!(
        answer["error"].as_str().unwrap_or("").contains(WWW),
        "{answer}"
    );
    assert_eq!(stored_state(&database).await, before);
    let (code, answer) = service
        .put("/domains/no-such-id/alt_names", json!({"alt_names": []}))
        .await;
    assert_eq!(code, 404, "{answer}");
    assert_eq!(stored_state(&database).await, before);
    let (_, view) = service.get(&format!("/domains/{id}")).await;
    assert_eq!(view["alt_names"], json!([WWW]));
}

async fn a_crash_between_the_order_and_finalization_resumes_with_every_name(kind: StoreKind) {
    let (pebble, _database, env) = pebble_and_database(kind).await;
    let mut service = Service::start(BINARY, &env);
    let id = verified_with(&service, &pebble, &[WWW, WILDCARD]).await;
    let all = challenges(&issue(&service, &id).await);
    service.kill();
    publish(&pebble, &all, &[DOMAIN, WWW, WILDCARD]);
    let service = Service::start(BINARY, &env);
    let view = service
        .wait_for_status(&id, &["active", "failed"], Duration::from_secs(90))
        .await;
    assert_eq!(view["status"], "active", "{view}");
    let (names, chain) = certificate_names(&service, &id).await;
    assert_eq!(names, sorted(&[DOMAIN, WWW, WILDCARD]));
    assert_eq!(subject_alt_names(&chain), names);
}
