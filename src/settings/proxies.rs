//! The proxies in front of the service (`TRUSTED_PROXIES`): a connection from one of them has
//! its client's address taken from `X-Forwarded-For` (see `http/client_address.rs`), which is
//! what a managed token's `allowed_from` is matched against.

use ipnet::IpNet;
use serde::de::{self, Deserializer};
use serde::Serializer;

use super::values::parse::list;

/// Parses `TRUSTED_PROXIES`: addresses (`10.0.0.7`, `2001:db8::7`) or prefixes (`10.0.0.0/8`),
/// comma-separated; an item that is neither is refused, naming it.
pub(super) fn trusted_proxies<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    list(d)?
        .iter()
        .map(|item| {
            item.parse::<IpNet>()
                .map(|net| net.trunc())
                .or_else(|_| item.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    de::Error::custom(format!(
                        "{item:?} is neither an address nor a prefix such as 10.0.0.0/8"
                    ))
                })
        })
        .collect()
}

/// The prefixes as `TRUSTED_PROXIES` spells them.
pub(super) fn show<S: Serializer>(proxies: &[IpNet], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(proxies.iter().map(IpNet::to_string))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use crate::settings::Settings;

    fn load(value: &str) -> Result<Settings, crate::settings::SettingsError> {
        Settings::from_map(&HashMap::from([(
            "TRUSTED_PROXIES".to_owned(),
            value.to_owned(),
        )]))
    }

    #[test]
    fn trusted_proxies_are_addresses_or_prefixes_and_none_by_default() {
        let defaults = Settings::from_map(&HashMap::new()).expect("defaults");
        assert!(defaults.trusted_proxies.is_empty());
        let proxies = load("10.1.2.3/8, 192.0.2.7,2001:db8::1")
            .expect("valid")
            .trusted_proxies;
        let shown: Vec<String> = proxies.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["10.0.0.0/8", "192.0.2.7/32", "2001:db8::1/128"]);
    }

    #[test]
    fn a_trusted_proxy_that_is_not_an_address_or_prefix_is_refused_at_start() {
        for bad in ["proxy.internal", "10.0.0.0/33", "10.0.0"] {
            let error = load(bad).expect_err(bad);
            let text = error.to_string();
            assert!(
                text.contains("TRUSTED_PROXIES") && text.contains(bad),
                "{bad}: {text}"
            );
        }
    }
}
