//! The CA settings: the fallback issuers, the budgets kept for the CA, and the External Account
//! Binding, with what makes them unusable.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::secret::REDACTED;
use super::{Secret, Settings, SettingsError};

/// Let's Encrypt's staging directory: the default, so that a misconfigured first run cannot burn
/// production rate limits.
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

/// One further CA (`ACME_FALLBACK_ISSUERS`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerSettings {
    /// Its ACME directory URL.
    pub directory: String,
    /// Contact e-mail for its account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<String>,
    /// Extra root certificate (PEM) to trust for its HTTPS; `ACME_CA_BUNDLE`'s when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<PathBuf>,
    /// The key id of its External Account Binding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eab_kid: Option<String>,
    /// The HMAC key of its External Account Binding (base64url).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eab_hmac_key: Option<Secret>,
    /// The issuer domain names it recognises in CAA records, where its directory's
    /// `meta.caaIdentities` lists none; set, used in place of the directory's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub caa_identities: Vec<String>,
}

impl IssuerSettings {
    /// Its External Account Binding (key id, HMAC key bytes), when both are set.
    pub fn external_account_binding(&self) -> Option<(String, Vec<u8>)> {
        let kid = self.eab_kid.clone()?;
        let key = decode_eab_key(self.eab_hmac_key.as_ref()?.expose())?;
        Some((kid, key))
    }

    /// What is wrong with it, if anything.
    fn problem(&self) -> Option<String> {
        if !(self.directory.starts_with("https://") || self.directory.starts_with("http://")) {
            return Some(format!(
                "directory {:?} is not an http(s) URL",
                self.directory
            ));
        }
        if let Some(bundle) = self.ca_bundle.as_ref().filter(|path| !path.is_file()) {
            return Some(format!("ca_bundle {} is no such file", bundle.display()));
        }
        match (&self.eab_kid, &self.eab_hmac_key) {
            (Some(_), None) | (None, Some(_)) => {
                Some("External Account Binding needs both eab_kid and eab_hmac_key".into())
            }
            (Some(_), Some(key)) if decode_eab_key(key.expose()).is_none() => {
                Some("eab_hmac_key is not base64url".into())
            }
            _ => None,
        }
    }
}

/// A budget kept for the CA: so many units per window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Units per window.
    pub limit: u32,
    /// The sliding window.
    pub window: Duration,
}

impl Budget {
    /// The window as a chrono duration.
    pub fn chrono_window(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.window).unwrap_or_else(|_| chrono::Duration::days(1))
    }
}

impl Settings {
    /// The External Account Binding (key id, HMAC key bytes), when both are set.
    pub fn external_account_binding(&self) -> Option<(String, Vec<u8>)> {
        let kid = self.acme_eab_kid.clone()?;
        let key = decode_eab_key(self.acme_eab_hmac_key.as_ref()?.expose())?;
        Some((kid, key))
    }

    /// What is wrong with the External Account Binding or a fallback issuer, if anything.
    pub(super) fn acme_problem(&self) -> Option<SettingsError> {
        match (&self.acme_eab_kid, &self.acme_eab_hmac_key) {
            (Some(_), None) | (None, Some(_)) => {
                return Some(SettingsError {
                    name: if self.acme_eab_kid.is_some() {
                        "ACME_EAB_HMAC_KEY".into()
                    } else {
                        "ACME_EAB_KID".into()
                    },
                    value: String::new(),
                    reason: "External Account Binding needs both ACME_EAB_KID and \
                             ACME_EAB_HMAC_KEY"
                        .into(),
                })
            }
            (Some(_), Some(key)) if decode_eab_key(key.expose()).is_none() => {
                return Some(SettingsError {
                    name: "ACME_EAB_HMAC_KEY".into(),
                    value: REDACTED.into(),
                    reason: "not base64url (the key as the CA handed it out)".into(),
                })
            }
            _ => {}
        }
        let (place, problem) = self
            .acme_fallback_issuers
            .iter()
            .enumerate()
            .find_map(|(place, issuer)| Some((place, issuer.problem()?)))?;
        Some(SettingsError {
            name: "ACME_FALLBACK_ISSUERS".into(),
            value: format!("[{place}]"),
            reason: problem,
        })
    }
}

/// An EAB HMAC key as CAs hand it out: base64url, with or without padding.
fn decode_eab_key(text: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let unpadded = text.trim().trim_end_matches('=');
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(unpadded)
        .ok()
        .filter(|key| !key.is_empty())
}
