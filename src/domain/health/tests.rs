//! The routing, delegation and CAA judgements, and what a report with failed lookups settles to.

use super::*;
use crate::domain::caa::{CaaIssuer, CaaRecord};

fn targets() -> RoutingTargets {
    RoutingTargets::parse("edge.platform.test, 203.0.113.0/24,2001:db8::/32").expect("targets")
}

fn found(aliases: &[&str], addresses: &[&str]) -> Resolution {
    Resolution::Found {
        aliases: aliases.iter().map(|alias| (*alias).to_owned()).collect(),
        addresses: addresses
            .iter()
            .map(|address| address.parse().expect("an address"))
            .collect(),
    }
}

fn check(name: &str, outcome: CheckOutcome) -> NameCheck {
    NameCheck {
        name: name.into(),
        outcome,
        expected: "e".into(),
        found: "f".into(),
    }
}

#[test]
fn routing_targets_are_host_names_addresses_and_prefixes() {
    let targets = targets();
    assert_eq!(targets.hosts, ["edge.platform.test"]);
    assert_eq!(targets.networks.len(), 2);
    let single = RoutingTargets::parse("192.0.2.7").expect("an address");
    assert!(single.contains("192.0.2.7".parse().expect("ip")));
    assert!(!single.contains("192.0.2.8".parse().expect("ip")));
    assert!(RoutingTargets::parse("").expect("empty").is_empty());
}

#[test]
fn a_malformed_prefix_or_name_is_refused() {
    assert!(RoutingTargets::parse("203.0.113.0/99").is_err());
    assert!(RoutingTargets::parse("bad name!").is_err());
}

#[test]
fn an_address_inside_a_target_prefix_routes_ok() {
    let check = routing_check(&targets(), "shop.test", &found(&[], &["203.0.113.7"]));
    assert_eq!(check.outcome, CheckOutcome::Ok);
    assert_eq!(check.found, "203.0.113.7");
    let v6 = routing_check(&targets(), "shop.test", &found(&[], &["2001:db8::1"]));
    assert_eq!(v6.outcome, CheckOutcome::Ok);
}

#[test]
fn a_cname_chain_reaching_a_target_host_routes_ok_whatever_its_addresses() {
    let check = routing_check(
        &targets(),
        "www.shop.test",
        &found(&["lb.users.test", "EDGE.platform.test."], &["192.0.2.1"]),
    );
    assert_eq!(check.outcome, CheckOutcome::Ok);
}

#[test]
fn an_address_outside_every_target_routes_elsewhere_and_says_what_it_found() {
    let check = routing_check(
        &targets(),
        "shop.test",
        &found(&["other-host.example"], &["198.51.100.1"]),
    );
    assert_eq!(check.outcome, CheckOutcome::Elsewhere);
    assert_eq!(check.found, "CNAME other-host.example, 198.51.100.1");
    assert!(check.expected.contains("edge.platform.test"));
    assert!(check.expected.contains("203.0.113.0/24"));
}

#[test]
fn no_such_name_or_no_address_is_missing_and_a_failed_lookup_is_unknown() {
    let nx = routing_check(&targets(), "gone.test", &Resolution::NoSuchName);
    assert_eq!(nx.outcome, CheckOutcome::Missing);
    let empty = routing_check(&targets(), "gone.test", &found(&[], &[]));
    assert_eq!(empty.outcome, CheckOutcome::Missing);
    let failed = routing_check(
        &targets(),
        "shop.test",
        &Resolution::Failed("SERVFAIL".into()),
    );
    assert_eq!(failed.outcome, CheckOutcome::Unknown);
    assert_eq!(failed.found, "SERVFAIL");
}

#[test]
fn wildcard_names_are_not_routed() {
    let names = vec![
        "shop.test".to_owned(),
        "*.shop.test".to_owned(),
        "www.shop.test".to_owned(),
    ];
    assert_eq!(routed_names(&names), ["shop.test", "www.shop.test"]);
}

