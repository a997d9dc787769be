//! The events table: one row per event of the feed, its payload read as the current version
//! (through the upcasters), its scalar fields flattened into columns an analyst can query
//! without knowing the event types, and the whole payload as JSON beside them.
//!
//! Where each field of each event type goes is said once, in [`place`]; a test walks the
//! schema of every current event type (`events/schema/`) and fails on a field it does not
//! place, so that an event type cannot gain a field the export silently drops from its columns.

use std::collections::HashMap;

use chrono::DateTime;
use serde_json::{Map, Value};

use dns_handling_events::feed::FeedEvent;

use super::table::{optional, required, Cell, ColumnSpec, Kind};

/// The columns of `events-*.parquet`, in their order. Documented in `docs/analytics.md`.
pub const EVENT_COLUMNS: &[ColumnSpec] = &[
    required("position", Kind::Int),
    optional("recorded_at", Kind::Timestamp),
    required("aggregate_id", Kind::Text),
    required("sequence", Kind::Int),
    optional("domain_name", Kind::Text),
    required("event_type", Kind::Text),
    required("event_version", Kind::Text),
    optional("actor", Kind::Text),
    optional("role", Kind::Text),
    optional("request_id", Kind::Text),
    optional("token_id", Kind::Text),
    optional("client_addr", Kind::Text),
    optional("occurred_at", Kind::Timestamp),
    optional("tenant", Kind::Text),
    optional("verification_record_name", Kind::Text),
    optional("proof", Kind::Text),
    optional("cname_target", Kind::Text),
    optional("order_id", Kind::Text),
    optional("order_url", Kind::Text),
    optional("names", Kind::Text),
    optional("account_id", Kind::Text),
    optional("poll_interval_ms", Kind::Int),
    optional("order_deadline", Kind::Timestamp),
    optional("key_type", Kind::Text),
    optional("validation", Kind::Text),
    optional("delegation_problem", Kind::Text),
    optional("ca_directory", Kind::Text),
    optional("resolver", Kind::Text),
    optional("certificate_id", Kind::Text),
    optional("serial", Kind::Text),
    optional("not_before", Kind::Timestamp),
    optional("not_after", Kind::Timestamp),
    optional("fingerprint_sha256", Kind::Text),
    optional("failure_code", Kind::Text),
    optional("failure_detail", Kind::Text),
    optional("attempt", Kind::Int),
    optional("next_attempt_at", Kind::Timestamp),
    optional("renewal_reason", Kind::Text),
    optional("renews_certificate_id", Kind::Text),
    optional("replaces", Kind::Text),
    optional("due_at", Kind::Timestamp),
    optional("window_start", Kind::Timestamp),
    optional("window_end", Kind::Timestamp),
    optional("window_explanation_url", Kind::Text),
    optional("revocation_reason", Kind::Text),
    optional("key_disposal", Kind::Text),
    optional("reader", Kind::Text),
    optional("routing_lost_at", Kind::Timestamp),
    optional("status", Kind::Text),
    required("payload_json", Kind::Text),
];

/// Where a payload field goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// Into this column (an array of texts is joined with `,`).
    Column(&'static str),
    /// Only in `payload_json`: lists, nested reports, the chain's PEM.
    JsonOnly,
}

/// Where the field at `path` (dotted, from the payload's top: `order.ca_directory`) of an
/// event of `event_type` goes; `None` for an object to look into, or a field not placed (the
/// schema test's finding).
pub fn place(event_type: &str, path: &str) -> Option<Place> {
    use Place::{Column, JsonOnly};
    Some(match (event_type, path) {
        // The one moment each event happened at, whatever the event calls it.
        (
            _,
            "registered_at" | "replaced_at" | "verified_at" | "requested_at" | "observed_at"
            | "issued_at" | "failed_at" | "timed_out_at" | "scheduled_at" | "expired_at"
            | "revoked_at" | "destroyed_at" | "retried_at" | "removed_at" | "read_at"
            | "checked_at" | "moved_at" | "returned_at",
        ) => Column("occurred_at"),
        // A string where the renewal events say why, an object where failures do.
        ("RenewalScheduled" | "RenewalRequested", "reason") => Column("renewal_reason"),
        ("CertificateRevoked", "reason") => Column("revocation_reason"),
        (_, "reason.code" | "previous_reason.code") => Column("failure_code"),
        (_, "reason.detail" | "previous_reason.detail") => Column("failure_detail"),
        (_, "domain_name") => Column("domain_name"),
        (_, "tenant") => Column("tenant"),
        (_, "verification_record_name") => Column("verification_record_name"),
        (_, "proof") => Column("proof"),
        (_, "cname_target") => Column("cname_target"),
        (_, "order_id" | "order.order_id" | "certificate.order_id") => Column("order_id"),
        (_, "order.order_url") => Column("order_url"),
        (_, "order.names") => Column("names"),
        (_, "order.account_id") => Column("account_id"),
        (_, "order.poll_interval_ms") => Column("poll_interval_ms"),
        (_, "order.deadline" | "deadline") => Column("order_deadline"),
        (_, "order.key_type") => Column("key_type"),
        (_, "order.validation") => Column("validation"),
        (_, "order.delegation_problem") => Column("delegation_problem"),
        (_, "order.ca_directory" | "certificate.ca_directory") => Column("ca_directory"),
        (_, "resolver") => Column("resolver"),
        (_, "certificate_id" | "certificate.certificate_id") => Column("certificate_id"),
        (_, "certificate.serial") => Column("serial"),
        (_, "certificate.not_before") => Column("not_before"),
        (_, "certificate.not_after" | "not_after") => Column("not_after"),
        (_, "certificate.fingerprint_sha256") => Column("fingerprint_sha256"),
        (_, "attempt") => Column("attempt"),
        (_, "next_attempt_at") => Column("next_attempt_at"),
        (_, "renews_certificate_id") => Column("renews_certificate_id"),
        (_, "replaces") => Column("replaces"),
        (_, "due_at") => Column("due_at"),
        (_, "window.start") => Column("window_start"),
        (_, "window.end") => Column("window_end"),
        (_, "window.explanation_url") => Column("window_explanation_url"),
        (_, "why") => Column("key_disposal"),
        (_, "reader") => Column("reader"),
        (_, "routing_lost_at") => Column("routing_lost_at"),
        (_, "status") => Column("status"),
        (
            _,
            "verification_token"
            | "alt_names"
            | "observed_values"
            | "order.challenges"
            | "certificate.chain_pem"
            | "unseen_names"
            | "report",
        ) => JsonOnly,
        _ => return None,
    })
}

