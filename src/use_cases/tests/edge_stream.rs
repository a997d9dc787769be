//! The certificate stream of the TLS edges (`read::edge_stream`) over the use cases: what a
//! snapshot holds, that a snapshot taken while the views are ahead of the checkpoint still
//! shows its position exactly, the changes after a position, and a following stream.

use std::time::Duration;

use chrono::Utc;
use dns_handling_events::{KeyDisposal, OrderDetails, RevocationReason};

use super::World;
use crate::domain::aggregate::CustomDomainCommand;
use crate::edge::line::{EdgeLine, ServedCertificate};
use crate::read::edge_stream::{served_names, EdgeStream, EdgeStreamSource, KeyReceiver};
use crate::read::projector::ViewProjector;
use crate::use_cases::{issue::issue, remove::remove, renew::renew_now, revoke::revoke};

/// A certificate issued through the use cases, with the key stored for its order.
pub(super) struct Issued {
    pub(super) domain_id: String,
    pub(super) certificate_id: String,
    pub(super) key_pem: String,
    order_id: String,
}

/// A self-signed leaf for `names` (the first is the subject's).
fn leaf(names: &[&str]) -> String {
    let key = rcgen::KeyPair::generate().expect("a key");
    let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
    let params = rcgen::CertificateParams::new(names).expect("params");
    params.self_signed(&key).expect("signed").pem()
}

/// Completes `order` of domain `domain_id` with a stored key and a leaf for `names`.
async fn finalize(world: &World, domain_id: &str, order: &OrderDetails, names: &[&str]) -> Issued {
    let key_pem = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        order.order_id
    );
    (world.state.vault)
        .store_certificate_key(&order.order_id, domain_id, &key_pem)
        .await
        .expect("stored");
    let not_after = Utc::now() + chrono::Duration::days(89);
    let certificate_id = (world.finish_order(domain_id, order, leaf(names), not_after)).await;
    Issued {
        domain_id: domain_id.to_owned(),
        certificate_id,
        key_pem,
        order_id: order.order_id.clone(),
    }
}

/// Domain `name` with a certificate for it and `www.` under it in service.
pub(super) async fn served(world: &World, name: &str) -> Issued {
    let view = world.verified(name).await;
    let issuance = issue(&world.state, &world.pollers, &view.id, World::origin())
        .await
        .expect("ordered");
    let www = format!("www.{name}");
    finalize(world, &view.id, &issuance.order, &[name, &www]).await
}

fn open(world: &World, after: i64, follow: bool) -> EdgeStream {
    open_for(world, after, follow, KeyReceiver::Edge("edge1".into()))
}

/// The stream after `after`, asked by `receiver`.
pub(super) fn open_for(
    world: &World,
    after: i64,
    follow: bool,
    receiver: KeyReceiver,
) -> EdgeStream {
    let source = EdgeStreamSource {
        store: world.state.store.clone(),
        vault: world.state.vault.clone(),
        poll_interval: Duration::from_secs(60),
        receiver,
        stopping: world.state.stopping.clone(),
    };
    source.open(after, follow)
}

/// Every line of a stream that does not follow.
async fn lines(world: &World, after: i64) -> Vec<EdgeLine> {
    let mut stream = open(world, after, false);
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        bytes.extend(chunk.expect("no error"));
    }
    parse(&bytes)
}

pub(super) fn parse(bytes: &[u8]) -> Vec<EdgeLine> {
    (bytes.split(|byte| *byte == b'\n'))
        .filter(|line| !line.is_empty())
        .map(|line| serde_json::from_slice(line).expect("a line"))
        .collect()
}

fn served_line(line: &EdgeLine) -> &ServedCertificate {
    match line {
        EdgeLine::Served(served) => served,
        other => panic!("not a served line: {other:?}"),
    }
}

fn withdrawn(position: i64, issued: &Issued) -> EdgeLine {
    EdgeLine::Withdrawn {
        position,
        domain_id: issued.domain_id.clone(),
        certificate_id: issued.certificate_id.clone(),
    }
}

