//! Around issuance: retrying a failed domain, removing a domain, on both stores.

use std::time::{Duration, Instant};

use dns_handling_testkit::{pebble_and_database, verified_domain, Pebble, Service, StoreKind};
use serde_json::json;

use crate::BINARY;

crate::on_both_stores!(a_failed_domain_is_retried_and_then_issued);
crate::on_both_stores!(a_removed_domain_frees_its_name_keeps_its_history_and_its_poller_stops);

async fn a_failed_domain_is_retried_and_then_issued(kind: StoreKind) {
    let (pebble, database, mut env) = pebble_and_database(kind).await;
    env.insert("POLL_TIMEOUT".into(), "1s".into());
    let service = Service::start(BINARY, &env);
    let id = verified_domain(&service, &pebble, "retry.example.test").await;

    let (code, body) = service.post(&format!("/domains/{id}/retry"), None).await;
    assert_eq!(code, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("verified")),
        "{body}"
    );

    let (code, _) = service
        .post(&format!("/domains/{id}/issue-certificate"), None)
        .await;
    assert_eq!(code, 202);
    let failed = service
        .wait_for_status(&id, &["failed"], Duration::from_secs(30))
        .await;
    assert_eq!(failed["failure_reason"]["code"], "dns_timeout");

    let (code, body) = service.post(&format!("/domains/{id}/retry"), None).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["status"], "verified");
    assert!(body.get("failure_reason").is_none(), "{body}");

    // The second attempt gets a new order and a new challenge value.
    let (code, started) = service
        .post(&format!("/domains/{id}/issue-certificate"), None)
        .await;
    assert_eq!(code, 202, "{started}");
    assert_ne!(started["order_id"], failed["order_id"]);
    pebble.set_txt(
        started["challenge_domain"].as_str().expect("domain"),
        started["expected_txt_value"].as_str().expect("value"),
    );
    // This attempt also has one second: publishing right after the 202 is what clients do.
    let view = service
        .wait_for_status(&id, &["active", "failed"], Duration::from_secs(60))
        .await;
    assert_eq!(view["status"], "active", "{view}");
    let events = database.event_types(&id).await;
    assert_eq!(
        events,
        [
            "DomainRegistered",
            "OwnershipVerified",
            "HealthChanged",
            "CertificateRequested",
            "IssuanceTimedOut",
            "IssuanceRetried",
            "CertificateRequested",
            "ChallengeRecordObserved",
            "CertificateIssued"
        ]
    );
}

async fn a_removed_domain_frees_its_name_keeps_its_history_and_its_poller_stops(kind: StoreKind) {
    let (pebble, database, env) = pebble_and_database(kind).await;
    let service = Service::start(BINARY, &env);
    let id = verified_domain(&service, &pebble, "gone.example.test").await;
    let (code, started) = service
        .post(&format!("/domains/{id}/issue-certificate"), None)
        .await;
    assert_eq!(code, 202, "{started}");
    let challenge_domain = started["challenge_domain"].as_str().expect("domain");

    // Before the removal the order has a live poller that keeps asking the DNS server.
    service
        .wait_for_metric(LIVE_POLLERS, Duration::from_secs(10), |live| live == 1.0)
        .await;
    wait_for_dns_queries(&pebble, challenge_domain, 3).await;

    assert_eq!(service.delete(&format!("/domains/{id}")).await, 204);

    let (code, body) = service.get(&format!("/domains/{id}")).await;
    assert_eq!(code, 404, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("removed")),
        "{body}"
    );
    let (_, list) = service.get("/domains").await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(0), "{list}");
    assert_eq!(service.delete(&format!("/domains/{id}")).await, 404);
    let (code, body) = service.post(&format!("/domains/{id}/retry"), None).await;
    assert_eq!(code, 404, "{body}");

    let (code, again) = service
        .post(
            "/domains",
            Some(json!({"domain_name": "gone.example.test"})),
        )
        .await;
    assert_eq!(code, 201, "the name is free again: {again}");
    assert_ne!(again["id"], id.as_str());

    // The removed domain's poller stops at the removal, though it has nothing to report (the
    // challenge record was never published).
    service
        .wait_for_metric(LIVE_POLLERS, Duration::from_secs(5), |live| live == 0.0)
        .await;
    let queries_when_stopped = pebble.dns_queries(challenge_domain);
    // Five poll intervals (POLL_INTERVAL is 200 ms): a poller still alive would ask again.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        pebble.dns_queries(challenge_domain),
        queries_when_stopped,
        "the challenge name is still being queried after the poller stopped"
    );
    assert_eq!(service.metric(LIVE_POLLERS).await, Some(0.0));

    // Nothing was recorded after the removal, and the CA never heard of the record.
    let events = database.event_types(&id).await;
    assert_eq!(
        events,
        [
            "DomainRegistered",
            "OwnershipVerified",
            "HealthChanged",
            "CertificateRequested",
            "DomainRemoved"
        ]
    );
    let metrics = service.metrics().await;
    assert!(
        !metrics.contains("endpoint=\"challenge_ready\""),
        "{metrics}"
    );
}

/// The gauge of order pollers alive in the process.
const LIVE_POLLERS: &str = "dns_handling_live_pollers";

/// Waits until the DNS server has answered at least `at_least` queries for `host`.
async fn wait_for_dns_queries(pebble: &Pebble, host: &str, at_least: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let queries = pebble.dns_queries(host);
        if queries >= at_least {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{host} was queried {queries} times, expected at least {at_least}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
