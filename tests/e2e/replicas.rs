//! Several replicas on one PostgreSQL: any replica serves any request, each pending order is
//! polled and finalized by exactly one replica, a dead or stalled replica's orders move on, and
//! one ACME account serves them all. SQLite mode stays single-process.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use dns_handling_testkit::{
    sample, service_env, start_expecting_refusal, verified_domain, Pebble, PebbleOptions, Service,
    StoreKind, TestDatabase,
};
use futures::future::join_all;

use crate::BINARY;

fn replica_env(pebble: &Pebble, database: &TestDatabase) -> HashMap<String, String> {
    let mut env = service_env(pebble, database);
    env.insert("LEASE_TTL".into(), "3s".into());
    env.insert("WEBHOOK_TIMEOUT".into(), "2s".into());
    // Each replica its own name.
    env.remove("REPLICA_ID");
    env.insert("POLL_TIMEOUT".into(), "5m".into());
    env
}

/// `env` with the replica named `name`, so that its leases can be told apart in `order_leases`.
fn named(env: &HashMap<String, String>, name: &str) -> HashMap<String, String> {
    let mut env = env.clone();
    env.insert("REPLICA_ID".into(), name.into());
    env
}

/// Finalize requests this replica has sent to the CA, as `(ok, error)`, from its `/metrics`:
/// the counter is kept whatever the log level.
async fn finalize_requests(replica: &Service) -> (f64, f64) {
    let metrics = replica.metrics().await;
    let count = |outcome: &str| {
        sample(
            &metrics,
            &format!(
                "dns_handling_acme_requests_total{{endpoint=\"finalize\",outcome=\"{outcome}\"}}"
            ),
        )
        // A labelled counter appears once it is first counted.
        .unwrap_or(0.0)
    };
    (count("ok"), count("error"))
}

