//! Delegated validation with the real delegation chain on loopback: pebble-challtestsrv serves
//! the users' zones (where a test sets the `_acme-challenge` CNAME), the service's own DNS server
//! serves `acme.platform.test`, and a private unbound resolves for both Pebble (`-dnsserver`) and
//! the service (`DNS_NAMESERVERS`), following each CNAME from one server into the other. No test
//! here publishes a TXT record for a delegated domain: the service does, in its zone.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use dns_handling_testkit::{
    delegate_zone, dig, free_dns_port, start_expecting_refusal, Pebble, PebbleOptions, Service,
    StoreKind, TempDir, TestDatabase,
};
use serde_json::{json, Value};

use crate::BINARY;

/// The delegation zone of every test here.
pub(crate) const ZONE: &str = "acme.platform.test";

crate::on_both_stores!(a_domain_verified_by_its_cname_is_issued_and_renewed_without_a_txt_record);
crate::on_both_stores!(a_domain_and_its_wildcard_are_validated_by_two_values_at_one_name);
crate::on_both_stores!(a_cname_removed_before_a_renewal_falls_back_to_manual_and_says_why);
crate::on_both_stores!(a_cname_pointing_elsewhere_proves_nothing_and_stores_nothing);

/// Pebble behind unbound, which sends `ZONE` to `dns` (where the service will listen), a
/// database, and the service's environment for all three.
pub(crate) struct Delegated {
    pub(crate) pebble: Pebble,
    _database: TestDatabase,
    pub(crate) env: HashMap<String, String>,
    pub(crate) dns: SocketAddr,
}

pub(crate) async fn delegated(kind: StoreKind) -> Delegated {
    let dns = SocketAddr::from(([127, 0, 0, 1], free_dns_port()));
    let pebble = Pebble::start(PebbleOptions {
        delegated_zones: vec![(format!("{ZONE}."), dns)],
        ..PebbleOptions::default()
    });
    let database = TestDatabase::create(kind).await;
    let mut env = dns_handling_testkit::service_env(&pebble, &database);
    delegate_zone(&mut env, ZONE, dns);
    env.insert("CERT_KEY_TYPE".into(), "ecdsa-p256".into());
    Delegated {
        pebble,
        _database: database,
        env,
        dns,
    }
}

/// Registers `name` (with `alt_names`): the `201` body.
async fn register(service: &Service, name: &str, alt_names: &[&str]) -> Value {
    let (code, registered) = service
        .post(
            "/domains",
            Some(json!({"domain_name": name, "alt_names": alt_names})),
        )
        .await;
    assert_eq!(code, 201, "{registered}");
    registered
}

/// Sets every delegation record of a registration in the users' DNS: the one step a user takes.
fn set_delegation_records(pebble: &Pebble, registered: &Value) {
    for record in registered["delegation_records"]
        .as_array()
        .unwrap_or_else(|| panic!("no delegation_records in {registered}"))
    {
        let (name, target) = (record["name"].as_str(), record["value"].as_str());
        pebble.set_cname(name.expect("a name"), target.expect("a value"));
    }
}

/// Registers `name`, sets its CNAMEs and verifies it by them; returns its id.
pub(crate) async fn verified_by_cname(
    service: &Service,
    pebble: &Pebble,
    name: &str,
    alt_names: &[&str],
) -> String {
    let registered = register(service, name, alt_names).await;
    set_delegation_records(pebble, &registered);
    let id = registered["id"].as_str().expect("an id").to_owned();
    let (code, verified) = service.post(&format!("/domains/{id}/verify"), None).await;
    assert_eq!(code, 200, "{verified}");
    assert_eq!(verified["status"], "verified");
    id
}

/// The domain's current certificate serial, once it has one.
async fn serial(service: &Service, id: &str) -> String {
    let (code, certificate) = service.get(&format!("/domains/{id}/certificate")).await;
    assert_eq!(code, 200, "{certificate}");
    certificate["serial"].as_str().expect("a serial").to_owned()
}

/// Waits until the domain's certificate has another serial than `old`.
async fn wait_for_new_serial(service: &Service, id: &str, old: &str, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let now = serial(service, id).await;
        if now != old {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "no new certificate within {within:?}\n{}",
            service.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The event types and payloads of a domain's history.
async fn history(service: &Service, id: &str) -> Vec<Value> {
    let (code, history) = service.get(&format!("/domains/{id}/events")).await;
    assert_eq!(code, 200, "{history}");
    history.as_array().expect("a list").clone()
}

/// The payload of the last event of `event_type` in the history.
fn last_of<'a>(history: &'a [Value], event_type: &str) -> &'a Value {
    let event = history
        .iter()
        .rev()
        .find(|event| event["event_type"] == event_type)
        .unwrap_or_else(|| panic!("no {event_type} in {history:?}"));
    &event["payload"][event_type]
}