/// The metadata keys that have a column of the same name; the others (the hash chain) are
/// left out.
const METADATA_COLUMNS: [&str; 5] = ["actor", "role", "request_id", "token_id", "client_addr"];

/// The index of every column by name.
fn column_index() -> &'static HashMap<&'static str, usize> {
    static INDEX: std::sync::OnceLock<HashMap<&'static str, usize>> = std::sync::OnceLock::new();
    INDEX.get_or_init(|| {
        EVENT_COLUMNS
            .iter()
            .enumerate()
            .map(|(index, spec)| (spec.name, index))
            .collect()
    })
}

/// A moment as microseconds since the epoch, from RFC 3339 text.
pub fn micros(text: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|at| at.timestamp_micros())
}

/// A JSON value as a cell of a column of `kind` (`None` for null or what does not fit).
fn cell(kind: Kind, value: &Value) -> Option<Cell> {
    match (kind, value) {
        (_, Value::Null) => None,
        (Kind::Int, value) => value.as_i64().map(Cell::Int),
        (Kind::Timestamp, Value::String(text)) => micros(text).map(Cell::Int),
        (Kind::Timestamp, _) => None,
        (Kind::Text, Value::String(text)) => Some(Cell::Text(text.clone())),
        (Kind::Text, Value::Array(items)) => Some(Cell::Text(
            items
                .iter()
                .map(|item| {
                    item.as_str()
                        .map_or_else(|| item.to_string(), str::to_owned)
                })
                .collect::<Vec<_>>()
                .join(","),
        )),
        (Kind::Text, other) => Some(Cell::Text(other.to_string())),
    }
}

/// Places the fields of `body` (under `prefix`) into `row`.
fn flatten(event_type: &str, prefix: &str, body: &Map<String, Value>, row: &mut [Option<Cell>]) {
    for (key, value) in body {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match place(event_type, &path) {
            Some(Place::Column(name)) => {
                if let Some(&index) = column_index().get(name) {
                    row[index] = cell(EVENT_COLUMNS[index].kind, value);
                }
            }
            Some(Place::JsonOnly) => {}
            None => {
                if let Value::Object(inner) = value {
                    flatten(event_type, &path, inner, row);
                }
            }
        }
    }
}

