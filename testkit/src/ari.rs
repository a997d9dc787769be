//! An ACME Renewal Information (ARI, RFC 9773) front for Pebble, which (2.4) has none: the
//! renewal tests need suggested windows they choose, and a CA that takes renewal orders the way an
//! ARI-capable CA does.
//!
//! The front is a reverse proxy: every URL the client uses is on the front, which forwards each
//! request to Pebble over HTTPS. What the front changes relative to Pebble, and nothing else:
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
//!   none; the front reads the signed payload to know it ([`AriFront::replaces_seen`]);
//! - when Pebble does not answer, the front answers a 502 problem (a 400 one when it could not
//!   read the client's request).
//!
//! Every other request and response passes through unchanged: method, path and query, headers
//! (`Host` included), body; status, headers (`Replay-Nonce`, `Location`, `Link`, `Retry-After`),
//! body. Only the hop-by-hop headers (`Connection`, `Keep-Alive`, `Transfer-Encoding`, ...)
//! belong to each connection rather than pass, and a body the front changed gets its own
//! `Content-Length`. Signed requests are never altered: a JWS signs its payload and the URL it is
//! posted to.
//!
//! Why the front's URLs work: Pebble builds every URL it answers (the directory's, `Location`,
//! `Link`, the order's, authorization's, challenge's, finalize and certificate URLs, the account
//! URL it expects as `kid`) from the request's `Host` (`relativeEndpoint` in its `wfe/wfe.go`),
//! and it checks a JWS's `url` against `https://` + `Host` + the request's path. With the
//! client's `Host` forwarded (the front's `127.0.0.1:{port}`), Pebble answers URLs on the front
//! and accepts the signatures the client made for the front's URLs.
//!
//! The front serves Pebble's own HTTPS certificate (`localhost`/`127.0.0.1`, from the test CA),
//! so a client that trusts Pebble through `pebble.ca_bundle()` trusts the front too.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{
    HeaderMap, HeaderName, HeaderValue, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HOST,
    RETRY_AFTER, TE, TRANSFER_ENCODING, UPGRADE,
};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};
use tokio_rustls::rustls;

use crate::pebble::Pebble;
use crate::process::free_port;

/// Where the renewal information lives on the front; a certid follows after a `/`.
const RENEWAL_INFO_PATH: &str = "/renewal-info";

/// How long one request to Pebble may take, connection and body included.
const PEBBLE_TIMEOUT: Duration = Duration::from_secs(30);

/// What the front answers and sends: a body of bytes, whole.
type Body = Full<Bytes>;

/// A suggested window as the test set it.
#[derive(Clone)]
struct Window {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    explanation_url: Option<String>,
    retry_after_secs: u64,
}

/// What the test chose, and what the front saw.
#[derive(Default)]
struct Choices {
    /// The window of every certid without one of its own.
    window: Option<Window>,
    /// Windows of single certids, over `window`.
    windows_for: HashMap<String, Window>,
    /// The status every renewal-info request answers, until a window is set again.
    error: Option<StatusCode>,
    requests: Vec<String>,
    /// The `replaces` of newOrder requests, in order.
    replaces: Vec<String>,
    /// The path of the directory's `newOrder`, from the last directory the front served.
    new_order_path: Option<String>,
}

/// What the server's connections share with the test's handle.
struct Shared {
    /// Pebble's ACME address, and the path of its directory.
    pebble: SocketAddr,
    directory_path: String,
    /// `renewalInfo` for a request without `Host`.
    renewal_info_url: String,
    /// Trusts the test CA only: the one Pebble's HTTPS certificate comes from.
    pebble_tls: tokio_rustls::TlsConnector,
    choices: Mutex<Choices>,
}

