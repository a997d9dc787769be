//! What the front answers a request: the error the test chose, its own renewal information, or
//! Pebble's response, changed where the front adds what Pebble 2.4 lacks.

use std::time::Duration;

use base64::Engine as _;
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, HOST, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Map, Value};

use super::reply::{problem, typed_problem, Body};
use super::upstream::{remove_hop_by_hop, send_to_pebble};
use super::{renewal_info, Fault, FrontTarget, Paths, Shared, State, RENEWAL_INFO_PATH};

/// How long one request to Pebble may take, connection and body included.
const PEBBLE_TIMEOUT: Duration = Duration::from_secs(30);

/// What a newOrder request asked for, read from its signed payload.
struct NewOrderAsked {
    profile: Option<String>,
    replaces: Option<String>,
    /// Whether the front listed profiles when the request came: then it echoes `profile`.
    profiles_listed: bool,
}

/// Answers one request: counts it, then answers the error the test chose for its kind, or a
/// profile the front does not list, or renewal information (with ARI), or Pebble's response.
pub(super) async fn answer(shared: &Shared, request: Request<Incoming>) -> Response<Body> {
    let (mut parts, body) = request.into_parts();
    let body = match body.collect().await {
        Ok(body) => body.to_bytes(),
        Err(error) => {
            return problem(
                StatusCode::BAD_REQUEST,
                &format!("the CA front could not read the request's body: {error}"),
            )
        }
    };
    let path = parts.uri.path().to_owned();
    let host = header(&parts.headers, HOST);
    // URLs the front adds are on the origin the client used, as Pebble's are.
    let origin = host
        .as_ref()
        .map_or_else(|| shared.origin.clone(), |host| format!("https://{host}"));

    let mut asked = None;
    let target = shared.state().paths.target(&path);
    let (refusal, delay) = {
        let mut state = shared.state();
        let delay = target.and_then(|target| state.delays.get(&target).copied());
        for counted in target.into_iter().chain([FrontTarget::Any]) {
            *state.requests.entry(counted).or_default() += 1;
        }
        if target == Some(FrontTarget::NewOrder) {
            asked = Some(record_new_order(&mut state, &body));
        }
        let fault =
            take_fault(&mut state, target).or_else(|| refused_profile(&state, asked.as_ref()));
        (fault, delay)
    };
    if let Some(fault) = refusal {
        return answer_fault(shared, host.as_deref(), &fault).await;
    }
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    let is_renewal_info =
        path == RENEWAL_INFO_PATH || path.starts_with(&format!("{RENEWAL_INFO_PATH}/"));
    if shared.ari && is_renewal_info {
        return renewal_info::answer(shared, &parts.method, &path);
    }

    let is_directory = parts.method == Method::GET && path == shared.directory_path;
    remove_hop_by_hop(&mut parts.headers);
    let forwarded = Request::from_parts(parts, Full::new(body));
    let (mut parts, body) = match pebble_answer(shared, forwarded, &path).await {
        Ok(response) => response,
        Err(response) => return response,
    };
    // Pebble has acted on the request; its answer waits while the test holds answers of its
    // kind (a client that gives up meanwhile never sees it).
    while target.is_some_and(|target| shared.state().held.contains(&target)) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    remove_hop_by_hop(&mut parts.headers);
    if asked.is_some() && parts.status == StatusCode::CREATED {
        shared.state().orders_created += 1;
    }
    let is_chain = header(&parts.headers, CONTENT_TYPE)
        .is_some_and(|kind| kind.starts_with("application/pem-certificate-chain"));
    if parts.status.is_success() && is_chain {
        let chain = String::from_utf8_lossy(&body).into_owned();
        shared.state().certificate_chains.push(chain);
    }
    let json = parts
        .status
        .is_success()
        .then(|| serde_json::from_slice::<Value>(&body).ok())
        .flatten();
    let Some(mut json) = json else {
        return Response::from_parts(parts, Full::new(body));
    };
    shared.state().paths.learn(&json, is_directory);
    let changed = if is_directory {
        change_directory(shared, &mut json, &origin)
    } else {
        asked.is_some_and(|asked| echo_in_order(shared, &mut json, &asked))
    };
    let body = if changed {
        // hyper gives the new body its own length.
        parts.headers.remove(CONTENT_LENGTH);
        Bytes::from(json.to_string())
    } else {
        body
    };
    Response::from_parts(parts, Full::new(body))
}

