//! An ACME Renewal Information (ARI, RFC 9773) front for Pebble, which (2.4) has none: the
//! renewal tests need suggested windows they choose.
//!
//! What the front changes relative to Pebble, and nothing else:
//!
//! - its `GET /dir` answers Pebble's own directory, fetched from Pebble on every request, with
//!   one key added: `renewalInfo`, pointing at the front's `/renewal-info`;
//! - its `GET /renewal-info/{certid}` answers the suggested window the test set
//!   ([`AriFront::set_window`], [`AriFront::set_window_for`]), the error the test chose
//!   ([`AriFront::answer_error`]), or a 404 problem while the test set nothing.
//!
//! Anything else (another path, a method other than GET, a malformed certid) gets an ACME problem
//! from the front; it forwards nothing but the directory GET.
//!
//! Every other URL in the directory stays Pebble's own, so signed requests never pass through
//! the front: a JWS names the URL it is posted to and Pebble checks that name against the URL it
//! received, and every signed request goes to Pebble directly. The front serves Pebble's own
//! HTTPS certificate (`localhost`/`127.0.0.1`, from the test CA), so a client that trusts Pebble
//! through `pebble.ca_bundle()` trusts the front too.

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};
use tokio_rustls::rustls;

use crate::pebble::Pebble;
use crate::process::free_port;

/// Where the renewal information lives on the front; a certid follows after a `/`.
const RENEWAL_INFO_PATH: &str = "/renewal-info";

/// A suggested window as the test set it.
#[derive(Clone)]
struct Window {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    explanation_url: Option<String>,
    retry_after_secs: u64,
}

/// What the test chose, and the certids asked for.
#[derive(Default)]
struct Choices {
    /// The window of every certid without one of its own.
    window: Option<Window>,
    /// Windows of single certids, over `window`.
    windows_for: HashMap<String, Window>,
    /// The status every renewal-info request answers, until a window is set again.
    error: Option<StatusCode>,
    requests: Vec<String>,
}

/// What the server's connections share with the test's handle.
struct Shared {
    pebble_directory_url: String,
    renewal_info_url: String,
    /// Trusts the test CA only: the one Pebble's HTTPS certificate comes from.
    client: reqwest::Client,
    choices: Mutex<Choices>,
}

impl Shared {
    /// The choices; a test that panicked while holding them leaves them usable.
    fn choices(&self) -> MutexGuard<'_, Choices> {
        self.choices.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// An HTTPS front for Pebble adding ARI with the windows the test sets; stops on drop.
pub struct AriFront {
    port: u16,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl AriFront {
    /// Starts the front for `pebble` on a free loopback port, on a thread and tokio runtime of
    /// its own (a test's runtime may end before the front does). Listening when it returns.
    pub fn start(pebble: &Pebble) -> AriFront {
        let ca = std::fs::read(pebble.ca_bundle()).expect("read the test CA");
        let (cert, key) = pebble.https_identity();
        let tls = server_tls(&cert, &key);
        let (listener, port) = bind();
        let shared = Arc::new(Shared {
            pebble_directory_url: pebble.directory_url(),
            renewal_info_url: format!("https://127.0.0.1:{port}{RENEWAL_INFO_PATH}"),
            client: trusting_test_ca(&ca),
            choices: Mutex::new(Choices::default()),
        });
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let serving = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(format!("ari-front-{port}"))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("the ARI front's runtime");
                runtime.block_on(serve(listener, tls, serving, stopped));
            })
            .expect("spawn the ARI front's thread");
        AriFront {
            port,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The directory URL to give the client under test (`ACME_DIRECTORY_URL`).
    pub fn directory_url(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.port)
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
        let mut choices = self.shared.choices();
        choices.window = Some(Window {
            start,
            end,
            explanation_url: explanation_url.map(str::to_owned),
            retry_after_secs,
        });
        choices.error = None;
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
        let mut choices = self.shared.choices();
        choices.windows_for.insert(
            certid.to_owned(),
            Window {
                start,
                end,
                explanation_url: explanation_url.map(str::to_owned),
                retry_after_secs,
            },
        );
        choices.error = None;
    }

    /// Answers every renewal-info request with `status` (e.g. 500) and an ACME problem, until a
    /// window is set again. Panics on a status that is no HTTP error.
    pub fn answer_error(&self, status: u16) {
        let status = StatusCode::from_u16(status)
            .ok()
            .filter(|status| status.is_client_error() || status.is_server_error())
            .unwrap_or_else(|| panic!("{status} is no HTTP error status"));
        self.shared.choices().error = Some(status);
    }

