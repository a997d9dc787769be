//! The scheduler in process against a real SQLite store: the ARI re-check's bookkeeping, and a
//! renewals pass with a scripted CA (the use cases' test world).

use chrono::Duration;
use dns_handling_events::{
    CertificateKeyType, CustomDomainEvent, FailureReason, IssuedCertificate, OrderDetails,
    Validation,
};
use dns_handling_projections::CertificateView;

use super::*;
use crate::adapters::store::{ProjectionWrite, Store};
use crate::use_cases::tests::World;

/// A migrated store on a fresh SQLite file, and the file's path (for removing it).
async fn sqlite_store() -> (Store, std::path::PathBuf) {
    let path = std::env::temp_dir().join(format!("ari-check-{}.db", uuid::Uuid::new_v4()));
    let store = Store::connect_with(
        &format!("sqlite://{}", path.display()),
        std::time::Duration::from_secs(5),
    )
    .await
    .expect("connects");
    store.migrate().await.expect("migrates");
    (store, path)
}

fn issued(certificate_id: &str, order_id: &str, at: DateTime<Utc>) -> CustomDomainEvent {
    CustomDomainEvent::CertificateIssued {
        certificate: IssuedCertificate {
            certificate_id: certificate_id.into(),
            order_id: order_id.into(),
            serial: "01".into(),
            not_before: at,
            not_after: at + Duration::days(90),
            fingerprint_sha256: "ab".into(),
            chain_pem: "-----BEGIN CERTIFICATE-----".into(),
            ca_directory: String::new(),
        },
        issued_at: at,
    }
}

fn renewal_requested(at: DateTime<Utc>) -> CustomDomainEvent {
    CustomDomainEvent::RenewalRequested {
        renews_certificate_id: "cert-1".into(),
        order: OrderDetails {
            order_id: "order-2".into(),
            order_url: "https://ca.test/order/2".into(),
            names: vec!["shop.example.com".into()],
            challenges: vec![],
            account_id: "https://ca.test/acct/1".into(),
            poll_interval_ms: 1000,
            deadline: at + Duration::hours(1),
            key_type: CertificateKeyType::EcdsaP256,
            validation: Validation::Manual,
            delegation_problem: None,
            ca_directory: String::new(),
        },
        reason: RenewalReason::Ari,
        replaces: None,
        requested_at: at,
    }
}

/// Stores the domain's views as the projection would after `events`.
async fn project(store: &Store, view: &mut DomainView, events: &[CustomDomainEvent]) {
    let mut certificates = Vec::new();
    for event in events {
        let sequence = view.last_sequence + 1;
        view.apply(sequence, event);
        certificates.extend(CertificateView::from_event(&view.id, sequence, event));
    }
    store
        .write_projection(ProjectionWrite {
            views: std::slice::from_ref(view),
            certificates: &certificates,
            ..ProjectionWrite::default()
        })
        .await
        .expect("views written");
}