/// Records the `profile` and `replaces` of a newOrder request's signed payload.
fn record_new_order(state: &mut State, body: &[u8]) -> NewOrderAsked {
    let payload = signed_payload(body).unwrap_or_default();
    let member = |key| payload.get(key).and_then(Value::as_str).map(str::to_owned);
    let asked = NewOrderAsked {
        profile: member("profile"),
        replaces: member("replaces"),
        profiles_listed: !state.profiles.is_empty(),
    };
    state.orders_profiles.push(asked.profile.clone());
    state.replaces.extend(asked.replaces.clone());
    asked
}

/// The error the test chose for this request, counted: its kind's first, else `Any`'s.
fn take_fault(state: &mut State, target: Option<FrontTarget>) -> Option<Fault> {
    let what = target
        .filter(|target| state.faults.contains_key(target))
        .or(Some(FrontTarget::Any).filter(|any| state.faults.contains_key(any)))?;
    let fault = state.faults.get_mut(&what)?;
    fault.remaining -= 1;
    let taken = fault.clone();
    if fault.remaining == 0 {
        state.faults.remove(&what);
    }
    Some(taken)
}

/// The refusal of a newOrder asking for a profile the front does not list while it lists some,
/// as a CA with profiles answers one (draft-ietf-acme-profiles: `invalidProfile`).
fn refused_profile(state: &State, asked: Option<&NewOrderAsked>) -> Option<Fault> {
    let profile = asked?.profile.as_deref()?;
    let listed = state.profiles.iter().any(|(name, _)| name == profile);
    (!state.profiles.is_empty() && !listed).then(|| Fault {
        status: StatusCode::BAD_REQUEST,
        kind: "invalidProfile",
        detail: format!("the CA front lists no profile {profile:?}"),
        retry_after: Duration::ZERO,
        remaining: 1,
    })
}

/// The front's own answer to a request it does not pass: the fault's problem, with a fresh
/// nonce of Pebble's, as an ACME server gives with every error, and `Retry-After` unless zero.
async fn answer_fault(shared: &Shared, host: Option<&str>, fault: &Fault) -> Response<Body> {
    let mut response = typed_problem(fault.status, fault.kind, &fault.detail);
    let headers = response.headers_mut();
    if !fault.retry_after.is_zero() {
        // Whole seconds (RFC 9110 §10.2.3), never shorter than the test asked.
        let secs = fault.retry_after.as_secs() + u64::from(fault.retry_after.subsec_nanos() > 0);
        headers.insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    let nonce = tokio::time::timeout(PEBBLE_TIMEOUT, fresh_nonce(shared, host)).await;
    if let Ok(Some(nonce)) = nonce {
        headers.insert("replay-nonce", nonce);
    }
    response
}

/// A fresh nonce from Pebble's newNonce (asked directly, so it counts as no request to the
/// front); `None` when Pebble gives none, and the client fetches one itself.
async fn fresh_nonce(shared: &Shared, host: Option<&str>) -> Option<HeaderValue> {
    let known = shared.state().paths.new_nonce.clone();
    let new_nonce = match known {
        Some(path) => path,
        None => {
            // Nothing fetched the directory through the front yet: Pebble's says where.
            let request = bodiless(Method::GET, &shared.directory_path, host, shared)?;
            let (_, body) = send_to_pebble(shared, request).await.ok()?;
            let directory: Value = serde_json::from_slice(&body).ok()?;
            let mut state = shared.state();
            state.paths.learn(&directory, true);
            state.paths.new_nonce.clone()?
        }
    };
    let request = bodiless(Method::HEAD, &new_nonce, host, shared)?;
    let (parts, _) = send_to_pebble(shared, request).await.ok()?;
    parts.headers.get("replay-nonce").cloned()
}

/// A request to Pebble without a body, with the client's `Host` (Pebble needs one).
fn bodiless(
    method: Method,
    path: &str,
    host: Option<&str>,
    shared: &Shared,
) -> Option<Request<Body>> {
    let host = host.map_or_else(|| shared.pebble.to_string(), str::to_owned);
    Request::builder()
        .method(method)
        .uri(path)
        .header(HOST, host)
        .body(Body::default())
        .ok()
}

/// Pebble's response to `request`, or the 502 problem to answer when it gave none.
async fn pebble_answer(
    shared: &Shared,
    request: Request<Body>,
    path: &str,
) -> Result<(hyper::http::response::Parts, Bytes), Response<Body>> {
    let pebble = shared.pebble;
    match tokio::time::timeout(PEBBLE_TIMEOUT, send_to_pebble(shared, request)).await {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(error)) => Err(problem(
            StatusCode::BAD_GATEWAY,
            &format!("Pebble at {pebble} did not answer {path}: {error}"),
        )),
        Err(_) => Err(problem(
            StatusCode::BAD_GATEWAY,
            &format!("Pebble at {pebble} did not answer {path} in {PEBBLE_TIMEOUT:?}"),
        )),
    }
}

