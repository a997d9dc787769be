//! CAA before ordering, on both stores, with the real parts: unbound resolves the users' zone
//! (`test.`, served by the first Pebble's challtestsrv, where the test sets CAA records) for the
//! service; two Pebbles behind CA fronts that count the new-order requests each receives. The
//! first CA names its CAA identity in its directory (`meta.caaIdentities`, as Let's Encrypt
//! does); the second, like Pebble itself, lists none, so the service is told its identity
//! (`caa_identities` of `ACME_FALLBACK_ISSUERS`).
//!
//! One service per store goes through every case in turn, so the suite pays for one setup.

use std::time::Duration;

use dns_handling_testkit::{
    pebble_and_database, verified_domain, verified_domain_with_alt_names, CaFront, FrontTarget,
    Pebble, PebbleOptions, Service, StoreKind, Unbound,
};
use serde_json::{json, Value};

use crate::BINARY;

/// The first CA's CAA identity, listed in its directory.
const FIRST: &str = "first-ca.test";
/// The second CA's, configured.
const SECOND: &str = "second-ca.test";

crate::on_both_stores!(caa_records_choose_the_ca_or_refuse_the_order_before_any_ca_is_asked);

/// New-order requests each CA has received so far.
fn new_orders(first: &CaFront, second: &CaFront) -> (usize, usize) {
    (
        first.requests(FrontTarget::NewOrder),
        second.requests(FrontTarget::NewOrder),
    )
}

/// The `409 caa_forbids` answer's refusals, checked to be one.
fn caa_refusals(code: u16, body: &Value) -> Vec<Value> {
    assert_eq!(code, 409, "{body}");
    assert_eq!(body["code"], "caa_forbids", "{body}");
    body["caa"].as_array().expect("the refusals").clone()
}

