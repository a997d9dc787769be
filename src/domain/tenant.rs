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
}