    /// The certids asked for at `/renewal-info/{certid}`, in order, answered or not.
    pub fn requests(&self) -> Vec<String> {
        self.shared.choices().requests.clone()
    }
}

impl Drop for AriFront {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A listener on a free loopback port, bound before `start` returns so the first request finds
/// it; another port if one was taken between `free_port` and the bind.
fn bind() -> (std::net::TcpListener, u16) {
    for _ in 0..10 {
        let port = free_port();
        if let Ok(listener) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            listener
                .set_nonblocking(true)
                .expect("a non-blocking listener for tokio");
            return (listener, port);
        }
    }
    panic!("the ARI front found no free port in 10 attempts");
}

/// The server's TLS: Pebble's certificate and key, HTTP/1.1 only (all the server speaks).
fn server_tls(cert: &Path, key: &Path) -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(Iterator::collect)
        .expect("read Pebble's HTTPS certificate");
    let key = PrivateKeyDer::from_pem_file(key).expect("read Pebble's HTTPS key");
    // The provider is named: rustls here has both aws-lc-rs and ring (reqwest's), so it has no
    // default to pick.
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .expect("Pebble's certificate and key match");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

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

/// Accepts connections until `stopped` fires (or its sender is dropped).
async fn serve(
    listener: std::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    shared: Arc<Shared>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = &mut stopped => return,
        };
        let Ok((tcp, _)) = accepted else {
            // Out of descriptors or the like: wait a little rather than spin.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let acceptor = acceptor.clone();
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            // A client that gives up in the handshake ends its own connection only.
            let Ok(stream) = acceptor.accept(tcp).await else {
                return;
            };
            let service = hyper::service::service_fn(move |request| {
                let shared = Arc::clone(&shared);
                async move { Ok::<_, Infallible>(answer(&shared, request).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Routes one request: `GET /dir` and `GET /renewal-info/{certid}`; anything else is a problem.
async fn answer(shared: &Shared, request: Request<Incoming>) -> Response<String> {
    if request.method() != Method::GET {
        return problem(
            StatusCode::METHOD_NOT_ALLOWED,
            "the ARI front answers GET only; signed requests go to Pebble",
        );
    }
    let path = request.uri().path();
    if path == "/dir" {
        return directory(shared).await;
    }
    match path
        .strip_prefix(RENEWAL_INFO_PATH)
        .and_then(|rest| rest.strip_prefix('/'))
    {
        Some(certid) if !certid.is_empty() => renewal_info(shared, certid),
        _ => problem(
            StatusCode::NOT_FOUND,
            &format!(
                "no {path} here: the ARI front serves /dir and {RENEWAL_INFO_PATH}/{{certid}}"
            ),
        ),
    }
}

/// Pebble's directory with `renewalInfo` added, or a 502 problem when Pebble did not answer one.
async fn directory(shared: &Shared) -> Response<String> {
    let url = &shared.pebble_directory_url;
    let fetched = async {
        let response = shared
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| format!("did not answer: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("answered {}", response.status()));
        }
        response
            .json::<Value>()
            .await
            .map_err(|e| format!("answered no JSON: {e}"))
    };
    match fetched.await {
        Ok(Value::Object(mut directory)) => {
            directory.insert(
                "renewalInfo".to_owned(),
                Value::String(shared.renewal_info_url.clone()),
            );
            respond(
                StatusCode::OK,
                "application/json",
                &Value::Object(directory),
                None,
            )
        }
        Ok(other) => problem(
            StatusCode::BAD_GATEWAY,
            &format!("Pebble's directory {url} is no JSON object: {other}"),
        ),
        Err(error) => problem(
            StatusCode::BAD_GATEWAY,
            &format!("Pebble's directory {url} {error}"),
        ),
    }
}

/// The answer for `certid` (RFC 9773 §4.2), recording that it was asked for.
fn renewal_info(shared: &Shared, certid: &str) -> Response<String> {
    let mut choices = shared.choices();
    choices.requests.push(certid.to_owned());
    if let Some(status) = choices.error {
        return problem(status, "the test made the ARI front answer errors");
    }
    // A certid is base64url(AKI keyIdentifier) "." base64url(serial), unpadded (RFC 9773
    // §4.1); a CA refuses anything else, and so does the front, so a client's bad certid shows.
    let is_base64url = |part: &str| {
        !part.is_empty()
            && part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    let well_formed = certid
        .split_once('.')
        .is_some_and(|(aki, serial)| is_base64url(aki) && is_base64url(serial));
    if !well_formed {
        return problem(
            StatusCode::BAD_REQUEST,
            &format!("{certid:?} is no base64url(AKI keyIdentifier).base64url(serial)"),
        );
    }
    let Some(window) = choices.windows_for.get(certid).or(choices.window.as_ref()) else {
        return problem(
            StatusCode::NOT_FOUND,
            &format!("the test set no suggested window for {certid}"),
        );
    };
    let mut body = json!({"suggestedWindow": {
        "start": window.start.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        "end": window.end.to_rfc3339_opts(SecondsFormat::AutoSi, true),
    }});
    if let Some(explanation_url) = &window.explanation_url {
        body["explanationURL"] = Value::String(explanation_url.clone());
    }
    respond(
        StatusCode::OK,
        "application/json",
        &body,
        Some(window.retry_after_secs),
    )
}

/// An ACME problem document (RFC 8555 §6.7) with `status`.
fn problem(status: StatusCode, detail: &str) -> Response<String> {
    let kind = match status {
        StatusCode::TOO_MANY_REQUESTS => "rateLimited",
        status if status.is_client_error() => "malformed",
        _ => "serverInternal",
    };
    let body = json!({
        "type": format!("urn:ietf:params:acme:error:{kind}"),
        "detail": detail,
        "status": status.as_u16(),
    });
    respond(status, "application/problem+json", &body, None)
}

/// A JSON response, with `Retry-After` in seconds when given.
fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: &Value,
    retry_after_secs: Option<u64>,
) -> Response<String> {
    let mut response = Response::new(body.to_string());
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Some(secs) = retry_after_secs {
        headers.insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PebbleOptions;

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
        let renewal_info = format!("https://127.0.0.1:{}/renewal-info", front.port);

        // The directory is Pebble's, one key added: signed requests go to Pebble's own URLs.
        let (_, _, pebble_directory) = get(&client, &pebble.directory_url()).await;
        let (status, _, mut directory) = get(&client, &front.directory_url()).await;
        assert_eq!(status, 200);
        assert_eq!(directory["renewalInfo"], json!(renewal_info));
        directory
            .as_object_mut()
            .expect("an object")
            .remove("renewalInfo");
        assert_eq!(directory, pebble_directory);
        assert!(pebble_directory["newOrder"].as_str().is_some_and(
            |url| url.starts_with(&format!("https://127.0.0.1:{}/", pebble.acme_port))
        ));

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
            .expect("newAccount, signed for Pebble's URL from the front's directory, is accepted");
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
    }
}
