use super::*;

/// An `issue`/`issuewild` record naming `domain` (`None`: `";"`) with `parameters`.
fn issuer_record(tag: &str, domain: Option<&str>, parameters: &[(&str, &str)]) -> CaaRecord {
    let mut value = domain.unwrap_or("").to_owned();
    for (key, parameter) in parameters {
        value.push_str(&format!("; {key}={parameter}"));
    }
    if domain.is_none() && parameters.is_empty() {
        value = ";".into();
    }
    CaaRecord {
        flags: 0,
        tag: tag.into(),
        value,
        issuer: Some(CaaIssuer {
            domain: domain.map(str::to_owned),
            parameters: parameters
                .iter()
                .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
                .collect(),
        }),
    }
}

fn issue(domain: &str) -> CaaRecord {
    issuer_record("issue", Some(domain), &[])
}

fn issuewild(domain: &str) -> CaaRecord {
    issuer_record("issuewild", Some(domain), &[])
}

fn ca(directory: &str, identity: &str) -> CaaCa {
    CaaCa {
        directory: directory.into(),
        identities: vec![identity.into()],
        account_uri: Some(format!("{directory}/acct/1")),
    }
}

fn first() -> CaaCa {
    ca("https://first.example/dir", "first.example")
}

fn second() -> CaaCa {
    ca("https://second.example/dir", "second.example")
}

#[test]
fn no_caa_records_leave_issuance_unrestricted() {
    assert_eq!(verdict("shop.test", &[], &first()), CaaVerdict::Permitted);
}

#[test]
fn an_issue_record_naming_the_ca_permits_it() {
    let records = [issue("other.example"), issue("FIRST.example.")];
    assert_eq!(
        verdict("shop.test", &records, &first()),
        CaaVerdict::Permitted
    );
}

