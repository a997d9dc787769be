//! A webhook receiver for the tests: `tests/webhook_receiver.py` as a process of its own, which
//! records every delivery, checks its signatures with the Standard Webhooks reference library
//! (PyPI `standardwebhooks`) and answers as the test planned (failures, slowness).
//!
//! The verifier is deliberately not ours: a Rust check written next to the service's signing
//! would share its reading of the spec, mistakes included. The library lives in the virtual
//! environment `tests/run.sh` installs (`target/schemathesis`, beside schemathesis), so the
//! receiver runs with that environment's python.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{json, Value};

use crate::process::{free_port, spawn, ChildGuard, TempDir};

/// Where a missing virtual environment or library comes from.
const INSTALL_HINT: &str = "Run tests/run.sh first: it installs the pinned Python test tools \
     (tests/schemathesis-requirements.txt, standardwebhooks among them) into target/schemathesis.";

/// `tests/webhook_receiver.py` on a free loopback port, killed when dropped.
///
/// Deliveries go to [`WebhookReceiver::url`] on any path; each path has its own plan of
/// answers ([`WebhookReceiver::plan`]), its own secrets ([`WebhookReceiver::trust`]) and its
/// own record of what arrived ([`WebhookReceiver::received`]), so one receiver can stand for
/// several endpoints.
pub struct WebhookReceiver {
    port: u16,
    log_path: PathBuf,
    // Dropped in this order: the process, then the directory holding its log.
    _guard: ChildGuard,
    _dir: TempDir,
}

/// One delivery as the receiver saw it, with the reference library's verdict on its
/// signatures, taken when it arrived (the library refuses timestamps more than 5 minutes off
/// its clock, so a later check could not tell a stale delivery from a fresh one).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ReceivedWebhook {
    /// Unix time (seconds, fractional) when its headers had arrived.
    pub received_at: f64,
    /// Unix time the answer was written: `None` while a planned delay holds it, or when the
    /// sender hung up before it (a sender timing out on a slow receiver).
    pub answered_at: Option<f64>,
    /// The `webhook-id` header, empty when absent.
    pub id: String,
    /// The `webhook-timestamp` header (unix seconds, as text), empty when absent.
    pub timestamp: String,
    /// The `webhook-signature` header (`v1,<base64>`, space-separated), empty when absent.
    pub signature: String,
    /// Every request header, names in lower case (the last value of a repeated one).
    pub headers: std::collections::BTreeMap<String, String>,
    /// The body parsed as JSON, else its text as a JSON string.
    pub body: Value,
    /// The body's text exactly as sent (undecodable UTF-8 bytes replaced): what was signed.
    pub raw_body: String,
    /// The status the receiver answered with (per [`WebhookReceiver::plan`], 200 otherwise).
    pub status: u16,
    /// The indices, in the order given to [`WebhookReceiver::trust`], of the secrets with
    /// which `standardwebhooks.Webhook(secret).verify(body, headers)` accepted it.
    pub verified_by: Vec<usize>,
    /// `secret <index>: <error>` for every trusted secret that did not verify it.
    pub verify_errors: Vec<String>,
}

