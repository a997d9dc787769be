//! Access tokens the service manages, on both stores: made by an admin and shown once, used,
//! listed without their secret, revoked on one replica and refused by another within moments;
//! refused past their end (`401`) and from outside their addresses (`403`); hostile bodies
//! refused with nothing stored; the events they cause name them. What each role answers on
//! every route is `role_matrix.rs`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use dns_handling_testkit::{pebble_and_database, run_command, Service, StoreKind, TestDatabase};
use serde_json::{json, Value};

use crate::BINARY;

crate::on_both_stores!(a_managed_token_works_until_it_is_revoked_on_every_replica);
crate::on_both_stores!(hostile_token_bodies_are_refused_with_nothing_stored);
crate::on_both_stores!(the_cli_makes_lists_and_revokes_a_token);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_s_address_is_the_forwarded_one_only_behind_a_trusted_proxy() {
    let (_pebble, _database, mut env) = pebble_and_database(StoreKind::Sqlite).await;
    environment(&mut env);
    // The test's client is 127.0.0.1: the proxy, here.
    env.insert("TRUSTED_PROXIES".into(), "127.0.0.1, 192.0.2.0/24".into());
    let service = Service::start(BINARY, &env);
    let (_, secret) = made(
        &service,
        json!({"name": "behind", "role": "auditor", "allowed_from": ["10.0.0.0/8"]}),
    )
    .await;
    let from = |forwarded: Option<&'static str>| {
        let mut request = reqwest::Client::new()
            .get(service.url("/domains"))
            .bearer_auth(&secret);
        if let Some(forwarded) = forwarded {
            request = request.header("X-Forwarded-For", forwarded);
        }
        async move { request.send().await.expect("a response").status().as_u16() }
    };
    for (forwarded, expected) in [
        // The proxy's own request: its own address.
        (None, 403),
        (Some("10.1.2.3"), 200),
        // Past the trusted hops, the right-most untrusted one.
        (Some("10.1.2.3, 192.0.2.9"), 200),
        (Some("10.1.2.3, 198.51.100.7"), 403),
        (Some("198.51.100.7, 10.1.2.3"), 200),
        (Some("10.1.2.3, not-an-address"), 403),
    ] {
        assert_eq!(
            from(forwarded).await,
            expected,
            "X-Forwarded-For {forwarded:?}"
        );
    }
}

pub(crate) const ADMIN: &str = "admin-token-0123456789";
pub(crate) const AUDITOR: &str = "auditor-token-9876543210";
pub(crate) const EDGE: &str = "edge9-token-9999999999";

/// How long a change may take to reach a replica before the test fails (the bound the service
/// is held to is a second; the time taken is printed).
const PROPAGATION_BOUND: Duration = Duration::from_secs(5);

/// `method path` with `token` as Bearer (none: no header) and an optional JSON body: the
/// status and the body as text.
pub(crate) async fn call(
    service: &Service,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, String) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
    // A client of its own: the service's carries the admin token.
    let mut request = reqwest::Client::new().request(method, service.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("a response");
    let status = response.status().as_u16();
    (status, response.text().await.expect("a body"))
}

pub(crate) fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

/// Makes a token as the admin; answers its id and secret.
pub(crate) async fn made(service: &Service, body: Value) -> (String, String) {
    let (code, text) = call(service, "POST", "/tokens", Some(ADMIN), Some(body)).await;
    assert_eq!(code, 201, "{text}");
    let created = json_of(&text);
    let secret = created["secret"].as_str().expect("a secret").to_owned();
    (created["id"].as_str().expect("an id").to_owned(), secret)
}

