//! The health check before every order: recorded like a periodic one (only a change), and a
//! renewal whose check finds the domain moved orders nothing; a check that finds nothing new
//! records nothing and reads the domain once.

use dns_handling_events::{CheckOutcome, DomainStatus};

use dns_handling_projections::DomainView;

use super::World;
use crate::domain::health::{Resolution, RoutingTargets};
use crate::use_cases::health::check_domain;
use crate::use_cases::issue::issue;
use crate::use_cases::renew::{renew_now, RenewError};

/// A world whose users point their names at `203.0.113.0/24`; a domain is moved as soon as a
/// check finds all its names gone.
async fn routed_world() -> World {
    World::new(1, |settings| {
        settings.routing_targets = RoutingTargets::parse("203.0.113.0/24").expect("targets");
        settings.moved_after = std::time::Duration::ZERO;
    })
    .await
}

/// Resolves `name` to `address`.
fn point(world: &World, name: &str, address: &str) {
    let resolution = Resolution::Found {
        aliases: Vec::new(),
        addresses: vec![address.parse().expect("an address")],
    };
    (world.dns.2.lock().expect("lock")).insert(name.to_owned(), resolution);
}

#[tokio::test]
async fn a_first_issuance_is_preceded_by_the_full_health_check_and_records_it() {
    let world = routed_world().await;
    let view = world.verified("shop.checked.test").await;
    point(&world, "shop.checked.test", "203.0.113.5");
    assert_eq!(view.health, None);

    issue(&world.state, &world.pollers, &view.id, World::origin())
        .await
        .expect("ordered");

    let health = world.view(&view.id).await.health.expect("recorded");
    assert_eq!(health.routing[0].outcome, CheckOutcome::Ok);
    assert_eq!(health.caa[0].outcome, CheckOutcome::Ok);
}

#[tokio::test]
async fn a_renewal_whose_health_check_finds_the_domain_moved_orders_nothing() {
    let world = routed_world().await;
    point(&world, "shop.moving.test", "203.0.113.5");
    let view = world.active("shop.moving.test").await;
    let recorded = view.health.clone().expect("checked before its order");
    let asked = world.cas[0].orders_asked();
    (world.dns.2.lock().expect("lock")).remove("shop.moving.test");

    let refused = renew_now(&world.state, &world.pollers, &view.id, World::origin()).await;

    assert!(
        matches!(refused, Err(RenewError::Refused(_))),
        "{refused:?}"
    );
    assert_eq!(world.cas[0].orders_asked(), asked, "no CA asked");
    let after = world.view(&view.id).await;
    assert_eq!(after.status, DomainStatus::Moved);
    let health = after.health.expect("health");
    assert_eq!(health.routing[0].outcome, CheckOutcome::Missing);
    assert!(health.changed_at > recorded.changed_at, "{health:?}");
}

#[tokio::test]
async fn a_check_that_finds_nothing_new_records_nothing_and_reads_the_domain_once() {
    let world = routed_world().await;
    point(&world, "shop.steady.test", "203.0.113.5");
    let view = world.active("shop.steady.test").await;
    let stored = world.view(&view.id).await;
    // A view is replaced only by one at a higher sequence.
    let rewritten = DomainView {
        tenant: Some("rewritten during the lookups".into()),
        last_sequence: stored.last_sequence + 1,
        ..stored.clone()
    };
    *world.dns.3.lock().expect("lock") = Some((world.state.store.clone(), rewritten));

    let (check, after) = check_domain(&world.state, &view.id, World::origin())
        .await
        .expect("checked");

    assert_eq!(check.report.routing[0].outcome, CheckOutcome::Ok);
    assert_eq!(
        world.view(&view.id).await.tenant.as_deref(),
        Some("rewritten during the lookups"),
        "the lookups rewrote the store's view, and no event was recorded over it"
    );
    assert_eq!(
        after, stored,
        "answered with the view read before the lookups"
    );
}

#[tokio::test]
async fn a_check_that_finds_a_change_records_it_and_answers_the_domain_as_it_stands_after() {
    let world = routed_world().await;
    point(&world, "shop.leaving.test", "203.0.113.5");
    let view = world.active("shop.leaving.test").await;
    point(&world, "shop.leaving.test", "198.51.100.7");

    let (check, after) = check_domain(&world.state, &view.id, World::origin())
        .await
        .expect("checked");

    assert_eq!(check.report.routing[0].outcome, CheckOutcome::Elsewhere);
    assert_eq!(after, world.view(&view.id).await);
    let health = after.health.expect("health");
    assert_eq!(health.routing[0].outcome, CheckOutcome::Elsewhere);
    assert_eq!(after.status, DomainStatus::Moved);
}