#[tokio::test]
async fn an_ari_check_waits_out_an_open_renewal_and_goes_only_with_its_certificate() {
    let (store, path) = sqlite_store().await;
    let now = Utc::now();
    let minute = std::time::Duration::from_secs(60);
    let registered = CustomDomainEvent::DomainRegistered {
        domain_name: "shop.example.com".into(),
        verification_token: "token".into(),
        verification_record_name: "_acme-challenge.shop.example.com.".into(),
        registered_at: now,
        alt_names: vec![],
        tenant: None,
    };
    let mut view = DomainView::from_registration("d1", 1, &registered).expect("a view");
    project(&store, &mut view, &[issued("cert-1", "order-1", now)]).await;
    store
        .set_renewal_info_check("d1", "cert-1", now)
        .await
        .expect("planned");
    let due = |at| {
        let store = store.clone();
        async move { store.due_renewal_info_checks(at, 10).await.expect("read") }
    };
    let planned = vec![("d1".to_owned(), "cert-1".to_owned())];

    // A renewal is open: the certificate is still current, its check is moved, not dropped.
    project(&store, &mut view, &[renewal_requested(now)]).await;
    assert!(ari_check_to_make(&store, "d1", "cert-1", now, minute)
        .await
        .is_none());
    assert_eq!(due(now).await, vec![], "postponed");
    let later = now + Duration::seconds(61);
    assert_eq!(due(later).await, planned, "still planned");

    // The renewal failed: the certificate stays in service and is checked.
    let failed = CustomDomainEvent::RenewalFailed {
        order_id: Some("order-2".into()),
        reason: FailureReason::new("challenge_invalid", "refused"),
        attempt: 1,
        next_attempt_at: later,
        failed_at: later,
    };
    project(&store, &mut view, &[failed]).await;
    let made = ari_check_to_make(&store, "d1", "cert-1", later, minute).await;
    assert_eq!(made.map(|(_, stored)| stored.id).as_deref(), Some("cert-1"));

    // Renewed: cert-1's stale check goes, the check planned for cert-2 stays.
    project(&store, &mut view, &[issued("cert-2", "order-3", later)]).await;
    store
        .set_renewal_info_check("d1", "cert-2", later)
        .await
        .expect("planned");
    assert!(ari_check_to_make(&store, "d1", "cert-1", later, minute)
        .await
        .is_none());
    assert_eq!(
        due(later).await,
        vec![("d1".to_owned(), "cert-2".to_owned())]
    );
    store
        .set_renewal_info_check("d1", "cert-1", later)
        .await
        .expect("planned");
    assert!(ari_check_to_make(&store, "d1", "cert-1", later, minute)
        .await
        .is_none());
    assert_eq!(
        due(later).await,
        vec![],
        "replaced certificate's check dropped"
    );

    drop(store);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

/// A domain of `world` with a certificate whose renewal was due a minute ago.
async fn due(world: &World, name: &str) -> DomainView {
    let view = world.active(name).await;
    let certificate_id = view.certificate.clone().expect("a certificate").id;
    let now = Utc::now();
    let schedule = CustomDomainCommand::ScheduleRenewal {
        certificate_id,
        due_at: now - Duration::minutes(1),
        reason: RenewalReason::Lifetime,
        window: None,
        at: now,
    };
    world.execute(&view.id, schedule).await;
    view
}

#[tokio::test]
async fn a_renewals_pass_starts_a_due_renewal_and_hands_its_order_to_the_pollers() {
    let world = World::new(1, |_| {}).await;
    let view = due(&world, "due.example.com").await;

    run_pass(Pass::Renewals, &world.state, &world.pollers, Utc::now()).await;

    let started = world.pollers.started.lock().expect("lock").clone();
    assert_eq!(started.len(), 1, "{started:?}");
    assert_eq!(
        (started[0].0.as_str(), started[0].2),
        (view.id.as_str(), true)
    );
    let renewal = world.view(&view.id).await.renewal.expect("a renewal");
    assert!(renewal.in_progress);
}

#[tokio::test]
async fn a_renewals_pass_records_a_failed_attempt_when_no_ca_places_the_order() {
    let world = World::new(1, |_| {}).await;
    let view = due(&world, "outage.example.com").await;
    world.cas[0].fails_next(AcmeError::unreachable(
        "connect",
        std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
    ));

    run_pass(Pass::Renewals, &world.state, &world.pollers, Utc::now()).await;

    assert_eq!(world.pollers.orders(), 0);
    let renewal = world.view(&view.id).await.renewal.expect("a renewal");
    assert!(!renewal.in_progress);
    assert_eq!(renewal.attempts, 1);
    let failure = renewal.last_failure.expect("the failure");
    assert_eq!(failure.code, FailureReason::ACME_UNAVAILABLE);
    assert!(renewal.next_attempt_at.is_some_and(|at| at > Utc::now()));
}

#[tokio::test]
async fn a_renewals_pass_records_caa_forbids_and_asks_no_ca_when_caa_forbids_every_ca() {
    let world = World::new(1, |_| {}).await;
    let view = due(&world, "forbidden.example.com").await;
    world.forbid_by_caa("example.com", "other-ca.example");
    let asked = world.cas[0].orders_asked();

    run_pass(Pass::Renewals, &world.state, &world.pollers, Utc::now()).await;

    assert_eq!(world.cas[0].orders_asked(), asked, "no CA was asked");
    assert_eq!(world.pollers.orders(), 0);
    let renewal = world.view(&view.id).await.renewal.expect("a renewal");
    assert!(!renewal.in_progress);
    assert_eq!(renewal.attempts, 1);
    let failure = renewal.last_failure.expect("the failure");
    assert_eq!(failure.code, FailureReason::CAA_FORBIDS);
    assert!(
        failure.detail.contains(r#"0 issue "other-ca.example""#),
        "{failure:?}"
    );
    assert!(
        renewal.next_attempt_at.is_some_and(|at| at > Utc::now()),
        "retried on its schedule"
    );
}
