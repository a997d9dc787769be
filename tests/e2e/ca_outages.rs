//! The CA failing while orders are placed, on both stores against Pebble behind the fault
//! front: an outage spends none of the new-order budget, a `Retry-After` holds for the CA and
//! not for one request, an order whose answer was lost is placed once, a policy refusal is the
//! answer (no other CA is asked), and a `Retry-After` of any size leaves the renewal scheduler
//! running. Also: two replicas asking at once share one budget.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use dns_handling_testkit::{
    active_domain, pebble_and_database, verified_domain, CaFront, FrontTarget, Pebble,
    PebbleOptions, Service, StoreKind,
};
use serde_json::Value;

use crate::ca_etiquette::history_len;
use crate::issuance::issue;
use crate::BINARY;

crate::on_both_stores!(an_outage_at_the_ca_spends_none_of_the_new_order_budget);
crate::on_both_stores!(a_retry_after_of_the_ca_holds_for_the_next_order_without_asking_again);
crate::on_both_stores!(an_order_whose_answer_was_lost_is_placed_once_and_keeps_its_unit);
crate::on_both_stores!(a_policy_refusal_at_new_order_is_a_400_and_no_other_ca_is_asked);
crate::on_both_stores!(a_retry_after_of_any_size_is_bounded_and_the_scheduler_goes_on);

/// A service whose first CA is `front` (for `pebble`), with a new-order budget of `budget`.
fn behind_front(env: &HashMap<String, String>, front: &CaFront, budget: &str) -> Service {
    let mut env = env.clone();
    env.insert("ACME_DIRECTORY".into(), front.directory_url());
    env.insert("ACME_NEW_ORDER_BUDGET".into(), budget.into());
    Service::start(BINARY, &env)
}

/// How much of the first CA's new-order budget `GET /ca` says is spent.
async fn spent(service: &Service) -> u64 {
    let (code, ca) = service.get("/ca").await;
    assert_eq!(code, 200, "{ca}");
    ca["new_orders"]["spent"].as_u64().expect("spent")
}

async fn an_outage_at_the_ca_spends_none_of_the_new_order_budget(kind: StoreKind) {
    let (pebble, _database, env) = pebble_and_database(kind).await;
    let front = CaFront::start(&pebble);
    let service = behind_front(&env, &front, "1/1h");
    let id = verified_domain(&service, &pebble, "outage.budget.test").await;
    front.down();
    for _ in 0..3 {
        let (code, refused) = issue(&service, &id).await;
        assert_ne!(code, 202, "{refused}");
        assert!(refused["error"].is_string(), "{refused}");
    }
    assert_eq!(spent(&service).await, 0, "no order reached the CA");
    front.up();
    // The CA is not asked again for a moment after it did not answer.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (code, started) = issue(&service, &id).await;
    assert_eq!(code, 202, "the one unit is still there: {started}");
    assert_eq!(spent(&service).await, 1);
}

async fn a_retry_after_of_the_ca_holds_for_the_next_order_without_asking_again(kind: StoreKind) {
    let (pebble, _database, env) = pebble_and_database(kind).await;
    let front = CaFront::start(&pebble);
    let service = behind_front(&env, &front, "10/1h");
    let first = verified_domain(&service, &pebble, "first.retry-after.test").await;
    let second = verified_domain(&service, &pebble, "second.retry-after.test").await;
    // Only the next newOrder is refused: a service that forgot the CA's word would succeed.
    front.answer_rate_limited(FrontTarget::NewOrder, 1, Duration::from_secs(120));
    let (code, refused) = issue(&service, &first).await;
    assert_eq!(code, 429, "{refused}");
    let before = history_len(&service, &second).await;
    let (code, refused) = issue(&service, &second).await;
    assert_eq!(
        code, 429,
        "the CA's Retry-After holds for every order: {refused}"
    );
    assert_eq!(
        front.requests(FrontTarget::NewOrder),
        1,
        "the CA was asked once"
    );
    assert_eq!(
        history_len(&service, &second).await,
        before,
        "nothing recorded"
    );
    assert_eq!(spent(&service).await, 0, "refused orders spend no unit");
}

async fn an_order_whose_answer_was_lost_is_placed_once_and_keeps_its_unit(kind: StoreKind) {
    let (pebble, _database, env) = pebble_and_database(kind).await;
    let front = CaFront::start(&pebble);
    let service = behind_front(&env, &front, "10/1h");
    let id = verified_domain(&service, &pebble, "lost.answer.test").await;
    // Pebble places the order; its answer never reaches the service.
    front.lose_answers(FrontTarget::NewOrder, 1);
    let (code, failed) = issue(&service, &id).await;
    assert_ne!(code, 202, "{failed}");
    assert_eq!(
        front.requests(FrontTarget::NewOrder),
        1,
        "a request that may have placed an order is not sent again"
    );
    assert_eq!(spent(&service).await, 1, "the CA may count that order");
}

