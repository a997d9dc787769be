//! The tenants' settings: how many domains one tenant may hold (`TENANT_DOMAIN_LIMIT`).

use serde::de::Deserializer;

use super::values::parse::read;

/// Parses `TENANT_DOMAIN_LIMIT`: a whole number of at least 1 (unset means no limit; a limit
/// of 0 would be a tenant that can hold nothing, which an unused tenant already is).
pub(super) fn domain_limit<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    read(d, |text| match text.trim().parse::<u32>() {
        Ok(0) => Err("must be at least 1 (leave it unset for no limit)".to_owned()),
        Ok(limit) => Ok(Some(limit)),
        Err(_) => Err("expected a whole number".to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use crate::settings::Settings;

    fn load(value: &str) -> Result<Settings, crate::settings::SettingsError> {
        Settings::from_map(&HashMap::from([(
            "TENANT_DOMAIN_LIMIT".to_owned(),
            value.to_owned(),
        )]))
    }

    #[test]
    fn tenants_have_no_domain_limit_unless_one_is_set() {
        let defaults = Settings::from_map(&HashMap::new()).expect("defaults");
        assert_eq!(defaults.tenant_domain_limit, None);
        assert_eq!(load("3").expect("valid").tenant_domain_limit, Some(3));
    }

    #[test]
    fn a_domain_limit_of_zero_or_not_a_number_is_refused() {
        for bad in ["0", "-1", "many", "1.5"] {
            let error = load(bad).expect_err(bad);
            assert!(
                error.to_string().contains("TENANT_DOMAIN_LIMIT"),
                "{bad}: {error}"
            );
        }
    }
}
