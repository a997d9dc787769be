//! The certificate stream of the TLS edges (`GET /edge/certificates`) on both stores against
//! Pebble: a snapshot after issuance holds the certificate with its names and the key that
//! matches its chain; a renewal is `served` with what it `replaces`; a revocation and a removal
//! are `withdrawn`, without a key; a stream resumed from a position gives exactly the changes
//! after it; a following stream hears the changes another replica commits; a bad `after` is a
//! `400` that changes nothing; a service with following streams open stops within seconds of
//! SIGTERM, ending them; `audit edge-deliveries` lists the keys the stream handed out.

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use dns_handling_testkit::{
    database_env, pebble_and_database, run_command, verified_domain_with_alt_names, Pebble,
    Service, StoreKind, TempDir, TestDatabase,
};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::BINARY;

pub(crate) const TOKEN: &str = "edge-admin-token";
const DOMAIN: &str = "shop.edge.test";
const WWW: &str = "www.shop.edge.test";
const WILDCARD: &str = "*.shop.edge.test";

crate::on_both_stores!(an_edge_follows_issuance_renewal_revocation_and_removal);
crate::on_both_stores!(
    a_service_with_a_following_edge_stream_exits_within_seconds_of_sigterm_and_the_client_sees_the_stream_end
);

/// The lines of a stream that does not follow, to its end.
pub(crate) async fn read_stream(service: &Service, after: i64) -> Vec<Value> {
    let url = service.url(&format!("/edge/certificates?after={after}"));
    let response = service.client.get(url).send().await.expect("sent");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().expect("text");
    assert!(
        content_type.starts_with("application/x-ndjson"),
        "{content_type}"
    );
    let text = response.text().await.expect("the whole stream");
    text.lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect()
}

/// Follows the stream of `service` from `after`: its lines, as they come.
fn follow(service: &Service, after: i64) -> mpsc::UnboundedReceiver<Value> {
    let (sender, receiver) = mpsc::unbounded_channel();
    let url = service.url(&format!("/edge/certificates?after={after}&follow=true"));
    let request = service.client.get(url);
    tokio::spawn(async move {
        let mut response = request.send().await.expect("sent");
        let mut pending = Vec::new();
        while let Ok(Some(chunk)) = response.chunk().await {
            pending.extend_from_slice(&chunk);
            while let Some(end) = pending.iter().position(|byte| *byte == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                let _ = sender.send(serde_json::from_slice(&line).expect("a JSON line"));
            }
        }
    });
    receiver
}

/// The next line of a followed stream that `wanted` accepts, within `within`; the lines passed
/// over are kept in `seen` too.
async fn next_line(
    lines: &mut mpsc::UnboundedReceiver<Value>,
    seen: &mut Vec<Value>,
    within: Duration,
    wanted: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = tokio::time::timeout(left, lines.recv())
            .await
            .unwrap_or_else(|_| panic!("no such line within {within:?}; seen {seen:#?}"))
            .expect("the stream stays open");
        seen.push(line.clone());
        if wanted(&line) {
            return line;
        }
    }
}

/// The public key of a PEM (a certificate chain's leaf, or a private key), as OpenSSL writes it.
pub(crate) fn public_key(pem: &str, of_certificate: bool) -> String {
    let dir = TempDir::new("public-key");
    let path = dir.path().join("input.pem");
    std::fs::write(&path, pem).expect("written");
    let arguments: &[&str] = if of_certificate {
        &["x509", "-noout", "-pubkey", "-in"]
    } else {
        &["pkey", "-pubout", "-in"]
    };
    let output = Command::new("openssl")
        .args(arguments)
        .arg(&path)
        .output()
        .expect("openssl runs");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).expect("text")
}

/// Publishes every challenge record of a `202` (`challenges`, or a renewal's) in place of the
/// earlier ones (four values at one name overflow Pebble's DNS answers).
pub(crate) fn publish(pebble: &Pebble, challenges: &Value) {
    let challenges = challenges.as_array().expect("challenges");
    for challenge in challenges {
        pebble.clear_txt(challenge["challenge_domain"].as_str().expect("name"));
    }
    for challenge in challenges {
        pebble.set_txt(
            challenge["challenge_domain"].as_str().expect("name"),
            challenge["expected_txt_value"].as_str().expect("value"),
        );
    }
}

/// The domain's current certificate id.
pub(crate) async fn current_certificate(service: &Service, id: &str) -> String {
    let (_, view) = service.get(&format!("/domains/{id}")).await;
    view["certificate"]["id"]
        .as_str()
        .expect("a certificate")
        .to_owned()
}

