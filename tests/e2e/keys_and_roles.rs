//! Private keys: encrypted at rest, never in events, logs or ordinary responses, handed out
//! only to admins and every read recorded. Read-only tokens read and nothing more.

use std::time::Duration;

use base64::Engine as _;
use dns_handling_testkit::{
    active_domain, pebble_and_database, run_command, Service, StoreKind, TestDatabase,
};
use serde_json::{json, Value};

use crate::BINARY;

crate::on_both_stores!(private_keys_reach_only_admins_and_every_read_is_recorded);
crate::on_both_stores!(the_key_encryption_key_is_rotated_without_losing_a_key);

const ADMIN: &str = "admin-token-0123456789";
const AUDITOR: &str = "auditor-token-9876543210";

async fn as_auditor(service: &Service, method: reqwest::Method, path: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .request(method, service.url(path))
        .bearer_auth(AUDITOR)
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn private_keys_reach_only_admins_and_every_read_is_recorded(kind: StoreKind) {
    let (pebble, database, mut env) = pebble_and_database(kind).await;
    env.insert("AUTH_TOKEN".into(), ADMIN.into());
    env.insert(
        "READ_ONLY_TOKENS".into(),
        format!("other-reader, {AUDITOR}"),
    );
    let service = Service::start(BINARY, &env);

    let (id, record_name, token) = service.register("keys.example.test").await;
    pebble.set_txt(&record_name, &token);
    let (code, body) = as_auditor(
        &service,
        reqwest::Method::POST,
        &format!("/domains/{id}/verify"),
    )
    .await;
    assert_eq!(code, 403, "{body}");
    let (code, _) = service.post(&format!("/domains/{id}/verify"), None).await;
    assert_eq!(code, 200);
    let (code, started) = service
        .post(&format!("/domains/{id}/issue-certificate"), None)
        .await;
    assert_eq!(code, 202);
    pebble.set_txt(
        started["challenge_domain"].as_str().expect("domain"),
        started["expected_txt_value"].as_str().expect("value"),
    );
    service
        .wait_for_status(&id, &["active"], Duration::from_secs(90))
        .await;

    // Auditors read everything public, change nothing, and never see a key.
    let (code, _) = as_auditor(&service, reqwest::Method::GET, &format!("/domains/{id}")).await;
    assert_eq!(code, 200);
    let (code, certificate) = as_auditor(
        &service,
        reqwest::Method::GET,
        &format!("/domains/{id}/certificate"),
    )
    .await;
    assert_eq!(code, 200);
    let (code, body) = as_auditor(
        &service,
        reqwest::Method::GET,
        &format!("/domains/{id}/certificate/key"),
    )
    .await;
    assert_eq!(code, 403, "{body}");
    let (code, body) =
        as_auditor(&service, reqwest::Method::DELETE, &format!("/domains/{id}")).await;
    assert_eq!(code, 403, "{body}");
    let (code, body) = as_auditor(&service, reqwest::Method::POST, "/domains").await;
    assert_eq!(code, 403, "{body}");
    assert!(!database
        .event_types(&id)
        .await
        .iter()
        .any(|e| e == "PrivateKeyRead"));

    // The admin gets the key, and it belongs to the certificate.
    let (code, key) = service.get(&format!("/domains/{id}/certificate/key")).await;
    assert_eq!(code, 200, "{key}");
    let key_pem = key["private_key_pem"].as_str().expect("key");
    assert!(key_pem.contains("BEGIN PRIVATE KEY"));
    let key_pair = rcgen::KeyPair::from_pem(key_pem).expect("a PEM key");
    let (_, pem) = x509_parser::pem::parse_x509_pem(
        certificate["chain_pem"].as_str().expect("chain").as_bytes(),
    )
    .expect("PEM");
    let leaf = pem.parse_x509().expect("leaf");
    assert_eq!(
        leaf.public_key().subject_public_key.data.as_ref(),
        key_pair.public_key_raw(),
        "the key is the certificate's"
    );
    let events = database.event_types(&id).await;
    assert_eq!(
        events.last().map(String::as_str),
        Some("PrivateKeyRead"),
        "{events:?}"
    );

    // Nowhere else: not in any event, not in the log, not in any other response, not in clear
    // in the database.
    let key_body: String = key_pem
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .collect();
    let key_der = base64::engine::general_purpose::STANDARD
        .decode(&key_body)
        .expect("base64 body");
    let fragment = &key_body[key_body.len() / 2..key_body.len() / 2 + 40];
    let mut places: Vec<(String, String)> = Vec::new();
    for text in database
        .texts("CAST(payload AS TEXT) || CAST(metadata AS TEXT) FROM events")
        .await
    {
        places.push(("an event".into(), text));
    }
    for text in database.texts("private_key FROM certificate_keys").await {
        places.push(("certificate_keys".into(), text));
    }
    for text in database.texts("credentials FROM acme_accounts").await {
        places.push(("acme_accounts".into(), text));
    }
    for text in database.texts("payload FROM domain_views").await {
        places.push(("a view".into(), text));
    }
    places.push(("the log".into(), service.log()));
    for path in [
        format!("/domains/{id}"),
        format!("/domains/{id}/certificate"),
        format!("/domains/{id}/events"),
        "/domains".into(),
        "/events".into(),
    ] {
        places.push((path.clone(), service.get(&path).await.1.to_string()));
    }
    for path in ["/metrics", "/openapi.json"] {
        let response = service.client.get(service.url(path)).send().await;
        let text = response.expect("GET").text().await.expect("body");
        places.push((path.to_owned(), text));
    }
    for (place, text) in &places {
        assert!(!text.contains("PRIVATE KEY"), "PEM marker in {place}");
        assert!(!text.contains(fragment), "key material in {place}");
        assert!(
            !text.contains("key_pkcs8"),
            "account key in clear in {place}"
        );
    }
    let raw_fragment = &key_der[key_der.len() / 2..key_der.len() / 2 + 24];
    let database_bytes = std::fs::read(database_file(&database)).unwrap_or_default();
    assert!(
        !database_bytes
            .windows(raw_fragment.len())
            .any(|window| window == raw_fragment),
        "raw key bytes in the database file"
    );

    let (code, body) = service
        .post("/domains", Some(json!({"domain_name": "x.example"})))
        .await;
    assert_eq!(code, 201, "{body}");
}

/// The SQLite file (empty path for PostgreSQL, whose files this test does not read).
fn database_file(database: &TestDatabase) -> String {
    database
        .url
        .strip_prefix("sqlite://")
        .unwrap_or("")
        .to_owned()
}

/// Every sealed value in the store, as stored.
async fn sealed_values(database: &TestDatabase) -> Vec<String> {
    let mut values = database
        .texts("private_key FROM certificate_keys ORDER BY order_id")
        .await;
    values.extend(database.texts("credentials FROM acme_accounts").await);
    values
}

async fn private_key_pem(service: &Service, id: &str) -> String {
    let (code, key) = service.get(&format!("/domains/{id}/certificate/key")).await;
    assert_eq!(code, 200, "{key}");
    key["private_key_pem"].as_str().expect("a key").to_owned()
}

async fn the_key_encryption_key_is_rotated_without_losing_a_key(kind: StoreKind) {
    let (pebble, database, mut env) = pebble_and_database(kind).await;
    env.insert("AUTH_TOKEN".into(), ADMIN.into());
    let mut service = Service::start(BINARY, &env);
    let first = active_domain(&service, &pebble, "first.rotate.example.test").await;
    let first_key = private_key_pem(&service, &first).await;
    service.kill();
    // The key in use until now: configured (PostgreSQL), or generated beside the file (SQLite).
    let old_key = env.get("KEY_ENCRYPTION_KEY").cloned().unwrap_or_else(|| {
        std::fs::read_to_string(format!("{}.kek", database_file(&database))).expect("the .kek")
    });
    let new_key = base64::engine::general_purpose::STANDARD.encode([42u8; 32]);
    let stranger = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    let before = sealed_values(&database).await;
    assert_eq!(before.len(), 2, "one certificate key and one ACME account");

    // A key that opens nothing rotates nothing, and says which value it could not open.
    let mut wrong = env.clone();
    wrong.insert("KEY_ENCRYPTION_KEY".into(), stranger);
    let (status, _, stderr) = run_command(BINARY, &wrong, &["keys", "rotate"]);
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("certificate_keys/"), "{stderr}");
    assert_eq!(sealed_values(&database).await, before, "nothing changed");

    // The new key, with the old one as previous: every value is re-sealed.
    let mut rotating = env.clone();
    rotating.insert("KEY_ENCRYPTION_KEY".into(), new_key.clone());
    rotating.insert(
        "PREVIOUS_KEY_ENCRYPTION_KEYS".into(),
        old_key.trim().to_owned(),
    );
    let (status, report, stderr) = run_command(BINARY, &rotating, &["keys", "rotate"]);
    assert!(status.success(), "{report}{stderr}");
    assert!(
        report.contains("re-sealed 2 values under the current key (1 certificate keys, 1 ACME accounts, 0 webhook secrets); 0 were under it already"),
        "{report}"
    );
    let after = sealed_values(&database).await;
    assert!(
        before.iter().zip(&after).all(|(old, new)| old != new),
        "every value was re-sealed"
    );
    let (status, report, _) = run_command(BINARY, &rotating, &["keys", "rotate"]);
    assert!(status.success());
    assert!(report.contains("re-sealed 0 values"), "{report}");
    assert!(report.contains("2 were under it already"), "{report}");
    assert_eq!(
        sealed_values(&database).await,
        after,
        "a second run changes nothing"
    );

    // The new key alone now opens the old certificate's key and the ACME account.
    let mut rotated = env.clone();
    rotated.insert("KEY_ENCRYPTION_KEY".into(), new_key);
    let service = Service::start(BINARY, &rotated);
    assert_eq!(private_key_pem(&service, &first).await, first_key);
    let second = active_domain(&service, &pebble, "second.rotate.example.test").await;
    assert!(private_key_pem(&service, &second)
        .await
        .contains("BEGIN PRIVATE KEY"));
    assert_eq!(
        database.count("acme_accounts").await,
        1,
        "the rotated account was used, not a new one registered"
    );
}

