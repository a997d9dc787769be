//! The console at `/console/`: its assets and the API it reads (`GET /overview`, `GET /whoami`,
//! `GET /domains?name=`), then the whole console in headless Chromium driven by Selenium
//! (`tests/console/browser_test.py`) against the real service on Pebble: an auditor reads and
//! sees the timeline verified, an admin registers and issues through it and watches the domain
//! turn active without a reload, a refused action shows the API's error, the token outlives
//! nothing, and axe-core finds no serious accessibility violation.

use std::path::{Path, PathBuf};
use std::process::Command;

use dns_handling_testkit::{
    active_domain, pebble_and_database, verified_domain, Service, StoreKind,
};
use serde_json::Value;

use crate::BINARY;

crate::on_both_stores!(the_overview_counts_domains_certificates_orders_and_activity);
crate::on_both_stores!(searching_by_name_finds_only_matching_domains_and_refuses_patterns);

const ADMIN: &str = "console-admin-token-5b1f0c";
const AUDITOR: &str = "console-auditor-token-93d2e7";

async fn get_with(service: &Service, token: Option<&str>, path: &str) -> (u16, Value) {
    let mut request = reqwest::Client::new().get(service.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_is_served_from_the_binary_with_a_policy_that_loads_only_itself() {
    let (_pebble, _database, mut env) = pebble_and_database(StoreKind::Sqlite).await;
    env.insert("AUTH_TOKEN".into(), ADMIN.into());
    let service = Service::start(BINARY, &env);
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");

    let redirect = client
        .get(service.url("/console"))
        .send()
        .await
        .expect("get");
    assert_eq!(redirect.status().as_u16(), 308);
    assert_eq!(redirect.headers()["location"], "/console/");

    for (path, content_type) in [
        ("/console/", "text/html"),
        ("/console/console.js", "text/javascript"),
        ("/console/tokens.js", "text/javascript"),
        ("/console/console.css", "text/css"),
    ] {
        // No token: the assets hold no data.
        let response = client.get(service.url(path)).send().await.expect("get");
        assert_eq!(response.status().as_u16(), 200, "{path}");
        let headers = response.headers().clone();
        assert!(
            headers["content-type"]
                .to_str()
                .expect("ascii")
                .starts_with(content_type),
            "{path}: {:?}",
            headers["content-type"]
        );
        let policy = headers["content-security-policy"].to_str().expect("ascii");
        assert!(policy.contains("default-src 'none'"), "{policy}");
        assert!(policy.contains("script-src 'self'"), "{policy}");
        assert!(policy.contains("connect-src 'self'"), "{policy}");
        assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["referrer-policy"], "no-referrer");
        let tag = headers["etag"].clone();
        let body = response.text().await.expect("body");
        assert!(body.len() > 500, "{path} is {} bytes", body.len());
        // Nothing is fetched from elsewhere.
        assert!(
            !body.contains("https://"),
            "{path} refers to another origin"
        );

        let again = client
            .get(service.url(path))
            .header("if-none-match", tag)
            .send()
            .await
            .expect("get");
        assert_eq!(again.status().as_u16(), 304, "{path} revalidates");
    }
    // Only GET: the console's paths take nothing else.
    let posted = client
        .post(service.url("/console/"))
        .send()
        .await
        .expect("post");
    assert_eq!(posted.status().as_u16(), 404);
    let body: Value = posted.json().await.expect("json error");
    assert!(body["error"].is_string(), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whoami_tells_each_token_its_role_and_refuses_an_unknown_one() {
    let (_pebble, _database, mut env) = pebble_and_database(StoreKind::Sqlite).await;
    env.insert("AUTH_TOKEN".into(), ADMIN.into());
    env.insert("READ_ONLY_TOKENS".into(), AUDITOR.into());
    let service = Service::start(BINARY, &env);

    let (code, admin) = get_with(&service, Some(ADMIN), "/whoami").await;
    assert_eq!(code, 200, "{admin}");
    assert_eq!(admin["role"], "admin");
    assert_eq!(admin["feed_position"], 0);
    let (code, auditor) = get_with(&service, Some(AUDITOR), "/whoami").await;
    assert_eq!(code, 200, "{auditor}");
    assert_eq!(auditor["role"], "auditor");
    let (code, refused) = get_with(&service, Some("guess"), "/whoami").await;
    assert_eq!(code, 401, "{refused}");
    assert!(refused["error"]
        .as_str()
        .expect("error")
        .contains("bearer token"));
    let (code, _) = get_with(&service, None, "/whoami").await;
    assert_eq!(code, 401);

    service.register("whoami.example.test").await;
    let (_, admin) = get_with(&service, Some(ADMIN), "/whoami").await;
    assert_eq!(
        admin["feed_position"], 1,
        "registering is the feed's first event"
    );
}

async fn the_overview_counts_domains_certificates_orders_and_activity(kind: StoreKind) {
    let (pebble, _database, env) = pebble_and_database(kind).await;
    let service = Service::start(BINARY, &env);

    let (code, empty) = service.get("/overview").await;
    assert_eq!(code, 200, "{empty}");
    assert_eq!(empty["domains_by_status"]["pending"], 0);
    assert_eq!(empty["activity"].as_array().expect("days").len(), 14);
    assert_eq!(empty["feed_position"], 0);

    let active = active_domain(&service, &pebble, "overview-active.example.test").await;
    verified_domain(&service, &pebble, "overview-verified.example.test").await;
    service.register("overview-pending.example.test").await;
    let (removed, _, _) = service.register("overview-removed.example.test").await;
    assert_eq!(service.delete(&format!("/domains/{removed}")).await, 204);
    let waiting = verified_domain(&service, &pebble, "overview-waiting.example.test").await;
    let (code, _) = service
        .post(&format!("/domains/{waiting}/issue-certificate"), None)
        .await;
    assert_eq!(code, 202);

    let (code, figures) = service.get("/overview?days=3").await;
    assert_eq!(code, 200, "{figures}");
    let by_status = &figures["domains_by_status"];
    assert_eq!(by_status["active"], 1, "{figures}");
    assert_eq!(by_status["verified"], 1, "{figures}");
    assert_eq!(by_status["pending"], 1, "{figures}");
    assert_eq!(by_status["certificate_pending"], 1, "{figures}");
    assert_eq!(by_status["failed"], 0, "{figures}");
    assert!(by_status.get("removed").is_none(), "{figures}");
    // Pebble's certificates live for days: the one certificate is "later" than 30 days or
    // within them, never expired.
    let expiry = &figures["certificates_by_expiry"];
    let total: i64 = ["expired", "within_1d", "within_7d", "within_30d", "later"]
        .iter()
        .map(|bucket| expiry[bucket].as_i64().expect("count"))
        .sum();
    assert_eq!(total, 1, "{figures}");
    assert_eq!(expiry["expired"], 0, "{figures}");
    // Issued a moment ago, scheduled or not: not a renewal due.
    assert_eq!(figures["renewals_due_within_7d"], 0, "{figures}");
    assert_eq!(figures["open_orders"], 1, "{figures}");
    let days = figures["activity"].as_array().expect("days");
    assert_eq!(days.len(), 3);
    let today = chrono::Utc::now().date_naive().to_string();
    let last = days.last().expect("today");
    assert_eq!(last["day"], today.as_str(), "{figures}");
    assert_eq!(last["issued"], 1, "{figures}");
    assert_eq!(last["failed"], 0, "{figures}");
    let (_, history) = service.get(&format!("/domains/{active}/events")).await;
    let last_position = history
        .as_array()
        .and_then(|events| events.last())
        .and_then(|event| event["position"].as_i64())
        .expect("a position");
    assert!(
        figures["feed_position"].as_i64().expect("position") >= last_position,
        "{figures}"
    );

    for bad in [
        "/overview?days=0",
        "/overview?days=91",
        "/overview?days=x",
        "/overview?extra=1",
    ] {
        let (code, body) = service.get(bad).await;
        assert_eq!(code, 400, "{bad}: {body}");
        assert!(body["error"].is_string(), "{bad}: {body}");
    }
}

async fn searching_by_name_finds_only_matching_domains_and_refuses_patterns(kind: StoreKind) {
    let (_pebble, _database, env) = pebble_and_database(kind).await;
    let service = Service::start(BINARY, &env);
    let (shop, _, _) = service.register("shop.search.example.test").await;
    let (blog, _, _) = service.register("blog.search.example.test").await;
    service.register("other.example.test").await;

    let ids = |page: &Value| -> Vec<String> {
        page["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|item| item["id"].as_str().expect("id").to_owned())
            .collect()
    };
    let (code, page) = service.get("/domains?name=SHOP").await;
    assert_eq!(code, 200, "{page}");
    assert_eq!(ids(&page), vec![shop.clone()], "case does not matter");
    let (_, page) = service.get("/domains?name=.search.example").await;
    let mut found = ids(&page);
    found.sort();
    let mut expected = vec![shop.clone(), blog.clone()];
    expected.sort();
    assert_eq!(found, expected);
    let (_, page) = service
        .get("/domains?name=search&status=pending&limit=1")
        .await;
    assert_eq!(page["items"].as_array().expect("items").len(), 1);
    let cursor = page["next_cursor"]
        .as_str()
        .expect("a second page")
        .to_owned();
    let (_, second) = service
        .get(&format!(
            "/domains?name=search&status=pending&limit=1&cursor={cursor}"
        ))
        .await;
    assert_eq!(second["items"].as_array().expect("items").len(), 1);
    assert_ne!(ids(&page), ids(&second));
    let (_, none) = service.get("/domains?name=nothing-like-it").await;
    assert!(ids(&none).is_empty());

    // A pattern character is refused, not read as a wildcard.
    for bad in ["%25", "_", "a%20b", "x'y"] {
        let (code, body) = service.get(&format!("/domains?name={bad}")).await;
        assert_eq!(code, 400, "{bad}: {body}");
        assert!(
            body["error"].as_str().expect("error").contains("host name"),
            "{bad}: {body}"
        );
    }
    let long = "a".repeat(254);
    let (code, _) = service.get(&format!("/domains?name={long}")).await;
    assert_eq!(code, 400);
}

/// Where the browser test saves its screenshots: `target/console-screenshots`.
fn screenshots_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots")
}

/// The virtual environment's python (tests/run.sh installs Selenium there).
fn python() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let beside_schemathesis = std::env::var_os("SCHEMATHESIS")
        .map(PathBuf::from)
        .and_then(|schemathesis| schemathesis.parent().map(|bin| bin.join("python")));
    beside_schemathesis
        .filter(|python| python.exists())
        .unwrap_or_else(|| root.join("target/schemathesis/bin/python"))
}

/// axe-core's script: `$AXE_CORE_JS`, or where tests/run.sh installs it.
fn axe_core() -> PathBuf {
    std::env::var_os("AXE_CORE_JS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("target/console-npm/node_modules/axe-core/axe.min.js")
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_a_real_browser_reads_registers_issues_and_refuses() {
    let (python, axe) = (python(), axe_core());
    for (path, what) in [
        (&python, "Python with Selenium"),
        (&axe, "axe-core"),
        (&PathBuf::from("/usr/bin/chromedriver"), "chromium-driver"),
    ] {
        assert!(
            path.exists(),
            "{what} is missing at {}: run ./tests/run.sh, which installs it",
            path.display()
        );
    }
    let (pebble, database, mut env) = pebble_and_database(StoreKind::Postgres).await;
    env.insert("AUTH_TOKEN".into(), ADMIN.into());
    env.insert("READ_ONLY_TOKENS".into(), AUDITOR.into());
    let service = Service::start(BINARY, &env);

    let active = active_domain(&service, &pebble, "console-active.example.test").await;
    let (pending, _, _) = service.register("console-pending.example.test").await;
    let failed = failed_domain(&pebble, &env, &service).await;
    let (code, checkpoint) = service.post("/audit/checkpoints", None).await;
    assert!(code == 201 || code == 200, "{checkpoint}");

    let screenshots = screenshots_dir();
    let _ = std::fs::remove_dir_all(&screenshots);
    let browser_test = BrowserTest {
        python,
        axe,
        base: service.url(""),
        challtestsrv: format!("http://127.0.0.1:{}", pebble.challtestsrv_port),
        screenshots: screenshots.clone(),
        ids: [
            ("ACTIVE_DOMAIN_ID", active.clone()),
            ("PENDING_DOMAIN_ID", pending),
            ("FAILED_DOMAIN_ID", failed),
        ],
    };
    browser_test.run(&service, &[]).await;

    // Whoever can write the database rewrites the log's end and signs it with a key of their
    // own, naming that key in the row: the console must not call it verified.
    let foreign_key = replace_latest_checkpoint_with_a_foreign_one(&database).await;
    browser_test
        .run(
            &service,
            &[
                ("PHASE", "foreign-checkpoint"),
                ("FOREIGN_KEY", foreign_key.as_str()),
            ],
        )
        .await;
    for name in [
        "01-sign-in",
        "02-domains-auditor",
        "03-domain-auditor",
        "04-overview",
        "07-domain-active",
        "08-refused-action",
        "09-domains-phone",
        "11-foreign-checkpoint",
    ] {
        let png = std::fs::read(screenshots.join(format!("{name}.png"))).expect("a screenshot");
        assert!(
            png.starts_with(b"\x89PNG") && png.len() > 5_000,
            "{name}.png"
        );
    }
    // The tokens went only into Authorization headers: the service logged neither.
    let log = service.log();
    assert!(!log.contains(ADMIN) && !log.contains(AUDITOR));
    // What the console did is in the log as the admin's doing.
    let (_, listed) = service.get("/domains?name=console-new").await;
    let created = &listed["items"][0];
    assert_eq!(created["status"], "active", "{listed}");
    let (_, history) = service
        .get(&format!(
            "/domains/{}/events",
            created["id"].as_str().expect("id")
        ))
        .await;
    let registered = &history[0];
    assert_eq!(registered["event_type"], "DomainRegistered");
    assert_eq!(registered["metadata"]["role"], "admin", "{registered}");
}

/// One run of `tests/console/browser_test.py` against the service.
struct BrowserTest {
    python: PathBuf,
    axe: PathBuf,
    base: String,
    challtestsrv: String,
    screenshots: PathBuf,
    /// The domains the script expects, by the variable that names each.
    ids: [(&'static str, String); 3],
}

impl BrowserTest {
    /// Runs the script with `extra` in its environment; fails the test when it fails.
    async fn run(&self, service: &Service, extra: &[(&str, &str)]) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/console/browser_test.py");
        let mut command = Command::new(&self.python);
        command
            .arg(script)
            .env("CONSOLE_BASE", &self.base)
            .env("ADMIN_TOKEN", ADMIN)
            .env("AUDITOR_TOKEN", AUDITOR)
            .env("CHALLTESTSRV", &self.challtestsrv)
            .env("NEW_DOMAIN", "console-new.example.test")
            .env("SCREENSHOTS", &self.screenshots)
            .env("AXE_CORE_JS", &self.axe)
            // Selenium must not look for a driver or a browser on the network.
            .env("SE_OFFLINE", "true");
        for (name, value) in &self.ids {
            command.env(name, value);
        }
        for (name, value) in extra {
            command.env(name, value);
        }
        let run = tokio::task::spawn_blocking(move || {
            command.output().expect("running the browser test")
        })
        .await
        .expect("the browser test's thread");
        let stdout = String::from_utf8_lossy(&run.stdout);
        let stderr = String::from_utf8_lossy(&run.stderr);
        println!("{stdout}");
        assert!(
            run.status.success(),
            "the browser test {extra:?} failed:\n{stdout}\n{stderr}\nservice log tail:\n{}",
            service
                .log()
                .lines()
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .join("\n")
        );
        assert!(stdout.contains("all console checks passed"), "{stdout}");
    }
}

/// A domain whose order failed: placed by a second replica whose orders time out after two
/// seconds (the deadline is the order's, so whichever replica polls it lets it fail).
async fn failed_domain(
    pebble: &dns_handling_testkit::Pebble,
    env: &std::collections::HashMap<String, String>,
    service: &Service,
) -> String {
    let mut hasty = env.clone();
    hasty.insert("POLL_TIMEOUT".into(), "2s".into());
    let mut replica = Service::start(BINARY, &hasty);
    let id = verified_domain(&replica, pebble, "console-failed.example.test").await;
    let (code, body) = replica
        .post(&format!("/domains/{id}/issue-certificate"), None)
        .await;
    assert_eq!(code, 202, "{body}");
    replica
        .wait_for_status(&id, &["failed"], std::time::Duration::from_secs(60))
        .await;
    replica.kill();
    service
        .wait_for_status(&id, &["failed"], std::time::Duration::from_secs(30))
        .await;
    id
}

/// Deletes the checkpoints at the feed's end and puts there one signed by another Ed25519 key,
/// naming that key, as whoever rewrote the log would; answers that key (standard base64).
async fn replace_latest_checkpoint_with_a_foreign_one(
    database: &dns_handling_testkit::TestDatabase,
) -> String {
    use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;
    use dns_handling::audit::checkpoints::Checkpoint;

    let key_pair = Ed25519KeyPair::from_seed_unchecked(&[7u8; 32]).expect("a key");
    let public_key = STANDARD.encode(key_pair.public_key().as_ref());
    let head: i64 = database
        .texts("CAST(MAX(position) AS TEXT) FROM events")
        .await[0]
        .parse()
        .expect("a position");
    let mut checkpoint = Checkpoint {
        position: head,
        event_count: head,
        log_hash: "ab".repeat(32),
        signed_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        public_key: public_key.clone(),
        signature: String::new(),
    };
    checkpoint.signature = STANDARD.encode(key_pair.sign(checkpoint.message().as_bytes()).as_ref());
    assert!(
        checkpoint.is_signed_by(&public_key),
        "signed by the foreign key"
    );
    database
        .execute(&format!(
            "DELETE FROM audit_checkpoints WHERE position >= {head}"
        ))
        .await;
    database
        .execute(&format!(
            "INSERT INTO audit_checkpoints (position, event_count, log_hash, signed_at, public_key, signature) \
             VALUES ({}, {}, '{}', '{}', '{}', '{}')",
            checkpoint.position,
            checkpoint.event_count,
            checkpoint.log_hash,
            checkpoint.signed_at,
            checkpoint.public_key,
            checkpoint.signature
        ))
        .await;
    public_key
}