async fn a_domain_verified_by_its_cname_is_issued_and_renewed_without_a_txt_record(
    kind: StoreKind,
) {
    let setup = delegated(kind).await;
    let service = Service::start(BINARY, &setup.env);
    let name = "shop.delegated.test";

    let registered = register(&service, name, &[]).await;
    let record = &registered["delegation_record"];
    assert_eq!(record["name"], format!("_acme-challenge.{name}."));
    assert_eq!(record["type"], "CNAME");
    let target = record["value"].as_str().expect("a target").to_owned();
    assert!(target.ends_with(&format!(".{ZONE}.")), "{target}");
    assert!(
        !target.contains("shop"),
        "the label does not show the name: {target}"
    );
    set_delegation_records(&setup.pebble, &registered);
    let id = registered["id"].as_str().expect("an id");
    let (code, verified) = service.post(&format!("/domains/{id}/verify"), None).await;
    assert_eq!(code, 200, "{verified}");
    let events = history(&service, id).await;
    let proof = last_of(&events, "OwnershipVerified");
    assert_eq!(proof["proof"], "cname", "{proof}");
    assert_eq!(proof["cname_target"], target.as_str());

    let (code, started) = service
        .post(&format!("/domains/{id}/issue-certificate"), None)
        .await;
    assert_eq!(code, 202, "{started}");
    assert_eq!(started["validation"], "delegated", "{started}");
    assert!(started.get("delegation_problem").is_none(), "{started}");
    assert_eq!(started["challenges"][0]["delegated_to"], target.as_str());
    service
        .wait_for_status(id, &["active"], Duration::from_secs(60))
        .await;
    let first = serial(&service, id).await;

    let (code, renewing) = service.post(&format!("/domains/{id}/renew"), None).await;
    assert_eq!(code, 202, "{renewing}");
    assert_eq!(renewing["validation"], "delegated", "{renewing}");
    wait_for_new_serial(&service, id, &first, Duration::from_secs(60)).await;

    // The values left the zone with their orders; the zone still answers for itself.
    let answer = dig(setup.dns, &["+norecurse", "TXT", &target]);
    assert_eq!(answer.status, "NXDOMAIN", "{answer:?}");
    assert!(answer.has_flag("aa"), "{answer:?}");
    let requests = events_of(&history(&service, id).await, "ChallengeRecordObserved");
    assert_eq!(
        requests, 2,
        "one observation per order, each by the resolvers"
    );
}

/// How many events of `event_type` a history has.
fn events_of(history: &[Value], event_type: &str) -> usize {
    history
        .iter()
        .filter(|event| event["event_type"] == event_type)
        .count()
}

async fn a_domain_and_its_wildcard_are_validated_by_two_values_at_one_name(kind: StoreKind) {
    let setup = delegated(kind).await;
    let service = Service::start(BINARY, &setup.env);
    let name = "wild.delegated.test";
    let wildcard = "*.wild.delegated.test";
    let registered = register(&service, name, &[wildcard]).await;
    let records = registered["delegation_records"]
        .as_array()
        .expect("records");
    assert_eq!(
        records.len(),
        1,
        "a wildcard shares its domain's record: {registered}"
    );
    assert_eq!(records[0]["names"], json!([name, wildcard]));
    let id = verified_by_cname_of(&service, &setup.pebble, &registered).await;

    let (code, started) = service
        .post(&format!("/domains/{id}/issue-certificate"), None)
        .await;
    assert_eq!(code, 202, "{started}");
    assert_eq!(started["validation"], "delegated", "{started}");
    let challenges = started["challenges"].as_array().expect("challenges");
    let places: Vec<&Value> = challenges.iter().map(|c| &c["delegated_to"]).collect();
    if challenges.len() == 2 {
        // Pebble sometimes reuses a valid authorization; when both are asked for, both values
        // are published side by side at the one label.
        assert_eq!(places[0], places[1], "{started}");
        assert_ne!(
            challenges[0]["expected_txt_value"],
            challenges[1]["expected_txt_value"]
        );
    }
    service
        .wait_for_status(&id, &["active"], Duration::from_secs(60))
        .await;
    let (_, certificate) = service.get(&format!("/domains/{id}/certificate")).await;
    let mut names: Vec<&str> = certificate["names"]
        .as_array()
        .expect("names")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    names.sort_unstable();
    assert_eq!(names, [wildcard, name]);
}

/// Sets the CNAMEs of a registration and verifies the domain by them; returns its id.
async fn verified_by_cname_of(service: &Service, pebble: &Pebble, registered: &Value) -> String {
    set_delegation_records(pebble, registered);
    let id = registered["id"].as_str().expect("an id").to_owned();
    let (code, verified) = service.post(&format!("/domains/{id}/verify"), None).await;
    assert_eq!(code, 200, "{verified}");
    id
}

