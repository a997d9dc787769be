//! The lines of the certificate stream an edge follows (`GET /edge/certificates`, NDJSON): what
//! the service sends and what `dns-handling edge sync` reads, one type for both ends.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One line of the certificate stream. Every line carries the feed position to resume from.
///
/// A stream that starts from scratch (`after=0`, or a position too old to resume from) opens with
/// [`EdgeLine::SnapshotBegins`], sends a [`EdgeLine::Served`] for every certificate served at that
/// position, and closes the snapshot with [`EdgeLine::SnapshotEnds`]: whatever an edge holds that
/// the snapshot did not name is no longer served. The changes since then follow, in commit order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EdgeLine {
    /// A snapshot of every served certificate follows, as of `position`.
    SnapshotBegins {
        /// The feed position the snapshot shows.
        position: i64,
    },
    /// The snapshot is complete: resume from `position`.
    SnapshotEnds {
        /// The feed position the snapshot showed.
        position: i64,
    },
    /// The domain's names are served with this certificate (in a snapshot, or because it was just
    /// issued or renewed: then `replaces` names the certificate it takes the place of).
    Served(ServedCertificate),
    /// The domain's certificate is served no more (revoked, past its end, the domain removed):
    /// an edge forgets it and its key.
    Withdrawn {
        /// The feed position of the event that withdrew it.
        position: i64,
        /// The domain the certificate was served for.
        domain_id: String,
        /// The certificate withdrawn.
        certificate_id: String,
    },
}

impl EdgeLine {
    /// The feed position to resume from after this line.
    pub fn position(&self) -> i64 {
        match self {
            Self::SnapshotBegins { position }
            | Self::SnapshotEnds { position }
            | Self::Withdrawn { position, .. } => *position,
            Self::Served(served) => served.position,
        }
    }
}

/// A certificate an edge serves for a domain's names, with its key. Its `Debug` leaves the key
/// out, so that no log line can carry it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServedCertificate {
    /// The feed position of the event that made it served (in a snapshot: the snapshot's).
    pub position: i64,
    /// The domain it is served for: one served certificate per domain at a time.
    pub domain_id: String,
    /// The domain's name.
    pub domain_name: String,
    /// The certificate.
    pub certificate_id: String,
    /// The certificate it replaces, when it is a renewal an edge holds the previous one of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<String>,
    /// Every name it serves (the domain's name first, wildcards as `*.<parent>`), lower case
    /// A-labels.
    pub names: Vec<String>,
    /// Its validity.
    pub not_before: DateTime<Utc>,
    /// The end of its validity: an edge stops serving it then, whatever it hears.
    pub not_after: DateTime<Utc>,
    /// The leaf first, then the intermediates, PEM.
    pub chain_pem: String,
    /// The private key, PEM (PKCS#8).
    pub key_pem: String,
}

impl std::fmt::Debug for ServedCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServedCertificate")
            .field("position", &self.position)
            .field("domain_id", &self.domain_id)
            .field("domain_name", &self.domain_name)
            .field("certificate_id", &self.certificate_id)
            .field("replaces", &self.replaces)
            .field("names", &self.names)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .field("key_pem", &"(left out)")
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_served_certificate_s_debug_text_leaves_its_key_out() {
        let served = ServedCertificate {
            position: 1,
            domain_id: "d".into(),
            domain_name: "shop.example.test".into(),
            certificate_id: "c".into(),
            replaces: None,
            names: vec!["shop.example.test".into()],
            not_before: Utc::now(),
            not_after: Utc::now(),
            chain_pem: "CHAIN".into(),
            key_pem: "-----BEGIN PRIVATE KEY-----\nSECRET\n-----END PRIVATE KEY-----".into(),
        };
        let text = format!("{:?}", EdgeLine::Served(served));
        assert!(
            !text.contains("SECRET") && text.contains("shop.example.test"),
            "{text}"
        );
    }
}
