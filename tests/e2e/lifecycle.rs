//! Around issuance: retrying a failed domain, removing a domain, on both stores.

use std::time::Duration;

use serde_json::json;

use crate::support::{pebble_and_database, verified_domain, Service, StoreKind};

crate::on_both_stores!(a_failed_domain_is_retried_and_then_issued);
crate::on_both_stores!(a_removed_domain_frees_its_name_and_keeps_its_history);

async fn a_failed_domain_is_retried_and_then_issued(kind: StoreKind) {
    let (pebble, database, mut env) = pebble_and_database(kind).await;
    env.insert("POLL_TIMEOUT".into(), "1s".into());
    let service = Service::start(&env);
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
            "CertificateRequested",
            "IssuanceTimedOut",
            "IssuanceRetried",
            "CertificateRequested",
            "ChallengeRecordObserved",
            "CertificateIssued"
        ]
    );
}

async fn a_removed_domain_frees_its_name_and_keeps_its_history(kind: StoreKind) {
    let (pebble, database, env) = pebble_and_database(kind).await;
    let service = Service::start(&env);
    let id = verified_domain(&service, &pebble, "gone.example.test").await;
    let (code, _) = service
        .post(&format!("/domains/{id}/issue-certificate"), None)
        .await;
    assert_eq!(code, 202);

    let response = service
        .client
        .delete(service.url(&format!("/domains/{id}")))
        .send()
        .await
        .expect("DELETE");
    assert_eq!(response.status().as_u16(), 204);

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
    let response = service
        .client
        .delete(service.url(&format!("/domains/{id}")))
        .send()
        .await
        .expect("DELETE");
    assert_eq!(response.status().as_u16(), 404);
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

    let events = database.event_types(&id).await;
    assert_eq!(
        events,
        [
            "DomainRegistered",
            "OwnershipVerified",
            "CertificateRequested",
            "DomainRemoved"
        ]
    );
    // The removed domain's poller stops: its pending order is no one's business any more.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(database.event_types(&id).await.len(), 4);
}
