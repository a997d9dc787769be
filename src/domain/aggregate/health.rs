//! Health: what the checks of the domain's DNS found is recorded only when it differs from what
//! was recorded last (a check that finds the same again records nothing), and a failed lookup
//! (`unknown`) never changes a recorded outcome. A domain whose names all route elsewhere (or
//! nowhere) for `MOVED_AFTER` is `moved`: it has no renewal ordered; routing back returns it.

use chrono::{DateTime, Duration, Utc};
use dns_handling_events::{CheckOutcome, CustomDomainEvent, DomainStatus, HealthReport};

use super::{CustomDomain, DomainError};
use crate::domain::health::settled;

/// The command.
impl CustomDomain {
    /// The events of a health report found at `at`: `HealthChanged` when an outcome changed,
    /// then `DomainMoved` or `DomainReturned` when the routing says so.
    pub(super) fn record_health(
        &self,
        report: HealthReport,
        moved_after: Duration,
        at: DateTime<Utc>,
    ) -> Result<Vec<CustomDomainEvent>, DomainError> {
        self.require_registered()?;
        let last = self.health.clone().unwrap_or_default();
        // Whether this check itself saw every name gone: a failed lookup proves nothing.
        let seen_gone = routing_gone(&report);
        let report = settled(self.health.as_ref(), report);
        let mut events = Vec::new();
        let lost_at = match self.routing_lost_at {
            Some(since) if routing_gone(&report) => Some(since),
            _ if routing_gone(&report) => Some(at),
            _ => None,
        };
        let routed = report
            .routing
            .iter()
            .any(|check| check.outcome == CheckOutcome::Ok);
        if !last.same_outcomes(&report) {
            events.push(CustomDomainEvent::HealthChanged {
                report,
                checked_at: at,
            });
        }
        let movable = matches!(self.status, DomainStatus::Active | DomainStatus::Expired);
        match lost_at {
            Some(since) if movable && seen_gone && at - since >= moved_after => {
                events.push(CustomDomainEvent::DomainMoved {
                    routing_lost_at: since,
                    moved_at: at,
                });
            }
            _ if self.status == DomainStatus::Moved && routed => {
                let ended = self
                    .current_certificate
                    .as_ref()
                    .is_some_and(|certificate| certificate.not_after <= at);
                let status = match ended {
                    true => DomainStatus::Expired,
                    false => DomainStatus::Active,
                };
                events.push(CustomDomainEvent::DomainReturned {
                    status,
                    returned_at: at,
                });
            }
            _ => {}
        }
        Ok(events)
    }
}

/// Whether every name checked routes elsewhere or nowhere (and there is a name checked).
fn routing_gone(report: &HealthReport) -> bool {
    !report.routing.is_empty()
        && report.routing.iter().all(|check| {
            matches!(
                check.outcome,
                CheckOutcome::Elsewhere | CheckOutcome::Missing
            )
        })
}

/// The folds.
impl CustomDomain {
    pub(super) fn fold_health_changed(&mut self, report: HealthReport, checked_at: DateTime<Utc>) {
        self.routing_lost_at = match self.routing_lost_at {
            Some(since) if routing_gone(&report) => Some(since),
            _ if routing_gone(&report) => Some(checked_at),
            _ => None,
        };
        self.health = Some(report);
    }

    pub(super) fn fold_moved(&mut self) {
        self.status = DomainStatus::Moved;
    }

    pub(super) fn fold_returned(&mut self, status: DomainStatus) {
        self.status = status;
    }
}