/// Adds `renewalInfo` (with ARI), `meta.profiles` and `meta.caaIdentities` (when the test set
/// some) to Pebble's directory; whether it changed.
fn change_directory(shared: &Shared, directory: &mut Value, origin: &str) -> bool {
    let profiles = shared.state().profiles.clone();
    let caa_identities = shared.state().caa_identities.clone();
    let Some(object) = directory.as_object_mut() else {
        return false;
    };
    if shared.ari {
        let url = format!("{origin}{RENEWAL_INFO_PATH}");
        object.insert("renewalInfo".to_owned(), Value::String(url));
    }
    let list_profiles = !profiles.is_empty();
    if list_profiles {
        let listed: Map<String, Value> = profiles
            .into_iter()
            .map(|(name, description)| (name, Value::String(description)))
            .collect();
        let meta = object.entry("meta").or_insert_with(|| json!({}));
        if let Some(meta) = meta.as_object_mut() {
            meta.insert("profiles".to_owned(), Value::Object(listed));
        }
    }
    let list_caa_identities = !caa_identities.is_empty();
    if list_caa_identities {
        let meta = object.entry("meta").or_insert_with(|| json!({}));
        if let Some(meta) = meta.as_object_mut() {
            meta.insert("caaIdentities".to_owned(), json!(caa_identities));
        }
    }
    shared.ari || list_profiles || list_caa_identities
}

/// Echoes in Pebble's order what the newOrder asked for and Pebble 2.4 ignores, as a CA that
/// knows the fields does: `replaces` (with ARI), `profile` (while profiles are listed); whether
/// it changed.
fn echo_in_order(shared: &Shared, order: &mut Value, asked: &NewOrderAsked) -> bool {
    let Some(order) = order.as_object_mut() else {
        return false;
    };
    let mut echo = Vec::new();
    if shared.ari {
        echo.extend(
            asked
                .replaces
                .clone()
                .map(|replaces| ("replaces", replaces)),
        );
    }
    if asked.profiles_listed {
        echo.extend(asked.profile.clone().map(|profile| ("profile", profile)));
    }
    let mut changed = false;
    for (key, value) in echo {
        if !order.contains_key(key) {
            order.insert(key.to_owned(), Value::String(value));
            changed = true;
        }
    }
    changed
}

impl Paths {
    /// The kind of a request to `path`, when it is one the front tells apart.
    pub(super) fn target(&self, path: &str) -> Option<FrontTarget> {
        let is = |known: &Option<String>| known.as_deref() == Some(path);
        if is(&self.new_order) {
            Some(FrontTarget::NewOrder)
        } else if is(&self.new_account) {
            Some(FrontTarget::NewAccount)
        } else if self.finalize.contains(path) {
            Some(FrontTarget::Finalize)
        } else if self.challenges.contains(path) {
            Some(FrontTarget::Challenge)
        } else {
            None
        }
    }

    /// Learns the paths a successful JSON response of Pebble's names: the directory's, an
    /// order's `finalize`, an authorization's challenge URLs.
    fn learn(&mut self, json: &Value, is_directory: bool) {
        let path_of = |value: &Value| value.as_str().map(|url| url_path(url).to_owned());
        if is_directory {
            self.new_nonce = path_of(&json["newNonce"]);
            self.new_account = path_of(&json["newAccount"]);
            self.new_order = path_of(&json["newOrder"]);
            return;
        }
        self.finalize.extend(path_of(&json["finalize"]));
        let challenges = json["challenges"].as_array().into_iter().flatten();
        self.challenges
            .extend(challenges.filter_map(|challenge| path_of(&challenge["url"])));
    }
}

/// The payload of a JWS (flattened JSON serialization) as JSON, decoded from base64url; `None`
/// when the body is no such JWS or the payload no JSON (a POST-as-GET's is empty). Reads only:
/// the signature covers the payload, so the front never changes it.
fn signed_payload(body: &[u8]) -> Option<Value> {
    let jws: Value = serde_json::from_slice(body).ok()?;
    let payload = jws.get("payload")?.as_str()?;
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    serde_json::from_slice(&payload).ok()
}

/// A header's value as text.
fn header(headers: &hyper::HeaderMap, name: hyper::header::HeaderName) -> Option<String> {
    Some(headers.get(name)?.to_str().ok()?.to_owned())
}

/// The path of an absolute URL (`https://host:port/path` gives `/path`), or the text itself.
pub(super) fn url_path(url: &str) -> &str {
    url.split_once("://")
        .and_then(|(_, rest)| rest.find('/').map(|slash| &rest[slash..]))
        .unwrap_or(url)
}
