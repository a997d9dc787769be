//! Every route of the API description × every role, on both stores, checked against the table
//! below: the environment's tokens and the managed tokens of each role (admin, auditor, edge,
//! tenant A, tenant B), and managed tokens that are expired, revoked or presented from outside
//! their addresses, and no token at all. A tenant's token on another tenant's domain (or a
//! domain of no tenant) gets exactly what it gets on a domain that does not exist, on every
//! route; its lists, searches and feed hold its own domains only.

use dns_handling_testkit::{pebble_and_database, Service, StoreKind};
use serde_json::{json, Value};

use crate::tokens::{call, environment, json_of, made, until_answered, ADMIN, AUDITOR, EDGE};
use crate::BINARY;

crate::on_both_stores!(every_route_answers_every_role_as_the_table_says);

/// What a role gets on a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gets {
    /// What the environment's admin token gets on the same read.
    AsAdmin,
    /// Refused with `403`, whatever the route's parameters.
    Forbidden,
    /// On its tenant's domain what an admin gets (reads); on any other domain `404`, as on a
    /// domain that does not exist, to the byte.
    OwnDomainOnly,
    /// Answered, held to its tenant (checked on their own below).
    HeldToTenant,
}

use Gets::{AsAdmin, Forbidden, HeldToTenant, OwnDomainOnly};

/// `(method, route, auditor, edge, tenant)`: what each role but the admin gets. Every route
/// of the API description that needs a token is here, and nothing else.
const TABLE: &[(&str, &str, Gets, Gets, Gets)] = &[
    ("GET", "/metrics", AsAdmin, Forbidden, Forbidden),
    ("GET", "/ca", AsAdmin, Forbidden, Forbidden),
    ("GET", "/overview", AsAdmin, Forbidden, Forbidden),
    ("GET", "/whoami", AsAdmin, Forbidden, HeldToTenant),
    ("POST", "/domains", Forbidden, Forbidden, HeldToTenant),
    ("GET", "/domains", AsAdmin, Forbidden, HeldToTenant),
    ("GET", "/domains/{id}", AsAdmin, Forbidden, OwnDomainOnly),
    (
        "DELETE",
        "/domains/{id}",
        Forbidden,
        Forbidden,
        OwnDomainOnly,
    ),
    (
        "POST",
        "/domains/{id}/retry",
        Forbidden,
        Forbidden,
        OwnDomainOnly,
    ),
    (
        "GET",
        "/domains/{id}/events",
        AsAdmin,
        Forbidden,
        OwnDomainOnly,
    ),
    (
        "POST",
        "/domains/{id}/verify",
        Forbidden,
        Forbidden,
        OwnDomainOnly,
    ),
    (
        "POST",
        "/domains/{id}/health",
        Forbidden,
        Forbidden,
        OwnDomainOnly,
    ),
    (
        "PUT",
        "/domains/{id}/alt_names",
        Forbidden,
        Forbidden,
        OwnDomainOnly,
    ),
    (
        "POST",
        "/domains/{id}/issue-certificate",
        Forbidden,
        Forbidden,
        OwnDomainOnly,
    ),
    (
        "GET",
        "/domains/{id}/certificate",
        AsAdmin,
        Forbidden,
        OwnDomainOnly,
    ),
    (
        "POST",
        "/domains/{id}/renew",
        Forbidden,
        Forbidden,
        OwnDomainOnly,
    ),
    (
        "GET",
        "/domains/{id}/certificates",
        AsAdmin,
        Forbidden,
        OwnDomainOnly,
    ),
    (
        "GET",
        "/domains/{id}/certificates/{certificate_id}",
        AsAdmin,
        Forbidden,
        OwnDomainOnly,
    ),
    (
        "GET",
        "/domains/{id}/certificates/{certificate_id}/key",
        Forbidden,
        Forbidden,
        Forbidden,
    ),
    (
        "POST",
        "/domains/{id}/certificate/revoke",
        Forbidden,
        Forbidden,
        OwnDomainOnly,
    ),
    (
        "GET",
        "/domains/{id}/certificate/key",
        Forbidden,
        Forbidden,
        Forbidden,
    ),
    ("GET", "/events", AsAdmin, Forbidden, HeldToTenant),
    ("GET", "/audit/checkpoints", AsAdmin, Forbidden, Forbidden),
    (
        "POST",
        "/audit/checkpoints",
        Forbidden,
        Forbidden,
        Forbidden,
    ),
    (
        "GET",
        "/audit/edge-deliveries",
        AsAdmin,
        Forbidden,
        Forbidden,
    ),
    ("POST", "/webhooks", Forbidden, Forbidden, Forbidden),
    ("GET", "/webhooks", AsAdmin, Forbidden, Forbidden),
    ("GET", "/webhooks/{id}", AsAdmin, Forbidden, Forbidden),
    ("DELETE", "/webhooks/{id}", Forbidden, Forbidden, Forbidden),
    (
        "POST",
        "/webhooks/{id}/rotate-secret",
        Forbidden,
        Forbidden,
        Forbidden,
    ),
    (
        "GET",
        "/webhooks/{id}/deliveries",
        AsAdmin,
        Forbidden,
        Forbidden,
    ),
    ("POST", "/tokens", Forbidden, Forbidden, Forbidden),
    ("GET", "/tokens", AsAdmin, Forbidden, Forbidden),
    ("GET", "/tokens/{id}", AsAdmin, Forbidden, Forbidden),
    ("DELETE", "/tokens/{id}", Forbidden, Forbidden, Forbidden),
    ("GET", "/edge/certificate", Forbidden, AsAdmin, Forbidden),
    ("GET", "/edge/certificates", Forbidden, AsAdmin, Forbidden),
];

