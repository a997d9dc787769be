//! Orders: placing one for a domain, and carrying one from "challenge ready" to a downloaded
//! certificate, each step chosen by where the order stands at the CA so that completion can
//! be run again after a crash at any point.

use std::sync::Arc;

use dns_handling_events::{FailureReason, IssuedCertificate, OrderChallenge, OrderDetails};
use instant_acme::{
    Account, AuthorizationStatus, CertificateIdentifier, ChallengeType, Identifier, NewOrder,
    Order, OrderStatus,
};

use super::certificate::{build_csr, describe_certificate};
use super::http::noting_retry_after;
use super::retry::{
    classify, describe_problem, is_transient, never_connected, rate_limited, surely_unprocessed,
    with_retries, with_retries_if,
};
use super::{counted, AcmeClient, AcmeError, CreatedOrder, COMPLETION_TIMEOUT, REQUEST_TIMEOUT};
use crate::adapters::certificate_keys::OrderKey;

impl AcmeClient {
    /// Checks that the CA lists the profile the orders are to ask for (`ACME_PROFILE`): a
    /// profile it does not offer would fail every order, so the start fails instead.
    pub async fn check_profile(&self) -> Result<(), AcmeError> {
        let Some(profile) = &self.profile else {
            return Ok(());
        };
        let account = self.account().await?;
        let offered: Vec<&str> = account.profiles().map(|listed| listed.name).collect();
        if offered.contains(&profile.as_str()) {
            return Ok(());
        }
        let listed = if offered.is_empty() {
            "none: it offers no profiles".to_owned()
        } else {
            offered.join(", ")
        };
        Err(AcmeError::AccountSetup {
            context: format!(
                "ACME_PROFILE={profile}: the CA at {} does not list that profile (it lists \
                 {listed})",
                self.directory_url
            )
            .into(),
            source: None,
        })
    }

    /// Places one new order for all of `names` (the domain first, wildcards as `*.name`) and
    /// reads the dns-01 challenge of each authorization. A renewal names the certificate it
    /// `replaces` (RFC 9773 §5) where the CA offers renewal information.
    ///
    /// At most one order is placed per call: the request is sent again only when the CA surely
    /// did not act on it (it answered with a problem, or could not be reached); once the order
    /// exists its challenges are read on it, never by placing another. While the CA's last
    /// `Retry-After` holds, or a moment after it did not answer, nothing is sent.
    pub async fn create_order(
        &self,
        names: &[String],
        replaces: Option<&CertificateIdentifier<'static>>,
    ) -> Result<CreatedOrder, AcmeError> {
        if let Some(paused) = self.new_orders_paused() {
            return Err(paused);
        }
        let _permit =
            self.in_flight.acquire().await.map_err(|e| {
                AcmeError::order_creation("waiting for a turn to place the order", e)
            })?;
        // Fails here, with the setup's own message, when the account cannot be had at all.
        let account = self.account().await?;
        let placing = with_retries_if(
            || async {
                let account = self
                    .account()
                    .await
                    .map_err(|_| instant_acme::Error::Str("the ACME account is unavailable"))?;
                match tokio::time::timeout(
                    REQUEST_TIMEOUT,
                    new_order(&account, names, replaces, self.profile.as_deref()),
                )
                .await
                {
                    Ok(placed) => counted("new_order", placed),
                    Err(_) => {
                        self.forget_account().await;
                        Err(instant_acme::Error::Str(NO_ANSWER_IN_TIME))
                    }
                }
            },
            |error| surely_unprocessed(error) && is_transient(error),
        );
        let (placed, retry_after) = noting_retry_after(Box::pin(placing)).await;
        let mut order = match placed {
            Ok(order) => {
                self.new_order_pause.answered();
                order
            }
            Err(error) => return Err(self.new_order_failed(error, retry_after)),
        };
        let order_url = order.url().to_owned();
        // The first reading uses the order just placed; a retry reads it again from its URL.
        let mut placed = Some(&mut order);
        let reading = with_retries(|| {
            let placed = placed.take();
            let order_url = &order_url;
            async move {
                let mut fetched;
                let order = match placed {
                    Some(order) => order,
                    None => {
                        let account = self.account().await.map_err(|_| {
                            instant_acme::Error::Str("the ACME account is unavailable")
                        })?;
                        fetched = account.order(order_url.clone()).await?;
                        &mut fetched
                    }
                };
                tokio::time::timeout(REQUEST_TIMEOUT, dns01_challenges(order))
                    .await
                    .unwrap_or(Err(instant_acme::Error::Str(NO_ANSWER_IN_TIME)))
            }
        });
        let challenges = reading.await.map_err(|error| {
            AcmeError::order_creation(
                format!("the CA placed order {order_url} but its challenges could not be read"),
                error,
            )
        })?;
        Ok(CreatedOrder {
            order_url,
            challenges,
            account_id: account.id().to_owned(),
        })
    }

