//! An ACME Renewal Information (ARI, RFC 9773) front for Pebble, which (2.4) has none: the
//! renewal tests need suggested windows they choose, and a CA that takes renewal orders the way an
//! ARI-capable CA does.
//!
//! [`AriFront`] is a [`CaFront`] started with ARI, under the names the renewal tests know: what
//! the front changes relative to Pebble is told there. With ARI:
//!
//! - its `GET /renewal-info/{certid}` answers the suggested window the test set
//!   ([`AriFront::set_window`], [`AriFront::set_window_for`]), the error the test chose
//!   ([`AriFront::answer_error`]), or a 404 problem while the test set nothing; it is the front's
//!   own (no request under `/renewal-info` reaches Pebble), and anything there but a GET of a
//!   well-formed certid gets an ACME problem;
//! - a successful `GET` of the directory lists one key more than Pebble's: `renewalInfo`, the
//!   front's `/renewal-info`;
//! - a successful newOrder response echoes the request's `replaces` (RFC 9773 §5), which an
//!   ARI-capable CA does and Pebble 2.4 does not (it ignores the field), when Pebble's order has
//!   none; the front reads the signed payload to know it ([`AriFront::replaces_seen`]).

use chrono::{DateTime, Utc};

use crate::ca_front::CaFront;
use crate::pebble::Pebble;

/// An HTTPS reverse proxy for Pebble adding ARI with the windows the test sets; stops on drop.
/// [`AriFront::front`] injects the faults of a [`CaFront`] as well.
pub struct AriFront(CaFront);

impl AriFront {
    /// Starts the front for `pebble` on a free loopback port, on a thread and tokio runtime of
    /// its own (a test's runtime may end before the front does). Listening when it returns.
    pub fn start(pebble: &Pebble) -> AriFront {
        AriFront(CaFront::start_with_ari(pebble))
    }

    /// The directory URL to give the client under test (`ACME_DIRECTORY`).
    pub fn directory_url(&self) -> String {
        self.0.directory_url()
    }

    /// The [`CaFront`] this is, for its faults, outages and profiles.
    pub fn front(&self) -> &CaFront {
        &self.0
    }

    /// Answers this window for every certid without a window of its own, with `Retry-After:
    /// retry_after_secs`; ends [`AriFront::answer_error`].
    pub fn set_window(
        &self,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        explanation_url: Option<&str>,
        retry_after_secs: u64,
    ) {
        self.0
            .set_window(start, end, explanation_url, retry_after_secs);
    }

    /// Answers this window for `certid` alone, over [`AriFront::set_window`]'s; ends
    /// [`AriFront::answer_error`].
    pub fn set_window_for(
        &self,
        certid: &str,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        explanation_url: Option<&str>,
        retry_after_secs: u64,
    ) {
        self.0
            .set_window_for(certid, start, end, explanation_url, retry_after_secs);
    }

    /// Answers every renewal-info request with `status` (e.g. 500) and an ACME problem, until a
    /// window is set again. Panics on a status that is no HTTP error.
    pub fn answer_error(&self, status: u16) {
        self.0.answer_renewal_info_error(status);
    }

    /// The certids asked for at `/renewal-info/{certid}`, in order, answered or not.
    pub fn requests(&self) -> Vec<String> {
        self.0.renewal_info_requests()
    }

    /// The `replaces` certids of the newOrder requests that had one, in order, whatever Pebble
    /// answered them.
    pub fn replaces_seen(&self) -> Vec<String> {
        self.0.replaces_seen()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
    use serde_json::{json, Value};
    use tokio_rustls::rustls;

    use super::*;
    use crate::PebbleOptions;

    /// An HTTPS client that trusts the test CA (`ca` in PEM) and nothing else.
    fn trusting_test_ca(ca: &[u8]) -> reqwest::Client {
        reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(ca).expect("the test CA is PEM"))
            // Loopback only: a proxy from the environment must not stand in between.
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("HTTPS client")
    }

