//! The edge routes against Pebble, on both stores: an edge token gets `GET /edge/certificate`
//! (Bearer or Basic, never a query string) and a `403` everywhere else, an auditor a `403` on
//! it; the certificate of the apex, an alt name and a name under the wildcard is the one the
//! API reports, with its key; an edge's many reads of one certificate are one event.

use std::time::{Duration, Instant};

use dns_handling_testkit::{
    pebble_and_database, verified_domain_with_alt_names, Pebble, Service, StoreKind,
};
use serde_json::Value;

use crate::BINARY;

crate::on_both_stores!(an_edge_token_gets_the_certificate_of_its_names_and_nothing_else);

const ADMIN: &str = "admin-token-0123456789";
const AUDITOR: &str = "auditor-token-9876543210";
const EDGE1: &str = "edge1-token-1111111111";
const EDGE2: &str = "edge2-token-2222222222";
const DOMAIN: &str = "shop.edge.test";

/// How a request presents itself.
#[derive(Clone, Copy)]
enum As {
    Bearer(&'static str),
    Basic(&'static str, &'static str),
    Nobody,
}

/// `method path` as `who`: the status, the content type and the body.
async fn call(service: &Service, method: &str, path: &str, who: As) -> (u16, String, String) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
    // A client of its own: the service's carries the admin token.
    let request = reqwest::Client::new().request(method, service.url(path));
    let request = match who {
        As::Bearer(token) => request.bearer_auth(token),
        As::Basic(user, token) => request.basic_auth(user, Some(token)),
        As::Nobody => request,
    };
    let response = request.send().await.expect("a response");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (status, content_type, response.text().await.expect("a body"))
}

/// `GET /edge/certificate` for `name`, with the parameters Caddy adds.
fn edge_path(name: &str) -> String {
    format!("/edge/certificate?cipher_suites=4865,4866&server_name={name}&signature_schemes=1027")
}

/// Issues the domain's certificate for the apex, `www` and the wildcard.
async fn issued(service: &Service, pebble: &Pebble) -> String {
    let alt_names = [format!("www.{DOMAIN}"), format!("*.{DOMAIN}")];
    let alt_names: Vec<&str> = alt_names.iter().map(String::as_str).collect();
    let id = verified_domain_with_alt_names(service, pebble, DOMAIN, &alt_names).await;
    let (code, started) = service
        .post(&format!("/domains/{id}/issue-certificate"), None)
        .await;
    assert_eq!(code, 202, "{started}");
    for challenge in started["challenges"].as_array().expect("challenges") {
        let field = |name: &str| challenge[name].as_str().expect(name).to_owned();
        pebble.set_txt(&field("challenge_domain"), &field("expected_txt_value"));
    }
    let view = service
        .wait_for_status(&id, &["active", "failed"], Duration::from_secs(90))
        .await;
    assert_eq!(view["status"], "active", "{view}");
    id
}

/// The serial (lower-case hex) of the first certificate of `pem`, and its public key.
fn leaf_of(pem: &str) -> (String, Vec<u8>) {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).expect("PEM");
    let leaf = block.parse_x509().expect("a leaf");
    let serial = leaf.tbs_certificate.raw_serial();
    let serial = serial.iter().map(|b| format!("{b:02x}")).collect();
    (serial, leaf.public_key().subject_public_key.data.to_vec())
}

/// Every `(method, path)` of the API description but the edge routes and those that need no
/// token, with `id` and `certificate_id` in place of their parameters.
async fn every_other_route(
    service: &Service,
    id: &str,
    certificate_id: &str,
) -> Vec<(String, String)> {
    let (_, _, text) = call(service, "GET", "/openapi.json", As::Nobody).await;
    let document: Value = serde_json::from_str(&text).expect("the description");
    let mut routes = Vec::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        if path.starts_with("/edge/")
            || ["/healthz", "/readyz", "/openapi.json"].contains(&path.as_str())
        {
            continue;
        }
        let path = path
            .replace("{id}", id)
            .replace("{certificate_id}", certificate_id);
        for method in item.as_object().expect("operations").keys() {
            routes.push((method.to_uppercase(), path.clone()));
        }
    }
    routes
}

