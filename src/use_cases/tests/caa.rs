//! CAA before an order: the CA it permits takes the order, a refusal of every CA asks none,
//! `warn` orders anyway, `off` looks nothing up, a failed lookup does not block.

use super::{caa_issue, World};
use crate::adapters::acme::CertificateAuthority as _;
use crate::settings::CaaCheck;
use crate::use_cases::issue::{issue, IssueError};
use crate::use_cases::renew::{renew_now, RenewError};

#[tokio::test]
async fn caa_forbidding_every_ca_refuses_the_order_and_asks_no_ca() {
    let world = World::new(2, |_| {}).await;
    let view = world.verified("shop.forbidden.test").await;
    world.forbid_by_caa("forbidden.test", "other-ca.example");

    let error = issue(&world.state, &world.pollers, &view.id, World::origin())
        .await
        .expect_err("refused");

    let IssueError::Caa(forbids) = error else {
        panic!("{error:?}");
    };
    assert_eq!(forbids.refusals.len(), 2, "one per CA: {forbids:?}");
    let first = &forbids.refusals[0];
    assert_eq!(first.directory, world.cas[0].directory_url());
    assert_eq!(first.found_at, "forbidden.test");
    assert_eq!(first.forbidding, [r#"0 issue "other-ca.example""#]);
    assert_eq!(
        first.would_allow.as_deref(),
        Some(r#"forbidden.test. CAA 0 issue "ca1.test""#)
    );
    assert_eq!(world.cas[0].orders_asked() + world.cas[1].orders_asked(), 0);
    assert_eq!(world.pollers.orders(), 0);
}

#[tokio::test]
async fn caa_permitting_only_the_second_ca_sends_the_order_there() {
    let world = World::new(2, |_| {}).await;
    let view = world.verified("shop.second.test").await;
    world.forbid_by_caa("shop.second.test", "ca2.test");

    let issued = issue(&world.state, &world.pollers, &view.id, World::origin())
        .await
        .expect("placed at the second CA");

    assert_eq!(issued.order.ca_directory, world.cas[1].directory_url());
    assert_eq!(world.cas[0].orders_asked(), 0, "the first CA was not asked");
}

#[tokio::test]
async fn a_manual_renewal_caa_forbids_is_refused_and_asks_no_ca() {
    let world = World::new(1, |_| {}).await;
    let view = world.active("shop.renewed.test").await;
    let asked = world.cas[0].orders_asked();
    world.forbid_by_caa("renewed.test", "other-ca.example");

    let refused = renew_now(&world.state, &world.pollers, &view.id, World::origin()).await;

    assert!(matches!(refused, Err(RenewError::Caa(_))), "{refused:?}");
    assert_eq!(world.cas[0].orders_asked(), asked);
}

#[tokio::test]
async fn with_caa_check_warn_a_forbidden_order_is_placed_anyway() {
    let world = World::new(1, |settings| settings.caa_check = CaaCheck::Warn).await;
    let view = world.verified("shop.warned.test").await;
    world.forbid_by_caa("warned.test", "other-ca.example");

    issue(&world.state, &world.pollers, &view.id, World::origin())
        .await
        .expect("placed anyway");

    assert_eq!(world.cas[0].orders_asked(), 1);
}

#[tokio::test]
async fn with_caa_check_off_caa_is_not_looked_up() {
    let world = World::new(1, |settings| settings.caa_check = CaaCheck::Off).await;
    let view = world.verified("shop.off.test").await;
    world.forbid_by_caa("off.test", "other-ca.example");

    issue(&world.state, &world.pollers, &view.id, World::origin())
        .await
        .expect("placed");

    assert_eq!(world.cas[0].orders_asked(), 1);
}

#[tokio::test]
async fn a_failed_caa_lookup_does_not_block_the_order() {
    let world = World::new(1, |_| {}).await;
    let view = world.verified("shop.servfail.test").await;
    world.set_caa("shop.servfail.test", None);
    // Above the failure, a record that would forbid: the climb stops at the failure.
    world.forbid_by_caa("servfail.test", "other-ca.example");

    issue(&world.state, &world.pollers, &view.id, World::origin())
        .await
        .expect("placed despite the failed lookup");

    assert_eq!(world.cas[0].orders_asked(), 1);
}

#[tokio::test]
async fn issuewild_governs_the_wildcard_of_an_order_but_not_its_apex() {
    let world = World::new(2, |_| {}).await;
    let view = crate::use_cases::register::register(
        &world.state,
        "wild.test",
        &["*.wild.test".to_owned()],
        World::origin(),
    )
    .await
    .expect("registered");
    world.publish_verification(&view);
    crate::use_cases::verify::verify(&world.state, &view.id, World::origin())
        .await
        .expect("verified");
    // The apex may go to either CA, the wildcard only to the second.
    world.set_caa(
        "wild.test",
        Some(vec![
            caa_issue("issue", "ca1.test"),
            caa_issue("issue", "ca2.test"),
            caa_issue("issuewild", "ca2.test"),
        ]),
    );

    let issued = issue(&world.state, &world.pollers, &view.id, World::origin())
        .await
        .expect("placed");

    assert_eq!(issued.order.ca_directory, world.cas[1].directory_url());
    assert_eq!(world.cas[0].orders_asked(), 0);
}