#[test]
fn an_issue_record_naming_another_ca_forbids_it_and_names_the_record() {
    let records = [issue("other-ca.example")];
    let CaaVerdict::Forbidden(forbidding) = verdict("shop.test", &records, &first()) else {
        panic!("permitted");
    };
    assert_eq!(forbidding, records);
    assert_eq!(forbidding[0].to_string(), r#"0 issue "other-ca.example""#);
}

#[test]
fn an_empty_issue_value_forbids_every_ca() {
    let records = [issuer_record("issue", None, &[])];
    assert_eq!(records[0].to_string(), r#"0 issue ";""#);
    for ca in [first(), second()] {
        assert!(matches!(
            verdict("shop.test", &records, &ca),
            CaaVerdict::Forbidden(_)
        ));
    }
}

#[test]
fn an_empty_issue_value_beside_one_naming_the_ca_permits_it() {
    let records = [issuer_record("issue", None, &[]), issue("first.example")];
    assert_eq!(
        verdict("shop.test", &records, &first()),
        CaaVerdict::Permitted
    );
}

#[test]
fn records_that_restrict_nothing_leave_issuance_unrestricted() {
    let iodef = CaaRecord {
        flags: 0,
        tag: "iodef".into(),
        value: "mailto:security@shop.test".into(),
        issuer: None,
    };
    assert_eq!(
        verdict("shop.test", &[iodef], &first()),
        CaaVerdict::Permitted
    );
}

#[test]
fn an_unknown_critical_property_forbids_even_a_named_ca() {
    let unknown = CaaRecord {
        flags: 128,
        tag: "tbs".into(),
        value: "unknown".into(),
        issuer: None,
    };
    let records = [issue("first.example"), unknown.clone()];
    assert_eq!(
        verdict("shop.test", &records, &first()),
        CaaVerdict::Forbidden(vec![unknown])
    );
}

#[test]
fn an_unknown_property_that_is_not_critical_is_ignored() {
    let unknown = CaaRecord {
        flags: 0,
        tag: "tbs".into(),
        value: "unknown".into(),
        issuer: None,
    };
    let records = [issue("first.example"), unknown];
    assert_eq!(
        verdict("shop.test", &records, &first()),
        CaaVerdict::Permitted
    );
}

#[test]
fn issuewild_governs_a_wildcard_name() {
    let records = [issue("first.example"), issuewild("second.example")];
    assert!(matches!(
        verdict("*.shop.test", &records, &first()),
        CaaVerdict::Forbidden(_)
    ));
    assert_eq!(
        verdict("*.shop.test", &records, &second()),
        CaaVerdict::Permitted
    );
}

#[test]
fn issuewild_does_not_govern_a_name_that_is_not_a_wildcard() {
    let records = [issue("first.example"), issuewild("second.example")];
    assert_eq!(
        verdict("shop.test", &records, &first()),
        CaaVerdict::Permitted
    );
    assert!(matches!(
        verdict("shop.test", &records, &second()),
        CaaVerdict::Forbidden(_)
    ));
}

#[test]
fn a_wildcard_without_issuewild_records_falls_back_to_issue() {
    let records = [issue("second.example")];
    assert!(matches!(
        verdict("*.shop.test", &records, &first()),
        CaaVerdict::Forbidden(_)
    ));
    assert_eq!(
        verdict("*.shop.test", &records, &second()),
        CaaVerdict::Permitted
    );
}

#[test]
fn an_accounturi_of_the_services_account_permits_and_another_forbids() {
    let ours = issuer_record(
        "issue",
        Some("first.example"),
        &[("accounturi", "https://first.example/dir/acct/1")],
    );
    assert_eq!(
        verdict("shop.test", &[ours], &first()),
        CaaVerdict::Permitted
    );
    let theirs = issuer_record(
        "issue",
        Some("first.example"),
        &[("accounturi", "https://first.example/dir/acct/999")],
    );
    assert!(matches!(
        verdict("shop.test", std::slice::from_ref(&theirs), &first()),
        CaaVerdict::Forbidden(_)
    ));
    let unknown_account = CaaCa {
        account_uri: None,
        ..first()
    };
    assert!(matches!(
        verdict("shop.test", &[theirs], &unknown_account),
        CaaVerdict::Forbidden(_)
    ));
}

#[test]
fn validationmethods_must_allow_dns_01() {
    let http_only = issuer_record(
        "issue",
        Some("first.example"),
        &[("validationmethods", "http-01,tls-alpn-01")],
    );
    assert!(matches!(
        verdict("shop.test", &[http_only], &first()),
        CaaVerdict::Forbidden(_)
    ));
    let with_dns = issuer_record(
        "issue",
        Some("first.example"),
        &[("validationmethods", "http-01, dns-01")],
    );
    assert_eq!(
        verdict("shop.test", &[with_dns], &first()),
        CaaVerdict::Permitted
    );
}

#[test]
fn a_cas_own_parameters_do_not_forbid_it() {
    let record = issuer_record("issue", Some("first.example"), &[("account", "230123")]);
    assert_eq!(
        verdict("shop.test", &[record], &first()),
        CaaVerdict::Permitted
    );
}

#[test]
fn a_ca_without_identities_is_forbidden_where_issue_records_restrict() {
    let unnamed = CaaCa {
        identities: Vec::new(),
        ..first()
    };
    assert!(matches!(
        verdict("shop.test", &[issue("first.example")], &unnamed),
        CaaVerdict::Forbidden(_)
    ));
}

/// The names of an order and their relevant records.
fn order(names: &[(&str, Option<&str>, Vec<CaaRecord>)]) -> Vec<NameCaa> {
    names
        .iter()
        .map(|(name, at, records)| NameCaa {
            name: (*name).into(),
            found_at: at.map(str::to_owned),
            records: records.clone(),
        })
        .collect()
}

#[test]
fn an_order_forbidden_to_the_first_ca_but_permitted_to_the_second_may_go_to_the_second() {
    let names = order(&[
        ("shop.test", Some("test"), vec![issue("second.example")]),
        ("www.shop.test", None, vec![]),
    ]);
    let decision = decide(&names, &[first(), second()]);
    assert!(!decision.permits(0));
    assert!(decision.permits(1));
    assert!(!decision.forbids_all());
    let refused = &decision.refusals[0][0];
    assert_eq!(refused.name, "shop.test");
    assert_eq!(refused.found_at, "test");
    assert_eq!(refused.forbidding, [r#"0 issue "second.example""#]);
    assert_eq!(
        refused.allows_other,
        Some((
            "https://second.example/dir".to_owned(),
            r#"0 issue "second.example""#.to_owned()
        ))
    );
    assert_eq!(
        refused.would_allow.as_deref(),
        Some(r#"test. CAA 0 issue "first.example""#)
    );
}

#[test]
fn an_order_whose_names_each_forbid_a_different_ca_is_forbidden_to_all() {
    let names = order(&[
        ("a.test", Some("a.test"), vec![issue("second.example")]),
        ("b.test", Some("b.test"), vec![issue("first.example")]),
    ]);
    let decision = decide(&names, &[first(), second()]);
    assert!(decision.forbids_all());
    assert_eq!(decision.refusals[0][0].name, "a.test");
    assert_eq!(decision.refusals[1][0].name, "b.test");
}

#[test]
fn the_record_that_would_allow_a_wildcard_is_an_issuewild_where_issuewild_governs() {
    let names = order(&[(
        "*.shop.test",
        Some("shop.test"),
        vec![issuewild("other-ca.example")],
    )]);
    let decision = decide(&names, &[first()]);
    assert!(decision.forbids_all());
    assert_eq!(
        decision.refusals[0][0].would_allow.as_deref(),
        Some(r#"shop.test. CAA 0 issuewild "first.example""#)
    );
    assert_eq!(decision.refusals[0][0].allows_other, None);
}

#[test]
fn a_wildcards_relevant_records_are_looked_up_at_its_base_name() {
    assert_eq!(caa_base_name("*.shop.test"), "shop.test");
    assert_eq!(caa_base_name("shop.test"), "shop.test");
}
