//! An edge's key reads: its first read of a certificate is recorded, its repeats are not,
//! until a new certificate.

use super::*;

fn active() -> Vec<CustomDomainEvent> {
    vec![registered(), verified(), requested(), observed(), issued()]
}

fn read(certificate_id: &str, reader: &str, at: DateTime<Utc>) -> CustomDomainCommand {
    CustomDomainCommand::RecordPrivateKeyRead {
        certificate_id: certificate_id.into(),
        reader: reader.into(),
        at,
    }
}

fn was_read(certificate_id: &str, reader: &str, at: DateTime<Utc>) -> CustomDomainEvent {
    CustomDomainEvent::PrivateKeyRead {
        certificate_id: certificate_id.into(),
        reader: reader.into(),
        read_at: at,
    }
}

#[test]
fn an_edges_first_read_of_a_certificate_is_recorded_and_its_repeats_record_nothing() {
    let edge1 = edge_reader("edge1");
    assert_eq!(edge1, "edge:edge1");
    DomainTest::with(RenewalPolicy::default())
        .given(active())
        .when(read("cert-1", &edge1, t(40)))
        .then_expect_events(vec![was_read("cert-1", &edge1, t(40))]);
    let mut given = active();
    given.push(was_read("cert-1", &edge1, t(40)));
    DomainTest::with(RenewalPolicy::default())
        .given(given.clone())
        .when(read("cert-1", &edge1, t(50)))
        .then_expect_events(vec![]);
    // Another edge is another reader: its first read is recorded too.
    let edge2 = edge_reader("edge2");
    DomainTest::with(RenewalPolicy::default())
        .given(given)
        .when(read("cert-1", &edge2, t(50)))
        .then_expect_events(vec![was_read("cert-1", &edge2, t(50))]);
}

#[test]
fn an_admins_reads_are_recorded_every_time() {
    let mut given = active();
    given.push(was_read("cert-1", "admin from 127.0.0.1", t(40)));
    DomainTest::with(RenewalPolicy::default())
        .given(given)
        .when(read("cert-1", "admin from 127.0.0.1", t(50)))
        .then_expect_events(vec![was_read("cert-1", "admin from 127.0.0.1", t(50))]);
}

#[test]
fn a_new_certificate_is_recorded_again_at_an_edges_first_read() {
    let edge1 = edge_reader("edge1");
    let mut given = active();
    given.push(was_read("cert-1", &edge1, t(40)));
    given.push(CustomDomainEvent::CertificateIssued {
        certificate: IssuedCertificate {
            certificate_id: "cert-2".into(),
            order_id: "order-2".into(),
            ..certificate()
        },
        issued_at: t(60),
    });
    DomainTest::with(RenewalPolicy::default())
        .given(given.clone())
        .when(read("cert-2", &edge1, t(70)))
        .then_expect_events(vec![was_read("cert-2", &edge1, t(70))]);
    // The certificate it replaced stays readable: the edge's read of it is not the current
    // certificate's, so it is recorded.
    DomainTest::with(RenewalPolicy::default())
        .given(given)
        .when(read("cert-1", &edge1, t(70)))
        .then_expect_events(vec![was_read("cert-1", &edge1, t(70))]);
}

#[test]
fn a_revoked_certificates_key_is_refused_to_an_edge_that_read_it_before() {
    let edge1 = edge_reader("edge1");
    let mut given = active();
    given.push(was_read("cert-1", &edge1, t(40)));
    given.push(CustomDomainEvent::CertificateRevoked {
        certificate_id: "cert-1".into(),
        reason: RevocationReason::KeyCompromise,
        revoked_at: t(50),
    });
    DomainTest::with(RenewalPolicy::default())
        .given(given)
        .when(read("cert-1", &edge1, t(60)))
        .then_expect_error(DomainError::KeyUnavailable {
            certificate_id: "cert-1".into(),
            reason: "it was revoked".into(),
        });
}

#[test]
fn a_snapshot_from_before_edge_readers_loads_with_none() {
    let mut domain = CustomDomain::default();
    for event in active() {
        domain.apply(event);
    }
    let mut snapshot = serde_json::to_value(&domain).expect("serialises");
    snapshot
        .as_object_mut()
        .expect("an object")
        .remove("edge_readers")
        .expect("the field is serialised");
    let loaded: CustomDomain = serde_json::from_value(snapshot).expect("loads");
    assert_eq!(loaded, domain);
}
