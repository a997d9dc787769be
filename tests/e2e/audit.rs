//! The event log as a product: per-domain history, the gap-free global feed, projections that
//! cannot drift, replay, point-in-time reads, tamper evidence, export, and old event versions.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use cqrs_es::persist::PersistedEventStore;
use cqrs_es::CqrsFramework;
use dns_handling::adapters::event_repository::{EventRepository, Upcasters};
use dns_handling::adapters::store::Store;
use dns_handling::domain::aggregate::{CustomDomain, CustomDomainCommand};
use dns_handling::domain::domain_name::DomainName;
use dns_handling_events::chain::{event_hash, ChainedContent, GENESIS, HASH_KEY, PREV_HASH_KEY};
use dns_handling_events::{CertificateKeyType, OrderDetails};
use dns_handling_testkit::{
    active_domain, database_env, pebble_and_database, run_command, Service, StoreKind, TestDatabase,
};
use serde_json::{json, Value};

use crate::BINARY;

crate::on_both_stores!(concurrent_writers_and_a_tailing_reader_agree_on_the_feed);
crate::on_both_stores!(history_feed_replay_audit_and_export_tell_the_same_story);
crate::on_both_stores!(a_view_lost_between_commit_and_update_is_caught_up);
crate::on_both_stores!(a_version_1_history_is_read_through_the_upcasters_and_resumed);

const WRITERS: usize = 16;
const DOMAINS: usize = 200;

/// A past deadline, so the aggregate accepts `TimedOut` at once.
fn order(n: usize, round: usize) -> OrderDetails {
    OrderDetails {
        order_id: format!("order-{n}-{round}"),
        order_url: format!("https://ca.test/order/{n}/{round}"),
        names: vec![format!("d{n}.example.test")],
        challenges: vec![dns_handling_events::OrderChallenge {
            identifier: format!("d{n}.example.test"),
            challenge_url: format!("https://ca.test/chall/{n}/{round}"),
            challenge_domain: format!("_acme-challenge.d{n}.example.test."),
            expected_txt_value: "digest".into(),
            delegated_to: None,
        }],
        account_id: "https://ca.test/acct/1".into(),
        poll_interval_ms: 1000,
        deadline: Utc::now() - chrono::Duration::seconds(1),
        key_type: CertificateKeyType::Rsa2048,
        validation: dns_handling_events::Validation::Manual,
        delegation_problem: None,
        ca_directory: String::new(),
    }
}