    /// What a new order that failed means, remembering for the CA what it said: a rate limit
    /// or a `Retry-After` pauses new orders until then, a CA that did not answer pauses them a
    /// moment. A problem that is not "not now" is the CA's final word on these names.
    fn new_order_failed(
        &self,
        error: instant_acme::Error,
        retry_after: Option<chrono::DateTime<chrono::Utc>>,
    ) -> AcmeError {
        if let Some(limited) = rate_limited(&error, retry_after) {
            // Counted where the CA's refusal is met, whoever asked (a request or the scheduler).
            crate::metrics::METRICS
                .ca_refusals
                .get_or_create(&crate::metrics::BudgetLabel { budget: "ca" })
                .inc();
            if let AcmeError::RateLimited {
                detail,
                retry_after: Some(until),
            } = &limited
            {
                self.new_order_pause.refused_until(*until, detail);
            }
            return limited;
        }
        let now = chrono::Utc::now();
        match error {
            // A problem other than "not now" is a refusal on policy (the names, the account,
            // the profile): final, so no other CA is asked and the client is told why.
            api @ instant_acme::Error::Api(_) => {
                self.new_order_pause.answered();
                classify(api, ORDER_REFUSED)
            }
            other if never_connected(&other) => {
                let cause = Arc::new(other);
                self.new_order_pause
                    .unanswered(now, "no connection could be made", cause.clone());
                AcmeError::unreachable("no connection to the CA could be made", cause)
            }
            instant_acme::Error::Str(message) if message != NO_ANSWER_IN_TIME => {
                let cause = Arc::new(instant_acme::Error::Str(message));
                self.new_order_pause
                    .unanswered(now, "the order could not be sent", cause.clone());
                AcmeError::unreachable("the order could not be sent to the CA", cause)
            }
            other => {
                // It may have been placed: the CA got the request, and its answer was lost.
                let cause = Arc::new(other);
                self.new_order_pause.unanswered(
                    now,
                    "its answer to a new order was lost",
                    cause.clone(),
                );
                AcmeError::order_creation(
                    "the CA's answer was lost, and it may have placed the order",
                    cause,
                )
            }
        }
    }

