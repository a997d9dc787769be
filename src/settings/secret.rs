//! A secret setting: a value that never prints itself.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What a secret prints and serializes as.
pub(super) const REDACTED: &str = "<redacted>";

/// A secret value that never prints itself: its `Debug` and its serialized form are
/// `<redacted>`. Read from a setting, it is trimmed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that must compare or use it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(REDACTED)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Never a custom error: a refused secret is then never shown (see `SettingsError`).
        String::deserialize(deserializer).map(|text| Secret::new(text.trim()))
    }
}
