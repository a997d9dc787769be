//! A certificate's life at the CA after issuance: ACME Renewal Information (RFC 9773), the
//! window the CA suggests for renewing it and the identifier a renewal order names in
//! `replaces`; and revocation (RFC 8555 §7.6).

use std::time::Duration;

use chrono::{DateTime, Utc};
use dns_handling_events::RenewalWindow;
use instant_acme::CertificateIdentifier;
use rustls::pki_types::CertificateDer;

use super::{counted, AcmeClient, AcmeError, REQUEST_TIMEOUT};

/// What the CA said about a certificate's renewal.
#[derive(Debug, Clone)]
pub struct AriAnswer {
    /// The suggested window (and the CA's explanation of it).
    pub window: RenewalWindow,
    /// When to ask again, as the CA's `Retry-After` says.
    pub retry_after: Duration,
}

/// The RFC 9773 identifier of a chain's leaf certificate (`base64url(AKI).base64url(serial)`).
pub fn certificate_identifier(chain_pem: &str) -> Result<CertificateIdentifier<'static>, String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(chain_pem.as_bytes())
        .map_err(|e| format!("the certificate is not PEM: {e}"))?;
    let der = CertificateDer::from(pem.contents);
    CertificateIdentifier::try_from(&der).map(CertificateIdentifier::into_owned)
}

impl AcmeClient {
    /// The renewal window the CA suggests for the leaf of `chain_pem`; `None` when the CA does
    /// not offer renewal information (its directory has no `renewalInfo`).
    pub async fn renewal_info(&self, chain_pem: &str) -> Result<Option<AriAnswer>, AcmeError> {
        let identifier = certificate_identifier(chain_pem).map_err(|reason| {
            AcmeError::unavailable("reading the certificate's identifier", reason)
        })?;
        // A CA found not answering a moment ago is not waited for again, domain after domain.
        if let Some(unreachable @ AcmeError::Unreachable { .. }) = self.new_orders_paused() {
            return Err(unreachable);
        }
        let account = self.account().await?;
        let asked = tokio::time::timeout(REQUEST_TIMEOUT, account.renewal_info(&identifier)).await;
        let (info, retry_after) = match asked {
            Err(elapsed) => {
                let context = "the CA did not answer the renewal information request in time";
                let cause = std::sync::Arc::new(elapsed);
                self.new_order_pause
                    .unanswered(Utc::now(), context, cause.clone());
                return Err(AcmeError::unavailable(context, cause));
            }
            Ok(Err(instant_acme::Error::Unsupported(_))) => return Ok(None),
            Ok(answer) => counted("renewal_info", answer)
                .map_err(|e| AcmeError::unavailable("renewal information", e))?,
        };
        let window = &info.suggested_window;
        let at = |seconds: i64, nanos: u32| {
            DateTime::<Utc>::from_timestamp(seconds, nanos).ok_or_else(|| AcmeError::Unavailable {
                context: "the CA's window is out of range".into(),
                source: None,
            })
        };
        Ok(Some(AriAnswer {
            window: RenewalWindow {
                start: at(window.start.unix_timestamp(), window.start.nanosecond())?,
                end: at(window.end.unix_timestamp(), window.end.nanosecond())?,
                explanation_url: info.explanation_url,
            },
            retry_after,
        }))
    }
}

impl AcmeClient {
    /// Revokes the leaf of `chain_pem` at the CA (RFC 8555 §7.6), signed by the account that
    /// ordered it.
    pub async fn revoke(
        &self,
        chain_pem: &str,
        reason: dns_handling_events::RevocationReason,
    ) -> Result<(), AcmeError> {
        use dns_handling_events::RevocationReason as Reason;
        let (_, pem) = x509_parser::pem::parse_x509_pem(chain_pem.as_bytes())
            .map_err(|e| AcmeError::unavailable("the certificate is not PEM", e))?;
        let certificate = CertificateDer::from(pem.contents);
        let reason = match reason {
            Reason::Unspecified => instant_acme::RevocationReason::Unspecified,
            Reason::KeyCompromise => instant_acme::RevocationReason::KeyCompromise,
            Reason::AffiliationChanged => instant_acme::RevocationReason::AffiliationChanged,
            Reason::Superseded => instant_acme::RevocationReason::Superseded,
            Reason::CessationOfOperation => instant_acme::RevocationReason::CessationOfOperation,
            Reason::PrivilegeWithdrawn => instant_acme::RevocationReason::PrivilegeWithdrawn,
        };
        let account = self.account().await?;
        let request = instant_acme::RevocationRequest {
            certificate: &certificate,
            reason: Some(reason),
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, account.revoke(&request)).await {
            Err(elapsed) => Err(AcmeError::unavailable(
                "the CA did not answer the revocation in time",
                elapsed,
            )),
            Ok(answer) => counted("revoke", answer)
                .map_err(|e| super::retry::classify(e, "revocation_refused")),
        }
    }
}
