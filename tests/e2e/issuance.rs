//! The issuance flow to `active`, its failures, and resuming after a crash, on both stores.

use std::time::Duration;

use dns_handling_testkit::{
    free_port, pebble_and_database, verified_domain, Service, StoreKind, TempDir,
};
use serde_json::Value;

use crate::BINARY;

const DOMAIN: &str = "shop.example.test";

crate::on_both_stores!(issues_a_certificate_end_to_end);
crate::on_both_stores!(never_set_txt_times_out_with_dns_timeout);
crate::on_both_stores!(unreachable_acme_directory_answers_500_and_records_nothing);
crate::on_both_stores!(a_restart_after_the_202_resumes_the_order);

fn error_of(body: &Value) -> &str {
    body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error message in {body}"))
}

/// `POST /domains/{id}/issue-certificate`: status and body.
pub(crate) async fn issue(service: &Service, id: &str) -> (u16, Value) {
    service
        .post(&format!("/domains/{id}/issue-certificate"), None)
        .await
}

async fn issues_a_certificate_end_to_end(kind: StoreKind) {
    // Pebble's default: 5% of nonces rejected, so badNonce retries are exercised here.
    let (pebble, database, env) = pebble_and_database(kind).await;
    let service = Service::start(BINARY, &env);

    let (id, record_name, token) = service.register(DOMAIN).await;
    assert_eq!(record_name, format!("_acme-challenge.{DOMAIN}."));

    let (code, body) = issue(&service, &id).await;
    assert_eq!(code, 400, "{body}");
    assert!(error_of(&body).contains("pending"), "{body}");

    let (code, body) = service.post(&format!("/domains/{id}/verify"), None).await;
    assert_eq!(code, 400, "{body}");
    assert!(error_of(&body).contains("no TXT records"), "{body}");
    pebble.set_txt(&record_name, "not-the-token");
    let (code, body) = service.post(&format!("/domains/{id}/verify"), None).await;
    assert_eq!(code, 400, "{body}");
    assert!(error_of(&body).contains("not-the-token"), "{body}");
    pebble.set_txt(&record_name, &token);
    let (code, body) = service.post(&format!("/domains/{id}/verify"), None).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["status"], "verified");
    assert!(body["verified_at"].is_string(), "{body}");

    let (code, started) = issue(&service, &id).await;
    assert_eq!(code, 202, "{started}");
    assert_eq!(started["status"], "certificate_pending");
    let challenge_domain = started["challenge_domain"]
        .as_str()
        .expect("challenge_domain");
    let expected = started["expected_txt_value"]
        .as_str()
        .expect("expected_txt_value");
    assert_eq!(challenge_domain, format!("_acme-challenge.{DOMAIN}."));
    // base64url of a SHA-256 digest, unpadded: 43 characters.
    assert_eq!(expected.len(), 43, "{expected}");
    assert!(expected
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    assert!(started["order_id"].as_str().is_some_and(|s| !s.is_empty()));
    let instructions = started["instructions"].as_str().expect("instructions");
    assert!(instructions.contains(challenge_domain) && instructions.contains(expected));

    let (_, view) = service.get(&format!("/domains/{id}")).await;
    assert_eq!(view["status"], "certificate_pending");
    assert_eq!(view["challenge"]["expected_txt_value"], expected);

    let (code, body) = issue(&service, &id).await;
    assert_eq!(code, 400, "{body}");
    assert!(error_of(&body).contains("certificate_pending"), "{body}");

    pebble.set_txt(challenge_domain, expected);
    let view = service
        .wait_for_status(&id, &["active", "failed"], Duration::from_secs(90))
        .await;
    assert_eq!(view["status"], "active", "{view}");
    assert!(view.get("challenge").is_none(), "{view}");

    let (code, body) = issue(&service, &id).await;
    assert_eq!(code, 400, "{body}");
    assert!(error_of(&body).contains("active"), "{body}");

    let (code, certificate) = service.get(&format!("/domains/{id}/certificate")).await;
    assert_eq!(code, 200, "{certificate}");
    assert_eq!(certificate["domain_id"], id.as_str());
    assert_eq!(view["certificate"]["id"], certificate["id"]);
    let chain_pem = certificate["chain_pem"].as_str().expect("chain_pem");
    verify_chain(&pebble.issuing_root_pem(), chain_pem, DOMAIN);

    let (_, pem) = x509_parser::pem::parse_x509_pem(chain_pem.as_bytes()).expect("PEM");
    let leaf = pem.parse_x509().expect("leaf");
    let not_after = chrono::DateTime::from_timestamp(leaf.validity().not_after.timestamp(), 0)
        .expect("date")
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    assert_eq!(certificate["not_after"], not_after.as_str());
    let serial: String = leaf
        .tbs_certificate
        .raw_serial()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(certificate["serial"], serial.as_str());
    let key_type = leaf.public_key().parsed().expect("public key");
    assert!(
        matches!(key_type, x509_parser::public_key::PublicKey::RSA(ref rsa) if rsa.key_size() == 2048),
        "the certificate key is RSA-2048"
    );
    assert!(certificate.get("private_key").is_none());
    assert!(!certificate.to_string().contains("PRIVATE KEY"));

    assert_eq!(
        database.event_types(&id).await,
        [
            "DomainRegistered",
            "OwnershipVerified",
            "HealthChanged",
            "CertificateRequested",
            "ChallengeRecordObserved",
            "CertificateIssued"
        ]
    );
    assert_eq!(database.count("acme_accounts").await, 1);
}