crate::on_both_stores!(many_key_reads_leave_the_domain_s_commands_starting_from_a_snapshot);

/// Every key read stays an event of the domain's stream (audited, in its history), and the
/// domain's commands start from a snapshot instead of folding every read: after 250 reads the
/// latest snapshot is at most 100 events behind, and the domain still decides as its history
/// says (a renewal is placed).
async fn many_key_reads_leave_the_domain_s_commands_starting_from_a_snapshot(kind: StoreKind) {
    let (pebble, database, env) = pebble_and_database(kind).await;
    let service = Service::start(BINARY, &env);
    let id = active_domain(&service, &pebble, "read-often.keys.test").await;
    for _ in 0..250 {
        let (code, key) = service.get(&format!("/domains/{id}/certificate/key")).await;
        assert_eq!(code, 200, "{key}");
    }
    let count = |sql: String| {
        let database = &database;
        async move {
            database.texts(&sql).await[0]
                .parse::<i64>()
                .expect("a number")
        }
    };
    let reads = count(format!(
        "CAST(COUNT(*) AS TEXT) FROM events WHERE aggregate_id = '{id}' \
         AND event_type = 'PrivateKeyRead'"
    ))
    .await;
    assert_eq!(reads, 250, "every read recorded in the domain's stream");
    let last = count(format!(
        "CAST(MAX(sequence) AS TEXT) FROM events WHERE aggregate_id = '{id}'"
    ))
    .await;
    let snapshot = count(format!(
        "CAST(COALESCE(MAX(last_sequence), 0) AS TEXT) FROM snapshots WHERE aggregate_id = '{id}'"
    ))
    .await;
    assert!(
        last - snapshot <= 100,
        "a command folds {} events after the snapshot at {snapshot}",
        last - snapshot
    );
    let (code, renewing) = service.post(&format!("/domains/{id}/renew"), None).await;
    assert_eq!(code, 202, "{renewing}");
}
