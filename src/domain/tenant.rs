//! `TenantId`: the platform's own id of the account a domain belongs to (`acct_123`),
//! validated once so no other code checks it. The same rule holds for a domain's tenant and a
//! `tenant` token's.

use serde::{Deserialize, Serialize};

/// The longest tenant id, in characters.
pub const MAX_TENANT_CHARS: usize = 64;

/// A tenant id: 1 to [`MAX_TENANT_CHARS`] ASCII letters, digits, `_` or `-`, kept as given
/// (case matters: `Acct_1` and `acct_1` are two tenants).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TenantId(String);

/// Why a text is not a tenant id; the message is shown to API clients as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tenant must be 1 to {MAX_TENANT_CHARS} letters, digits, '_' or '-'")]
pub struct TenantIdError;

impl TenantId {
    /// Checks `text` against the rule; no normalisation, so what is stored is what was sent.
    pub fn parse(text: &str) -> Result<TenantId, TenantIdError> {
        let fits = (1..=MAX_TENANT_CHARS).contains(&text.chars().count())
            && text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        match fits {
            true => Ok(TenantId(text.to_owned())),
            false => Err(TenantIdError),
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id, owned.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl std::fmt::Display for TenantId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which domains a caller sees and acts on: every domain, or one tenant's only. Decided once
/// per request from its credential; the list, the feed and registration take it, and the
/// routes of one domain are checked against it before their handler runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every domain (admins, auditors, edges).
    All,
    /// The domains of this tenant only (a `tenant` token).
    Tenant(TenantId),
}

/// Which domains a list holds, as a [`Scope`] decides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listed<'a> {
    /// Every domain.
    Every,
    /// This tenant's.
    Of(&'a str),
    /// None.
    Nothing,
}

/// Why a registration's `tenant` is refused to a caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a tenant token registers domains of its own tenant ({0}) only")]
pub struct OtherTenant(pub String);

impl Scope {
    /// Whether a domain of `tenant` (none: of no tenant) is in the scope.
    pub fn admits(&self, tenant: Option<&str>) -> bool {
        match self {
            Self::All => true,
            Self::Tenant(own) => tenant == Some(own.as_str()),
        }
    }

    /// The tenant a registration asking for `asked` records: as asked for every domain's
    /// caller; a tenant's own (asked or not), and another refused, for a tenant's.
    pub fn tenant_to_register<'a>(
        &'a self,
        asked: Option<&'a str>,
    ) -> Result<Option<&'a str>, OtherTenant> {
        match (self, asked) {
            (Self::All, asked) => Ok(asked),
            (Self::Tenant(own), None) => Ok(Some(own.as_str())),
            (Self::Tenant(own), Some(asked)) if asked == own.as_str() => Ok(Some(own.as_str())),
            (Self::Tenant(own), Some(_)) => Err(OtherTenant(own.to_string())),
        }
    }

    /// The domains a list asking for `asked` holds: the asked tenant's (or every domain) for
    /// every domain's caller; a tenant's own, or none (an empty list, as for a tenant without
    /// domains) when it asks for another.
    pub fn tenant_to_list<'a>(&'a self, asked: Option<&'a str>) -> Listed<'a> {
        match (self, asked) {
            (Self::All, None) => Listed::Every,
            (Self::All, Some(asked)) => Listed::Of(asked),
            (Self::Tenant(own), Some(asked)) if asked != own.as_str() => Listed::Nothing,
            (Self::Tenant(own), _) => Listed::Of(own.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_id_of_letters_digits_underscores_and_hyphens_is_kept_as_given() {
        let id = TenantId::parse("Acct_12-x").expect("valid");
        assert_eq!(id.as_str(), "Acct_12-x");
        assert!(TenantId::parse(&"a".repeat(MAX_TENANT_CHARS)).is_ok());
    }

    #[test]
    fn an_empty_long_or_punctuated_tenant_id_is_refused() {
        for bad in ["", "acct 1", "acct/1", "acct.1", "ácct", "a%2F"] {
            assert_eq!(TenantId::parse(bad), Err(TenantIdError), "{bad:?}");
        }
        assert!(TenantId::parse(&"a".repeat(MAX_TENANT_CHARS + 1)).is_err());
    }

    #[test]
    fn a_tenant_scope_admits_its_own_domains_and_registers_under_its_own_tenant_only() {
        let own = Scope::Tenant(TenantId::parse("acct_a").expect("valid"));
        assert!(own.admits(Some("acct_a")));
        assert!(!own.admits(Some("acct_b")) && !own.admits(None));
        assert!(Scope::All.admits(None) && Scope::All.admits(Some("acct_b")));
        assert_eq!(own.tenant_to_register(None), Ok(Some("acct_a")));
        assert_eq!(own.tenant_to_register(Some("acct_a")), Ok(Some("acct_a")));
        assert!(own.tenant_to_register(Some("acct_b")).is_err());
        assert_eq!(
            Scope::All.tenant_to_register(Some("acct_b")),
            Ok(Some("acct_b"))
        );
        assert_eq!(own.tenant_to_list(None), Listed::Of("acct_a"));
        assert_eq!(own.tenant_to_list(Some("acct_b")), Listed::Nothing);
        assert_eq!(Scope::All.tenant_to_list(None), Listed::Every);
    }
}
