//! The HTTPS client of everything the service asks the CA, and the readiness probe that asks
//! the directory through it.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{AcmeClient, AcmeError};

impl AcmeClient {
    /// Checks that the directory answers with an ACME directory, for the readiness probe. A
    /// plain GET: it needs no account and sends nothing to the CA's rate-limited endpoints.
    pub async fn check_directory(&self) -> Result<(), String> {
        let directory = self.fetch_directory().await?;
        match directory.get("newOrder") {
            Some(_) => Ok(()),
            None => Err(format!("{} is not an ACME directory", self.directory_url)),
        }
    }

    /// The issuer domain names this CA recognises in CAA records (RFC 8555 §7.1.1
    /// `meta.caaIdentities`): the configured ones, else its directory's, read once (an empty
    /// list is an answer too: the CA lists none).
    pub async fn caa_identities(&self) -> Result<Vec<String>, AcmeError> {
        if !self.caa_identities.is_empty() {
            return Ok(self.caa_identities.clone());
        }
        self.directory_caa_identities
            .get_or_try_init(|| async {
                let directory = self.fetch_directory().await.map_err(|reason| {
                    AcmeError::unavailable(
                        "reading the directory's CAA identities",
                        std::io::Error::other(reason),
                    )
                })?;
                Ok(directory
                    .pointer("/meta/caaIdentities")
                    .and_then(serde_json::Value::as_array)
                    .map(|listed| {
                        listed
                            .iter()
                            .filter_map(serde_json::Value::as_str)
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default())
            })
            .await
            .cloned()
    }

    /// The directory, by a plain GET through the readiness probe's client.
    async fn fetch_directory(&self) -> Result<serde_json::Value, String> {
        use http_body_util::BodyExt as _;
        let url = &self.directory_url;
        let client = self
            .probe
            .get_or_init(|| acme_http_client(self.ca_bundle.as_deref()).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(Clone::clone)?;
        // `::http` is the crate: inside `acme`, a bare `http` would read as this module.
        let request = ::http::Request::get(url.as_str())
            .body(instant_acme::BodyWrapper::default())
            .map_err(|e| format!("{url} is not a URL: {e}"))?;
        let fetch = async {
            let response = client
                .request(request)
                .await
                .map_err(|e| format!("{url} did not answer: {e}"))?;
            if !response.status().is_success() {
                return Err(format!("{url} answered {}", response.status()));
            }
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("{url} broke off its answer: {e}"))?;
            Ok(body.to_bytes())
        };
        let body = tokio::time::timeout(PROBE_TIMEOUT, fetch)
            .await
            .map_err(|_| format!("{url} did not answer within {} s", PROBE_TIMEOUT.as_secs()))??;
        serde_json::from_slice(&body).map_err(|e| format!("{url} answered no JSON: {e}"))
    }

    /// The URL of the service's account at this CA (what RFC 8657's `accounturi` names):
    /// the stored account's, or one registered now.
    pub async fn account_url(&self) -> Result<String, AcmeError> {
        Ok(self.account().await?.id().to_owned())
    }
}

/// The HTTPS client of everything the service asks the CA.
pub(super) type AcmeHttpClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    instant_acme::BodyWrapper<bytes::Bytes>,
>;

/// The HTTPS client the ACME conversation goes through: instant-acme's own, except for
/// `TCP_NODELAY`. Its client leaves Nagle's algorithm on, and a JWS POST is written in two parts
/// (headers, then body), so every POST waited for the CA's delayed ACK of the first part: about
/// 40 ms per request, with several requests per certificate. Trusts `ca_bundle`'s roots when
/// given (a test CA such as Pebble), else the platform's.
pub(super) fn acme_http_client(
    ca_bundle: Option<&std::path::Path>,
) -> Result<AcmeHttpClient, instant_acme::Error> {
    use rustls::pki_types::pem::PemObject as _;
    let other = |error: Box<dyn std::error::Error + Send + Sync>| instant_acme::Error::Other(error);
    let tls = hyper_rustls::HttpsConnectorBuilder::new();
    let tls = match ca_bundle {
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for root in rustls::pki_types::CertificateDer::pem_file_iter(path)
                .map_err(|e| other(e.into()))?
            {
                roots
                    .add(root.map_err(|e| other(e.into()))?)
                    .map_err(|e| other(e.into()))?;
            }
            tls.with_tls_config(
                rustls::ClientConfig::builder()
                    .with_root_certificates(roots)
                    .with_no_client_auth(),
            )
        }
        None => tls
            .try_with_platform_verifier()
            .map_err(|e| other(e.into()))?,
    };
    let mut tcp = hyper_util::client::legacy::connect::HttpConnector::new();
    tcp.set_nodelay(true);
    tcp.enforce_http(false);
    let connector = tls
        .https_only()
        .enable_http1()
        .enable_http2()
        .wrap_connector(tcp);
    Ok(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(connector),
    )
}

tokio::task_local! {
    /// Where the CA's `Retry-After` of a refusal is noted for the request being made: instant-acme
    /// turns a refusal into a problem document and drops the header, and a rate limit is only
    /// honoured when its time is known. Set by the caller around the requests it makes
    /// ([`noting_retry_after`]).
    static RETRY_AFTER: std::cell::Cell<Option<DateTime<Utc>>>;
}

/// The longest wait the CA can impose through `Retry-After`: a longer one is taken as this. Let's
/// Encrypt's longest limit refills within a week; a value past that is a fault of the CA (or of a
/// proxy before it), and unbounded it overflowed the clock arithmetic of the scheduler and of
/// instant-acme's own polling.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// Runs `work`, and answers with its result the `Retry-After` of the last `429` or `503` the CA
/// answered while it ran.
pub(super) async fn noting_retry_after<T>(
    work: impl std::future::Future<Output = T>,
) -> (T, Option<DateTime<Utc>>) {
    RETRY_AFTER
        .scope(std::cell::Cell::new(None), async {
            let result = work.await;
            (result, RETRY_AFTER.with(std::cell::Cell::get))
        })
        .await
}

/// The `Retry-After` noted so far in the current [`noting_retry_after`] scope.
pub(super) fn retry_after_noted() -> Option<DateTime<Utc>> {
    RETRY_AFTER.try_with(std::cell::Cell::get).ok().flatten()
}

/// The client the ACME conversation goes through: [`acme_http_client`]'s, bounding every
/// `Retry-After` the CA sends (see [`retry_after_time`]) before instant-acme reads it, and noting
/// that of every `429` or `503` (see [`noting_retry_after`]).
pub(super) struct RetryAfterNoting(pub(super) AcmeHttpClient);

impl instant_acme::HttpClient for RetryAfterNoting {
    fn request(
        &self,
        request: ::http::Request<instant_acme::BodyWrapper<bytes::Bytes>>,
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<
                    Output = Result<instant_acme::BytesResponse, instant_acme::Error>,
                > + Send,
        >,
    > {
        let sent = instant_acme::HttpClient::request(&self.0, request);
        Box::pin(async move {
            let mut response = sent.await?;
            let headers = &mut response.parts.headers;
            let Some(value) = headers.get(::http::header::RETRY_AFTER) else {
                return Ok(response);
            };
            let now = Utc::now();
            let at = value
                .to_str()
                .ok()
                .and_then(|value| retry_after_time(value, now));
            // instant-acme reads the header too (renewal information, order polling) and adds
            // it to the clock unchecked: it only ever sees the bounded wait, in seconds, or no
            // header when the value made no sense.
            match at {
                Some(at) => {
                    let seconds = (at - now).num_seconds().max(0).to_string();
                    if let Ok(bounded) = ::http::HeaderValue::from_str(&seconds) {
                        headers.insert(::http::header::RETRY_AFTER, bounded);
                    }
                }
                None => {
                    headers.remove(::http::header::RETRY_AFTER);
                }
            }
            let status = response.parts.status.as_u16();
            if let (Some(at), 429 | 503) = (at, status) {
                // Outside a noting scope nobody asked: the header is dropped as before.
                let _ = RETRY_AFTER.try_with(|noted| noted.set(Some(at)));
            }
            Ok(response)
        })
    }
}

/// A `Retry-After` value (seconds, or an HTTP date) as a time from `now`, bounded to
/// `now..=now + MAX_RETRY_AFTER`; `None` for a value that is neither.
pub fn retry_after_time(value: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let value = value.trim();
    let longest = chrono::Duration::from_std(MAX_RETRY_AFTER).unwrap_or(chrono::Duration::MAX);
    let wait = match value.parse::<u64>() {
        Ok(seconds) => {
            chrono::Duration::from_std(Duration::from_secs(seconds).min(MAX_RETRY_AFTER))
                .unwrap_or(longest)
        }
        // A number too large for u64 is still a number of seconds: the longest wait.
        Err(_) if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => longest,
        Err(_) => {
            let at = DateTime::parse_from_rfc2822(value)
                .ok()?
                .with_timezone(&Utc);
            at.signed_duration_since(now)
                .clamp(chrono::Duration::zero(), longest)
        }
    };
    Some(now + wait)
}

/// How long the readiness probe waits for the directory.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-06T12:00:00Z")
            .expect("a time")
            .with_timezone(&Utc)
    }

