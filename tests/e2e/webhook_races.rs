//! Webhooks where a step fails or two things meet: a secret recorded is always shown, even when
//! the endpoint cannot be read back after the commit; `DELETE` answers only once no send can
//! still go out; a receiver's `410` stops every send even while disabling the endpoint fails.
//! A sender whose lease lapsed records nothing (on PostgreSQL, the store in process; the case of
//! a result recorded meanwhile by the new holder is `adapters::store::webhooks`' own test).

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dns_handling_testkit::{
    pebble_and_database, Pebble, Service, StoreKind, TestDatabase, WebhookReceiver,
};
use serde_json::{json, Value};

use crate::BINARY;

crate::on_both_stores!(a_recorded_secret_is_shown_even_when_the_endpoint_cannot_be_read_back);
crate::on_both_stores!(delete_answers_only_once_a_send_under_way_has_ended);

/// Pebble, a database, and a service environment that may send to loopback.
async fn setup(kind: StoreKind) -> (Pebble, TestDatabase, HashMap<String, String>) {
    let (pebble, database, mut env) = pebble_and_database(kind).await;
    env.insert("WEBHOOK_ALLOW_PRIVATE_TARGETS".into(), "true".into());
    env.insert("WEBHOOK_RETRY_SCHEDULE".into(), "300ms,300ms,300ms".into());
    (pebble, database, env)
}

/// Creates an endpoint at `url` for `domain.removed`: its id.
async fn removals_endpoint(service: &Service, url: &str) -> String {
    let body = json!({"url": url, "events": ["domain.removed"]});
    let (code, created) = service.post("/webhooks", Some(body)).await;
    assert_eq!(code, 201, "{created}");
    created["id"].as_str().expect("an id").to_owned()
}

/// Registers `name` and removes it: one `domain.removed`.
async fn remove_new_domain(service: &Service, name: &str) {
    let (id, _, _) = service.register(name).await;
    assert_eq!(service.delete(&format!("/domains/{id}")).await, 204);
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64()
}

async fn a_recorded_secret_is_shown_even_when_the_endpoint_cannot_be_read_back(kind: StoreKind) {
    let (_pebble, database, env) = setup(kind).await;
    let service = Service::start(BINARY, &env);
    let (code, kept) = service
        .post("/webhooks", Some(json!({"url": "http://127.0.0.1:9/kept"})))
        .await;
    assert_eq!(code, 201, "{kept}");
    let kept = kept["id"].as_str().expect("an id").to_owned();

    // The message counts an endpoint's answer shows cannot be read for a while.
    database
        .execute("ALTER TABLE webhook_messages RENAME TO webhook_messages_away")
        .await;
    let (code, created) = service
        .post("/webhooks", Some(json!({"url": "http://127.0.0.1:9/new"})))
        .await;
    let (rotate_code, rotated) = service
        .post(&format!("/webhooks/{kept}/rotate-secret"), None)
        .await;
    database
        .execute("ALTER TABLE webhook_messages_away RENAME TO webhook_messages")
        .await;

    // The endpoint was created: its secret, shown only here, is in the answer.
    assert_eq!(code, 201, "{created}");
    assert!(
        created["secret"]
            .as_str()
            .is_some_and(|s| s.starts_with("whsec_")),
        "{created}"
    );
    assert_eq!(created["pending_messages"], 0, "{created}");
    let id = created["id"].as_str().expect("an id");
    let (code, stored) = service.get(&format!("/webhooks/{id}")).await;
    assert_eq!(code, 200, "{stored}");
    for field in ["url", "events", "status", "created_at", "description"] {
        assert_eq!(
            stored[field], created[field],
            "{field}: {stored} vs {created}"
        );
    }
    // The rotation could not be answered, so it was not recorded: the old secret stands alone.
    assert!(rotate_code >= 500, "{rotate_code} {rotated}");
    let (_, endpoint) = service.get(&format!("/webhooks/{kept}")).await;
    assert!(
        endpoint.get("previous_secret_valid_until").is_none(),
        "a rotation nobody was shown the secret of was recorded: {endpoint}"
    );
    let (code, rotated) = service
        .post(&format!("/webhooks/{kept}/rotate-secret"), None)
        .await;
    assert_eq!(code, 200, "{rotated}");
    assert!(
        rotated["previous_secret_valid_until"].is_string(),
        "{rotated}"
    );
}

