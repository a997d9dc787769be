//! The edge index: what each event does to it, and the follower that builds it aside and then
//! keeps it.

use std::time::Instant;

use chrono::Duration as Days;
use dns_handling_events::{IssuedCertificate, KeyDisposal, RevocationReason};

use super::*;

/// A chain whose leaf names `names`.
fn chain(names: &[&str]) -> String {
    let key = rcgen::KeyPair::generate().expect("a key");
    let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
    let params = rcgen::CertificateParams::new(names).expect("params");
    params.self_signed(&key).expect("signed").pem()
}

fn issued(certificate_id: &str, names: &[&str]) -> CustomDomainEvent {
    let now = Utc::now();
    CustomDomainEvent::CertificateIssued {
        certificate: IssuedCertificate {
            certificate_id: certificate_id.into(),
            order_id: format!("order-{certificate_id}"),
            serial: "01".into(),
            not_before: now - Days::days(1),
            not_after: now + Days::days(89),
            fingerprint_sha256: "ab".into(),
            chain_pem: chain(names),
            ca_directory: String::new(),
        },
        issued_at: now,
    }
}

/// The certificate id serving `name` now.
fn serving(index: &NameIndex, name: &str) -> Option<String> {
    let found = index.lookup(name, Utc::now()).expect("a host name");
    found.map(|entry| entry.certificate_id.clone())
}

const SHOP: [&str; 3] = ["shop.example", "www.shop.example", "*.shop.example"];

#[test]
fn an_issued_certificate_serves_every_name_of_its_leaf_and_a_renewal_replaces_it() {
    let mut index = NameIndex::default();
    apply(&mut index, "d1", &issued("c1", &SHOP));
    for name in ["shop.example", "WWW.shop.example.", "anything.shop.example"] {
        assert_eq!(serving(&index, name).as_deref(), Some("c1"), "{name}");
    }
    assert_eq!(serving(&index, "a.b.shop.example"), None, "one label only");
    apply(&mut index, "d1", &issued("c2", &["shop.example"]));
    assert_eq!(serving(&index, "shop.example").as_deref(), Some("c2"));
    assert_eq!(
        serving(&index, "www.shop.example"),
        None,
        "a name it no longer has"
    );
}

#[test]
fn revocation_expiry_key_destruction_and_removal_withdraw_the_served_certificate() {
    let now = Utc::now();
    let withdrawals = [
        CustomDomainEvent::CertificateRevoked {
            certificate_id: "c1".into(),
            reason: RevocationReason::Unspecified,
            revoked_at: now,
        },
        CustomDomainEvent::CertificateExpired {
            certificate_id: "c1".into(),
            not_after: now,
            expired_at: now,
        },
        CustomDomainEvent::CertificateKeyDestroyed {
            order_id: "order-c1".into(),
            certificate_id: Some("c1".into()),
            why: KeyDisposal::CertificateExpired,
            destroyed_at: now,
        },
        CustomDomainEvent::DomainRemoved {
            domain_name: "shop.example".into(),
            removed_at: now,
        },
    ];
    for withdrawal in withdrawals {
        let mut index = NameIndex::default();
        apply(&mut index, "d1", &issued("c1", &SHOP));
        apply(&mut index, "d1", &withdrawal);
        assert_eq!(serving(&index, "shop.example"), None, "{withdrawal:?}");
        assert!(index.is_empty(), "{withdrawal:?}");
    }
}

#[test]
fn the_revocation_of_a_replaced_certificate_leaves_the_one_in_service() {
    let mut index = NameIndex::default();
    apply(&mut index, "d1", &issued("c1", &SHOP));
    apply(&mut index, "d1", &issued("c2", &SHOP));
    let revoked = CustomDomainEvent::CertificateRevoked {
        certificate_id: "c1".into(),
        reason: RevocationReason::KeyCompromise,
        revoked_at: Utc::now(),
    };
    apply(&mut index, "d1", &revoked);
    assert_eq!(serving(&index, "shop.example").as_deref(), Some("c2"));
}

/// Appends `event` to domain `domain_id`'s stream at `sequence`.
async fn append(store: &Store, domain_id: &str, sequence: i64, event: &CustomDomainEvent) {
    let Store::Sqlite(pool) = store else {
        unreachable!("a SQLite store")
    };
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, \
         event_version, payload, metadata) VALUES ('CustomDomain', $1, $2, $3, $4, $5, '{}')",
    )
    .bind(domain_id)
    .bind(sequence)
    .bind(event.type_name())
    .bind(event.version())
    .bind(serde_json::to_string(event).expect("serialises"))
    .execute(pool)
    .await
    .expect("appends");
}

/// Waits until `check` holds, or fails saying `what`.
async fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_index_is_ready_once_built_from_the_whole_feed_and_then_follows_it() {
    let path = std::env::temp_dir().join(format!("edge-index-{}.db", uuid::Uuid::new_v4()));
    let store = Store::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("connects");
    store.migrate().await.expect("migrates");
    append(&store, "d1", 1, &issued("c1", &SHOP)).await;
    append(&store, "d2", 1, &issued("c9", &["other.example"])).await;
    let removed = CustomDomainEvent::DomainRemoved {
        domain_name: "other.example".into(),
        removed_at: Utc::now(),
    };
    append(&store, "d2", 2, &removed).await;
    let index = Arc::new(EdgeIndex::default());
    assert!(
        index.readiness_problem().is_some(),
        "not ready before it is built"
    );
    let following = tokio::spawn(follow(
        store.clone(),
        index.clone(),
        Duration::from_millis(50),
    ));

    eventually("ready", || index.readiness_problem().is_none()).await;
    let now = Utc::now();
    let served = index.lookup("x.shop.example", now).expect("a name");
    assert_eq!(
        served.map(|entry| entry.certificate_id).as_deref(),
        Some("c1")
    );
    assert!(
        index
            .lookup("other.example", now)
            .expect("a name")
            .is_none(),
        "removed"
    );

    // Committed after the build: followed.
    append(&store, "d1", 2, &issued("c2", &SHOP)).await;
    crate::adapters::commit_signal::committed();
    eventually("the renewal served", || {
        let found = index.lookup("shop.example", Utc::now()).expect("a name");
        found.is_some_and(|entry| entry.certificate_id == "c2")
    })
    .await;
    following.abort();
    let _ = std::fs::remove_file(path);
}