    /// Carries an order whose challenge record is published to a downloaded certificate,
    /// finalizing it with the private key `key` gives (asked for only when the CA is ready for
    /// the CSR; its custody stores it before handing it out).
    ///
    /// Every step first looks at where the order stands at the CA, so this can be called again
    /// after a crash at any point: a challenge already answered is not answered twice, and an
    /// order already finalized is only downloaded, with the key stored before finalizing.
    pub async fn complete_order(
        &self,
        order: &OrderDetails,
        key: &OrderKey<'_>,
    ) -> Result<IssuedCertificate, AcmeError> {
        // A CA that accepts a connection and never answers must not hold the poller (and the
        // account lock) for ever: past this, the attempt counts as a transient failure.
        let completing =
            tokio::time::timeout(COMPLETION_TIMEOUT, self.complete_order_once(order, key));
        let (completed, retry_after) = noting_retry_after(Box::pin(completing)).await;
        match completed {
            // A CA that said when to come back is not asked again before then.
            Ok(Err(unavailable @ AcmeError::Unavailable { .. })) if retry_after.is_some() => {
                Err(AcmeError::RateLimited {
                    detail: unavailable.cause_text(),
                    retry_after,
                })
            }
            Ok(result) => result,
            Err(elapsed) => {
                self.forget_account().await;
                Err(AcmeError::unavailable(
                    format!(
                        "the CA did not complete the order within {} s",
                        COMPLETION_TIMEOUT.as_secs()
                    ),
                    elapsed,
                ))
            }
        }
    }