/// Polls `GET /domains` with `token` on `service` until it answers `expected`; answers how long
/// that took, failing past [`PROPAGATION_BOUND`].
pub(crate) async fn until_answered(
    service: &Service,
    token: &str,
    expected: u16,
) -> (Duration, String) {
    let started = Instant::now();
    loop {
        let (code, text) = call(service, "GET", "/domains", Some(token), None).await;
        if code == expected {
            return (started.elapsed(), text);
        }
        assert!(
            started.elapsed() < PROPAGATION_BOUND,
            "still {code} after {PROPAGATION_BOUND:?}, not {expected}: {text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(crate) fn environment(env: &mut HashMap<String, String>) {
    env.insert("AUTH_TOKEN".into(), ADMIN.into());
    env.insert("READ_ONLY_TOKENS".into(), AUDITOR.into());
    env.insert("EDGE_TOKENS".into(), format!("edge9={EDGE}"));
}

/// Two replicas on PostgreSQL; on SQLite (one process) the same one twice.
fn replicas(kind: StoreKind, env: &HashMap<String, String>) -> (Service, Option<Service>) {
    let mut on_a = env.clone();
    on_a.insert("REPLICA_ID".into(), "replica-a".into());
    let replica_a = Service::start(BINARY, &on_a);
    let replica_b = (kind == StoreKind::Postgres).then(|| {
        let mut on_b = env.clone();
        on_b.insert("REPLICA_ID".into(), "replica-b".into());
        Service::start(BINARY, &on_b)
    });
    (replica_a, replica_b)
}

async fn a_managed_token_works_until_it_is_revoked_on_every_replica(kind: StoreKind) {
    let (_pebble, database, mut env) = pebble_and_database(kind).await;
    environment(&mut env);
    let (replica_a, replica_b) = replicas(kind, &env);
    let other = replica_b.as_ref().unwrap_or(&replica_a);

    // Made on A, shown once, usable on both.
    let (id, secret) = made(&replica_a, json!({"name": "ci deploys", "role": "admin"})).await;
    assert!(
        secret.starts_with("dnsh_") && secret.len() >= 5 + 43,
        "{secret}"
    );
    let (code, text) = call(&replica_a, "GET", "/domains", Some(&secret), None).await;
    assert_eq!(code, 200, "{text}");
    let (took, _) = until_answered(other, &secret, 200).await;
    println!("a token made on one replica was accepted by the other after {took:?}");

    // A write with it names it in the events' metadata, beside the request id.
    let (code, text) = call(
        other,
        "POST",
        "/domains",
        Some(&secret),
        Some(json!({"domain_name": "managed.tokens.test"})),
    )
    .await;
    assert_eq!(code, 201, "{text}");
    let domain_id = json_of(&text)["id"].as_str().expect("an id").to_owned();
    let metadata = database
        .texts(&format!(
            "CAST(metadata AS TEXT) FROM events WHERE aggregate_id = '{domain_id}'"
        ))
        .await;
    let first = json_of(&metadata[0]);
    assert_eq!(first["token_id"], id.as_str(), "{first}");
    assert_eq!(first["role"], "admin", "{first}");
    assert!(first["request_id"].is_string(), "{first}");

    // Listed and read without the secret; its use noted (coalesced, so polled for).
    let started = Instant::now();
    let token = loop {
        let (code, text) = call(
            &replica_a,
            "GET",
            &format!("/tokens/{id}"),
            Some(ADMIN),
            None,
        )
        .await;
        assert_eq!(code, 200, "{text}");
        let token = json_of(&text);
        if token["last_used_at"].is_string() {
            break token;
        }
        assert!(
            started.elapsed() < PROPAGATION_BOUND,
            "no use noted: {token}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        (&token["name"], &token["role"], &token["status"]),
        (&json!("ci deploys"), &json!("admin"), &json!("active")),
        "{token}"
    );
    assert!(token.get("secret").is_none(), "{token}");
    let (code, text) = call(&replica_a, "GET", "/tokens", Some(AUDITOR), None).await;
    assert_eq!(code, 200, "an auditor lists tokens: {text}");
    assert!(text.contains(&id) && !text.contains(&secret), "{text}");

    // Expired: 401 saying so, once its end passes.
    let end = chrono::Utc::now() + chrono::Duration::seconds(2);
    let (_, expiring) = made(
        &replica_a,
        json!({"name": "short", "role": "auditor", "expires_at": end.to_rfc3339()}),
    )
    .await;
    until_answered(&replica_a, &expiring, 200).await;
    let started = Instant::now();
    let text = loop {
        let (code, text) = call(&replica_a, "GET", "/domains", Some(&expiring), None).await;
        if code == 401 {
            break text;
        }
        assert_eq!(code, 200, "{text}");
        assert!(started.elapsed() < Duration::from_secs(10), "never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(chrono::Utc::now() >= end, "refused before its end");
    assert_eq!(json_of(&text)["error"], "token expired", "{text}");

    // Addresses: the test's client is 127.0.0.1.
    let (_, elsewhere) = made(
        &replica_a,
        json!({"name": "private", "role": "auditor", "allowed_from": ["10.0.0.0/8"]}),
    )
    .await;
    let (_, local) = made(
        &replica_a,
        json!({"name": "local", "role": "auditor", "allowed_from": ["127.0.0.0/8", "::1/128"]}),
    )
    .await;
    let (code, text) = call(&replica_a, "GET", "/domains", Some(&elsewhere), None).await;
    assert_eq!(code, 403, "{text}");
    assert!(json_of(&text)["error"].is_string(), "{text}");
    let (code, text) = call(&replica_a, "GET", "/domains", Some(&local), None).await;
    assert_eq!(code, 200, "{text}");

    // Revoked on A: refused by the other replica within moments.
    let (code, text) = call(
        &replica_a,
        "DELETE",
        &format!("/tokens/{id}"),
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(code, 204, "{text}");
    let (took, text) = until_answered(other, &secret, 401).await;
    println!("a token revoked on one replica was refused by the other after {took:?}");
    assert!(json_of(&text)["error"].is_string(), "{text}");
    let (code, text) = call(
        &replica_a,
        "DELETE",
        &format!("/tokens/{id}"),
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(code, 409, "revoked twice: {text}");
    let (code, text) = call(
        &replica_a,
        "GET",
        &format!("/tokens/{id}"),
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(
        (code, &json_of(&text)["status"]),
        (200, &json!("revoked")),
        "{text}"
    );
    let revocation = database
        .texts(&format!(
            "CAST(metadata AS TEXT) FROM token_events WHERE aggregate_id = '{id}' AND sequence = 2"
        ))
        .await;
    let revocation = json_of(&revocation[0]);
    assert_eq!(
        (&revocation["token_id"], &revocation["role"]),
        (&json!("env:admin"), &json!("admin")),
        "{revocation}"
    );

    // A tenant's token, used: its secret is held to the same rule.
    let (_, tenant) = made(
        &replica_a,
        json!({"name": "dashboard", "role": "tenant", "tenant": "acct_S"}),
    )
    .await;
    let body = Some(json!({"domain_name": "tenant.tokens.test"}));
    let (code, text) = call(&replica_a, "POST", "/domains", Some(&tenant), body).await;
    assert_eq!(code, 201, "{text}");
    let (code, text) = call(&replica_a, "GET", "/tokens", Some(&tenant), None).await;
    assert_eq!(code, 403, "{text}");

    // The secrets appear nowhere after their creation.
    let mut places: Vec<(String, String)> = Vec::new();
    for table in ["events", "token_events"] {
        for text in database
            .texts(&format!(
                "CAST(payload AS TEXT) || CAST(metadata AS TEXT) FROM {table}"
            ))
            .await
        {
            places.push((format!("an event in {table}"), text));
        }
    }
    for text in database
        .texts("token_id || last_used_at FROM token_uses")
        .await
    {
        places.push(("token_uses".into(), text));
    }
    for replica in [Some(&replica_a), replica_b.as_ref()].into_iter().flatten() {
        places.push(("a log".into(), replica.log()));
        for path in ["/tokens", &format!("/tokens/{id}"), "/events", "/domains"] {
            let (_, text) = call(replica, "GET", path, Some(ADMIN), None).await;
            places.push((path.to_owned(), text));
        }
    }
    for (place, text) in &places {
        for secret in [&secret, &expiring, &elsewhere, &local, &tenant] {
            assert!(!text.contains(secret.as_str()), "a secret in {place}");
        }
    }
}

/// Makes `body` as the admin and expects `400` with an error, and nothing stored.
async fn refused(service: &Service, database: &TestDatabase, body: Value, expected: &str) {
    let before = database.count("token_events").await;
    let (code, text) = call(service, "POST", "/tokens", Some(ADMIN), Some(body.clone())).await;
    assert_eq!(code, 400, "{body}: {text}");
    let error = json_of(&text)["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(error.contains(expected), "{body}: {text}");
    assert_eq!(
        database.count("token_events").await,
        before,
        "{body}: stored"
    );
}

async fn hostile_token_bodies_are_refused_with_nothing_stored(kind: StoreKind) {
    let (_pebble, database, mut env) = pebble_and_database(kind).await;
    environment(&mut env);
    let service = Service::start(BINARY, &env);
    let past = (chrono::Utc::now() - chrono::Duration::minutes(1)).to_rfc3339();
    for (body, expected) in [
        (json!({"name": "x", "role": "root"}), "unknown role"),
        (
            json!({"name": "x", "role": "admin", "tenant": "acct_1"}),
            "tenant",
        ),
        (json!({"name": "x", "role": "tenant"}), "tenant"),
        (
            json!({"name": "x", "role": "tenant", "tenant": "acct 1"}),
            "tenant must be",
        ),
        (
            json!({"name": "x", "role": "tenant", "tenant": ["acct_1"]}),
            "invalid request body",
        ),
        (
            json!({"name": "x", "role": "auditor", "tenant": "acct_1"}),
            "tenant",
        ),
        (
            json!({"name": "x", "role": "auditor", "allowed_from": ["10.0.0.0/33"]}),
            "CIDR",
        ),
        (
            json!({"name": "x", "role": "auditor", "allowed_from": ["ten/8"]}),
            "CIDR",
        ),
        (
            json!({"name": "x", "role": "auditor", "expires_at": past}),
            "future",
        ),
        (json!({"name": "x".repeat(101), "role": "auditor"}), "name"),
        (json!({"name": "", "role": "auditor"}), "name"),
        (json!({"name": "a:b", "role": "edge"}), "edge"),
        (
            json!({"name": "x", "role": "auditor", "secret": "dnsh_mine"}),
            "unknown field",
        ),
        (
            json!({"name": "x", "role": "auditor", "expires_at": "tomorrow"}),
            "invalid request body",
        ),
    ] {
        refused(&service, &database, body, expected).await;
    }
    assert_eq!(database.count("token_events").await, 0);

    // Only an admin makes or revokes tokens.
    let body = json!({"name": "x", "role": "auditor"});
    for token in [AUDITOR, EDGE] {
        let (code, text) = call(&service, "POST", "/tokens", Some(token), Some(body.clone())).await;
        assert_eq!(code, 403, "{text}");
    }
    let (code, text) = call(&service, "POST", "/tokens", None, Some(body)).await;
    assert_eq!(code, 401, "{text}");
    let (code, text) = call(&service, "DELETE", "/tokens/nope", Some(ADMIN), None).await;
    assert_eq!(code, 404, "{text}");
    assert_eq!(database.count("token_events").await, 0);
}

async fn the_cli_makes_lists_and_revokes_a_token(kind: StoreKind) {
    let (_pebble, _database, mut env) = pebble_and_database(kind).await;
    environment(&mut env);
    let service = Service::start(BINARY, &env);
    let client = HashMap::from([
        ("DNS_HANDLING_SERVER".to_owned(), service.url("")),
        ("DNS_HANDLING_TOKEN".to_owned(), ADMIN.to_owned()),
    ]);
    let cli = |args: &[&str]| run_command(BINARY, &client, args);

    let (status, out, err) = cli(&[
        "tokens",
        "create",
        "cli-made",
        "--role",
        "auditor",
        "--allowed-from",
        "127.0.0.0/8",
    ]);
    assert!(status.success(), "{out}{err}");
    assert!(err.contains("shown this once"), "{err}");
    let secret = out
        .lines()
        .find_map(|line| line.strip_prefix("Secret: "))
        .expect("the secret printed")
        .to_owned();
    let id = out
        .split_whitespace()
        .nth(3)
        .expect("Created auditor token <id>")
        .to_owned();
    until_answered(&service, &secret, 200).await;

    let (status, out, err) = cli(&["tokens", "list"]);
    assert!(status.success(), "{out}{err}");
    let row = out
        .lines()
        .find(|line| line.starts_with(&id))
        .expect("its row");
    assert!(
        row.contains("auditor") && row.contains("active") && row.contains("127.0.0.0/8"),
        "{row}"
    );
    assert!(!out.contains(&secret), "{out}");

    let (status, out, err) = cli(&["tokens", "revoke", &id]);
    assert!(status.success(), "{out}{err}");
    until_answered(&service, &secret, 401).await;
    let (status, out, err) = cli(&["tokens", "revoke", &id]);
    assert!(!status.success(), "revoked twice: {out}{err}");
    let (status, _, err) = cli(&["tokens", "create", "x", "--role", "root"]);
    assert!(!status.success(), "{err}");
}
