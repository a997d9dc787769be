//! The certificates table, derived from the events: one row per certificate the service set
//! out to get, from the first order for it to its issue, and what became of it (revoked,
//! expired). A row whose orders all failed so far has no certificate yet (`status` `failed`),
//! one still ordered is `pending`.
//!
//! A row starts with a domain's `CertificateRequested` or `RenewalRequested` when no row of
//! that domain is open, counts every further order placed for it (a retry after a failure, the
//! next renewal attempt) in `attempts`, and closes with `CertificateIssued`.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use dns_handling_events::{CustomDomainEvent, OrderDetails};

use super::table::{optional, required, Cell, ColumnSpec, Kind};

/// The columns of `certificates.parquet`, in their order. Documented in `docs/analytics.md`.
pub const CERTIFICATE_COLUMNS: &[ColumnSpec] = &[
    required("aggregate_id", Kind::Text),
    optional("domain_name", Kind::Text),
    required("status", Kind::Text),
    optional("certificate_id", Kind::Text),
    required("order_id", Kind::Text),
    required("first_requested_at", Kind::Timestamp),
    required("requested_at", Kind::Timestamp),
    optional("issued_at", Kind::Timestamp),
    optional("seconds_to_issue", Kind::Int),
    required("names", Kind::Text),
    optional("ca_directory", Kind::Text),
    required("key_type", Kind::Text),
    required("validation", Kind::Text),
    optional("renewal_reason", Kind::Text),
    optional("replaced_certificate_id", Kind::Text),
    optional("replaced_not_after", Kind::Timestamp),
    optional("seconds_before_replaced_expiry", Kind::Int),
    optional("serial", Kind::Text),
    optional("not_before", Kind::Timestamp),
    optional("not_after", Kind::Timestamp),
    optional("revoked_at", Kind::Timestamp),
    optional("revocation_reason", Kind::Text),
    optional("expired_at", Kind::Timestamp),
    required("attempts", Kind::Int),
    optional("failure_codes", Kind::Text),
    optional("last_failure_detail", Kind::Text),
];

/// One row of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateRow {
    /// The domain (stream).
    pub aggregate_id: String,
    /// Its name.
    pub domain_name: Option<String>,
    /// `issued`, `failed` (the last order failed) or `pending`.
    pub status: &'static str,
    /// The certificate, once issued.
    pub certificate_id: Option<String>,
    /// The last order placed for it (the one that issued it, once issued).
    pub order_id: String,
    /// When its first order was placed.
    pub first_requested_at: DateTime<Utc>,
    /// When its last order was placed.
    pub requested_at: DateTime<Utc>,
    /// When it was issued.
    pub issued_at: Option<DateTime<Utc>>,
    /// The names it covers, joined with `,`.
    pub names: String,
    /// The CA's ACME directory.
    pub ca_directory: String,
    /// `rsa2048` or `ecdsa-p256`.
    pub key_type: &'static str,
    /// `manual` or `delegated`.
    pub validation: &'static str,
    /// Why it renews another certificate, for a renewal.
    pub renewal_reason: Option<&'static str>,
    /// The certificate it replaces, for a renewal.
    pub replaced_certificate_id: Option<String>,
    /// That certificate's end of validity.
    pub replaced_not_after: Option<DateTime<Utc>>,
    /// Serial number, lower-case hex.
    pub serial: Option<String>,
    /// Start of validity.
    pub not_before: Option<DateTime<Utc>>,
    /// End of validity.
    pub not_after: Option<DateTime<Utc>>,
    /// When it was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
    /// Why, as ACME's reason name (`keyCompromise`, …).
    pub revocation_reason: Option<String>,
    /// When its expiry was recorded.
    pub expired_at: Option<DateTime<Utc>>,
    /// Orders placed for it, and renewal attempts that failed before placing one.
    pub attempts: i64,
    /// The failure code of every failed attempt, in order.
    pub failure_codes: Vec<String>,
    /// What the last failure said.
    pub last_failure_detail: Option<String>,
}

/// The table being derived, event after event.
#[derive(Debug, Default)]
pub struct CertificateLedger {
    rows: Vec<CertificateRow>,
    /// The row each domain is ordering for, if any.
    open: HashMap<String, usize>,
    /// The row of each issued certificate.
    by_certificate: HashMap<String, usize>,
    /// Each domain's certificate in service.
    current: HashMap<String, String>,
    /// Each domain's name.
    names: HashMap<String, String>,
}