    async fn complete_order_once(
        &self,
        order: &OrderDetails,
        key: &OrderKey<'_>,
    ) -> Result<IssuedCertificate, AcmeError> {
        let account = self.account().await?;
        let mut acme_order = counted("order", account.order(order.order_url.clone()).await)
            .map_err(|e| classify(e, "acme_error"))?;
        loop {
            let status = acme_order.state().status;
            match status {
                OrderStatus::Pending => self.answer_challenges(&mut acme_order).await?,
                OrderStatus::Ready => {
                    // The key is stored before it comes back: a crash after the CSR is sent
                    // resumes here (or at `Processing`) with the same key, never a new one.
                    let key_pem = key.get_or_create().await?;
                    let csr = build_csr(&order.names, &key_pem)?;
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
                    let mut issued = describe_certificate(&order.order_id, chain_pem)?;
                    issued.ca_directory = self.directory_url.clone();
                    return Ok(issued);
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
}

/// Why an invalid order is invalid: the failed challenge's problem, naming its identifier,
/// else the order's own problem.
async fn invalid_order_reason(acme_order: &mut Order) -> FailureReason {
    let order_problem = acme_order.state().error.clone();
    let mut authorizations = acme_order.authorizations();
    while let Some(Ok(authorization)) = authorizations.next().await {
        for challenge in &authorization.challenges {
            if let Some(problem) = &challenge.error {
                return FailureReason::new(
                    "challenge_invalid",
                    format!(
                        "{}: {}",
                        authorization.identifier(),
                        describe_problem(problem)
                    ),
                );
            }
        }
        if authorization.status == AuthorizationStatus::Invalid {
            return FailureReason::new(
                "challenge_invalid",
                format!(
                    "{}: the CA marked its authorization invalid",
                    authorization.identifier()
                ),
            );
        }
    }
    match order_problem {
        Some(problem) => FailureReason::new("challenge_invalid", describe_problem(&problem)),
        None => FailureReason::new("challenge_invalid", "the CA marked the order invalid"),
    }
}

/// The code of a new order the CA refused on policy.
pub const ORDER_REFUSED: &str = "order_refused";

/// What a request that got no answer in time is told.
const NO_ANSWER_IN_TIME: &str = "the ACME server did not answer in time";

/// Sends one newOrder request for `names`.
async fn new_order(
    account: &Account,
    names: &[String],
    replaces: Option<&CertificateIdentifier<'static>>,
    profile: Option<&str>,
) -> Result<Order, instant_acme::Error> {
    let identifiers: Vec<Identifier> = names.iter().cloned().map(Identifier::Dns).collect();
    let mut new_order = NewOrder::new(&identifiers);
    if let Some(profile) = profile {
        new_order = new_order.profile(profile);
    }
    if let Some(replaces) = replaces {
        new_order = new_order.replaces(replaces.clone());
    }
    account.new_order(&new_order).await
}

/// Reads the dns-01 challenge of each authorization of `order` that is still pending.
async fn dns01_challenges(order: &mut Order) -> Result<Vec<OrderChallenge>, instant_acme::Error> {
    let mut challenges = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(authorization) = authorizations.next().await {
        let mut authorization = authorization?;
        if authorization.status != AuthorizationStatus::Pending {
            continue;
        }
        let identifier = authorization.identifier().to_string();
        let challenge =
            authorization
                .challenge(ChallengeType::Dns01)
                .ok_or(instant_acme::Error::Str(
                    "the CA offered no dns-01 challenge",
                ))?;
        challenges.push(OrderChallenge {
            challenge_domain: OrderChallenge::record_name(&identifier),
            identifier,
            challenge_url: challenge.url.clone(),
            expected_txt_value: challenge.key_authorization().dns_value(),
            delegated_to: None,
        });
    }
    Ok(challenges)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::store::Store;
    use crate::adapters::vault::{KeyEncryptionKey, KeyRing, KeyVault};

    /// A client of a CA at `directory`, its vault over a fresh SQLite file.
    async fn client(directory: &str) -> Arc<AcmeClient> {
        let path = std::env::temp_dir().join(format!("order-test-{}.db", uuid::Uuid::new_v4()));
        let store = Store::connect(&format!("sqlite://{}", path.display()))
            .await
            .expect("connects");
        store.migrate().await.expect("migrates");
        let vault = KeyVault::new(store, KeyRing::new(KeyEncryptionKey::generate(), vec![]));
        AcmeClient::new(
            directory.to_owned(),
            None,
            None,
            None,
            None,
            Vec::new(),
            vault,
        )
    }

    /// Every cause under `error`, nearest first.
    fn causes(error: &dyn std::error::Error) -> Vec<&(dyn std::error::Error + 'static)> {
        std::iter::successors(error.source(), |cause| cause.source()).collect()
    }

    /// The error a request to a port where nothing listens fails with, as instant-acme hands
    /// it on: what the service meets when the CA is down.
    async fn refused_connection() -> instant_acme::Error {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
        let url = format!("https://{}/dir", listener.local_addr().expect("address"));
        drop(listener);
        let http = super::super::http::acme_http_client(None).expect("a client");
        let request = ::http::Request::get(url)
            .body(instant_acme::BodyWrapper::default())
            .expect("a request");
        let error = http.request(request).await.expect_err("nothing listens");
        instant_acme::Error::Other(Box::new(error))
    }

    #[tokio::test]
    async fn the_cause_of_an_order_creation_failure_is_kept_in_its_source_chain() {
        let client = client("https://ca.example/dir").await;

        let failed = client.new_order_failed(instant_acme::Error::Str(NO_ANSWER_IN_TIME), None);

        assert!(failed.may_have_placed_order(), "{failed:?}");
        assert!(
            causes(&failed).iter().any(|cause| matches!(
                cause
                    .downcast_ref::<Arc<instant_acme::Error>>()
                    .map(|error| error.as_ref()),
                Some(instant_acme::Error::Str(NO_ANSWER_IN_TIME))
            )),
            "{failed:?}"
        );
    }

    #[tokio::test]
    async fn the_cause_of_an_unreachable_ca_is_kept_in_its_source_chain_and_in_its_pause() {
        crate::install_crypto_provider();
        let client = client("https://ca.example/dir").await;
        let refused = |error: &AcmeError| {
            causes(error).iter().any(|cause| {
                cause
                    .downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
            })
        };

        let failed = client.new_order_failed(refused_connection().await, None);

        assert!(
            matches!(failed, AcmeError::Unreachable { .. }),
            "{failed:?}"
        );
        assert!(!failed.may_have_placed_order());
        assert!(refused(&failed), "{failed:?}");
        // The next new order is refused without asking the CA, for the same cause.
        let paused = client.new_orders_paused().expect("paused");
        assert!(
            matches!(paused, AcmeError::Unreachable { .. }),
            "{paused:?}"
        );
        assert!(refused(&paused), "{paused:?}");
    }
}