pub(super) async fn catch_up(world: &World) -> i64 {
    let projector = ViewProjector::new(world.state.store.clone());
    projector.catch_up(|_| {}).await.expect("caught up");
    world.state.store.feed_head().await.expect("head")
}

#[tokio::test]
async fn a_snapshot_serves_each_live_certificate_with_its_key_and_nothing_revoked_removed_or_keyless(
) {
    let world = World::new(1, |_| {}).await;
    let live = served(&world, "live.example.com").await;
    let revoked = served(&world, "revoked.example.com").await;
    let reason = RevocationReason::Superseded;
    revoke(
        &world.state,
        &world.pollers,
        &revoked.domain_id,
        reason,
        World::origin(),
    )
    .await
    .expect("revoked");
    let removed = served(&world, "removed.example.com").await;
    remove(
        &world.state,
        &world.pollers,
        &removed.domain_id,
        false,
        World::origin(),
    )
    .await
    .expect("removed");
    let keyless = served(&world, "keyless.example.com").await;
    (world.state.store)
        .delete_certificate_key(&keyless.order_id)
        .await
        .expect("deleted");
    world.verified("pending.example.com").await;
    let head = catch_up(&world).await;

    let lines = lines(&world, 0).await;

    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(lines[0], EdgeLine::SnapshotBegins { position: head });
    let served = served_line(&lines[1]);
    assert_eq!(
        (served.domain_id.as_str(), served.certificate_id.as_str()),
        (live.domain_id.as_str(), live.certificate_id.as_str())
    );
    assert_eq!(served.key_pem, live.key_pem);
    assert_eq!(served.names, ["live.example.com", "www.live.example.com"]);
    assert_eq!((served.position, served.replaces.as_deref()), (head, None));
    assert_eq!(lines[2], EdgeLine::SnapshotEnds { position: head });
}

#[tokio::test]
async fn a_snapshot_taken_while_the_views_are_ahead_shows_its_position_and_each_later_change_once()
{
    let world = World::new(1, |_| {}).await;
    let first = served(&world, "first.example.com").await;
    let position = catch_up(&world).await;
    // Written to the views by the commits' own path, not yet past the checkpoint.
    let reason = RevocationReason::Superseded;
    revoke(
        &world.state,
        &world.pollers,
        &first.domain_id,
        reason,
        World::origin(),
    )
    .await
    .expect("revoked");
    let second = served(&world, "second.example.com").await;

    let lines = lines(&world, 0).await;

    let kinds: Vec<(i64, &str)> = lines
        .iter()
        .map(|line| (line.position(), kind(line)))
        .collect();
    assert_eq!(lines.len(), 5, "{kinds:?}");
    assert_eq!(lines[0], EdgeLine::SnapshotBegins { position });
    assert_eq!(served_line(&lines[1]).certificate_id, first.certificate_id);
    assert_eq!(lines[2], EdgeLine::SnapshotEnds { position });
    assert_eq!(lines[3], withdrawn(lines[3].position(), &first));
    assert_eq!(served_line(&lines[4]).certificate_id, second.certificate_id);
    assert!(position < lines[3].position() && lines[3].position() < lines[4].position());
}

fn kind(line: &EdgeLine) -> &'static str {
    match line {
        EdgeLine::SnapshotBegins { .. } => "snapshot_begins",
        EdgeLine::SnapshotEnds { .. } => "snapshot_ends",
        EdgeLine::Served(_) => "served",
        EdgeLine::Withdrawn { .. } => "withdrawn",
    }
}