/// The event types the ledger reads; the others are skipped without being decoded.
pub fn concerns(event_type: &str) -> bool {
    matches!(
        event_type,
        "DomainRegistered"
            | "CertificateRequested"
            | "RenewalRequested"
            | "IssuanceFailed"
            | "IssuanceTimedOut"
            | "RenewalFailed"
            | "CertificateIssued"
            | "CertificateRevoked"
            | "CertificateExpired"
            | "DomainRemoved"
    )
}

impl CertificateLedger {
    /// The rows so far, in the order their first order was placed.
    pub fn rows(&self) -> &[CertificateRow] {
        &self.rows
    }

    /// The name domain `aggregate_id` was registered under, once its registration was read.
    pub fn domain_name(&self, aggregate_id: &str) -> Option<&str> {
        self.names.get(aggregate_id).map(String::as_str)
    }

    /// Takes in one event of domain `aggregate_id`.
    pub fn apply(&mut self, aggregate_id: &str, event: &CustomDomainEvent) {
        use CustomDomainEvent as E;
        match event {
            E::DomainRegistered { domain_name, .. } => {
                self.names
                    .insert(aggregate_id.to_owned(), domain_name.clone());
            }
            E::CertificateRequested {
                order,
                requested_at,
            } => self.order_placed(aggregate_id, order, *requested_at, None),
            E::RenewalRequested {
                order,
                reason,
                renews_certificate_id,
                requested_at,
                ..
            } => self.order_placed(
                aggregate_id,
                order,
                *requested_at,
                Some((reason.as_str(), renews_certificate_id.clone())),
            ),
            E::IssuanceFailed { reason, .. } | E::RenewalFailed { reason, .. } => {
                let placed = !matches!(event, E::RenewalFailed { order_id: None, .. });
                self.failed(aggregate_id, &reason.code, &reason.detail, placed);
            }
            E::IssuanceTimedOut {
                deadline,
                unseen_names,
                ..
            } => {
                let reason = dns_handling_events::FailureReason::timed_out(deadline, unseen_names);
                self.failed(aggregate_id, &reason.code, &reason.detail, true);
            }
            E::CertificateIssued {
                certificate,
                issued_at,
            } => {
                let Some(index) = self.open.remove(aggregate_id) else {
                    return;
                };
                let row = &mut self.rows[index];
                row.status = "issued";
                row.certificate_id = Some(certificate.certificate_id.clone());
                row.order_id.clone_from(&certificate.order_id);
                row.issued_at = Some(*issued_at);
                row.serial = Some(certificate.serial.clone());
                row.not_before = Some(certificate.not_before);
                row.not_after = Some(certificate.not_after);
                if !certificate.ca_directory.is_empty() {
                    row.ca_directory.clone_from(&certificate.ca_directory);
                }
                self.by_certificate
                    .insert(certificate.certificate_id.clone(), index);
                self.current
                    .insert(aggregate_id.to_owned(), certificate.certificate_id.clone());
            }
            E::CertificateRevoked {
                certificate_id,
                reason,
                revoked_at,
            } => {
                if let Some(&index) = self.by_certificate.get(certificate_id) {
                    self.rows[index].revoked_at = Some(*revoked_at);
                    self.rows[index].revocation_reason = serde_json::to_value(reason)
                        .ok()
                        .and_then(|value| value.as_str().map(str::to_owned));
                }
            }
            E::CertificateExpired {
                certificate_id,
                expired_at,
                ..
            } => {
                if let Some(&index) = self.by_certificate.get(certificate_id) {
                    self.rows[index].expired_at = Some(*expired_at);
                }
            }
            E::DomainRemoved { .. } => {
                self.open.remove(aggregate_id);
            }
            _ => {}
        }
    }

