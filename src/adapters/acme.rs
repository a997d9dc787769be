//! The ACME side (RFC 8555) through instant-acme: the one account, new orders, and carrying an
//! order from "challenge ready" to a downloaded certificate.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use dns_handling_events::{CertificateKeyType, FailureReason, IssuedCertificate, OrderDetails};
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, Order, OrderStatus, Problem, RetryPolicy,
};
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;

use crate::adapters::vault::{KeyVault, VaultError};
use crate::metrics::METRICS;

/// A failure on the ACME side.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    /// Loading, creating or storing the account failed.
    #[error("ACME account setup failed: {0}")]
    AccountSetup(String),
    /// Creating the order or reading its challenge failed.
    #[error("ACME order creation failed: {0}")]
    OrderCreation(String),
    /// The CA decided against the order (a final answer: retrying will not change it).
    #[error("{}: {}", .0.code, .0.detail)]
    Refused(FailureReason),
    /// The CA or the network did not answer as expected; trying again later may work.
    #[error("ACME server unavailable: {0}")]
    Unavailable(String),
    /// Our own store (or its key vault) failed.
    #[error(transparent)]
    Vault(#[from] VaultError),
}

/// What a new order gives the caller.
#[derive(Debug, Clone)]
pub struct CreatedOrder {
    /// The ACME order URL.
    pub order_url: String,
    /// The dns-01 challenge URL of the first authorization.
    pub challenge_url: String,
    /// `_acme-challenge.<domain>.`
    pub challenge_domain: String,
    /// The TXT value the CA will look for.
    pub expected_txt_value: String,
    /// The account the order belongs to.
    pub account_id: String,
}

/// The service's ACME client: one account per directory, created once and reused.
pub struct AcmeClient {
    directory_url: String,
    contact_email: Option<String>,
    ca_bundle: Option<std::path::PathBuf>,
    vault: KeyVault,
    /// Single flight: concurrent first calls wait here for the one that creates the account.
    account: Mutex<Option<Account>>,
    /// How many new orders this process asks the CA for at once. Hundreds of simultaneous
    /// requests make each one slow, can trip a CA's limits, and were seen to wedge Pebble's
    /// new-order handling for good; queueing here costs milliseconds.
    in_flight: tokio::sync::Semaphore,
    retry: RetryPolicy,
    /// Certificate keys generated at once: one per core. RSA-2048 generation is pure CPU; with
    /// hundreds of orders ready together, running all at once only makes every one of them
    /// finish late, while a bounded number finishes the first orders early.
    key_generation: tokio::sync::Semaphore,
    /// The readiness probe's client (the ACME conversation's, so it trusts the same roots),
    /// built on first use.
    probe: std::sync::OnceLock<Result<AcmeHttpClient, String>>,
}

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
    "urn:ietf:params:acme:error:rateLimited",
    "urn:ietf:params:acme:error:serverInternal",
];

/// Sorts an instant-acme error into a final refusal (recorded with `code`) or a transient
/// failure (retried at the next poll).
fn classify(error: instant_acme::Error, code: &str) -> AcmeError {
    match error {
        instant_acme::Error::Api(problem)
            if problem
                .r#type
                .as_deref()
                .is_some_and(|kind| TRANSIENT_PROBLEMS.contains(&kind)) =>
        {
            AcmeError::Unavailable(describe_problem(&problem))
        }
        instant_acme::Error::Api(problem) => {
            AcmeError::Refused(FailureReason::new(code, describe_problem(&problem)))
        }
        other => AcmeError::Unavailable(other.to_string()),
    }
}

