//! Domain health: what the DNS says of a domain's names now, judged against what the platform
//! expects. Routing (each name resolves to the platform: a CNAME chain reaching one of the
//! `ROUTING_TARGETS` host names, or an address inside one of its prefixes), delegation (each
//! `_acme-challenge` CNAME still leads to its record in the delegation zone) and CAA (a
//! configured CA may issue). Pure: the lookups are `adapters/`', the orchestration
//! `use_cases/health.rs`'.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use dns_handling_events::{CheckOutcome, HealthReport, NameCheck};
use ipnet::IpNet;

use super::caa::{verdict, CaaCa, CaaVerdict, NameCaa};
use super::delegation::{DelegationRecord, DelegationZone};

/// Where the platform's users point their names (`ROUTING_TARGETS`): host names they CNAME to,
/// and addresses or prefixes their A/AAAA records may hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutingTargets {
    /// Host names, lower case, without the trailing dot.
    pub hosts: Vec<String>,
    /// Addresses (as /32 and /128 prefixes) and prefixes.
    pub networks: Vec<IpNet>,
}

impl RoutingTargets {
    /// Parses the setting's comma-separated items: each an address, a prefix
    /// (`203.0.113.0/24`, `2001:db8::/32`) or a host name.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut targets = Self::default();
        for item in text
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
        {
            if let Ok(network) = item.parse::<IpNet>() {
                targets.networks.push(network.trunc());
            } else if let Ok(address) = item.parse::<IpAddr>() {
                targets.networks.push(IpNet::from(address));
            } else if item.contains('/') || item.parse::<std::net::Ipv6Addr>().is_ok() {
                return Err(format!("{item:?} is not an address or a prefix"));
            } else {
                let name = super::domain_name::DomainName::parse(item)
                    .map_err(|error| format!("{item:?}: {error}"))?;
                targets.hosts.push(name.to_string());
            }
        }
        Ok(targets)
    }

    /// Whether there is anything to check routing against.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty() && self.networks.is_empty()
    }

    /// The targets as the setting spells them, for what a check expected.
    pub fn describe(&self) -> String {
        self.hosts
            .iter()
            .cloned()
            .chain(self.networks.iter().map(ToString::to_string))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn is_target_host(&self, name: &str) -> bool {
        let name = name.trim_end_matches('.');
        self.hosts
            .iter()
            .any(|host| host.eq_ignore_ascii_case(name))
    }

    fn contains(&self, address: IpAddr) -> bool {
        self.networks
            .iter()
            .any(|network| network.contains(&address))
    }
}

/// What resolving one name's addresses found, following CNAMEs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// The name exists: the CNAME targets on the way (in order) and its A/AAAA addresses (none
    /// when it has no address records).
    Found {
        /// The targets of the CNAME chain, without trailing dots.
        aliases: Vec<String>,
        /// Every A and AAAA address at the chain's end.
        addresses: Vec<IpAddr>,
    },
    /// NXDOMAIN.
    NoSuchName,
    /// The lookup failed (SERVFAIL, timeout): why.
    Failed(String),
}

/// Whether a name routes to the platform: `ok` when its CNAME chain reaches a target host name
/// or one of its addresses is inside a target; `missing` without any address; `elsewhere`
/// otherwise; `unknown` when the lookup failed.
pub fn routing_check(targets: &RoutingTargets, name: &str, resolution: &Resolution) -> NameCheck {
    let (outcome, found) = match resolution {
        Resolution::Failed(reason) => (CheckOutcome::Unknown, reason.clone()),
        Resolution::NoSuchName => (CheckOutcome::Missing, "NXDOMAIN".to_owned()),
        Resolution::Found { aliases, addresses } => {
            let found = aliases
                .iter()
                .map(|alias| format!("CNAME {alias}"))
                .chain(addresses.iter().map(ToString::to_string))
                .collect::<Vec<_>>()
                .join(", ");
            let routed = aliases.iter().any(|alias| targets.is_target_host(alias))
                || addresses.iter().any(|address| targets.contains(*address));
            let outcome = if routed {
                CheckOutcome::Ok
            } else if addresses.is_empty() {
                CheckOutcome::Missing
            } else {
                CheckOutcome::Elsewhere
            };
            let found = if found.is_empty() {
                "no address".to_owned()
            } else {
                found
            };
            (outcome, found)
        }
    };
    NameCheck {
        name: name.to_owned(),
        outcome,
        expected: targets.describe(),
        found,
    }
}

