//! The CA as the use cases and actors see it: [`CertificateAuthority`], the operations they ask
//! of one CA (implemented by the instant-acme [`AcmeClient`], and by a scripted CA in the
//! in-process tests), and [`Issuers`], every CA the service may ask, configured or retired.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use async_trait::async_trait;
use dns_handling_events::{IssuedCertificate, OrderDetails, RevocationReason};
use instant_acme::CertificateIdentifier;

use super::{AcmeClient, AcmeError, AriAnswer, CreatedOrder};
use crate::adapters::certificate_keys::OrderKey;

/// One CA, at one ACME directory, with the service's account there.
#[async_trait]
pub trait CertificateAuthority: Send + Sync {
    /// The ACME directory of this CA: what orders and certificates record as theirs.
    fn directory_url(&self) -> &str;

    /// Why no new order is to be sent to this CA now (a `Retry-After` it gave, or its not
    /// answering a moment ago), if so.
    fn new_orders_paused(&self) -> Option<AcmeError>;

    /// Places one order for all of `names`, naming the certificate it `replaces` (ARI) when
    /// given, and reads the dns-01 challenge of each authorization.
    async fn create_order(
        &self,
        names: &[String],
        replaces: Option<&CertificateIdentifier<'static>>,
    ) -> Result<CreatedOrder, AcmeError>;

    /// Carries an order whose records are published to its certificate: tells the CA every
    /// challenge is ready, finalizes with the key `key` gives, downloads the chain.
    async fn complete_order(
        &self,
        order: &OrderDetails,
        key: &OrderKey<'_>,
    ) -> Result<IssuedCertificate, AcmeError>;

    /// The renewal window the CA suggests for the leaf of `chain_pem`; `None` when it offers
    /// no renewal information.
    async fn renewal_info(&self, chain_pem: &str) -> Result<Option<AriAnswer>, AcmeError>;

    /// Revokes the leaf of `chain_pem`.
    async fn revoke(&self, chain_pem: &str, reason: RevocationReason) -> Result<(), AcmeError>;

    /// Whether the directory answers, for the readiness probe.
    async fn check_directory(&self) -> Result<(), String>;

    /// The issuer domain names this CA recognises in CAA records (configured, else its
    /// directory's `meta.caaIdentities`); empty when neither lists any.
    async fn caa_identities(&self) -> Result<Vec<String>, AcmeError>;

    /// The URL of the service's account at this CA (RFC 8657 `accounturi`).
    async fn account_url(&self) -> Result<String, AcmeError>;
}

#[async_trait]
impl CertificateAuthority for AcmeClient {
    fn directory_url(&self) -> &str {
        AcmeClient::directory_url(self)
    }

    fn new_orders_paused(&self) -> Option<AcmeError> {
        AcmeClient::new_orders_paused(self)
    }

    async fn create_order(
        &self,
        names: &[String],
        replaces: Option<&CertificateIdentifier<'static>>,
    ) -> Result<CreatedOrder, AcmeError> {
        AcmeClient::create_order(self, names, replaces).await
    }

    async fn complete_order(
        &self,
        order: &OrderDetails,
        key: &OrderKey<'_>,
    ) -> Result<IssuedCertificate, AcmeError> {
        AcmeClient::complete_order(self, order, key).await
    }

    async fn renewal_info(&self, chain_pem: &str) -> Result<Option<AriAnswer>, AcmeError> {
        AcmeClient::renewal_info(self, chain_pem).await
    }

    async fn revoke(&self, chain_pem: &str, reason: RevocationReason) -> Result<(), AcmeError> {
        AcmeClient::revoke(self, chain_pem, reason).await
    }

    async fn check_directory(&self) -> Result<(), String> {
        AcmeClient::check_directory(self).await
    }

    async fn caa_identities(&self) -> Result<Vec<String>, AcmeError> {
        AcmeClient::caa_identities(self).await
    }

    async fn account_url(&self) -> Result<String, AcmeError> {
        AcmeClient::account_url(self).await
    }
}

/// Builds the client of a CA no longer configured, for its directory.
pub type RetiredCa = Box<dyn Fn(&str) -> Arc<dyn CertificateAuthority> + Send + Sync>;

/// Every CA the service may ask: the configured ones, in the order new orders try them (the
/// first, then `ACME_FALLBACK_ISSUERS`), and the clients of CAs no longer configured that
/// issued an order or a certificate the store still has (staging before production, say),
/// built on first need and kept. Only what a retired CA issued goes to it (polling,
/// revocation, renewal information); new orders go to the configured CAs alone.
pub struct Issuers {
    configured: Vec<Arc<dyn CertificateAuthority>>,
    retired: RwLock<HashMap<String, Arc<dyn CertificateAuthority>>>,
    retire: RetiredCa,
}

impl Issuers {
    /// The configured CAs (never empty: the first is `ACME_DIRECTORY`'s), and how to build the
    /// client of a CA no longer configured.
    pub fn new(configured: Vec<Arc<dyn CertificateAuthority>>, retire: RetiredCa) -> Self {
        Self {
            configured,
            retired: RwLock::default(),
            retire,
        }
    }

    /// The configured CAs, in the order new orders try them.
    pub fn configured(&self) -> &[Arc<dyn CertificateAuthority>] {
        &self.configured
    }

    /// The first CA (`ACME_DIRECTORY`), the one readiness asks about.
    pub fn first(&self) -> Option<&Arc<dyn CertificateAuthority>> {
        self.configured.first()
    }

    /// The configured CA at `directory` (the first CA for an empty directory: orders and
    /// certificates recorded before several CAs went to it); `None` for a CA no longer
    /// configured.
    pub fn configured_at(&self, directory: &str) -> Option<&Arc<dyn CertificateAuthority>> {
        if directory.is_empty() {
            return self.first();
        }
        self.configured
            .iter()
            .find(|ca| ca.directory_url() == directory)
    }

    /// The CA at `directory`, the one that placed an order or issued a certificate recorded
    /// with it: a configured CA's, else that of a CA no longer configured, built once. Never a
    /// CA other than the one named.
    pub fn at(&self, directory: &str) -> Arc<dyn CertificateAuthority> {
        if let Some(configured) = self.configured_at(directory) {
            return configured.clone();
        }
        let known = self
            .retired
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(directory)
            .cloned();
        if let Some(retired) = known {
            return retired;
        }
        let mut retired = self.retired.write().unwrap_or_else(PoisonError::into_inner);
        retired
            .entry(directory.to_owned())
            .or_insert_with(|| {
                tracing::info!(
                    directory,
                    "asking a CA that is no longer configured about what it issued, with the \
                     account stored for it"
                );
                (self.retire)(directory)
            })
            .clone()
    }
}