/// An id no domain has.
const MISSING: &str = "0190a0a0-0000-7000-8000-000000000000";

/// Every `(method, route)` of the API description that needs a token.
async fn every_route(service: &Service) -> Vec<(String, String)> {
    let (_, text) = call(service, "GET", "/openapi.json", None, None).await;
    let document = json_of(&text);
    let mut routes = Vec::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        if ["/healthz", "/readyz", "/openapi.json"].contains(&path.as_str()) {
            continue;
        }
        for method in item.as_object().expect("operations").keys() {
            routes.push((method.to_uppercase(), path.clone()));
        }
    }
    routes
}

/// `route` with `id` for each of its parameters.
fn at(route: &str, id: &str) -> String {
    route.replace("{id}", id).replace("{certificate_id}", id)
}

/// Registers `name` as the admin for `tenant` (none: no tenant); answers its id.
async fn registered(service: &Service, name: &str, tenant: Option<&str>) -> String {
    let body = match tenant {
        Some(tenant) => json!({"domain_name": name, "tenant": tenant}),
        None => json!({"domain_name": name}),
    };
    let (code, text) = call(service, "POST", "/domains", Some(ADMIN), Some(body)).await;
    assert_eq!(code, 201, "{text}");
    json_of(&text)["id"].as_str().expect("an id").to_owned()
}

/// The names `GET path` lists for `token`.
async fn names(service: &Service, token: &str, path: &str) -> Vec<String> {
    let (code, text) = call(service, "GET", path, Some(token), None).await;
    assert_eq!(code, 200, "{path}: {text}");
    let list = json_of(&text);
    let items = list["items"].as_array().expect("items").iter();
    items
        .map(|item| item["domain_name"].as_str().expect("a name").to_owned())
        .collect()
}

/// The domains whose events `GET /events` (a page, or NDJSON) carries for `token`.
async fn feed_domains(service: &Service, token: &str, ndjson: bool) -> Vec<String> {
    let mut request = reqwest::Client::new()
        .get(service.url("/events?limit=1000"))
        .bearer_auth(token);
    if ndjson {
        request = request.header("Accept", "application/x-ndjson");
    }
    let text = request.send().await.expect("a response").text().await;
    let text = text.expect("a body");
    let events: Vec<Value> = match ndjson {
        true => text.lines().map(json_of).collect(),
        false => json_of(&text)["items"].as_array().expect("items").clone(),
    };
    let ids = events.iter().map(|event| event["aggregate_id"].as_str());
    ids.map(|id| id.expect("an aggregate id").to_owned())
        .collect()
}

/// A tenant's `GET /events?follow=true`: registrations for another tenant and its own made
/// while it follows, and it is handed its own only.
async fn following_carries_its_own_domains_events_only(service: &Service, tenant: &str) {
    let (_, text) = call(service, "GET", "/whoami", Some(tenant), None).await;
    let head = json_of(&text)["feed_position"]
        .as_i64()
        .expect("a position");
    let mut stream = reqwest::Client::new()
        .get(service.url(&format!("/events?follow=true&after={head}")))
        .bearer_auth(tenant)
        .header("Accept", "application/x-ndjson")
        .send()
        .await
        .expect("a stream");
    assert_eq!(stream.status().as_u16(), 200);
    let other = registered(service, "b2.matrix.test", Some("acct_B")).await;
    let own = registered(service, "a2.matrix.test", Some("acct_A")).await;
    let mut text = String::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !text.contains(&own) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let chunk = tokio::time::timeout(left, stream.chunk()).await;
        let chunk = chunk
            .expect("its own registration within 10 s")
            .expect("a chunk");
        text.push_str(&String::from_utf8_lossy(
            &chunk.expect("the stream goes on"),
        ));
    }
    assert!(
        !text.contains(&other),
        "another tenant's event in the stream: {text}"
    );
}

