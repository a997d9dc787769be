//! Domains of tenants, on both stores: registered for a tenant (the tenant in the registration
//! event, in the domain's view and in its `GET /domains?tenant=` list, for the admin and the
//! auditors alike), verified like any domain; a malformed tenant refused, and a tenant over
//! `TENANT_DOMAIN_LIMIT` refused with `403` naming the limit, nothing stored either way; a
//! tenant's token registering for its own tenant only and carrying its own domains through
//! their lives (what it gets on every route is `role_matrix.rs`).

use std::collections::HashMap;
use std::time::Duration;

use dns_handling_testkit::{pebble_and_database, Service, StoreKind};
use serde_json::{json, Value};

use crate::BINARY;

crate::on_both_stores!(domains_belong_to_tenants_and_a_tenant_is_held_to_its_domain_limit);
crate::on_both_stores!(registrations_racing_on_every_replica_never_pass_a_tenant_s_limit);

const ADMIN: &str = "admin-token-0123456789";
const AUDITOR: &str = "auditor-token-9876543210";

/// `method path` with `token` as Bearer and an optional JSON body: the status and the body.
async fn call(
    service: &Service,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
    let mut request = reqwest::Client::new()
        .request(method, service.url(path))
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("a response");
    let status = response.status().as_u16();
    let text = response.text().await.expect("a body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// The domain names `GET /domains?tenant=` lists for `token`.
async fn listed(service: &Service, token: &str, tenant: &str) -> Vec<String> {
    let (code, list) = call(
        service,
        "GET",
        &format!("/domains?tenant={tenant}"),
        token,
        None,
    )
    .await;
    assert_eq!(code, 200, "{list}");
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|item| item["domain_name"].as_str().expect("a name").to_owned())
        .collect()
}

async fn domains_belong_to_tenants_and_a_tenant_is_held_to_its_domain_limit(kind: StoreKind) {
    let (pebble, database, mut env) = pebble_and_database(kind).await;
    env.insert("AUTH_TOKEN".into(), ADMIN.into());
    env.insert("READ_ONLY_TOKENS".into(), AUDITOR.into());
    env.insert("TENANT_DOMAIN_LIMIT".into(), "2".into());
    let service = Service::start(BINARY, &env as &HashMap<String, String>);

    // Registered for a tenant: the tenant in the answer, the view and the event.
    let (code, a) = call(
        &service,
        "POST",
        "/domains",
        ADMIN,
        Some(json!({"domain_name": "a.tenants.test", "tenant": "acct_A"})),
    )
    .await;
    assert_eq!(code, 201, "{a}");
    assert_eq!(a["tenant"], "acct_A", "{a}");
    let a_id = a["id"].as_str().expect("an id").to_owned();
    let (code, b) = call(
        &service,
        "POST",
        "/domains",
        ADMIN,
        Some(json!({"domain_name": "b.tenants.test", "tenant": "acct_B"})),
    )
    .await;
    assert_eq!(code, 201, "{b}");
    let (code, plain) = call(
        &service,
        "POST",
        "/domains",
        ADMIN,
        Some(json!({"domain_name": "plain.tenants.test"})),
    )
    .await;
    assert_eq!(code, 201, "{plain}");
    assert!(plain.get("tenant").is_none(), "{plain}");
    let payloads = database
        .texts(&format!(
            "CAST(payload AS TEXT) FROM events WHERE aggregate_id = '{a_id}'"
        ))
        .await;
    let registered: Value = serde_json::from_str(&payloads[0]).expect("a payload");
    assert_eq!(registered["DomainRegistered"]["tenant"], "acct_A");
    let versions = database
        .texts(&format!(
            "event_version FROM events WHERE aggregate_id = '{a_id}'"
        ))
        .await;
    assert_eq!(versions, ["3.0"]);

    // Verified like any domain, and still the tenant's.
    pebble.set_txt(
        a["verification_record"]["name"].as_str().expect("a name"),
        a["verification_token"].as_str().expect("a token"),
    );
    let (code, verified) = call(
        &service,
        "POST",
        &format!("/domains/{a_id}/verify"),
        ADMIN,
        None,
    )
    .await;
    assert_eq!(code, 200, "{verified}");
    let (code, view) = call(&service, "GET", &format!("/domains/{a_id}"), AUDITOR, None).await;
    assert_eq!(code, 200, "{view}");
    assert_eq!(
        (&view["status"], &view["tenant"]),
        (&json!("verified"), &json!("acct_A")),
        "{view}"
    );

    // Listed by tenant, for the admin and an auditor alike.
    for token in [ADMIN, AUDITOR] {
        assert_eq!(listed(&service, token, "acct_A").await, ["a.tenants.test"]);
        assert_eq!(listed(&service, token, "acct_B").await, ["b.tenants.test"]);
        assert!(listed(&service, token, "acct_C").await.is_empty());
    }
    let (code, refused) = call(&service, "GET", "/domains?tenant=acct%2FA", ADMIN, None).await;
    assert_eq!(code, 400, "{refused}");

    // A malformed tenant, and a tenant at its limit: refused, nothing stored.
    let events = database.count("events").await;
    let claims = database.count("domain_names").await;
    for bad in ["", "acct A", "acct/A", &"a".repeat(65)] {
        let (code, refused) = call(
            &service,
            "POST",
            "/domains",
            ADMIN,
            Some(json!({"domain_name": "bad.tenants.test", "tenant": bad})),
        )
        .await;
        assert_eq!(code, 400, "{bad:?}: {refused}");
        assert!(
            refused["error"]
                .as_str()
                .expect("an error")
                .contains("tenant"),
            "{refused}"
        );
    }
    let (code, second) = call(
        &service,
        "POST",
        "/domains",
        ADMIN,
        Some(json!({"domain_name": "a2.tenants.test", "tenant": "acct_A"})),
    )
    .await;
    assert_eq!(code, 201, "{second}");
    let events = events + 1;
    let claims = claims + 1;
    let (code, over) = call(
        &service,
        "POST",
        "/domains",
        ADMIN,
        Some(json!({"domain_name": "a3.tenants.test", "tenant": "acct_A",
            "alt_names": ["www.a3.tenants.test"]})),
    )
    .await;
    assert_eq!(code, 403, "{over}");
    let message = over["error"].as_str().expect("an error");
    assert!(
        message.contains("TENANT_DOMAIN_LIMIT") && message.contains('2'),
        "{message}"
    );
    assert_eq!(database.count("events").await, events);
    assert_eq!(database.count("domain_names").await, claims);
    assert_eq!(
        listed(&service, ADMIN, "acct_A").await,
        ["a.tenants.test", "a2.tenants.test"]
    );

    // Another tenant has room.
    let (code, other) = call(
        &service,
        "POST",
        "/domains",
        ADMIN,
        Some(json!({"domain_name": "a3.tenants.test", "tenant": "acct_B"})),
    )
    .await;
    assert_eq!(code, 201, "{other}");

    // A tenant's token registers for its tenant only: naming another is refused, nothing
    // stored; its own domains it verifies, issues, revokes, renews and removes.
    let (code, made) = call(
        &service,
        "POST",
        "/tokens",
        ADMIN,
        Some(json!({"name": "tenant c", "role": "tenant", "tenant": "acct_C"})),
    )
    .await;
    assert_eq!(code, 201, "{made}");
    assert_eq!(made["tenant"], "acct_C", "{made}");
    let tenant = made["secret"].as_str().expect("a secret").to_owned();
    let (events, claims) = (
        database.count("events").await,
        database.count("domain_names").await,
    );
    let (code, refused) = call(
        &service,
        "POST",
        "/domains",
        &tenant,
        // A tenant with room: only the scope refuses it.
        Some(json!({"domain_name": "c1.tenants.test", "tenant": "acct_D"})),
    )
    .await;
    assert_eq!(code, 403, "{refused}");
    assert!(refused["error"]
        .as_str()
        .expect("an error")
        .contains("acct_C"));
    assert_eq!(database.count("events").await, events);
    assert_eq!(database.count("domain_names").await, claims);
    let (code, c) = call(
        &service,
        "POST",
        "/domains",
        &tenant,
        Some(json!({"domain_name": "c.tenants.test"})),
    )
    .await;
    assert_eq!((code, &c["tenant"]), (201, &json!("acct_C")), "{c}");
    let c_id = c["id"].as_str().expect("an id").to_owned();
    pebble.set_txt(
        c["verification_record"]["name"].as_str().expect("a name"),
        c["verification_token"].as_str().expect("a token"),
    );
    let path = |action: &str| format!("/domains/{c_id}{action}");
    let (code, verified) = call(&service, "POST", &path("/verify"), &tenant, None).await;
    assert_eq!(code, 200, "{verified}");
    let (code, started) = call(&service, "POST", &path("/issue-certificate"), &tenant, None).await;
    assert_eq!(code, 202, "{started}");
    pebble.set_txt(
        started["challenge_domain"].as_str().expect("a domain"),
        started["expected_txt_value"].as_str().expect("a value"),
    );
    let view = service
        .wait_for_status(&c_id, &["active", "failed"], Duration::from_secs(60))
        .await;
    assert_eq!(view["status"], "active", "{view}");
    let (code, key) = call(&service, "GET", &path("/certificate/key"), &tenant, None).await;
    assert_eq!(code, 403, "a tenant reads no private key: {key}");
    let revoke = Some(json!({"reason": "superseded"}));
    let (code, revoked) = call(
        &service,
        "POST",
        &path("/certificate/revoke"),
        &tenant,
        revoke,
    )
    .await;
    assert_eq!(code, 200, "{revoked}");
    let (code, renewed) = call(&service, "POST", &path("/renew"), &tenant, None).await;
    assert!(
        ![401, 403, 404].contains(&code),
        "a tenant renews its own: {code} {renewed}"
    );
    let (code, removed) = call(&service, "DELETE", &path(""), &tenant, None).await;
    assert_eq!(code, 204, "{removed}");
    let (code, gone) = call(&service, "GET", &path(""), &tenant, None).await;
    assert_eq!(code, 404, "{gone}");
}

/// Six registrations for one tenant at once, spread over two replicas on PostgreSQL (one
/// process on SQLite), against a limit of two: two are registered, four refused with `403`.
async fn registrations_racing_on_every_replica_never_pass_a_tenant_s_limit(kind: StoreKind) {
    let (_pebble, database, mut env) = pebble_and_database(kind).await;
    env.insert("AUTH_TOKEN".into(), ADMIN.into());
    env.insert("TENANT_DOMAIN_LIMIT".into(), "2".into());
    let replica_a = Service::start(BINARY, &env);
    let replica_b = (kind == StoreKind::Postgres).then(|| Service::start(BINARY, &env));
    let replicas = [&replica_a, replica_b.as_ref().unwrap_or(&replica_a)];

    let answers = futures::future::join_all((0..6).map(|n| {
        call(
            replicas[n % 2],
            "POST",
            "/domains",
            ADMIN,
            Some(json!({"domain_name": format!("race{n}.tenants.test"), "tenant": "acct_R"})),
        )
    }))
    .await;

    let codes: Vec<u16> = answers.iter().map(|(code, _)| *code).collect();
    let registered = codes.iter().filter(|code| **code == 201).count();
    let refused = codes.iter().filter(|code| **code == 403).count();
    assert_eq!((registered, refused), (2, 4), "{answers:?}");
    assert_eq!(listed(&replica_a, ADMIN, "acct_R").await.len(), 2);
    assert_eq!(database.count("events").await, 2);
}
