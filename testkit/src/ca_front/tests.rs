//! The CA front's tests, with instant-acme as the client: rate limits and unavailability
//! answered and then passed, nonces of those answers that Pebble accepts, an outage that refuses
//! connections, profiles listed and asked for.

use std::time::Duration;

use instant_acme::{Account, ChallengeType, Identifier, NewOrder, Order, OrderStatus, RetryPolicy};
use serde_json::{json, Value};

use super::{CaFront, FrontTarget};
use crate::test_support::{new_account, problem, trusting};
use crate::{Pebble, PebbleOptions};

/// Pebble rejecting no nonce: a request the client had to retry after `badNonce` would be one
/// more request at the front, which the counts below would show.
fn pebble() -> Pebble {
    Pebble::start(PebbleOptions {
        nonce_reject_percent: Some(0),
        ..PebbleOptions::default()
    })
}

async fn account_at(pebble: &Pebble, front: &CaFront) -> Account {
    new_account(&pebble.ca_bundle(), front.directory_url(), None)
        .await
        .expect("newAccount through the front")
}

fn order_of(name: &str) -> [Identifier; 1] {
    [Identifier::Dns(name.to_owned())]
}

#[tokio::test]
async fn new_orders_are_rate_limited_as_often_as_asked_then_pass() {
    let pebble = pebble();
    let front = CaFront::start(&pebble);
    let account = account_at(&pebble, &front).await;
    // Rounded up to whole seconds.
    front.answer_rate_limited(FrontTarget::NewOrder, 2, Duration::from_millis(29_500));

    let identifiers = order_of("limited.example.test");
    let refused = problem(
        account.new_order(&NewOrder::new(&identifiers)).await,
        "the first newOrder",
    );
    assert_eq!(
        refused.r#type.as_deref(),
        Some("urn:ietf:params:acme:error:rateLimited")
    );
    assert_eq!(refused.status, Some(429));

    // The second, as any client sees it: status, headers, body.
    let directory: Value = trusting(&pebble.ca_bundle())
        .get(front.directory_url())
        .send()
        .await
        .expect("the directory")
        .json()
        .await
        .expect("JSON");
    let new_order = directory["newOrder"].as_str().expect("newOrder");
    let response = trusting(&pebble.ca_bundle())
        .post(new_order)
        .header("content-type", "application/jose+json")
        .body("{}")
        .send()
        .await
        .expect("POST newOrder");
    assert_eq!(response.status(), 429);
    let header = |name| {
        response
            .headers()
            .get(name)
            .map(|value| value.to_str().expect("ASCII").to_owned())
    };
    assert_eq!(
        header("content-type").as_deref(),
        Some("application/problem+json")
    );
    assert_eq!(header("retry-after").as_deref(), Some("30"));
    assert!(header("replay-nonce").is_some_and(|nonce| !nonce.is_empty()));
    let body: Value = response.json().await.expect("a problem document");
    assert_eq!(
        body,
        json!({
            "type": "urn:ietf:params:acme:error:rateLimited",
            "detail": "too many new orders recently (injected by the test front)",
            "status": 429,
        })
    );

    // The third passes to Pebble.
    let mut order = account
        .new_order(&NewOrder::new(&identifiers))
        .await
        .expect("the third newOrder passes");
    assert_eq!(order.state().status, OrderStatus::Pending);
    assert_eq!(front.requests(FrontTarget::NewOrder), 3);
    assert_eq!(front.requests(FrontTarget::NewAccount), 1);
    assert_eq!(front.requests(FrontTarget::Finalize), 0);
    // Both directory fetches, the nonces, the account, the orders.
    assert!(front.requests(FrontTarget::Any) >= 2 + 3 + 1 + 3);
    assert_eq!(front.orders_profiles(), [None, None, None]);
}

/// Publishes the DNS-01 record of every authorization of `order` and tells Pebble each is ready
/// (a `503` the first time: an error the front answers, with a nonce the client keeps).
async fn prove_control(pebble: &Pebble, front: &CaFront, order: &mut Order) {
    let mut authorizations = order.authorizations();
    while let Some(authorization) = authorizations.next().await {
        let mut authorization = authorization.expect("the authorization");
        let mut challenge = authorization
            .challenge(ChallengeType::Dns01)
            .expect("a DNS-01 challenge");
        let name = challenge.identifier().to_string();
        pebble.set_txt(
            &format!("_acme-challenge.{name}."),
            &challenge.key_authorization().dns_value(),
        );
        front.answer_unavailable(FrontTarget::Challenge, 1, Duration::from_secs(5));
        let refused = problem(challenge.set_ready().await, "the first ready");
        assert_eq!(
            refused.r#type.as_deref(),
            Some("urn:ietf:params:acme:error:serverInternal")
        );
        assert_eq!(refused.status, Some(503));
        challenge
            .set_ready()
            .await
            .expect("the second ready passes");
    }
}