async fn every_route_answers_every_role_as_the_table_says(kind: StoreKind) {
    let (_pebble, database, mut env) = pebble_and_database(kind).await;
    environment(&mut env);
    let service = Service::start(BINARY, &env);
    let soon = (chrono::Utc::now() + chrono::Duration::seconds(1)).to_rfc3339();
    let (_, expired) = made(
        &service,
        json!({"name": "m-expired", "role": "admin", "expires_at": soon}),
    )
    .await;
    let (revoked_id, revoked) = made(&service, json!({"name": "m-revoked", "role": "admin"})).await;
    let path = format!("/tokens/{revoked_id}");
    let (code, text) = call(&service, "DELETE", &path, Some(ADMIN), None).await;
    assert_eq!(code, 204, "{text}");
    let (_, elsewhere) = made(
        &service,
        json!({"name": "m-elsewhere", "role": "admin", "allowed_from": ["10.0.0.0/8"]}),
    )
    .await;
    let (_, admin) = made(&service, json!({"name": "m-admin", "role": "admin"})).await;
    let (_, auditor) = made(&service, json!({"name": "m-auditor", "role": "auditor"})).await;
    let (_, edge) = made(&service, json!({"name": "edge9", "role": "edge"})).await;
    let tenant_token = |tenant: &str| json!({"name": "t", "role": "tenant", "tenant": tenant});
    let (_, tenant_a) = made(&service, tenant_token("acct_A")).await;
    let (_, tenant_b) = made(&service, tenant_token("acct_B")).await;
    let a = registered(&service, "a.matrix.test", Some("acct_A")).await;
    let b = registered(&service, "b.matrix.test", Some("acct_B")).await;
    let plain = registered(&service, "plain.matrix.test", None).await;

    let mut routes = every_route(&service).await;
    let mut tabled: Vec<(String, String)> = TABLE
        .iter()
        .map(|(method, route, ..)| (method.to_string(), route.to_string()))
        .collect();
    routes.sort();
    tabled.sort();
    assert_eq!(
        routes, tabled,
        "the table lists every route, and only those"
    );

    for &(method, route, for_auditor, for_edge, for_tenant) in TABLE {
        let path = at(route, &plain);
        // Only reads are compared with the admin's: its writes would change the domain.
        let as_admin = match method {
            "GET" => call(&service, method, &path, Some(ADMIN), None).await.0,
            _ => 0,
        };
        // The managed token of each role answers as the environment's, both as the table says.
        let roles = [
            (AUDITOR, auditor.as_str(), for_auditor),
            (EDGE, edge.as_str(), for_edge),
            (ADMIN, admin.as_str(), AsAdmin),
        ];
        for (environment, managed, gets) in roles {
            // An admin's writes change what the next call answers: its reads are compared.
            if gets == AsAdmin && method != "GET" {
                continue;
            }
            for token in [environment, managed] {
                let (code, text) = call(&service, method, &path, Some(token), None).await;
                let expected = match gets {
                    Forbidden => 403,
                    _ => as_admin,
                };
                assert_eq!(code, expected, "{method} {path} as {token}: {text}");
            }
        }
        // A tenant: refused off its routes; on another's domain, as on none.
        let tenants = [
            (tenant_a.as_str(), a.as_str(), [b.as_str(), plain.as_str()]),
            (tenant_b.as_str(), b.as_str(), [a.as_str(), plain.as_str()]),
        ];
        for (token, own, others) in tenants {
            match for_tenant {
                AsAdmin | HeldToTenant => {}
                Forbidden => {
                    for id in [own, others[0], others[1]] {
                        let path = at(route, id);
                        let (code, text) = call(&service, method, &path, Some(token), None).await;
                        assert_eq!(code, 403, "{method} {path} as a tenant: {text}");
                    }
                }
                OwnDomainOnly => {
                    let events = database.count("events").await;
                    let none = call(&service, method, &at(route, MISSING), Some(token), None).await;
                    assert_eq!(none.0, 404, "{method} {route} on no domain: {}", none.1);
                    for other in others {
                        let path = at(route, other);
                        let (code, text) = call(&service, method, &path, Some(token), None).await;
                        assert_eq!(
                            (code, text.replace(other, MISSING)),
                            none,
                            "{method} {path} on another tenant's domain"
                        );
                        // With `as_of`, a time or not, too: as an id no domain has.
                        let now =
                            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                        for query in [format!("?as_of={now}"), "?as_of=yesterday".to_owned()] {
                            if method != "GET" || route != "/domains/{id}" {
                                break;
                            }
                            let missing = format!("{}{query}", at(route, MISSING));
                            let none = call(&service, method, &missing, Some(token), None).await;
                            assert_eq!(none.0, 404, "{missing}: {}", none.1);
                            let as_of = format!("{path}{query}");
                            let (code, text) =
                                call(&service, method, &as_of, Some(token), None).await;
                            assert_eq!((code, text.replace(other, MISSING)), none, "{as_of}");
                        }
                    }
                    assert_eq!(database.count("events").await, events, "{method} {route}");
                    if method == "GET" {
                        let path = at(route, own);
                        let own_admin = call(&service, method, &path, Some(ADMIN), None).await.0;
                        let (code, text) = call(&service, method, &path, Some(token), None).await;
                        assert_eq!(code, own_admin, "{method} {path} on its own domain: {text}");
                    }
                }
            }
        }
    }

    // Lists, searches and the feed: a tenant's own domains only.
    let tenants = [
        (tenant_a.as_str(), a.as_str(), "a.matrix.test"),
        (tenant_b.as_str(), b.as_str(), "b.matrix.test"),
    ];
    for (token, own, name) in tenants {
        assert_eq!(names(&service, token, "/domains").await, [name]);
        for path in [
            "/domains?tenant=acct_A",
            "/domains?tenant=acct_B",
            "/domains?name=matrix",
        ] {
            let listed = names(&service, token, path).await;
            assert!(
                listed.iter().all(|listed| listed == name),
                "{path}: {listed:?}"
            );
        }
        for ndjson in [false, true] {
            let domains = feed_domains(&service, token, ndjson).await;
            assert!(!domains.is_empty(), "its own registration is in its feed");
            assert!(domains.iter().all(|id| id == own), "{domains:?}");
        }
        let (code, text) = call(&service, "GET", "/whoami", Some(token), None).await;
        assert_eq!(
            (code, &json_of(&text)["role"]),
            (200, &json!("tenant")),
            "{text}"
        );
    }
    let everyone = names(&service, AUDITOR, "/domains").await;
    assert_eq!(everyone.len(), 3, "{everyone:?}");
    following_carries_its_own_domains_events_only(&service, &tenant_a).await;

    // Expired, revoked, from elsewhere, or none: refused on every route alike, nothing done.
    until_answered(&service, &expired, 401).await;
    let events_before = database.count("events").await;
    for (method, route, ..) in TABLE {
        let path = at(route, &plain);
        for (token, expected) in [
            (Some(expired.as_str()), 401),
            (Some(revoked.as_str()), 401),
            (Some(elsewhere.as_str()), 403),
            (None, 401),
        ] {
            let (code, text) = call(&service, method, &path, token, None).await;
            assert_eq!(code, expected, "{method} {path} as {token:?}: {text}");
            assert!(
                json_of(&text)["error"].is_string(),
                "{method} {path}: {text}"
            );
        }
    }
    assert_eq!(
        database.count("events").await,
        events_before,
        "a refused call did something"
    );
    // Without TRUSTED_PROXIES, X-Forwarded-For is the client's own claim: not believed.
    let forwarded = reqwest::Client::new()
        .get(service.url("/domains"))
        .bearer_auth(&elsewhere)
        .header("X-Forwarded-For", "10.1.2.3")
        .send()
        .await
        .expect("a response");
    assert_eq!(
        forwarded.status().as_u16(),
        403,
        "a forwarded address believed"
    );
    let edge_path = "/edge/certificate?server_name=plain.matrix.test";
    let basic = reqwest::Client::new()
        .get(service.url(edge_path))
        .basic_auth("edge9", Some(&edge))
        .send()
        .await
        .expect("a response");
    let status = basic.status().as_u16();
    assert_eq!(status, 204, "Basic credentials of the edge's name");
    let elsewhere = reqwest::Client::new()
        .get(service.url(edge_path))
        .basic_auth("edge1", Some(&edge))
        .send()
        .await
        .expect("a response");
    let status = elsewhere.status().as_u16();
    assert_eq!(status, 401, "under another edge's name");
}
