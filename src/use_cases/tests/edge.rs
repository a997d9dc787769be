//! An edge's handshake answered in process: the index kept from the feed, the cache, and the
//! key reads recorded once per (edge, certificate).

use std::time::{Duration as Wait, Instant};

use chrono::{Duration, Utc};
use dns_handling_events::{CustomDomainEvent, OrderDetails, RevocationReason};

use super::World;
use crate::read::edge_index;
use crate::settings::Settings;
use crate::use_cases::edge_certificate::{certificate_for, Asker, EdgeCertificateError};

/// A world whose edge index follows its feed, with `settings` changed as the test needs.
async fn world(change: impl FnOnce(&mut Settings)) -> World {
    let world = World::new(1, change).await;
    let (store, index) = (world.state.store.clone(), world.state.edge_index.clone());
    tokio::spawn(edge_index::follow(store, index, Wait::from_millis(20)));
    world
}

/// A chain whose leaf names `names`.
fn chain(names: &[String]) -> String {
    let key = rcgen::KeyPair::generate().expect("a key");
    let params = rcgen::CertificateParams::new(names.to_vec()).expect("params");
    params.self_signed(&key).expect("signed").pem()
}

/// Finishes `order` of domain `id` with a certificate for its names ending at `not_after`,
/// its key stored as the poller stores it; answers the certificate's id.
async fn finish(
    world: &World,
    id: &str,
    order: &OrderDetails,
    not_after: chrono::DateTime<Utc>,
) -> String {
    let key = format!("KEY OF {}", order.order_id);
    let vault = &world.state.vault;
    vault
        .store_certificate_key(&order.order_id, id, &key)
        .await
        .expect("stored");
    world
        .finish_order(id, order, chain(&order.names), not_after)
        .await
}

/// `name` with `www.` and `*.` of it, a certificate in service for the three; its id and the
/// certificate's.
async fn served(world: &World, name: &str, not_after: chrono::DateTime<Utc>) -> (String, String) {
    let alt_names = [format!("www.{name}"), format!("*.{name}")];
    let state = &world.state;
    let view = crate::use_cases::register::register(state, name, &alt_names, World::origin())
        .await
        .expect("registered");
    world.dns.0.lock().expect("lock").insert(
        view.verification_record_name.clone(),
        vec![view.verification_token.clone()],
    );
    crate::use_cases::verify::verify(state, &view.id, World::origin())
        .await
        .expect("verified");
    let issued = crate::use_cases::issue::issue(state, &world.pollers, &view.id, World::origin())
        .await
        .expect("ordered");
    let certificate = finish(world, &view.id, &issued.order, not_after).await;
    (view.id, certificate)
}

fn in_90_days() -> chrono::DateTime<Utc> {
    Utc::now() + Duration::days(90)
}

/// What the index serves for `name` now (its certificate's id).
fn indexed(world: &World, name: &str) -> Option<String> {
    let found = world
        .state
        .edge_index
        .lookup(name, Utc::now())
        .expect("a name");
    found.map(|entry| entry.certificate_id)
}

/// Waits until the index serves `expected` for `name`.
async fn until_indexed(world: &World, name: &str, expected: Option<&str>) {
    let deadline = Instant::now() + Wait::from_secs(10);
    while indexed(world, name).as_deref() != expected {
        assert!(
            Instant::now() < deadline,
            "{name} never served {expected:?}"
        );
        tokio::time::sleep(Wait::from_millis(10)).await;
    }
}

/// What `edge1` gets for `name`: the certificate's id and the body's key.
async fn ask(world: &World, name: &str, asker: Asker) -> Option<(String, String)> {
    let answer = certificate_for(&world.state, Some(name), asker, World::origin).await;
    let material = answer.expect("answered")?;
    let body = std::str::from_utf8(&material.pem_body).expect("PEM is text");
    assert!(body.starts_with("-----BEGIN CERTIFICATE"), "{body}");
    // The key follows the chain.
    const END: &str = "-----END CERTIFICATE-----\n";
    let key = &body[body.rfind(END).expect("a chain") + END.len()..];
    Some((material.certificate_id.clone(), key.to_owned()))
}

fn edge1() -> Asker {
    Asker::Edge("edge1".into())
}

/// The `PrivateKeyRead` events of domain `id`: (certificate, reader).
async fn key_reads(world: &World, id: &str) -> Vec<(String, String)> {
    let history = world.state.store.domain_history(id).await.expect("read");
    let reads = history
        .iter()
        .filter_map(|stored| match stored.decode().ok()? {
            CustomDomainEvent::PrivateKeyRead {
                certificate_id,
                reader,
                ..
            } => Some((certificate_id, reader)),
            _ => None,
        });
    reads.collect()
}

