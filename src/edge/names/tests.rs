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
        index.served("d1").map(|e| e.certificate_id).as_deref(),
        Some("c2")
    );
    index.withdraw_certificate("d1", "c2");
    assert_eq!(served(&index, "shop.example"), None);
    assert!(index.served("d1").is_none() && index.is_empty());
}

#[test]
fn a_withdrawn_domain_s_slot_and_names_are_freed_and_another_domain_may_serve_the_names() {
    let mut index = NameIndex::default();
    let shop = names(&["shop.example.test", "*.shop.example.test"]);
    index.serve(&shop, entry("d1", "c1"));
    index.withdraw("d1");
    assert!(
        index.slab.slots.iter().all(Option::is_none),
        "the slot, and its names with it, dropped"
    );
    assert!(index.names.is_empty() && index.domains.is_empty());
    assert_eq!(index.slab.free, [0]);

    index.serve(&shop, entry("d2", "c2"));
    assert_eq!(served(&index, "shop.example.test").as_deref(), Some("c2"));
    assert_eq!(served(&index, "x.shop.example.test").as_deref(), Some("c2"));
    assert!(index.served("d1").is_none());
    assert_eq!(
        index.served("d2").map(|e| e.certificate_id).as_deref(),
        Some("c2")
    );
}

#[test]
fn a_name_another_domain_took_stays_with_it_when_the_first_is_renewed_and_withdrawn() {
    let mut index = NameIndex::default();
    index.serve(
        &names(&[
            "shop.example.test",
            "*.shop.example.test",
            "other.example.test",
        ]),
        entry("d1", "c1"),
    );
    index.serve(
        &names(&["shop.example.test", "*.shop.example.test"]),
        entry("d2", "c2"),
    );
    // The renewal withdraws d1's names (its slot taken again at once) and serves the new ones.
    index.serve(&names(&["other.example.test"]), entry("d1", "c3"));
    assert_eq!(served(&index, "shop.example.test").as_deref(), Some("c2"));
    assert_eq!(served(&index, "x.shop.example.test").as_deref(), Some("c2"));
    assert_eq!(served(&index, "other.example.test").as_deref(), Some("c3"));

    index.withdraw("d1");
    assert_eq!(served(&index, "shop.example.test").as_deref(), Some("c2"));
    assert_eq!(served(&index, "x.shop.example.test").as_deref(), Some("c2"));
    assert_eq!(served(&index, "other.example.test"), None);
    assert_eq!(index.len(), 2);
    index.withdraw("d2");
    assert!(index.is_empty());
}

#[test]
fn a_withdrawn_domain_s_slot_is_taken_by_the_next_domain_served_before_the_slab_grows() {
    let mut index = NameIndex::default();
    index.serve(&names(&["a.example.test"]), entry("d1", "c1"));
    index.serve(&names(&["b.example.test"]), entry("d2", "c2"));
    index.withdraw("d1");
    index.serve(&names(&["c.example.test"]), entry("d3", "c3"));
    assert_eq!(index.slab.slots.len(), 2, "no new slot");
    assert_eq!(index.slab.get(0).domain_id, Id::new("d3"));
    assert!(index.slab.free.is_empty());
    assert_eq!(served(&index, "a.example.test"), None);
    assert_eq!(served(&index, "b.example.test").as_deref(), Some("c2"));
    assert_eq!(served(&index, "c.example.test").as_deref(), Some("c3"));
    assert_eq!(
        index.served("d3").map(|e| e.certificate_id).as_deref(),
        Some("c3")
    );
}

#[test]
fn ids_that_are_canonical_uuids_are_kept_in_sixteen_bytes_and_any_other_id_as_given() {
    let domain = "0193a7c2-0000-7000-8000-000000000001";
    let certificate = "0193A7C4-0000-7000-8000-000000000002";
    let mut index = NameIndex::default();
    index.serve(&names(&["shop.example.test"]), entry(domain, certificate));
    let slot = index.slab.get(0);
    assert!(matches!(slot.domain_id, Id::Uuid(_)), "{slot:?}");
    assert!(
        matches!(slot.certificate_id, Id::Text(_)),
        "upper case: kept as text"
    );

    let found = index
        .lookup("shop.example.test", Utc::now())
        .expect("a host name")
        .expect("served");
    assert_eq!(found.domain_id, domain);
    assert_eq!(found.certificate_id, certificate);
    assert!(index.served(&domain.to_uppercase()).is_none(), "another id");
    index.withdraw_certificate(domain, &certificate.to_lowercase());
    assert!(index.served(domain).is_some(), "another certificate id");
    index.withdraw_certificate(domain, certificate);
    assert!(index.is_empty());
}

#[test]
fn a_name_longer_than_any_host_name_is_not_indexed() {
    let too_long = format!("{}a.example.test", "abc.".repeat(60));
    assert_eq!(too_long.len(), 254);
    let mut index = NameIndex::default();
    index.serve(&[too_long, "shop.example.test".into()], entry("d1", "c1"));
    assert_eq!(index.len(), 1);
    assert_eq!(served(&index, "shop.example.test").as_deref(), Some("c1"));
}
