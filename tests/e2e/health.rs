//! Domain health with the real parts, on both stores: the service checks every domain's DNS
//! through unbound, which resolves the users' zone (`test.`, served by Pebble's challtestsrv,
//! where the test points names at addresses) and, for delegated domains, the service's own
//! delegation zone. The periodic checker runs every 2 s; what it records is read back from the
//! domain (`health`, its status) and its history (one `HealthChanged` per change, never one per
//! check).

use std::time::{Duration, Instant};

use dns_handling_testkit::{
    active_domain, pebble_and_database, service_env, verified_domain, Pebble, PebbleOptions,
    Service, StoreKind, TestDatabase, Unbound,
};
use serde_json::Value;

use crate::delegation::{delegated, verified_by_cname};
use crate::BINARY;

crate::on_both_stores!(a_name_pointing_elsewhere_becomes_elsewhere_then_moved_then_active_again);
crate::on_both_stores!(a_removed_delegation_cname_is_reported_before_renewal);
crate::on_both_stores!(a_domain_moved_for_moved_remove_after_is_removed_its_certificate_revoked);

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

/// `domains_health{check,outcome}` as `GET /metrics` says now.
async fn domains_health(service: &Service, check: &str, outcome: &str) -> f64 {
    let series = format!("dns_handling_domains_health{{check=\"{check}\",outcome=\"{outcome}\"}}");
    let value = service.metric(&series).await;
    value.unwrap_or_else(|| panic!("no {series}"))
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
    // Counted from the views: this domain is `elsewhere` for routing, `ok` for CAA.
    assert_eq!(domains_health(&service, "routing", "elsewhere").await, 1.0);
    assert_eq!(domains_health(&service, "routing", "ok").await, 0.0);
    assert_eq!(domains_health(&service, "caa", "ok").await, 1.0);

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
    assert_eq!(domains_health(&service, "routing", "ok").await, 1.0);
    assert_eq!(domains_health(&service, "routing", "elsewhere").await, 0.0);

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

async fn a_domain_moved_for_moved_remove_after_is_removed_its_certificate_revoked(kind: StoreKind) {
    let (pebble, database, mut env) = pebble_and_database(kind).await;
    let resolver = Unbound::start(&[("test", pebble.dns_address())]);
    env.insert("DNS_NAMESERVERS".into(), resolver.nameserver());
    env.insert("ROUTING_TARGETS".into(), TARGETS.into());
    env.insert("HEALTH_CHECK_INTERVAL".into(), "1s".into());
    env.insert("MOVED_AFTER".into(), "2s".into());
    env.insert("MOVED_REMOVE_AFTER".into(), "3s".into());
    let service = Service::start(BINARY, &env);
    let name = "gone.health.test";
    let host = format!("{name}.");
    pebble.add_a(&host, &["203.0.113.9"]);
    let id = active_domain(&service, &pebble, name).await;
    let (_, view) = service.get(&format!("/domains/{id}")).await;
    let serial = view["certificate"]["serial"]
        .as_str()
        .expect("serial")
        .to_owned();
    wait_for_routing(&service, &id, "ok").await;

    // Pointed elsewhere for good: moved, then removed, its certificate revoked first.
    pebble.clear_a(&host);
    pebble.add_a(&host, &["198.51.100.2"]);
    service
        .wait_for_status(&id, &["moved"], Duration::from_secs(30))
        .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, body) = service.get(&format!("/domains/{id}")).await;
        if code == 404 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never removed: {body}\n{}",
            service.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(pebble.certificate_status(&serial)["Status"], "Revoked");
    let types = database.event_types(&id).await;
    let at = |wanted: &str| types.iter().position(|t| t == wanted);
    let (moved, revoked, removed) = (
        at("DomainMoved").expect("moved"),
        at("CertificateRevoked").expect("revoked"),
        at("DomainRemoved").expect("removed"),
    );
    assert!(moved < revoked && revoked < removed, "{types:?}");
    let reason = database
        .texts(&format!(
            "CAST(payload AS TEXT) FROM events WHERE aggregate_id = '{id}' \
             AND event_type = 'CertificateRevoked'"
        ))
        .await;
    assert!(reason[0].contains("cessationOfOperation"), "{reason:?}");
}

/// The periodic checks a replica has recorded so far (the counter appears at its first).
const RECORDED: &str = "dns_handling_health_checks_total{outcome=\"recorded\"}";

/// The checks' lease, as the store names it.
const LEASE: &str = "all-domains#health-checks";

/// The replica holding the checks' lease, as the store says.
async fn checks_lease_holder(database: &TestDatabase) -> Vec<String> {
    database
        .texts(&format!(
            "owner FROM order_leases WHERE domain_id = '{LEASE}' AND expires_at > now()"
        ))
        .await
}

/// Two replicas on one PostgreSQL (SQLite is single-process): one checks, the other does not;
/// the lease taken away, the checker stops; its holder gone and the lease lapsed, the other
/// replica checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_checker_stops_when_its_lease_is_taken_and_another_replica_takes_over() {
    let pebble = Pebble::start(PebbleOptions::default());
    let database = TestDatabase::create(StoreKind::Postgres).await;
    let mut env = service_env(&pebble, &database);
    env.insert("LEASE_TTL".into(), "3s".into());
    env.insert("WEBHOOK_TIMEOUT".into(), "2s".into());
    env.insert("HEALTH_CHECK_INTERVAL".into(), "1s".into());
    let replica = |name: &str| {
        let mut env = env.clone();
        env.insert("REPLICA_ID".into(), name.into());
        Service::start(BINARY, &env)
    };
    let mut first = replica("replica-a");
    verified_domain(&first, &pebble, "lease.health.test").await;
    first
        .wait_for_metric(RECORDED, Duration::from_secs(15), |checks| checks >= 2.0)
        .await;
    let second = replica("replica-b");
    assert_eq!(checks_lease_holder(&database).await, ["replica-a"]);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        second.metric(RECORDED).await,
        None,
        "only the holder checks"
    );

    // The lease taken away (as another replica would once this one failed to extend it): the
    // checker notices at its next extension and stops.
    database
        .execute(&format!(
            "UPDATE order_leases SET owner = 'elsewhere', expires_at = now() + interval '1 hour' \
             WHERE domain_id = '{LEASE}'"
        ))
        .await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while !first.log().contains("the health checks' lease was lost") {
        assert!(Instant::now() < deadline, "the loss went unnoticed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stopped_at = first.metric(RECORDED).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        first.metric(RECORDED).await,
        stopped_at,
        "no check after the loss"
    );
    assert_eq!(second.metric(RECORDED).await, None, "nor by the other");

    // The first replica gone and the lease lapsed: the second takes it and checks.
    first.kill();
    database
        .execute(&format!(
            "UPDATE order_leases SET expires_at = now() - interval '1 second' \
             WHERE domain_id = '{LEASE}'"
        ))
        .await;
    second
        .wait_for_metric(RECORDED, Duration::from_secs(15), |checks| checks >= 2.0)
        .await;
    assert_eq!(checks_lease_holder(&database).await, ["replica-b"]);
}
