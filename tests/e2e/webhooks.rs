//! Webhooks end to end: a real HTTP receiver on loopback (`tests/webhook_receiver.py`) checks
//! every signature with PyPI's `standardwebhooks`, a verifier we did not write. On both stores:
//! issued and renewed certificates arrive signed; a receiver that fails twice gets the same
//! `webhook-id` a third time; `410` disables; a SIGKILL with deliveries pending loses none;
//! a rotated secret signs beside the new one; private targets are refused; a slow receiver
//! holds up nobody else. On PostgreSQL, two replicas send each message once. The CLI
//! (`dns-handling webhooks …`) takes an endpoint through its life against a live service.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use dns_handling_testkit::{
    active_domain, pebble_and_database, run_command, Pebble, ReceivedWebhook, Service, StoreKind,
    TestDatabase, WebhookReceiver,
};
use serde_json::{json, Value};

use crate::BINARY;

crate::on_both_stores!(issued_and_renewed_certificates_arrive_signed);
crate::on_both_stores!(a_receiver_failing_twice_gets_the_same_message_id_a_third_time);
crate::on_both_stores!(a_receiver_answering_410_disables_its_endpoint);
crate::on_both_stores!(deliveries_pending_at_a_sigkill_all_arrive_after_the_restart);
crate::on_both_stores!(a_rotated_secret_signs_beside_the_new_one_during_the_overlap);
crate::on_both_stores!(private_targets_and_bad_endpoints_are_refused_and_store_nothing);
crate::on_both_stores!(a_slow_receiver_does_not_delay_another_endpoint);

/// Pebble, a database, and a service environment that may send to loopback, retrying fast.
async fn setup(kind: StoreKind) -> (Pebble, TestDatabase, HashMap<String, String>) {
    let (pebble, database, mut env) = pebble_and_database(kind).await;
    env.insert("WEBHOOK_ALLOW_PRIVATE_TARGETS".into(), "true".into());
    env.insert("WEBHOOK_RETRY_SCHEDULE".into(), "300ms,300ms,300ms".into());
    (pebble, database, env)
}

/// Creates an endpoint for `url` sent `events` (every type when empty): its id and secret.
async fn create_endpoint(service: &Service, url: &str, events: &[&str]) -> (String, String) {
    let mut body = json!({"url": url, "description": "test receiver"});
    if !events.is_empty() {
        body["events"] = json!(events);
    }
    let (code, created) = service.post("/webhooks", Some(body)).await;
    assert_eq!(code, 201, "{created}");
    let secret = created["secret"].as_str().expect("a secret").to_owned();
    assert!(secret.starts_with("whsec_"), "{secret}");
    (created["id"].as_str().expect("an id").to_owned(), secret)
}

/// Registers `name` and removes it: one `domain.removed` each.
async fn remove_new_domain(service: &Service, name: &str) {
    let (id, _, _) = service.register(name).await;
    assert_eq!(service.delete(&format!("/domains/{id}")).await, 204);
}

/// Every delivery was signed with the secret at index `secret`, as the library checks it.
fn all_verified(received: &[ReceivedWebhook], secret: usize) {
    for delivery in received {
        assert!(
            delivery.verified_by.contains(&secret),
            "not verified: {:?} {:?}",
            delivery.verify_errors,
            delivery.raw_body
        );
    }
}

/// The deliveries of `kind` among `received`.
fn of_type<'a>(received: &'a [ReceivedWebhook], kind: &str) -> Vec<&'a ReceivedWebhook> {
    received.iter().filter(|d| d.body["type"] == kind).collect()
}