    /// An order was placed: the open row's next attempt, or a new row.
    fn order_placed(
        &mut self,
        aggregate_id: &str,
        order: &OrderDetails,
        requested_at: DateTime<Utc>,
        renewal: Option<(&'static str, String)>,
    ) {
        let index = match self.open.get(aggregate_id) {
            Some(&index) => {
                self.rows[index].attempts += 1;
                index
            }
            None => {
                let (reason, replaced) = renewal.unzip();
                let replaced_not_after = replaced
                    .as_ref()
                    .and_then(|id| self.by_certificate.get(id))
                    .and_then(|&replaced| self.rows[replaced].not_after);
                let index = self.new_row(aggregate_id, &order.order_id, requested_at);
                let row = &mut self.rows[index];
                row.attempts = 1;
                row.renewal_reason = reason;
                row.replaced_not_after = replaced_not_after;
                row.replaced_certificate_id = replaced;
                index
            }
        };
        let row = &mut self.rows[index];
        row.status = "pending";
        row.order_id.clone_from(&order.order_id);
        row.requested_at = requested_at;
        row.names = order.names.join(",");
        row.ca_directory.clone_from(&order.ca_directory);
        row.key_type = order.key_type.as_str();
        row.validation = order.validation.as_str();
    }

    /// An attempt failed (`placed`: after its order was placed, already counted).
    fn failed(&mut self, aggregate_id: &str, code: &str, detail: &str, placed: bool) {
        let index = match self.open.get(aggregate_id) {
            Some(&index) => {
                if !placed {
                    self.rows[index].attempts += 1;
                }
                index
            }
            // A renewal that failed before its first order: the row of the renewal of the
            // certificate in service.
            None => {
                let Some(replaced) = self.current.get(aggregate_id).cloned() else {
                    return;
                };
                let at = self
                    .by_certificate
                    .get(&replaced)
                    .and_then(|&index| self.rows[index].issued_at)
                    .unwrap_or_default();
                let index = self.new_row(aggregate_id, "", at);
                let replaced_row = self.by_certificate.get(&replaced).copied();
                let row = &mut self.rows[index];
                row.attempts = 1;
                row.replaced_certificate_id = Some(replaced);
                if let Some(replaced_row) = replaced_row {
                    let source = self.rows[replaced_row].clone();
                    let row = &mut self.rows[index];
                    row.replaced_not_after = source.not_after;
                    row.names = source.names;
                    row.ca_directory = source.ca_directory;
                    row.key_type = source.key_type;
                    row.validation = source.validation;
                }
                index
            }
        };
        let row = &mut self.rows[index];
        row.status = "failed";
        row.failure_codes.push(code.to_owned());
        row.last_failure_detail = Some(detail.to_owned());
    }

    fn new_row(&mut self, aggregate_id: &str, order_id: &str, at: DateTime<Utc>) -> usize {
        self.rows.push(CertificateRow {
            aggregate_id: aggregate_id.to_owned(),
            domain_name: self.names.get(aggregate_id).cloned(),
            status: "pending",
            certificate_id: None,
            order_id: order_id.to_owned(),
            first_requested_at: at,
            requested_at: at,
            issued_at: None,
            names: String::new(),
            ca_directory: String::new(),
            key_type: "rsa2048",
            validation: "manual",
            renewal_reason: None,
            replaced_certificate_id: None,
            replaced_not_after: None,
            serial: None,
            not_before: None,
            not_after: None,
            revoked_at: None,
            revocation_reason: None,
            expired_at: None,
            attempts: 0,
            failure_codes: Vec::new(),
            last_failure_detail: None,
        });
        let index = self.rows.len() - 1;
        self.open.insert(aggregate_id.to_owned(), index);
        index
    }
}

impl CertificateRow {
    /// The row's cells, in the order of [`CERTIFICATE_COLUMNS`].
    pub fn cells(&self) -> Vec<Option<Cell>> {
        let text = |value: &str| Some(Cell::Text(value.to_owned()));
        let at = |value: Option<DateTime<Utc>>| value.map(|at| Cell::Int(at.timestamp_micros()));
        vec![
            text(&self.aggregate_id),
            self.domain_name.as_deref().and_then(text),
            text(self.status),
            self.certificate_id.as_deref().and_then(text),
            text(&self.order_id),
            at(Some(self.first_requested_at)),
            at(Some(self.requested_at)),
            at(self.issued_at),
            self.issued_at
                .map(|issued| Cell::Int((issued - self.requested_at).num_seconds())),
            text(&self.names),
            (!self.ca_directory.is_empty())
                .then_some(self.ca_directory.as_str())
                .and_then(text),
            text(self.key_type),
            text(self.validation),
            self.renewal_reason.and_then(text),
            self.replaced_certificate_id.as_deref().and_then(text),
            at(self.replaced_not_after),
            self.issued_at
                .zip(self.replaced_not_after)
                .map(|(issued, end)| Cell::Int((end - issued).num_seconds())),
            self.serial.as_deref().and_then(text),
            at(self.not_before),
            at(self.not_after),
            at(self.revoked_at),
            self.revocation_reason.as_deref().and_then(text),
            at(self.expired_at),
            Some(Cell::Int(self.attempts)),
            (!self.failure_codes.is_empty())
                .then(|| self.failure_codes.join(","))
                .map(Cell::Text),
            self.last_failure_detail.as_deref().and_then(text),
        ]
    }
}

#[cfg(test)]
#[path = "certificates_tests.rs"]
mod tests;
