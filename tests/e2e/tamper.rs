//! Tamper evidence that survives someone with write access to the database: signed checkpoints
//! of the whole log, checked by `dns-handling audit verify`. Each kind of tampering is done to a
//! log of its own, on both stores, and must be reported at the right place: after the last
//! checkpoint that still matches, at or before the first that does not.

use std::collections::HashMap;

use dns_handling_events::chain::{event_hash, ChainedContent, GENESIS, HASH_KEY, PREV_HASH_KEY};
use dns_handling_testkit::{
    run_command, service_env, Pebble, PebbleOptions, Service, StoreKind, TempDir, TestDatabase,
};
use serde_json::Value;

use crate::BINARY;

const ADMIN: &str = "tamper-admin-token";
const AUDITOR: &str = "tamper-auditor-token";

/// A log of five streams, the first three events under checkpoint `first`, the next three under
/// `second`, and one event after both:
/// a: registered (1), removed (3) · b: registered (2) · c: registered (4), removed (6) ·
/// d: registered (5) · e: registered (7), positions in commit order.
struct SignedLog {
    database: TestDatabase,
    env: HashMap<String, String>,
    ids: HashMap<&'static str, String>,
    first: Value,
    second: Value,
}

impl SignedLog {
    async fn build(pebble: &Pebble, kind: StoreKind) -> SignedLog {
        let database = TestDatabase::create(kind).await;
        let mut env = service_env(pebble, &database);
        env.insert("AUTH_TOKEN".into(), ADMIN.into());
        env.insert("READ_ONLY_TOKENS".into(), AUDITOR.into());
        let mut service = Service::start(BINARY, &env);
        let mut ids = HashMap::new();
        for name in ["a", "b"] {
            let (id, _, _) = service.register(&format!("{name}.tamper.test")).await;
            ids.insert(name, id);
        }
        remove(&service, &ids["a"]).await;
        let first = sign(&service, 201).await;
        for name in ["c", "d"] {
            let (id, _, _) = service.register(&format!("{name}.tamper.test")).await;
            ids.insert(name, id);
        }
        remove(&service, &ids["c"]).await;
        let second = sign(&service, 201).await;
        let (id, _, _) = service.register("e.tamper.test").await;
        ids.insert("e", id);
        service.kill();
        SignedLog {
            database,
            env,
            ids,
            first,
            second,
        }
    }

    fn position(checkpoint: &Value) -> i64 {
        checkpoint["position"].as_i64().expect("a position")
    }

    /// The feed position of an event.
    async fn position_of(&self, stream: &str, sequence: i64) -> i64 {
        self.database
            .texts(&format!(
                "CAST(position AS TEXT) FROM events WHERE aggregate_id = '{}' AND sequence = {sequence}",
                self.ids[stream]
            ))
            .await[0]
            .parse()
            .expect("a position")
    }

    /// Runs `audit verify`; answers whether it passed and its report.
    fn verify(&self, extra: &[&str]) -> (bool, String) {
        let mut args = vec!["audit", "verify"];
        args.extend_from_slice(extra);
        let (status, report, stderr) = run_command(BINARY, &self.env, &args);
        assert!(
            status.success() || status.code() == Some(1),
            "{report}{stderr}"
        );
        (status.success(), report)
    }

    /// Asserts that the report names the second checkpoint as the first not to match, the
    /// change lying after the first one.
    fn assert_mismatch_in_the_second_range(&self, report: &str) {
        let (first, second) = (Self::position(&self.first), Self::position(&self.second));
        assert!(
            report.contains(&format!("CHECKPOINT MISMATCH at position {second} ")),
            "{report}"
        );
        assert!(
            report.contains(&format!(
                "after position {first} and at or before position {second}"
            )),
            "{report}"
        );
        assert_eq!(report.matches("CHECKPOINT MISMATCH").count(), 1, "{report}");
    }
}

async fn remove(service: &Service, id: &str) {
    assert_eq!(service.delete(&format!("/domains/{id}")).await, 204);
}

async fn sign(service: &Service, expected: u16) -> Value {
    let (code, checkpoint) = service.post("/audit/checkpoints", None).await;
    assert_eq!(code, expected, "{checkpoint}");
    checkpoint
}