/// The replica holding the lease of `domain_id`'s order, once one does (`order_leases`).
async fn lease_holder(database: &TestDatabase, domain_id: &str) -> String {
    assert!(!domain_id.contains('\''), "ids are quoted into SQL here");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let owners = database
            .texts(&format!(
                "owner FROM order_leases WHERE domain_id = '{domain_id}'"
            ))
            .await;
        if let [owner] = owners.as_slice() {
            return owner.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no replica took the lease of {domain_id}'s order within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_issue_sixty_domains_and_survive_losing_one() {
    // Exactly one finalize request per order is counted below: Pebble's random rejection of
    // nonces (5 % by default, tested elsewhere) would fail one now and then (CI: a badNonce
    // on a finalize counted as its error).
    let pebble = Pebble::start(PebbleOptions {
        nonce_reject_percent: Some(0),
        ..PebbleOptions::default()
    });
    let database = TestDatabase::create(StoreKind::Postgres).await;
    let env = replica_env(&pebble, &database);
    let names = ["replica-0", "replica-1", "replica-2"];
    let mut replicas: Vec<Service> = names
        .iter()
        .map(|name| Service::start(BINARY, &named(&env, name)))
        .collect();

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
    // Mid-flight: every order is held by a replica, replica 0 among them, none finished (no
    // challenge record is published yet), so replica 0 has finalized nothing when it dies.
    for (id, _) in &started {
        lease_holder(&database, id).await;
    }
    let held_by_0 = database
        .count("order_leases WHERE owner = 'replica-0'")
        .await;
    assert!(held_by_0 > 0, "replica 0 holds no order: nothing to lose");
    assert_eq!(finalize_requests(&replicas[0]).await, (0.0, 0.0));
    replicas[0].kill();
    for (_, body) in &started {
        pebble.set_txt(
            body["challenge_domain"].as_str().expect("domain"),
            body["expected_txt_value"].as_str().expect("value"),
        );
    }
    // Any replica serves any request: the survivors take turns answering.
    let deadline = Instant::now() + Duration::from_secs(180);
    for (n, (id, _)) in started.iter().enumerate() {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let view = replicas[1 + n % 2]
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
    // Each of the 60 issued orders needed at least one finalize request, and replica 0 sent
    // none: 60 requests in all from the survivors means exactly one per order.
    let mut spread = Vec::new();
    for replica in &replicas[1..] {
        spread.push(finalize_requests(replica).await);
    }
    println!(
        "finalize requests (ok, error) of replicas 1 and 2, {held_by_0} orders taken over from \
         replica 0: {spread:?}"
    );
    let ok: f64 = spread.iter().map(|(ok, _)| ok).sum();
    let failed: f64 = spread.iter().map(|(_, error)| error).sum();
    let failures: Vec<String> = replicas[1..]
        .iter()
        .flat_map(|replica| {
            replica
                .log()
                .lines()
                .filter(|line| line.contains("ACME step failed"))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!((ok, failed), (60.0, 0.0), "{spread:?} {failures:#?}");
    assert_eq!(database.count("acme_accounts").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_stops_renewing_loses_its_orders_to_another() {
    let pebble = Pebble::start(PebbleOptions::default());
    let database = TestDatabase::create(StoreKind::Postgres).await;
    let env = replica_env(&pebble, &database);
    let mut replicas = HashMap::from([
        (
            "replica-a",
            Service::start(BINARY, &named(&env, "replica-a")),
        ),
        (
            "replica-b",
            Service::start(BINARY, &named(&env, "replica-b")),
        ),
    ]);
    let id = verified_domain(&replicas["replica-a"], &pebble, "stall.example.test").await;
    let (code, body) = replicas["replica-a"]
        .post(&format!("/domains/{id}/issue-certificate"), None)
        .await;
    assert_eq!(code, 202, "{body}");

    // Whichever replica took the lease (usually the one asked, but the other one's scan for
    // unheld orders may win) is the one that stops renewing (frozen, not dead).
    let holder_name = lease_holder(&database, &id).await;
    let stalled = replicas
        .remove(holder_name.as_str())
        .unwrap_or_else(|| panic!("the lease is held by an unknown replica {holder_name:?}"));
    let (_, other) = replicas.into_iter().next().expect("the other replica");
    stalled
        .wait_for_metric(LIVE_POLLERS, Duration::from_secs(10), |live| live == 1.0)
        .await;
    assert_eq!(other.metric(LIVE_POLLERS).await, Some(0.0));
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
        "taken over from {holder_name} and issued {:?} after it froze (LEASE_TTL 3 s)",
        frozen_at.elapsed()
    );
    assert_eq!(finalize_requests(&other).await, (1.0, 0.0));

    // Woken up, the old holder finds its lease gone and the order done: its poller stops
    // (so nothing of it can talk to the CA later), and it has finalized nothing.
    stalled.signal("CONT");
    stalled
        .wait_for_metric(LIVE_POLLERS, Duration::from_secs(10), |live| live == 0.0)
        .await;
    assert_eq!(finalize_requests(&stalled).await, (0.0, 0.0));
    assert_eq!(finalize_requests(&other).await, (1.0, 0.0));
    let events = database.event_types(&id).await;
    assert_eq!(
        events.iter().filter(|e| *e == "CertificateIssued").count(),
        1
    );
}

/// The gauge of order pollers alive in a process.
const LIVE_POLLERS: &str = "dns_handling_live_pollers";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_replicas_needing_an_account_at_once_register_one() {
    let pebble = Pebble::start(PebbleOptions::default());
    let database = TestDatabase::create(StoreKind::Postgres).await;
    let mut env = replica_env(&pebble, &database);
    // Ten replicas starting at once share one server's connections with the tests beside them:
    // a request may wait longer than the default 2 s for one (a 503 failed this test once on
    // a loaded machine), which is not what this test is about.
    env.insert("STORE_TIMEOUT".into(), "15s".into());
    // Ten pools of the default 16 would be more than the server's 100 connections, and the
    // tests beside this one need some.
    env.insert("STORE_CONNECTIONS".into(), "4".into());
    let replicas: Vec<Service> = (0..10).map(|_| Service::start(BINARY, &env)).collect();
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
    let writer = Service::start(BINARY, &env);
    let reader = Service::start(BINARY, &env);
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
    let env = dns_handling_testkit::database_env(&database);
    let _first = Service::start(BINARY, &env);
    let (status, log) = start_expecting_refusal(BINARY, &env);
    assert!(!status.success());
    assert!(log.contains("another dns-handling process"), "{log}");
    assert!(log.contains("PostgreSQL"), "{log}");
}
