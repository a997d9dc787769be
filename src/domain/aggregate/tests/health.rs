//! Health: a change of outcome is recorded once, a check that finds the same records nothing,
//! and a failed lookup changes nothing.

use dns_handling_events::{CheckOutcome, HealthReport, NameCheck};

use super::*;

fn active() -> Vec<CustomDomainEvent> {
    vec![registered(), verified(), requested(), observed(), issued()]
}

fn routing(outcome: CheckOutcome, found: &str) -> HealthReport {
    HealthReport {
        routing: vec![NameCheck {
            name: "shop.example.com".into(),
            outcome,
            expected: "edge.platform.test,203.0.113.0/24".into(),
            found: found.into(),
        }],
        ..HealthReport::default()
    }
}

/// `MOVED_AFTER` in these tests: 72 hours, as by default.
fn moved_after() -> Duration {
    Duration::hours(72)
}

fn check(report: HealthReport, at: DateTime<Utc>) -> CustomDomainCommand {
    CustomDomainCommand::RecordHealth {
        report,
        moved_after: moved_after(),
        at,
    }
}

fn hours(hours: i64) -> DateTime<Utc> {
    t(100) + Duration::hours(hours)
}

/// An active domain whose name routed to the platform, then elsewhere from `hours(0)` on.
fn gone_since_hour_zero() -> Vec<CustomDomainEvent> {
    let mut given = active();
    given.push(changed(routing(CheckOutcome::Ok, "203.0.113.7"), t(90)));
    given.push(changed(
        routing(CheckOutcome::Elsewhere, "198.51.100.1"),
        hours(0),
    ));
    given
}

fn moved(lost: DateTime<Utc>, at: DateTime<Utc>) -> CustomDomainEvent {
    CustomDomainEvent::DomainMoved {
        routing_lost_at: lost,
        moved_at: at,
    }
}

fn changed(report: HealthReport, at: DateTime<Utc>) -> CustomDomainEvent {
    CustomDomainEvent::HealthChanged {
        report,
        checked_at: at,
    }
}

#[test]
fn the_first_check_with_outcomes_is_recorded() {
    DomainTest::with(RenewalPolicy::default())
        .given(active())
        .when(check(routing(CheckOutcome::Ok, "203.0.113.7"), t(100)))
        .then_expect_events(vec![changed(
            routing(CheckOutcome::Ok, "203.0.113.7"),
            t(100),
        )]);
}

#[test]
fn a_check_with_the_outcomes_last_recorded_records_nothing() {
    let mut given = active();
    given.push(changed(routing(CheckOutcome::Ok, "203.0.113.7"), t(100)));
    // Another address inside the targets is the same outcome: no change.
    DomainTest::with(RenewalPolicy::default())
        .given(given)
        .when(check(routing(CheckOutcome::Ok, "203.0.113.8"), t(200)))
        .then_expect_events(vec![]);
}

#[test]
fn a_check_with_nothing_configured_records_nothing() {
    DomainTest::with(RenewalPolicy::default())
        .given(active())
        .when(check(HealthReport::default(), t(100)))
        .then_expect_events(vec![]);
}

#[test]
fn a_name_pointing_elsewhere_is_recorded_as_a_change() {
    let mut given = active();
    given.push(changed(routing(CheckOutcome::Ok, "203.0.113.7"), t(100)));
    DomainTest::with(RenewalPolicy::default())
        .given(given)
        .when(check(
            routing(CheckOutcome::Elsewhere, "198.51.100.1"),
            t(200),
        ))
        .then_expect_events(vec![changed(
            routing(CheckOutcome::Elsewhere, "198.51.100.1"),
            t(200),
        )]);
}

#[test]
fn a_name_pointing_back_is_recorded_as_a_change() {
    let mut given = active();
    given.push(changed(routing(CheckOutcome::Ok, "203.0.113.7"), t(100)));
    given.push(changed(routing(CheckOutcome::Missing, "NXDOMAIN"), t(200)));
    DomainTest::with(RenewalPolicy::default())
        .given(given)
        .when(check(routing(CheckOutcome::Ok, "203.0.113.7"), t(300)))
        .then_expect_events(vec![changed(
            routing(CheckOutcome::Ok, "203.0.113.7"),
            t(300),
        )]);
}

#[test]
fn a_failed_lookup_changes_nothing_recorded() {
    let mut given = active();
    given.push(changed(
        routing(CheckOutcome::Elsewhere, "198.51.100.1"),
        t(100),
    ));
    DomainTest::with(RenewalPolicy::default())
        .given(given)
        .when(check(routing(CheckOutcome::Unknown, "SERVFAIL"), t(200)))
        .then_expect_events(vec![]);
}

