//! The ACME side (RFC 8555) through instant-acme: the one account, new orders, and carrying an
//! order from "challenge ready" to a downloaded certificate.
//!
//! The parts:
//! - `mod.rs` (this file): [`AcmeClient`], its errors, and the limits it keeps (requests in
//!   flight, timeouts).
//! - `account.rs`: the one account, loaded from the vault or registered once.
//! - `order.rs`: placing an order, and completing it, resumably, step by step as the CA
//!   stands.
//! - `retry.rs`: which failures are worth another try, and retrying them.
//! - `pause.rs`: what the client remembers of the CA between new orders (its `Retry-After`,
//!   its not answering), so nothing is sent to it before its time.
//! - `http.rs`: the HTTPS client the conversation goes through (with `TCP_NODELAY`, every
//!   `Retry-After` bounded to a week), and the readiness probe of the directory.
//! - `certificate.rs`: the CSR, and reading an issued certificate.
//! - `renewal_info.rs`: the renewal window the CA suggests (ARI, RFC 9773), and revocation.
//! - `authority.rs`: [`CertificateAuthority`], what the use cases ask of a CA (this client in
//!   production, a scripted CA in tests), and [`Issuers`], every CA the service may ask.
//!
//! The certificate's private key is not this client's to keep: it is handed an
//! [`OrderKey`](crate::adapters::certificate_keys::OrderKey) and asks it for the key when the
//! CA is ready for the CSR.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use dns_handling_events::{FailureReason, OrderChallenge};
use instant_acme::{Account, RetryPolicy};
use tokio::sync::Mutex;

use self::http::AcmeHttpClient;
use crate::adapters::certificate_keys::KeyCustodyError;
use crate::adapters::vault::{KeyVault, VaultError};
use crate::metrics::METRICS;

mod account;
mod authority;
mod certificate;
mod http;
mod order;
mod pause;
mod renewal_info;
mod retry;

pub use authority::{CertificateAuthority, Issuers, RetiredCa};
pub use certificate::{certificate_issuer, certificate_names, describe_certificate, hex};
pub use renewal_info::{certificate_identifier, AriAnswer};
pub use retry::describe_problem;

/// What a failure on the ACME side was caused by: instant-acme's error, the vault's, a
/// timeout's… (the causes differ by step, so they are boxed, as instant-acme's own `Other` is).
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A failure on the ACME side.
///
/// The kinds that a caller decides on (whether to retry, to pause, to fall back to another CA,
/// which status to answer) carry what was being done as `context` and keep what went wrong as
/// their `source`. Their text names the cause too, as instant-acme's own errors do, because it
/// is what a failed order or renewal records as its reason.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    /// Loading, creating or storing the account failed.
    #[error("ACME account setup failed: {}", told(.context, .source))]
    AccountSetup {
        /// What was being done (or, without a `source`, what is wrong).
        context: Cow<'static, str>,
        /// Why it failed, when an error said.
        #[source]
        source: Option<Cause>,
    },
    /// No account is stored for a directory whose client may not register one (a CA no
    /// longer configured, asked only about what it issued): nothing was sent to it.
    #[error(
        "no ACME account is stored for {directory}, which is no longer configured; none is \
         registered with a CA that is not configured"
    )]
    NoStoredAccount {
        /// The ACME directory without an account.
        directory: String,
    },
    /// Creating the order or reading its challenges failed after the request may have reached
    /// the CA (it did not answer in time, or the order was placed and its challenges could
    /// not be read): the CA may count an order.
    #[error("ACME order creation failed: {}", told(.context, .source))]
    OrderCreation {
        /// What was being done, and what it means for the order.
        context: Cow<'static, str>,
        /// Why it failed, when an error said.
        #[source]
        source: Option<Cause>,
    },
    /// The CA could not be reached, or is not asked for a while after it was not: nothing was
    /// sent to it.
    #[error("ACME server unreachable: {}", told(.context, .source))]
    Unreachable {
        /// What could not be done, or how long the CA is not asked.
        context: Cow<'static, str>,
        /// Why the CA could not be reached (the connection's error, the timeout).
        #[source]
        source: Option<Cause>,
    },
    /// The CA decided against the order (a final answer: retrying will not change it).
    #[error("{}: {}", .0.code, .0.detail)]
    Refused(FailureReason),
    /// The CA or the network did not answer as expected; trying again later may work.
    #[error("ACME server unavailable: {}", told(.context, .source))]
    Unavailable {
        /// What was being done.
        context: Cow<'static, str>,
        /// What went wrong (the CA's problem document, the network's error, the timeout),
        /// when an error said.
        #[source]
        source: Option<Cause>,
    },
    /// Our own store (or its key vault) failed.
    #[error(transparent)]
    Vault(#[from] VaultError),
    /// A budget kept for the CA is spent: nothing was asked of it.
    #[error("{detail}")]
    BudgetSpent {
        /// Which budget, and how it stands.
        detail: String,
        /// When it has a unit again.
        retry_after: chrono::DateTime<chrono::Utc>,
    },
    /// The CA refused for now (`rateLimited`, or `503`), saying until when when it did: nothing
    /// is to be asked of it before then.
    #[error("the CA refused for now: {detail}")]
    RateLimited {
        /// The CA's problem document, rendered: the client is told it with its `429`.
        detail: String,
        /// When the CA said to try again (`Retry-After`).
        retry_after: Option<chrono::DateTime<chrono::Utc>>,
    },
}