async fn a_policy_refusal_at_new_order_is_a_400_and_no_other_ca_is_asked(kind: StoreKind) {
    let (first, _database, mut env) = pebble_and_database(kind).await;
    let second = Pebble::start(PebbleOptions::default());
    let front = CaFront::start(&first);
    let second_front = CaFront::start(&second);
    env.insert(
        "ACME_CA_BUNDLE".into(),
        first.ca_bundle_with(&[&second]).display().to_string(),
    );
    env.insert(
        "ACME_FALLBACK_ISSUERS".into(),
        serde_json::json!([{ "directory": second_front.directory_url() }]).to_string(),
    );
    let service = behind_front(&env, &front, "10/1h");
    let id = verified_domain(&service, &first, "refused.policy.test").await;
    front.answer_refused(FrontTarget::NewOrder, 1, "rejectedIdentifier");
    let before = history_len(&service, &id).await;
    let (code, refused) = issue(&service, &id).await;
    assert_eq!(code, 400, "{refused}");
    let message = refused["error"].as_str().expect("an error");
    assert!(
        message.contains("rejectedIdentifier") && message.contains("refused"),
        "{message}"
    );
    assert_eq!(second_front.requests(FrontTarget::NewOrder), 0);
    assert_eq!(history_len(&service, &id).await, before, "nothing recorded");
    let (_, view) = service.get(&format!("/domains/{id}")).await;
    assert_eq!(view["status"], "verified", "{view}");
}

/// The number of seconds in a `429`'s "retry after N s".
fn retry_after_secs(refused: &Value) -> u64 {
    let message = refused["error"].as_str().expect("an error");
    let after = message.split("retry after ").nth(1).expect("a wait");
    after
        .split(' ')
        .next()
        .and_then(|secs| secs.parse().ok())
        .unwrap_or_else(|| panic!("no seconds in {message}"))
}

