//! Starting a renewal: the renewal lease, and what the order names as replaced.

use chrono::{Duration, Utc};
use dns_handling_events::{CustomDomainEvent, RenewalReason, RenewalWindow};

use super::World;
use crate::adapters::acme::certificate_identifier;
use crate::adapters::acme::CertificateAuthority as _;
use crate::use_cases::renew::{renew_now, renewal_lease, start_renewal, RenewError};
use crate::use_cases::work_lease::WorkLease;

/// What the domain's last `RenewalRequested` names as replaced.
async fn recorded_replaces(world: &World, id: &str) -> Option<String> {
    let history = world.state.store.domain_history(id).await.expect("read");
    history
        .iter()
        .rev()
        .find_map(|stored| match stored.decode().expect("readable") {
            CustomDomainEvent::RenewalRequested { replaces, .. } => Some(replaces),
            _ => None,
        })
        .expect("a renewal requested")
}

#[tokio::test]
async fn a_renewal_while_another_holder_has_the_lease_is_busy_and_the_lease_is_free_after() {
    let world = World::new(1, |_| {}).await;
    let view = world.active("lease.example.com").await;
    let certificate = view.certificate.clone().expect("a certificate").id;
    let held = WorkLease::take(&world.state, renewal_lease(&view.id), &certificate)
        .await
        .expect("store")
        .expect("free");

    let busy = start_renewal(
        &world.state,
        &world.pollers,
        &view,
        RenewalReason::Manual,
        World::origin(),
    )
    .await;
    assert!(matches!(busy, Err(RenewError::Busy(_))), "{busy:?}");
    assert_eq!(world.cas[0].orders_asked(), 1, "only the issuance's order");
    held.release().await;

    let renewed = renew_now(&world.state, &world.pollers, &view.id, World::origin())
        .await
        .expect("the lease is free");
    assert_eq!(world.pollers.orders(), 1);
    assert!(
        world.pollers.started.lock().expect("lock")[0].2,
        "a renewal"
    );
    assert_eq!(renewed.order.ca_directory, world.cas[0].directory_url());
    let again = WorkLease::take(&world.state, renewal_lease(&view.id), &certificate)
        .await
        .expect("store");
    assert!(again.is_some(), "the renewal gave its lease back");
}

#[tokio::test]
async fn a_renewal_names_what_it_replaces_only_where_the_ca_offers_renewal_information() {
    let world = World::new(1, |_| {}).await;
    let with_ari = world.active("ari.example.com").await;
    let without_ari = world.active("lifetime.example.com").await;
    *world.cas[0].window.lock().expect("lock") = Some(RenewalWindow {
        start: Utc::now(),
        end: Utc::now() + Duration::days(1),
        explanation_url: None,
    });

    renew_now(&world.state, &world.pollers, &with_ari.id, World::origin())
        .await
        .expect("renewing");
    *world.cas[0].window.lock().expect("lock") = None;
    renew_now(
        &world.state,
        &world.pollers,
        &without_ari.id,
        World::origin(),
    )
    .await
    .expect("renewing");

    let stored = world
        .state
        .store
        .certificate_view(&with_ari.id)
        .await
        .expect("read")
        .expect("a certificate");
    let identifier = certificate_identifier(&stored.chain_pem)
        .expect("an identifier")
        .to_string();
    let asked = world.cas[0].asked.lock().expect("lock").clone();
    assert_eq!(
        asked[2].1.as_deref(),
        Some(identifier.as_str()),
        "told the CA"
    );
    assert_eq!(
        recorded_replaces(&world, &with_ari.id).await,
        Some(identifier)
    );
    assert_eq!(asked[3].1, None);
    assert_eq!(recorded_replaces(&world, &without_ari.id).await, None);
}

#[tokio::test]
async fn a_renewal_of_a_domain_without_a_certificate_is_refused_before_the_ca_is_asked() {
    let world = World::new(1, |_| {}).await;
    let view = world.verified("early.example.com").await;

    let refused = renew_now(&world.state, &world.pollers, &view.id, World::origin()).await;

    assert!(
        matches!(refused, Err(RenewError::Refused(_))),
        "{refused:?}"
    );
    assert_eq!(world.cas[0].orders_asked(), 0);
}
