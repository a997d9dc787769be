//! The messages between the actors, and the order they carry: what the HTTP handlers, the
//! renewal scheduler and the pollers tell the `Supervisor`, and what it tells them. Apart from
//! both sides, so that a poller reports to its supervisor without knowing its type (it holds a
//! `Recipient<PollerStopped>`), and the supervisor and its pollers do not import each other.

use actix::prelude::*;
use chrono::{DateTime, Utc};
use dns_handling_events::OrderDetails;

use crate::adapters::store::StoreError;

/// An order waiting for its challenge record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingOrder {
    /// The domain (aggregate) id.
    pub domain_id: String,
    /// The domain's name, for the CSR.
    pub domain_name: String,
    /// The order as recorded in `CertificateRequested` or `RenewalRequested`.
    pub order: OrderDetails,
    /// The order renews a certificate in service (for the renewal metrics).
    pub renewal: bool,
    /// When the certificate was requested, for the issuance-duration metric (after a restart:
    /// the view's last change, which is the request unless the record was already seen).
    pub requested_at: DateTime<Utc>,
}

/// Start polling an order, if this replica gets its lease (ignored when already polled here).
#[derive(Message)]
#[rtype(result = "()")]
pub struct StartPolling(pub PendingOrder);

/// Stop polling a domain's order at once (the domain was removed): its poller ends and its
/// lease is released. Ignored when this replica does not poll the domain.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopPolling(pub String);

/// Claim and start every pending order nobody else holds; answers how many are polled here.
#[derive(Message)]
#[rtype(result = "Result<usize, StoreError>")]
pub struct ResumePending;

/// Stop (sent to the supervisor: stop every poller, then itself).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

/// A poller ended.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct PollerStopped {
    /// The domain whose order it polled.
    pub domain_id: String,
    /// The order it polled.
    pub order_id: String,
    /// False when it died without its order reaching an end (a poll panicked or was
    /// cancelled): the order is still pending and is polled again.
    pub finished: bool,
}
