//! The delegation zone's settings: its nameservers and their addresses, with what makes them
//! unusable.

use super::{Settings, SettingsError};

/// The address of one of the delegation zone's own nameservers (`ns1.acme.example=192.0.2.53`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameserverAddress {
    /// The nameserver's host name, normalised like a domain name (no final dot).
    pub name: String,
    /// One of its addresses: an A record for IPv4, AAAA for IPv6.
    pub address: std::net::IpAddr,
}

impl std::fmt::Display for NameserverAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.name, self.address)
    }
}

impl Settings {
    /// What is wrong with the delegation zone's nameservers, if anything: the zone needs their
    /// names, and those inside it their addresses.
    pub(super) fn delegation_problem(&self) -> Option<SettingsError> {
        if self.delegation_zone.is_some() && self.delegation_nameservers.is_empty() {
            return Some(SettingsError {
                name: "DELEGATION_NAMESERVERS".into(),
                value: String::new(),
                reason: "DELEGATION_ZONE needs the names of its nameservers (the replicas the \
                         parent zone delegates it to) for its SOA and NS answers"
                    .into(),
            });
        }
        self.nameserver_address_problem()
    }

    /// What is wrong with `DELEGATION_NAMESERVER_ADDRESSES`, if anything: an address for a
    /// name that is not among `DELEGATION_NAMESERVERS` or not inside the zone (the zone could
    /// not answer for it), or an in-zone nameserver without an address (a lame delegation:
    /// the parent's glue names an address the zone itself denies).
    fn nameserver_address_problem(&self) -> Option<SettingsError> {
        let refusal = |value: String, reason: String| SettingsError {
            name: "DELEGATION_NAMESERVER_ADDRESSES".into(),
            value,
            reason,
        };
        let Some(zone) = self.delegation_zone.as_deref() else {
            return (!self.delegation_nameserver_addresses.is_empty()).then(|| {
                refusal(
                    String::new(),
                    "addresses of nameservers need a DELEGATION_ZONE".into(),
                )
            });
        };
        let in_zone = |name: &str| name == zone || name.ends_with(&format!(".{zone}"));
        for given in &self.delegation_nameserver_addresses {
            if !self.delegation_nameservers.contains(&given.name) {
                return Some(refusal(
                    given.to_string(),
                    format!("{} is not among DELEGATION_NAMESERVERS", given.name),
                ));
            }
            if !in_zone(&given.name) {
                return Some(refusal(
                    given.to_string(),
                    format!(
                        "{} is not inside {zone}: its addresses belong in its own zone",
                        given.name
                    ),
                ));
            }
        }
        let without_address = self.delegation_nameservers.iter().find(|name| {
            in_zone(name)
                && !self
                    .delegation_nameserver_addresses
                    .iter()
                    .any(|given| &given.name == *name)
        })?;
        Some(refusal(
            String::new(),
            format!(
                "{without_address} (in DELEGATION_NAMESERVERS) is inside {zone}, which must \
                 answer its address: give it as {without_address}=<ip>"
            ),
        ))
    }

    /// The delegation zone, when delegated validation is on.
    pub fn delegation(&self) -> Option<crate::domain::delegation::DelegationZone> {
        // Parsed when read (`parse::dns_zone`), so it parses again.
        let zone = self.delegation_zone.as_deref()?;
        crate::domain::delegation::DelegationZone::parse(zone).ok()
    }
}
