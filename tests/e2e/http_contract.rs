//! The REST contract's error handling: every bad input gets a JSON error with the right status
//! and leaves stored state unchanged. No ACME server is involved in these.

use std::collections::HashMap;

use dns_handling_testkit::{Service, StoreKind, TestDatabase};
use serde_json::{json, Value};

use crate::BINARY;

fn error_of(body: &Value) -> &str {
    body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error message in {body}"))
}

fn env_for(database: &TestDatabase) -> HashMap<String, String> {
    dns_handling_testkit::database_env(database)
}

async fn raw(
    service: &Service,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut request = service.client.request(method, service.url(path)).body(body);
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let is_json = response
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    let text = response.text().await.expect("body");
    assert!(
        is_json,
        "{status} answered without a JSON content type: {text:?}"
    );
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text:?}")),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_json_errors_and_changes_nothing() {
    let database = TestDatabase::create(StoreKind::Sqlite).await;
    let service = Service::start(BINARY, &env_for(&database));
    let json_type = Some("application/json");

    // (method, path, content type, body, expected status, text the error must contain)
    type Case<'a> = (&'a str, &'a str, Option<&'a str>, Vec<u8>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            "POST",
            "/domains",
            json_type,
            b"{not json".to_vec(),
            400,
            "JSON",
        ),
        (
            "POST",
            "/domains",
            json_type,
            b"[]".to_vec(),
            400,
            "invalid request body",
        ),
        (
            "POST",
            "/domains",
            json_type,
            b"{}".to_vec(),
            400,
            "domain_name",
        ),
        (
            "POST",
            "/domains",
            json_type,
            br#"{"domain_name": 42}"#.to_vec(),
            400,
            "invalid request body",
        ),
        (
            "POST",
            "/domains",
            json_type,
            br#"{"domain_name": "a.example", "extra": 1}"#.to_vec(),
            400,
            "extra",
        ),
        (
            "POST",
            "/domains",
            json_type,
            br#"{"domain_name": ""}"#.to_vec(),
            400,
            "empty",
        ),
        (
            "POST",
            "/domains",
            json_type,
            br#"{"domain_name": "-bad.example.com"}"#.to_vec(),
            400,
            "hyphen",
        ),
        (
            "POST",
            "/domains",
            json_type,
            br#"{"domain_name": "10.0.0.1"}"#.to_vec(),
            400,
            "IP address",
        ),
        (
            "POST",
            "/domains",
            json_type,
            br#"{"domain_name": "com"}"#.to_vec(),
            400,
            "top-level",
        ),
        (
            "POST",
            "/domains",
            json_type,
            br#"{"domain_name": "a_b.example.com"}"#.to_vec(),
            400,
            "'_'",
        ),
        (
            "POST",
            "/domains",
            Some("text/plain"),
            br#"{"domain_name": "a.example"}"#.to_vec(),
            415,
            "JSON",
        ),
        (
            "POST",
            "/domains",
            json_type,
            format!(r#"{{"domain_name": "{}"}}"#, "a".repeat(20_000)).into_bytes(),
            413,
            "larger",
        ),
        ("GET", "/nowhere", None, vec![], 404, "no route"),
        ("DELETE", "/domains", None, vec![], 405, "not allowed"),
        (
            "PUT",
            "/domains/abc/verify",
            None,
            vec![],
            405,
            "not allowed",
        ),
        ("GET", "/domains/unknown-id", None, vec![], 404, "no domain"),
        (
            "POST",
            "/domains/unknown-id/verify",
            None,
            vec![],
            404,
            "no domain",
        ),
        (
            "POST",
            "/domains/unknown-id/issue-certificate",
            None,
            vec![],
            404,
            "no domain",
        ),
        (
            "GET",
            "/domains/unknown-id/certificate",
            None,
            vec![],
            404,
            "no domain",
        ),
        ("GET", "/domains?limit=0", None, vec![], 400, "limit"),
        ("GET", "/domains?limit=501", None, vec![], 400, "limit"),
        (
            "GET",
            "/domains?limit=ten",
            None,
            vec![],
            400,
            "invalid query",
        ),
        // An empty status is not "no filter": the description's enum has no empty value.
        (
            "GET",
            "/domains?status=",
            None,
            vec![],
            400,
            "unknown status",
        ),
        (
            "GET",
            "/domains?status=bogus",
            None,
            vec![],
            400,
            "unknown status",
        ),
        ("GET", "/events?after=-1", None, vec![], 400, "after"),
        ("GET", "/events?limit=0", None, vec![], 400, "limit"),
        ("GET", "/events?follow=true", None, vec![], 400, "x-ndjson"),
        ("GET", "/events?since=3", None, vec![], 400, "invalid query"),
        (
            "GET",
            "/domains/unknown-id/events",
            None,
            vec![],
            404,
            "no domain",
        ),
        (
            "GET",
            "/domains/unknown-id?as_of=2026-01-01T00:00:00Z",
            None,
            vec![],
            404,
            "did not exist",
        ),
    ];
    for (method, path, content_type, body, expected_status, expected_text) in cases {
        let (status, answer) = raw(&service, method, path, content_type, body).await;
        assert_eq!(status, expected_status, "{method} {path}: {answer}");
        assert!(
            error_of(&answer).contains(expected_text),
            "{method} {path}: {answer} should mention {expected_text:?}"
        );
    }
    assert_eq!(database.count("events").await, 0);
    assert_eq!(database.count("domain_views").await, 0);
    assert_eq!(database.count("domain_names").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_are_normalised_and_registered_once() {
    let database = TestDatabase::create(StoreKind::Sqlite).await;
    let service = Service::start(BINARY, &env_for(&database));
    let (status, created) = service
        .post(
            "/domains",
            Some(json!({"domain_name": "Shop.Example.COM."})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["domain_name"], "shop.example.com");
    assert_eq!(created["status"], "pending");
    let token = created["verification_token"].as_str().expect("token");
    assert!(token.len() >= 32, "at least 128 bits of hex: {token}");
    assert_eq!(created["verification_record"]["type"], "TXT");
    assert_eq!(created["verification_record"]["value"], token);
    assert_eq!(
        created["verification_record"]["name"],
        "_acme-challenge.shop.example.com."
    );
    assert!(created["instructions"]
        .as_str()
        .is_some_and(|text| text.contains(token)));
    assert!(created["created_at"]
        .as_str()
        .is_some_and(|text| text.ends_with('Z')));

    let (status, body) = service
        .post("/domains", Some(json!({"domain_name": "shop.example.com"})))
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(error_of(&body).contains("already registered"));

    let (status, unicode) = service
        .post("/domains", Some(json!({"domain_name": "bücher.example"})))
        .await;
    assert_eq!(status, 201, "{unicode}");
    assert_eq!(unicode["domain_name"], "xn--bcher-kva.example");

    let id = created["id"].as_str().expect("id");
    let (status, view) = service.get(&format!("/domains/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(view["status"], "pending");
    assert_eq!(view["domain_name"], "shop.example.com");
    let (status, body) = service.get(&format!("/domains/{id}/certificate")).await;
    assert_eq!(status, 404, "{body}");
    assert!(error_of(&body).contains("pending"), "{body}");

    assert_eq!(database.count("events").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_pages_through_every_domain_with_a_status_filter() {
    let database = TestDatabase::create(StoreKind::Postgres).await;
    let service = Service::start(BINARY, &env_for(&database));
    let mut ids = Vec::new();
    for n in 0..7 {
        let (id, _, _) = service.register(&format!("site{n}.example.org")).await;
        ids.push(id);
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(cursor) => format!("/domains?limit=3&status=pending&cursor={cursor}"),
            None => "/domains?limit=3&status=pending".to_owned(),
        };
        let (status, page) = service.get(&path).await;
        assert_eq!(status, 200, "{page}");
        let items = page["items"].as_array().expect("items");
        assert!(items.len() <= 3);
        seen.extend(
            items
                .iter()
                .map(|item| item["id"].as_str().expect("id").to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, ids, "every domain once, in registration order");
    let (_, verified) = service.get("/domains?status=verified").await;
    assert_eq!(verified["items"].as_array().map(Vec::len), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_token_is_required_except_for_health_checks() {
    let database = TestDatabase::create(StoreKind::Sqlite).await;
    let mut env = env_for(&database);
    env.insert("AUTH_TOKEN".into(), "s3cret-token".into());
    let service = Service::start(BINARY, &env);

    // The fixture's client carries the admin token; an anonymous one does not.
    let anonymous = reqwest::Client::new();
    let response = anonymous
        .get(service.url("/domains"))
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status().as_u16(), 401);
    let body: Value = response.json().await.expect("JSON error");
    assert!(error_of(&body).contains("bearer"), "{body}");
    let wrong = anonymous
        .get(service.url("/domains"))
        .bearer_auth("s3cret-tokem")
        .send()
        .await
        .expect("GET");
    assert_eq!(wrong.status().as_u16(), 401);
    let right = anonymous
        .get(service.url("/domains"))
        .bearer_auth("s3cret-token")
        .send()
        .await
        .expect("GET");
    assert_eq!(right.status().as_u16(), 200);
    let response = anonymous
        .post(service.url("/domains"))
        .json(&json!({"domain_name": "x.example"}))
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status().as_u16(), 401);
    assert_eq!(database.count("events").await, 0);
    let response = anonymous
        .get(service.url("/healthz"))
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status().as_u16(), 200);
    // Readiness answers without a token too; here it is not ready, as no ACME server runs.
    let response = anonymous
        .get(service.url("/readyz"))
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status().as_u16(), 503);
    let body: Value = response.json().await.expect("JSON");
    assert!(
        error_of(&body).contains("ACME directory unreachable"),
        "{body}"
    );
}