impl WebhookReceiver {
    /// Starts the receiver on a free port and waits until it listens. Panics, telling to run
    /// tests/run.sh, when the virtual environment or its `standardwebhooks` is missing.
    pub fn start() -> WebhookReceiver {
        let python = python();
        let script = workspace_root().join("tests/webhook_receiver.py");
        let dir = TempDir::new("webhook-receiver");
        let log_path = dir.path().join("receiver.log");
        let log = std::fs::File::create(&log_path).expect("log file");
        let port = free_port();
        let mut guard = spawn(
            Command::new(&python)
                // Unbuffered, so that the "listening" line reaches us at once.
                .arg("-u")
                .arg(&script)
                .arg(port.to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(log),
            "the webhook receiver",
            INSTALL_HINT,
        );
        let stdout = guard.child.stdout.take().expect("piped stdout");
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let _ = sender.send(line);
            // Keep draining, so that the receiver never blocks on a full pipe.
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        // An empty line: the pipe closed, the receiver exited (its log says why).
        let line = receiver
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_default();
        if line.trim() != format!("listening on http://127.0.0.1:{port}") {
            // Give an exiting receiver a moment to be reaped, to report how it ended.
            std::thread::sleep(Duration::from_millis(100));
            let status = match guard.child.try_wait() {
                Ok(Some(status)) => format!("exited with {status}"),
                _ => "did not say it listens within 20 s".to_owned(),
            };
            panic!(
                "the webhook receiver ({} {}) {status} (first line {line:?}). {INSTALL_HINT} \
                 Its log:\n{}",
                python.display(),
                script.display(),
                read_log(&log_path)
            );
        }
        WebhookReceiver {
            port,
            log_path,
            _guard: guard,
            _dir: dir,
        }
    }

    /// The URL a delivery to `path` goes to: `http://127.0.0.1:PORT/path`. `path` starts with
    /// `/` and is not under `/_control/`, the receiver's own API.
    pub fn url(&self, path: &str) -> String {
        check_path(path);
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The next deliveries to `path` are answered `responses`, in order, and 200 after them;
    /// every answer to `path` waits `delay` first (a slow receiver). Replaces `path`'s
    /// previous plan, including statuses it had not used yet.
    pub fn plan(&self, path: &str, responses: &[u16], delay: Duration) {
        check_path(path);
        self.control_post(
            "plan",
            &json!({"path": path, "responses": responses, "delay_ms": delay.as_secs_f64() * 1000.0}),
        );
    }

    /// Deliveries to `path` from now on are verified with each of `secrets` (`whsec_…`;
    /// several during a rotation): [`ReceivedWebhook::verified_by`] lists those that accept
    /// one. Replaces `path`'s previous secrets; deliveries already received keep their
    /// verdicts. Panics on a secret the library cannot load.
    pub fn trust(&self, path: &str, secrets: &[&str]) {
        check_path(path);
        self.control_post("secrets", &json!({"path": path, "secrets": secrets}));
    }

    /// Every delivery to `path` so far, in arrival order.
    pub fn received(&self, path: &str) -> Vec<ReceivedWebhook> {
        check_path(path);
        fetch_received(self.port, path).unwrap_or_else(|error| {
            panic!(
                "the webhook receiver's record of {path}: {error}; its log:\n{}",
                read_log(&self.log_path)
            )
        })
    }

    /// Polls [`WebhookReceiver::received`] until `path` has at least `count` deliveries, and
    /// returns them all; panics with what did arrive when `within` passes first.
    pub async fn wait_for(
        &self,
        path: &str,
        count: usize,
        within: Duration,
    ) -> Vec<ReceivedWebhook> {
        check_path(path);
        let deadline = Instant::now() + within;
        loop {
            // The control API is reached with curl, a blocking call: off the runtime's thread,
            // so that a current-thread runtime keeps running the service's tasks meanwhile.
            let (port, owned_path) = (self.port, path.to_owned());
            let received = tokio::task::spawn_blocking(move || fetch_received(port, &owned_path))
                .await
                .expect("the poll does not panic")
                .unwrap_or_else(|error| {
                    panic!(
                        "the webhook receiver's record of {path}: {error}; its log:\n{}",
                        read_log(&self.log_path)
                    )
                });
            if received.len() >= count {
                return received;
            }
            if Instant::now() >= deadline {
                panic!(
                    "expected at least {count} deliveries to {path} within {within:?}, got {}: \
                     {received:#?}",
                    received.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// What the receiver logged (one line per request, and any error of its own).
    pub fn log(&self) -> String {
        read_log(&self.log_path)
    }

    fn control_post(&self, endpoint: &str, body: &Value) {
        let url = format!("http://127.0.0.1:{}/_control/{endpoint}", self.port);
        let output = Command::new("curl")
            .args(["-sS", "--fail-with-body", "-X", "POST", "-d"])
            .arg(body.to_string())
            .arg(&url)
            .output()
            .expect("curl runs");
        assert!(
            output.status.success(),
            "the webhook receiver refused {endpoint} {body}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// Refuses a path the receiver would not treat as a delivery path, before a test waits in vain
/// for deliveries to it.
fn check_path(path: &str) {
    assert!(
        path.starts_with('/') && !path.starts_with("/_control/"),
        "a webhook path starts with / and is not under /_control/: {path:?}"
    );
}

/// `GET /_control/received?path=…`, with curl (blocking; the testkit's way to its fixtures'
/// control APIs), parsed.
fn fetch_received(port: u16, path: &str) -> Result<Vec<ReceivedWebhook>, String> {
    let output = Command::new("curl")
        .args(["-sS", "--fail-with-body", "-G", "--data-urlencode"])
        .arg(format!("path={path}"))
        .arg(format!("http://127.0.0.1:{port}/_control/received"))
        .output()
        .map_err(|error| format!("curl does not run: {error}"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!("{text}{}", String::from_utf8_lossy(&output.stderr)));
    }
    serde_json::from_str(&text).map_err(|error| format!("unreadable ({error}): {text}"))
}

/// The workspace's root: the testkit crate sits one level below it.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the testkit sits inside the workspace")
        .to_owned()
}

/// The virtual environment's python: beside `$SCHEMATHESIS` (which tests/run.sh exports) when
/// that has one, else `target/schemathesis/bin/python` in the workspace, where tests/run.sh
/// installs it. Panics with [`INSTALL_HINT`] when neither exists.
fn python() -> PathBuf {
    let beside_schemathesis = std::env::var_os("SCHEMATHESIS")
        .map(PathBuf::from)
        .and_then(|schemathesis| schemathesis.parent().map(|bin| bin.join("python")));
    let in_workspace = workspace_root().join("target/schemathesis/bin/python");
    beside_schemathesis
        .filter(|python| python.exists())
        .or_else(|| in_workspace.exists().then(|| in_workspace.clone()))
        .unwrap_or_else(|| {
            panic!(
                "no Python environment for the webhook receiver at {}. {INSTALL_HINT}",
                in_workspace.display()
            )
        })
}

fn read_log(path: &Path) -> String {
    let mut log = String::new();
    let _ = std::fs::File::open(path).and_then(|mut file| file.read_to_string(&mut log));
    log
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use hmac::{Hmac, Mac};
    use serde_json::json;

    use super::WebhookReceiver;

    /// A fresh secret as the spec writes them: `whsec_` and base64 of random bytes.
    fn secret() -> String {
        let key: [u8; 32] = rand::random();
        format!("whsec_{}", STANDARD.encode(key))
    }

    /// `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, keyed with the secret's
    /// base64-decoded part after `whsec_`: the spec's signature, computed here independently of
    /// the library that checks it.
    fn sign(secret: &str, id: &str, timestamp: u64, body: &str) -> String {
        let key = STANDARD
            .decode(secret.strip_prefix("whsec_").expect("a whsec_ secret"))
            .expect("base64");
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).expect("HMAC takes any key");
        mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_secs()
    }

    /// POSTs `body` to `url` with the three webhook headers; the status answered.
    async fn deliver(url: &str, id: &str, timestamp: u64, signature: &str, body: &str) -> u16 {
        reqwest::Client::new()
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body.to_owned())
            .send()
            .await
            .expect("the receiver answers")
            .status()
            .as_u16()
    }

    #[tokio::test]
    async fn the_reference_library_accepts_a_signature_made_per_the_spec_and_only_with_its_secret()
    {
        let receiver = WebhookReceiver::start();
        let (right, wrong) = (secret(), secret());
        receiver.trust("/right", &[&right]);
        receiver.trust("/wrong", &[&wrong]);
        // During a rotation the receiver trusts both; the second one signed.
        receiver.trust("/rotation", &[&wrong, &right]);
        let body = r#"{"type":"certificate.issued","data":{"domain":"a.example.test"}}"#;
        let timestamp = now();
        let signature = sign(&right, "msg_1", timestamp, body);

        for path in ["/right", "/wrong", "/rotation"] {
            let status = deliver(&receiver.url(path), "msg_1", timestamp, &signature, body).await;
            assert_eq!(status, 200);
        }

        let right_received = receiver.received("/right");
        assert_eq!(right_received.len(), 1);
        let delivery = &right_received[0];
        assert_eq!(delivery.verified_by, vec![0], "{delivery:#?}");
        assert!(delivery.verify_errors.is_empty(), "{delivery:#?}");
        assert_eq!(
            (
                delivery.id.as_str(),
                delivery.timestamp.clone(),
                delivery.signature.as_str()
            ),
            ("msg_1", timestamp.to_string(), signature.as_str())
        );
        assert_eq!(
            delivery.body,
            json!({"type": "certificate.issued", "data": {"domain": "a.example.test"}})
        );
        assert_eq!(delivery.raw_body, body);
        assert_eq!(delivery.status, 200);
        assert_eq!(delivery.headers["content-type"], "application/json");
        assert!(delivery.answered_at.is_some());

        let wrong_received = receiver.received("/wrong");
        assert!(wrong_received[0].verified_by.is_empty());
        assert_eq!(wrong_received[0].verify_errors.len(), 1);
        assert!(
            wrong_received[0].verify_errors[0].contains("No matching signature"),
            "{wrong_received:#?}"
        );

        let rotation = receiver.received("/rotation");
        assert_eq!(rotation[0].verified_by, vec![1], "{rotation:#?}");
        assert_eq!(rotation[0].verify_errors.len(), 1);
    }

    #[tokio::test]
    async fn any_of_several_signatures_may_match_and_a_stale_timestamp_is_refused() {
        let receiver = WebhookReceiver::start();
        let (old, new) = (secret(), secret());
        receiver.trust("/a", &[&new]);
        let body = r#"{"n":1}"#;
        let timestamp = now();
        // The sender during a rotation: one signature per secret, space-separated.
        let both = format!(
            "{} {}",
            sign(&old, "msg_2", timestamp, body),
            sign(&new, "msg_2", timestamp, body)
        );
        deliver(&receiver.url("/a"), "msg_2", timestamp, &both, body).await;
        // Ten minutes old: beyond the library's five-minute tolerance.
        let stale = timestamp - 600;
        let signature = sign(&new, "msg_3", stale, body);
        deliver(&receiver.url("/a"), "msg_3", stale, &signature, body).await;
        // Signed over another body.
        let signature = sign(&new, "msg_4", timestamp, r#"{"n":2}"#);
        deliver(&receiver.url("/a"), "msg_4", timestamp, &signature, body).await;

        let received = receiver.received("/a");
        let verdicts: Vec<_> = received
            .iter()
            .map(|delivery| (delivery.id.as_str(), delivery.verified_by.clone()))
            .collect();
        assert_eq!(
            verdicts,
            vec![("msg_2", vec![0]), ("msg_3", vec![]), ("msg_4", vec![])]
        );
        assert!(
            received[1].verify_errors[0].contains("too old"),
            "{received:#?}"
        );
    }

    #[tokio::test]
    async fn a_plan_answers_its_statuses_in_order_then_200_and_delays_every_answer() {
        let receiver = WebhookReceiver::start();
        receiver.plan("/flaky", &[500, 410], Duration::ZERO);
        let mut statuses = Vec::new();
        for _ in 0..3 {
            statuses.push(deliver(&receiver.url("/flaky"), "m", now(), "v1,x", "{}").await);
        }
        assert_eq!(statuses, vec![500, 410, 200]);
        let received = receiver.wait_for("/flaky", 3, Duration::from_secs(5)).await;
        let recorded: Vec<u16> = received.iter().map(|delivery| delivery.status).collect();
        assert_eq!(recorded, vec![500, 410, 200]);
        // No secrets trusted for the path: nothing verified, nothing failed.
        assert!(received
            .iter()
            .all(|delivery| delivery.verified_by.is_empty() && delivery.verify_errors.is_empty()));
        // Other paths keep answering 200.
        assert_eq!(
            deliver(&receiver.url("/other"), "m", now(), "v1,x", "{}").await,
            200
        );

        receiver.plan("/slow", &[503], Duration::from_millis(400));
        let started = std::time::Instant::now();
        let status = deliver(&receiver.url("/slow"), "m", now(), "v1,x", "not json").await;
        assert_eq!(status, 503);
        assert!(started.elapsed() >= Duration::from_millis(400));
        let slow = receiver.received("/slow");
        assert_eq!(slow[0].body, json!("not json"));
        let answered = slow[0].answered_at.expect("answered");
        assert!(answered - slow[0].received_at >= 0.4, "{slow:#?}");
    }

    #[tokio::test]
    async fn wait_for_returns_once_enough_deliveries_arrived() {
        let receiver = WebhookReceiver::start();
        let url = receiver.url("/later");
        let sender = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            for n in 0..2 {
                deliver(&url, &format!("m{n}"), now(), "v1,x", "{}").await;
            }
        });
        let received = receiver
            .wait_for("/later", 2, Duration::from_secs(10))
            .await;
        assert_eq!(received.len(), 2);
        sender.await.expect("the sender finishes");
    }

    #[test]
    #[should_panic(expected = "the webhook receiver refused secrets")]
    fn a_secret_the_library_cannot_load_is_refused_at_once() {
        let receiver = WebhookReceiver::start();
        receiver.trust("/a", &["whsec_"]);
    }
}
