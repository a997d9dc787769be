//! The keys the certificate stream hands out, recorded for whoever asked (`read::edge_chunk`,
//! `edge_key_deliveries`): once per receiver and certificate, the first time kept, and no key
//! sent when its record fails.

use super::edge_stream::{catch_up, open_for, parse, served, Issued};
use super::World;
use crate::adapters::store::{DeliveriesOf, EdgeKeyDelivery, Store, StoreError};
use crate::edge::line::EdgeLine;
use crate::metrics::{EdgeLabel, METRICS};
use crate::read::edge_stream::KeyReceiver;

/// What a stream that does not follow sent, and the error that ended it, if one did.
async fn stream(
    world: &World,
    after: i64,
    receiver: KeyReceiver,
) -> (Vec<EdgeLine>, Option<StoreError>) {
    let mut stream = open_for(world, after, false, receiver);
    let (mut bytes, mut error) = (Vec::new(), None);
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(chunk) => bytes.extend(chunk),
            Err(failed) => error = Some(failed),
        }
    }
    (parse(&bytes), error)
}

/// Every delivery recorded for `receiver` (as recorded: `edge:<name>` or `admin`).
async fn deliveries(world: &World, receiver: &str) -> Vec<EdgeKeyDelivery> {
    (world.state.store)
        .key_deliveries(DeliveriesOf::Receiver(receiver), "", 1000)
        .await
        .expect("listed")
}

/// The (certificate, domain) pairs of `deliveries`, sorted.
fn pairs(deliveries: &[EdgeKeyDelivery]) -> Vec<(String, String)> {
    let mut pairs: Vec<_> = deliveries
        .iter()
        .map(|d| (d.certificate_id.clone(), d.domain_id.clone()))
        .collect();
    pairs.sort();
    pairs
}

fn pairs_of(issued: &[&Issued]) -> Vec<(String, String)> {
    let mut pairs: Vec<_> = issued
        .iter()
        .map(|i| (i.certificate_id.clone(), i.domain_id.clone()))
        .collect();
    pairs.sort();
    pairs
}

fn edge(name: &str) -> KeyReceiver {
    KeyReceiver::Edge(name.to_owned())
}

fn keys_counted(edge: &str) -> u64 {
    let label = EdgeLabel {
        edge: edge.to_owned(),
    };
    METRICS.edge.key_reads.get_or_create(&label).get()
}

#[tokio::test]
async fn a_stream_records_each_certificate_it_sends_for_the_edge_that_asked_and_counts_its_keys() {
    let world = World::new(1, |_| {}).await;
    let one = served(&world, "one.example.com").await;
    let two = served(&world, "two.example.com").await;
    let three = served(&world, "three.example.com").await;
    let position = catch_up(&world).await;
    // A name of its own: the metric is shared by every test of the process.
    let counted = keys_counted("edge-counted");

    let (lines, error) = stream(&world, 0, edge("edge-counted")).await;

    assert!(error.is_none(), "{error:?}");
    assert_eq!(lines.len(), 5, "{lines:?}");
    let recorded = deliveries(&world, "edge:edge-counted").await;
    assert_eq!(pairs(&recorded), pairs_of(&[&one, &two, &three]));
    assert_eq!(keys_counted("edge-counted") - counted, 3);

    // The changes after a position record what they serve too.
    let four = served(&world, "four.example.com").await;
    let (lines, error) = stream(&world, position, edge("edge-counted")).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(lines.len(), 1, "{lines:?}");
    let recorded = deliveries(&world, "edge:edge-counted").await;
    assert_eq!(pairs(&recorded), pairs_of(&[&one, &two, &three, &four]));
    assert_eq!(keys_counted("edge-counted") - counted, 4);
}

#[tokio::test]
async fn a_second_stream_by_the_same_edge_records_nothing_new_and_keeps_the_first_time() {
    let world = World::new(1, |_| {}).await;
    served(&world, "one.example.com").await;
    served(&world, "two.example.com").await;
    catch_up(&world).await;
    stream(&world, 0, edge("edge1")).await;
    let first = deliveries(&world, "edge:edge1").await;
    assert_eq!(first.len(), 2, "{first:?}");

    let (lines, error) = stream(&world, 0, edge("edge1")).await;

    assert!(error.is_none(), "{error:?}");
    assert_eq!(lines.len(), 4, "the keys were sent again: {lines:?}");
    assert_eq!(deliveries(&world, "edge:edge1").await, first);
}

#[tokio::test]
async fn another_edge_gets_rows_of_its_own_and_an_admin_is_recorded_as_admin() {
    let world = World::new(1, |_| {}).await;
    let one = served(&world, "one.example.com").await;
    let two = served(&world, "two.example.com").await;
    catch_up(&world).await;
    stream(&world, 0, edge("edge1")).await;
    let first = deliveries(&world, "edge:edge1").await;

    stream(&world, 0, edge("edge2")).await;
    stream(&world, 0, KeyReceiver::Admin).await;

    assert_eq!(deliveries(&world, "edge:edge1").await, first);
    let second = deliveries(&world, "edge:edge2").await;
    assert_eq!(pairs(&second), pairs_of(&[&one, &two]));
    let admin = deliveries(&world, "admin").await;
    assert_eq!(pairs(&admin), pairs_of(&[&one, &two]));
    let receivers: Vec<String> = (world.state.store)
        .key_deliveries(DeliveriesOf::Certificate(&one.certificate_id), "", 10)
        .await
        .expect("listed")
        .into_iter()
        .map(|delivery| delivery.edge)
        .collect();
    assert_eq!(receivers, ["admin", "edge:edge1", "edge:edge2"]);
}

#[tokio::test]
async fn a_key_whose_delivery_cannot_be_recorded_is_not_sent() {
    let world = World::new(1, |_| {}).await;
    let first = served(&world, "one.example.com").await;
    let position = catch_up(&world).await;
    let second = served(&world, "two.example.com").await;
    let Store::Sqlite(pool) = &world.state.store else {
        panic!("the world's store is SQLite")
    };
    sqlx::query("DROP TABLE edge_key_deliveries")
        .execute(pool)
        .await
        .expect("dropped");

    // From a snapshot, and from the changes after a position.
    for (after, issued) in [(0, &first), (position, &second)] {
        let (lines, error) = stream(&world, after, edge("edge1")).await;

        assert!(error.is_some(), "the stream ends with the error");
        let served = lines.iter().any(|line| matches!(line, EdgeLine::Served(_)));
        assert!(!served, "no key sent: {lines:?}");
        assert!(!format!("{lines:?}").contains(&issued.key_pem));
    }
}
