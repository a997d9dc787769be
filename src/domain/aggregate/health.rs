//! Health: what the checks of the domain's DNS found is recorded only when it differs from what
//! was recorded last (a check that finds the same again records nothing), and a failed lookup
//! (`unknown`) never changes a recorded outcome.

use chrono::{DateTime, Utc};
use dns_handling_events::{CustomDomainEvent, HealthReport};

use super::{CustomDomain, DomainError};
use crate::domain::health::settled;

/// The command.
impl CustomDomain {
    pub(super) fn record_health(
        &self,
        report: HealthReport,
        at: DateTime<Utc>,
    ) -> Result<Option<CustomDomainEvent>, DomainError> {
        self.require_registered()?;
        let last = self.health.clone().unwrap_or_default();
        let report = settled(self.health.as_ref(), report);
        if last.same_outcomes(&report) {
            return Ok(None);
        }
        Ok(Some(CustomDomainEvent::HealthChanged {
            report,
            checked_at: at,
        }))
    }
}

/// The fold.
impl CustomDomain {
    pub(super) fn fold_health_changed(&mut self, report: HealthReport) {
        self.health = Some(report);
    }
}