/// The row of one event, its payload already upcast to `version`; `domain_name` is the name
/// of its domain as registered (most events do not carry it).
pub fn event_row(
    event: &FeedEvent,
    payload: &Value,
    version: &str,
    domain_name: Option<&str>,
) -> Vec<Option<Cell>> {
    let mut row: Vec<Option<Cell>> = vec![None; EVENT_COLUMNS.len()];
    let set = |row: &mut Vec<Option<Cell>>, name: &str, value: Option<Cell>| {
        if let Some(&index) = column_index().get(name) {
            row[index] = value;
        }
    };
    set(&mut row, "position", Some(Cell::Int(event.position)));
    set(
        &mut row,
        "recorded_at",
        micros(&event.recorded_at).map(Cell::Int),
    );
    set(
        &mut row,
        "aggregate_id",
        Some(Cell::Text(event.aggregate_id.clone())),
    );
    set(&mut row, "sequence", Some(Cell::Int(event.sequence)));
    set(
        &mut row,
        "domain_name",
        domain_name.map(|name| Cell::Text(name.to_owned())),
    );
    set(
        &mut row,
        "event_type",
        Some(Cell::Text(event.event_type.clone())),
    );
    set(
        &mut row,
        "event_version",
        Some(Cell::Text(version.to_owned())),
    );
    for key in METADATA_COLUMNS {
        if let Some(Value::String(value)) = event.metadata.get(key) {
            set(&mut row, key, Some(Cell::Text(value.clone())));
        }
    }
    if let Some(body) = payload.get(&event.event_type).and_then(Value::as_object) {
        flatten(&event.event_type, "", body, &mut row);
    }
    // A timeout stands for the `dns_timeout` failure (`FailureReason::timed_out`): one code to
    // count failures by, whichever event recorded them.
    if event.event_type == "IssuanceTimedOut" {
        let code = dns_handling_events::FailureReason::DNS_TIMEOUT;
        set(&mut row, "failure_code", Some(Cell::Text(code.to_owned())));
    }
    set(
        &mut row,
        "payload_json",
        Some(Cell::Text(payload.to_string())),
    );
    row
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition a `$ref` names, or the schema itself; an optional field (`anyOf` of a
    /// type and `null`) as its type.
    fn resolve<'a>(schema: &'a Value, definitions: &'a Value) -> &'a Value {
        if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
            let name = reference.trim_start_matches("#/$defs/");
            return resolve(&definitions[name], definitions);
        }
        if let Some(choices) = schema.get("anyOf").and_then(Value::as_array) {
            if let Some(other) = choices.iter().find(|choice| choice["type"] != "null") {
                return resolve(other, definitions);
            }
        }
        schema
    }

    /// Every field path of a schema's object that `place` leaves unplaced.
    fn unplaced(
        event_type: &str,
        prefix: &str,
        object: &Value,
        definitions: &Value,
        found: &mut Vec<String>,
    ) {
        let Some(properties) = object.get("properties").and_then(Value::as_object) else {
            return;
        };
        for (key, schema) in properties {
            let path = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            match place(event_type, &path) {
                Some(Place::Column(name)) => assert!(
                    column_index().contains_key(name),
                    "{event_type} {path} goes to {name}, which is not a column"
                ),
                Some(Place::JsonOnly) => {}
                None => {
                    let inner = resolve(schema, definitions);
                    if inner.get("properties").is_some() {
                        unplaced(event_type, &path, inner, definitions, found);
                    } else {
                        found.push(format!("{event_type}.{path}"));
                    }
                }
            }
        }
    }

    #[test]
    fn every_field_of_every_current_event_type_has_a_column_or_is_said_to_be_json_only() {
        let schemas = dns_handling_events::schema::current_schemas();
        assert_eq!(
            schemas.len(),
            dns_handling_events::schema::CURRENT_VERSIONS.len()
        );
        let mut found = Vec::new();
        let mut fields = 0;
        for (event_type, _, schema) in &schemas {
            let body = resolve(&schema["properties"][event_type], &schema["$defs"]);
            fields += body["properties"].as_object().map_or(0, Map::len);
            unplaced(event_type, "", body, &schema["$defs"], &mut found);
        }
        assert!(fields > 60, "the schemas were walked: {fields} fields");
        assert!(
            found.is_empty(),
            "fields the export does not place: {found:?}"
        );
    }

    #[test]
    fn a_renewal_s_fields_land_in_their_columns_and_the_payload_stays_whole() {
        let payload = serde_json::json!({"RenewalFailed": {
            "order_id": "o2",
            "reason": {"code": "dns_timeout", "detail": "not seen"},
            "attempt": 2,
            "next_attempt_at": "2026-11-26T13:00:00Z",
            "failed_at": "2026-11-26T12:00:00Z",
        }});
        let event = FeedEvent {
            position: 9,
            aggregate_id: "d1".into(),
            sequence: 4,
            event_type: "RenewalFailed".into(),
            event_version: "1.0".into(),
            recorded_at: "2026-11-26T12:00:01Z".into(),
            payload: payload.clone(),
            metadata: serde_json::json!({"actor": "renewal-scheduler", "hash": "ab"}),
        };
        let row = event_row(&event, &payload, "1.0", Some("shop.example.com"));
        let get = |name: &str| row[column_index()[name]].clone();
        let text = |value: &str| Some(Cell::Text(value.to_owned()));
        assert_eq!(get("failure_code"), text("dns_timeout"));
        assert_eq!(get("attempt"), Some(Cell::Int(2)));
        assert_eq!(get("order_id"), text("o2"));
        assert_eq!(get("domain_name"), text("shop.example.com"));
        assert_eq!(get("actor"), text("renewal-scheduler"));
        assert_eq!(
            get("occurred_at"),
            micros("2026-11-26T12:00:00Z").map(Cell::Int)
        );
        assert_eq!(get("payload_json"), Some(Cell::Text(payload.to_string())));
    }
}