impl Shared {
    /// The choices; a test that panicked while holding them leaves them usable.
    fn choices(&self) -> MutexGuard<'_, Choices> {
        self.choices.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// An HTTPS reverse proxy for Pebble adding ARI with the windows the test sets; stops on drop.
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
        let directory_url = pebble.directory_url();
        let directory_path = directory_url
            .strip_prefix("https://")
            .and_then(|rest| rest.find('/').map(|slash| rest[slash..].to_owned()))
            .unwrap_or_else(|| panic!("{directory_url} is no https URL with a path"));
        let shared = Arc::new(Shared {
            pebble: SocketAddr::from(([127, 0, 0, 1], pebble.acme_port)),
            directory_path,
            renewal_info_url: format!("https://127.0.0.1:{port}{RENEWAL_INFO_PATH}"),
            pebble_tls: client_tls(&ca),
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
        format!(
            "https://127.0.0.1:{}{}",
            self.port, self.shared.directory_path
        )
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

    /// The `replaces` certids of the newOrder requests that had one, in order, whatever Pebble
    /// answered them.
    pub fn replaces_seen(&self) -> Vec<String> {
        self.shared.choices().replaces.clone()
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

/// The TLS provider, named: rustls here has both aws-lc-rs and ring (reqwest's), so it has no
/// default to pick.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The server's TLS: Pebble's certificate and key, HTTP/1.1 only (all the server speaks).
fn server_tls(cert: &Path, key: &Path) -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(Iterator::collect)
        .expect("read Pebble's HTTPS certificate");
    let key = PrivateKeyDer::from_pem_file(key).expect("read Pebble's HTTPS key");
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("Pebble's certificate and key match");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// The client's TLS to Pebble: the test CA (`ca` in PEM) as the only root, HTTP/1.1.
fn client_tls(ca: &[u8]) -> tokio_rustls::TlsConnector {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca) {
        roots
            .add(cert.expect("the test CA is PEM"))
            .expect("the test CA is a CA certificate");
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
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

/// Routes one request: `/renewal-info` and below are the front's, anything else goes to Pebble.
async fn answer(shared: &Shared, request: Request<Incoming>) -> Response<Body> {
    let path = request.uri().path();
    let Some(rest) = path.strip_prefix(RENEWAL_INFO_PATH) else {
        return proxy(shared, request).await;
    };
    if !(rest.is_empty() || rest.starts_with('/')) {
        // `/renewal-infoX` is no renewal information: Pebble's, like any other path.
        return proxy(shared, request).await;
    }
    if request.method() != Method::GET {
        return problem(
            StatusCode::METHOD_NOT_ALLOWED,
            "the ARI front answers renewal information to GET only",
        );
    }
    match rest.strip_prefix('/') {
        Some(certid) if !certid.is_empty() => renewal_info(shared, certid),
        _ => problem(
            StatusCode::NOT_FOUND,
            &format!("no {path} here: renewal information is at {RENEWAL_INFO_PATH}/{{certid}}"),
        ),
    }
}

/// Forwards `request` to Pebble and answers Pebble's response, with `renewalInfo` added to the
/// directory and `replaces` echoed in a newOrder response; a 502 problem when Pebble did not
/// answer.
async fn proxy(shared: &Shared, request: Request<Incoming>) -> Response<Body> {
    let (mut parts, body) = request.into_parts();
    let body = match body.collect().await {
        Ok(body) => body.to_bytes(),
        Err(error) => {
            return problem(
                StatusCode::BAD_REQUEST,
                &format!("the ARI front could not read the request's body: {error}"),
            )
        }
    };
    let path = parts.uri.path().to_owned();
    let is_directory = parts.method == Method::GET && path == shared.directory_path;
    let is_new_order = parts.method == Method::POST
        && shared.choices().new_order_path.as_deref() == Some(path.as_str());
    let replaces = is_new_order.then(|| signed_replaces(&body)).flatten();
    if let Some(replaces) = &replaces {
        shared.choices().replaces.push(replaces.clone());
    }
    let renewal_info_url = parts
        .headers
        .get(HOST)
        .and_then(|host| host.to_str().ok())
        .map_or_else(
            || shared.renewal_info_url.clone(),
            |host| format!("https://{host}{RENEWAL_INFO_PATH}"),
        );
    remove_hop_by_hop(&mut parts.headers);
    let forwarded = Request::from_parts(parts, Full::new(body));
    let (mut parts, body) =
        match tokio::time::timeout(PEBBLE_TIMEOUT, send_to_pebble(shared, forwarded)).await {
            Ok(Ok(response)) => response,
            Ok(Err(error)) => {
                return problem(
                    StatusCode::BAD_GATEWAY,
                    &format!("Pebble at {} did not answer {path}: {error}", shared.pebble),
                )
            }
            Err(_) => {
                return problem(
                    StatusCode::BAD_GATEWAY,
                    &format!(
                        "Pebble at {} did not answer {path} in {PEBBLE_TIMEOUT:?}",
                        shared.pebble
                    ),
                )
            }
        };
    remove_hop_by_hop(&mut parts.headers);
    let changed = if !parts.status.is_success() {
        None
    } else if is_directory {
        let changed = with_member(&body, "renewalInfo", &renewal_info_url, true);
        if let Some(new_order) = json_member(&body, "newOrder") {
            shared.choices().new_order_path = Some(url_path(&new_order).to_owned());
        }
        changed
    } else {
        replaces.and_then(|replaces| with_member(&body, "replaces", &replaces, false))
    };
    let body = match changed {
        Some(changed) => {
            // hyper gives the new body its own length.
            parts.headers.remove(CONTENT_LENGTH);
            Bytes::from(changed)
        }
        None => body,
    };
    Response::from_parts(parts, Full::new(body))
}

/// One request to Pebble on a connection of its own, and Pebble's response, body read.
async fn send_to_pebble(
    shared: &Shared,
    request: Request<Body>,
) -> Result<(hyper::http::response::Parts, Bytes), String> {
    let tcp = tokio::net::TcpStream::connect(shared.pebble)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let name = rustls::pki_types::ServerName::from(shared.pebble.ip());
    let tls = shared
        .pebble_tls
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    // hyper's connection API sends the request as it is: the client's `Host`, no header added.
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .map_err(|e| format!("HTTP: {e}"))?;
    tokio::spawn(connection);
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    Ok((parts, body))
}

/// Removes the headers of one connection (RFC 9110 §7.6.1): those `Connection` names, and
/// `Connection`, `Keep-Alive`, `Proxy-Connection`, `TE`, `Transfer-Encoding`, `Upgrade`.
fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [CONNECTION, TE, TRANSFER_ENCODING, UPGRADE] {
        headers.remove(name);
    }
    for name in ["keep-alive", "proxy-connection"] {
        headers.remove(name);
    }
}

/// The `replaces` of a newOrder request's JWS (flattened JSON serialization), read from its
/// base64url payload; `None` when there is none or the body is no such JWS. Reads only.
fn signed_replaces(body: &[u8]) -> Option<String> {
    let jws: Value = serde_json::from_slice(body).ok()?;
    let payload = base64url_decode(jws.get("payload")?.as_str()?)?;
    let payload: Value = serde_json::from_slice(&payload).ok()?;
    Some(payload.get("replaces")?.as_str()?.to_owned())
}

/// Decodes unpadded base64url (RFC 4648 §5, as JWS uses it); `None` on any other byte.
fn base64url_decode(text: &str) -> Option<Vec<u8>> {
    let mut decoded = Vec::with_capacity(text.len() * 3 / 4);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for byte in text.bytes() {
        let sextet = match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        buffer = (buffer << 6) | u32::from(sextet);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            decoded.push(u8::try_from(buffer >> bits).ok()?);
            buffer &= (1 << bits) - 1;
        }
    }
    Some(decoded)
}

/// The string member `key` of a JSON object `body`.
fn json_member(body: &[u8], key: &str) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    Some(value.get(key)?.as_str()?.to_owned())
}

/// The path of an absolute URL (`https://host:port/path` gives `/path`), or the text itself.
fn url_path(url: &str) -> &str {
    url.split_once("://")
        .and_then(|(_, rest)| rest.find('/').map(|slash| &rest[slash..]))
        .unwrap_or(url)
}

/// The JSON object `body` with the string member `key` set to `value` (over one it has when
/// `overwrite`); `None` when nothing changes or `body` is no JSON object.
fn with_member(body: &[u8], key: &str, value: &str, overwrite: bool) -> Option<Vec<u8>> {
    let Ok(Value::Object(mut object)) = serde_json::from_slice(body) else {
        return None;
    };
    if object.contains_key(key) && !overwrite {
        return None;
    }
    object.insert(key.to_owned(), Value::String(value.to_owned()));
    serde_json::to_vec(&Value::Object(object)).ok()
}

/// The answer for `certid` (RFC 9773 §4.2), recording that it was asked for.
fn renewal_info(shared: &Shared, certid: &str) -> Response<Body> {
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
fn problem(status: StatusCode, detail: &str) -> Response<Body> {
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
) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
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
        let renewal_info = format!("https://127.0.0.1:{}/renewal-info", front.port);

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
            format!("https://127.0.0.1:{}/", front.port),
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
                .starts_with(&format!("https://127.0.0.1:{}/", front.port)),
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
