//! Pebble's own tests: External Account Binding required and given, two Pebbles side by side.

use instant_acme::{Account, ExternalAccountKey, Key};
use tokio_rustls::rustls::pki_types::PrivateKeyDer;

use super::{eab_key, Pebble, PebbleOptions};
use crate::test_support::{new_account, problem, trusting};
use crate::CaFront;

#[tokio::test]
async fn with_a_binding_required_pebble_refuses_an_account_without_one_and_takes_it_with() {
    let key: [u8; 32] = rand::random();
    let pebble = Pebble::start(PebbleOptions {
        nonce_reject_percent: Some(0),
        external_account_binding: Some(vec![("kid-1".to_owned(), eab_key(&key))]),
        ..PebbleOptions::default()
    });
    let (root, directory) = (pebble.ca_bundle(), pebble.directory_url());

    let refused = problem(
        new_account(&root, directory.clone(), None).await,
        "newAccount without a binding",
    );
    assert_eq!(
        refused.r#type.as_deref(),
        Some("urn:ietf:params:acme:error:externalAccountRequired")
    );
    assert_eq!(refused.status, Some(403));
    assert_eq!(
        refused.detail.as_deref(),
        Some(
            "ACME server policy requires newAccount requests must include a value for the \
             'externalAccountBinding' field"
        )
    );

    // instant-acme takes the raw key; Pebble's config the same key in base64url (eab_key).
    let binding = ExternalAccountKey::new("kid-1".to_owned(), &key);
    new_account(&root, directory.clone(), Some(&binding))
        .await
        .expect("newAccount with the binding");

    let wrong = ExternalAccountKey::new("kid-1".to_owned(), b"not the key Pebble was given");
    let refused = problem(
        new_account(&root, directory.clone(), Some(&wrong)).await,
        "newAccount bound with another key",
    );
    assert_eq!(
        refused.r#type.as_deref(),
        Some("urn:ietf:params:acme:error:unauthorized")
    );
    let unknown = ExternalAccountKey::new("kid-2".to_owned(), &key);
    let refused = problem(
        new_account(&root, directory, Some(&unknown)).await,
        "newAccount bound with a kid Pebble does not know",
    );
    assert_eq!(
        refused.r#type.as_deref(),
        Some("urn:ietf:params:acme:error:unauthorized")
    );

    // Through a front too: the binding is signed for the front's newAccount URL, and Pebble
    // checks it against the Host the front forwards.
    let front = CaFront::start(&pebble);
    new_account(&root, front.directory_url(), Some(&binding))
        .await
        .expect("newAccount with the binding through the front");
}

#[tokio::test]
async fn two_pebbles_are_two_cas_each_with_its_own_test_ca() {
    let options = PebbleOptions {
        nonce_reject_percent: Some(0),
        ..PebbleOptions::default()
    };
    let primary = Pebble::start(options.clone());
    let fallback = Pebble::start(options);
    assert_ne!(primary.acme_port, fallback.acme_port);
    assert_ne!(primary.dns_port, fallback.dns_port);
    let read = |pebble: &Pebble| std::fs::read_to_string(pebble.ca_bundle()).expect("CA");
    assert_ne!(read(&primary), read(&fallback), "a test CA each");
    assert_ne!(
        primary.issuing_root_pem(),
        fallback.issuing_root_pem(),
        "an issuing root each"
    );

    // Trusting one Pebble's test CA is not trusting the other's.
    let primary_only = trusting(&primary.ca_bundle());
    let response = primary_only.get(primary.directory_url()).send().await;
    assert_eq!(response.expect("the primary").status(), 200);
    let refused = primary_only.get(fallback.directory_url()).send().await;
    assert!(refused.is_err(), "the fallback's certificate is untrusted");
    // A joint bundle trusts both.
    let both = trusting(&primary.ca_bundle_with(&[&fallback]));
    for pebble in [&primary, &fallback] {
        let response = both.get(pebble.directory_url()).send().await;
        assert_eq!(response.expect("each Pebble").status(), 200);
    }

    // Each is a CA of its own: an account at one is unknown to the other.
    let (_, pkcs8) = Key::generate_pkcs8().expect("an account key");
    let key = || {
        let key = Key::from_pkcs8_der(pkcs8.clone_key()).expect("the key");
        (key, PrivateKeyDer::Pkcs8(pkcs8.clone_key()))
    };
    let builder = |pebble: &Pebble| Account::builder_with_root(pebble.ca_bundle()).expect("client");
    let (created, _) = builder(&primary)
        .create_from_key(key(), primary.directory_url())
        .await
        .expect("an account at the primary");
    let (existing, _) = builder(&primary)
        .from_key(key(), primary.directory_url())
        .await
        .expect("the primary knows it");
    assert_eq!(created.id(), existing.id());
    let unknown = builder(&fallback)
        .from_key(key(), fallback.directory_url())
        .await;
    assert_eq!(
        problem(unknown, "the account at the fallback")
            .r#type
            .as_deref(),
        Some("urn:ietf:params:acme:error:accountDoesNotExist")
    );
}