#[tokio::test]
async fn every_name_of_the_certificate_is_served_and_a_renewal_replaces_it_at_once() {
    let world = world(|_| {}).await;
    let (id, first) = served(&world, "shop.example.com", in_90_days()).await;
    until_indexed(&world, "shop.example.com", Some(&first)).await;
    for name in [
        "shop.example.com",
        "www.shop.example.com",
        "api.shop.example.com",
        "SHOP.Example.com.",
    ] {
        let (certificate, key) = ask(&world, name, edge1()).await.expect(name);
        assert_eq!(certificate, first, "{name}");
        assert!(key.starts_with("KEY OF "), "{name}");
    }
    assert_eq!(
        ask(&world, "a.b.shop.example.com", edge1()).await,
        None,
        "one label"
    );
    assert_eq!(ask(&world, "example.com", edge1()).await, None, "not ours");

    let renewal =
        crate::use_cases::renew::renew_now(&world.state, &world.pollers, &id, World::origin())
            .await
            .expect("renewing");
    let second = finish(&world, &id, &renewal.order, in_90_days()).await;
    until_indexed(&world, "shop.example.com", Some(&second)).await;
    let (certificate, key) = ask(&world, "api.shop.example.com", edge1())
        .await
        .expect("served");
    assert_eq!(certificate, second);
    assert_eq!(key, format!("KEY OF {}", renewal.order.order_id));
}

#[tokio::test]
async fn a_revoked_a_removed_or_an_ended_certificate_is_not_served() {
    let world = world(|_| {}).await;
    let (revoked, _) = served(&world, "revoked.example.com", in_90_days()).await;
    let (removed, _) = served(&world, "removed.example.com", in_90_days()).await;
    let end = Utc::now() + Duration::seconds(4);
    let (_, ended) = served(&world, "ended.example.com", end).await;
    until_indexed(&world, "ended.example.com", Some(&ended)).await;
    for name in ["revoked.example.com", "removed.example.com"] {
        assert!(
            ask(&world, name, edge1()).await.is_some(),
            "{name} served first"
        );
    }

    let state = &world.state;
    let reason = RevocationReason::KeyCompromise;
    crate::use_cases::revoke::revoke(state, &world.pollers, &revoked, reason, World::origin())
        .await
        .expect("revoked");
    crate::use_cases::remove::remove(state, &world.pollers, &removed, false, World::origin())
        .await
        .expect("removed");
    until_indexed(&world, "revoked.example.com", None).await;
    until_indexed(&world, "removed.example.com", None).await;
    // Past its end, before any expiry is recorded: no longer served.
    let left = (end - Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(left + Wait::from_millis(100)).await;
    for name in [
        "revoked.example.com",
        "www.removed.example.com",
        "ended.example.com",
    ] {
        assert_eq!(ask(&world, name, edge1()).await, None, "{name}");
    }
}

#[tokio::test]
async fn a_missing_or_malformed_name_is_refused() {
    let world = world(|_| {}).await;
    for name in [None, Some(""), Some("not a host"), Some("a..b")] {
        let answer = certificate_for(&world.state, name, edge1(), World::origin).await;
        assert!(
            matches!(answer, Err(EdgeCertificateError::BadName(_))),
            "{name:?}: {answer:?}"
        );
    }
}

#[tokio::test]
async fn an_edges_key_read_is_recorded_once_per_certificate_and_an_admins_every_time() {
    let world = world(|_| {}).await;
    let (id, first) = served(&world, "reads.example.com", in_90_days()).await;
    until_indexed(&world, "reads.example.com", Some(&first)).await;
    for _ in 0..5 {
        ask(&world, "reads.example.com", edge1())
            .await
            .expect("served");
    }
    assert!(
        world.state.edge_reads.contains("edge1", &first),
        "seen recorded"
    );
    // Another replica has not seen the read recorded: the aggregate records none again.
    world.state.edge_reads.forget_all();
    world.state.edge_material.forget_all();
    ask(&world, "www.reads.example.com", edge1())
        .await
        .expect("served");
    ask(&world, "reads.example.com", Asker::Edge("edge2".into()))
        .await
        .expect("served");
    for _ in 0..2 {
        let admin = Asker::Other("admin from 127.0.0.1".into());
        ask(&world, "reads.example.com", admin)
            .await
            .expect("served");
    }
    let readers: Vec<String> = key_reads(&world, &id)
        .await
        .into_iter()
        .map(|(certificate, reader)| {
            assert_eq!(certificate, first);
            reader
        })
        .collect();
    let admin = "admin from 127.0.0.1";
    assert_eq!(readers, ["edge:edge1", "edge:edge2", admin, admin]);
}

#[tokio::test]
async fn the_cache_holds_no_more_certificates_than_its_size() {
    let world = world(|settings| settings.edge_cache_entries = 2).await;
    let mut names = Vec::new();
    for n in 0..5 {
        let name = format!("cached{n}.example.com");
        let (_, certificate) = served(&world, &name, in_90_days()).await;
        until_indexed(&world, &name, Some(&certificate)).await;
        names.push(name);
    }
    for name in &names {
        ask(&world, name, edge1()).await.expect("served");
    }
    assert!(world.state.edge_material.len() <= 2, "bounded");
    assert!(!world.state.edge_material.is_empty());
    // Asked again and again, one comes from the cache (once the cache admits it: it keeps
    // what is asked often; the counter is the process's, other tests only add to it).
    let hits = crate::metrics::METRICS.edge.cache_hits.get();
    for _ in 0..5 {
        ask(&world, &names[4], edge1()).await.expect("served");
    }
    assert!(
        crate::metrics::METRICS.edge.cache_hits.get() > hits,
        "a hit"
    );
}