impl AcmeClient {
    /// A client for `directory_url`, trusting `ca_bundle`'s roots (else the platform's).
    pub fn new(
        directory_url: String,
        contact_email: Option<String>,
        ca_bundle: Option<std::path::PathBuf>,
        vault: KeyVault,
    ) -> Arc<Self> {
        Arc::new(Self {
            directory_url,
            contact_email,
            ca_bundle,
            vault,
            account: Mutex::new(None),
            in_flight: tokio::sync::Semaphore::new(MAX_IN_FLIGHT),
            probe: std::sync::OnceLock::new(),
            key_generation: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get),
            ),
            retry: RetryPolicy::new()
                .initial_delay(Duration::from_millis(200))
                .backoff(1.5)
                .timeout(Duration::from_secs(60)),
        })
    }

    /// Checks that the directory answers with an ACME directory, for the readiness probe. A
    /// plain GET: it needs no account and sends nothing to the CA's rate-limited endpoints.
    pub async fn check_directory(&self) -> Result<(), String> {
        use http_body_util::BodyExt as _;
        let url = &self.directory_url;
        let client = self
            .probe
            .get_or_init(|| acme_http_client(self.ca_bundle.as_deref()).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(Clone::clone)?;
        let request = http::Request::get(url.as_str())
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
        let directory: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| format!("{url} answered no JSON: {e}"))?;
        match directory.get("newOrder") {
            Some(_) => Ok(()),
            None => Err(format!("{} is not an ACME directory", self.directory_url)),
        }
    }

    fn builder(&self) -> Result<instant_acme::AccountBuilder, instant_acme::Error> {
        let http = acme_http_client(self.ca_bundle.as_deref())?;
        Ok(Account::builder_with_http(Box::new(http)))
    }

    /// The account: loaded from the store, or registered with the CA and stored, exactly once.
    pub async fn account(&self) -> Result<Account, AcmeError> {
        let mut slot = self.account.lock().await;
        if let Some(account) = slot.as_ref() {
            return Ok(account.clone());
        }
        let setup = |e: &dyn std::fmt::Display| AcmeError::AccountSetup(e.to_string());
        let stored = self
            .vault
            .acme_credentials(&self.directory_url)
            .await
            .map_err(|e| setup(&e))?;
        let credentials_json = match stored {
            Some(json) => json,
            // Replicas starting at once serialise here, and the first one's account is stored
            // before the next looks: one account is registered, not one per replica.
            None => self
                .vault
                .with_account_lock(self.register_unless_stored())
                .await
                .map_err(|e| setup(&e))??,
        };
        let credentials: AccountCredentials =
            serde_json::from_str(&credentials_json).map_err(|e| setup(&e))?;
        let account = self
            .builder()
            .map_err(|e| setup(&e))?
            .from_credentials(credentials);
        let account = tokio::time::timeout(REQUEST_TIMEOUT, account)
            .await
            .map_err(|_| setup(&"the ACME directory did not answer in time"));
        let account = counted(
            "directory",
            account.and_then(|loaded| loaded.map_err(|e| setup(&e))),
        )?;
        *slot = Some(account.clone());
        Ok(account)
    }

    /// Under the account lock: the stored credentials if another process stored some
    /// meanwhile, or a newly registered account's, stored.
    async fn register_unless_stored(&self) -> Result<String, AcmeError> {
        let setup = |e: &dyn std::fmt::Display| AcmeError::AccountSetup(e.to_string());
        if let Some(json) = self
            .vault
            .acme_credentials(&self.directory_url)
            .await
            .map_err(|e| setup(&e))?
        {
            return Ok(json);
        }
        let contact = self
            .contact_email
            .as_ref()
            .map(|email| format!("mailto:{email}"));
        let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
        let new_account = NewAccount {
            contact: &contacts,
            terms_of_service_agreed: true,
            only_return_existing: false,
        };
        let (account, credentials) = with_retries(|| async {
            counted(
                "new_account",
                self.builder()?
                    .create(&new_account, self.directory_url.clone(), None)
                    .await,
            )
        })
        .await
        .map_err(|e| setup(&e))?;
        let json = serde_json::to_string(&credentials).map_err(|e| setup(&e))?;
        // Stored unless a process without the lock (SQLite mode has none to share) stored one
        // first: the stored one wins, so every process uses the same account.
        let of_record = self
            .vault
            .store_acme_credentials(&self.directory_url, account.id(), &json)
            .await
            .map_err(|e| setup(&e))?;
        tracing::info!(account_id = account.id(), "registered ACME account");
        Ok(of_record)
    }

    /// Places a new order for `domain_name` and reads the dns-01 challenge of its first
    /// authorization.
    pub async fn create_order(&self, domain_name: &str) -> Result<CreatedOrder, AcmeError> {
        let _permit = self
            .in_flight
            .acquire()
            .await
            .map_err(|e| AcmeError::OrderCreation(e.to_string()))?;
        // Fails here, with the setup's own message, when the account cannot be had at all.
        self.account().await?;
        with_retries(|| async {
            let account = self
                .account()
                .await
                .map_err(|_| instant_acme::Error::Str("the ACME account is unavailable"))?;
            match tokio::time::timeout(REQUEST_TIMEOUT, place_order(&account, domain_name)).await {
                Ok(placed) => counted("new_order", placed),
                Err(_) => {
                    self.forget_account().await;
                    Err(instant_acme::Error::Str(
                        "the ACME server did not answer in time",
                    ))
                }
            }
        })
        .await
        .map_err(|e| AcmeError::OrderCreation(e.to_string()))
    }

    /// Drops the cached account and, with it, its HTTP connections: after a request that got
    /// no answer, the next attempt starts on fresh connections instead of queueing behind a
    /// stalled one.
    async fn forget_account(&self) {
        *self.account.lock().await = None;
    }

    /// Carries an order whose challenge record is published to a downloaded certificate.
    ///
    /// Every step first looks at where the order stands at the CA, so this can be called again
    /// after a crash at any point: a challenge already answered is not answered twice, and an
    /// order already finalized is only downloaded, with the key stored before finalizing.
    pub async fn complete_order(
        &self,
        domain_id: &str,
        domain_name: &str,
        order: &OrderDetails,
    ) -> Result<IssuedCertificate, AcmeError> {
        // A CA that accepts a connection and never answers must not hold the poller (and the
        // account lock) for ever: past this, the attempt counts as a transient failure.
        let completed = tokio::time::timeout(
            COMPLETION_TIMEOUT,
            self.complete_order_once(domain_id, domain_name, order),
        )
        .await;
        match completed {
            Ok(result) => result,
            Err(_) => {
                self.forget_account().await;
                Err(AcmeError::Unavailable(format!(
                    "the CA did not complete the order within {} s",
                    COMPLETION_TIMEOUT.as_secs()
                )))
            }
        }
    }

    async fn complete_order_once(
        &self,
        domain_id: &str,
        domain_name: &str,
        order: &OrderDetails,
    ) -> Result<IssuedCertificate, AcmeError> {
        let account = self.account().await?;
        let mut acme_order = counted("order", account.order(order.order_url.clone()).await)
            .map_err(|e| classify(e, "acme_error"))?;
        loop {
            let status = acme_order.state().status;
            match status {
                OrderStatus::Pending => self.answer_challenges(&mut acme_order).await?,
                OrderStatus::Ready => {
                    let key_pem = self
                        .certificate_key(domain_id, &order.order_id, order.key_type)
                        .await?;
                    let csr = build_csr(domain_name, &key_pem)?;
                    tracing::info!(order_id = %order.order_id, "finalizing order");
                    counted("finalize", acme_order.finalize_csr(&csr).await)
                        .map_err(|e| classify(e, "finalize_failed"))?;
                }
                OrderStatus::Processing | OrderStatus::Valid => {
                    let chain_pem = counted(
                        "certificate",
                        acme_order.poll_certificate(&self.retry).await,
                    )
                    .map_err(|e| classify(e, "finalize_failed"))?;
                    return describe_certificate(&order.order_id, chain_pem);
                }
                OrderStatus::Invalid => {
                    return Err(AcmeError::Refused(
                        invalid_order_reason(&mut acme_order).await,
                    ));
                }
            }
        }
    }

    /// Tells the CA the challenges are ready and waits until the order is ready (or invalid).
    async fn answer_challenges(&self, acme_order: &mut Order) -> Result<(), AcmeError> {
        let mut authorizations = acme_order.authorizations();
        while let Some(authorization) = authorizations.next().await {
            let mut authorization = authorization.map_err(|e| classify(e, "acme_error"))?;
            if authorization.status != AuthorizationStatus::Pending {
                continue;
            }
            let mut challenge = authorization
                .challenge(ChallengeType::Dns01)
                .ok_or_else(|| {
                    AcmeError::Refused(FailureReason::new(
                        "challenge_invalid",
                        "the authorization offers no dns-01 challenge",
                    ))
                })?;
            // Answering a challenge that is already processing is harmless: RFC 8555 §7.5.1
            // says the server ignores a repeated response.
            counted("challenge_ready", challenge.set_ready().await)
                .map_err(|e| classify(e, "challenge_invalid"))?;
        }
        counted("poll_ready", acme_order.poll_ready(&self.retry).await)
            .map_err(|e| classify(e, "challenge_invalid"))?;
        Ok(())
    }

    /// The private key of an order: the stored one, or a fresh one stored before first use.
    async fn certificate_key(
        &self,
        domain_id: &str,
        order_id: &str,
        key_type: CertificateKeyType,
    ) -> Result<String, AcmeError> {
        if let Some(existing) = self.vault.certificate_key(order_id).await? {
            return Ok(existing);
        }
        // RSA-2048 generation takes tens to hundreds of milliseconds of CPU: run it on the
        // blocking pool so it never stalls an actor's or an HTTP worker's thread.
        let algorithm = match key_type {
            CertificateKeyType::Rsa2048 => &rcgen::PKCS_RSA_SHA256,
            CertificateKeyType::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
        };
        let _permit = self
            .key_generation
            .acquire()
            .await
            .map_err(|e| AcmeError::Unavailable(format!("key generation is closed: {e}")))?;
        let generated = tokio::task::spawn_blocking(move || {
            rcgen::KeyPair::generate_for(algorithm).map(|key| key.serialize_pem())
        })
        .await
        .map_err(|e| AcmeError::Unavailable(format!("key generation task failed: {e}")))?
        .map_err(|e| {
            AcmeError::Refused(FailureReason::new("key_generation_failed", e.to_string()))
        })?;
        Ok(self
            .vault
            .store_certificate_key(order_id, domain_id, &generated)
            .await?)
    }
}

