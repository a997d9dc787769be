//! Tamper evidence: every event records a SHA-256 over its canonical content and the hash of
//! the event before it in the same stream, so changing, removing or reordering an event inside
//! a stream breaks the chain from that event on. The chain alone cannot show a stream's last
//! events deleted, nor a stream rewritten by someone who recomputes its hashes: the log hash
//! here ([`log_hash`]) under a signed checkpoint (the service's `checkpoints` module) can.
//! Anyone can check chains and log hashes with this module alone.

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
    let mut walker = LogWalker::new(aggregate_type);
    events.iter().find_map(|event| walker.next(event))
}

/// The running hash of the whole log after one more event: SHA-256 (hex) over the text
/// `<previous log hash>:<position>:<recorded_at>:<entry hash>`, starting from [`GENESIS`]. A
/// signed checkpoint holds it, so removing, inserting, reordering or rewriting any event it
/// covers changes it, and so does changing when an event was recorded, which the per-stream
/// chain cannot cover (the store sets it as it commits).
pub fn log_hash(previous: &str, aggregate_type: &str, event: &crate::feed::FeedEvent) -> String {
    log_step(previous, event, &entry_hash(aggregate_type, event))
}

/// [`log_hash`] with the event's entry hash already computed.
fn log_step(previous: &str, event: &crate::feed::FeedEvent, entry: &str) -> String {
    Sha256::digest(
        format!(
            "{previous}:{}:{}:{entry}",
            event.position, event.recorded_at
        )
        .as_bytes(),
    )
    .iter()
    .map(|byte| format!("{byte:02x}"))
    .collect()
}

/// What an event contributes to the log hash: its chain hash recomputed from everything stored
/// with it (content, metadata and the `prev_hash` it names), never the hash it claims.
pub fn entry_hash(aggregate_type: &str, event: &crate::feed::FeedEvent) -> String {
    let stored_prev = event.metadata[PREV_HASH_KEY].as_str().unwrap_or_default();
    event_hash(
        stored_prev,
        &ChainedContent {
            aggregate_type,
            aggregate_id: &event.aggregate_id,
            sequence: u64::try_from(event.sequence).unwrap_or(0),
            event_type: &event.event_type,
            event_version: &event.event_version,
            payload: &event.payload,
            metadata: &event.metadata,
        },
    )
}

/// Where a stream stands while the log is walked.
struct StreamTip {
    sequence: i64,
    hash: String,
}

/// Walks the whole log once, in feed order, checking every stream's chain as its events come by
/// and keeping the log hash and the number of events seen, for comparison with checkpoints.
/// Memory grows with the number of streams, not of events.
pub struct LogWalker {
    aggregate_type: String,
    tips: std::collections::HashMap<String, StreamTip>,
    broken: std::collections::HashSet<String>,
    /// Events seen so far.
    pub events: u64,
    /// The log hash after the last event seen.
    pub log_hash: String,
    /// The position of the last event seen (0 before the first).
    pub position: i64,
}

impl LogWalker {
    /// A walker at the start of the log.
    pub fn new(aggregate_type: &str) -> Self {
        Self {
            aggregate_type: aggregate_type.to_owned(),
            tips: std::collections::HashMap::new(),
            broken: std::collections::HashSet::new(),
            events: 0,
            log_hash: GENESIS.to_owned(),
            position: 0,
        }
    }

    /// The number of streams seen.
    pub fn streams(&self) -> usize {
        self.tips.len() + self.broken.len()
    }

