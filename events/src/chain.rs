//! Tamper evidence: every event records a SHA-256 over its canonical content and the hash of
//! the event before it in the same stream, so changing, removing or reordering a stored event
//! breaks the chain from that event on. Anyone can check a chain with this module alone.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Metadata key holding the event's own hash.
pub const HASH_KEY: &str = "hash";
/// Metadata key holding the previous event's hash.
pub const PREV_HASH_KEY: &str = "prev_hash";
/// The "previous hash" of a stream's first event.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The content an event's hash covers.
pub struct ChainedContent<'a> {
    /// Aggregate type (`CustomDomain`).
    pub aggregate_type: &'a str,
    /// The stream.
    pub aggregate_id: &'a str,
    /// Position in the stream.
    pub sequence: u64,
    /// Event type.
    pub event_type: &'a str,
    /// Event version as stored.
    pub event_version: &'a str,
    /// Payload as stored.
    pub payload: &'a Value,
    /// Metadata as stored (the chain's own keys are left out of the hash).
    pub metadata: &'a Value,
}

/// Hex SHA-256 over the previous hash and the canonical JSON of the content.
pub fn event_hash(prev_hash: &str, content: &ChainedContent<'_>) -> String {
    let mut metadata = content.metadata.clone();
    if let Some(map) = metadata.as_object_mut() {
        map.remove(HASH_KEY);
        map.remove(PREV_HASH_KEY);
    }
    let document = serde_json::json!({
        "prev_hash": prev_hash,
        "aggregate_type": content.aggregate_type,
        "aggregate_id": content.aggregate_id,
        "sequence": content.sequence,
        "event_type": content.event_type,
        "event_version": content.event_version,
        "payload": content.payload,
        "metadata": metadata,
    });
    let mut canonical = String::new();
    write_canonical(&document, &mut canonical);
    Sha256::digest(canonical.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Compact JSON with object keys sorted at every level, independent of how a map orders them.
pub fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (index, key) in keys.into_iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                out.push_str(&Value::from(key.as_str()).to_string());
                out.push(':');
                write_canonical(&map[key], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content<'a>(payload: &'a Value, metadata: &'a Value) -> ChainedContent<'a> {
        ChainedContent {
            aggregate_type: "CustomDomain",
            aggregate_id: "d1",
            sequence: 1,
            event_type: "DomainRegistered",
            event_version: "1.0",
            payload,
            metadata,
        }
    }

    #[test]
    fn key_order_and_chain_keys_do_not_change_the_hash() {
        let payload_a: Value = serde_json::from_str(r#"{"a":1,"b":{"y":2,"x":3}}"#).expect("json");
        let payload_b: Value = serde_json::from_str(r#"{"b":{"x":3,"y":2},"a":1}"#).expect("json");
        let plain = serde_json::json!({"actor": "http"});
        let chained = serde_json::json!({"actor": "http", "hash": "h", "prev_hash": "p"});
        assert_eq!(
            event_hash(GENESIS, &content(&payload_a, &plain)),
            event_hash(GENESIS, &content(&payload_b, &chained))
        );
    }

    #[test]
    fn any_change_changes_the_hash() {
        let payload = serde_json::json!({"a": 1});
        let changed = serde_json::json!({"a": 2});
        let metadata = serde_json::json!({});
        let original = event_hash(GENESIS, &content(&payload, &metadata));
        assert_ne!(original, event_hash(GENESIS, &content(&changed, &metadata)));
        assert_ne!(
            original,
            event_hash(&original, &content(&payload, &metadata))
        );
    }
}

/// Where a stream's chain breaks first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokenLink {
    /// The stream.
    pub aggregate_id: String,
    /// The first event whose link does not hold.
    pub sequence: i64,
    /// Its global position.
    pub position: i64,
    /// What does not hold.
    pub reason: String,
}

/// Checks one stream's events (in sequence order): each must name the previous event's hash
/// and carry the hash of its own content. Returns the first broken link, if any.
pub fn verify_stream(
    aggregate_type: &str,
    events: &[crate::feed::FeedEvent],
) -> Option<BrokenLink> {
    let mut prev_hash = GENESIS.to_owned();
    for (expected_sequence, event) in (1i64..).zip(events) {
        let broken = |reason: String| BrokenLink {
            aggregate_id: event.aggregate_id.clone(),
            sequence: event.sequence,
            position: event.position,
            reason,
        };
        if event.sequence != expected_sequence {
            return Some(broken(format!(
                "sequence {} where {expected_sequence} was expected (an event is missing)",
                event.sequence
            )));
        }
        let stored_prev = event.metadata[PREV_HASH_KEY].as_str().unwrap_or_default();
        if stored_prev != prev_hash {
            return Some(broken(format!(
                "prev_hash {stored_prev:?} does not match the previous event's hash {prev_hash}"
            )));
        }
        let stored_hash = event.metadata[HASH_KEY].as_str().unwrap_or_default();
        let actual = event_hash(
            &prev_hash,
            &ChainedContent {
                aggregate_type,
                aggregate_id: &event.aggregate_id,
                sequence: u64::try_from(event.sequence).unwrap_or(0),
                event_type: &event.event_type,
                event_version: &event.event_version,
                payload: &event.payload,
                metadata: &event.metadata,
            },
        );
        if stored_hash != actual {
            return Some(broken(format!(
                "content hashes to {actual} but {stored_hash:?} is recorded (the event was changed)"
            )));
        }
        prev_hash = actual;
    }
    None
}
