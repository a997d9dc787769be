//! Renewal on both stores against Pebble: by lifetime to a new serial while the old one stays
//! listed; by hand, waiting for its records while the domain stays `active`; failures retried
//! on the schedule; expiry → `expired` → renewal → `active`; a restart in the middle; two
//! replicas renewing twenty due certificates, each once.
//!
//! Pebble issues 5-year certificates, so a fresh certificate is made due with `RENEW_BEFORE`
//! longer than that; the expiry test has Pebble issue 20-second ones.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use dns_handling_testkit::{
    active_domain, pebble_and_database, service_env, verified_domain, CaFront, FrontTarget, Pebble,
    PebbleOptions, Service, StoreKind, TestDatabase,
};
use serde_json::Value;

use crate::BINARY;

crate::on_both_stores!(a_due_certificate_is_renewed_to_a_new_serial_while_the_domain_stays_active);
crate::on_both_stores!(a_manual_renewal_waits_for_its_records_while_the_domain_stays_active);
crate::on_both_stores!(a_failed_renewal_is_retried_on_the_schedule_while_the_certificate_stays);
crate::on_both_stores!(an_expired_certificate_makes_the_domain_expired_until_its_renewal_is_issued);
crate::on_both_stores!(a_restart_in_the_middle_of_a_renewal_resumes_it);

/// Longer than Pebble's 5-year certificates: a fresh certificate is due at once.
const DUE_AT_ONCE: &str = "2000d";

fn renewing(env: &mut HashMap<String, String>, renew_before: &str) {
    env.insert("RENEW_BEFORE".into(), renew_before.into());
    env.insert("RENEWAL_CHECK_INTERVAL".into(), "300ms".into());
}