    fn longest() -> chrono::Duration {
        chrono::Duration::from_std(MAX_RETRY_AFTER).expect("a week")
    }

    #[test]
    fn a_retry_after_in_seconds_is_a_time_that_many_seconds_on() {
        let at = retry_after_time(" 120 ", now()).expect("a time");
        assert_eq!(at - now(), chrono::Duration::seconds(120));
    }

    #[test]
    fn a_retry_after_of_the_largest_number_of_seconds_waits_a_week_and_does_not_overflow() {
        for value in [
            u64::MAX.to_string(),
            "99999999999999999999999999".to_owned(),
            (u64::MAX / 2).to_string(),
        ] {
            let at = retry_after_time(&value, now()).expect("a time");
            assert_eq!(at - now(), longest(), "{value}");
        }
    }

    #[test]
    fn a_retry_after_date_far_in_the_future_waits_a_week() {
        let at = retry_after_time("Fri, 31 Dec 9999 23:59:59 GMT", now()).expect("a time");
        assert_eq!(at - now(), longest());
    }

    #[test]
    fn a_retry_after_date_in_the_past_means_now() {
        let at = retry_after_time("Fri, 31 Dec 1999 23:59:59 GMT", now()).expect("a time");
        assert_eq!(at, now());
    }

    #[test]
    fn a_retry_after_date_within_the_week_is_taken_as_it_is() {
        let at = retry_after_time("Sun, 06 Dec 2026 13:00:00 GMT", now()).expect("a time");
        assert_eq!(at - now(), chrono::Duration::hours(1));
    }

    #[test]
    fn a_retry_after_that_is_neither_seconds_nor_a_date_is_ignored() {
        for value in ["", "soon", "-5", "1.5", "Fri, 99 Foo 2026"] {
            assert_eq!(retry_after_time(value, now()), None, "{value:?}");
        }
    }
}
