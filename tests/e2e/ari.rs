//! Renewal by the CA's suggested window (ACME Renewal Information, RFC 9773), on both stores.
//!
//! Pebble 2.4 has no `renewalInfo`. The testkit's `AriFront` stands in front of it: it serves
//! `renewalInfo` windows this test sets and lists `renewalInfo` in the directory; every other
//! request goes to Pebble and comes back unchanged, except that a new order's response echoes
//! the request's `replaces`, as an ARI-capable CA does (Pebble 2.4 drops it). Signed requests
//! are never altered.

use std::time::{Duration, Instant};

use chrono::Utc;
use dns_handling_testkit::{active_domain, pebble_and_database, AriFront, Service, StoreKind};
use serde_json::Value;

use crate::BINARY;

crate::on_both_stores!(a_renewal_follows_the_window_the_ca_suggests_and_names_what_it_replaces);

async fn wait_for(
    service: &Service,
    id: &str,
    within: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let (_, view) = service.get(&format!("/domains/{id}")).await;
        if done(&view) {
            return view;
        }
        assert!(
            Instant::now() < deadline,
            "not reached in {within:?}: {view}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn time(value: &Value) -> chrono::DateTime<Utc> {
    chrono::DateTime::parse_from_rfc3339(value.as_str().expect("a time"))
        .expect("RFC 3339")
        .with_timezone(&Utc)
}

async fn a_renewal_follows_the_window_the_ca_suggests_and_names_what_it_replaces(kind: StoreKind) {
    let (pebble, database, mut env) = pebble_and_database(kind).await;
    let front = AriFront::start(&pebble);
    env.insert("ACME_DIRECTORY".into(), front.directory_url());
    env.insert("RENEWAL_CHECK_INTERVAL".into(), "300ms".into());
    let now = Utc::now();
    let (start, end) = (
        now + chrono::Duration::hours(1),
        now + chrono::Duration::hours(2),
    );
    // Ask again in 61 s: a client waits at least a minute whatever the CA says.
    front.set_window(start, end, Some("https://ca.example/why"), 61);
    let service = Service::start(BINARY, &env);
    let id = active_domain(&service, &pebble, "ari.example.test").await;

    let view = wait_for(&service, &id, Duration::from_secs(20), |view| {
        view["renewal"]["due_at"].is_string()
    })
    .await;
    let renewal = &view["renewal"];
    assert_eq!(renewal["reason"], "ari", "{view}");
    let due = time(&renewal["due_at"]);
    assert!(
        due >= start && due <= end,
        "a moment inside the window: {view}"
    );
    assert_eq!(renewal["explanation_url"], "https://ca.example/why");
    assert_eq!(
        time(&renewal["window_start"]),
        start.with_nanosecond_zeroed()
    );
    let asked = front.requests();
    let certid = asked.last().expect("the CA was asked").clone();
    assert!(certid.split('.').count() == 2, "{certid}");

    // The CA pulls the renewal forward (its window has passed): at the next check the renewal
    // is due at once, and its order says which certificate it replaces.
    front.set_window(
        now - chrono::Duration::minutes(10),
        now - chrono::Duration::minutes(5),
        None,
        3600,
    );
    let view = wait_for(&service, &id, Duration::from_secs(120), |view| {
        view["renewal"]["in_progress"] == true
    })
    .await;
    let requested = database
        .texts(&format!(
            "CAST(payload AS TEXT) FROM events WHERE aggregate_id = '{id}' AND event_type = 'RenewalRequested'"
        ))
        .await;
    let requested: Value = serde_json::from_str(&requested[0]).expect("JSON");
    assert_eq!(requested["RenewalRequested"]["reason"], "ari");
    assert_eq!(requested["RenewalRequested"]["replaces"], certid.as_str());
    // Every new-order request of the renewal (a retry after a rejected nonce is another one)
    // named it to the CA.
    let seen = front.replaces_seen();
    assert!(
        !seen.is_empty() && seen.iter().all(|replaces| *replaces == certid),
        "{seen:?}"
    );
    for challenge in view["renewal"]["challenges"]
        .as_array()
        .into_iter()
        .flatten()
    {
        pebble.set_txt(
            challenge["challenge_domain"].as_str().expect("name"),
            challenge["expected_txt_value"].as_str().expect("value"),
        );
    }
    let first = view["certificate"]["id"].clone();
    wait_for(&service, &id, Duration::from_secs(60), |view| {
        view["certificate"]["id"] != first
    })
    .await;
    let (_, history) = service.get(&format!("/domains/{id}/certificates")).await;
    assert_eq!(history["items"][0]["renewal_reason"], "ari", "{history}");
}

trait SecondPrecision {
    fn with_nanosecond_zeroed(self) -> Self;
}

impl SecondPrecision for chrono::DateTime<Utc> {
    /// The API's times have whole seconds.
    fn with_nanosecond_zeroed(self) -> Self {
        chrono::DateTime::from_timestamp(self.timestamp(), 0).expect("valid")
    }
}
