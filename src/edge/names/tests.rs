use chrono::Duration;

use super::*;

fn entry(domain: &str, certificate: &str) -> ServedEntry {
    ServedEntry {
        domain_id: domain.to_owned(),
        certificate_id: certificate.to_owned(),
        not_after: Utc::now() + Duration::days(90),
    }
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|name| (*name).to_owned()).collect()
}

/// The certificate id serving `name` now.
fn served(index: &NameIndex, name: &str) -> Option<String> {
    index
        .lookup(name, Utc::now())
        .expect("a host name")
        .map(|entry| entry.certificate_id.clone())
}

#[test]
fn a_domain_s_name_and_alt_names_are_found_whatever_their_case_and_a_trailing_dot() {
    let mut index = NameIndex::default();
    index.serve(
        &names(&["shop.example.test", "www.shop.example.test"]),
        entry("d1", "c1"),
    );
    for name in [
        "shop.example.test",
        "SHOP.Example.test",
        "www.shop.example.test.",
    ] {
        assert_eq!(served(&index, name).as_deref(), Some("c1"), "{name}");
    }
    assert_eq!(served(&index, "other.example.test"), None);
}

#[test]
fn a_wildcard_covers_exactly_one_more_label() {
    let mut index = NameIndex::default();
    index.serve(
        &names(&["shop.example.test", "*.shop.example.test"]),
        entry("d1", "c1"),
    );
    assert_eq!(served(&index, "a.shop.example.test").as_deref(), Some("c1"));
    assert_eq!(
        served(&index, "a.b.shop.example.test"),
        None,
        "two labels more"
    );
    assert_eq!(served(&index, "example.test"), None);
}

#[test]
fn an_exact_name_wins_over_a_wildcard_of_another_domain() {
    let mut index = NameIndex::default();
    index.serve(&names(&["*.shop.example.test"]), entry("wild", "cw"));
    index.serve(&names(&["api.shop.example.test"]), entry("api", "ca"));
    assert_eq!(
        served(&index, "api.shop.example.test").as_deref(),
        Some("ca")
    );
    assert_eq!(
        served(&index, "www.shop.example.test").as_deref(),
        Some("cw")
    );
}

#[test]
fn an_internationalised_name_is_found_by_its_unicode_and_its_a_label_form() {
    let mut index = NameIndex::default();
    index.serve(&names(&["xn--bcher-kva.example.test"]), entry("d1", "c1"));
    assert_eq!(served(&index, "bücher.example.test").as_deref(), Some("c1"));
    assert_eq!(
        served(&index, "XN--BCHER-KVA.example.test").as_deref(),
        Some("c1")
    );
}

#[test]
fn a_renewal_replaces_the_certificate_and_drops_names_the_domain_no_longer_has() {
    let mut index = NameIndex::default();
    index.serve(
        &names(&["shop.example.test", "old.shop.example.test"]),
        entry("d1", "c1"),
    );
    index.serve(&names(&["shop.example.test"]), entry("d1", "c2"));
    assert_eq!(served(&index, "shop.example.test").as_deref(), Some("c2"));
    assert_eq!(served(&index, "old.shop.example.test"), None);
    assert_eq!(index.len(), 1);
}

#[test]
fn a_withdrawn_domain_is_found_no_more_and_leaves_a_name_another_domain_took() {
    let mut index = NameIndex::default();
    index.serve(
        &names(&["shop.example.test", "*.shop.example.test"]),
        entry("d1", "c1"),
    );
    index.withdraw("d1");
    assert_eq!(served(&index, "shop.example.test"), None);
    assert_eq!(served(&index, "x.shop.example.test"), None);
    assert!(index.is_empty());
    // A name served by a new domain before the old one is withdrawn stays with the new one.
    index.serve(&names(&["shop.example.test"]), entry("d1", "c1"));
    index.serve(&names(&["shop.example.test"]), entry("d2", "c2"));
    index.withdraw("d1");
    assert_eq!(served(&index, "shop.example.test").as_deref(), Some("c2"));
}

#[test]
fn a_certificate_past_its_end_is_not_served() {
    let mut index = NameIndex::default();
    let mut expired = entry("d1", "c1");
    expired.not_after = Utc::now() - Duration::seconds(1);
    index.serve(&names(&["shop.example.test"]), expired);
    assert_eq!(served(&index, "shop.example.test"), None);
}

#[test]
fn a_server_name_that_is_not_a_host_name_is_refused() {
    let index = NameIndex::default();
    for name in [
        "",
        "two words.example",
        "a..example.test",
        "127.0.0.1",
        &"x".repeat(300),
    ] {
        assert!(index.lookup(name, Utc::now()).is_err(), "{name:?}");
    }
}

#[test]
fn withdrawing_a_certificate_the_domain_no_longer_serves_leaves_the_one_it_serves() {
    let mut index = NameIndex::default();
    index.serve(&names(&["shop.example"]), entry("d1", "c2"));
    index.withdraw_certificate("d1", "c1");
    assert_eq!(served(&index, "shop.example").as_deref(), Some("c2"));
    assert_eq!(
        index.served("d1").map(|e| e.certificate_id.as_str()),
        Some("c2")
    );
    index.withdraw_certificate("d1", "c2");
    assert_eq!(served(&index, "shop.example"), None);
    assert!(index.served("d1").is_none() && index.is_empty());
}
