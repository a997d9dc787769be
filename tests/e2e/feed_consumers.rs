//! An event a feed consumer cannot read (a later release's type, a payload of the wrong shape)
//! stops that consumer loudly instead of being skipped for good: the delegation zone's follower
//! and every webhook driver stay on it, `/readyz` answers `503` naming them, the
//! `feed_consumer_stuck` gauge says 1, the log says it at error level, and once the event reads
//! (here: the row is repaired, as an upgrade would make it readable) they read on and nothing
//! committed after it was lost. The event is written straight into the events table.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use dns_handling_testkit::{
    delegate_zone, free_dns_port, pebble_and_database, Service, StoreKind, WebhookReceiver,
};
use serde_json::{json, Value};

use crate::BINARY;

crate::on_both_stores!(
    an_event_no_consumer_can_read_stops_them_loudly_and_nothing_after_it_is_lost
);

/// `GET /readyz`: its status and body.
async fn readyz(service: &Service) -> (u16, Value) {
    let response = reqwest::get(service.url("/readyz")).await.expect("readyz");
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON body"))
}

/// Polls `/readyz` until `accept` holds for its status and body; panics after `within`.
async fn wait_for_readyz(
    service: &Service,
    within: Duration,
    accept: impl Fn(u16, &Value) -> bool,
) -> (u16, Value) {
    let deadline = Instant::now() + within;
    loop {
        let (status, body) = readyz(service).await;
        if accept(status, &body) {
            return (status, body);
        }
        assert!(
            Instant::now() < deadline,
            "/readyz still {status} {body} after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The `domain_name`s of the `domain.removed` messages the receiver got at `path`.
fn removed_names(receiver: &WebhookReceiver, path: &str) -> Vec<String> {
    receiver
        .received(path)
        .iter()
        .filter(|delivery| delivery.status == 200)
        .map(|delivery| {
            delivery.body["data"]["domain_name"]
                .as_str()
                .unwrap_or("?")
                .to_owned()
        })
        .collect()
}

async fn an_event_no_consumer_can_read_stops_them_loudly_and_nothing_after_it_is_lost(
    kind: StoreKind,
) {
    let (_pebble, database, mut env) = pebble_and_database(kind).await;
    env.insert("WEBHOOK_ALLOW_PRIVATE_TARGETS".into(), "true".into());
    let dns = SocketAddr::from(([127, 0, 0, 1], free_dns_port()));
    // The delegation zone runs the zone follower.
    delegate_zone(&mut env, "acme.platform.test", dns);
    let service = Service::start(BINARY, &env);
    let receiver = WebhookReceiver::start();
    let (code, created) = service
        .post(
            "/webhooks",
            Some(json!({"url": receiver.url("/removed"), "events": ["domain.removed"]})),
        )
        .await;
    assert_eq!(code, 201, "{created}");
    let endpoint = created["id"].as_str().expect("an id").to_owned();
    let (before, _, _) = service.register("before.consumers.test").await;
    assert_eq!(service.delete(&format!("/domains/{before}")).await, 204);
    receiver
        .wait_for("/removed", 1, Duration::from_secs(20))
        .await;

    // An event of a type this release does not know, then a removal after it.
    let unreadable = uuid::Uuid::now_v7().to_string();
    database
        .execute(&format!(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, \
             event_version, payload, metadata) VALUES ('CustomDomain', '{unreadable}', 1, \
             'FutureEvent', '1.0', '{{\"FutureEvent\": {{\"from\": \"a later release\"}}}}', '{{}}')"
        ))
        .await;
    let (after, _, _) = service.register("after.consumers.test").await;
    assert_eq!(service.delete(&format!("/domains/{after}")).await, 204);

    let webhook = format!("webhook:{endpoint}");
    let (status, body) = wait_for_readyz(&service, Duration::from_secs(30), |_, body| {
        let error = body["error"].as_str().unwrap_or("");
        error.contains("zone_follower") && error.contains(&webhook)
    })
    .await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"]
            .as_str()
            .expect("error")
            .contains("FutureEvent"),
        "{body}"
    );
    for consumer in ["zone_follower", webhook.as_str()] {
        let series = format!("dns_handling_feed_consumer_stuck{{consumer=\"{consumer}\"}}");
        assert_eq!(service.metric(&series).await, Some(1.0), "{series}");
    }
    let log = service.log();
    assert!(
        log.lines()
            .any(|line| line.contains("ERROR") && line.contains("cannot read an event")),
        "no error line in the log"
    );
    // Both stopped at the unreadable event (readyz says so): the removal after it was not sent.
    assert_eq!(
        removed_names(&receiver, "/removed"),
        ["before.consumers.test"]
    );

    // The row becomes readable (as an upgrade that knows the event would make it): a removal,
    // copied from the first domain's, of a domain with no view, which tells nobody anything.
    database
        .execute(&format!(
            "UPDATE events SET event_type = 'DomainRemoved', event_version = '1.0', \
             payload = (SELECT payload FROM events WHERE aggregate_id = '{before}' \
             AND event_type = 'DomainRemoved') WHERE aggregate_id = '{unreadable}'"
        ))
        .await;
    receiver
        .wait_for("/removed", 2, Duration::from_secs(30))
        .await;
    assert_eq!(
        removed_names(&receiver, "/removed"),
        ["before.consumers.test", "after.consumers.test"],
        "the removal committed after the unreadable event is not lost"
    );
    let (_, body) =
        wait_for_readyz(&service, Duration::from_secs(30), |status, _| status == 200).await;
    assert_eq!(body["status"], "ready", "{body}");
    for consumer in ["zone_follower", webhook.as_str()] {
        let series = format!("dns_handling_feed_consumer_stuck{{consumer=\"{consumer}\"}}");
        assert_eq!(service.metric(&series).await, Some(0.0), "{series}");
    }
}