/// Why an invalid order is invalid: the order's own problem, or the failed challenge's.
async fn invalid_order_reason(acme_order: &mut Order) -> FailureReason {
    if let Some(problem) = acme_order.state().error.clone() {
        return FailureReason::new("challenge_invalid", describe_problem(&problem));
    }
    let mut authorizations = acme_order.authorizations();
    while let Some(Ok(authorization)) = authorizations.next().await {
        for challenge in &authorization.challenges {
            if let Some(problem) = &challenge.error {
                return FailureReason::new("challenge_invalid", describe_problem(problem));
            }
        }
    }
    FailureReason::new("challenge_invalid", "the CA marked the order invalid")
}

/// Places a new order and reads the dns-01 challenge of its first authorization.
async fn place_order(
    account: &Account,
    domain_name: &str,
) -> Result<CreatedOrder, instant_acme::Error> {
    let identifiers = [Identifier::Dns(domain_name.to_owned())];
    let mut order = account.new_order(&NewOrder::new(&identifiers)).await?;
    let order_url = order.url().to_owned();
    let mut authorizations = order.authorizations();
    let mut authorization = authorizations
        .next()
        .await
        .ok_or(instant_acme::Error::Str("the order has no authorization"))??;
    let challenge =
        authorization
            .challenge(ChallengeType::Dns01)
            .ok_or(instant_acme::Error::Str(
                "the CA offered no dns-01 challenge",
            ))?;
    Ok(CreatedOrder {
        order_url,
        challenge_url: challenge.url.clone(),
        challenge_domain: format!("_acme-challenge.{domain_name}."),
        expected_txt_value: challenge.key_authorization().dns_value(),
        account_id: account.id().to_owned(),
    })
}

