//! Issuing: what is refused before the CA is asked, what each CA answer leads to, the budgets.

use dns_handling_events::{DomainStatus, FailureReason};

use super::World;
use crate::adapters::acme::AcmeError;
use crate::adapters::acme::CertificateAuthority as _;
use crate::domain::aggregate::DomainError;
use crate::use_cases::budgets::NEW_ORDERS;
use crate::use_cases::issue::{issue, IssueError};
use crate::use_cases::remove::remove;
use crate::use_cases::DomainMissing;

/// How many units of `directory`'s new-order budget are left, of `limit`.
async fn new_orders_left(world: &World, directory: &str, limit: u32) -> bool {
    let window = chrono::Duration::hours(3);
    let left = world
        .state
        .store
        .budget_left(NEW_ORDERS, &[directory.to_owned()], limit, window)
        .await
        .expect("read");
    left.is_ok()
}

fn refused() -> AcmeError {
    AcmeError::Refused(FailureReason::new(
        "rejectedIdentifier",
        "not for this name",
    ))
}

#[tokio::test]
async fn an_unverified_domain_is_refused_by_the_aggregate_before_any_ca_is_asked() {
    let world = World::new(1, |_| {}).await;
    let view = world.registered("pending.example.com").await;

    let error = issue(&world.state, &world.pollers, &view.id, World::origin())
        .await
        .expect_err("refused");

    assert!(
        matches!(
            error,
            IssueError::Refused(DomainError::WrongStatus {
                required: DomainStatus::Verified,
                actual: DomainStatus::Pending,
            })
        ),
        "{error:?}"
    );
    assert_eq!(world.cas[0].orders_asked(), 0, "the CA was not asked");
    assert_eq!(world.pollers.orders(), 0);
}

#[tokio::test]
async fn a_removed_domain_is_missing_and_no_ca_is_asked() {
    let world = World::new(1, |_| {}).await;
    let view = world.verified("gone.example.com").await;
    remove(
        &world.state,
        &world.pollers,
        &view.id,
        false,
        World::origin(),
    )
    .await
    .expect("removed");

    let error = issue(&world.state, &world.pollers, &view.id, World::origin())
        .await
        .expect_err("missing");

    assert!(
        matches!(&error, IssueError::Missing(DomainMissing::Removed(id)) if *id == view.id),
        "{error:?}"
    );
    assert_eq!(world.cas[0].orders_asked(), 0);
    assert_eq!(*world.pollers.stopped.lock().expect("lock"), [view.id]);
}

#[tokio::test]
async fn a_ca_refusal_is_the_answer_and_no_other_ca_is_asked() {
    let world = World::new(2, |_| {}).await;
    let view = world.verified("refused.example.com").await;
    world.cas[0].fails_next(refused());

    let error = issue(&world.state, &world.pollers, &view.id, World::origin())
        .await
        .expect_err("refused");

    assert!(
        matches!(error, IssueError::Ca(AcmeError::Refused(_))),
        "{error:?}"
    );
    assert_eq!(
        world.cas[1].orders_asked(),
        0,
        "no fallback after a refusal"
    );
    assert_eq!(world.view(&view.id).await.status, DomainStatus::Verified);
}

#[tokio::test]
async fn an_unreachable_ca_gives_its_budget_unit_back_and_the_next_ca_takes_the_order() {
    let world = World::new(2, |settings| settings.acme_new_order_budget.limit = 1).await;
    let view = world.verified("fallback.example.com").await;
    world.cas[0].fails_next(AcmeError::unreachable(
        "connect",
        std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
    ));

    let issued = issue(&world.state, &world.pollers, &view.id, World::origin())
        .await
        .expect("the second CA placed it");

    let (first, second) = (world.cas[0].directory_url(), world.cas[1].directory_url());
    assert_eq!(issued.order.ca_directory, second);
    assert!(
        new_orders_left(&world, first, 1).await,
        "the unit spent on the CA that never got the order is back"
    );
    assert!(
        !new_orders_left(&world, second, 1).await,
        "the order spent one"
    );
    assert_eq!(world.pollers.orders(), 1);
    let status = world.view(&view.id).await.status;
    assert_eq!(status, DomainStatus::CertificatePending);
}

#[tokio::test]
async fn when_no_ca_takes_the_order_the_first_not_now_is_the_answer_and_nothing_is_recorded() {
    let world = World::new(2, |_| {}).await;
    let view = world.verified("busy.example.com").await;
    let not_now = AcmeError::RateLimited {
        detail: "too many orders".into(),
        retry_after: None,
    };
    world.cas[0].fails_next(not_now);
    world.cas[1].fails_next(AcmeError::unreachable(
        "connect",
        std::io::Error::from(std::io::ErrorKind::TimedOut),
    ));

    let error = issue(&world.state, &world.pollers, &view.id, World::origin())
        .await
        .expect_err("no CA took it");

    assert!(
        matches!(error, IssueError::Ca(AcmeError::RateLimited { .. })),
        "{error:?}"
    );
    assert_eq!(world.view(&view.id).await.status, DomainStatus::Verified);
    assert_eq!(world.pollers.orders(), 0);
}

#[tokio::test]
async fn a_spent_new_order_budget_answers_budget_spent_and_records_nothing() {
    let world = World::new(1, |settings| settings.acme_new_order_budget.limit = 1).await;
    let first = world.verified("first.example.com").await;
    let second = world.verified("second.example.com").await;
    issue(&world.state, &world.pollers, &first.id, World::origin())
        .await
        .expect("the budget's one unit");

    let error = issue(&world.state, &world.pollers, &second.id, World::origin())
        .await
        .expect_err("spent");

    assert!(
        matches!(error, IssueError::Ca(AcmeError::BudgetSpent { .. })),
        "{error:?}"
    );
    assert_eq!(world.cas[0].orders_asked(), 1, "the CA was not asked again");
    assert_eq!(world.view(&second.id).await.status, DomainStatus::Verified);
    assert_eq!(world.pollers.orders(), 1);
}