/// `DOMAIN` with `www.` and the wildcard, issued through the service; its id.
pub(crate) async fn issued(service: &Service, pebble: &Pebble) -> String {
    let id = verified_domain_with_alt_names(service, pebble, DOMAIN, &[WWW, WILDCARD]).await;
    let (code, started) = service
        .post(&format!("/domains/{id}/issue-certificate"), None)
        .await;
    assert_eq!(code, 202, "{started}");
    publish(pebble, &started["challenges"]);
    let view = service
        .wait_for_status(&id, &["active", "failed"], Duration::from_secs(90))
        .await;
    assert_eq!(view["status"], "active", "{view}");
    id
}

/// Renews the domain now and waits for the new certificate; answers its id.
pub(crate) async fn renewed(service: &Service, pebble: &Pebble, id: &str) -> String {
    let before = current_certificate(service, id).await;
    let (code, started) = service.post(&format!("/domains/{id}/renew"), None).await;
    assert_eq!(code, 202, "{started}");
    // A CA may renew on authorizations it still holds: then there is nothing to publish.
    if let Some(challenges) = started.get("challenges") {
        publish(pebble, challenges);
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let now = current_certificate(service, id).await;
        if now != before {
            return now;
        }
        if Instant::now() > deadline {
            let (_, view) = service.get(&format!("/domains/{id}")).await;
            panic!(
                "not renewed within 90 s: {view:#}\n{started:#}\n{}",
                service.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// After a revocation, once its replacement either waits for its records or is issued (a CA
/// may issue it at once on authorizations it holds): the current certificate, and whether it
/// is the revoked one.
pub(crate) async fn settled_after_revocation(service: &Service, id: &str) -> (String, bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, view) = service.get(&format!("/domains/{id}")).await;
        let current = view["certificate"]["id"]
            .as_str()
            .expect("an id")
            .to_owned();
        let revoked = view["certificate"].get("revoked_at").is_some();
        let renewal = &view["renewal"];
        let waits = renewal["in_progress"] == true
            && renewal["challenges"]
                .as_array()
                .is_some_and(|c| !c.is_empty());
        if !revoked || waits || renewal["in_progress"] != true {
            return (current, revoked);
        }
        assert!(
            Instant::now() < deadline,
            "the replacement never settled: {view}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn env_with_token(env: &HashMap<String, String>, replica: &str) -> HashMap<String, String> {
    let mut env = env.clone();
    env.insert("AUTH_TOKEN".into(), TOKEN.into());
    env.insert("REPLICA_ID".into(), replica.into());
    env
}

async fn an_edge_follows_issuance_renewal_revocation_and_removal(kind: StoreKind) {
    let (pebble, database, env) = pebble_and_database(kind).await;
    let service = Service::start(BINARY, &env_with_token(&env, "replica-1"));
    // Another replica on the same database hears the changes (SQLite is one process).
    let other = (kind == StoreKind::Postgres)
        .then(|| Service::start(BINARY, &env_with_token(&env, "replica-2")));
    let watcher = other.as_ref().unwrap_or(&service);

    let id = issued(&service, &pebble).await;
    let first = current_certificate(&service, &id).await;
    let events = database.count("events").await;
    for bad in ["-1", "abc", "1.5"] {
        let url = service.url(&format!("/edge/certificates?after={bad}"));
        let response = service.client.get(url).send().await.expect("sent");
        assert_eq!(response.status(), 400, "after={bad}");
        let body: Value = response.json().await.expect("a JSON body");
        assert!(body["error"].is_string(), "{body}");
    }
    assert_eq!(database.count("events").await, events, "nothing recorded");

    let snapshot = read_stream(&service, 0).await;
    assert_eq!(snapshot[0]["kind"], "snapshot_begins", "{snapshot:#?}");
    let position = snapshot[0]["position"].as_i64().expect("a position");
    let served: Vec<&Value> = snapshot
        .iter()
        .filter(|line| line["kind"] == "served")
        .collect();
    assert_eq!(served.len(), 1, "{snapshot:#?}");
    let line = served[0];
    assert_eq!(
        (line["domain_id"].as_str(), line["certificate_id"].as_str()),
        (Some(id.as_str()), Some(first.as_str()))
    );
    let mut names: Vec<&str> = (line["names"].as_array().expect("names").iter())
        .map(|name| name.as_str().expect("a name"))
        .collect();
    assert_eq!(names[0], DOMAIN, "the domain's name first");
    names.sort_unstable();
    assert_eq!(names, [WILDCARD, DOMAIN, WWW]);
    // In the snapshot (at its position), or after it when the read views' checkpoint had not
    // reached the issuance yet.
    let position_of = |line: &Value| line["position"].as_i64().expect("a position");
    assert!(position_of(line) >= position, "{snapshot:#?}");
    let chain = line["chain_pem"].as_str().expect("a chain");
    let key = line["key_pem"].as_str().expect("a key");
    assert_eq!(
        public_key(chain, true),
        public_key(key, false),
        "the key of the chain"
    );
    let end = snapshot
        .iter()
        .position(|line| line["kind"] == "snapshot_ends")
        .expect("an end");
    assert_eq!(snapshot[end]["position"], position);
    let last = snapshot.iter().map(position_of).max().expect("lines");

    // Every later line comes from the other replica's stream, which follows from there.
    let mut lines = follow(watcher, last);
    let mut seen = Vec::new();
    let second = renewed(&service, &pebble, &id).await;
    let deadline = Duration::from_secs(30);
    let is_served = |line: &Value| line["kind"] == "served";
    let renewal = next_line(&mut lines, &mut seen, deadline, is_served).await;
    assert_eq!(renewal["certificate_id"], second.as_str(), "{seen:#?}");
    assert_eq!(renewal["replaces"], first.as_str());
    assert_eq!(
        public_key(renewal["chain_pem"].as_str().expect("chain"), true),
        public_key(renewal["key_pem"].as_str().expect("key"), false)
    );

    let (code, body) = service
        .post(
            &format!("/domains/{id}/certificate/revoke"),
            Some(json!({"reason": "superseded"})),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let withdrawn = |certificate: String| {
        move |line: &Value| {
            line["kind"] == "withdrawn" && line["certificate_id"] == certificate.as_str()
        }
    };
    let revoked = next_line(&mut lines, &mut seen, deadline, withdrawn(second.clone())).await;
    assert_eq!(revoked["domain_id"], id.as_str());
    assert!(revoked.get("key_pem").is_none(), "{revoked}");

    // The revocation ordered a replacement; the CA may have issued it already.
    let (current, _) = settled_after_revocation(&service, &id).await;
    assert_eq!(service.delete(&format!("/domains/{id}")).await, 204);
    let removed = next_line(&mut lines, &mut seen, deadline, withdrawn(current)).await;
    assert!(
        removed["position"].as_i64() > revoked["position"].as_i64(),
        "{seen:#?}"
    );

    // Resumed from the renewal's line: exactly what the follower got after it, in order (and
    // perhaps the withdrawals of keys destroyed since, the domain being removed).
    let after = renewal["position"].as_i64().expect("a position");
    let resumed = read_stream(&service, after).await;
    let followed: Vec<&Value> = seen
        .iter()
        .filter(|line| line["position"].as_i64() > Some(after))
        .collect();
    assert!(
        resumed.len() >= followed.len(),
        "{resumed:#?} {followed:#?}"
    );
    assert_eq!(
        resumed.iter().take(followed.len()).collect::<Vec<_>>(),
        followed
    );
    assert!(
        resumed[followed.len()..]
            .iter()
            .all(|line| line["kind"] == "withdrawn"),
        "{resumed:#?}"
    );
}

/// Opens the following stream at `path` and reads until a line holds `until`: the stream then
/// waits for changes.
async fn following_until(service: &Service, path: &str, until: &str) -> reqwest::Response {
    let request = service.client.get(service.url(path));
    let request = request.header("accept", "application/x-ndjson");
    let mut response = request.send().await.expect("sent");
    assert_eq!(response.status(), 200);
    let mut read = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !String::from_utf8_lossy(&read).contains(until) {
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(left, response.chunk())
            .await
            .unwrap_or_else(|_| panic!("{until} on {path} within 30 s"))
            .expect("the stream reads");
        read.extend_from_slice(&chunk.expect("the stream stays open"));
    }
    response
}

/// A service on `kind` that starts without a CA (nothing is issued), with the admin token.
async fn service_without_a_ca(kind: StoreKind) -> (TestDatabase, Service) {
    let database = TestDatabase::create(kind).await;
    let mut env = database_env(&database);
    env.insert("AUTH_TOKEN".into(), TOKEN.into());
    // Never contacted.
    env.insert("ACME_DIRECTORY".into(), "http://127.0.0.1:9/dir".into());
    let service = Service::start(BINARY, &env);
    (database, service)
}

/// SIGTERM to `service` while `reading` follows a stream (and another stream's client has gone):
/// the service exits within 5 s, and `reading` ends as a whole response with nothing more.
async fn stops_within_seconds_ending(mut service: Service, mut reading: reqwest::Response) {
    let client = tokio::spawn(async move {
        let mut rest = Vec::new();
        loop {
            match reading.chunk().await {
                Ok(Some(chunk)) => rest.extend_from_slice(&chunk),
                Ok(None) => return Ok(rest),
                Err(error) => return Err(format!("{error:?}")),
            }
        }
    });
    // The streams wait for changes now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let signalled = Instant::now();
    let status = tokio::task::block_in_place(|| service.terminate());
    let took = signalled.elapsed();
    assert!(status.success(), "exit status {status}; {}", service.log());
    assert!(
        took < Duration::from_secs(5),
        "the service took {took:?} to exit after SIGTERM"
    );
    let ended = tokio::time::timeout(Duration::from_secs(5), client)
        .await
        .expect("the client's stream ended with the service")
        .expect("the client's task");
    let rest = ended.expect("the stream ends as a whole response, not a broken connection");
    assert!(
        String::from_utf8_lossy(&rest).trim().is_empty(),
        "nothing was committed meanwhile: {}",
        String::from_utf8_lossy(&rest)
    );
}

/// actix stops gracefully on SIGTERM: it waits for every response to end, up to its 30 s
/// shutdown timeout. A following certificate stream never ends by itself, whether its client
/// still reads it or has gone; the service ends it, so that the process exits at once and the
/// edge, seeing the stream end, resumes from its last position elsewhere.
async fn a_service_with_a_following_edge_stream_exits_within_seconds_of_sigterm_and_the_client_sees_the_stream_end(
    kind: StoreKind,
) {
    let (_database, service) = service_without_a_ca(kind).await;
    let path = "/edge/certificates?after=0&follow=true";
    let reading = following_until(&service, path, "snapshot_ends").await;
    drop(following_until(&service, path, "snapshot_ends").await);
    stops_within_seconds_ending(service, reading).await;
}

/// The same for the event feed's `follow=true`, which actix's graceful stop waited for alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_with_a_following_event_feed_exits_within_seconds_of_sigterm_and_the_client_sees_the_feed_end(
) {
    let (_database, service) = service_without_a_ca(StoreKind::Sqlite).await;
    service.register("feed-stop.example.test").await;
    let path = "/events?after=0&follow=true";
    let reading = following_until(&service, path, "DomainRegistered").await;
    drop(following_until(&service, path, "DomainRegistered").await);
    stops_within_seconds_ending(service, reading).await;
}

/// `dns-handling audit edge-deliveries` lists the keys the certificate stream handed out, as
/// `GET /audit/edge-deliveries` does: one row per receiver and certificate however often the
/// stream was read, by edge from the database, by certificate through the API with a read-only
/// token; an edge token is refused there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_cli_lists_the_keys_the_certificate_stream_handed_out_by_edge_and_by_certificate()
{
    const AUDITOR: &str = "edge-stream-auditor-token";
    const EDGE1: &str = "edge-stream-edge1-token";
    let (pebble, _database, env) = pebble_and_database(StoreKind::Sqlite).await;
    let mut env = env_with_token(&env, "replica-1");
    env.insert("READ_ONLY_TOKENS".into(), AUDITOR.into());
    env.insert("EDGE_TOKENS".into(), format!("edge1={EDGE1}"));
    let service = Service::start(BINARY, &env);
    let id = issued(&service, &pebble).await;
    let certificate = current_certificate(&service, &id).await;
    for _ in 0..2 {
        let url = service.url("/edge/certificates?after=0");
        let request = reqwest::Client::new().get(url).bearer_auth(EDGE1);
        let body = request
            .send()
            .await
            .expect("sent")
            .text()
            .await
            .expect("read");
        assert!(body.contains(&certificate), "{body}");
    }
    let admin_read = read_stream(&service, 0).await;
    assert!(admin_read
        .iter()
        .any(|line| line["certificate_id"] == certificate.as_str()));

    let (status, by_edge, stderr) = run_command(
        BINARY,
        &env,
        &["audit", "edge-deliveries", "--edge", "edge1"],
    );
    assert!(status.success(), "{by_edge}{stderr}");
    let rows: Vec<&str> = by_edge.lines().filter(|l| l.starts_with("edge:")).collect();
    assert_eq!(rows.len(), 1, "{by_edge}");
    let row: Vec<&str> = rows[0].split_whitespace().collect();
    assert_eq!(row[..3], ["edge:edge1", &certificate, &id], "{by_edge}");
    assert!(
        by_edge
            .ends_with("1 certificates' keys delivered to edge:edge1 by the certificate stream\n"),
        "{by_edge}"
    );

    let server = service.url("");
    let by_certificate = |token: &str| {
        let args = ["audit", "edge-deliveries", "--certificate-id", &certificate];
        let mut args = args.to_vec();
        args.extend(["--server", &server, "--token", token]);
        run_command(BINARY, &HashMap::new(), &args)
    };
    let (status, listed, stderr) = by_certificate(AUDITOR);
    assert!(status.success(), "{listed}{stderr}");
    let receivers: Vec<&str> = (listed.lines().skip(1))
        .filter_map(|line| line.split_whitespace().next())
        .filter(|first| *first == "admin" || first.starts_with("edge:"))
        .collect();
    assert_eq!(receivers, ["admin", "edge:edge1"], "{listed}");
    assert!(listed.contains("delivered to 2 receivers"), "{listed}");
    let (status, _, stderr) = by_certificate(EDGE1);
    assert!(!status.success());
    assert!(stderr.contains("403"), "{stderr}");
}
