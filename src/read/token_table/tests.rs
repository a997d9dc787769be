//! The table of managed tokens: what it accepts, from where, and what a revocation does.

use chrono::Duration;

use super::*;

const SECRET: &str = "dnsh_0123456789abcdefghijklmnopqrstuvwxyzABCDEFG";

fn hex(digest: SecretDigest) -> String {
    digest.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn created(allowed_from: &[&str], expires_at: Option<DateTime<Utc>>) -> AccessTokenEvent {
    AccessTokenEvent::TokenCreated {
        name: "deploys".into(),
        role: "auditor".into(),
        tenant: None,
        secret_sha256: hex(digest_of(SECRET)),
        expires_at,
        allowed_from: allowed_from.iter().map(|p| (*p).to_owned()).collect(),
        created_at: Utc::now(),
    }
}

fn table_of(events: Vec<(&str, AccessTokenEvent)>) -> TokenTable {
    let mut tokens = Tokens::default();
    for (id, event) in events {
        tokens.apply(id, event);
    }
    let table = TokenTable::default();
    table.replace(tokens);
    table
}

#[test]
fn a_created_token_is_found_by_its_secret_and_nothing_else_is() {
    let table = table_of(vec![("t1", created(&[], None))]);
    let found = table.find(SECRET).expect("found");
    assert_eq!(&*found.id, "t1");
    assert_eq!(found.role, TokenRole::Auditor);
    assert!(table.find(&format!("{SECRET}x")).is_none());
    assert!(table.find("dnsh_").is_none());
}

#[test]
fn a_revoked_token_is_no_longer_found() {
    let table = table_of(vec![
        ("t1", created(&[], None)),
        (
            "t1",
            AccessTokenEvent::TokenRevoked {
                revoked_at: Utc::now(),
            },
        ),
    ]);
    assert!(table.find(SECRET).is_none());
    assert!(table.is_empty());
}

#[test]
fn a_token_past_its_end_is_expired() {
    let now = Utc::now();
    let table = table_of(vec![("t1", created(&[], Some(now)))]);
    let found = table
        .find(SECRET)
        .expect("found, and then refused as expired");
    assert!(found.is_expired(now));
    assert!(!found.is_expired(now - Duration::seconds(1)));
}

#[test]
fn a_token_with_prefixes_admits_only_addresses_inside_them() {
    let table = table_of(vec![(
        "t1",
        created(&["10.0.0.0/8", "2001:db8::/32"], None),
    )]);
    let found = table.find(SECRET).expect("found");
    let at = |text: &str| Some(text.parse::<IpAddr>().expect("an address"));
    assert!(found.admits(at("10.1.2.3")));
    assert!(found.admits(at("::ffff:10.1.2.3")), "mapped IPv4 is IPv4");
    assert!(found.admits(at("2001:db8::5")));
    assert!(!found.admits(at("127.0.0.1")));
    assert!(!found.admits(None), "no peer address, no admission");
    let open = table_of(vec![("t2", created(&[], None))]);
    assert!(open.find(SECRET).expect("found").admits(at("127.0.0.1")));
}

#[test]
fn a_token_whose_prefixes_no_longer_read_is_refused_rather_than_open() {
    let table = table_of(vec![("t1", created(&["not a prefix"], None))]);
    assert!(table.find(SECRET).is_none());
}

#[test]
fn a_use_is_due_once_a_minute_per_token() {
    let table = table_of(vec![("t1", created(&[], None))]);
    let found = table.find(SECRET).expect("found");
    let now = Utc::now();
    assert!(found.use_due(now));
    assert!(!found.use_due(now + Duration::seconds(30)));
    assert!(found.use_due(now + Duration::seconds(USE_NOTED_EVERY_SECONDS)));
}

#[test]
fn the_table_is_not_ready_until_built() {
    let table = TokenTable::default();
    assert!(table.readiness_problem().is_some());
    table.replace(Tokens::default());
    assert!(table.readiness_problem().is_none());
}
