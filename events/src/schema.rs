//! JSON Schemas of the events: generated from the types, kept in `events/schema/`, one file per
//! event type and version. The files are the contract with consumers; a test fails when the
//! types and the files differ, and files of older versions stay (with their upcasters).

use serde_json::{json, Value};

use crate::CustomDomainEvent;

/// The current version of every event type.
pub const CURRENT_VERSIONS: &[(&str, &str)] = &[
    ("DomainRegistered", "3.0"),
    ("AltNamesReplaced", "1.0"),
    ("OwnershipVerified", "2.0"),
    ("CertificateRequested", "4.0"),
    ("ChallengeRecordObserved", "1.0"),
    ("CertificateIssued", "2.0"),
    ("IssuanceFailed", "1.0"),
    ("IssuanceTimedOut", "2.0"),
    ("IssuanceRetried", "1.0"),
    ("RenewalScheduled", "1.0"),
    ("RenewalRequested", "2.0"),
    ("RenewalFailed", "1.0"),
    ("CertificateExpired", "1.0"),
    ("CertificateRevoked", "1.0"),
    ("CertificateKeyDestroyed", "1.0"),
    ("DomainRemoved", "1.0"),
    ("PrivateKeyRead", "1.0"),
    ("HealthChanged", "1.0"),
    ("DomainMoved", "1.0"),
    ("DomainReturned", "1.0"),
];

/// The file name of a schema: `<EventType>-<version>.json`.
pub fn file_name(event_type: &str, version: &str) -> String {
    format!("{event_type}-{version}.json")
}

/// The schema of every current event type and version, generated from the types.
pub fn current_schemas() -> Vec<(String, String, Value)> {
    let generated =
        serde_json::to_value(schemars::schema_for!(CustomDomainEvent)).unwrap_or(Value::Null);
    let definitions = generated.get("$defs").cloned().unwrap_or_else(|| json!({}));
    let variants = generated
        .get("oneOf")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut schemas = Vec::new();
    for (event_type, version) in CURRENT_VERSIONS {
        let Some(variant) = variants.iter().find(|variant| {
            variant
                .get("properties")
                .and_then(|properties| properties.get(*event_type))
                .is_some()
        }) else {
            continue;
        };
        let mut schema = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": format!("{event_type} {version}"),
            "description": format!(
                "Payload of a stored `{event_type}` event, version {version} (the `payload` of the feed)."
            ),
        });
        if let (Some(target), Some(source)) = (schema.as_object_mut(), variant.as_object()) {
            for (key, value) in source {
                target.insert(key.clone(), value.clone());
            }
            target.insert("$defs".to_owned(), definitions.clone());
        }
        schemas.push(((*event_type).to_owned(), (*version).to_owned(), schema));
    }
    schemas
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn schema_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schema")
    }

    /// Regenerate with `UPDATE_SCHEMAS=1 cargo test -p dns-handling-events` after a deliberate
    /// change, which must also bump the event's version and add an upcaster.
    #[test]
    fn the_stored_schemas_match_the_types() {
        let schemas = current_schemas();
        assert_eq!(
            schemas.len(),
            CURRENT_VERSIONS.len(),
            "every event type has a schema"
        );
        for (event_type, version, schema) in schemas {
            let path = schema_dir().join(file_name(&event_type, &version));
            let text = serde_json::to_string_pretty(&schema).expect("JSON") + "\n";
            if std::env::var_os("UPDATE_SCHEMAS").is_some() {
                std::fs::create_dir_all(schema_dir()).expect("schema dir");
                std::fs::write(&path, &text).expect("write schema");
            }
            let stored = std::fs::read_to_string(&path)
                .unwrap_or_else(|_| panic!("{} is missing", path.display()));
            assert_eq!(
                stored, text,
                "{event_type} {version} changed: bump its version, add an upcaster, keep the old schema"
            );
        }
    }

    #[test]
    fn every_older_schema_has_an_upcaster() {
        for entry in std::fs::read_dir(schema_dir()).expect("schema dir") {
            let name = entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned();
            let Some((event_type, version)) = name.trim_end_matches(".json").rsplit_once('-')
            else {
                panic!("unexpected file {name}");
            };
            let current = CURRENT_VERSIONS
                .iter()
                .find(|(kind, _)| *kind == event_type)
                .unwrap_or_else(|| panic!("{name}: unknown event type"));
            if current.1 != version {
                assert!(
                    crate::upcast::needs_upcast(event_type, version),
                    "{name} is an older version without an upcaster"
                );
            }
        }
    }
}