impl AcmeError {
    /// Whether a failed new order may still have created an order at the CA, and so spent
    /// what the CA counts of its limits: only when the request may have reached it and its
    /// answer was lost. A refusal, a "not now", or a CA that could not be reached placed none.
    pub fn may_have_placed_order(&self) -> bool {
        matches!(self, AcmeError::OrderCreation { .. })
    }

    /// The account could not be had while `context`, because of `source`.
    pub fn account_setup(context: impl Into<Cow<'static, str>>, source: impl Into<Cause>) -> Self {
        AcmeError::AccountSetup {
            context: context.into(),
            source: Some(source.into()),
        }
    }

    /// A new order failed while `context`, because of `source`, after its request may have
    /// reached the CA.
    pub fn order_creation(context: impl Into<Cow<'static, str>>, source: impl Into<Cause>) -> Self {
        AcmeError::OrderCreation {
            context: context.into(),
            source: Some(source.into()),
        }
    }

    /// The CA could not be reached while `context`, because of `source`.
    pub fn unreachable(context: impl Into<Cow<'static, str>>, source: impl Into<Cause>) -> Self {
        AcmeError::Unreachable {
            context: context.into(),
            source: Some(source.into()),
        }
    }

    /// The CA or the network failed while `context`, because of `source`; trying again later
    /// may work.
    pub fn unavailable(context: impl Into<Cow<'static, str>>, source: impl Into<Cause>) -> Self {
        AcmeError::Unavailable {
            context: context.into(),
            source: Some(source.into()),
        }
    }
}

impl AcmeError {
    /// What the failure says of its cause: the cause's text (a CA's problem document rendered
    /// as it is recorded), else its context; the whole text for the kinds without a cause.
    pub fn cause_text(&self) -> String {
        match self {
            AcmeError::AccountSetup { context, source }
            | AcmeError::OrderCreation { context, source }
            | AcmeError::Unreachable { context, source }
            | AcmeError::Unavailable { context, source } => match source {
                Some(source) => told_cause(source.as_ref()),
                None => context.to_string(),
            },
            other => other.to_string(),
        }
    }
}

/// The text of a failure with a `context` and maybe a `source`: the context, then the cause (a
/// CA's problem document rendered as it is recorded, with its type first).
fn told(context: &str, source: &Option<Cause>) -> String {
    match source {
        Some(source) => format!("{context}: {}", told_cause(source.as_ref())),
        None => context.to_owned(),
    }
}