    /// Takes the next event of the feed. Returns where its stream's chain breaks, if it breaks
    /// here (each stream is reported once, at its first broken link).
    pub fn next(&mut self, event: &crate::feed::FeedEvent) -> Option<BrokenLink> {
        let entry = entry_hash(&self.aggregate_type, event);
        self.log_hash = log_step(&self.log_hash, event, &entry);
        self.events += 1;
        self.position = event.position;
        if self.broken.contains(&event.aggregate_id) {
            return None;
        }
        let (expected_sequence, expected_prev) = match self.tips.get(&event.aggregate_id) {
            Some(tip) => (tip.sequence + 1, tip.hash.as_str()),
            None => (1, GENESIS),
        };
        let reason = if event.sequence != expected_sequence {
            Some(format!(
                "sequence {} where {expected_sequence} was expected (an event is missing or out of order)",
                event.sequence
            ))
        } else {
            let stored_prev = event.metadata[PREV_HASH_KEY].as_str().unwrap_or_default();
            let stored_hash = event.metadata[HASH_KEY].as_str().unwrap_or_default();
            if stored_prev != expected_prev {
                Some(format!(
                    "prev_hash {stored_prev:?} does not match the previous event's hash {expected_prev}"
                ))
            } else if stored_hash != entry {
                Some(format!(
                    "content hashes to {entry} but {stored_hash:?} is recorded (the event was changed)"
                ))
            } else {
                None
            }
        };
        match reason {
            None => {
                self.tips.insert(
                    event.aggregate_id.clone(),
                    StreamTip {
                        sequence: event.sequence,
                        hash: entry,
                    },
                );
                None
            }
            Some(reason) => {
                self.tips.remove(&event.aggregate_id);
                self.broken.insert(event.aggregate_id.clone());
                Some(BrokenLink {
                    aggregate_id: event.aggregate_id.clone(),
                    sequence: event.sequence,
                    position: event.position,
                    reason,
                })
            }
        }
    }
}

#[cfg(test)]
mod walker_tests {
    use super::*;
    use crate::feed::FeedEvent;

    /// A correctly chained log of two streams, interleaved.
    fn log() -> Vec<FeedEvent> {
        let mut events = Vec::new();
        let mut tips: std::collections::HashMap<&str, String> = std::collections::HashMap::new();
        for (position, (stream, sequence)) in [("a", 1), ("b", 1), ("a", 2), ("b", 2), ("a", 3)]
            .into_iter()
            .enumerate()
        {
            let prev = tips
                .get(stream)
                .cloned()
                .unwrap_or_else(|| GENESIS.to_owned());
            let payload = serde_json::json!({"n": position});
            let metadata = serde_json::json!({});
            let hash = event_hash(
                &prev,
                &ChainedContent {
                    aggregate_type: "T",
                    aggregate_id: stream,
                    sequence: sequence as u64,
                    event_type: "E",
                    event_version: "1.0",
                    payload: &payload,
                    metadata: &metadata,
                },
            );
            events.push(FeedEvent {
                position: position as i64 + 1,
                aggregate_id: stream.to_owned(),
                sequence,
                event_type: "E".into(),
                event_version: "1.0".into(),
                recorded_at: String::new(),
                payload,
                metadata: serde_json::json!({PREV_HASH_KEY: prev, HASH_KEY: hash.clone()}),
            });
            tips.insert(stream, hash);
        }
        events
    }

    fn walk(events: &[FeedEvent]) -> (LogWalker, Vec<BrokenLink>) {
        let mut walker = LogWalker::new("T");
        let broken = events
            .iter()
            .filter_map(|event| walker.next(event))
            .collect();
        (walker, broken)
    }

    #[test]
    fn an_intact_log_walks_clean_and_its_hash_depends_on_every_event() {
        let events = log();
        let (walker, broken) = walk(&events);
        assert!(broken.is_empty(), "{broken:?}");
        assert_eq!(
            (walker.events, walker.position, walker.streams()),
            (5, 5, 2)
        );
        let (shorter, _) = walk(&events[..4]);
        assert_ne!(shorter.log_hash, walker.log_hash);
        let mut reordered = events.clone();
        reordered.swap(0, 1);
        assert_ne!(walk(&reordered).0.log_hash, walker.log_hash);
    }

    #[test]
    fn a_missing_event_in_the_middle_of_a_stream_is_found_at_the_next_one() {
        let mut events = log();
        events.remove(2);
        let (_, broken) = walk(&events);
        assert_eq!(broken.len(), 1);
        assert_eq!(
            (broken[0].aggregate_id.as_str(), broken[0].sequence),
            ("a", 3)
        );
    }

    #[test]
    fn a_changed_payload_breaks_its_stream_at_that_event() {
        let mut events = log();
        events[3].payload = serde_json::json!({"n": 99});
        let (_, broken) = walk(&events);
        assert_eq!(broken.len(), 1);
        assert_eq!(
            (broken[0].aggregate_id.as_str(), broken[0].sequence),
            ("b", 2)
        );
        assert!(broken[0].reason.contains("was changed"));
    }
}
