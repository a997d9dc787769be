//! The analysts' questions, on both stores: a log the service writes against Pebble (manual and
//! delegated issuances, a timeout then a retry, a refused finalization, a renewal by ARI, a
//! revocation and its replacement, renewals by lifetime, key reads by an admin and an edge) is
//! exported with `export --format parquet`, and DuckDB (tests/run.sh's venv) runs the queries
//! of docs/analytics.md, read from the doc, over the files. Each answer is checked against the
//! same figure computed from the API's histories (`GET /domains/{id}/events`), up to the last
//! position exported: the service goes on renewing while the test compares.

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use dns_handling_testkit::{
    active_domain, issue_and_publish, run_command, verified_domain, AriFront, FrontTarget, Service,
    StoreKind, TempDir,
};
use serde_json::{json, Value};

use crate::delegation::{delegated, verified_by_cname};
use crate::BINARY;

crate::on_both_stores!(
    the_analysts_questions_are_answered_from_the_parquet_export_as_the_api_answers_them
);

const ADMIN: &str = "analytics-admin-token";
const EDGE: &str = "analytics-edge-token";

/// The DuckDB queries of docs/analytics.md, by name, in the doc's order.
fn doc_queries() -> Vec<(String, String)> {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/analytics.md"))
            .expect("docs/analytics.md");
    let mut queries = Vec::new();
    for part in doc.split("<!-- query: ").skip(1) {
        let (name, rest) = part.split_once(" -->").expect("a query's name");
        let sql = rest
            .split_once("```sql\n")
            .and_then(|(_, sql)| sql.split_once("```"))
            .map(|(sql, _)| sql.to_owned())
            .expect("a query's SQL block");
        queries.push((name.to_owned(), sql));
    }
    queries
}

/// The tests' Python (tests/run.sh installs DuckDB there, beside schemathesis).
fn python() -> PathBuf {
    std::env::var_os("SCHEMATHESIS")
        .map(PathBuf::from)
        .and_then(|schemathesis| schemathesis.parent().map(|bin| bin.join("python")))
        .filter(|python| python.exists())
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("target/schemathesis/bin/python")
        })
}

/// DuckDB's answer to every query of the doc over `dir`.
fn duckdb(dir: &Path) -> HashMap<String, Vec<Vec<Value>>> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/analytics_duckdb.py");
    let mut child = Command::new(python())
        .arg(script)
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python runs (tests/run.sh installs DuckDB into target/schemathesis)");
    let queries = serde_json::to_vec(&doc_queries()).expect("JSON");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&queries)
        .expect("queries sent");
    let output = child.wait_with_output().expect("duckdb ran");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON answers")
}

fn time(value: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(value.as_str().unwrap_or_else(|| panic!("a time: {value}")))
        .expect("RFC 3339")
        .with_timezone(&Utc)
}