/// The HTTPS client of everything the service asks the CA.
type AcmeHttpClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    instant_acme::BodyWrapper<bytes::Bytes>,
>;

/// The HTTPS client the ACME conversation goes through: instant-acme's own, except for
/// `TCP_NODELAY`. Its client leaves Nagle's algorithm on, and a JWS POST is written in two parts
/// (headers, then body), so every POST waited for the CA's delayed ACK of the first part: about
/// 40 ms per request, with several requests per certificate. Trusts `ca_bundle`'s roots when
/// given (a test CA such as Pebble), else the platform's.
fn acme_http_client(
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

/// How long the readiness probe waits for the directory.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

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

/// How many times a request the client waits for (account, order) is tried.
const ATTEMPTS: u32 = 5;

/// How long one ACME exchange (directory, account, order) may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// How long carrying one order from "challenge ready" to its certificate may take per attempt.
const COMPLETION_TIMEOUT: Duration = Duration::from_secs(120);

/// Whether an error says "try again" rather than "no".
fn is_transient(error: &instant_acme::Error) -> bool {
    match error {
        instant_acme::Error::Api(problem) => problem
            .r#type
            .as_deref()
            .is_some_and(|kind| TRANSIENT_PROBLEMS.contains(&kind)),
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
async fn with_retries<T, F, Fut>(mut attempt: F) -> Result<T, instant_acme::Error>
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
            Err(error) if is_transient(&error) => {
                tracing::debug!(%error, "transient ACME failure; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            done => return done,
        }
    }
    timed(attempt()).await
}

fn build_csr(domain_name: &str, key_pem: &str) -> Result<Vec<u8>, AcmeError> {
    let fail =
        |e: rcgen::Error| AcmeError::Refused(FailureReason::new("csr_failed", e.to_string()));
    let key = rcgen::KeyPair::from_pem(key_pem).map_err(fail)?;
    let mut params = rcgen::CertificateParams::new(vec![domain_name.to_owned()]).map_err(fail)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    Ok(params.serialize_request(&key).map_err(fail)?.der().to_vec())
}

/// Reads the public facts of an issued chain from the leaf certificate itself.
pub fn describe_certificate(
    order_id: &str,
    chain_pem: String,
) -> Result<IssuedCertificate, AcmeError> {
    let bad = |reason: String| {
        AcmeError::Refused(FailureReason::new(
            "certificate_unreadable",
            format!("the CA returned a certificate that cannot be read: {reason}"),
        ))
    };
    let (_, pem) =
        x509_parser::pem::parse_x509_pem(chain_pem.as_bytes()).map_err(|e| bad(e.to_string()))?;
    let leaf = pem.parse_x509().map_err(|e| bad(e.to_string()))?;
    let validity = leaf.validity();
    let to_utc = |time: &x509_parser::time::ASN1Time| -> Result<DateTime<Utc>, AcmeError> {
        DateTime::from_timestamp(time.timestamp(), 0).ok_or_else(|| bad("date out of range".into()))
    };
    Ok(IssuedCertificate {
        certificate_id: uuid::Uuid::now_v7().to_string(),
        order_id: order_id.to_owned(),
        serial: hex(leaf.tbs_certificate.raw_serial()),
        not_before: to_utc(&validity.not_before)?,
        not_after: to_utc(&validity.not_after)?,
        fingerprint_sha256: hex(&Sha256::digest(&pem.contents)),
        chain_pem,
    })
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