/// Rewrites every event of a stream with `change` applied to its first payload, and recomputes
/// the stream's hash chain as someone with write access could.
async fn rewrite_stream(log: &SignedLog, stream: &str, change: impl Fn(&str) -> String) {
    let id = &log.ids[stream];
    let rows = log
        .database
        .texts(&format!(
            "CAST(sequence AS TEXT) || '\t' || event_type || '\t' || event_version || '\t' || \
             CAST(payload AS TEXT) || '\t' || CAST(metadata AS TEXT) FROM events \
             WHERE aggregate_id = '{id}' ORDER BY sequence"
        ))
        .await;
    let mut prev_hash = GENESIS.to_owned();
    for row in rows {
        let fields: Vec<&str> = row.split('\t').collect();
        let sequence: i64 = fields[0].parse().expect("a sequence");
        let payload_text = if sequence == 1 {
            change(fields[3])
        } else {
            fields[3].to_owned()
        };
        let payload: Value = serde_json::from_str(&payload_text).expect("JSON");
        let mut metadata: Value = serde_json::from_str(fields[4]).expect("JSON");
        let hash = event_hash(
            &prev_hash,
            &ChainedContent {
                aggregate_type: "CustomDomain",
                aggregate_id: id,
                sequence: sequence as u64,
                event_type: fields[1],
                event_version: fields[2],
                payload: &payload,
                metadata: &metadata,
            },
        );
        metadata[PREV_HASH_KEY] = Value::from(prev_hash.clone());
        metadata[HASH_KEY] = Value::from(hash.clone());
        log.database
            .execute(&format!(
                "UPDATE events SET payload = '{payload}', metadata = '{metadata}' \
                 WHERE aggregate_id = '{id}' AND sequence = {sequence}"
            ))
            .await;
        prev_hash = hash;
    }
}