async fn concurrent_writers_and_a_tailing_reader_agree_on_the_feed(kind: StoreKind) {
    let database = TestDatabase::create(kind).await;
    let store = Store::connect(&database.url).await.expect("store");
    store.migrate().await.expect("migrate");
    let cqrs = Arc::new(CqrsFramework::new(
        PersistedEventStore::<_, CustomDomain>::new_event_store(EventRepository::new(
            store.clone(),
        ))
        .with_upcasters(vec![Box::new(Upcasters)]),
        vec![],
        Default::default(),
    ));
    let writers_done = Arc::new(std::sync::atomic::AtomicBool::new(false));

    // The reader resumes from its last position again and again while the writers commit.
    let reader = {
        let store = store.clone();
        let done = writers_done.clone();
        tokio::spawn(async move {
            let mut seen: Vec<(i64, String, i64)> = Vec::new();
            let mut after = 0;
            loop {
                let finished = done.load(std::sync::atomic::Ordering::SeqCst);
                let page = store.events_after(after, 37).await.expect("read the feed");
                if let Some(last) = page.last() {
                    after = last.position;
                }
                let empty = page.is_empty();
                seen.extend(
                    page.into_iter()
                        .map(|e| (e.position, e.aggregate_id, e.sequence)),
                );
                if finished && empty {
                    return seen;
                }
            }
        })
    };

    let writers = (0..WRITERS).map(|writer| {
        let cqrs = cqrs.clone();
        tokio::spawn(async move {
            for n in (writer..DOMAINS).step_by(WRITERS) {
                let id = format!("domain-{n:04}");
                let command = CustomDomainCommand::RegisterDomain {
                    domain_name: DomainName::parse(&format!("d{n}.example.test")).expect("name"),
                    verification_token: "token".into(),
                    verification_record_name: format!("_acme-challenge.d{n}.example.test."),
                    alt_names: Default::default(),
                    tenant: None,
                    at: Utc::now(),
                };
                cqrs.execute(&id, command).await.expect("register");
                let verify = CustomDomainCommand::VerifyOwnership {
                    observed_values: vec!["token".into()],
                    delegation: None,
                    at: Utc::now(),
                };
                cqrs.execute(&id, verify).await.expect("verify");
                for round in 0..2 {
                    let request = CustomDomainCommand::RequestCertificate {
                        order: order(n, round),
                        at: Utc::now(),
                    };
                    cqrs.execute(&id, request).await.expect("request");
                    let timed_out = CustomDomainCommand::TimedOut {
                        order_id: format!("order-{n}-{round}"),
                        unseen_names: vec![format!("d{n}.example.test")],
                        at: Utc::now(),
                    };
                    cqrs.execute(&id, timed_out).await.expect("time out");
                    let retry = CustomDomainCommand::RetryIssuance { at: Utc::now() };
                    cqrs.execute(&id, retry).await.expect("retry");
                }
            }
        })
    });
    for writer in futures::future::join_all(writers).await {
        writer.expect("writer");
    }
    writers_done.store(true, std::sync::atomic::Ordering::SeqCst);
    let seen = reader.await.expect("reader");

    let stored = database
        .texts("CAST(position AS TEXT) || ' ' || aggregate_id || ' ' || CAST(sequence AS TEXT) FROM events ORDER BY position")
        .await;
    assert_eq!(stored.len(), DOMAINS * 8, "every command's event is stored");
    let seen_text: Vec<String> = seen
        .iter()
        .map(|(position, id, sequence)| format!("{position} {id} {sequence}"))
        .collect();
    assert_eq!(
        seen_text, stored,
        "the reader saw exactly the stored events, in order"
    );
    let unique: HashSet<(String, i64)> =
        seen.iter().map(|(_, id, seq)| (id.clone(), *seq)).collect();
    assert_eq!(unique.len(), seen.len(), "no event twice");
    assert!(
        seen.windows(2).all(|pair| pair[0].0 < pair[1].0),
        "positions increase"
    );
}

async fn views(database: &TestDatabase) -> Vec<String> {
    let mut rows = database
        .texts("id || payload FROM domain_views ORDER BY id")
        .await;
    rows.extend(
        database
            .texts("domain_id || payload FROM certificate_views ORDER BY domain_id")
            .await,
    );
    rows
}