#[test]
fn a_delegation_cname_to_its_record_is_ok_and_otherwise_says_what_was_seen() {
    let zone = DelegationZone::parse("acme.platform.test").expect("zone");
    let record = zone.record_for("token", "shop.test");
    let ok = delegation_check("shop.test", &record, Ok(Some(&record.target)));
    assert_eq!(ok.outcome, CheckOutcome::Ok);
    let gone = delegation_check("shop.test", &record, Ok(None));
    assert_eq!(gone.outcome, CheckOutcome::Missing);
    assert!(gone.expected.contains(&record.target));
    let wrong = delegation_check("shop.test", &record, Ok(Some("other.example.")));
    assert_eq!(wrong.outcome, CheckOutcome::Elsewhere);
    assert_eq!(wrong.found, "CNAME other.example.");
    let failed = delegation_check("shop.test", &record, Err("timeout"));
    assert_eq!(failed.outcome, CheckOutcome::Unknown);
}

fn issue(domain: &str) -> CaaRecord {
    CaaRecord {
        flags: 0,
        tag: "issue".into(),
        value: domain.into(),
        issuer: Some(CaaIssuer {
            domain: Some(domain.into()),
            parameters: Vec::new(),
        }),
    }
}

fn ca(identity: &str) -> CaaCa {
    CaaCa {
        directory: format!("https://{identity}/dir"),
        identities: vec![identity.into()],
        account_uri: None,
    }
}

fn relevant(records: Vec<CaaRecord>) -> NameCaa {
    NameCaa {
        name: "shop.test".into(),
        found_at: Some("test".into()),
        records,
    }
}

#[test]
fn caa_permitting_one_configured_ca_is_ok_and_permitting_none_is_forbidden() {
    let cas = [ca("first.example"), ca("second.example")];
    let second = relevant(vec![issue("second.example")]);
    assert_eq!(
        caa_check("shop.test", Ok(&second), &cas).outcome,
        CheckOutcome::Ok
    );
    let other = relevant(vec![issue("other-ca.example")]);
    let forbidden = caa_check("shop.test", Ok(&other), &cas);
    assert_eq!(forbidden.outcome, CheckOutcome::Forbidden);
    assert_eq!(forbidden.found, r#"0 issue "other-ca.example" at test"#);
    let none = relevant(Vec::new());
    assert_eq!(
        caa_check("shop.test", Ok(&none), &cas).outcome,
        CheckOutcome::Ok
    );
}

#[test]
fn caa_that_cannot_be_read_or_judged_is_unknown() {
    let cas = [ca("first.example")];
    assert_eq!(
        caa_check("shop.test", Err("SERVFAIL"), &cas).outcome,
        CheckOutcome::Unknown
    );
    let other = relevant(vec![issue("other-ca.example")]);
    assert_eq!(
        caa_check("shop.test", Ok(&other), &[]).outcome,
        CheckOutcome::Unknown
    );
}

#[test]
fn an_unknown_outcome_keeps_the_last_recorded_one_for_its_name() {
    let last = HealthReport {
        routing: vec![
            check("shop.test", CheckOutcome::Ok),
            check("www.shop.test", CheckOutcome::Elsewhere),
        ],
        ..HealthReport::default()
    };
    let report = HealthReport {
        routing: vec![
            check("shop.test", CheckOutcome::Unknown),
            check("www.shop.test", CheckOutcome::Ok),
            check("new.shop.test", CheckOutcome::Unknown),
        ],
        ..HealthReport::default()
    };
    let settled = settled(Some(&last), report);
    let outcomes: Vec<CheckOutcome> = settled.routing.iter().map(|c| c.outcome).collect();
    assert_eq!(
        outcomes,
        [CheckOutcome::Ok, CheckOutcome::Ok, CheckOutcome::Unknown]
    );
}

#[test]
fn a_moved_domain_is_removed_only_once_moved_remove_after_has_passed_and_never_when_unset() {
    let moved = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
        .expect("a time")
        .to_utc();
    let week = Some(chrono::Duration::days(7));
    let later = |days| moved + chrono::Duration::days(days);
    assert!(!moved_long_enough(moved, week, later(6)));
    assert!(moved_long_enough(moved, week, later(7)));
    assert!(!moved_long_enough(moved, None, later(365)));
}
