//! Crash harness: 50 domains issuing concurrently while the real binary is killed with SIGKILL
//! at random moments, ten times, and restarted on the same database (after the orders are
//! placed: see the note in the test). At the end every domain is
//! `active` with exactly one certificate, no event is lost or duplicated, and every view equals
//! a replay of its events.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use dns_handling_events::CustomDomainEvent;
use dns_handling_projections::DomainView;
use dns_handling_testkit::{pebble_and_database, Pebble, Service, StoreKind, TestDatabase};
use futures::future::join_all;
use rand::Rng;
use serde_json::{json, Value};

use crate::BINARY;

crate::on_both_stores!(fifty_domains_survive_ten_sigkills);

const DOMAINS: usize = 50;
const CRASHES: usize = 10;

/// Drives every domain one step towards `active`, tolerating a service that dies mid-request.
struct Driver<'a> {
    service: &'a Service,
    pebble: &'a Pebble,
    /// Records published so far, across the service's lives (challtestsrv appends a value
    /// every time it is set, so each is published once).
    published: &'a Mutex<HashSet<(String, String)>>,
    /// Domains whose challenge record may be published now. Holding the others back keeps
    /// orders pending across kills, so every kill interrupts work in flight.
    released: HashSet<String>,
}

impl Driver<'_> {
    fn publish(&self, host: &str, value: &str) {
        let first_time = self
            .published
            .lock()
            .expect("lock")
            .insert((host.to_owned(), value.to_owned()));
        if first_time {
            self.pebble.set_txt(host, value);
        }
    }

    async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Option<(u16, Value)> {
        let mut request = self
            .service
            .client
            .request(method, self.service.url(path))
            .timeout(Duration::from_secs(5));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.ok()?;
        let status = response.status().as_u16();
        Some((status, response.json().await.ok()?))
    }

    /// One step for every domain; true when all are active.
    async fn step(&self, names: &[String]) -> bool {
        let Some((200, list)) = self
            .request(reqwest::Method::GET, "/domains?limit=500", None)
            .await
        else {
            return false;
        };
        let views: HashMap<String, Value> = list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|item| {
                (
                    item["domain_name"].as_str().unwrap_or_default().to_owned(),
                    item.clone(),
                )
            })
            .collect();
        let steps = names.iter().map(|name| self.advance(name, views.get(name)));
        join_all(steps).await.into_iter().all(|active| active)
    }

    async fn advance(&self, name: &str, view: Option<&Value>) -> bool {
        let Some(view) = view else {
            self.request(
                reqwest::Method::POST,
                "/domains",
                Some(json!({"domain_name": name})),
            )
            .await;
            return false;
        };
        let id = view["id"].as_str().unwrap_or_default();
        match view["status"].as_str().unwrap_or_default() {
            "pending" => {
                let record = &view["verification_record"];
                self.publish(
                    record["name"].as_str().unwrap_or_default(),
                    record["value"].as_str().unwrap_or_default(),
                );
                self.request(
                    reqwest::Method::POST,
                    &format!("/domains/{id}/verify"),
                    None,
                )
                .await;
            }
            "verified" => {
                let path = format!("/domains/{id}/issue-certificate");
                let answer = self.request(reqwest::Method::POST, &path, None).await;
                if let (Some((202, started)), true) = (answer, self.released.contains(name)) {
                    self.publish(
                        started["challenge_domain"].as_str().unwrap_or_default(),
                        started["expected_txt_value"].as_str().unwrap_or_default(),
                    );
                }
            }
            "certificate_pending" if self.released.contains(name) => {
                let challenge = &view["challenge"];
                self.publish(
                    challenge["challenge_domain"].as_str().unwrap_or_default(),
                    challenge["expected_txt_value"].as_str().unwrap_or_default(),
                );
            }
            "certificate_pending" => {}
            "failed" => panic!("no issuance should fail in this harness: {view}"),
            "active" => return true,
            other => panic!("unknown status {other}"),
        }
        false
    }
}