/// Waits until the domain's view satisfies `done`.
async fn wait_for(
    service: &Service,
    id: &str,
    within: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let (_, view) = service.get(&format!("/domains/{id}")).await;
        if done(&view) {
            return view;
        }
        assert!(
            Instant::now() < deadline,
            "not reached in {within:?}: {view}\n{}",
            service.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn publish_renewal_records(service_pebble: &dns_handling_testkit::Pebble, view: &Value) {
    for challenge in view["renewal"]["challenges"]
        .as_array()
        .into_iter()
        .flatten()
    {
        service_pebble.set_txt(
            challenge["challenge_domain"].as_str().expect("a name"),
            challenge["expected_txt_value"].as_str().expect("a value"),
        );
    }
}

fn certificate_of(view: &Value) -> Value {
    view["certificate"]["id"].clone()
}

/// Every event of every domain through the API, up to position `through`.
async fn api_events(service: &Service, ids: &[&str], through: i64) -> Vec<Value> {
    let mut all = Vec::new();
    for id in ids {
        let (code, history) = service.get(&format!("/domains/{id}/events")).await;
        assert_eq!(code, 200, "{history}");
        all.extend(
            history
                .as_array()
                .expect("a list")
                .iter()
                .filter(|event| event["position"].as_i64().expect("a position") <= through)
                .map(|event| {
                    // The domain of each event, whether or not the history repeats it.
                    let mut event = event.clone();
                    event["aggregate_id"] = json!(id);
                    event
                }),
        );
    }
    all.sort_by_key(|event| event["position"].as_i64());
    all
}

/// The events of one type.
fn of_type<'a>(events: &'a [Value], event_type: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    events
        .iter()
        .filter(move |event| event["event_type"] == event_type)
}

fn body(event: &Value) -> &Value {
    let event_type = event["event_type"].as_str().expect("a type");
    &event["payload"][event_type]
}

/// DuckDB's `quantile_cont`: linear interpolation between the closest ranks.
fn quantile(values: &mut [f64], q: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let place = q * (values.len() - 1) as f64;
    let (low, high) = (place.floor() as usize, place.ceil() as usize);
    values[low] + (values[high] - values[low]) * (place - low as f64)
}

fn number(value: &Value) -> f64 {
    value
        .as_f64()
        .or_else(|| value.as_str().and_then(|text| text.parse().ok()))
        .unwrap_or_else(|| panic!("a number: {value}"))
}

async fn the_analysts_questions_are_answered_from_the_parquet_export_as_the_api_answers_them(
    kind: StoreKind,
) {
    let setup = delegated(kind).await;
    let pebble = &setup.pebble;
    let front = AriFront::start(pebble);
    let mut env = setup.env.clone();
    env.insert("ACME_DIRECTORY".into(), front.directory_url());
    env.insert("RENEWAL_CHECK_INTERVAL".into(), "300ms".into());
    env.insert("POLL_TIMEOUT".into(), "6s".into());
    // Past RENEW_BEFORE from its issue, every certificate renews by lifetime unless the CA
    // suggests a window.
    env.insert("RENEW_BEFORE".into(), "2000d".into());
    env.insert("AUTH_TOKEN".into(), ADMIN.into());
    env.insert("EDGE_TOKENS".into(), format!("edge1={EDGE}"));
    let now = Utc::now();
    // The CA's window for every certificate has passed: the first one issued is renewed by
    // ARI at once; then the window moves far ahead, and nothing else renews by ARI.
    front.set_window(
        now - chrono::Duration::hours(2),
        now - chrono::Duration::hours(1),
        None,
        3600,
    );
    let service = Service::start(BINARY, &env);

    // A manual domain, issued, then renewed by ARI.
    let manual = active_domain(&service, pebble, "manual.analytics.test").await;
    let renewing = wait_for(&service, &manual, Duration::from_secs(30), |view| {
        view["renewal"]["in_progress"] == true
    })
    .await;
    let later = now + chrono::Duration::days(3000);
    front.set_window(later, later + chrono::Duration::days(1), None, 3600);
    publish_renewal_records(pebble, &renewing);
    let first = certificate_of(&renewing);
    wait_for(&service, &manual, Duration::from_secs(60), |view| {
        certificate_of(view) != first
    })
    .await;

    // A delegated domain, issued without a person, then revoked and replaced.
    let delegated_id = verified_by_cname(&service, pebble, "delegated.analytics.test", &[]).await;
    let (code, body_) = service
        .post(&format!("/domains/{delegated_id}/issue-certificate"), None)
        .await;
    assert_eq!(code, 202, "{body_}");
    let issued = service
        .wait_for_status(&delegated_id, &["active"], Duration::from_secs(60))
        .await;
    let (code, revoked) = service
        .post(
            &format!("/domains/{delegated_id}/certificate/revoke"),
            Some(json!({"reason": "keyCompromise"})),
        )
        .await;
    assert_eq!(code, 200, "{revoked}");
    let first = certificate_of(&issued);
    wait_for(&service, &delegated_id, Duration::from_secs(60), |view| {
        view["status"] == "active"
            && certificate_of(view) != first
            && !certificate_of(view).is_null()
    })
    .await;

    // A domain whose first order timed out, retried and issued.
    let late = verified_domain(&service, pebble, "late.analytics.test").await;
    let (code, started) = service
        .post(&format!("/domains/{late}/issue-certificate"), None)
        .await;
    assert_eq!(code, 202, "{started}");
    service
        .wait_for_status(&late, &["failed"], Duration::from_secs(30))
        .await;
    let (code, retried) = service.post(&format!("/domains/{late}/retry"), None).await;
    assert_eq!(code, 200, "{retried}");
    issue_and_publish(&service, pebble, &late).await;

    // A domain whose finalization the CA refused.
    let refused = verified_domain(&service, pebble, "refused.analytics.test").await;
    front
        .front()
        .answer_refused(FrontTarget::Finalize, 1, "badCSR");
    let (code, started) = service
        .post(&format!("/domains/{refused}/issue-certificate"), None)
        .await;
    assert_eq!(code, 202, "{started}");
    pebble.set_txt(
        started["challenge_domain"].as_str().expect("a name"),
        started["expected_txt_value"].as_str().expect("a value"),
    );
    let failed = service
        .wait_for_status(&refused, &["failed"], Duration::from_secs(60))
        .await;
    assert_eq!(
        failed["failure_reason"]["code"], "finalize_failed",
        "{failed}"
    );

    // Private keys read: twice by the admin, once by an edge.
    for _ in 0..2 {
        let (code, key) = service
            .get(&format!("/domains/{manual}/certificate/key"))
            .await;
        assert_eq!(code, 200, "{key}");
    }
    // The edges' index follows the feed: the certificate is served within moments.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let edge_read = service
            .client
            .get(service.url(
                "/edge/certificate?cipher_suites=4865,4866&server_name=late.analytics.test&signature_schemes=1027",
            ))
            .bearer_auth(EDGE)
            .send()
            .await
            .expect("GET");
        if edge_read.status().as_u16() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "never served to the edge");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A renewal by lifetime: the CA gives no renewal information any more, and every
    // certificate is past RENEW_BEFORE. The delegated domain renews by itself (and again, until
    // the test ends; the figures are compared up to the export's last event).
    front.answer_error(500);
    let lifetime = verified_by_cname(&service, pebble, "lifetime.analytics.test", &[]).await;
    let (code, started) = service
        .post(&format!("/domains/{lifetime}/issue-certificate"), None)
        .await;
    assert_eq!(code, 202, "{started}");
    let issued = service
        .wait_for_status(&lifetime, &["active"], Duration::from_secs(60))
        .await;
    let first = certificate_of(&issued);
    wait_for(&service, &lifetime, Duration::from_secs(60), |view| {
        certificate_of(view) != first
    })
    .await;

    // The export, while the service goes on.
    let dir = TempDir::new("analytics-export");
    let (status, _, stderr) = run_command(
        BINARY,
        &env,
        &[
            "export",
            "--format",
            "parquet",
            "--dir",
            &dir.path().display().to_string(),
        ],
    );
    assert!(status.success(), "{stderr}");
    let through = dir
        .path()
        .read_dir()
        .expect("dir")
        .filter_map(|entry| {
            dns_handling::cli::export::positions_in(&entry.ok()?.file_name().to_string_lossy())
        })
        .map(|(_, last)| last)
        .max()
        .expect("an events file");
    let answers = duckdb(dir.path());
    let ids = [manual.as_str(), &delegated_id, &late, &refused, &lifetime];
    let events = api_events(&service, &ids, through).await;
    check_answers(&answers, &events);
}