async fn issued_and_renewed_certificates_arrive_signed(kind: StoreKind) {
    let (pebble, _database, env) = setup(kind).await;
    let service = Service::start(BINARY, &env);
    let receiver = WebhookReceiver::start();
    let (endpoint, secret) = create_endpoint(&service, &receiver.url("/edge"), &[]).await;
    receiver.trust("/edge", &[&secret]);

    let id = active_domain(&service, &pebble, "hooked.webhooks.test").await;
    let received = receiver.wait_for("/edge", 1, Duration::from_secs(20)).await;
    let issued = of_type(&received, "certificate.issued");
    assert_eq!(issued.len(), 1, "{received:?}");
    let data = &issued[0].body["data"];
    assert_eq!(data["domain_id"], id.as_str());
    assert_eq!(data["names"], json!(["hooked.webhooks.test"]));
    assert_eq!(data["status"], "active");
    assert!(data["position"].as_i64().is_some_and(|p| p > 0), "{data}");
    let (_, certificate) = service.get(&format!("/domains/{id}/certificate")).await;
    assert_eq!(data["certificate"]["serial"], certificate["serial"]);
    assert!(!issued[0].raw_body.contains("PRIVATE KEY"), "never a key");
    assert_eq!(issued[0].headers["content-type"], "application/json");

    // The renewal asks for its records by webhook; the test publishes what the message says.
    let (code, renewing) = service.post(&format!("/domains/{id}/renew"), None).await;
    assert_eq!(code, 202, "{renewing}");
    let needs_records = renewing["challenges"]
        .as_array()
        .is_some_and(|c| !c.is_empty());
    if needs_records {
        let received = receiver.wait_for("/edge", 2, Duration::from_secs(20)).await;
        let asked = of_type(&received, "renewal.records_required");
        assert_eq!(asked.len(), 1, "{received:?}");
        for record in asked[0].body["data"]["records"]
            .as_array()
            .expect("records")
        {
            pebble.set_txt(
                record["name"].as_str().expect("a name"),
                record["value"].as_str().expect("a value"),
            );
        }
    }
    let expected = if needs_records { 3 } else { 2 };
    let received = receiver
        .wait_for("/edge", expected, Duration::from_secs(60))
        .await;
    let renewed = of_type(&received, "certificate.renewed");
    assert_eq!(renewed.len(), 1, "{received:?}");
    assert_ne!(
        renewed[0].body["data"]["certificate"]["serial"],
        data["certificate"]["serial"]
    );
    all_verified(&received, 0);
    let ids: BTreeSet<&str> = received.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids.len(), received.len(), "one message each");

    let (code, deliveries) = service
        .get(&format!("/webhooks/{endpoint}/deliveries"))
        .await;
    assert_eq!(code, 200, "{deliveries}");
    let attempts = deliveries["items"].as_array().expect("items");
    assert!(
        attempts.iter().all(|a| a["status_code"] == 200),
        "{deliveries}"
    );
    assert!(attempts.iter().all(|a| a["latency_ms"].as_i64().is_some()));
}

