//! Several replicas on one PostgreSQL: any replica serves any request, each pending order is
//! polled and finalized by exactly one replica, a dead or stalled replica's orders move on, and
//! one ACME account serves them all. SQLite mode stays single-process.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use futures::future::join_all;

use crate::support::{
    service_env, start_expecting_refusal, verified_domain, Pebble, PebbleOptions, Service,
    StoreKind, TestDatabase,
};

fn replica_env(pebble: &Pebble, database: &TestDatabase) -> HashMap<String, String> {
    let mut env = service_env(pebble, database);
    env.insert("LEASE_TTL".into(), "3s".into());
    // Each replica its own name.
    env.remove("REPLICA_ID");
    env.insert("POLL_TIMEOUT".into(), "5m".into());
    env
}

/// `order_id=…` of every "finalizing order" line in the logs, with how often each appears.
fn finalizations(logs: &[String]) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for log in logs {
        for line in log.lines().filter(|line| line.contains("finalizing order")) {
            if let Some(order) = line.split("order_id=").nth(1) {
                let order = order
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                *seen.entry(order).or_insert(0) += 1;
            }
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_issue_sixty_domains_and_survive_losing_one() {
    let pebble = Pebble::start(PebbleOptions::default());
    let database = TestDatabase::create(StoreKind::Postgres).await;
    let env = replica_env(&pebble, &database);
    let mut replicas: Vec<Service> = (0..3).map(|_| Service::start(&env)).collect();

    let mut started = Vec::new();
    for n in 0..60 {
        let replica = &replicas[n % 3];
        let id = verified_domain(replica, &pebble, &format!("r{n}.example.test")).await;
        let (code, body) = replica
            .post(&format!("/domains/{id}/issue-certificate"), None)
            .await;
        assert_eq!(code, 202, "{body}");
        started.push((id, body));
    }
    // Mid-flight: replica 0 holds the leases of a third of the orders, none finished.
    replicas[0].kill();
    for (_, body) in &started {
        pebble.set_txt(
            body["challenge_domain"].as_str().expect("domain"),
            body["expected_txt_value"].as_str().expect("value"),
        );
    }
    let deadline = Instant::now() + Duration::from_secs(180);
    for (id, _) in &started {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let view = replicas[1 + id.len() % 2]
            .wait_for_status(id, &["active", "failed"], remaining)
            .await;
        assert_eq!(view["status"], "active", "{view}");
    }
    for (id, _) in &started {
        let events = database.event_types(id).await;
        assert_eq!(
            events.iter().filter(|e| *e == "CertificateIssued").count(),
            1,
            "{id}: {events:?}"
        );
    }
    let logs: Vec<String> = replicas.iter().map(Service::log).collect();
    let finalized = finalizations(&logs);
    assert_eq!(finalized.len(), 60, "every order was finalized");
    assert!(
        finalized.values().all(|count| *count == 1),
        "each exactly once: {finalized:?}"
    );
    let spread: Vec<usize> = logs
        .iter()
        .map(|log| log.matches("finalizing order").count())
        .collect();
    println!("finalizations per replica (replica 0 was killed): {spread:?}");
    assert_eq!(spread[0], 0);
    assert_eq!(database.count("acme_accounts").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_stops_renewing_loses_its_orders_to_another() {
    let pebble = Pebble::start(PebbleOptions::default());
    let database = TestDatabase::create(StoreKind::Postgres).await;
    let env = replica_env(&pebble, &database);
    let stalled = Service::start(&env);
    let other = Service::start(&env);
    let id = verified_domain(&stalled, &pebble, "stall.example.test").await;
    let (code, body) = stalled
        .post(&format!("/domains/{id}/issue-certificate"), None)
        .await;
    assert_eq!(code, 202, "{body}");
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The replica holding the lease stops renewing (frozen, not dead).
    stalled.signal("STOP");
    let frozen_at = Instant::now();
    pebble.set_txt(
        body["challenge_domain"].as_str().expect("domain"),
        body["expected_txt_value"].as_str().expect("value"),
    );
    let view = other
        .wait_for_status(&id, &["active", "failed"], Duration::from_secs(60))
        .await;
    assert_eq!(view["status"], "active", "{view}");
    println!(
        "taken over and issued {:?} after the holder froze (LEASE_TTL 3 s)",
        frozen_at.elapsed()
    );

    // Woken up, the old holder finds the order done and the lease gone: it finalizes nothing.
    stalled.signal("CONT");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let logs = vec![stalled.log(), other.log()];
    let finalized = finalizations(&logs);
    assert_eq!(finalized.values().sum::<usize>(), 1, "{finalized:?}");
    assert_eq!(logs[0].matches("finalizing order").count(), 0);
    let events = database.event_types(&id).await;
    assert_eq!(
        events.iter().filter(|e| *e == "CertificateIssued").count(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_replicas_needing_an_account_at_once_register_one() {
    let pebble = Pebble::start(PebbleOptions::default());
    let database = TestDatabase::create(StoreKind::Postgres).await;
    let env = replica_env(&pebble, &database);
    let replicas: Vec<Service> = (0..10).map(|_| Service::start(&env)).collect();
    let mut ids = Vec::new();
    for (n, replica) in replicas.iter().enumerate() {
        ids.push(verified_domain(replica, &pebble, &format!("acct{n}.example.test")).await);
    }
    let paths: Vec<String> = ids
        .iter()
        .map(|id| format!("/domains/{id}/issue-certificate"))
        .collect();
    let answers = join_all(
        replicas
            .iter()
            .zip(&paths)
            .map(|(replica, path)| replica.post(path, None)),
    )
    .await;
    for (code, body) in &answers {
        assert_eq!(*code, 202, "{body}");
    }
    assert_eq!(database.count("acme_accounts").await, 1);
    let registered: usize = replicas
        .iter()
        .map(|replica| replica.log().matches("registered ACME account").count())
        .sum();
    assert_eq!(
        registered, 1,
        "one account registered with the CA across ten replicas"
    );
    let accounts: HashSet<String> = answers
        .iter()
        .map(|(_, body)| body["order_id"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(accounts.len(), 10, "ten distinct orders");
}

/// Reads the next NDJSON line of a following feed stream (chunks may split or join lines).
async fn next_feed_line(stream: &mut reqwest::Response, buffer: &mut Vec<u8>) -> serde_json::Value {
    loop {
        if let Some(end) = buffer.iter().position(|byte| *byte == b'\n') {
            let line: Vec<u8> = buffer.drain(..=end).collect();
            return serde_json::from_slice(&line).expect("a JSON line");
        }
        // A guard against hanging, not a measurement: no poll is due within the hour.
        let chunk = tokio::time::timeout(Duration::from_secs(60), stream.chunk())
            .await
            .expect("the next event arrives")
            .expect("the stream stays open")
            .expect("more bytes");
        buffer.extend_from_slice(&chunk);
    }
}

/// A commit on one replica wakes a stream following the feed on another at once, through
/// PostgreSQL's notification: the replicas poll the feed only hourly here, so nothing else
/// could deliver the events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_on_one_replica_wakes_a_feed_follower_on_another() {
    let pebble = Pebble::start(PebbleOptions::default());
    let database = TestDatabase::create(StoreKind::Postgres).await;
    let mut env = replica_env(&pebble, &database);
    env.insert("FEED_POLL_INTERVAL".into(), "1h".into());
    let writer = Service::start(&env);
    let reader = Service::start(&env);
    // One event first, so the stream has something to answer with at once.
    let (first, _, _) = writer.register("first.woken.example.test").await;
    let mut stream = reader
        .client
        .get(reader.url("/events?after=0&follow=true"))
        .header("accept", "application/x-ndjson")
        .send()
        .await
        .expect("GET");
    assert_eq!(stream.status(), 200);
    let mut buffer = Vec::new();
    let line = next_feed_line(&mut stream, &mut buffer).await;
    assert_eq!(line["aggregate_id"], first.as_str(), "{line}");

    // The reader's stream is now waiting; each commit on the writer must wake it.
    for round in 0..3 {
        let (id, _, _) = writer
            .register(&format!("n{round}.woken.example.test"))
            .await;
        let line = next_feed_line(&mut stream, &mut buffer).await;
        assert_eq!(line["aggregate_id"], id.as_str(), "{line}");
        assert_eq!(line["event_type"], "DomainRegistered", "{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_on_one_sqlite_file_refuses_to_start() {
    let database = TestDatabase::create(StoreKind::Sqlite).await;
    let env = crate::support::database_env(&database);
    let _first = Service::start(&env);
    let (status, log) = start_expecting_refusal(&env);
    assert!(!status.success());
    assert!(log.contains("another dns-handling process"), "{log}");
    assert!(log.contains("PostgreSQL"), "{log}");
}
