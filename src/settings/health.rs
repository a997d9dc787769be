//! The health checks' settings: what users' names must route to (`ROUTING_TARGETS`), how often
//! every domain is checked, how many checks run at once, and when a domain is `moved`.

use serde::{Deserializer, Serializer};

use super::values::parse;
use crate::domain::health::RoutingTargets;

/// The default interval between two checks of one domain: 6 hours.
pub(super) const DEFAULT_INTERVAL_SECS: u64 = 6 * 3600;

/// The default time every name must route elsewhere before a domain is `moved`: 72 hours.
pub(super) const DEFAULT_MOVED_AFTER_SECS: u64 = 72 * 3600;

/// The default number of domains checked at once, all replicas together being one at a time.
pub(super) const DEFAULT_CONCURRENCY: usize = 16;

/// Reads `ROUTING_TARGETS`: host names, addresses and prefixes, comma-separated (or a list).
pub(super) fn parse_routing_targets<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<RoutingTargets, D::Error> {
    let items = parse::list(d)?;
    RoutingTargets::parse(&items.join(",")).map_err(serde::de::Error::custom)
}

/// `ROUTING_TARGETS` as the environment spells it.
pub(super) fn show_routing_targets<S: Serializer>(
    targets: &RoutingTargets,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&targets.describe())
}