async fn a_retry_after_of_any_size_is_bounded_and_the_scheduler_goes_on(kind: StoreKind) {
    let (pebble, _database, mut env) = pebble_and_database(kind).await;
    let front = CaFront::start(&pebble);
    let service = behind_front(&env, &front, "100/1h");
    let id = active_domain(&service, &pebble, "huge.retry-after.test").await;
    // The largest number a header can carry; Let's Encrypt's longest wait is a week.
    front.answer_rate_limited(FrontTarget::NewOrder, 1, Duration::from_secs(u64::MAX));
    let (code, refused) = service.post(&format!("/domains/{id}/renew"), None).await;
    assert_eq!(code, 429, "{refused}");
    let week = 7 * 24 * 3600;
    assert!(
        (week - 60..=week).contains(&retry_after_secs(&refused)),
        "bounded to a week: {refused}"
    );
    // The scheduler meets the same CA (a new process, which knows nothing of the last answer):
    // it must record the attempt, bounded, and keep ticking.
    let mut service = service;
    service.terminate();
    env.insert("RENEW_BEFORE".into(), "2000d".into());
    env.insert("RENEWAL_CHECK_INTERVAL".into(), "300ms".into());
    front.answer_rate_limited(FrontTarget::NewOrder, 1, Duration::from_secs(u64::MAX));
    let service = behind_front(&env, &front, "100/1h");
    let deadline = Instant::now() + Duration::from_secs(30);
    let view = loop {
        let (_, view) = service.get(&format!("/domains/{id}")).await;
        if view["renewal"]["attempts"].as_u64().unwrap_or(0) >= 1 {
            break view;
        }
        assert!(
            Instant::now() < deadline,
            "no attempt recorded: {view}\n{}",
            service.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let next = chrono::DateTime::parse_from_rfc3339(
        view["renewal"]["next_attempt_at"].as_str().expect("a time"),
    )
    .expect("RFC 3339");
    let wait = next.with_timezone(&chrono::Utc) - chrono::Utc::now();
    assert!(
        wait <= chrono::Duration::days(7) && wait > chrono::Duration::days(6),
        "the next attempt waits the CA's bounded word: {view}"
    );
    let (code, ready) = service.get("/readyz").await;
    assert_eq!(code, 200, "{ready}");
    assert!(!service.log().contains("panicked"), "{}", service.log());
}

/// A renewal whose new order takes the CA longer than `LEASE_TTL` to answer: the replica
/// starting it keeps its lease for as long as it works, so the other never places a second
/// order for the same renewal (every order the CA placed is one the domain recorded).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_ca_does_not_let_a_second_replica_place_the_same_renewal() {
    let (pebble, database, env) = pebble_and_database(StoreKind::Postgres).await;
    let id = {
        let service = Service::start(BINARY, &env);
        active_domain(&service, &pebble, "slow.renewal.test").await
    };
    let front = CaFront::start(&pebble);
    front.slow_down(FrontTarget::NewOrder, Duration::from_secs(6));
    let mut replicated = env.clone();
    replicated.remove("REPLICA_ID");
    replicated.insert("ACME_DIRECTORY".into(), front.directory_url());
    replicated.insert("RENEW_BEFORE".into(), "2000d".into());
    replicated.insert("RENEWAL_CHECK_INTERVAL".into(), "300ms".into());
    replicated.insert("LEASE_TTL".into(), "2s".into());
    replicated.insert("WEBHOOK_TIMEOUT".into(), "1s".into());
    let mut replicas = [
        Service::start(BINARY, &replicated),
        Service::start(BINARY, &replicated),
    ];
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, view) = replicas[0].get(&format!("/domains/{id}")).await;
        if view["renewal"]["in_progress"] == true {
            break;
        }
        assert!(Instant::now() < deadline, "no renewal started: {view}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Long enough for a second replica's order, had it sent one, to be placed.
    tokio::time::sleep(Duration::from_secs(8)).await;
    for replica in &mut replicas {
        replica.terminate();
    }
    let recorded = database
        .texts(&format!(
            "CAST(COUNT(*) AS TEXT) FROM events WHERE aggregate_id = '{id}' \
             AND event_type = 'RenewalRequested'"
        ))
        .await;
    let recorded: usize = recorded[0].parse().expect("a count");
    assert_eq!(recorded, 1);
    assert_eq!(
        front.orders_created(),
        recorded,
        "orders the CA placed against renewals recorded"
    );
}

crate::on_both_stores!(a_ca_that_does_not_answer_holds_back_no_key_destruction);

/// Renewals waiting on a CA that takes new orders and never answers (each waits out its 20 s
/// timeout) while a domain is removed: its keys are destroyed at the next tick, not after the
/// renewals give up.
async fn a_ca_that_does_not_answer_holds_back_no_key_destruction(kind: StoreKind) {
    let (pebble, database, env) = pebble_and_database(kind).await;
    let (renewing, gone) = {
        let service = Service::start(BINARY, &env);
        let mut renewing = Vec::new();
        for n in 0..3 {
            renewing.push(active_domain(&service, &pebble, &format!("r{n}.silent-ca.test")).await);
        }
        (
            renewing,
            active_domain(&service, &pebble, "gone.silent-ca.test").await,
        )
    };
    let front = CaFront::start(&pebble);
    front.slow_down(FrontTarget::NewOrder, Duration::from_secs(60));
    let mut silent = env.clone();
    silent.insert("ACME_DIRECTORY".into(), front.directory_url());
    silent.insert("RENEW_BEFORE".into(), "2000d".into());
    silent.insert("RENEWAL_CHECK_INTERVAL".into(), "300ms".into());
    let service = Service::start(BINARY, &silent);
    // The due renewals are with the CA, which holds them.
    let deadline = Instant::now() + Duration::from_secs(15);
    while front.requests(FrontTarget::NewOrder) < 1 {
        assert!(
            Instant::now() < deadline,
            "no renewal asked the CA\n{}",
            service.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(service.delete(&format!("/domains/{gone}")).await, 204);
    let removed = Instant::now();
    let destroyed = loop {
        let destroyed = database
            .texts(&format!(
                "CAST(COUNT(*) AS TEXT) FROM events WHERE aggregate_id = '{gone}' \
                 AND event_type = 'CertificateKeyDestroyed'"
            ))
            .await;
        if destroyed[0] != "0" {
            break removed.elapsed();
        }
        assert!(
            removed.elapsed() < Duration::from_secs(10),
            "the removed domain's key waited for the CA (it waits 20 s per order)\n{}",
            service.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(destroyed < Duration::from_secs(10));
    for id in &renewing {
        let (_, view) = service.get(&format!("/domains/{id}")).await;
        assert_eq!(
            view["renewal"]["in_progress"], false,
            "still waiting on the CA: {view}"
        );
    }
}
