//! Revoking a certificate while something else starts its replacement.

use std::time::Duration;

use dns_handling_events::{RenewalReason, RevocationReason};

use super::World;
use crate::use_cases::renew::{renewal_lease, start_renewal};
use crate::use_cases::revoke::revoke;
use crate::use_cases::work_lease::WorkLease;

#[tokio::test]
async fn a_revocation_whose_replacement_the_scheduler_is_ordering_answers_once_it_shows() {
    let world = World::new(1, |_| {}).await;
    let view = world.active("busy.revoke.test").await;
    // The scheduler holds the domain's renewal lease, as when it saw the revoked certificate
    // due the moment it was recorded.
    let lease = WorkLease::take(&world.state, renewal_lease(&view.id), "scheduler")
        .await
        .expect("the store")
        .expect("the lease is free");
    let scheduler = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        lease.release().await;
        let revoked = world.view(&view.id).await;
        start_renewal(
            &world.state,
            &world.pollers,
            &revoked,
            RenewalReason::Revoked,
            World::origin(),
        )
        .await
        .expect("the scheduler orders the replacement");
    };
    let revoking = revoke(
        &world.state,
        &world.pollers,
        &view.id,
        RevocationReason::KeyCompromise,
        World::origin(),
    );
    let (answered, ()) = tokio::join!(revoking, scheduler);
    let answered = answered.expect("revoked");
    let renewal = answered.renewal.expect("a renewal");
    assert!(renewal.in_progress, "{renewal:?}");
    assert_eq!(renewal.reason, Some(RenewalReason::Revoked));
}
