//! Which failures of the CA are worth another try (RFC 8555 §6.7 problem types, the network),
//! and trying again: at once for the steps a caller waits on, at the next poll for completion.

use std::time::Duration;

use dns_handling_events::FailureReason;
use instant_acme::Problem;

use super::{AcmeError, REQUEST_TIMEOUT};

/// Renders a problem document the way it is recorded: type, detail, status and subproblems.
pub fn describe_problem(problem: &Problem) -> String {
    let mut text = format!(
        "{}: {}",
        problem.r#type.as_deref().unwrap_or("about:blank"),
        problem.detail.as_deref().unwrap_or("(no detail)")
    );
    if let Some(status) = problem.status {
        text.push_str(&format!(" (HTTP {status})"));
    }
    for sub in &problem.subproblems {
        text.push_str(&format!(
            "; {}: {}",
            sub.r#type.as_deref().unwrap_or("about:blank"),
            sub.detail.as_deref().unwrap_or("")
        ));
    }
    text
}

/// Problem types that say "not now" rather than "no" (RFC 8555 §6.7): worth another try.
const TRANSIENT_PROBLEMS: [&str; 3] = [
    "urn:ietf:params:acme:error:badNonce",
    RATE_LIMITED,
    "urn:ietf:params:acme:error:serverInternal",
];

/// The problem type of a CA's rate limit.
pub(super) const RATE_LIMITED: &str = "urn:ietf:params:acme:error:rateLimited";

/// The refusal a CA's "not now" becomes: [`AcmeError::RateLimited`] for a rate limit, or for
/// any refusal that came with a `Retry-After` (a `503`), so that nothing asks again before the
/// time the CA gave; `None` for other errors.
pub(super) fn rate_limited(
    error: &instant_acme::Error,
    retry_after: Option<chrono::DateTime<chrono::Utc>>,
) -> Option<AcmeError> {
    let instant_acme::Error::Api(problem) = error else {
        return None;
    };
    let limited = problem.r#type.as_deref() == Some(RATE_LIMITED);
    (limited || retry_after.is_some()).then(|| AcmeError::RateLimited {
        detail: describe_problem(problem),
        retry_after,
    })
}

/// Whether a failed request surely never made the CA do anything: the CA answered with a
/// problem (RFC 8555 §6.7: a request answered with a problem was not processed), or no
/// connection to it could be made. A request that timed out, or whose connection broke after
/// it was sent, may have been processed.
pub(super) fn surely_unprocessed(error: &instant_acme::Error) -> bool {
    match error {
        instant_acme::Error::Api(_) => true,
        other => never_connected(other),
    }
}

/// Whether a request failed because no connection to the CA could be made (refused, no
/// route, the TLS handshake failed): nothing reached it.
pub(super) fn never_connected(error: &instant_acme::Error) -> bool {
    match error {
        instant_acme::Error::Other(inner) => inner
            .downcast_ref::<hyper_util::client::legacy::Error>()
            .is_some_and(hyper_util::client::legacy::Error::is_connect),
        _ => false,
    }
}

/// Sorts an instant-acme error into a final refusal (recorded with `code`) or a transient
/// failure (retried at the next poll).
pub(super) fn classify(error: instant_acme::Error, code: &str) -> AcmeError {
    match error {
        instant_acme::Error::Api(problem)
            if problem
                .r#type
                .as_deref()
                .is_some_and(|kind| TRANSIENT_PROBLEMS.contains(&kind)) =>
        {
            AcmeError::unavailable(
                "the CA asked to try again",
                instant_acme::Error::Api(problem),
            )
        }
        instant_acme::Error::Api(problem) => {
            AcmeError::Refused(FailureReason::new(code, describe_problem(&problem)))
        }
        other => AcmeError::unavailable("the CA did not answer as expected", other),
    }
}

/// How many times a request the client waits for (account, order) is tried.
const ATTEMPTS: u32 = 5;

/// Whether an error says "try again at once" rather than "no". A rate limit, or any refusal
/// that said when to come back (`Retry-After`), is not tried again before then.
pub(super) fn is_transient(error: &instant_acme::Error) -> bool {
    if super::http::retry_after_noted().is_some() {
        return false;
    }
    match error {
        instant_acme::Error::Api(problem) => problem
            .r#type
            .as_deref()
            .is_some_and(|kind| kind != RATE_LIMITED && TRANSIENT_PROBLEMS.contains(&kind)),
        instant_acme::Error::Http(_)
        | instant_acme::Error::Hyper(_)
        | instant_acme::Error::Other(_)
        | instant_acme::Error::Timeout(_) => true,
        instant_acme::Error::Str(message) => message.contains("in time"),
        _ => false,
    }
}

/// Runs `attempt` until it succeeds, fails for good, or has failed transiently `ATTEMPTS` times,
/// waiting 100 ms, 200 ms, 400 ms… in between. instant-acme already retries a bad nonce three
/// times per request; this covers a CA that rejects nonces often (Pebble can reject half) and
/// short network failures, for the steps a client waits on. Retrying is safe: a rejected
/// request was not processed, and an order created by a lost response is left to expire.
pub(super) async fn with_retries<T, F, Fut>(attempt: F) -> Result<T, instant_acme::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, instant_acme::Error>>,
{
    with_retries_if(attempt, is_transient).await
}

/// As [`with_retries`], trying again only the failures `worth_retrying` accepts (a new order is
/// tried again only when the CA surely did not process it: never two orders for one).
pub(super) async fn with_retries_if<T, F, Fut>(
    mut attempt: F,
    worth_retrying: fn(&instant_acme::Error) -> bool,
) -> Result<T, instant_acme::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, instant_acme::Error>>,
{
    let mut delay = Duration::from_millis(100);
    let timed = |future: Fut| async move {
        // A backstop for the whole attempt (which may reload the account, then send the
        // request): the request itself has its own, shorter timeout.
        tokio::time::timeout(2 * REQUEST_TIMEOUT, future)
            .await
            .unwrap_or_else(|_| {
                Err(instant_acme::Error::Str(
                    "the ACME server did not answer in time",
                ))
            })
    };
    for _ in 1..ATTEMPTS {
        match timed(attempt()).await {
            Err(error) if worth_retrying(&error) => {
                tracing::debug!(%error, "transient ACME failure; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            done => return done,
        }
    }
    timed(attempt()).await
}