async fn a_receiver_failing_twice_gets_the_same_message_id_a_third_time(kind: StoreKind) {
    let (_pebble, _database, env) = setup(kind).await;
    let service = Service::start(BINARY, &env);
    let receiver = WebhookReceiver::start();
    receiver.plan("/flaky", &[500, 503], Duration::ZERO);
    let (endpoint, secret) =
        create_endpoint(&service, &receiver.url("/flaky"), &["domain.removed"]).await;
    receiver.trust("/flaky", &[&secret]);
    remove_new_domain(&service, "gone.webhooks.test").await;

    let received = receiver
        .wait_for("/flaky", 3, Duration::from_secs(20))
        .await;
    let statuses: Vec<u16> = received.iter().map(|d| d.status).collect();
    assert_eq!(statuses, [500, 503, 200]);
    assert!(
        received.iter().all(|d| d.id == received[0].id),
        "{received:?}"
    );
    assert!(received.iter().all(|d| d.raw_body == received[0].raw_body));
    all_verified(&received, 0);

    let (_, deliveries) = service
        .get(&format!("/webhooks/{endpoint}/deliveries"))
        .await;
    let codes: Vec<&Value> = deliveries["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|a| &a["status_code"])
        .collect();
    assert_eq!(
        codes,
        [&json!(200), &json!(503), &json!(500)],
        "newest first"
    );
    let (_, endpoint) = service.get(&format!("/webhooks/{endpoint}")).await;
    assert_eq!(endpoint["delivered_messages"], 1, "{endpoint}");
}

async fn a_receiver_answering_410_disables_its_endpoint(kind: StoreKind) {
    let (_pebble, _database, env) = setup(kind).await;
    let service = Service::start(BINARY, &env);
    let receiver = WebhookReceiver::start();
    receiver.plan("/gone", &[410], Duration::ZERO);
    let (endpoint, _) = create_endpoint(&service, &receiver.url("/gone"), &[]).await;
    remove_new_domain(&service, "first.webhooks.test").await;
    receiver.wait_for("/gone", 1, Duration::from_secs(20)).await;

    let mut status = Value::Null;
    for _ in 0..100 {
        let (_, body) = service.get(&format!("/webhooks/{endpoint}")).await;
        status = body["status"].clone();
        if status == "disabled" {
            assert!(body["disabled_reason"]
                .as_str()
                .is_some_and(|r| r.contains("410")));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, "disabled");
    remove_new_domain(&service, "second.webhooks.test").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(receiver.received("/gone").len(), 1, "nothing after the 410");
}

async fn deliveries_pending_at_a_sigkill_all_arrive_after_the_restart(kind: StoreKind) {
    let (_pebble, _database, env) = setup(kind).await;
    let mut service = Service::start(BINARY, &env);
    let receiver = WebhookReceiver::start();
    // Slow answers keep most messages pending when the service dies.
    receiver.plan("/slow", &[], Duration::from_millis(300));
    let (_, secret) = create_endpoint(&service, &receiver.url("/slow"), &["domain.removed"]).await;
    receiver.trust("/slow", &[&secret]);
    const DOMAINS: usize = 10;
    for n in 0..DOMAINS {
        remove_new_domain(&service, &format!("d{n}.crash.webhooks.test")).await;
    }
    receiver.wait_for("/slow", 2, Duration::from_secs(20)).await;
    service.kill();
    let arrived_before = receiver.received("/slow").len();
    assert!(
        arrived_before < DOMAINS,
        "the kill came too late to test anything"
    );

    let _service = Service::start(BINARY, &env);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let received = loop {
        let received = receiver.received("/slow");
        let distinct: BTreeSet<&str> = received.iter().map(|d| d.id.as_str()).collect();
        if distinct.len() == DOMAINS {
            break received;
        }
        assert!(std::time::Instant::now() < deadline, "{received:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    all_verified(&received, 0);
    // In feed order, and at most the one message in flight at the kill sent twice.
    let mut first_seen: Vec<&str> = Vec::new();
    for delivery in &received {
        if !first_seen.contains(&delivery.id.as_str()) {
            first_seen.push(&delivery.id);
        }
    }
    let positions: Vec<i64> = first_seen
        .iter()
        .map(|id| {
            let delivery = received.iter().find(|d| d.id == *id).expect("seen");
            delivery.body["data"]["position"]
                .as_i64()
                .expect("a position")
        })
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
    let duplicates = received.len() - DOMAINS;
    eprintln!("{duplicates} duplicate(s) after the SIGKILL");
    assert!(duplicates <= 1, "{received:?}");
}

async fn a_rotated_secret_signs_beside_the_new_one_during_the_overlap(kind: StoreKind) {
    let (_pebble, _database, env) = setup(kind).await;
    let service = Service::start(BINARY, &env);
    let receiver = WebhookReceiver::start();
    let (endpoint, first) = create_endpoint(&service, &receiver.url("/rotating"), &[]).await;
    let (code, rotated) = service
        .post(&format!("/webhooks/{endpoint}/rotate-secret"), None)
        .await;
    assert_eq!(code, 200, "{rotated}");
    let second = rotated["secret"].as_str().expect("a new secret").to_owned();
    assert_ne!(first, second);
    assert!(
        rotated["previous_secret_valid_until"].is_string(),
        "{rotated}"
    );
    receiver.trust("/rotating", &[&first, &second]);
    remove_new_domain(&service, "rotated.webhooks.test").await;

    let received = receiver
        .wait_for("/rotating", 1, Duration::from_secs(20))
        .await;
    assert_eq!(
        received[0].verified_by,
        [0, 1],
        "{:?}",
        received[0].verify_errors
    );
    assert_eq!(received[0].signature.split(' ').count(), 2);
    let (_, listed) = service.get(&format!("/webhooks/{endpoint}")).await;
    assert!(
        listed.get("secret").is_none(),
        "a secret is shown once: {listed}"
    );
}

async fn private_targets_and_bad_endpoints_are_refused_and_store_nothing(kind: StoreKind) {
    let (_pebble, _database, env) = pebble_and_database(kind).await;
    let service = Service::start(BINARY, &env);
    let refusals = [
        (json!({"url": "http://127.0.0.1:9/hook"}), "127.0.0.1"),
        (json!({"url": "http://localhost:9/hook"}), "localhost"),
        (
            json!({"url": "http://169.254.169.254/latest/meta-data"}),
            "169.254.169.254",
        ),
        (json!({"url": "http://[::1]:9/hook"}), "::1"),
        (json!({"url": "http://10.0.0.7/hook"}), "10.0.0.7"),
        (json!({"url": "ftp://hooks.example/a"}), "http or https"),
        (json!({"url": "not a url"}), "not a URL"),
        (
            json!({"url": "https://hooks.example/a", "events": ["certificate.bogus"]}),
            "unknown event type",
        ),
        (json!({"events": []}), "url"),
    ];
    for (body, says) in refusals {
        let (code, refused) = service.post("/webhooks", Some(body.clone())).await;
        assert_eq!(code, 400, "{body}: {refused}");
        let message = refused["error"].as_str().expect("an error");
        assert!(message.contains(says), "{body}: {message}");
    }
    let (code, listed) = service.get("/webhooks").await;
    assert_eq!(code, 200);
    assert_eq!(listed["items"], json!([]), "nothing stored");
    let (code, _) = service.get("/webhooks/no-such-endpoint").await;
    assert_eq!(code, 404);
}

async fn a_slow_receiver_does_not_delay_another_endpoint(kind: StoreKind) {
    let (_pebble, _database, env) = setup(kind).await;
    let service = Service::start(BINARY, &env);
    let receiver = WebhookReceiver::start();
    receiver.plan("/slow", &[], Duration::from_secs(5));
    create_endpoint(&service, &receiver.url("/slow"), &[]).await;
    create_endpoint(&service, &receiver.url("/fast"), &[]).await;
    remove_new_domain(&service, "both.webhooks.test").await;

    let mut fast = receiver.wait_for("/fast", 1, Duration::from_secs(10)).await;
    // The receiver records an arrival before it answers: wait for the answer too.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while fast[0].answered_at.is_none() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        fast = receiver.received("/fast");
    }
    let slow = receiver.wait_for("/slow", 1, Duration::from_secs(10)).await;
    let fast_done = fast[0].answered_at.expect("answered");
    assert!(
        slow[0]
            .answered_at
            .is_none_or(|slow_done| fast_done < slow_done),
        "the fast endpoint waited for the slow one: {fast:?} {slow:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_send_each_message_once_while_both_live() {
    let (_pebble, _database, env) = setup(StoreKind::Postgres).await;
    let mut on_a = env.clone();
    on_a.insert("REPLICA_ID".into(), "replica-a".into());
    let mut on_b = env.clone();
    on_b.insert("REPLICA_ID".into(), "replica-b".into());
    let replica_a = Service::start(BINARY, &on_a);
    let replica_b = Service::start(BINARY, &on_b);
    let receiver = WebhookReceiver::start();
    let (_, secret) = create_endpoint(&replica_a, &receiver.url("/shared"), &[]).await;
    receiver.trust("/shared", &[&secret]);
    const DOMAINS: usize = 10;
    for n in 0..DOMAINS {
        let replica = if n % 2 == 0 { &replica_a } else { &replica_b };
        remove_new_domain(replica, &format!("d{n}.replicas.webhooks.test")).await;
    }
    let received = receiver
        .wait_for("/shared", DOMAINS, Duration::from_secs(30))
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let received_now = receiver.received("/shared");
    assert_eq!(
        received_now.len(),
        DOMAINS,
        "each message once: {received_now:?}"
    );
    let ids: BTreeSet<&str> = received.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids.len(), DOMAINS);
    all_verified(&received_now, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_replicas_deliveries_move_on_to_the_other() {
    let (_pebble, _database, mut env) = setup(StoreKind::Postgres).await;
    env.insert("LEASE_TTL".into(), "2s".into());
    env.insert("WEBHOOK_TIMEOUT".into(), "1s".into());
    let mut on_a = env.clone();
    on_a.insert("REPLICA_ID".into(), "replica-a".into());
    let mut on_b = env.clone();
    on_b.insert("REPLICA_ID".into(), "replica-b".into());
    // A alone first, so that A holds the endpoint's lease.
    let mut replica_a = Service::start(BINARY, &on_a);
    let receiver = WebhookReceiver::start();
    receiver.plan("/moving", &[], Duration::from_millis(300));
    let (_, secret) =
        create_endpoint(&replica_a, &receiver.url("/moving"), &["domain.removed"]).await;
    receiver.trust("/moving", &[&secret]);
    remove_new_domain(&replica_a, "warm.moving.webhooks.test").await;
    receiver
        .wait_for("/moving", 1, Duration::from_secs(20))
        .await;
    let replica_b = Service::start(BINARY, &on_b);
    const DOMAINS: usize = 6;
    for n in 0..DOMAINS {
        remove_new_domain(&replica_b, &format!("d{n}.moving.webhooks.test")).await;
    }
    replica_a.kill();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let received = receiver.received("/moving");
        let distinct: BTreeSet<&str> = received.iter().map(|d| d.id.as_str()).collect();
        if distinct.len() == DOMAINS + 1 {
            all_verified(&received, 0);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {} arrived\n{}",
            distinct.len(),
            DOMAINS + 1,
            replica_b.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs `dns-handling webhooks <args> --server <service>`: (exit code, stdout, stderr).
fn webhooks_cli(service: &Service, args: &[&str]) -> (i32, String, String) {
    let server = service.url("");
    let mut all: Vec<&str> = vec!["webhooks"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--server", &server]);
    let (status, stdout, stderr) = run_command(BINARY, &HashMap::new(), &all);
    (status.code().unwrap_or(-1), stdout, stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_adds_lists_shows_rotates_and_removes_an_endpoint() {
    let (_pebble, _database, env) = setup(StoreKind::Sqlite).await;
    let service = Service::start(BINARY, &env);
    let receiver = WebhookReceiver::start();
    let url = receiver.url("/cli");

    let (code, stdout, stderr) = webhooks_cli(
        &service,
        &[
            "add",
            &url,
            "--event",
            "domain.removed",
            "--description",
            "the CLI's receiver",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("(sent: domain.removed)"), "{stdout}");
    assert!(stderr.contains("shown this once"), "{stderr}");
    let id = stdout
        .split("webhook endpoint ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the id is printed")
        .to_owned();
    let secret = stdout
        .lines()
        .find_map(|line| line.strip_prefix("Signing secret: "))
        .expect("the secret is printed")
        .to_owned();
    assert!(secret.starts_with("whsec_"), "{stdout}");
    receiver.trust("/cli", &[&secret]);

    let (code, stdout, stderr) = webhooks_cli(&service, &["list"]);
    assert_eq!(code, 0, "{stderr}");
    let row = stdout
        .lines()
        .find(|line| line.starts_with(&id))
        .unwrap_or_else(|| panic!("{id} is not listed:\n{stdout}"));
    assert!(
        row.contains("active") && row.contains("domain.removed") && row.ends_with(&url),
        "{row}"
    );

    // A message, delivered and verified, then shown among the deliveries.
    remove_new_domain(&service, "cli.webhooks.test").await;
    let received = receiver.wait_for("/cli", 1, Duration::from_secs(20)).await;
    all_verified(&received, 0);
    let mut table = String::new();
    for _ in 0..100 {
        let (code, stdout, stderr) = webhooks_cli(&service, &["deliveries", &id]);
        assert_eq!(code, 0, "{stderr}");
        table = stdout;
        if table.lines().count() > 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("TIME"), "{table}");
    assert_eq!(lines.len(), 2, "{table}");
    assert!(lines[1].contains(&received[0].id), "{table}");
    assert!(
        lines[1].contains(" 200 ") && lines[1].ends_with('-'),
        "{table}"
    );

    let (code, stdout, stderr) = webhooks_cli(&service, &["show", &id]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("the CLI's receiver"), "{stdout}");
    assert!(stdout.contains("1 delivered"), "{stdout}");
    assert!(
        !stdout.contains("whsec_"),
        "a secret is shown once: {stdout}"
    );

    let (code, stdout, stderr) = webhooks_cli(&service, &["rotate-secret", &id]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("The previous secret signs"), "{stdout}");
    assert!(!stdout.contains(&secret), "a new secret: {stdout}");

    let (code, stdout, stderr) = webhooks_cli(&service, &["remove", &id]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("removed"), "{stdout}");
    let (_, stdout, _) = webhooks_cli(&service, &["list"]);
    assert!(!stdout.contains(&id), "{stdout}");
    let (code, _, stderr) = webhooks_cli(&service, &["show", &id]);
    assert_eq!(code, 1);
    assert!(stderr.contains("404"), "{stderr}");
}
