//! Certificates: the CSR for an order's key, and the public facts of the chain the CA issues.

use chrono::{DateTime, Utc};
use dns_handling_events::{FailureReason, IssuedCertificate};
use sha2::{Digest, Sha256};

use super::AcmeError;

/// The CSR for every name of an order (each a subjectAltName), signed with the order's key
/// (PEM); a key that cannot be read fails the order (`csr_failed`), as no retry would read it
/// either.
pub(super) fn build_csr(names: &[String], key_pem: &str) -> Result<Vec<u8>, AcmeError> {
    let fail =
        |e: rcgen::Error| AcmeError::Refused(FailureReason::new("csr_failed", e.to_string()));
    let key = rcgen::KeyPair::from_pem(key_pem).map_err(fail)?;
    let mut params = rcgen::CertificateParams::new(names.to_vec()).map_err(fail)?;
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
        ca_directory: String::new(),
    })
}

/// The DNS names of a chain's leaf certificate, read from its subjectAltName extension (empty
/// when the chain cannot be read or has none).
pub fn certificate_names(chain_pem: &str) -> Vec<String> {
    let Ok((_, pem)) = x509_parser::pem::parse_x509_pem(chain_pem.as_bytes()) else {
        return Vec::new();
    };
    let Ok(leaf) = pem.parse_x509() else {
        return Vec::new();
    };
    let Ok(Some(alt_names)) = leaf.subject_alternative_name() else {
        return Vec::new();
    };
    alt_names
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            x509_parser::extensions::GeneralName::DNSName(name) => Some((*name).to_owned()),
            _ => None,
        })
        .collect()
}

/// The issuer's distinguished name of a chain's leaf certificate (`None` when unreadable).
pub fn certificate_issuer(chain_pem: &str) -> Option<String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(chain_pem.as_bytes()).ok()?;
    let leaf = pem.parse_x509().ok()?;
    Some(leaf.issuer().to_string())
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
