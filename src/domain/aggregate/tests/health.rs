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

fn check(report: HealthReport, at: DateTime<Utc>) -> CustomDomainCommand {
    CustomDomainCommand::RecordHealth { report, at }
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
