//! Races, hostile DNS, an unreliable CA, a CA that goes away, and graceful stops.

use std::time::Duration;

use dns_handling_testkit::{
    pebble_and_database, service_env, start_expecting_refusal, verified_domain, Pebble,
    PebbleOptions, Service, StoreKind, TestDatabase,
};
use futures::future::join_all;
use serde_json::Value;

use crate::BINARY;

crate::on_both_stores!(a_hundred_concurrent_issue_calls_make_one_order);

async fn a_hundred_concurrent_issue_calls_make_one_order(kind: StoreKind) {
    let (pebble, database, env) = pebble_and_database(kind).await;
    let service = Service::start(BINARY, &env);
    let id = verified_domain(&service, &pebble, "race.example.test").await;
    let path = format!("/domains/{id}/issue-certificate");
    let answers: Vec<(u16, Value)> = join_all((0..100).map(|_| service.post(&path, None))).await;
    let accepted = answers.iter().filter(|(code, _)| *code == 202).count();
    assert_eq!(accepted, 1, "{answers:?}");
    for (code, body) in &answers {
        match code {
            202 => {}
            400 | 409 => assert!(body["error"].as_str().is_some_and(|e| !e.is_empty())),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    let requested = database
        .event_types(&id)
        .await
        .iter()
        .filter(|e| *e == "CertificateRequested")
        .count();
    assert_eq!(requested, 1);
    assert_eq!(service.log().matches("registered ACME account").count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_first_ever_issuances_register_one_account() {
    let (pebble, database, env) = pebble_and_database(StoreKind::Postgres).await;
    let service = Service::start(BINARY, &env);
    let mut ids = Vec::new();
    for n in 0..100 {
        ids.push(verified_domain(&service, &pebble, &format!("first{n}.example.test")).await);
    }
    let paths: Vec<String> = ids
        .iter()
        .map(|id| format!("/domains/{id}/issue-certificate"))
        .collect();
    let answers = join_all(paths.iter().map(|path| service.post(path, None))).await;
    for (code, body) in &answers {
        assert_eq!(*code, 202, "{body}");
    }
    assert_eq!(database.count("acme_accounts").await, 1);
    assert_eq!(service.log().matches("registered ACME account").count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pebble_rejecting_half_the_nonces_still_issues() {
    let pebble = Pebble::start(PebbleOptions {
        nonce_reject_percent: Some(50),
        ..PebbleOptions::default()
    });
    let database = TestDatabase::create(StoreKind::Sqlite).await;
    let service = Service::start(BINARY, &service_env(&pebble, &database));
    let id = verified_domain(&service, &pebble, "nonces.example.test").await;
    let (code, started) = service
        .post(&format!("/domains/{id}/issue-certificate"), None)
        .await;
    assert_eq!(code, 202, "{started}");
    pebble.set_txt(
        started["challenge_domain"].as_str().expect("domain"),
        started["expected_txt_value"].as_str().expect("value"),
    );
    let view = service
        .wait_for_status(&id, &["active", "failed"], Duration::from_secs(120))
        .await;
    assert_eq!(view["status"], "active", "{view}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_that_goes_away_is_retried_then_reported_as_unavailable() {
    let mut pebble = Pebble::start(PebbleOptions::default());
    let database = TestDatabase::create(StoreKind::Sqlite).await;
    let mut env = service_env(&pebble, &database);
    env.insert("POLL_TIMEOUT".into(), "4s".into());
    let service = Service::start(BINARY, &env);
    let id = verified_domain(&service, &pebble, "outage.example.test").await;
    let (code, started) = service
        .post(&format!("/domains/{id}/issue-certificate"), None)
        .await;
    assert_eq!(code, 202, "{started}");
    pebble.stop_acme();
    pebble.set_txt(
        started["challenge_domain"].as_str().expect("domain"),
        started["expected_txt_value"].as_str().expect("value"),
    );
    let view = service
        .wait_for_status(&id, &["active", "failed"], Duration::from_secs(30))
        .await;
    assert_eq!(view["status"], "failed", "{view}");
    assert_eq!(view["failure_reason"]["code"], "acme_unavailable", "{view}");
    assert!(
        service.log().matches("retrying at the next poll").count() >= 2,
        "the CA was tried more than once"
    );
    let events = database.event_types(&id).await;
    assert!(
        events.contains(&"ChallengeRecordObserved".to_owned()),
        "{events:?}"
    );
    assert_eq!(events.last().map(String::as_str), Some("IssuanceFailed"));
}

/// TXT lookups of the pollers that failed (SERVFAIL, timeout), as opposed to finding no record.
const LOOKUP_FAILED: &str = "dns_handling_txt_polls_total{outcome=\"lookup_failed\"}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servfail_and_crowded_txt_records_keep_the_poller_polling() {
    let (pebble, database, env) = pebble_and_database(StoreKind::Postgres).await;
    let service = Service::start(BINARY, &env);
    let id = verified_domain(&service, &pebble, "flaky.example.test").await;
    let (code, started) = service
        .post(&format!("/domains/{id}/issue-certificate"), None)
        .await;
    assert_eq!(code, 202, "{started}");
    let host = started["challenge_domain"].as_str().expect("domain");
    let expected = started["expected_txt_value"].as_str().expect("value");

    // While every lookup fails, the poller keeps polling: its lookups are counted as failed
    // (not as "no record yet"), it stays alive, and the order stays pending.
    let failed_before = service.metric(LOOKUP_FAILED).await.unwrap_or(0.0);
    pebble.set_servfail(host);
    service
        .wait_for_metric(LOOKUP_FAILED, Duration::from_secs(10), |failed| {
            failed >= failed_before + 3.0
        })
        .await;
    assert_eq!(service.metric("dns_handling_live_pollers").await, Some(1.0));
    let (_, view) = service.get(&format!("/domains/{id}")).await;
    assert_eq!(view["status"], "certificate_pending", "{view}");
    pebble.clear_servfail(host);

    // Forty unrelated values: the service finds its value among them (a 1.7 kB answer, over
    // the classic UDP size). Pebble's own resolver cannot read an answer that large, so the CA
    // refuses the challenge, and that refusal is recorded with the CA's problem document.
    for n in 0..40 {
        pebble.set_txt(host, &format!("unrelated-value-{n}"));
    }
    pebble.set_txt(host, expected);
    let view = service
        .wait_for_status(&id, &["active", "failed"], Duration::from_secs(60))
        .await;
    assert_eq!(view["status"], "failed", "{view}");
    assert_eq!(
        view["failure_reason"]["code"], "challenge_invalid",
        "{view}"
    );
    let detail = view["failure_reason"]["detail"].as_str().expect("detail");
    assert!(
        detail.starts_with("urn:ietf:params:acme:error:"),
        "{detail}"
    );
    let observed = database
        .texts(&format!(
            "CAST(payload AS TEXT) FROM events WHERE aggregate_id = '{id}' \
             AND event_type = 'ChallengeRecordObserved'"
        ))
        .await;
    assert_eq!(observed.len(), 1);
    let observed: Value = serde_json::from_str(&observed[0]).expect("JSON");
    let values = observed["ChallengeRecordObserved"]["observed_values"]
        .as_array()
        .expect("values");
    assert_eq!(
        values.len(),
        42,
        "40 unrelated, the verification token, the expected value"
    );

    // A few values are fine for the CA too: retry and issue.
    let (code, _) = service.post(&format!("/domains/{id}/retry"), None).await;
    assert_eq!(code, 200);
    let (code, again) = service
        .post(&format!("/domains/{id}/issue-certificate"), None)
        .await;
    assert_eq!(code, 202, "{again}");
    pebble.clear_txt(host);
    for n in 0..4 {
        pebble.set_txt(host, &format!("other-{n}"));
    }
    pebble.set_txt(host, again["expected_txt_value"].as_str().expect("value"));
    let view = service
        .wait_for_status(&id, &["active", "failed"], Duration::from_secs(60))
        .await;
    assert_eq!(view["status"], "active", "{view}");
}

/// On PostgreSQL the stop also ends the commit listener's connection: dropped after the
/// runtime, it made sqlx panic and the process abort (exit 134) instead of stopping.
async fn sigterm_stops_cleanly_and_the_next_start_resumes(kind: StoreKind) {
    let (pebble, _database, env) = pebble_and_database(kind).await;
    let mut first = Service::start(BINARY, &env);
    let id = verified_domain(&first, &pebble, "term.example.test").await;
    let (code, started) = first
        .post(&format!("/domains/{id}/issue-certificate"), None)
        .await;
    assert_eq!(code, 202, "{started}");
    let status = first.terminate();
    assert!(status.success(), "exit status {status}");

    let second = Service::start(BINARY, &env);
    pebble.set_txt(
        started["challenge_domain"].as_str().expect("domain"),
        started["expected_txt_value"].as_str().expect("value"),
    );
    let view = second
        .wait_for_status(&id, &["active", "failed"], Duration::from_secs(60))
        .await;
    assert_eq!(view["status"], "active", "{view}");
}
on_both_stores!(sigterm_stops_cleanly_and_the_next_start_resumes);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_without_a_key_encryption_key_refuses_to_start() {
    let database = TestDatabase::create(StoreKind::Postgres).await;
    let env = std::collections::HashMap::from([("DATABASE_URL".to_owned(), database.url.clone())]);
    let (status, log) = start_expecting_refusal(BINARY, &env);
    assert!(!status.success());
    assert!(log.contains("KEY_ENCRYPTION_KEY"), "{log}");
}