async fn an_untouched_log_verifies_clean_from_the_database_and_through_the_api(kind: StoreKind) {
    let pebble = Pebble::start(PebbleOptions::default());
    let log = SignedLog::build(&pebble, kind).await;
    let (status, public_key, stderr) = run_command(BINARY, &log.env, &["audit", "public-key"]);
    assert!(status.success(), "{stderr}");
    let public_key = public_key.trim().to_owned();
    assert_eq!(log.second["public_key"], public_key.as_str());
    assert_eq!(log.second["event_count"], 6);

    let (passed, report) = log.verify(&["--public-key", &public_key]);
    assert!(passed, "{report}");
    assert!(
        report.contains("checked 5 streams, 7 events: 0 broken"),
        "{report}"
    );
    assert!(
        report.contains(
            "checked 2 signed checkpoints (0 with a bad signature, 0 not matching the log)"
        ),
        "{report}"
    );
    assert!(
        report.contains("1 events after it are not covered yet"),
        "{report}"
    );

    // Through the API, with nothing but the public key and a read-only token.
    let service = Service::start(BINARY, &log.env);
    let (code, listed) = service.get("/audit/checkpoints").await;
    assert_eq!(code, 200, "{listed}");
    assert_eq!(listed["items"][0], log.second, "latest first");
    assert_eq!(listed["items"][1], log.first);
    // Nothing new since the last checkpoint but `e`: a new one covers it; asked again, the same.
    let third = sign(&service, 201).await;
    assert_eq!(third["event_count"], 7);
    assert_eq!(sign(&service, 200).await, third);
    let (status, report, stderr) = run_command(
        BINARY,
        &HashMap::new(),
        &[
            "audit",
            "verify",
            "--server",
            &service.url(""),
            "--token",
            AUDITOR,
            "--public-key",
            &public_key,
        ],
    );
    assert!(status.success(), "{report}{stderr}");
    assert!(
        report.contains(
            "checked 3 signed checkpoints (0 with a bad signature, 0 not matching the log)"
        ),
        "{report}"
    );
    assert!(
        report.contains("0 events after it are not covered yet"),
        "{report}"
    );

    // Paging is bounded, and every bad query is refused with a message naming what is wrong.
    let (code, page) = service.get("/audit/checkpoints?limit=1").await;
    assert_eq!(
        (code, page["items"].as_array().map(Vec::len)),
        (200, Some(1)),
        "{page}"
    );
    let before = page["next_before"].as_i64().expect("a next page");
    let (_, older) = service
        .get(&format!("/audit/checkpoints?limit=1&before={before}"))
        .await;
    assert_eq!(older["items"][0], log.second, "{older}");
    for (query, says) in [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("before=-1", "before"),
        ("colour=blue", "colour"),
    ] {
        let (code, refused) = service.get(&format!("/audit/checkpoints?{query}")).await;
        assert_eq!(code, 400, "{query}: {refused}");
        let message = refused["error"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{query}: {refused}");
    }

    // An auditor may read checkpoints but not sign them.
    let refused = service
        .client
        .post(service.url("/audit/checkpoints"))
        .bearer_auth(AUDITOR)
        .send()
        .await
        .expect("POST");
    assert_eq!(refused.status().as_u16(), 403);

    // The signing key is nowhere the service writes or answers.
    let seed = match kind {
        StoreKind::Postgres => log.env["AUDIT_SIGNING_KEY"].clone(),
        StoreKind::Sqlite => {
            let file = log.database.url.trim_start_matches("sqlite://").to_owned() + ".audit-key";
            std::fs::read_to_string(file).expect("the generated key file")
        }
    };
    let seed = seed.trim();
    let mut seen = service.log();
    for path in [
        "/audit/checkpoints",
        "/events?limit=1000",
        "/metrics",
        "/openapi.json",
    ] {
        let response = service
            .client
            .get(service.url(path))
            .send()
            .await
            .expect("GET");
        seen.push_str(&response.text().await.expect("body"));
    }
    let (_, config, _) = run_command(BINARY, &log.env, &["config"]);
    seen.push_str(&config);
    match kind {
        StoreKind::Postgres => {
            for table in [
                "events",
                "audit_checkpoints",
                "domain_views",
                "certificate_views",
            ] {
                let rows = log
                    .database
                    .texts(&format!("CAST(t AS TEXT) FROM {table} t"))
                    .await;
                seen.push_str(&rows.join("\n"));
            }
            assert!(
                config.contains("audit_signing_key = \"<redacted>\""),
                "{config}"
            );
        }
        StoreKind::Sqlite => {
            // Every byte of the database and its write-ahead log.
            let file = log.database.url.trim_start_matches("sqlite://").to_owned();
            for path in [file.clone(), format!("{file}-wal")] {
                if let Ok(bytes) = std::fs::read(&path) {
                    seen.push_str(&String::from_utf8_lossy(&bytes));
                }
            }
        }
    }
    assert!(!seen.contains(seed), "the signing key leaked");
}
on_both_stores!(an_untouched_log_verifies_clean_from_the_database_and_through_the_api);

async fn every_kind_of_tampering_is_reported_between_the_right_checkpoints(kind: StoreKind) {
    let pebble = Pebble::start(PebbleOptions::default());

    // A stream rewritten with its hashes recomputed: every chain holds, the checkpoint does not.
    let log = SignedLog::build(&pebble, kind).await;
    rewrite_stream(&log, "d", |payload| {
        payload.replace("d.tamper.test", "evil.tamper.test")
    })
    .await;
    let (passed, report) = log.verify(&[]);
    assert!(!passed, "{report}");
    assert!(
        report.contains(": 0 broken"),
        "the chains were recomputed: {report}"
    );
    log.assert_mismatch_in_the_second_range(&report);

    // A stream's last event deleted: its chain still holds.
    let log = SignedLog::build(&pebble, kind).await;
    let removal = log.position_of("c", 2).await;
    log.database
        .execute(&format!("DELETE FROM events WHERE position = {removal}"))
        .await;
    let (passed, report) = log.verify(&[]);
    assert!(!passed, "{report}");
    assert!(report.contains(": 0 broken"), "{report}");
    log.assert_mismatch_in_the_second_range(&report);

    // The feed's tail truncated back into the second checkpoint's range.
    let log = SignedLog::build(&pebble, kind).await;
    let kept = log.position_of("c", 1).await;
    log.database
        .execute(&format!("DELETE FROM events WHERE position > {kept}"))
        .await;
    let (passed, report) = log.verify(&[]);
    assert!(!passed, "{report}");
    log.assert_mismatch_in_the_second_range(&report);
    assert!(
        report.contains(&format!("the feed ends at position {kept}")),
        "{report}"
    );

    // An event inserted into the covered log: the later events moved along to make room.
    let log = SignedLog::build(&pebble, kind).await;
    let at = log.position_of("d", 1).await;
    log.database
        .execute(&format!(
            "UPDATE events SET position = position + 1000000 WHERE position >= {at}"
        ))
        .await;
    let b = &log.ids["b"];
    log.database
        .execute(&format!(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, \
             event_version, payload, metadata) SELECT aggregate_type, aggregate_id, 2, \
             event_type, event_version, payload, metadata FROM events \
             WHERE aggregate_id = '{b}' AND sequence = 1"
        ))
        .await;
    log.database
        .execute(&format!(
            "UPDATE events SET position = {at} WHERE aggregate_id = '{b}' AND sequence = 2"
        ))
        .await;
    let (passed, report) = log.verify(&[]);
    assert!(!passed, "{report}");
    log.assert_mismatch_in_the_second_range(&report);

    // Two events of different streams swapped in the feed: both chains still hold.
    let log = SignedLog::build(&pebble, kind).await;
    let (c, d) = (log.position_of("c", 1).await, log.position_of("d", 1).await);
    for (from, to) in [(c, -1), (d, c), (-1, d)] {
        log.database
            .execute(&format!(
                "UPDATE events SET position = {to} WHERE position = {from}"
            ))
            .await;
    }
    let (passed, report) = log.verify(&[]);
    assert!(!passed, "{report}");
    assert!(report.contains(": 0 broken"), "{report}");
    log.assert_mismatch_in_the_second_range(&report);

    // An event deleted inside a stream: its chain and the checkpoint both say so.
    let log = SignedLog::build(&pebble, kind).await;
    let registration = log.position_of("c", 1).await;
    log.database
        .execute(&format!(
            "DELETE FROM events WHERE position = {registration}"
        ))
        .await;
    let (passed, report) = log.verify(&[]);
    assert!(!passed, "{report}");
    assert!(
        report.contains(&format!("BROKEN stream {} at sequence 2 ", log.ids["c"])),
        "{report}"
    );
    log.assert_mismatch_in_the_second_range(&report);

    // A change in the first range is placed there, before the first checkpoint.
    let log = SignedLog::build(&pebble, kind).await;
    rewrite_stream(&log, "b", |payload| {
        payload.replace("b.tamper.test", "evil.tamper.test")
    })
    .await;
    let (passed, report) = log.verify(&[]);
    assert!(!passed, "{report}");
    let first = SignedLog::position(&log.first);
    assert!(
        report.contains(&format!("CHECKPOINT MISMATCH at position {first} "))
            && report.contains(&format!(
                "after position 0 and at or before position {first}"
            )),
        "{report}"
    );

    // A checkpoint changed in the database, and one re-signed by another key: the signature
    // does not hold (under the given key, for the second).
    let log = SignedLog::build(&pebble, kind).await;
    let second = SignedLog::position(&log.second);
    log.database
        .execute(&format!(
            "UPDATE audit_checkpoints SET event_count = event_count + 1 WHERE position = {second}"
        ))
        .await;
    let (passed, report) = log.verify(&[]);
    assert!(!passed, "{report}");
    assert!(
        report.contains(&format!("UNSIGNED checkpoint at position {second} ")),
        "{report}"
    );
    let (_, public_key, _) = run_command(BINARY, &log.env, &["audit", "public-key"]);
    let mut impostor = log.env.clone();
    impostor.insert(
        "AUDIT_SIGNING_KEY".into(),
        "aW1wb3N0b3Itc2lnbmluZy1rZXktb2YtMzItYnl0ZXM=".into(),
    );
    let (_, impostor_key, _) = run_command(BINARY, &impostor, &["audit", "public-key"]);
    assert_ne!(impostor_key.trim(), public_key.trim());
    let (passed, report) = log.verify(&["--public-key", impostor_key.trim()]);
    assert!(!passed, "{report}");
    assert_eq!(report.matches("UNSIGNED checkpoint").count(), 2, "{report}");

    // Rows slipped in without a feed position are found too.
    let log = SignedLog::build(&pebble, kind).await;
    let e = &log.ids["e"];
    log.database
        .execute(&format!(
            "UPDATE events SET position = 0 WHERE aggregate_id = '{e}'"
        ))
        .await;
    let (passed, report) = log.verify(&[]);
    assert!(!passed, "{report}");
    assert!(
        report.contains("OUTSIDE THE FEED: 1 stored events"),
        "{report}"
    );
}
on_both_stores!(every_kind_of_tampering_is_reported_between_the_right_checkpoints);