/// A cause's text: a CA's problem document as it is recorded ([`describe_problem`]), any
/// other error as it displays itself.
fn told_cause(source: &(dyn std::error::Error + Send + Sync + 'static)) -> String {
    match source.downcast_ref::<instant_acme::Error>() {
        Some(instant_acme::Error::Api(problem)) => describe_problem(problem),
        _ => source.to_string(),
    }
}

/// What a new order gives the caller.
#[derive(Debug, Clone)]
pub struct CreatedOrder {
    /// The ACME order URL.
    pub order_url: String,
    /// The dns-01 challenge of every authorization the CA wants proven (none for a name whose
    /// authorization it already holds as valid).
    pub challenges: Vec<OrderChallenge>,
    /// The account the order belongs to.
    pub account_id: String,
}

/// The service's ACME client: one account per directory, created once and reused.
pub struct AcmeClient {
    directory_url: String,
    contact_email: Option<String>,
    ca_bundle: Option<std::path::PathBuf>,
    vault: KeyVault,
    /// External Account Binding (key id, HMAC key) for CAs that require it.
    external_account: Option<(String, Vec<u8>)>,
    /// The ACME profile orders ask for (`ACME_PROFILE`), if any.
    profile: Option<String>,
    /// The CAA identities configured for this CA; empty, its directory's are asked for.
    caa_identities: Vec<String>,
    /// Its directory's `meta.caaIdentities`, once read.
    directory_caa_identities: tokio::sync::OnceCell<Vec<String>>,
    /// Whether a missing account may be registered: not for a CA no longer configured, whose
    /// client only asks about orders and certificates of the account it has.
    registers_account: bool,
    /// Single flight: concurrent first calls wait here for the one that creates the account.
    account: Mutex<Option<Account>>,
    /// How many new orders this process asks the CA for at once. Hundreds of simultaneous
    /// requests make each one slow, can trip a CA's limits, and were seen to wedge Pebble's
    /// new-order handling for good; queueing here costs milliseconds.
    in_flight: tokio::sync::Semaphore,
    retry: RetryPolicy,
    /// New orders are not sent for now: the CA said when to come back, or did not answer.
    new_order_pause: pause::NewOrderPause,
    /// The readiness probe's client (the ACME conversation's, so it trusts the same roots),
    /// built on first use.
    probe: std::sync::OnceLock<Result<AcmeHttpClient, String>>,
}

impl From<KeyCustodyError> for AcmeError {
    /// A key that cannot be generated fails the order; a vault or a generation queue that
    /// fails this time is tried again at the next poll.
    fn from(error: KeyCustodyError) -> Self {
        match error {
            KeyCustodyError::Vault(error) => AcmeError::Vault(error),
            error @ KeyCustodyError::Unavailable(_) => {
                AcmeError::unavailable("the order's key could not be had this time", error)
            }
            KeyCustodyError::GenerationFailed(reason) => {
                AcmeError::Refused(FailureReason::new("key_generation_failed", reason))
            }
        }
    }
}

impl AcmeClient {
    /// A client for `directory_url`, trusting `ca_bundle`'s roots (else the platform's),
    /// binding a new account to `external_account` (key id, HMAC key) when given, its orders
    /// asking for `profile` when given, recognising `caa_identities` in CAA records (none
    /// given: what its directory lists).
    pub fn new(
        directory_url: String,
        contact_email: Option<String>,
        ca_bundle: Option<std::path::PathBuf>,
        external_account: Option<(String, Vec<u8>)>,
        profile: Option<String>,
        caa_identities: Vec<String>,
        vault: KeyVault,
    ) -> Arc<Self> {
        let mut client = Self::build(
            directory_url,
            contact_email,
            ca_bundle,
            external_account,
            profile,
            vault,
            true,
        );
        client.caa_identities = caa_identities;
        Arc::new(client)
    }

    /// A client for a CA no longer configured (`directory_url`, trusting `ca_bundle`'s roots),
    /// for the orders and certificates its account there has: polling them, revoking them,
    /// their renewal information. It uses the account stored for that directory and never
    /// registers one ([`AcmeError::NoStoredAccount`] when none is stored): an account that
    /// exists needs no External Account Binding, and a new one could own nothing there.
    pub fn of_stored_account(
        directory_url: String,
        contact_email: Option<String>,
        ca_bundle: Option<std::path::PathBuf>,
        vault: KeyVault,
    ) -> Arc<Self> {
        Arc::new(Self::build(
            directory_url,
            contact_email,
            ca_bundle,
            None,
            None,
            vault,
            false,
        ))
    }

    fn build(
        directory_url: String,
        contact_email: Option<String>,
        ca_bundle: Option<std::path::PathBuf>,
        external_account: Option<(String, Vec<u8>)>,
        profile: Option<String>,
        vault: KeyVault,
        registers_account: bool,
    ) -> Self {
        Self {
            directory_url,
            external_account,
            profile,
            caa_identities: Vec::new(),
            directory_caa_identities: tokio::sync::OnceCell::new(),
            registers_account,
            contact_email,
            ca_bundle,
            vault,
            account: Mutex::new(None),
            in_flight: tokio::sync::Semaphore::new(MAX_IN_FLIGHT),
            probe: std::sync::OnceLock::new(),
            new_order_pause: pause::NewOrderPause::default(),
            retry: RetryPolicy::new()
                .initial_delay(Duration::from_millis(200))
                .backoff(1.5)
                .timeout(Duration::from_secs(60)),
        }
    }

    /// The ACME directory of the CA this client asks.
    pub fn directory_url(&self) -> &str {
        &self.directory_url
    }

    /// Why no new order is to be sent to this CA now (the `Retry-After` it gave with a
    /// refusal, or its not answering a moment ago), if so.
    pub fn new_orders_paused(&self) -> Option<AcmeError> {
        self.new_order_pause
            .check(&self.directory_url, chrono::Utc::now())
    }

    /// Drops the cached account and, with it, its HTTP connections: after a request that got
    /// no answer, the next attempt starts on fresh connections instead of queueing behind a
    /// stalled one.
    async fn forget_account(&self) {
        *self.account.lock().await = None;
    }
}

/// Counts a request to the CA under `endpoint` by its outcome, and passes its result on.
fn counted<T, E>(endpoint: &'static str, result: Result<T, E>) -> Result<T, E> {
    METRICS.acme_request(endpoint, &result);
    result
}

/// New-order requests in flight to the CA at once, per process. Two keep a new order's latency
/// (milliseconds at a CA) far from being the limit of issuance, which key generation and
/// validation set; more were seen to wedge Pebble 2.4 for good (its new-order handler never
/// returned) with 24 in flight from three replicas, and a real CA's rate limits are per
/// account anyway.
const MAX_IN_FLIGHT: usize = 2;

/// How long one ACME exchange (directory, account, order) may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// How long carrying one order from "challenge ready" to its certificate may take per attempt.
const COMPLETION_TIMEOUT: Duration = Duration::from_secs(120);