/// The names whose routing is checked: every name but the wildcards, whose records are those of
/// names no one lists (their base name, when a name of the domain, is checked as itself).
pub fn routed_names(names: &[String]) -> Vec<String> {
    names
        .iter()
        .filter(|name| !name.starts_with("*."))
        .cloned()
        .collect()
}

/// Whether a name's `_acme-challenge` CNAME, as seen (`Err` for a failed lookup), still leads
/// to its record in the delegation zone.
pub fn delegation_check(
    name: &str,
    record: &DelegationRecord,
    seen: Result<Option<&str>, &str>,
) -> NameCheck {
    let (outcome, found) = match seen {
        Err(reason) => (CheckOutcome::Unknown, reason.to_owned()),
        Ok(None) => (
            CheckOutcome::Missing,
            format!("no CNAME at {}", record.name),
        ),
        Ok(Some(target)) => match DelegationZone::problem_with(record, Some(target)) {
            None => (CheckOutcome::Ok, format!("CNAME {target}")),
            Some(_) => (CheckOutcome::Elsewhere, format!("CNAME {target}")),
        },
    };
    NameCheck {
        name: name.to_owned(),
        outcome,
        expected: format!("{} CNAME {}", record.name, record.target),
        found,
    }
}

/// What the aggregate records of a new report: an `unknown` outcome (a failed lookup) keeps
/// the outcome last recorded for that check and name, so a resolver's failure changes nothing;
/// with none recorded it stays `unknown`.
pub fn settled(last: Option<&HealthReport>, report: HealthReport) -> HealthReport {
    let Some(last) = last else {
        return report;
    };
    let keep = |previous: &[NameCheck], checks: Vec<NameCheck>| -> Vec<NameCheck> {
        checks
            .into_iter()
            .map(|check| match check.outcome {
                CheckOutcome::Unknown => previous
                    .iter()
                    .find(|known| known.name == check.name)
                    .cloned()
                    .unwrap_or(check),
                _ => check,
            })
            .collect()
    };
    HealthReport {
        routing: keep(&last.routing, report.routing),
        delegation: keep(&last.delegation, report.delegation),
        caa: keep(&last.caa, report.caa),
    }
}

/// Whether a configured CA may issue for a name under its relevant CAA records (`Err`: the
/// lookup failed, why). `cas` are the CAs whose CAA identities are known; with none known,
/// records cannot be judged and the outcome is `unknown` (no records at all is `ok`).
pub fn caa_check(name: &str, relevant: Result<&NameCaa, &str>, cas: &[CaaCa]) -> NameCheck {
    let expected = match cas {
        [] => "no CAA records, or records permitting a configured CA".to_owned(),
        cas => format!(
            "no CAA records, or one permitting {}",
            cas.iter()
                .flat_map(|ca| ca.identities.iter().cloned())
                .collect::<Vec<_>>()
                .join(" or ")
        ),
    };
    let (outcome, found) = match relevant {
        Err(reason) => (CheckOutcome::Unknown, reason.to_owned()),
        Ok(relevant) if relevant.records.is_empty() => {
            (CheckOutcome::Ok, "no CAA records".to_owned())
        }
        Ok(relevant) => {
            let records = relevant
                .records
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            let at = relevant.found_at.as_deref().unwrap_or(name);
            let found = format!("{records} at {at}");
            let permitted = cas
                .iter()
                .any(|ca| verdict(name, &relevant.records, ca) == CaaVerdict::Permitted);
            let outcome = if cas.is_empty() {
                CheckOutcome::Unknown
            } else if permitted {
                CheckOutcome::Ok
            } else {
                CheckOutcome::Forbidden
            };
            (outcome, found)
        }
    };
    NameCheck {
        name: name.to_owned(),
        outcome,
        expected,
        found,
    }
}

/// Whether a domain `moved` since `moved_since` is to be removed at `now` under
/// `MOVED_REMOVE_AFTER` (`remove_after`; unset, never).
pub fn moved_long_enough(
    moved_since: DateTime<Utc>,
    remove_after: Option<chrono::Duration>,
    now: DateTime<Utc>,
) -> bool {
    remove_after.is_some_and(|after| now - moved_since >= after)
}

#[cfg(test)]
mod tests;