#[tokio::test]
async fn the_nonce_of_an_injected_error_is_one_pebble_accepts() {
    let pebble = pebble();
    let front = CaFront::start(&pebble);
    let account = account_at(&pebble, &front).await;
    let identifiers = order_of("nonce.example.test");
    let mut order = account
        .new_order(&NewOrder::new(&identifiers))
        .await
        .expect("newOrder");
    // instant-acme signs an order's next request with the nonce of its last response, the
    // front's error's included. Had Pebble refused it (badNonce), instant-acme would have
    // retried: one request more at the front than the errors and successes counted here.
    prove_control(&pebble, &front, &mut order).await;
    assert_eq!(front.requests(FrontTarget::Challenge), 2);
    let retries = RetryPolicy::new().timeout(Duration::from_secs(30));
    assert_eq!(
        order.poll_ready(&retries).await.expect("validated"),
        OrderStatus::Ready
    );

    front.answer_rate_limited(FrontTarget::Finalize, 1, Duration::from_secs(60));
    let key = rcgen::KeyPair::generate().expect("a key");
    let csr = rcgen::CertificateParams::new(vec!["nonce.example.test".to_owned()])
        .expect("CSR params")
        .serialize_request(&key)
        .expect("a CSR");
    let refused = problem(order.finalize_csr(csr.der()).await, "the first finalize");
    assert_eq!(
        refused.detail.as_deref(),
        Some("too many finalizations recently (injected by the test front)")
    );
    order
        .finalize_csr(csr.der())
        .await
        .expect("the second finalize passes");
    assert_eq!(front.requests(FrontTarget::Finalize), 2);
    let chain = order
        .poll_certificate(&retries)
        .await
        .expect("the certificate");
    assert!(chain.starts_with("-----BEGIN CERTIFICATE-----"), "{chain}");
}

#[tokio::test]
async fn a_ca_that_is_down_refuses_connections_until_it_is_up() {
    let pebble = pebble();
    let front = CaFront::start(&pebble);
    let account = account_at(&pebble, &front).await;
    let identifiers = order_of("outage.example.test");

    front.down();
    let refused =
        std::net::TcpStream::connect(("127.0.0.1", front.port())).expect_err("nothing listens");
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    // instant-acme's client keeps its connection to the front open between requests: that it
    // fails shows the open connection was closed too.
    let failed = account.new_order(&NewOrder::new(&identifiers)).await;
    assert!(failed.is_err(), "a newOrder while down");
    assert_eq!(front.requests(FrontTarget::NewOrder), 0, "none reached it");

    front.up();
    front.up(); // a second is nothing to do
    account
        .new_order(&NewOrder::new(&identifiers))
        .await
        .expect("a newOrder once up, at the same URL");
    assert_eq!(front.requests(FrontTarget::NewOrder), 1);

    // The other outage: the CA answers, but 503 to everything, until the test ends it.
    let client = trusting(&pebble.ca_bundle());
    front.answer_unavailable(FrontTarget::Any, usize::MAX, Duration::from_secs(120));
    for _ in 0..3 {
        let response = client
            .get(front.directory_url())
            .send()
            .await
            .expect("an answer");
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()["retry-after"], "120");
        let body: Value = response.json().await.expect("a problem document");
        assert_eq!(body["type"], "urn:ietf:params:acme:error:serverInternal");
    }
    front.answer_unavailable(FrontTarget::Any, 0, Duration::ZERO);
    let response = client.get(front.directory_url()).send().await;
    assert_eq!(response.expect("an answer").status(), 200);
}

#[tokio::test]
async fn profiles_are_listed_and_the_one_asked_for_is_recorded_and_echoed() {
    let pebble = pebble();
    // Pebble 2.4 itself lists no profiles and ignores an order's: it decodes the payload into
    // its own struct, unknown fields dropped, and its order has no `profile`.
    let direct = new_account(&pebble.ca_bundle(), pebble.directory_url(), None)
        .await
        .expect("newAccount at Pebble");
    assert_eq!(direct.profiles().count(), 0);
    let identifiers = order_of("profiles.example.test");
    let mut order = direct
        .new_order(&NewOrder::new(&identifiers).profile("shortlived"))
        .await
        .expect("Pebble takes an order with a profile");
    assert_eq!(order.state().profile, None);

    let front = CaFront::start(&pebble);
    front.profiles(&[
        ("classic", "the default: 90 days"),
        ("shortlived", "6 days"),
    ]);
    let account = account_at(&pebble, &front).await;
    let mut listed: Vec<_> = account
        .profiles()
        .map(|profile| (profile.name.to_owned(), profile.description.to_owned()))
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        [
            ("classic".to_owned(), "the default: 90 days".to_owned()),
            ("shortlived".to_owned(), "6 days".to_owned()),
        ]
    );

    let mut order = account
        .new_order(&NewOrder::new(&identifiers).profile("shortlived"))
        .await
        .expect("newOrder with a listed profile");
    assert_eq!(order.state().profile.as_deref(), Some("shortlived"));
    let mut order = account
        .new_order(&NewOrder::new(&identifiers))
        .await
        .expect("newOrder without a profile");
    assert_eq!(order.state().profile, None);
    let refused = problem(
        account
            .new_order(&NewOrder::new(&identifiers).profile("tlsserver"))
            .await,
        "newOrder with a profile not listed",
    );
    assert_eq!(
        refused.r#type.as_deref(),
        Some("urn:ietf:params:acme:error:invalidProfile")
    );
    assert_eq!(refused.status, Some(400));
    assert_eq!(
        front.orders_profiles(),
        [
            Some("shortlived".to_owned()),
            None,
            Some("tlsserver".to_owned())
        ]
    );
}