#[tokio::test]
async fn the_changes_after_a_position_serve_a_renewal_with_what_it_replaces_and_withdraw_without_a_key(
) {
    let world = World::new(1, |_| {}).await;
    let first = served(&world, "shop.example.com").await;
    let before = world.state.store.feed_head().await.expect("head");
    let renewal = renew_now(
        &world.state,
        &world.pollers,
        &first.domain_id,
        World::origin(),
    )
    .await
    .expect("renewing");
    let names = ["shop.example.com", "*.shop.example.com"];
    let second = finalize(&world, &first.domain_id, &renewal.order, &names).await;
    let destroyed = CustomDomainCommand::RecordKeyDestroyed {
        order_id: first.order_id.clone(),
        certificate_id: Some(first.certificate_id.clone()),
        why: KeyDisposal::CertificateExpired,
        at: Utc::now(),
    };
    world.execute(&first.domain_id, destroyed).await;
    remove(
        &world.state,
        &world.pollers,
        &first.domain_id,
        false,
        World::origin(),
    )
    .await
    .expect("removed");

    let lines = lines(&world, before).await;

    assert_eq!(lines.len(), 3, "{lines:?}");
    let renewed = served_line(&lines[0]);
    assert_eq!(renewed.certificate_id, second.certificate_id);
    assert_eq!(
        renewed.replaces.as_deref(),
        Some(first.certificate_id.as_str())
    );
    assert_eq!(
        (renewed.key_pem.as_str(), renewed.names.as_slice()),
        (second.key_pem.as_str(), &names.map(String::from)[..])
    );
    assert_eq!(
        lines[1],
        withdrawn(lines[1].position(), &first),
        "its key destroyed"
    );
    assert_eq!(
        lines[2],
        withdrawn(lines[2].position(), &second),
        "the domain removed"
    );
    let text = serde_json::to_string(&lines[1..]).expect("serializes");
    assert!(
        !text.contains("key_pem") && !text.contains("PRIVATE KEY"),
        "{text}"
    );

    let resumed = self::lines(&world, renewed.position).await;
    assert_eq!(
        resumed,
        lines[1..],
        "exactly the changes after the position"
    );
}

#[tokio::test]
async fn a_certificate_issued_whose_key_is_gone_is_not_served_by_the_changes() {
    let world = World::new(1, |_| {}).await;
    world.registered("earlier.example.com").await;
    let before = world.state.store.feed_head().await.expect("head");
    let gone = served(&world, "gone.example.com").await;
    (world.state.store)
        .delete_certificate_key(&gone.order_id)
        .await
        .expect("deleted");

    assert_eq!(lines(&world, before).await, []);
}

#[tokio::test]
async fn a_position_past_the_feed_s_head_starts_from_a_snapshot() {
    let world = World::new(1, |_| {}).await;
    let live = served(&world, "moved.example.com").await;
    let head = catch_up(&world).await;

    let lines = lines(&world, head + 100).await;

    assert_eq!(
        lines.first(),
        Some(&EdgeLine::SnapshotBegins { position: head })
    );
    assert_eq!(served_line(&lines[1]).certificate_id, live.certificate_id);
}

#[tokio::test]
async fn a_following_stream_sends_a_change_as_it_commits() {
    let world = World::new(1, |_| {}).await;
    let live = served(&world, "follow.example.com").await;
    catch_up(&world).await;
    let mut stream = open(&world, 0, true);
    let mut bytes = Vec::new();
    let is_end = |line: &EdgeLine| matches!(line, EdgeLine::SnapshotEnds { .. });
    while !read_more(&mut stream, &mut bytes).await.iter().any(is_end) {}

    let reason = RevocationReason::KeyCompromise;
    revoke(
        &world.state,
        &world.pollers,
        &live.domain_id,
        reason,
        World::origin(),
    )
    .await
    .expect("revoked");

    let mut lines = parse(&bytes);
    while lines.len() < 4 {
        lines = read_more(&mut stream, &mut bytes).await;
    }
    assert_eq!(lines[3], withdrawn(lines[3].position(), &live));
}

/// Every line so far, after the next chunk, which must come within the test's deadline.
async fn read_more(stream: &mut EdgeStream, bytes: &mut Vec<u8>) -> Vec<EdgeLine> {
    let chunk = tokio::time::timeout(Duration::from_secs(10), stream.next()).await;
    bytes.extend(chunk.expect("in time").expect("open").expect("no error"));
    parse(bytes)
}

#[test]
fn the_names_served_are_the_leaf_s_in_lower_case_with_the_domain_s_first() {
    let chain = leaf(&[
        "www.shop.example.com",
        "*.Shop.example.com",
        "shop.example.com",
    ]);

    let names = served_names("shop.example.com", &chain);

    assert_eq!(
        names,
        [
            "shop.example.com",
            "www.shop.example.com",
            "*.shop.example.com"
        ]
    );
}