/// The domain's health once its CAA check of its first name has `outcome` (the periodic
/// checker's first pass, at start, found no domain: only the check before an order records
/// one here), and how many `HealthChanged` its history has.
async fn caa_health(service: &Service, id: &str, outcome: &str) -> (Value, usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, view) = service.get(&format!("/domains/{id}")).await;
        if view["health"]["caa"][0]["outcome"] == outcome {
            let (code, history) = service.get(&format!("/domains/{id}/events")).await;
            assert_eq!(code, 200, "{history}");
            let changes = history
                .as_array()
                .expect("a list")
                .iter()
                .filter(|event| event["event_type"] == "HealthChanged")
                .count();
            return (view["health"].clone(), changes);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "CAA never checked {outcome}: {view}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn caa_records_choose_the_ca_or_refuse_the_order_before_any_ca_is_asked(kind: StoreKind) {
    let (first, _database, mut env) = pebble_and_database(kind).await;
    let second = Pebble::start(PebbleOptions::default());
    let (first_front, second_front) = (CaFront::start(&first), CaFront::start(&second));
    first_front.caa_identities(&[FIRST]);
    // The users' zone: every name under test. at the first Pebble's DNS server, through a
    // recursive resolver, as the service would see it on the internet.
    let resolver = Unbound::start(&[("test", first.dns_address())]);
    env.insert("DNS_NAMESERVERS".into(), resolver.nameserver());
    env.insert("ACME_DIRECTORY".into(), first_front.directory_url());
    env.insert(
        "ACME_CA_BUNDLE".into(),
        first.ca_bundle_with(&[&second]).display().to_string(),
    );
    env.insert(
        "ACME_FALLBACK_ISSUERS".into(),
        json!([{ "directory": second_front.directory_url(), "caa_identities": [SECOND] }])
            .to_string(),
    );
    let service = Service::start(BINARY, &env);

    // A record naming another CA: 409, the record named, and neither CA asked anything.
    let id = verified_domain(&service, &first, "shop.elsewhere.test").await;
    first.add_caa("shop.elsewhere.test.", &[("issue", "other-ca.example")]);
    let asked = new_orders(&first_front, &second_front);
    let (code, body) = service
        .post(&format!("/domains/{id}/issue-certificate"), None)
        .await;
    let refusals = caa_refusals(code, &body);
    assert_eq!(refusals.len(), 2, "one per CA: {body}");
    assert_eq!(refusals[0]["ca"], first_front.directory_url());
    assert_eq!(refusals[0]["found_at"], "shop.elsewhere.test");
    assert_eq!(
        refusals[0]["forbidding"],
        json!([r#"0 issue "other-ca.example""#])
    );
    assert_eq!(
        refusals[0]["would_allow"],
        format!(r#"shop.elsewhere.test. CAA 0 issue "{FIRST}""#)
    );
    assert_eq!(refusals[1]["ca"], second_front.directory_url());
    assert!(
        body["error"]
            .as_str()
            .expect("a message")
            .contains("other-ca.example"),
        "{body}"
    );
    assert_eq!(
        new_orders(&first_front, &second_front),
        asked,
        "no CA asked"
    );
    let (_, view) = service.get(&format!("/domains/{id}")).await;
    assert_eq!(view["status"], "verified", "no order recorded: {view}");
    // The health check before the order recorded what it found, once.
    let (health, changes) = caa_health(&service, &id, "forbidden").await;
    assert_eq!(changes, 1, "{health}");
    assert_eq!(
        health["caa"][0]["found"], r#"0 issue "other-ca.example" at shop.elsewhere.test"#,
        "{health}"
    );

    // A record on the parent domain, found by climbing from the name.
    let id = verified_domain(&service, &first, "a.b.parent.test").await;
    first.add_caa("parent.test.", &[("issue", "other-ca.example")]);
    let (code, body) = service
        .post(&format!("/domains/{id}/issue-certificate"), None)
        .await;
    let refusals = caa_refusals(code, &body);
    assert_eq!(refusals[0]["found_at"], "parent.test", "{body}");
    assert_eq!(
        new_orders(&first_front, &second_front),
        asked,
        "no CA asked"
    );

    // issuewild governs the wildcard, and not the apex: the apex may go to the first CA only,
    // the wildcard to the second only, so no CA may take the order, each for the other name.
    let id = verified_domain_with_alt_names(&service, &first, "wild.test", &["*.wild.test"]).await;
    first.add_caa("wild.test.", &[("issue", FIRST), ("issuewild", SECOND)]);
    let (code, body) = service
        .post(&format!("/domains/{id}/issue-certificate"), None)
        .await;
    let refusals = caa_refusals(code, &body);
    let refused: Vec<(&str, &str)> = refusals
        .iter()
        .map(|r| {
            (
                r["ca"].as_str().unwrap_or(""),
                r["name"].as_str().unwrap_or(""),
            )
        })
        .collect();
    let (first_url, second_url) = (first_front.directory_url(), second_front.directory_url());
    assert_eq!(
        refused,
        [
            (first_url.as_str(), "*.wild.test"),
            (second_url.as_str(), "wild.test")
        ],
        "{body}"
    );
    assert_eq!(
        refusals[0]["forbidding"],
        json!([format!(r#"0 issuewild "{SECOND}""#)])
    );
    assert_eq!(
        refusals[0]["allows_other"],
        json!({"ca": second_url, "record": format!(r#"0 issuewild "{SECOND}""#)})
    );
    assert_eq!(
        new_orders(&first_front, &second_front),
        asked,
        "no CA asked"
    );
    let refused_total = service
        .metric("dns_handling_caa_refusals_total{outcome=\"refused\"}")
        .await;
    assert_eq!(refused_total, Some(3.0));

    // CAA for CAA's SERVFAIL: unknown, which does not block (even with a record above it that
    // would). Verified first: the resolver's answers for the name all fail from here on.
    let id = verified_domain(&service, &first, "shop.servfail.test").await;
    first.add_caa("servfail.test.", &[("issue", "other-ca.example")]);
    first.set_servfail("shop.servfail.test.");
    let (code, body) = service
        .post(&format!("/domains/{id}/issue-certificate"), None)
        .await;
    first.clear_servfail("shop.servfail.test.");
    assert_eq!(code, 202, "{body}");
    assert_eq!(
        new_orders(&first_front, &second_front).0,
        asked.0 + 1,
        "the first CA took it"
    );
    assert!(
        service
            .metric("dns_handling_caa_lookup_failures_total")
            .await
            >= Some(1.0),
        "the failure is counted"
    );

    // A record that permits only the second CA: the order goes there and is issued; then a
    // record naming neither refuses its renewal the same way.
    let id = verified_domain(&service, &first, "shop.second.test").await;
    first.add_caa("shop.second.test.", &[("issue", SECOND)]);
    let asked = new_orders(&first_front, &second_front);
    let (code, started) = service
        .post(&format!("/domains/{id}/issue-certificate"), None)
        .await;
    assert_eq!(code, 202, "{started}");
    assert_eq!(
        new_orders(&first_front, &second_front).0,
        asked.0,
        "the first CA was not asked"
    );
    for challenge in started["challenges"].as_array().expect("challenges") {
        let (at, value) = (
            challenge["challenge_domain"].as_str().expect("a name"),
            challenge["expected_txt_value"].as_str().expect("a value"),
        );
        first.set_txt(at, value);
        second.set_txt(at, value);
    }
    let view = service
        .wait_for_status(&id, &["active", "failed"], Duration::from_secs(60))
        .await;
    assert_eq!(view["status"], "active", "{view}");
    let (_, certificate) = service.get(&format!("/domains/{id}/certificate")).await;
    assert_eq!(certificate["ca_directory"], second_url, "{certificate}");

    first.clear_caa("shop.second.test.");
    first.add_caa("shop.second.test.", &[("issue", "other-ca.example")]);
    let asked = new_orders(&first_front, &second_front);
    let (code, body) = service.post(&format!("/domains/{id}/renew"), None).await;
    caa_refusals(code, &body);
    assert_eq!(
        new_orders(&first_front, &second_front),
        asked,
        "no CA asked"
    );
    // Checked before the renewal too: `ok` at issuance, `forbidden` now, one change each.
    let (health, changes) = caa_health(&service, &id, "forbidden").await;
    assert_eq!(changes, 2, "{health}");
}