async fn an_edge_token_gets_the_certificate_of_its_names_and_nothing_else(kind: StoreKind) {
    let (pebble, _database, mut env) = pebble_and_database(kind).await;
    env.insert("AUTH_TOKEN".into(), ADMIN.into());
    env.insert("READ_ONLY_TOKENS".into(), AUDITOR.into());
    env.insert("EDGE_TOKENS".into(), format!("edge1={EDGE1},edge2={EDGE2}"));
    let service = Service::start(BINARY, &env);
    let id = issued(&service, &pebble).await;
    let (code, certificate) = service.get(&format!("/domains/{id}/certificate")).await;
    assert_eq!(code, 200, "{certificate}");
    let serial = certificate["serial"].as_str().expect("a serial").to_owned();
    let certificate_id = certificate["id"].as_str().expect("an id").to_owned();

    // The index follows the feed: the certificate is served within moments of its issue.
    let deadline = Instant::now() + Duration::from_secs(10);
    while call(&service, "GET", &edge_path(DOMAIN), As::Bearer(EDGE1))
        .await
        .0
        != 200
    {
        assert!(Instant::now() < deadline, "never served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The role matrix.
    let routes = every_other_route(&service, &id, &certificate_id).await;
    assert!(routes.len() > 20, "{routes:?}");
    for (method, path) in &routes {
        let (code, _, body) = call(&service, method, path, As::Bearer(EDGE1)).await;
        assert_eq!(code, 403, "{method} {path}: {body}");
        let error: Value = serde_json::from_str(&body).expect("a JSON error");
        assert!(error["error"].is_string(), "{method} {path}: {body}");
    }
    let refused = [
        (As::Bearer(AUDITOR), 403),
        (As::Bearer("unknown-token"), 401),
        (As::Nobody, 401),
        (As::Basic("edge2", EDGE1), 401),
        (As::Basic("auditor", AUDITOR), 403),
    ];
    for (who, expected) in refused {
        let (code, _, body) = call(&service, "GET", &edge_path(DOMAIN), who).await;
        assert_eq!(code, expected, "{body}");
    }
    let (code, _, body) = call(&service, "GET", "/domains", As::Bearer("unknown-token")).await;
    assert_eq!(code, 401, "{body}");
    for query in [format!("&token={EDGE1}"), format!("&access_token={EDGE1}")] {
        let path = format!("{}{query}", edge_path(DOMAIN));
        let (code, _, body) = call(&service, "GET", &path, As::Nobody).await;
        assert_eq!(code, 401, "a token in the query string: {body}");
    }

    // The certificate of every name it covers, as the API reports it, with its key.
    let apex_www_and_under_the_wildcard = [DOMAIN, "www.shop.edge.test", "api.shop.edge.test"];
    for (name, who) in apex_www_and_under_the_wildcard.into_iter().zip([
        As::Basic("edge1", EDGE1),
        As::Bearer(EDGE1),
        As::Basic("edge1", EDGE1),
    ]) {
        let (code, content_type, body) = call(&service, "GET", &edge_path(name), who).await;
        assert_eq!(
            (code, content_type.as_str()),
            (200, "application/x-pem-file"),
            "{name}: {body}"
        );
        let (served_serial, public_key) = leaf_of(&body);
        assert_eq!(served_serial, serial, "{name}");
        let key_pem = &body[body.find("-----BEGIN PRIVATE KEY-----").expect("a key")..];
        let key = rcgen::KeyPair::from_pem(key_pem).expect("a PEM key");
        assert_eq!(
            key.public_key_raw(),
            public_key.as_slice(),
            "{name}: the key is the leaf's"
        );
    }
    for (name, expected) in [
        ("a.b.shop.edge.test", 204),
        ("other.test", 204),
        ("not%20a%20name", 400),
    ] {
        let (code, _, body) = call(&service, "GET", &edge_path(name), As::Bearer(EDGE1)).await;
        assert_eq!(code, expected, "{name}: {body}");
    }
    let (code, _, body) = call(&service, "GET", "/edge/certificate", As::Bearer(EDGE1)).await;
    assert_eq!(code, 400, "no server_name: {body}");
    let (code, _, _) = call(&service, "GET", &edge_path(DOMAIN), As::Bearer(ADMIN)).await;
    assert_eq!(code, 200, "an admin may use the edge routes");

    // Many reads: one event per (edge, certificate); the admin's read is recorded as ever.
    for _ in 0..10 {
        let (code, _, _) = call(
            &service,
            "GET",
            &edge_path(DOMAIN),
            As::Basic("edge1", EDGE1),
        )
        .await;
        assert_eq!(code, 200);
    }
    let (code, _, _) = call(&service, "GET", &edge_path(DOMAIN), As::Bearer(EDGE2)).await;
    assert_eq!(code, 200);
    let (code, history) = service.get(&format!("/domains/{id}/events")).await;
    assert_eq!(code, 200, "{history}");
    let mut readers: Vec<String> = history
        .as_array()
        .expect("events")
        .iter()
        .filter(|event| event["event_type"] == "PrivateKeyRead")
        .map(|event| {
            let read = &event["payload"]["PrivateKeyRead"];
            assert_eq!(read["certificate_id"], certificate_id.as_str(), "{read}");
            read["reader"].as_str().expect("a reader").to_owned()
        })
        .collect();
    readers.sort();
    assert_eq!(readers.len(), 3, "{readers:?}");
    assert!(readers[0].starts_with("admin"), "{readers:?}");
    assert_eq!(readers[1..], ["edge:edge1", "edge:edge2"], "{readers:?}");
    let (_, _, metrics) = call(&service, "GET", "/metrics", As::Bearer(ADMIN)).await;
    let edge1_reads = metrics
        .lines()
        .find(|line| line.starts_with("dns_handling_edge_key_reads_total{edge=\"edge1\"}"))
        .and_then(|line| line.rsplit(' ').next()?.parse::<u64>().ok());
    assert!(
        edge1_reads.is_some_and(|reads| reads >= 12),
        "{edge1_reads:?}"
    );
    assert!(!service.log().contains("PRIVATE KEY"), "a key in the log");
}