async fn a_cname_removed_before_a_renewal_falls_back_to_manual_and_says_why(kind: StoreKind) {
    let setup = delegated(kind).await;
    let service = Service::start(BINARY, &setup.env);
    let name = "moved.delegated.test";
    let id = verified_by_cname(&service, &setup.pebble, name, &[]).await;
    let (code, started) = service
        .post(&format!("/domains/{id}/issue-certificate"), None)
        .await;
    assert_eq!(code, 202, "{started}");
    service
        .wait_for_status(&id, &["active"], Duration::from_secs(60))
        .await;

    let record = format!("_acme-challenge.{name}.");
    setup.pebble.clear_cname(&record);
    let (code, renewing) = service.post(&format!("/domains/{id}/renew"), None).await;
    assert_eq!(code, 202, "{renewing}");
    assert_eq!(renewing["validation"], "manual", "{renewing}");
    let problem = renewing["delegation_problem"].as_str().expect("a reason");
    assert!(
        problem.contains(&record) && problem.contains("no CNAME"),
        "{problem}"
    );
    assert!(
        renewing["instructions"]
            .as_str()
            .is_some_and(|text| text.contains(problem)),
        "{renewing}"
    );
    // The domain says so while the renewal waits for a person, and stays active.
    let (_, view) = service.get(&format!("/domains/{id}")).await;
    assert_eq!(view["status"], "active", "{view}");
    assert_eq!(view["validation"], "manual", "{view}");
    assert_eq!(view["delegation_problem"], problem, "{view}");
    let requested = last_of(&history(&service, &id).await, "RenewalRequested").clone();
    assert_eq!(requested["order"]["validation"], "manual");
    assert_eq!(requested["order"]["delegation_problem"], problem);

    // The person publishes the records by hand, and the renewal completes.
    let old = serial(&service, &id).await;
    for challenge in renewing["challenges"].as_array().expect("challenges") {
        let (at, value) = (
            &challenge["challenge_domain"],
            &challenge["expected_txt_value"],
        );
        setup.pebble.set_txt(
            at.as_str().expect("a name"),
            value.as_str().expect("a value"),
        );
    }
    wait_for_new_serial(&service, &id, &old, Duration::from_secs(60)).await;
}