async fn delete_answers_only_once_a_send_under_way_has_ended(kind: StoreKind) {
    let (_pebble, _database, env) = setup(kind).await;
    let service = Service::start(BINARY, &env);
    let receiver = WebhookReceiver::start();
    receiver.plan("/slow", &[], Duration::from_secs(3));
    let endpoint = removals_endpoint(&service, &receiver.url("/slow")).await;
    remove_new_domain(&service, "slow.races.test").await;
    // The send is under way: the receiver has it and holds its answer for 3 s.
    let arrived = receiver.wait_for("/slow", 1, Duration::from_secs(20)).await;
    assert!(arrived[0].answered_at.is_none(), "{arrived:?}");

    assert_eq!(service.delete(&format!("/webhooks/{endpoint}")).await, 204);
    let deleted_at = unix_now();
    let received = receiver.received("/slow");
    assert_eq!(received.len(), 1, "{received:?}");
    let answered_at = received[0]
        .answered_at
        .expect("the send had ended when DELETE answered");
    assert!(answered_at <= deleted_at, "{answered_at} > {deleted_at}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_410_stops_every_send_even_while_disabling_the_endpoint_fails() {
    let (_pebble, database, env) = setup(StoreKind::Sqlite).await;
    let service = Service::start(BINARY, &env);
    let receiver = WebhookReceiver::start();
    receiver.plan("/gone", &[410], Duration::ZERO);
    let endpoint = removals_endpoint(&service, &receiver.url("/gone")).await;
    // Recording the endpoint's disabling fails (as a store outage or a conflict would).
    database
        .execute(
            "CREATE TRIGGER refuse_disabling BEFORE INSERT ON webhook_events \
             WHEN NEW.event_type = 'EndpointDisabled' \
             BEGIN SELECT RAISE(ABORT, 'disabling refused by the test'); END",
        )
        .await;
    remove_new_domain(&service, "first.races.test").await;
    receiver.wait_for("/gone", 1, Duration::from_secs(20)).await;
    remove_new_domain(&service, "second.races.test").await;

    // Until disabling has failed twice (so the driver has had time to send the second), or the
    // second was sent.
    let failures = |log: &str| {
        log.matches("could not disable the webhook endpoint")
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while failures(&service.log()) < 2 && receiver.received("/gone").len() < 2 {
        assert!(Instant::now() < deadline, "neither a retry nor a send");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let received = receiver.received("/gone");
    assert_eq!(
        received.len(),
        1,
        "a message was sent to a receiver that answered 410: {received:?}"
    );

    // Once disabling can be recorded, the endpoint is disabled, and nothing more was sent.
    database.execute("DROP TRIGGER refuse_disabling").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let (_, body): (u16, Value) = service.get(&format!("/webhooks/{endpoint}")).await;
        if body["status"] == "disabled" || Instant::now() > deadline {
            break body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status["status"], "disabled", "{status}");
    assert_eq!(receiver.received("/gone").len(), 1);
}

/// On PostgreSQL an attempt is recorded only while its sender holds the endpoint's lease: a
/// replica whose lease lapsed mid-send, with the message still pending as it read it (the new
/// holder's send not recorded yet), must not record its result in the new holder's place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_whose_lease_lapsed_cannot_record_its_attempt() {
    use dns_handling::adapters::store::{
        AttemptRecord, EndpointMessages, MessageFate, NewMessage, Store,
    };

    let database = TestDatabase::create(StoreKind::Postgres).await;
    let store = Store::connect(&database.url).await.expect("store");
    store.migrate().await.expect("migrated");
    let (endpoint, lease) = ("e1", "e1#webhook");
    let message = NewMessage {
        message_id: "msg_1".into(),
        message_type: "domain.removed".into(),
        body: "{}".into(),
    };
    let made = EndpointMessages {
        endpoint_id: endpoint.into(),
        position: 1,
        messages: vec![message],
    };
    store
        .join_webhook_feed(endpoint, &[made], 1)
        .await
        .expect("stored");
    let claim = [(lease, "webhook")];
    let granted = store
        .claim_leases(&claim, "replica-a", Duration::from_millis(200))
        .await
        .expect("claimed");
    assert_eq!(granted, [lease]);
    let read_by_a = store
        .next_webhook_message(endpoint)
        .await
        .expect("read")
        .expect("one");
    // A stalls past its lease; B takes the endpoint over and reads the same message.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let granted = store
        .claim_leases(&claim, "replica-b", Duration::from_secs(30))
        .await
        .expect("claimed");
    assert_eq!(granted, [lease]);
    let read_by_b = store
        .next_webhook_message(endpoint)
        .await
        .expect("read")
        .expect("one");
    let attempt = |replica: &str, status: i64| AttemptRecord {
        endpoint_id: endpoint.into(),
        message_id: "msg_1".into(),
        position: 1,
        attempt: 1,
        attempted_at: chrono::Utc::now(),
        status_code: Some(status),
        latency_ms: 5,
        error: None,
        replica: replica.into(),
    };
    let retry = MessageFate::RetryAt(chrono::Utc::now() + chrono::Duration::minutes(5));
    let recorded = store
        .record_webhook_attempt(&read_by_a, &attempt("replica-a", 500), retry, lease)
        .await
        .expect("answered");
    assert!(!recorded, "a sender without the lease records nothing");
    let recorded = store
        .record_webhook_attempt(
            &read_by_b,
            &attempt("replica-b", 200),
            MessageFate::Delivered,
            lease,
        )
        .await
        .expect("answered");
    assert!(recorded, "the lease holder's result is recorded");
    assert_eq!(
        store
            .webhook_message_counts(endpoint)
            .await
            .expect("counts"),
        (0, 1, 0)
    );
}
