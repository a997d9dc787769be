//! The front's ACME Renewal Information (RFC 9773): the suggested windows the test set.

use chrono::{DateTime, SecondsFormat, Utc};
use hyper::{Method, StatusCode};
use serde_json::{json, Value};

use super::reply::{problem, respond, Body};
use super::{Shared, RENEWAL_INFO_PATH};

/// A suggested window as the test set it.
#[derive(Clone)]
pub(super) struct Window {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    explanation_url: Option<String>,
    retry_after_secs: u64,
}

impl Window {
    /// The window from `start` to `end`, to ask again in `retry_after_secs`.
    pub(super) fn new(
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        explanation_url: Option<&str>,
        retry_after_secs: u64,
    ) -> Window {
        Window {
            start,
            end,
            explanation_url: explanation_url.map(str::to_owned),
            retry_after_secs,
        }
    }
}

/// The answer to `method` at `path`, one under [`RENEWAL_INFO_PATH`]: the window of the certid
/// after it to a GET, a problem to anything else.
pub(super) fn answer(shared: &Shared, method: &Method, path: &str) -> hyper::Response<Body> {
    if method != Method::GET {
        return problem(
            StatusCode::METHOD_NOT_ALLOWED,
            "the CA front answers renewal information to GET only",
        );
    }
    let certid = path
        .strip_prefix(RENEWAL_INFO_PATH)
        .and_then(|rest| rest.strip_prefix('/'))
        .filter(|certid| !certid.is_empty());
    match certid {
        Some(certid) => window(shared, certid),
        None => problem(
            StatusCode::NOT_FOUND,
            &format!("no {path} here: renewal information is at {RENEWAL_INFO_PATH}/{{certid}}"),
        ),
    }
}

/// The answer for `certid` (RFC 9773 §4.2), recording that it was asked for.
fn window(shared: &Shared, certid: &str) -> hyper::Response<Body> {
    let mut state = shared.state();
    state.renewal_info_requests.push(certid.to_owned());
    if let Some(status) = state.renewal_info_error {
        return problem(status, "the test made the CA front answer errors");
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
    let Some(window) = state.windows_for.get(certid).or(state.window.as_ref()) else {
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