/// Checks the chain with OpenSSL: it leads to Pebble's root and names the domain.
pub(crate) fn verify_chain(root_pem: &str, chain_pem: &str, domain: &str) {
    let dir = TempDir::new("chain");
    let blocks: Vec<&str> = chain_pem
        .split_inclusive("-----END CERTIFICATE-----")
        .filter(|block| block.contains("BEGIN CERTIFICATE"))
        .collect();
    assert!(blocks.len() >= 2, "a leaf and at least one intermediate");
    std::fs::write(dir.path().join("root.pem"), root_pem).expect("write");
    std::fs::write(dir.path().join("leaf.pem"), blocks[0]).expect("write");
    std::fs::write(dir.path().join("intermediates.pem"), blocks[1..].concat()).expect("write");
    let output = std::process::Command::new("openssl")
        .current_dir(dir.path())
        .args([
            "verify",
            "-CAfile",
            "root.pem",
            "-untrusted",
            "intermediates.pem",
        ])
        .args(["-verify_hostname", domain, "leaf.pem"])
        .output()
        .expect("openssl runs");
    assert!(
        output.status.success(),
        "chain does not verify: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

async fn never_set_txt_times_out_with_dns_timeout(kind: StoreKind) {
    let (pebble, database, mut env) = pebble_and_database(kind).await;
    env.insert("POLL_TIMEOUT".into(), "2s".into());
    let service = Service::start(BINARY, &env);
    let id = verified_domain(&service, &pebble, DOMAIN).await;

    let (code, started) = issue(&service, &id).await;
    assert_eq!(code, 202, "{started}");
    let challenge_domain = started["challenge_domain"]
        .as_str()
        .expect("challenge_domain");
    let expected = started["expected_txt_value"].as_str().expect("value");
    // Near misses are not the value: another case, quoted, or with a space.
    pebble.set_txt(challenge_domain, &expected.to_ascii_uppercase());
    pebble.set_txt(challenge_domain, &format!("\"{expected}\""));
    pebble.set_txt(challenge_domain, &format!("{expected} "));

    let view = service
        .wait_for_status(&id, &["active", "failed"], Duration::from_secs(30))
        .await;
    assert_eq!(view["status"], "failed", "{view}");
    assert_eq!(view["failure_reason"]["code"], "dns_timeout", "{view}");

    let (code, body) = issue(&service, &id).await;
    assert_eq!(code, 400, "{body}");
    assert!(error_of(&body).contains("failed"), "{body}");
    let (code, body) = service.get(&format!("/domains/{id}/certificate")).await;
    assert_eq!(code, 404, "{body}");
    assert!(error_of(&body).contains("failed"), "{body}");

    let events = database.event_types(&id).await;
    assert_eq!(
        events.last().map(String::as_str),
        Some("IssuanceTimedOut"),
        "{events:?}"
    );
    assert!(
        !events.iter().any(|e| e == "ChallengeRecordObserved"),
        "{events:?}"
    );
}

async fn unreachable_acme_directory_answers_500_and_records_nothing(kind: StoreKind) {
    let (pebble, database, mut env) = pebble_and_database(kind).await;
    env.insert(
        "ACME_DIRECTORY".into(),
        format!("https://127.0.0.1:{}/dir", free_port()),
    );
    let service = Service::start(BINARY, &env);
    let id = verified_domain(&service, &pebble, DOMAIN).await;
    let before = database.event_types(&id).await;

    let (code, body) = issue(&service, &id).await;
    assert_eq!(code, 500, "{body}");
    // The client reads the request id; the cause is in the log, beside it.
    let request_id = error_of(&body)
        .strip_prefix("internal error; request id ")
        .unwrap_or_else(|| panic!("{body}"))
        .to_owned();
    let log = service.log();
    assert!(
        log.lines()
            .any(|line| line.contains(&request_id) && line.contains("ACME account setup failed")),
        "{body}\n{log}"
    );

    let (_, view) = service.get(&format!("/domains/{id}")).await;
    assert_eq!(view["status"], "verified", "{view}");
    // Nothing of the order; only the health check made before it (its DNS was looked at).
    let mut expected = before;
    expected.push("HealthChanged".to_owned());
    assert_eq!(database.event_types(&id).await, expected);
    assert_eq!(database.count("acme_accounts").await, 0);
}

async fn a_restart_after_the_202_resumes_the_order(kind: StoreKind) {
    let (pebble, database, env) = pebble_and_database(kind).await;
    let mut first = Service::start(BINARY, &env);
    let id = verified_domain(&first, &pebble, DOMAIN).await;
    let (code, started) = issue(&first, &id).await;
    assert_eq!(code, 202, "{started}");
    first.kill();

    let second = Service::start(BINARY, &env);
    let view = second
        .wait_for_status(&id, &["certificate_pending"], Duration::from_secs(5))
        .await;
    assert_eq!(view["order_id"], started["order_id"]);
    pebble.set_txt(
        started["challenge_domain"]
            .as_str()
            .expect("challenge_domain"),
        started["expected_txt_value"].as_str().expect("value"),
    );
    let view = second
        .wait_for_status(&id, &["active", "failed"], Duration::from_secs(90))
        .await;
    assert_eq!(view["status"], "active", "{view}");
    let events = database.event_types(&id).await;
    assert_eq!(
        events
            .iter()
            .filter(|e| *e == "CertificateRequested")
            .count(),
        1,
        "{events:?}"
    );
    assert_eq!(
        events.iter().filter(|e| *e == "CertificateIssued").count(),
        1,
        "{events:?}"
    );
    assert_eq!(database.count("acme_accounts").await, 1);
}