async fn fifty_domains_survive_ten_sigkills(kind: StoreKind) {
    let (pebble, database, mut env) = pebble_and_database(kind).await;
    env.insert("POLL_TIMEOUT".into(), "10m".into());
    let names: Vec<String> = (0..DOMAINS)
        .map(|n| format!("crash{n}.example.test"))
        .collect();

    let mut kills = 0;
    let published = Mutex::new(HashSet::new());
    let mut released: HashSet<String> = HashSet::new();

    // First every order is placed, undisturbed. Pebble 2.4 (Debian's) was seen, twice in about
    // fifteen runs, to stop answering new-order requests for good after clients were killed in
    // the middle of them; the kills below therefore land on everything after order creation:
    // waiting for records, validation, finalization, download, recording.
    {
        let service = Service::start(BINARY, &env);
        let driver = Driver {
            service: &service,
            pebble: &pebble,
            published: &published,
            released: HashSet::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            driver.step(&names).await;
            let (_, list) = service
                .get("/domains?status=certificate_pending&limit=500")
                .await;
            if list["items"].as_array().map(Vec::len) == Some(DOMAINS) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "orders not placed; log:\n{}",
                service.log()
            );
        }
    }

    for _ in 0..CRASHES {
        // Five more domains may complete in each life of the service.
        while released.len() < (kills + 1) * DOMAINS / CRASHES {
            released.insert(names[rand::thread_rng().gen_range(0..DOMAINS)].clone());
        }
        let mut service = Service::start(BINARY, &env);
        let driver = Driver {
            service: &service,
            pebble: &pebble,
            published: &published,
            released: released.clone(),
        };
        let lifetime = Duration::from_millis(rand::thread_rng().gen_range(150..1500));
        let started = Instant::now();
        while started.elapsed() < lifetime {
            // Stepping and dying race on purpose: the kill lands wherever the work is.
            let step = driver.step(&names);
            if tokio::time::timeout(lifetime.saturating_sub(started.elapsed()), step)
                .await
                .is_err()
            {
                break;
            }
        }
        // What the kill interrupts, for the test's output (best effort: the service is alive).
        if let Some((_, list)) = driver
            .request(reqwest::Method::GET, "/domains?limit=500", None)
            .await
        {
            let mut census: HashMap<String, usize> = HashMap::new();
            for item in list["items"].as_array().into_iter().flatten() {
                *census
                    .entry(item["status"].as_str().unwrap_or_default().to_owned())
                    .or_default() += 1;
            }
            println!("{kind:?} kill {} after {lifetime:?}: {census:?}", kills + 1);
        }
        drop(driver);
        service.kill();
        kills += 1;
    }
    assert_eq!(kills, CRASHES);

    let service = Service::start(BINARY, &env);
    let driver = Driver {
        service: &service,
        pebble: &pebble,
        published: &published,
        released: names.iter().cloned().collect(),
    };
    let deadline = Instant::now() + Duration::from_secs(180);
    while !driver.step(&names).await {
        assert!(
            Instant::now() < deadline,
            "not all active after the crashes; log:\n{}",
            service.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let (_, list) = service.get("/domains?limit=500").await;
    let items = list["items"].as_array().expect("items");
    assert_eq!(items.len(), DOMAINS, "one live domain per name");
    for item in items {
        let id = item["id"].as_str().expect("id");
        let events = database.event_types(id).await;
        assert_eq!(
            events.iter().filter(|e| *e == "CertificateIssued").count(),
            1,
            "{id}: {events:?}"
        );
        assert_eq!(events.first().map(String::as_str), Some("DomainRegistered"));
        let (code, _) = service.get(&format!("/domains/{id}/certificate")).await;
        assert_eq!(code, 200);
    }
    assert_no_event_lost_or_duplicated(&database).await;
    assert_views_equal_a_replay(&database).await;
    assert_eq!(database.count("acme_accounts").await, 1);
}

/// Every stream's sequence numbers run 1, 2, 3, … without a hole or a repeat.
async fn assert_no_event_lost_or_duplicated(database: &TestDatabase) {
    let rows = database
        .texts("aggregate_id || ' ' || CAST(sequence AS TEXT) FROM events ORDER BY aggregate_id, sequence")
        .await;
    let mut expected: HashMap<String, u64> = HashMap::new();
    for row in rows {
        let (id, sequence) = row.split_once(' ').expect("id and sequence");
        let next = expected.entry(id.to_owned()).or_insert(1);
        assert_eq!(
            sequence.parse::<u64>().expect("number"),
            *next,
            "stream {id}"
        );
        *next += 1;
    }
}

/// Each stored view equals the view rebuilt from the domain's events.
async fn assert_views_equal_a_replay(database: &TestDatabase) {
    let rows = database
        .texts("aggregate_id || '|' || CAST(sequence AS TEXT) || '|' || CAST(payload AS TEXT) FROM events ORDER BY aggregate_id, sequence")
        .await;
    let mut replayed: HashMap<String, DomainView> = HashMap::new();
    for row in rows {
        let mut parts = row.splitn(3, '|');
        let (id, sequence, payload) = (
            parts.next().expect("id"),
            parts
                .next()
                .expect("sequence")
                .parse::<u64>()
                .expect("number"),
            parts.next().expect("payload"),
        );
        let event: CustomDomainEvent = serde_json::from_str(payload).expect("an event");
        match replayed.get_mut(id) {
            Some(view) => {
                view.apply(sequence, &event);
            }
            None => {
                let view = DomainView::from_registration(id, sequence, &event)
                    .expect("registration first");
                replayed.insert(id.to_owned(), view);
            }
        }
    }
    let stored = database.texts("payload FROM domain_views").await;
    assert_eq!(stored.len(), replayed.len(), "one view per stream");
    for text in stored {
        let view: DomainView = serde_json::from_str(&text).expect("a view");
        assert_eq!(
            Some(&view),
            replayed.get(&view.id),
            "view {} differs from its replay",
            view.id
        );
    }
}