    /// GETs `url` and gives the status, the `Retry-After` header and the JSON body.
    async fn get(client: &reqwest::Client, url: &str) -> (u16, Option<String>, Value) {
        let response = client
            .get(url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .map(|value| value.to_str().expect("ASCII").to_owned());
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .map(|value| value.to_str().expect("ASCII").to_owned());
        let body: Value = response.json().await.expect("JSON body");
        let expected_type = if status == 200 {
            "application/json"
        } else {
            "application/problem+json"
        };
        // Pebble adds `; charset=utf-8`.
        assert!(
            content_type.is_some_and(|value| value.starts_with(expected_type)),
            "{url}: {body}"
        );
        (status, retry_after, body)
    }

    #[tokio::test]
    async fn the_front_adds_renewal_info_and_answers_the_windows_the_test_sets() {
        let pebble = Pebble::start(PebbleOptions::default());
        let front = AriFront::start(&pebble);
        let client = trusting_test_ca(&std::fs::read(pebble.ca_bundle()).expect("test CA"));
        let renewal_info = format!("https://127.0.0.1:{}/renewal-info", front.front().port());

        // The directory is Pebble's on the front: the same keys, one added, each URL with the
        // same path on the front's host; the rest (`meta`) as it is.
        let (_, _, pebble_directory) = get(&client, &pebble.directory_url()).await;
        let (status, _, mut directory) = get(&client, &front.directory_url()).await;
        assert_eq!(status, 200);
        assert_eq!(directory["renewalInfo"], json!(renewal_info));
        let directory = directory.as_object_mut().expect("an object");
        directory.remove("renewalInfo");
        let pebble_directory = pebble_directory.as_object().expect("an object");
        assert_eq!(
            directory.keys().collect::<Vec<_>>(),
            pebble_directory.keys().collect::<Vec<_>>()
        );
        let (pebble_origin, front_origin) = (
            format!("https://127.0.0.1:{}/", pebble.acme_port),
            format!("https://127.0.0.1:{}/", front.front().port()),
        );
        for (key, pebble_value) in pebble_directory {
            match pebble_value.as_str() {
                Some(pebble_url) => {
                    let path = pebble_url
                        .strip_prefix(&pebble_origin)
                        .unwrap_or_else(|| panic!("{key}: {pebble_url} is not on Pebble"));
                    assert_eq!(
                        directory[key],
                        json!(format!("{front_origin}{path}")),
                        "{key}"
                    );
                }
                None => assert_eq!(&directory[key], pebble_value, "{key}"),
            }
        }
        assert!(directory.contains_key("newOrder") && directory.contains_key("newNonce"));

        // Anything else passes to Pebble as it is: a new nonce, and Pebble's own 404.
        let nonce = client
            .head(directory["newNonce"].as_str().expect("a URL"))
            .send()
            .await
            .expect("HEAD newNonce");
        assert_eq!(nonce.status(), 200);
        assert!(nonce.headers().contains_key("replay-nonce"));
        assert_eq!(
            nonce
                .headers()
                .get("link")
                .map(|v| v.to_str().expect("ASCII")),
            Some(format!("<{}>;rel=\"index\"", front.directory_url()).as_str())
        );
        let missing = client
            .get(format!("{front_origin}no-such-path"))
            .send()
            .await
            .expect("GET a path Pebble lacks");
        assert_eq!(missing.status(), 404);

        // Nothing set yet: a 404 problem.
        let (status, _, body) = get(&client, &format!("{renewal_info}/abc.def")).await;
        assert_eq!(status, 404, "{body}");
        assert_eq!(body["type"], "urn:ietf:params:acme:error:malformed");

        let start = DateTime::parse_from_rfc3339("2030-01-02T04:00:00Z")
            .expect("time")
            .to_utc();
        let end = start + chrono::Duration::days(1);
        front.set_window(start, end, Some("https://example.test/why"), 3600);
        let (status, retry_after, body) = get(&client, &format!("{renewal_info}/abc.def")).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(retry_after.as_deref(), Some("3600"));
        assert_eq!(
            body,
            json!({
                "suggestedWindow": {"start": "2030-01-02T04:00:00Z", "end": "2030-01-03T04:00:00Z"},
                "explanationURL": "https://example.test/why",
            })
        );

        // One certid's own window, over the window of all; no explanation, none in the answer.
        front.set_window_for("xyz.uvw", end, end + chrono::Duration::hours(1), None, 60);
        let (_, retry_after, body) = get(&client, &format!("{renewal_info}/xyz.uvw")).await;
        assert_eq!(retry_after.as_deref(), Some("60"));
        assert_eq!(
            body,
            json!({"suggestedWindow": {"start": "2030-01-03T04:00:00Z", "end": "2030-01-03T05:00:00Z"}})
        );

        // Errors until a window is set again.
        front.answer_error(500);
        let (status, retry_after, body) = get(&client, &format!("{renewal_info}/abc.def")).await;
        assert_eq!((status, retry_after), (500, None), "{body}");
        assert_eq!(body["type"], "urn:ietf:params:acme:error:serverInternal");
        front.set_window(start, end, None, 10);
        let (status, _, _) = get(&client, &format!("{renewal_info}/abc.def")).await;
        assert_eq!(status, 200);

        // No certid, or a malformed one.
        let (status, _, _) = get(&client, &renewal_info).await;
        assert_eq!(status, 404);
        let (status, _, _) = get(&client, &format!("{renewal_info}/no-dot")).await;
        assert_eq!(status, 400);

        assert_eq!(
            front.requests(),
            ["abc.def", "abc.def", "xyz.uvw", "abc.def", "abc.def", "no-dot"]
        );

        // Dropped, it stops listening.
        drop(front);
        assert!(client.get(&renewal_info).send().await.is_err());
    }

    #[tokio::test]
    async fn instant_acme_reads_the_window_through_the_front() {
        // instant-acme's client takes the process's provider; rustls has two here.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        // No rejected nonces: this test is about the front, not about retries.
        let pebble = Pebble::start(PebbleOptions {
            nonce_reject_percent: Some(0),
            ..PebbleOptions::default()
        });
        let front = AriFront::start(&pebble);
        let start = DateTime::parse_from_rfc3339("2030-01-02T04:00:00Z")
            .expect("time")
            .to_utc();
        let end = start + chrono::Duration::days(2);
        front.set_window(start, end, Some("https://example.test/why"), 600);

        let (account, _credentials) = instant_acme::Account::builder_with_root(pebble.ca_bundle())
            .expect("an ACME client trusting the test CA")
            .create(
                &instant_acme::NewAccount {
                    contact: &[],
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                front.directory_url(),
                None,
            )
            .await
            .expect(
                "newAccount, signed for the front's URL and forwarded with its Host, is accepted",
            );
        let certid = instant_acme::CertificateIdentifier {
            authority_key_identifier: "aki".into(),
            serial: "AIQ".into(),
        };
        let (info, retry_after) = account
            .renewal_info(&certid)
            .await
            .expect("the suggested window");
        assert_eq!(
            info.suggested_window.start.unix_timestamp(),
            start.timestamp()
        );
        assert_eq!(info.suggested_window.end.unix_timestamp(), end.timestamp());
        assert_eq!(
            info.explanation_url.as_deref(),
            Some("https://example.test/why")
        );
        assert!(
            (590..=600).contains(&retry_after.as_secs()),
            "{retry_after:?}"
        );

        front.answer_error(503);
        assert!(account.renewal_info(&certid).await.is_err());
        assert_eq!(front.requests(), ["aki.AIQ", "aki.AIQ"]);

        // A renewal order names the certificate it replaces; Pebble ignores the field and the
        // front echoes it, as instant-acme checks ("replaces field mismatch" without).
        let identifiers = [instant_acme::Identifier::Dns("renewal.example.test".into())];
        let mut order = account
            .new_order(&instant_acme::NewOrder::new(&identifiers).replaces(certid))
            .await
            .expect("newOrder with replaces, echoed by the front");
        assert_eq!(order.state().status, instant_acme::OrderStatus::Pending);
        assert!(
            order
                .url()
                .starts_with(&format!("https://127.0.0.1:{}/", front.front().port())),
            "{}",
            order.url()
        );
        assert_eq!(front.replaces_seen(), ["aki.AIQ"]);

        // An order that replaces nothing gets Pebble's order as it is, with nothing recorded.
        let mut order = account
            .new_order(&instant_acme::NewOrder::new(&identifiers))
            .await
            .expect("newOrder");
        assert_eq!(order.state().replaces, None);
        assert_eq!(front.replaces_seen(), ["aki.AIQ"]);
    }
}