async fn a_cname_pointing_elsewhere_proves_nothing_and_stores_nothing(kind: StoreKind) {
    let setup = delegated(kind).await;
    let service = Service::start(BINARY, &setup.env);
    let name = "astray.delegated.test";
    let registered = register(&service, name, &[]).await;
    let id = registered["id"].as_str().expect("an id");
    let record = format!("_acme-challenge.{name}.");
    let elsewhere = format!("someone-else.{ZONE}.");
    setup.pebble.set_cname(&record, &elsewhere);
    let before = history(&service, id).await.len();

    let (code, refused) = service.post(&format!("/domains/{id}/verify"), None).await;
    assert_eq!(code, 400, "{refused}");
    let message = refused["error"].as_str().expect("an error");
    assert!(message.contains(&elsewhere), "{message}");
    assert_eq!(history(&service, id).await.len(), before, "nothing stored");
    let (_, view) = service.get(&format!("/domains/{id}")).await;
    assert_eq!(view["status"], "pending");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_challenge_created_on_one_replica_is_answered_by_another() {
    // Unbound sends the zone to replica B only, so the CA can validate only if B serves the
    // values of an order that A created.
    let setup = delegated(StoreKind::Postgres).await;
    let mut on_a = setup.env.clone();
    let dns_a = SocketAddr::from(([127, 0, 0, 1], free_dns_port()));
    delegate_zone(&mut on_a, ZONE, dns_a);
    on_a.insert("REPLICA_ID".into(), "replica-a".into());
    let mut on_b = setup.env.clone();
    on_b.insert("REPLICA_ID".into(), "replica-b".into());
    let replica_a = Service::start(BINARY, &on_a);
    let replica_b = Service::start(BINARY, &on_b);
    let name = "shared.delegated.test";
    let id = verified_by_cname(&replica_a, &setup.pebble, name, &[]).await;

    let (code, started) = replica_a
        .post(&format!("/domains/{id}/issue-certificate"), None)
        .await;
    let requested_at = Instant::now();
    assert_eq!(code, 202, "{started}");
    assert_eq!(started["validation"], "delegated", "{started}");
    let target = started["challenges"][0]["delegated_to"]
        .as_str()
        .expect("a target")
        .to_owned();
    let value = started["challenges"][0]["expected_txt_value"].clone();
    // Watch B's zone for the value, to say how soon B served it; the order may complete (and
    // its values be withdrawn) before a lookup here sees it, which also means B served it.
    let mut seen_on_b = None;
    while requested_at.elapsed() < Duration::from_secs(10) {
        let answer = dig(setup.dns, &["+norecurse", "TXT", &target]);
        if answer.txt().iter().any(|txt| json!(txt) == value) {
            seen_on_b = Some(requested_at.elapsed());
            break;
        }
        // The order may already be done (its values withdrawn): then B served it.
        let (_, view) = replica_b.get(&format!("/domains/{id}")).await;
        if view["status"] == "active" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if let Some(elapsed) = seen_on_b {
        eprintln!("replica B served replica A's challenge {elapsed:?} after the 202");
    }
    replica_b
        .wait_for_status(&id, &["active"], Duration::from_secs(60))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_zone_answers_like_an_authoritative_server_to_a_real_client() {
    let setup = delegated(StoreKind::Sqlite).await;
    let mut env = setup.env.clone();
    // Enough nameserver names that the NS answer does not fit the 512 bytes of a query
    // without EDNS.
    let nameservers: Vec<String> = (1..=20)
        .map(|n| format!("nameserver-{n:02}.a-rather-long-platform-name.test"))
        .collect();
    env.insert("DELEGATION_NAMESERVERS".into(), nameservers.join(","));
    let service = Service::start(BINARY, &env);
    let dns = setup.dns;

    let soa = dig(dns, &["+norecurse", "SOA", ZONE]);
    assert_eq!(soa.status, "NOERROR", "{soa:?}");
    assert!(soa.has_flag("aa") && !soa.has_flag("ra"), "{soa:?}");
    assert_eq!(soa.answers("SOA").len(), 1, "{soa:?}");

    let outside = dig(dns, &["TXT", "example.com"]);
    assert_eq!(outside.status, "REFUSED", "no recursion: {outside:?}");
    let missing = dig(dns, &["TXT", &format!("no-such-label.{ZONE}")]);
    assert_eq!(missing.status, "NXDOMAIN", "{missing:?}");
    assert!(missing.has_flag("aa"), "{missing:?}");

    let truncated = dig(dns, &["+noedns", "+ignore", "NS", ZONE]);
    assert!(truncated.has_flag("tc"), "{truncated:?}");
    let over_tcp = dig(dns, &["+tcp", "NS", ZONE]);
    assert_eq!(over_tcp.answers("NS").len(), 20, "{over_tcp:?}");
    let with_edns = dig(dns, &["+bufsize=4096", "NS", ZONE]);
    assert!(!with_edns.has_flag("tc"), "{with_edns:?}");

    // Garbage, a runt and an oversize datagram are dropped or refused; the server and the API
    // carry on.
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("a socket");
    for junk in [vec![0xffu8; 3], vec![0x42; 300], vec![0x00; 60_000]] {
        socket.send_to(&junk, dns).expect("sent");
    }
    let mut stream = std::net::TcpStream::connect(dns).expect("TCP");
    std::io::Write::write_all(&mut stream, &[0xff, 0xff, 0x01, 0x02]).expect("written");
    drop(stream);
    let again = dig(dns, &["SOA", ZONE]);
    assert_eq!(again.status, "NOERROR", "{again:?}");
    let (code, _) = service.get("/healthz").await;
    assert_eq!(code, 200);
    let metrics = service.metrics().await;
    assert!(
        metrics.contains("dns_handling_dns_queries_total{rcode=\"refused\"}"),
        "{metrics}"
    );
}

#[test]
fn a_delegation_zone_without_nameservers_or_with_a_busy_port_refuses_to_start() {
    let busy = std::net::UdpSocket::bind("127.0.0.1:0").expect("a socket");
    let cases = [
        (vec![("DELEGATION_ZONE", ZONE)], "DELEGATION_NAMESERVERS"),
        (vec![("DELEGATION_ZONE", "not a zone!")], "DELEGATION_ZONE"),
    ];
    for (settings, named) in cases {
        let env: HashMap<String, String> = settings
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .chain([("DATABASE_URL".to_owned(), "sqlite::memory:".to_owned())])
            .collect();
        let (status, log) = start_expecting_refusal(BINARY, &env);
        assert!(!status.success());
        assert!(log.contains(named), "{log}");
    }
    let address = busy.local_addr().expect("an address").to_string();
    let dir = TempDir::new("dns-handling-delegation");
    let env: HashMap<String, String> = [
        ("DELEGATION_ZONE", ZONE.to_owned()),
        ("DELEGATION_NAMESERVERS", "ns1.platform.test".to_owned()),
        ("DNS_LISTEN_ADDR", address.clone()),
        (
            "DATABASE_URL",
            format!("sqlite://{}/busy.db", dir.path().display()),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let (status, log) = start_expecting_refusal(BINARY, &env);
    assert!(!status.success());
    assert!(
        log.contains("DNS_LISTEN_ADDR") && log.contains(&address),
        "{log}"
    );
}
