//! Domain health with the real parts, on both stores: the service checks every domain's DNS
//! through unbound, which resolves the users' zone (`test.`, served by Pebble's challtestsrv,
//! where the test points names at addresses) and, for delegated domains, the service's own
//! delegation zone. The periodic checker runs every 2 s; what it records is read back from the
//! domain (`health`, its status) and its history (one `HealthChanged` per change, never one per
//! check).

use std::time::{Duration, Instant};

use dns_handling_testkit::{active_domain, pebble_and_database, Service, StoreKind, Unbound};
use serde_json::Value;

use crate::delegation::{delegated, verified_by_cname};
use crate::BINARY;

crate::on_both_stores!(a_name_pointing_elsewhere_becomes_elsewhere_then_moved_then_active_again);
crate::on_both_stores!(a_removed_delegation_cname_is_reported_before_renewal);

/// Where users point their names in these tests.
const TARGETS: &str = "edge.platform.test,203.0.113.0/24";

/// The domain's `health`, once its routing check of its first name has `outcome`. (What it
/// found is that of the check that changed the outcome, which may have run while the test was
/// between clearing an address and adding the next: challtestsrv answers `127.0.0.1` then.)
async fn wait_for_routing(service: &Service, id: &str, outcome: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, body) = service.get(&format!("/domains/{id}")).await;
        assert_eq!(code, 200, "{body}");
        if body["health"]["routing"][0]["outcome"] == outcome {
            return body["health"].clone();
        }
        assert!(
            Instant::now() < deadline,
            "routing never became {outcome}: {body}\n{}",
            service.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The domain's renewal `due_at`, once the scheduler has set it.
async fn wait_for_renewal_schedule(service: &Service, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, body) = service.get(&format!("/domains/{id}")).await;
        if body["renewal"]["due_at"].is_string() {
            return body["renewal"]["due_at"].clone();
        }
        assert!(Instant::now() < deadline, "no renewal scheduled: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The payloads of the domain's `HealthChanged` events, in order.
async fn health_changes(service: &Service, id: &str) -> Vec<Value> {
    let (code, history) = service.get(&format!("/domains/{id}/events")).await;
    assert_eq!(code, 200, "{history}");
    history
        .as_array()
        .expect("a list")
        .iter()
        .filter(|event| event["event_type"] == "HealthChanged")
        .map(|event| event["payload"]["HealthChanged"].clone())
        .collect()
}

/// The routing outcomes of each `HealthChanged`, in order.
fn routing_outcomes(changes: &[Value]) -> Vec<String> {
    changes
        .iter()
        .map(|change| {
            change["report"]["routing"][0]["outcome"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

async fn a_name_pointing_elsewhere_becomes_elsewhere_then_moved_then_active_again(kind: StoreKind) {
    let (pebble, _database, mut env) = pebble_and_database(kind).await;
    let resolver = Unbound::start(&[("test", pebble.dns_address())]);
    env.insert("DNS_NAMESERVERS".into(), resolver.nameserver());
    env.insert("ROUTING_TARGETS".into(), TARGETS.into());
    env.insert("HEALTH_CHECK_INTERVAL".into(), "2s".into());
    env.insert("MOVED_AFTER".into(), "6s".into());
    env.insert("RENEWAL_CHECK_INTERVAL".into(), "1s".into());
    let service = Service::start(BINARY, &env);
    let name = "shop.health.test";
    let host = format!("{name}.");
    pebble.add_a(&host, &["203.0.113.7"]);
    let id = active_domain(&service, &pebble, name).await;

    let health = wait_for_routing(&service, &id, "ok").await;
    assert_eq!(health["routing"][0]["name"], name, "{health}");
    assert_eq!(health["routing"][0]["expected"], TARGETS, "{health}");
    assert!(
        health["routing"][0]["found"]
            .as_str()
            .is_some_and(|found| found.contains("203.0.113.7")),
        "{health}"
    );
    assert_eq!(
        health["caa"][0]["outcome"], "ok",
        "no CAA records: {health}"
    );
    assert_eq!(health["problems"], serde_json::json!([]), "{health}");
    let renewal_due = wait_for_renewal_schedule(&service, &id).await;

    // Pointed elsewhere: `elsewhere`, with what was found, and a problem said.
    pebble.clear_a(&host);
    pebble.add_a(&host, &["198.51.100.1"]);
    let health = wait_for_routing(&service, &id, "elsewhere").await;
    let (code, check) = service.post(&format!("/domains/{id}/health"), None).await;
    assert_eq!(code, 200, "{check}");
    assert_eq!(check["routing"][0]["outcome"], "elsewhere", "{check}");
    let found = check["routing"][0]["found"].as_str().unwrap_or_default();
    assert!(found.contains("198.51.100.1"), "{check}");
    let problems = health["problems"].as_array().expect("problems");
    assert_eq!(problems.len(), 1, "{health}");
    assert!(
        problems[0]
            .as_str()
            .is_some_and(|problem| problem.contains("routing of shop.health.test: elsewhere")),
        "{health}"
    );
    let changed_at = health["changed_at"].clone();

    // A failed lookup: the check answers `unknown`, and nothing recorded changes.
    pebble.set_servfail(&host);
    let (code, check) = service.post(&format!("/domains/{id}/health"), None).await;
    assert_eq!(code, 200, "{check}");
    assert_eq!(check["routing"][0]["outcome"], "unknown", "{check}");
    assert_eq!(check["changed_at"], changed_at, "{check}");
    // Let the periodic checker meet the failure too.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (_, body) = service.get(&format!("/domains/{id}")).await;
    assert_eq!(
        body["health"]["routing"][0]["outcome"], "elsewhere",
        "{body}"
    );
    assert_eq!(body["health"]["changed_at"], changed_at, "{body}");
    assert_eq!(
        body["status"], "active",
        "a failed lookup moves nothing: {body}"
    );
    pebble.clear_servfail(&host);

    // Still elsewhere, MOVED_AFTER after it went: `moved`, listed as such, not renewed, and
    // its certificate still there to serve.
    let moved = service
        .wait_for_status(&id, &["moved"], Duration::from_secs(30))
        .await;
    assert_eq!(moved["renewal"]["due_at"], renewal_due, "{moved}");
    let (code, listed) = service.get("/domains?status=moved").await;
    assert_eq!(code, 200, "{listed}");
    let ids: Vec<&str> = listed["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|item| item["id"].as_str())
        .collect();
    assert_eq!(ids, [id.as_str()], "{listed}");
    let (code, refused) = service.post(&format!("/domains/{id}/renew"), None).await;
    assert_eq!(code, 400, "no renewal for a moved domain: {refused}");
    let (code, certificate) = service.get(&format!("/domains/{id}/certificate")).await;
    assert_eq!(code, 200, "{certificate}");

    // Pointed back: `ok` and `active` again by itself, its renewal schedule intact.
    pebble.clear_a(&host);
    pebble.add_a(&host, &["203.0.113.7"]);
    let back = service
        .wait_for_status(&id, &["active"], Duration::from_secs(30))
        .await;
    assert_eq!(back["health"]["routing"][0]["outcome"], "ok", "{back}");
    assert_eq!(back["renewal"]["due_at"], renewal_due, "{back}");

    // Exactly one event per change, though the checker ran many times meanwhile.
    let changes = health_changes(&service, &id).await;
    assert_eq!(
        routing_outcomes(&changes),
        ["ok", "elsewhere", "ok"],
        "{changes:?}"
    );
    let (_, history) = service.get(&format!("/domains/{id}/events")).await;
    let moves: Vec<&str> = history
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|event| event["event_type"].as_str())
        .filter(|kind| ["DomainMoved", "DomainReturned"].contains(kind))
        .collect();
    assert_eq!(moves, ["DomainMoved", "DomainReturned"], "{history}");
    let checks = service
        .metric("dns_handling_health_checks_total{outcome=\"recorded\"}")
        .await
        .expect("checks counted");
    assert!(
        checks > 3.0,
        "the checker ran more often than it recorded: {checks}"
    );
}

async fn a_removed_delegation_cname_is_reported_before_renewal(kind: StoreKind) {
    let setup = delegated(kind).await;
    let mut env = setup.env.clone();
    env.insert("HEALTH_CHECK_INTERVAL".into(), "2s".into());
    let service = Service::start(BINARY, &env);
    let name = "shop.healthdelegated.test";
    let id = verified_by_cname(&service, &setup.pebble, name, &[]).await;
    let (code, started) = service
        .post(&format!("/domains/{id}/issue-certificate"), None)
        .await;
    assert_eq!(code, 202, "{started}");
    assert_eq!(started["validation"], "delegated", "{started}");
    service
        .wait_for_status(&id, &["active"], Duration::from_secs(60))
        .await;
    let (code, check) = service.post(&format!("/domains/{id}/health"), None).await;
    assert_eq!(code, 200, "{check}");
    assert_eq!(check["delegation"][0]["outcome"], "ok", "{check}");
    assert_eq!(
        check["routing"],
        serde_json::json!([]),
        "no ROUTING_TARGETS"
    );

    // The owner's DNS migration loses the CNAME: the domain says so, long before its renewal.
    let record = format!("_acme-challenge.{name}.");
    setup.pebble.clear_cname(&record);
    let deadline = Instant::now() + Duration::from_secs(30);
    let health = loop {
        let (_, body) = service.get(&format!("/domains/{id}")).await;
        if body["health"]["delegation"][0]["outcome"] == "missing" {
            break body["health"].clone();
        }
        assert!(Instant::now() < deadline, "never reported: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        health["delegation"][0]["expected"]
            .as_str()
            .is_some_and(|expected| expected.starts_with(&format!("{record} CNAME "))),
        "{health}"
    );
    let problems = health["problems"].as_array().expect("problems");
    assert!(
        problems.iter().any(|problem| problem
            .as_str()
            .is_some_and(|text| text.starts_with(&format!("delegation of {name}: missing")))),
        "{health}"
    );
    let changes = health_changes(&service, &id).await;
    let outcomes: Vec<&str> = changes
        .iter()
        .map(|change| {
            change["report"]["delegation"][0]["outcome"]
                .as_str()
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(outcomes.last(), Some(&"missing"), "{changes:?}");
}