async fn the_service_refuses_to_sign_over_a_rewritten_log_and_kept_copies_catch_a_deleted_checkpoint(
    kind: StoreKind,
) {
    let pebble = Pebble::start(PebbleOptions::default());

    // The log rewritten under a stored checkpoint: a restarted service walks it behind its
    // newest checkpoint in the background, finds it, and refuses to sign from then on.
    let log = SignedLog::build(&pebble, kind).await;
    rewrite_stream(&log, "d", |payload| {
        payload.replace("d.tamper.test", "evil.tamper.test")
    })
    .await;
    let service = Service::start(BINARY, &log.env);
    let refusals = || service.metric("dns_handling_checkpoint_refusals_total");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while refusals().await != Some(1.0) {
        assert!(
            std::time::Instant::now() < deadline,
            "the walk behind the newest checkpoint found nothing: {}",
            service.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (code, refused) = service.post("/audit/checkpoints", None).await;
    assert_eq!(code, 500, "{refused}");
    // The client reads the request id; why the signing was refused is in the log, beside it.
    let message = refused["error"].as_str().unwrap_or_default();
    let request_id = message
        .strip_prefix("internal error; request id ")
        .unwrap_or_else(|| panic!("{refused}"));
    let log = service.log();
    assert!(
        log.lines().any(|line| line.contains(request_id)
            && line.contains("refusing to sign")
            && line.contains("no longer matches")),
        "{refused}\n{log}"
    );
    assert_eq!(refusals().await, Some(2.0), "the walk's and the request's");
    drop(service);

    // The same rewrite with the covering checkpoint deleted too: the service cannot tell, signs
    // the log as it finds it, and an auditor who kept the deleted checkpoint still can tell.
    let log = SignedLog::build(&pebble, kind).await;
    let second = SignedLog::position(&log.second);
    rewrite_stream(&log, "d", |payload| {
        payload.replace("d.tamper.test", "evil.tamper.test")
    })
    .await;
    log.database
        .execute(&format!(
            "DELETE FROM audit_checkpoints WHERE position = {second}"
        ))
        .await;
    let service = Service::start(BINARY, &log.env);
    sign(&service, 201).await;
    drop(service);
    let (passed, report) = log.verify(&[]);
    assert!(
        passed,
        "without the kept copy the rewrite is invisible: {report}"
    );
    let kept = TempDir::new("kept-checkpoints");
    let kept_file = kept.path().join("checkpoints.json");
    std::fs::write(
        &kept_file,
        serde_json::json!({"items": [log.second, log.first]}).to_string(),
    )
    .expect("the kept copies");
    let (passed, report) = log.verify(&["--known", &kept_file.display().to_string()]);
    assert!(!passed, "{report}");
    assert!(
        report.contains(&format!("MISSING checkpoint at position {second}:")),
        "{report}"
    );
    log.assert_mismatch_in_the_second_range(&report);
}
on_both_stores!(
    the_service_refuses_to_sign_over_a_rewritten_log_and_kept_copies_catch_a_deleted_checkpoint
);

/// The newest checkpoint deleted and the events after the one before it rewritten: the log
/// still verifies as it stands, but not as fresh as the auditor requires (`--max-age`), and an
/// auditor who kept what the last clean run saw (`--known … --update-known`) sees it is gone.
async fn a_deleted_newest_checkpoint_is_caught_by_max_age_and_by_the_checkpoints_kept(
    kind: StoreKind,
) {
    let pebble = Pebble::start(PebbleOptions::default());
    let log = SignedLog::build(&pebble, kind).await;
    let kept = TempDir::new("seen-checkpoints");
    let kept_file = kept.path().join("seen.jsonl");
    std::fs::write(&kept_file, "").expect("an empty file");
    let kept_path = kept_file.display().to_string();
    let (passed, report) =
        log.verify(&["--max-age", "1h", "--known", &kept_path, "--update-known"]);
    assert!(passed, "an untouched, fresh log: {report}");
    let seen = std::fs::read_to_string(&kept_file).expect("the checkpoints seen");
    assert_eq!(seen.lines().count(), 2, "both checkpoints kept: {seen}");

    let second = SignedLog::position(&log.second);
    log.database
        .execute(&format!(
            "DELETE FROM audit_checkpoints WHERE position = {second}"
        ))
        .await;
    rewrite_stream(&log, "d", |payload| {
        payload.replace("d.tamper.test", "evil.tamper.test")
    })
    .await;
    let (passed, report) = log.verify(&[]);
    assert!(passed, "as it stands the log is consistent: {report}");
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let (passed, report) = log.verify(&["--max-age", "1s"]);
    assert!(!passed, "{report}");
    assert!(report.contains("STALE: the newest checkpoint"), "{report}");
    let first = SignedLog::position(&log.first);
    assert!(
        report.contains("UNCOVERED: 4 events")
            && report.contains(&format!("position {}", first + 1)),
        "the four events after the first checkpoint: {report}"
    );
    let (passed, report) = log.verify(&["--known", &kept_path]);
    assert!(!passed, "{report}");
    assert!(
        report.contains(&format!("MISSING checkpoint at position {second}:")),
        "{report}"
    );
}
on_both_stores!(a_deleted_newest_checkpoint_is_caught_by_max_age_and_by_the_checkpoints_kept);
