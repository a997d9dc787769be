//! Keeping the CA's limits before it has to say no, on both stores against Pebble: the
//! account's new-order budget answers `429` with `Retry-After` before the CA is asked, and
//! records nothing; on PostgreSQL two replicas share it; a name whose validations failed too
//! often waits; `GET /ca` shows where the budgets stand; bad budget settings stop the start.

use std::collections::HashMap;

use std::time::{Duration, Instant};

use dns_handling_testkit::{
    eab_key, pebble_and_database, service_env, start_expecting_refusal, verified_domain, CaFront,
    FrontTarget, Pebble, PebbleOptions, Service, StoreKind, TestDatabase,
};
use serde_json::Value;

use crate::BINARY;

crate::on_both_stores!(the_new_order_budget_answers_429_before_the_ca_is_asked_and_records_nothing);
crate::on_both_stores!(a_name_whose_validation_failed_too_often_waits_for_its_window);
crate::on_both_stores!(
    a_rate_limited_new_order_is_a_429_with_the_cas_retry_after_and_records_nothing
);
crate::on_both_stores!(a_finalization_the_ca_defers_waits_out_its_retry_after_then_completes);
crate::on_both_stores!(a_ca_that_requires_external_account_binding_gets_it);
crate::on_both_stores!(orders_ask_for_the_profile_the_ca_lists);
crate::on_both_stores!(
    a_first_ca_that_is_down_hands_the_order_to_the_next_and_renewals_start_from_the_first
);

/// The number of events in a domain's history, its health checks' aside.
pub(crate) async fn history_len(service: &Service, id: &str) -> usize {
    let (code, history) = service.get(&format!("/domains/{id}/events")).await;
    assert_eq!(code, 200, "{history}");
    // The order's events: a health check runs before every order, refused or not, and records
    // what it found when that changed (the first time, for a new domain). It is a fact about
    // the domain's DNS, not the order's.
    history
        .as_array()
        .expect("a list")
        .iter()
        .filter(|event| event["event_type"] != "HealthChanged")
        .count()
}

async fn the_new_order_budget_answers_429_before_the_ca_is_asked_and_records_nothing(
    kind: StoreKind,
) {
    let (pebble, _database, mut env) = pebble_and_database(kind).await;
    env.insert("ACME_NEW_ORDER_BUDGET".into(), "2/1h".into());
    let service = Service::start(BINARY, &env);
    for n in 0..2 {
        let id = verified_domain(&service, &pebble, &format!("d{n}.budget.test")).await;
        let (code, started, _) = post_with_retry_after(&service, &id).await;
        assert_eq!(code, 202, "{started}");
    }
    let id = verified_domain(&service, &pebble, "third.budget.test").await;
    let before = history_len(&service, &id).await;
    let (code, refused, retry_after) = post_with_retry_after(&service, &id).await;
    assert_eq!(code, 429, "{refused}");
    let message = refused["error"].as_str().expect("an error");
    assert!(message.contains("ACME_NEW_ORDER_BUDGET"), "{message}");
    let seconds: u64 = retry_after.expect("Retry-After").parse().expect("seconds");
    assert!((3000..=3600).contains(&seconds), "{seconds}");
    assert_eq!(history_len(&service, &id).await, before, "nothing recorded");
    let (_, view) = service.get(&format!("/domains/{id}")).await;
    assert_eq!(view["status"], "verified");

    let (code, ca) = service.get("/ca").await;
    assert_eq!(code, 200, "{ca}");
    assert_eq!(ca["new_orders"]["limit"], 2);
    assert_eq!(ca["new_orders"]["spent"], 2);
    assert_eq!(ca["new_orders"]["left"], 0);
    assert!(ca["new_orders"]["frees_at"].is_string(), "{ca}");
    let metrics = service.metrics().await;
    assert!(
        metrics.contains("dns_handling_ca_refusals_total{budget=\"new_orders\"} 1"),
        "{metrics}"
    );
}