/// Each of DuckDB's answers against the same figure from the API's events.
fn check_answers(answers: &HashMap<String, Vec<Vec<Value>>>, events: &[Value]) {
    let orders: HashMap<String, &Value> = of_type(events, "CertificateRequested")
        .chain(of_type(events, "RenewalRequested"))
        .map(|event| {
            (
                body(event)["order"]["order_id"]
                    .as_str()
                    .expect("id")
                    .to_owned(),
                &body(event)["order"],
            )
        })
        .collect();

    // Issuances and failures per day, by CA and failure code.
    let mut expected: BTreeMap<(String, String, String, String), i64> = BTreeMap::new();
    for event in events {
        let event_type = event["event_type"].as_str().expect("a type");
        let body = body(event);
        let (at, outcome, code, ca) = match event_type {
            "CertificateIssued" => (
                &body["issued_at"],
                "issued",
                Value::Null,
                body["certificate"]["ca_directory"].clone(),
            ),
            "IssuanceFailed" | "RenewalFailed" | "IssuanceTimedOut" => {
                let code = match event_type {
                    "IssuanceTimedOut" => json!("dns_timeout"),
                    _ => body["reason"]["code"].clone(),
                };
                let ca = body["order_id"]
                    .as_str()
                    .and_then(|id| orders.get(id))
                    .map_or(Value::Null, |order| order["ca_directory"].clone());
                let at = if event_type == "IssuanceTimedOut" {
                    &body["timed_out_at"]
                } else {
                    &body["failed_at"]
                };
                (at, "failed", code, ca)
            }
            _ => continue,
        };
        let day = time(at).date_naive().to_string();
        *expected
            .entry((day, ca.to_string(), outcome.to_owned(), code.to_string()))
            .or_default() += 1;
    }
    let answered: BTreeMap<(String, String, String, String), i64> = answers["per_day"]
        .iter()
        .map(|row| {
            (
                (
                    row[0].as_str().expect("a day").to_owned(),
                    row[1].to_string(),
                    row[2].as_str().expect("an outcome").to_owned(),
                    row[3].to_string(),
                ),
                row[4].as_i64().expect("a count"),
            )
        })
        .collect();
    assert_eq!(answered, expected, "issuances and failures per day");
    let codes: Vec<&String> = expected.keys().map(|key| &key.3).collect();
    for code in ["\"dns_timeout\"", "\"finalize_failed\""] {
        assert!(
            codes.iter().any(|seen| *seen == code),
            "{code} in {expected:?}"
        );
    }

    // Time from the order to the certificate, a domain's first, manual against delegated.
    let mut by_validation: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for issued in of_type(events, "CertificateIssued") {
        let body = body(issued);
        let order_id = body["certificate"]["order_id"].as_str().expect("an order");
        let Some(requested) = of_type(events, "CertificateRequested")
            .find(|event| self::body(event)["order"]["order_id"] == order_id)
        else {
            continue; // a renewal
        };
        let requested = self::body(requested);
        let seconds = (time(&body["issued_at"]) - time(&requested["requested_at"])).num_seconds();
        by_validation
            .entry(
                requested["order"]["validation"]
                    .as_str()
                    .expect("validation")
                    .to_owned(),
            )
            .or_default()
            .push(seconds as f64);
    }
    let answered = &answers["time_to_active"];
    assert_eq!(
        answered.len(),
        by_validation.len(),
        "{answered:?} against {by_validation:?}"
    );
    assert_eq!(
        by_validation.len(),
        2,
        "manual and delegated: {by_validation:?}"
    );
    for (row, (validation, seconds)) in answered.iter().zip(by_validation.iter_mut()) {
        assert_eq!(row[0], validation.as_str());
        assert_eq!(row[1].as_i64(), Some(seconds.len() as i64));
        assert!(
            (number(&row[2]) - quantile(seconds, 0.5)).abs() < 1e-6,
            "{row:?}"
        );
        assert!(
            (number(&row[3]) - quantile(seconds, 0.95)).abs() < 1e-6,
            "{row:?}"
        );
    }

    // Renewals by reason, and how early before the replaced certificate's end.
    let not_after: HashMap<&str, DateTime<Utc>> = of_type(events, "CertificateIssued")
        .map(|event| {
            let certificate = &body(event)["certificate"];
            (
                certificate["certificate_id"].as_str().expect("an id"),
                time(&certificate["not_after"]),
            )
        })
        .collect();
    let mut renewals: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for issued in of_type(events, "CertificateIssued") {
        let body = body(issued);
        let order_id = body["certificate"]["order_id"].as_str().expect("an order");
        // The renewal a certificate closes: the first request of its run of attempts.
        let Some(request) = of_type(events, "RenewalRequested")
            .find(|event| self::body(event)["order"]["order_id"] == order_id)
        else {
            continue;
        };
        let replaced = self::body(request)["renews_certificate_id"]
            .as_str()
            .expect("replaced");
        let first = of_type(events, "RenewalRequested")
            .filter(|event| event["aggregate_id"] == request["aggregate_id"])
            .filter(|event| self::body(event)["renews_certificate_id"] == replaced)
            .map(|event| {
                self::body(event)["reason"]
                    .as_str()
                    .expect("a reason")
                    .to_owned()
            })
            .next()
            .expect("the first attempt");
        renewals
            .entry(first)
            .or_default()
            .push((not_after[replaced] - time(&body["issued_at"])).num_seconds());
    }
    let answered = &answers["renewals"];
    assert!(
        renewals.contains_key("ari")
            && renewals.contains_key("lifetime")
            && renewals.contains_key("revoked"),
        "{renewals:?}"
    );
    assert_eq!(
        answered.len(),
        renewals.len(),
        "{answered:?} against {renewals:?}"
    );
    for (row, (reason, seconds)) in answered.iter().zip(&renewals) {
        assert_eq!(row[0], reason.as_str());
        assert_eq!(row[1].as_i64(), Some(seconds.len() as i64), "{row:?}");
        assert_eq!(row[2].as_i64(), seconds.iter().min().copied(), "{row:?}");
    }

    // Domains that needed more than one attempt, and why: the timed-out one.
    let answered = &answers["attempts"];
    let late: Vec<&Vec<Value>> = answered
        .iter()
        .filter(|row| row[0] == "late.analytics.test" && row[2] == "issued")
        .collect();
    let late_orders = of_type(events, "CertificateRequested")
        .filter(|event| {
            events.iter().any(|registered| {
                registered["event_type"] == "DomainRegistered"
                    && registered["aggregate_id"] == event["aggregate_id"]
                    && body(registered)["domain_name"] == "late.analytics.test"
            })
        })
        .count();
    assert_eq!(late_orders, 2);
    assert_eq!(late.len(), 1, "{answered:?}");
    assert_eq!(late[0][3].as_i64(), Some(late_orders as i64));
    assert_eq!(late[0][4], "dns_timeout");
    assert!(
        answered.iter().all(|row| row[3].as_i64().unwrap_or(0) > 1),
        "{answered:?}"
    );

    // The share of private-key reads per role.
    let mut reads: BTreeMap<String, i64> = BTreeMap::new();
    for read in of_type(events, "PrivateKeyRead") {
        let role = read["metadata"]["role"]
            .as_str()
            .or(read["metadata"]["actor"].as_str())
            .expect("a role")
            .to_owned();
        *reads.entry(role).or_default() += 1;
    }
    let total: i64 = reads.values().sum();
    assert_eq!(reads.get("admin"), Some(&2), "{reads:?}");
    assert_eq!(reads.get("edge"), Some(&1), "{reads:?}");
    let answered: BTreeMap<String, (i64, f64)> = answers["key_reads"]
        .iter()
        .map(|row| {
            (
                row[0].as_str().expect("a role").to_owned(),
                (row[1].as_i64().expect("a count"), number(&row[2])),
            )
        })
        .collect();
    assert_eq!(
        answered.len(),
        reads.len(),
        "{answered:?} against {reads:?}"
    );
    for (role, count) in &reads {
        let (reads, share) = answered[role];
        assert_eq!(reads, *count, "{role}");
        assert!(
            (share - *count as f64 / total as f64).abs() < 1e-9,
            "{role}: {share}"
        );
    }
}