async fn history_feed_replay_audit_and_export_tell_the_same_story(kind: StoreKind) {
    let (pebble, database, mut env) = pebble_and_database(kind).await;
    env.insert("POLL_TIMEOUT".into(), "2s".into());
    // Following streams poll only hourly: the follow below is woken by the commit itself.
    env.insert("FEED_POLL_INTERVAL".into(), "1h".into());
    let mut service = Service::start(BINARY, &env);

    // A mixed workload: one pending, one verified, one failed and retried, one removed, two
    // active; and a moment to ask about later.
    service.register("pending.example.test").await;
    let (verified, record, token) = service.register("verified.example.test").await;
    pebble.set_txt(&record, &token);
    let response = service
        .client
        .post(service.url(&format!("/domains/{verified}/verify")))
        .header("x-request-id", "audit-test-request-1")
        .send()
        .await
        .expect("verify");
    assert_eq!(response.status().as_u16(), 200);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let moment_verified = Utc::now();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let first = active_domain(&service, &pebble, "one.example.test").await;
    let (failed, record, token) = service.register("failed.example.test").await;
    pebble.set_txt(&record, &token);
    service
        .post(&format!("/domains/{failed}/verify"), None)
        .await;
    service
        .post(&format!("/domains/{failed}/issue-certificate"), None)
        .await;
    service
        .wait_for_status(&failed, &["failed"], Duration::from_secs(30))
        .await;
    service
        .post(&format!("/domains/{failed}/retry"), None)
        .await;
    let (removed, _, _) = service.register("removed.example.test").await;
    assert_eq!(service.delete(&format!("/domains/{removed}")).await, 204);
    let second = active_domain(&service, &pebble, "two.example.test").await;

    // History: in order, chained, with who did it.
    let (code, history) = service.get(&format!("/domains/{verified}/events")).await;
    assert_eq!(code, 200, "{history}");
    let history = history.as_array().expect("a list").clone();
    assert_eq!(history.len(), 2);
    assert_eq!(history[0]["event_type"], "DomainRegistered");
    assert_eq!(history[1]["event_type"], "OwnershipVerified");
    assert_eq!(history[1]["event_version"], "2.0");
    assert_eq!(history[1]["metadata"]["request_id"], "audit-test-request-1");
    assert_eq!(history[1]["metadata"]["role"], "admin");
    assert_eq!(history[1]["prev_hash"], history[0]["hash"]);
    assert!(history[0]["recorded_at"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    let (code, removed_history) = service.get(&format!("/domains/{removed}/events")).await;
    assert_eq!(code, 200, "a removed domain keeps its history");
    assert_eq!(removed_history.as_array().map(Vec::len), Some(2));
    let (code, _) = service.get("/domains/nope/events").await;
    assert_eq!(code, 404);

    // Point in time.
    let as_of = |at: chrono::DateTime<Utc>| {
        format!(
            "/domains/{verified}?as_of={}",
            at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                .replace('+', "%2B")
        )
    };
    let (code, then) = service.get(&as_of(moment_verified)).await;
    assert_eq!(code, 200, "{then}");
    assert_eq!(then["status"], "verified");
    let (_, first_then) = service
        .get(&format!(
            "/domains/{first}?as_of={}",
            moment_verified.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        ))
        .await;
    assert_eq!(
        first_then["error"]
            .as_str()
            .map(|e| e.contains("did not exist")),
        Some(true),
        "{first_then}"
    );
    let (_, first_now) = service
        .get(&format!(
            "/domains/{first}?as_of={}",
            Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        ))
        .await;
    assert_eq!(first_now["status"], "active", "{first_now}");
    let (code, body) = service
        .get(&format!("/domains/{first}?as_of=yesterday"))
        .await;
    assert_eq!(code, 400, "{body}");

    // The feed, page by page, equals the store; NDJSON says the same.
    let total = database.count("events").await as usize;
    let mut paged: Vec<Value> = Vec::new();
    let mut after = 0;
    loop {
        let (code, page) = service.get(&format!("/events?after={after}&limit=3")).await;
        assert_eq!(code, 200, "{page}");
        let items = page["items"].as_array().expect("items").clone();
        if items.is_empty() {
            break;
        }
        after = page["next_after"].as_i64().expect("next_after");
        paged.extend(items);
    }
    assert_eq!(paged.len(), total);
    let ndjson = service
        .client
        .get(service.url("/events?after=0"))
        .header("accept", "application/x-ndjson")
        .send()
        .await
        .expect("GET")
        .text()
        .await
        .expect("body");
    let streamed: Vec<Value> = ndjson
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect();
    assert_eq!(streamed, paged);

    // Following: a new event arrives on an open stream, woken by its commit (no poll is due).
    let last = paged
        .last()
        .and_then(|e| e["position"].as_i64())
        .expect("position");
    let mut follow = service
        .client
        .get(service.url(&format!("/events?after={last}&follow=true")))
        .header("accept", "application/x-ndjson")
        .send()
        .await
        .expect("GET");
    service.register("late.example.test").await;
    let chunk = tokio::time::timeout(Duration::from_secs(10), follow.chunk())
        .await
        .expect("the new event arrives")
        .expect("a chunk")
        .expect("bytes");
    let line: Value =
        serde_json::from_slice(chunk.split(|b| *b == b'\n').next().expect("a line")).expect("JSON");
    assert_eq!(line["event_type"], "DomainRegistered");
    drop(follow);

    // Export writes the same feed.
    let (status, exported, stderr) = run_command(BINARY, &env, &["export", "--after", "0"]);
    assert!(status.success(), "{stderr}");
    assert_eq!(exported.lines().count(), total + 1);
    let (status, tail, _) = run_command(BINARY, &env, &["export", "--after", &last.to_string()]);
    assert!(status.success());
    assert_eq!(tail.lines().count(), 1);

    // Every live view agrees with its history, checked while the service runs.
    let (status, report, stderr) = run_command(BINARY, &env, &["audit", "views"]);
    assert!(status.success(), "{report}{stderr}");
    assert!(report.contains(": 0 disagree"), "{report}");

    // Replay from zero rebuilds exactly the live views.
    service.kill();
    let live = views(&database).await;
    let (status, _, stderr) = run_command(BINARY, &env, &["replay"]);
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("replayed"), "{stderr}");
    assert_eq!(
        views(&database).await,
        live,
        "replayed views equal the live ones"
    );

    // Tamper evidence.
    let (status, report, _) = run_command(BINARY, &env, &["audit", "verify"]);
    assert!(status.success(), "{report}");
    assert!(report.contains(" 0 broken"), "{report}");
    // Its order (sequence 4: after the health check made before it, sequence 3).
    let original = database
        .texts(&format!(
            "CAST(payload AS TEXT) FROM events WHERE aggregate_id = '{second}' AND sequence = 4"
        ))
        .await
        .remove(0);
    let forged = original.replace("_acme-challenge", "_acme-forged");
    assert_ne!(forged, original);
    database
        .execute(&format!(
            "UPDATE events SET payload = '{forged}' WHERE aggregate_id = '{second}' AND sequence = 4"
        ))
        .await;
    let (status, report, _) = run_command(BINARY, &env, &["audit", "verify"]);
    assert!(!status.success(), "{report}");
    assert!(
        report.contains(&format!("BROKEN stream {second} at sequence 4 ")),
        "{report}"
    );
    assert_eq!(report.matches("BROKEN").count(), 1, "{report}");

    // A forged view, a view of a domain that never existed, and the view of the domain whose
    // history was forged above (it no longer follows from that history) are all reported.
    database
        .execute(&format!(
            "UPDATE domain_views SET payload = replace(payload, 'example.test', 'example.forged') \
             WHERE id = '{first}'"
        ))
        .await;
    database
        .execute(&format!(
            "INSERT INTO domain_views (id, domain_name, status, last_sequence, payload) \
             SELECT 'no-such-domain', 'none.example.test', status, last_sequence, payload \
             FROM domain_views WHERE id = '{second}'"
        ))
        .await;
    let (status, report, _) = run_command(BINARY, &env, &["audit", "views"]);
    assert!(!status.success(), "{report}");
    assert!(
        report.contains(&format!("MISMATCH view {first}: differs from its history")),
        "{report}"
    );
    assert!(report.contains("domain_name"), "{report}");
    assert!(
        report.contains("MISMATCH view no-such-domain: a view of a domain without any event"),
        "{report}"
    );
    assert!(
        report.contains(&format!("MISMATCH view {second}: differs from its history")),
        "{report}"
    );
    assert_eq!(report.matches("MISMATCH").count(), 3, "{report}");
}

async fn a_view_lost_between_commit_and_update_is_caught_up(kind: StoreKind) {
    let (pebble, database, env) = pebble_and_database(kind).await;
    let mut service = Service::start(BINARY, &env);
    let (id, record, token) = service.register("lost.example.test").await;
    pebble.set_txt(&record, &token);
    let (code, _) = service.post(&format!("/domains/{id}/verify"), None).await;
    assert_eq!(code, 200);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    service.kill();

    // As if the process died after the commit and before the update: no view, checkpoint
    // before the domain's events.
    database
        .execute(&format!("DELETE FROM domain_views WHERE id = '{id}'"))
        .await;
    database
        .execute("UPDATE projection_checkpoints SET position = 0")
        .await;

    let service = Service::start(BINARY, &env);
    let (code, view) = service.get(&format!("/domains/{id}")).await;
    assert_eq!(code, 200, "{view}");
    assert_eq!(view["status"], "verified");

    // And while running: a view removed behind the service's back comes back within the
    // catch-up interval.
    database
        .execute(&format!("DELETE FROM domain_views WHERE id = '{id}'"))
        .await;
    database
        .execute("UPDATE projection_checkpoints SET position = 0")
        .await;
    service
        .wait_for_status_after_404(&id, "verified", Duration::from_secs(10))
        .await;
}

async fn a_version_1_history_is_read_through_the_upcasters_and_resumed(kind: StoreKind) {
    let database = TestDatabase::create(kind).await;
    let env = database_env(&database);
    // The schema exists once the binary has run.
    let (status, _, stderr) = run_command(BINARY, &env, &["export"]);
    assert!(status.success(), "{stderr}");
    let id = "legacy-domain";
    let rows = [
        (
            1,
            "DomainRegistered",
            "1.0",
            json!({"DomainRegistered": {"domain_name": "legacy.example.test", "verification_token": "t", "verification_record_name": "_acme-challenge.legacy.example.test.", "registered_at": "2026-01-01T00:00:00Z"}}),
        ),
        (
            2,
            "OwnershipVerified",
            "1.0",
            json!({"OwnershipVerified": {"observed_values": ["t"], "verified_at": "2026-01-01T00:01:00Z"}}),
        ),
        (
            3,
            "CertificateRequested",
            "1.0",
            json!({"CertificateRequested": {"order": {
            "order_id": "legacy-order", "order_url": "https://127.0.0.1:1/order/1",
            "challenge_url": "https://127.0.0.1:1/chall/1",
            "challenge_domain": "_acme-challenge.legacy.example.test.", "expected_txt_value": "v",
            "account_id": "https://127.0.0.1:1/acct/1", "poll_interval_ms": 100,
            "deadline": "2026-01-01T00:07:00Z"}, "requested_at": "2026-01-01T00:02:00Z"}}),
        ),
    ];
    // Chained as the service chained them when it wrote version 1.0: an unchained stream is a
    // broken one, and nothing more is appended to it.
    let mut prev_hash = GENESIS.to_owned();
    for (sequence, event_type, version, payload) in rows {
        let hash = event_hash(
            &prev_hash,
            &ChainedContent {
                aggregate_type: "CustomDomain",
                aggregate_id: id,
                sequence,
                event_type,
                event_version: version,
                payload: &payload,
                metadata: &json!({}),
            },
        );
        let metadata = json!({PREV_HASH_KEY: prev_hash, HASH_KEY: hash});
        database
            .execute(&format!(
                "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
                 VALUES ('CustomDomain', '{id}', {sequence}, '{event_type}', '{version}', '{payload}', '{metadata}')"
            ))
            .await;
        prev_hash = hash;
    }
    let service = Service::start(BINARY, &env);
    // The projection read the 1.0 order; the poller resumed it from the view; the aggregate
    // loaded the 1.0 event through the upcaster and accepted the timeout of its past deadline.
    let view = service
        .wait_for_status(id, &["failed"], Duration::from_secs(15))
        .await;
    assert_eq!(view["failure_reason"]["code"], "dns_timeout", "{view}");
    // The 1.0 registration reads as a domain without further names.
    assert_eq!(view["alt_names"], json!([]), "{view}");
    let (_, history) = service.get(&format!("/domains/{id}/events")).await;
    let versions: Vec<&str> = history
        .as_array()
        .expect("list")
        .iter()
        .map(|e| e["event_version"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        versions,
        ["1.0", "1.0", "1.0", "2.0"],
        "stored rows are never rewritten; the timeout is written at its current version"
    );
}