/// `POST /domains/{id}/issue-certificate`: status, body and `Retry-After`.
async fn post_with_retry_after(service: &Service, id: &str) -> (u16, Value, Option<String>) {
    let response = reqwest::Client::new()
        .post(service.url(&format!("/domains/{id}/issue-certificate")))
        .send()
        .await
        .unwrap_or_else(|error| panic!("no answer: {error}\n{}", service.log()));
    let code = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let body = response.json().await.expect("JSON");
    (code, body, retry_after)
}

async fn a_name_whose_validation_failed_too_often_waits_for_its_window(kind: StoreKind) {
    let (pebble, _database, mut env) = pebble_and_database(kind).await;
    env.insert("ACME_FAILED_VALIDATION_BUDGET".into(), "1/1h".into());
    // The service looks records up at a DNS server of its own (a second challtestsrv) where
    // the test publishes the right value; the CA looks at its own, which never gets it: the
    // service tells the CA, and the CA's validation fails.
    let decoy = Pebble::start(PebbleOptions::default());
    env.insert("DNS_NAMESERVERS".into(), decoy.nameserver());
    let service = Service::start(BINARY, &env);
    let name = "unlucky.budget.test";
    let id = verified_domain(&service, &decoy, name).await;
    let (code, started) = service
        .post(&format!("/domains/{id}/issue-certificate"), None)
        .await;
    assert_eq!(code, 202, "{started}");
    decoy.set_txt(
        started["challenge_domain"].as_str().expect("a name"),
        started["expected_txt_value"].as_str().expect("a value"),
    );
    let view = service
        .wait_for_status(&id, &["failed"], Duration::from_secs(60))
        .await;
    assert_eq!(
        view["failure_reason"]["code"], "challenge_invalid",
        "{view}"
    );
    let _ = &pebble;
    let (code, retried) = service.post(&format!("/domains/{id}/retry"), None).await;
    assert_eq!(code, 200, "{retried}");

    let before = history_len(&service, &id).await;
    let (code, refused, retry_after) = post_with_retry_after(&service, &id).await;
    assert_eq!(code, 429, "{refused}");
    let message = refused["error"].as_str().expect("an error");
    assert!(
        message.contains(name) && message.contains("ACME_FAILED_VALIDATION_BUDGET"),
        "{message}"
    );
    assert!(retry_after.is_some());
    assert_eq!(history_len(&service, &id).await, before, "nothing recorded");
    let (_, ca) = service.get("/ca").await;
    let names = ca["failed_validations"]["names"].as_array().expect("names");
    assert!(
        names
            .iter()
            .any(|n| n["name"] == name && n["waiting"] == true),
        "{ca}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_the_new_order_budget() {
    let (pebble, _database, mut env) = pebble_and_database(StoreKind::Postgres).await;
    env.insert("ACME_NEW_ORDER_BUDGET".into(), "2/1h".into());
    let mut on_a = env.clone();
    on_a.insert("REPLICA_ID".into(), "replica-a".into());
    let mut on_b = env.clone();
    on_b.insert("REPLICA_ID".into(), "replica-b".into());
    let replica_a = Service::start(BINARY, &on_a);
    let replica_b = Service::start(BINARY, &on_b);
    let mut domains = Vec::new();
    for n in 0..4 {
        for replica in [&replica_a, &replica_b] {
            let name = format!("r{n}-{}.shared-budget.test", uuid_label());
            domains.push((replica, verified_domain(replica, &pebble, &name).await));
        }
    }
    // All at once, half on each replica: only a budget shared under one lock holds them to two.
    let asked = domains.iter().map(|(replica, id)| async move {
        replica
            .post(&format!("/domains/{id}/issue-certificate"), None)
            .await
    });
    let answers = futures::future::join_all(asked).await;
    let codes: Vec<u16> = answers.iter().map(|(code, _)| *code).collect();
    let placed = codes.iter().filter(|code| **code == 202).count();
    let refused = codes.iter().filter(|code| **code == 429).count();
    assert_eq!((placed, refused), (2, 6), "{codes:?}");
    let (_, ca) = replica_b.get("/ca").await;
    assert_eq!(ca["new_orders"]["spent"], 2, "{ca}");
}

/// A label no other test uses.
fn uuid_label() -> String {
    format!(
        "x{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    )
}

#[test]
fn bad_budget_and_binding_settings_stop_the_start_naming_the_setting() {
    for (setting, value) in [
        ("ACME_NEW_ORDER_BUDGET", "many"),
        ("ACME_NEW_ORDER_BUDGET", "300/0s"),
        ("ACME_FAILED_VALIDATION_BUDGET", "5 per hour"),
        ("ACME_EAB_KID", "kid-without-a-key"),
        (
            "ACME_FALLBACK_ISSUERS",
            r#"[{"directory": "ftp://ca.example/dir"}]"#,
        ),
        (
            "ACME_FALLBACK_ISSUERS",
            r#"[{"directory": "https://ca.example/dir", "eab_kid": "k"}]"#,
        ),
        ("ACME_FALLBACK_ISSUERS", "not json"),
    ] {
        let env: HashMap<String, String> = [
            (setting.to_owned(), value.to_owned()),
            ("DATABASE_URL".to_owned(), "sqlite::memory:".to_owned()),
        ]
        .into_iter()
        .collect();
        let (status, log) = start_expecting_refusal(BINARY, &env);
        assert!(!status.success());
        let named = if setting == "ACME_EAB_KID" {
            "ACME_EAB_HMAC_KEY"
        } else {
            setting
        };
        assert!(log.contains(named), "{setting}={value}: {log}");
    }
}

async fn a_rate_limited_new_order_is_a_429_with_the_cas_retry_after_and_records_nothing(
    kind: StoreKind,
) {
    let (pebble, _database, mut env) = pebble_and_database(kind).await;
    let front = CaFront::start(&pebble);
    env.insert("ACME_DIRECTORY".into(), front.directory_url());
    let service = Service::start(BINARY, &env);
    let id = verified_domain(&service, &pebble, "limited.ca.test").await;
    let before = history_len(&service, &id).await;
    front.answer_rate_limited(FrontTarget::NewOrder, 1, Duration::from_secs(120));

    let (code, refused, retry_after) = post_with_retry_after(&service, &id).await;
    assert_eq!(code, 429, "{refused}");
    let message = refused["error"].as_str().expect("an error");
    assert!(
        message.contains("rateLimited"),
        "the CA's problem: {message}"
    );
    let seconds: u64 = retry_after.expect("Retry-After").parse().expect("seconds");
    assert!(
        (100..=120).contains(&seconds),
        "the CA's Retry-After: {seconds}"
    );
    assert_eq!(
        front.requests(FrontTarget::NewOrder),
        1,
        "not asked again at once"
    );
    assert_eq!(history_len(&service, &id).await, before, "nothing recorded");
    // The CA's word holds for the CA, not for one request: asked again at once, the service
    // answers with the CA's time and does not ask it.
    let (code, refused, retry_after) = post_with_retry_after(&service, &id).await;
    assert_eq!(code, 429, "{refused}");
    let seconds: u64 = retry_after.expect("Retry-After").parse().expect("seconds");
    assert!((100..=120).contains(&seconds), "{seconds}");
    assert_eq!(front.requests(FrontTarget::NewOrder), 1, "not asked again");
    assert_eq!(history_len(&service, &id).await, before, "nothing recorded");
}

async fn a_finalization_the_ca_defers_waits_out_its_retry_after_then_completes(kind: StoreKind) {
    let (pebble, _database, mut env) = pebble_and_database(kind).await;
    let front = CaFront::start(&pebble);
    env.insert("ACME_DIRECTORY".into(), front.directory_url());
    let service = Service::start(BINARY, &env);
    let id = verified_domain(&service, &pebble, "deferred.ca.test").await;
    front.answer_unavailable(FrontTarget::Finalize, 1, Duration::from_secs(3));
    let (code, started, _) = post_with_retry_after(&service, &id).await;
    assert_eq!(code, 202, "{started}");
    let published = Instant::now();
    pebble.set_txt(
        started["challenge_domain"].as_str().expect("a name"),
        started["expected_txt_value"].as_str().expect("a value"),
    );
    let view = service
        .wait_for_status(&id, &["active", "failed"], Duration::from_secs(60))
        .await;
    assert_eq!(view["status"], "active", "{view}");
    assert!(
        published.elapsed() >= Duration::from_secs(3),
        "finalized again before the CA's Retry-After: {:?}",
        published.elapsed()
    );
    // One deferred finalization, one after the wait; Pebble rejects a nonce now and then, and
    // the client's retry of a rejected nonce is one more request, not a retry before the wait.
    let finalizations = front.requests(FrontTarget::Finalize);
    assert!(
        (2..=4).contains(&finalizations),
        "one deferred finalization, one after the wait: {finalizations}"
    );
}

async fn a_ca_that_requires_external_account_binding_gets_it(kind: StoreKind) {
    let key = b"an hmac key for the test account";
    let pebble = Pebble::start(PebbleOptions {
        external_account_binding: Some(vec![("kid-1".into(), eab_key(key))]),
        ..PebbleOptions::default()
    });
    let database = TestDatabase::create(kind).await;
    let env = service_env(&pebble, &database);

    // Without the binding the CA refuses the account, and the error says what it wants: in
    // the log, beside the request id the client is given (the client reads no internal text).
    let service = Service::start(BINARY, &env);
    let id = verified_domain(&service, &pebble, "unbound.eab.test").await;
    let (code, refused, _) = post_with_retry_after(&service, &id).await;
    assert_eq!(code, 500, "{refused}");
    let message = refused["error"].as_str().expect("an error");
    let request_id = message
        .strip_prefix("internal error; request id ")
        .unwrap_or_else(|| panic!("{message}"));
    let log = service.log();
    let logged = log
        .lines()
        .find(|line| line.contains(request_id) && line.contains("internal error"))
        .unwrap_or_else(|| panic!("no line of request {request_id}:\n{log}"));
    assert!(
        logged.contains("requires External Account Binding"),
        "{logged}"
    );
    assert!(logged.contains("ACME_EAB_KID"), "{logged}");
    drop(service);

    let mut bound = env.clone();
    bound.insert("ACME_EAB_KID".into(), "kid-1".into());
    bound.insert("ACME_EAB_HMAC_KEY".into(), eab_key(key));
    let service = Service::start(BINARY, &bound);
    let (code, started, _) = post_with_retry_after(&service, &id).await;
    assert_eq!(code, 202, "{started}");
    let (code, ca) = service.get("/ca").await;
    assert_eq!(code, 200);
    assert_eq!(ca["external_account_binding"], true, "{ca}");
}

/// Pebble 2.4 lists no profiles: the front lists Let's Encrypt's and records what each new
/// order asks for (Pebble itself ignores the field).
async fn orders_ask_for_the_profile_the_ca_lists(kind: StoreKind) {
    let (pebble, _database, mut env) = pebble_and_database(kind).await;
    let front = CaFront::start(&pebble);
    front.profiles(&[
        ("classic", "the default"),
        ("shortlived", "certificates valid for about six days"),
    ]);
    env.insert("ACME_DIRECTORY".into(), front.directory_url());
    env.insert("ACME_PROFILE".into(), "shortlived".into());
    let service = Service::start(BINARY, &env);
    let id = verified_domain(&service, &pebble, "profiled.ca.test").await;
    let (code, started, _) = post_with_retry_after(&service, &id).await;
    assert_eq!(code, 202, "{started}");
    // Every new-order request asks for it (a retry after a rejected nonce is a second one).
    let asked = front.orders_profiles();
    assert!(!asked.is_empty(), "no new order reached the CA");
    assert!(
        asked
            .iter()
            .all(|profile| profile.as_deref() == Some("shortlived")),
        "{asked:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_the_ca_does_not_list_stops_the_start_with_what_it_lists() {
    let (pebble, _database, mut env) = pebble_and_database(StoreKind::Sqlite).await;
    env.insert("ACME_PROFILE".into(), "tlsserver".into());
    let (status, log) = start_expecting_refusal(BINARY, &env);
    assert!(!status.success());
    assert!(
        log.contains("ACME_PROFILE=tlsserver") && log.contains("offers no profiles"),
        "{log}"
    );
    let front = CaFront::start(&pebble);
    front.profiles(&[("classic", "the default")]);
    env.insert("ACME_DIRECTORY".into(), front.directory_url());
    let (status, log) = start_expecting_refusal(BINARY, &env);
    assert!(!status.success());
    assert!(log.contains("it lists classic"), "{log}");
}

/// Publishes an order's TXT records where both CAs look (each Pebble validates at its own
/// challtestsrv).
fn publish_at_both(started: &Value, first: &Pebble, second: &Pebble) {
    for challenge in started["challenges"].as_array().expect("challenges") {
        let (at, value) = (
            challenge["challenge_domain"].as_str().expect("a name"),
            challenge["expected_txt_value"].as_str().expect("a value"),
        );
        first.set_txt(at, value);
        second.set_txt(at, value);
    }
}

async fn a_first_ca_that_is_down_hands_the_order_to_the_next_and_renewals_start_from_the_first(
    kind: StoreKind,
) {
    let (first, _database, mut env) = pebble_and_database(kind).await;
    let second = Pebble::start(PebbleOptions::default());
    let front = CaFront::start(&first);
    env.insert("ACME_DIRECTORY".into(), front.directory_url());
    env.insert(
        "ACME_CA_BUNDLE".into(),
        first.ca_bundle_with(&[&second]).display().to_string(),
    );
    env.insert(
        "ACME_FALLBACK_ISSUERS".into(),
        serde_json::json!([{ "directory": second.directory_url() }]).to_string(),
    );
    let service = Service::start(BINARY, &env);
    // Rate-limited at the first CA: the order goes to the second.
    let limited = verified_domain(&service, &first, "limited-first.ca.test").await;
    // A short Retry-After: the first CA is not asked again before it ends.
    front.answer_rate_limited(FrontTarget::NewOrder, 1, Duration::from_secs(1));
    let (code, started, _) = post_with_retry_after(&service, &limited).await;
    assert_eq!(code, 202, "{started}");
    let (_, history) = service.get(&format!("/domains/{limited}/events")).await;
    let requested = history
        .as_array()
        .expect("a list")
        .iter()
        .find(|event| event["event_type"] == "CertificateRequested")
        .expect("requested");
    assert_eq!(
        requested["payload"]["CertificateRequested"]["order"]["ca_directory"],
        second.directory_url()
    );
    // Down at the first CA: the same, and the certificate says which CA issued it.
    let id = verified_domain(&service, &first, "fallback.ca.test").await;
    front.down();

    let (code, started, _) = post_with_retry_after(&service, &id).await;
    assert_eq!(code, 202, "{started}");
    publish_at_both(&started, &first, &second);
    let view = service
        .wait_for_status(&id, &["active", "failed"], Duration::from_secs(60))
        .await;
    assert_eq!(view["status"], "active", "{view}");
    let (_, certificate) = service.get(&format!("/domains/{id}/certificate")).await;
    assert_eq!(
        certificate["ca_directory"],
        second.directory_url(),
        "{certificate}"
    );
    let (_, history) = service.get(&format!("/domains/{id}/events")).await;
    let issued = history
        .as_array()
        .expect("a list")
        .iter()
        .rev()
        .find(|event| event["event_type"] == "CertificateIssued")
        .expect("issued");
    assert_eq!(
        issued["payload"]["CertificateIssued"]["certificate"]["ca_directory"],
        second.directory_url()
    );

    // Back up: the renewal goes to the first CA again (once the moment it is not asked after
    // failing to answer has passed).
    front.up();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let old = certificate["serial"].clone();
    let (code, renewing) = service.post(&format!("/domains/{id}/renew"), None).await;
    assert_eq!(code, 202, "{renewing}");
    publish_at_both(&renewing, &first, &second);
    let deadline = Instant::now() + Duration::from_secs(60);
    let renewed = loop {
        let (_, now) = service.get(&format!("/domains/{id}/certificate")).await;
        if now["serial"] != old {
            break now;
        }
        assert!(Instant::now() < deadline, "not renewed\n{}", service.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(renewed["ca_directory"], front.directory_url(), "{renewed}");
}