/// Polls the domain until `done` holds for it; every view seen must pass `always`.
async fn wait_until(
    service: &Service,
    id: &str,
    within: Duration,
    always: impl Fn(&Value),
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let (code, view) = service.get(&format!("/domains/{id}")).await;
        assert_eq!(code, 200, "{view}");
        always(&view);
        if done(&view) {
            return view;
        }
        assert!(
            Instant::now() < deadline,
            "not reached within {within:?}: {view}\n{}",
            service.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn stays_active(view: &Value) {
    assert_eq!(
        view["status"], "active",
        "a renewal keeps the domain active: {view}"
    );
}

fn anything(_: &Value) {}

fn renewal_in_progress(view: &Value) -> bool {
    view["renewal"]["in_progress"] == true
}

fn certificate_id(view: &Value) -> String {
    view["certificate"]["id"]
        .as_str()
        .expect("a certificate")
        .to_owned()
}

/// Publishes every record of the renewal in progress.
fn publish_renewal_records(pebble: &Pebble, view: &Value) {
    let challenges = view["renewal"]["challenges"]
        .as_array()
        .unwrap_or_else(|| panic!("no challenges in {view}"));
    assert!(!challenges.is_empty(), "{view}");
    for challenge in challenges {
        pebble.set_txt(
            challenge["challenge_domain"].as_str().expect("name"),
            challenge["expected_txt_value"].as_str().expect("value"),
        );
    }
}

/// The domain's stored events of one type, as JSON payloads.
async fn payloads(database: &TestDatabase, id: &str, event_type: &str) -> Vec<Value> {
    database
        .texts(&format!(
            "CAST(payload AS TEXT) FROM events WHERE aggregate_id = '{id}' \
             AND event_type = '{event_type}' ORDER BY sequence"
        ))
        .await
        .iter()
        .map(|text| serde_json::from_str::<Value>(text).expect("JSON")[event_type].clone())
        .collect()
}

fn time(value: &Value) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(value.as_str().expect("a time"))
        .expect("RFC 3339")
        .with_timezone(&chrono::Utc)
}

async fn a_due_certificate_is_renewed_to_a_new_serial_while_the_domain_stays_active(
    kind: StoreKind,
) {
    let (pebble, database, mut env) = pebble_and_database(kind).await;
    renewing(&mut env, DUE_AT_ONCE);
    let service = Service::start(BINARY, &env);
    let id = active_domain(&service, &pebble, "renew.example.test").await;
    let (_, first) = service.get(&format!("/domains/{id}")).await;
    let first_id = certificate_id(&first);
    let first_serial = first["certificate"]["serial"].clone();

    let view = wait_until(
        &service,
        &id,
        Duration::from_secs(30),
        stays_active,
        |view| {
            renewal_in_progress(view)
                && view["renewal"]["challenges"]
                    .as_array()
                    .is_some_and(|c| !c.is_empty())
        },
    )
    .await;
    assert_eq!(view["renewal"]["reason"], "lifetime", "{view}");
    // Pebble now and then hands out an order whose authorizations are valid already (even with
    // PEBBLE_AUTHZREUSE=0; seen in a CI run): that renewal completes at once, and the next one,
    // due at once too, is the one that waits here for its records. Whichever it is, the
    // certificate it replaces is the one served meanwhile.
    let requested = payloads(&database, &id, "RenewalRequested").await;
    let replaced_id = requested
        .last()
        .and_then(|renewal| renewal["renews_certificate_id"].as_str())
        .expect("the open renewal's certificate")
        .to_owned();
    assert_eq!(
        certificate_id(&view),
        replaced_id,
        "the old certificate is served meanwhile"
    );
    publish_renewal_records(&pebble, &view);
    let renewed = wait_until(
        &service,
        &id,
        Duration::from_secs(60),
        stays_active,
        |view| certificate_id(view) != replaced_id,
    )
    .await;
    assert_ne!(renewed["certificate"]["serial"], first_serial);

    let (code, current) = service.get(&format!("/domains/{id}/certificate")).await;
    assert_eq!(code, 200, "{current}");
    assert_eq!(current["id"], renewed["certificate"]["id"]);
    let (code, history) = service.get(&format!("/domains/{id}/certificates")).await;
    assert_eq!(code, 200, "{history}");
    let items = history["items"].as_array().expect("items");
    assert!(items.len() >= 2, "{history}");
    let newest = &items[0];
    assert_eq!(newest["current"], true);
    assert_eq!(newest["replaced"], replaced_id.as_str());
    assert_eq!(newest["renewal_reason"], "lifetime");
    assert_eq!(newest["names"], serde_json::json!(["renew.example.test"]));
    let old = items
        .iter()
        .find(|item| item["id"] == first_id.as_str())
        .expect("the old one");
    assert_eq!(
        old["serial"], first_serial,
        "the old certificate stays listed"
    );
    assert_eq!(old["current"], false);

    // The replaced certificate stays readable, key included, until its own end.
    let (code, past) = service
        .get(&format!("/domains/{id}/certificates/{first_id}"))
        .await;
    assert_eq!(code, 200, "{past}");
    assert!(past["chain_pem"]
        .as_str()
        .is_some_and(|pem| pem.contains("BEGIN CERTIFICATE")));
    let (code, key) = service
        .get(&format!("/domains/{id}/certificates/{first_id}/key"))
        .await;
    assert_eq!(code, 200, "{key}");
    assert!(key["private_key_pem"]
        .as_str()
        .is_some_and(|pem| pem.contains("PRIVATE KEY")));

    let requested = payloads(&database, &id, "RenewalRequested").await;
    assert_eq!(requested[0]["renews_certificate_id"], first_id.as_str());
    assert_eq!(requested[0]["reason"], "lifetime");
    let scheduled = payloads(&database, &id, "RenewalScheduled").await;
    assert_eq!(scheduled[0]["certificate_id"], first_id.as_str());
}

async fn a_manual_renewal_waits_for_its_records_while_the_domain_stays_active(kind: StoreKind) {
    let (pebble, database, mut env) = pebble_and_database(kind).await;
    env.insert("RENEWAL_CHECK_INTERVAL".into(), "300ms".into());
    let service = Service::start(BINARY, &env);
    let verified = verified_domain(&service, &pebble, "waiting.example.test").await;
    let before = database.count("events").await;
    let (code, body) = service
        .post(&format!("/domains/{verified}/renew"), None)
        .await;
    assert_eq!(code, 400, "a domain without a certificate: {body}");
    assert!(
        body["error"].as_str().unwrap_or("").contains("verified"),
        "{body}"
    );
    assert_eq!(database.count("events").await, before, "nothing recorded");

    let id = active_domain(&service, &pebble, "manual.example.test").await;
    // A CA may renew on an authorization it still holds as valid, with nothing to publish
    // (Pebble does now and then): such a renewal completes by itself; ask again until one
    // needs its record, which is what this test is about.
    let mut attempts = 0;
    let (first_id, started) = loop {
        let (_, first) = service.get(&format!("/domains/{id}")).await;
        let first_id = certificate_id(&first);
        let (code, started) = service.post(&format!("/domains/{id}/renew"), None).await;
        assert_eq!(code, 202, "{started}");
        if started["challenges"]
            .as_array()
            .is_some_and(|c| !c.is_empty())
        {
            break (first_id, started);
        }
        attempts += 1;
        assert!(attempts < 5, "the CA never asked for a record: {started}");
        wait_until(
            &service,
            &id,
            Duration::from_secs(60),
            stays_active,
            |view| certificate_id(view) != first_id && !renewal_in_progress(view),
        )
        .await;
    };
    assert_eq!(started["status"], "active");
    assert_eq!(
        started["challenges"].as_array().map(Vec::len),
        Some(1),
        "{started}"
    );
    let (code, again) = service.post(&format!("/domains/{id}/renew"), None).await;
    assert_eq!(code, 400, "{again}");
    assert!(
        again["error"]
            .as_str()
            .unwrap_or("")
            .contains("in progress"),
        "{again}"
    );

    // Three seconds (fifteen polls) without the record: still waiting, still active.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, view) = service.get(&format!("/domains/{id}")).await;
    stays_active(&view);
    assert!(renewal_in_progress(&view), "{view}");
    assert_eq!(view["renewal"]["challenges"], started["challenges"]);
    // Loud for an alert: a renewal waits for a person to publish its records.
    assert_eq!(
        service
            .metric("dns_handling_renewals_waiting_for_records")
            .await,
        Some(1.0)
    );
    // Nothing observed or issued since the renewal was asked for (the scheduler may still give
    // the current certificate its schedule meanwhile: a RenewalScheduled is no progress).
    let types = database.event_types(&id).await;
    let asked = types
        .iter()
        .rposition(|t| t == "RenewalRequested")
        .expect("a renewal was requested");
    assert!(
        types[asked + 1..]
            .iter()
            .all(|t| t != "ChallengeRecordObserved" && t != "CertificateIssued"),
        "nothing observed since the renewal was asked for: {types:?}"
    );

    publish_renewal_records(&pebble, &view);
    let renewed = wait_until(
        &service,
        &id,
        Duration::from_secs(60),
        stays_active,
        |view| certificate_id(view) != first_id,
    )
    .await;
    assert_eq!(renewed["renewal"]["in_progress"], false, "{renewed}");
    let requested = payloads(&database, &id, "RenewalRequested").await;
    assert_eq!(requested[0]["reason"], "manual");
}

async fn a_failed_renewal_is_retried_on_the_schedule_while_the_certificate_stays(kind: StoreKind) {
    let (mut pebble, database, mut env) = pebble_and_database(kind).await;
    env.insert("RENEWAL_RETRY_SCHEDULE".into(), "2s,4s".into());
    let service = Service::start(BINARY, &env);
    let id = active_domain(&service, &pebble, "failing.example.test").await;
    let (_, first) = service.get(&format!("/domains/{id}")).await;
    let first_id = certificate_id(&first);
    // The CA goes away (whether a CA would want fresh proof for a renewal is its choice: one
    // that reuses the valid authorization renews without any record), then the renewal is due.
    pebble.stop_acme();
    let (code, body) = service.post(&format!("/domains/{id}/renew"), None).await;
    assert_eq!(
        code, 500,
        "a manual renewal the CA cannot take records nothing: {body}"
    );
    let service = restart_renewing(service, &env, DUE_AT_ONCE);
    let view = wait_until(
        &service,
        &id,
        Duration::from_secs(60),
        stays_active,
        |view| view["renewal"]["attempts"].as_u64().unwrap_or(0) >= 3,
    )
    .await;
    assert_eq!(
        certificate_id(&view),
        first_id,
        "the certificate stays in service"
    );
    assert_eq!(
        view["renewal"]["last_failure"]["code"], "acme_unavailable",
        "{view}"
    );
    let failed = payloads(&database, &id, "RenewalFailed").await;
    let waits: Vec<i64> = failed
        .iter()
        .map(|f| (time(&f["next_attempt_at"]) - time(&f["failed_at"])).num_seconds())
        .collect();
    assert_eq!(
        &waits[..3],
        [2, 4, 4],
        "the schedule, its last wait repeating"
    );
    for (n, pair) in failed.windows(2).enumerate().take(2) {
        assert_eq!(pair[0]["attempt"], n as u64 + 1);
        assert!(
            time(&pair[1]["failed_at"]) >= time(&pair[0]["next_attempt_at"]),
            "attempt {} came before its time: {} after {}",
            n + 2,
            pair[1],
            pair[0]
        );
    }
}

/// The same service, restarted with `RENEW_BEFORE` and a quick scheduler.
fn restart_renewing(
    mut service: Service,
    env: &HashMap<String, String>,
    renew_before: &str,
) -> Service {
    service.terminate();
    let mut env = env.clone();
    renewing(&mut env, renew_before);
    Service::start(BINARY, &env)
}

async fn an_expired_certificate_makes_the_domain_expired_until_its_renewal_is_issued(
    kind: StoreKind,
) {
    let pebble = Pebble::start(PebbleOptions {
        certificate_validity_secs: Some(20),
        ..PebbleOptions::default()
    });
    let database = TestDatabase::create(kind).await;
    let mut env = service_env(&pebble, &database);
    renewing(&mut env, "5s");
    let service = Service::start(BINARY, &env);
    let id = active_domain(&service, &pebble, "expiring.example.test").await;
    let (_, first) = service.get(&format!("/domains/{id}")).await;
    let first_id = certificate_id(&first);
    // Due 5 s before its end; nobody publishes, so it expires with the renewal waiting.
    let expired = wait_until(&service, &id, Duration::from_secs(40), anything, |view| {
        view["status"] == "expired"
    })
    .await;
    assert!(
        renewal_in_progress(&expired),
        "renewal carries on: {expired}"
    );
    assert_eq!(
        service
            .metric("dns_handling_certificates_expiring{within=\"expired\"}")
            .await,
        Some(1.0),
        "an alert on certificates past their end can fire"
    );
    assert_eq!(certificate_id(&expired), first_id);
    let (_, listed) = service.get("/domains?status=expired").await;
    assert_eq!(listed["items"][0]["id"], id.as_str(), "{listed}");
    publish_renewal_records(&pebble, &expired);
    let renewed = wait_until(&service, &id, Duration::from_secs(60), anything, |view| {
        view["status"] == "active"
    })
    .await;
    assert_ne!(certificate_id(&renewed), first_id);
    let types = database.event_types(&id).await;
    assert!(
        types.contains(&"CertificateExpired".to_owned()),
        "{types:?}"
    );
}

async fn a_restart_in_the_middle_of_a_renewal_resumes_it(kind: StoreKind) {
    let (pebble, _database, env) = pebble_and_database(kind).await;
    let mut service = Service::start(BINARY, &env);
    let id = active_domain(&service, &pebble, "restart.example.test").await;
    let (_, first) = service.get(&format!("/domains/{id}")).await;
    let first_id = certificate_id(&first);
    let (code, started) = service.post(&format!("/domains/{id}/renew"), None).await;
    assert_eq!(code, 202, "{started}");
    service.kill();
    for challenge in started["challenges"].as_array().into_iter().flatten() {
        pebble.set_txt(
            challenge["challenge_domain"].as_str().expect("name"),
            challenge["expected_txt_value"].as_str().expect("value"),
        );
    }
    let service = Service::start(BINARY, &env);
    let renewed = wait_until(
        &service,
        &id,
        Duration::from_secs(60),
        stays_active,
        |view| certificate_id(view) != first_id,
    )
    .await;
    assert_eq!(renewed["renewal"]["in_progress"], false, "{renewed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_renew_twenty_due_certificates_each_exactly_once() {
    let (pebble, database, env) = pebble_and_database(StoreKind::Postgres).await;
    // Twenty active domains, not due yet.
    let mut ids = Vec::new();
    {
        let service = Service::start(BINARY, &env);
        for n in 0..20 {
            ids.push(
                active_domain(&service, &pebble, &format!("r{n}.replicas.example.test")).await,
            );
        }
    }
    // The replicas reach the CA through the front, which counts the orders the CA received.
    let front = CaFront::start(&pebble);
    let mut replicated = env.clone();
    replicated.remove("REPLICA_ID");
    replicated.insert("ACME_DIRECTORY".into(), front.directory_url());
    renewing(&mut replicated, DUE_AT_ONCE);
    let mut replicas = [
        Service::start(BINARY, &replicated),
        Service::start(BINARY, &replicated),
    ];
    let mut first: HashMap<String, String> = HashMap::new();
    for id in &ids {
        let (_, view) = replicas[0].get(&format!("/domains/{id}")).await;
        first.insert(id.clone(), certificate_id(&view));
    }
    // Publish each renewal's records as they appear, until every first certificate is renewed.
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut renewed: Vec<&String> = Vec::new();
    // The challenge sets already published, so that each value is set once.
    let mut published = std::collections::HashSet::new();
    while renewed.len() < ids.len() {
        if Instant::now() >= deadline {
            // What the domains left behind went through, and what the replicas warned of: a
            // failure here says why, not only which.
            let mut story = String::new();
            for id in ids.iter().filter(|id| !renewed.contains(id)) {
                let (_, view) = replicas[0].get(&format!("/domains/{id}")).await;
                story += &format!(
                    "\n{id}: {:?}\n  renewal: {}\n",
                    database.event_types(id).await,
                    view["renewal"]
                );
            }
            for (n, replica) in replicas.iter().enumerate() {
                let log = replica.log();
                let warnings: Vec<&str> = log
                    .lines()
                    .filter(|line| line.contains("WARN") || line.contains("ERROR"))
                    .collect();
                story += &format!("\nreplica {n} warned:\n{}\n", warnings.join("\n"));
            }
            panic!("renewed only {} of {}:{story}", renewed.len(), ids.len());
        }
        renewed.clear();
        for id in &ids {
            let (_, view) = replicas[0].get(&format!("/domains/{id}")).await;
            if certificate_id(&view) != first[id] {
                renewed.push(id);
            } else if renewal_in_progress(&view) {
                // Nothing to publish when the CA holds a valid authorization still: the order
                // goes on by itself.
                // Each value once: challtestsrv appends a value set again, and a name with
                // many values makes Pebble's lookup fail ("dns: overflowing header size"),
                // which failed a renewal here once.
                if view["renewal"]["challenges"].is_array()
                    && published.insert(view["renewal"]["challenges"].to_string())
                {
                    publish_renewal_records(&pebble, &view);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    for id in &ids {
        let requested = payloads(&database, id, "RenewalRequested").await;
        let of_first = requested
            .iter()
            .filter(|r| r["renews_certificate_id"] == first[id].as_str())
            .count();
        assert_eq!(of_first, 1, "{id}: {requested:?}");
    }
    // Every order the CA received is one the domains recorded: none placed twice and dropped.
    // Each new certificate is due at once too, so renewals go on: from here the front refuses
    // new orders itself (none reaches Pebble), the ones already with Pebble are recorded, and
    // only then do the replicas stop (a replica stopped between placing an order and recording
    // it would leave one unrecorded, as any crash there may).
    front.answer_rate_limited(FrontTarget::NewOrder, usize::MAX, Duration::from_secs(3600));
    tokio::time::sleep(Duration::from_secs(3)).await;
    for replica in &mut replicas {
        replica.terminate();
    }
    let recorded = database
        .texts("CAST(COUNT(*) AS TEXT) FROM events WHERE event_type = 'RenewalRequested'")
        .await;
    let recorded: usize = recorded[0].parse().expect("a count");
    assert_eq!(
        front.orders_created(),
        recorded,
        "orders the CA placed against renewals recorded"
    );
    assert!(recorded >= ids.len(), "{recorded}");
}