#[test]
fn a_failed_first_lookup_is_recorded_as_unknown() {
    DomainTest::with(RenewalPolicy::default())
        .given(active())
        .when(check(routing(CheckOutcome::Unknown, "SERVFAIL"), t(100)))
        .then_expect_events(vec![changed(
            routing(CheckOutcome::Unknown, "SERVFAIL"),
            t(100),
        )]);
}

#[test]
fn a_removed_domain_refuses_a_health_report() {
    let mut given = active();
    given.push(CustomDomainEvent::DomainRemoved {
        domain_name: "shop.example.com".into(),
        removed_at: t(50),
    });
    DomainTest::with(RenewalPolicy::default())
        .given(given)
        .when(check(routing(CheckOutcome::Ok, "203.0.113.7"), t(100)))
        .then_expect_error(DomainError::Removed);
}

#[test]
fn a_name_still_elsewhere_before_moved_after_stays_active() {
    DomainTest::with(RenewalPolicy::default())
        .given(gone_since_hour_zero())
        .when(check(
            routing(CheckOutcome::Elsewhere, "198.51.100.1"),
            hours(71),
        ))
        .then_expect_events(vec![]);
}

#[test]
fn a_name_elsewhere_for_moved_after_makes_the_domain_moved() {
    DomainTest::with(RenewalPolicy::default())
        .given(gone_since_hour_zero())
        .when(check(routing(CheckOutcome::Missing, "NXDOMAIN"), hours(72)))
        .then_expect_events(vec![
            changed(routing(CheckOutcome::Missing, "NXDOMAIN"), hours(72)),
            moved(hours(0), hours(72)),
        ]);
}

#[test]
fn a_failed_lookup_never_makes_a_domain_moved() {
    DomainTest::with(RenewalPolicy::default())
        .given(gone_since_hour_zero())
        .when(check(
            routing(CheckOutcome::Unknown, "SERVFAIL"),
            hours(100),
        ))
        .then_expect_events(vec![]);
}

#[test]
fn routing_back_in_between_starts_moved_after_again() {
    let mut given = gone_since_hour_zero();
    given.push(changed(routing(CheckOutcome::Ok, "203.0.113.7"), hours(10)));
    given.push(changed(
        routing(CheckOutcome::Elsewhere, "198.51.100.1"),
        hours(20),
    ));
    DomainTest::with(RenewalPolicy::default())
        .given(given)
        .when(check(
            routing(CheckOutcome::Elsewhere, "198.51.100.1"),
            hours(80),
        ))
        .then_expect_events(vec![]);
}

#[test]
fn a_moved_domain_routing_back_returns_to_active() {
    let mut given = gone_since_hour_zero();
    given.push(moved(hours(0), hours(72)));
    DomainTest::with(RenewalPolicy::default())
        .given(given)
        .when(check(routing(CheckOutcome::Ok, "203.0.113.7"), hours(80)))
        .then_expect_events(vec![
            changed(routing(CheckOutcome::Ok, "203.0.113.7"), hours(80)),
            CustomDomainEvent::DomainReturned {
                status: DomainStatus::Active,
                returned_at: hours(80),
            },
        ]);
}

#[test]
fn a_moved_domain_whose_certificate_ended_returns_to_expired() {
    let mut given = gone_since_hour_zero();
    given.push(moved(hours(0), hours(72)));
    let after_the_end = t(91 * 86_400);
    DomainTest::with(RenewalPolicy::default())
        .given(given)
        .when(check(
            routing(CheckOutcome::Ok, "203.0.113.7"),
            after_the_end,
        ))
        .then_expect_events(vec![
            changed(routing(CheckOutcome::Ok, "203.0.113.7"), after_the_end),
            CustomDomainEvent::DomainReturned {
                status: DomainStatus::Expired,
                returned_at: after_the_end,
            },
        ]);
}

#[test]
fn a_moved_domain_refuses_a_renewal() {
    let mut given = gone_since_hour_zero();
    given.push(moved(hours(0), hours(72)));
    DomainTest::with(RenewalPolicy::default())
        .given(given)
        .when(CustomDomainCommand::RequestRenewal {
            order: renewal_order(),
            reason: RenewalReason::Manual,
            replaces: None,
            at: hours(73),
        })
        .then_expect_error(DomainError::WrongStatus {
            required: DomainStatus::Active,
            actual: DomainStatus::Moved,
        });
}
