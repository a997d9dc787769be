//! `webhooks …`: the platform's endpoints, their signing secrets and their delivery attempts.

use std::process::ExitCode;

use clap::builder::PossibleValuesParser;
use reqwest::Method;
use serde_json::{json, Value};

use super::format::{table, text};
use super::server::Client;
use crate::domain::notifications::NotificationType;

/// The webhook commands: the platform's endpoints, their secrets and their deliveries.
#[derive(Debug, clap::Subcommand)]
pub enum WebhooksCommand {
    /// Register an endpoint the service POSTs signed notifications to (Standard Webhooks);
    /// prints its id and its signing secret, which is shown this once
    Add {
        /// Where messages are POSTed (https://…; its host must not resolve to a loopback,
        /// private, link-local or metadata address unless the server allows it)
        url: String,
        /// A notification type to send; repeatable; none: every type
        #[arg(long = "event", value_name = "TYPE", value_parser = PossibleValuesParser::new(NotificationType::ALL.map(NotificationType::as_str)))]
        events: Vec<String>,
        /// What the endpoint is for (up to 500 characters)
        #[arg(long, value_name = "TEXT")]
        description: Option<String>,
    },
    /// Every endpoint not removed, oldest first, with its messages pending, delivered and failed
    List,
    /// One endpoint: its URL, types, status and messages (never its secret)
    Show {
        /// The endpoint's id
        id: String,
    },
    /// Remove an endpoint: nothing more is sent to it (its history stays)
    Remove {
        /// The endpoint's id
        id: String,
    },
    /// Make a new signing secret, shown this once; the replaced one signs beside it for the
    /// server's WEBHOOK_SECRET_OVERLAP (24 hours by default)
    RotateSecret {
        /// The endpoint's id
        id: String,
    },
    /// The endpoint's delivery attempts, newest first: time, message id, attempt, status,
    /// latency, error
    Deliveries {
        /// The endpoint's id
        id: String,
        /// How many attempts to show
        #[arg(long, value_name = "N", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
        limit: u32,
    },
}

/// What `webhooks add` and `webhooks rotate-secret` say on stderr beside a new secret.
const SECRET_WARNING: &str = "warning: the secret is shown this once and never again: store it \
     now where the receiver verifies webhook-signature with it (a Standard Webhooks library \
     takes it as it is, whsec_ included)";

/// Runs one `webhooks …` command.
pub(super) async fn dispatch(
    client: &Client,
    command: WebhooksCommand,
) -> anyhow::Result<ExitCode> {
    match command {
        WebhooksCommand::Add {
            url,
            events,
            description,
        } => {
            let mut body = json!({ "url": url });
            if !events.is_empty() {
                body["events"] = json!(events);
            }
            if let Some(description) = description {
                body["description"] = json!(description);
            }
            let created = client.call(Method::POST, "/webhooks", Some(body)).await?;
            print!("{}", created_report(&created));
            eprintln!("{SECRET_WARNING}");
        }
        WebhooksCommand::List => {
            let list = client.call(Method::GET, "/webhooks", None).await?;
            print!("{}", endpoints_table(&items_of(&list["items"])));
        }
        WebhooksCommand::Show { id } => {
            let endpoint = client
                .call(Method::GET, &format!("/webhooks/{id}"), None)
                .await?;
            print!("{}", endpoint_details(&endpoint));
        }
        WebhooksCommand::Remove { id } => {
            client
                .call(Method::DELETE, &format!("/webhooks/{id}"), None)
                .await?;
            println!("Webhook endpoint {id} is removed: nothing more is sent to it.");
        }
        WebhooksCommand::RotateSecret { id } => {
            let path = format!("/webhooks/{id}/rotate-secret");
            let rotated = client.call(Method::POST, &path, None).await?;
            print!("{}", rotated_report(&rotated));
            eprintln!("{SECRET_WARNING}");
        }
        WebhooksCommand::Deliveries { id, limit } => {
            let attempts = deliveries(client, &id, limit).await?;
            print!("{}", deliveries_table(&attempts));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Up to `limit` of the endpoint's delivery attempts, newest first, a page at a time.
async fn deliveries(client: &Client, id: &str, limit: u32) -> anyhow::Result<Vec<Value>> {
    /// The largest page the server gives.
    const PAGE: u32 = 500;
    let mut attempts: Vec<Value> = Vec::new();
    let mut before: Option<i64> = None;
    while attempts.len() < limit as usize {
        let page_size = PAGE.min(limit - attempts.len() as u32);
        let mut path = format!("/webhooks/{id}/deliveries?limit={page_size}");
        if let Some(before) = before {
            path.push_str(&format!("&before={before}"));
        }
        let page = client.call(Method::GET, &path, None).await?;
        attempts.extend(items_of(&page["items"]));
        match page["next_before"].as_i64() {
            Some(next) => before = Some(next),
            None => break,
        }
    }
    attempts.truncate(limit as usize);
    Ok(attempts)
}

/// The items of a list the server answered (none when it is not one).
fn items_of(items: &Value) -> Vec<Value> {
    items.as_array().cloned().unwrap_or_default()
}

/// The notification types an endpoint is sent, for people: `every type` when it named none.
fn event_types(endpoint: &Value) -> String {
    let types: Vec<&str> = endpoint["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if types.is_empty() {
        "every type".to_owned()
    } else {
        types.join(", ")
    }
}

/// What `webhooks add` prints: the endpoint's id, where it is sent what, and its secret.
fn created_report(created: &Value) -> String {
    format!(
        "Created webhook endpoint {} for {} (sent: {}).\nSigning secret: {}\n",
        text(&created["id"]),
        text(&created["url"]),
        event_types(created),
        text(&created["secret"])
    )
}

/// What `webhooks rotate-secret` prints: the new secret, and until when the replaced one signs
/// beside it.
fn rotated_report(rotated: &Value) -> String {
    let mut out = format!(
        "New signing secret of webhook endpoint {}: {}\n",
        text(&rotated["id"]),
        text(&rotated["secret"])
    );
    if let Some(until) = rotated["previous_secret_valid_until"].as_str() {
        out.push_str(&format!(
            "The previous secret signs every message beside it until {until}: switch the receiver to the new one before then.\n"
        ));
    }
    out
}

/// A count of the endpoint's messages (`-` when the server gave none).
fn count(value: &Value) -> String {
    value
        .as_i64()
        .map_or_else(|| "-".to_owned(), |n| n.to_string())
}

/// `webhooks list`: one row per endpoint, the URL last.
fn endpoints_table(endpoints: &[Value]) -> String {
    let header = [
        "ID",
        "STATUS",
        "EVENTS",
        "PENDING",
        "DELIVERED",
        "FAILED",
        "URL",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|h| (*h).to_owned()).collect()];
    for endpoint in endpoints {
        rows.push(vec![
            text(&endpoint["id"]).to_owned(),
            text(&endpoint["status"]).to_owned(),
            event_types(endpoint).replace(", ", ","),
            count(&endpoint["pending_messages"]),
            count(&endpoint["delivered_messages"]),
            count(&endpoint["failed_messages"]),
            text(&endpoint["url"]).to_owned(),
        ]);
    }
    table(&rows)
}

/// `webhooks show`: one endpoint, a field a line.
fn endpoint_details(endpoint: &Value) -> String {
    let mut status = text(&endpoint["status"]).to_owned();
    if let Some(reason) = endpoint["disabled_reason"].as_str() {
        status.push_str(&format!(" ({reason})"));
    }
    let mut lines = vec![
        ("id", text(&endpoint["id"]).to_owned()),
        ("url", text(&endpoint["url"]).to_owned()),
        ("events", event_types(endpoint)),
        (
            "description",
            Some(text(&endpoint["description"]))
                .filter(|description| !description.is_empty())
                .unwrap_or("-")
                .to_owned(),
        ),
        ("status", status),
        ("created", text(&endpoint["created_at"]).to_owned()),
        (
            "messages",
            format!(
                "{} pending, {} delivered, {} failed",
                count(&endpoint["pending_messages"]),
                count(&endpoint["delivered_messages"]),
                count(&endpoint["failed_messages"])
            ),
        ),
    ];
    if let Some(until) = endpoint["previous_secret_valid_until"].as_str() {
        lines.push(("previous secret", format!("signs too until {until}")));
    }
    lines
        .iter()
        .map(|(field, value)| format!("{:<17}{value}\n", format!("{field}:")))
        .collect()
}

/// `webhooks deliveries`: one row per attempt, newest first, the error last.
fn deliveries_table(attempts: &[Value]) -> String {
    let header = ["TIME", "MESSAGE", "ATTEMPT", "STATUS", "LATENCY", "ERROR"];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|h| (*h).to_owned()).collect()];
    for attempt in attempts {
        let latency = attempt["latency_ms"]
            .as_i64()
            .map_or_else(|| "-".to_owned(), |ms| format!("{ms} ms"));
        // An error from the network stack is one line, whatever it carried.
        let error = attempt["error"].as_str().map_or_else(
            || "-".to_owned(),
            |e| e.split_whitespace().collect::<Vec<_>>().join(" "),
        );
        rows.push(vec![
            text(&attempt["attempted_at"]).to_owned(),
            text(&attempt["message_id"]).to_owned(),
            count(&attempt["attempt"]),
            count(&attempt["status_code"]),
            latency,
            error,
        ]);
    }
    table(&rows)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// An endpoint as the server answers it, with the given types.
    fn endpoint(events: Value) -> Value {
        json!({
            "id": "0193-a", "url": "https://hooks.platform.test/certs", "events": events,
            "description": "edge", "status": "active", "pending_messages": 1,
            "delivered_messages": 12, "failed_messages": 0, "created_at": "2026-11-30T01:00:00Z"
        })
    }

    #[test]
    fn a_new_endpoint_prints_its_id_its_types_and_its_secret() {
        let mut created = endpoint(json!([]));
        created["secret"] = json!("whsec_abc");
        assert_eq!(
            created_report(&created),
            "Created webhook endpoint 0193-a for https://hooks.platform.test/certs (sent: every type).\n\
             Signing secret: whsec_abc\n"
        );
        created["events"] = json!(["certificate.issued", "certificate.renewed"]);
        assert!(
            created_report(&created).contains("(sent: certificate.issued, certificate.renewed)")
        );
    }

    #[test]
    fn a_rotated_secret_says_until_when_the_previous_one_signs() {
        let mut rotated = endpoint(json!([]));
        rotated["secret"] = json!("whsec_new");
        rotated["previous_secret_valid_until"] = json!("2026-12-01T01:00:00Z");
        assert_eq!(
            rotated_report(&rotated),
            "New signing secret of webhook endpoint 0193-a: whsec_new\n\
             The previous secret signs every message beside it until 2026-12-01T01:00:00Z: switch the receiver to the new one before then.\n"
        );
    }

    #[test]
    fn endpoints_are_listed_one_a_row_with_their_url_last() {
        let mut disabled = endpoint(json!(["domain.removed"]));
        disabled["id"] = json!("0193-b");
        disabled["status"] = json!("disabled");
        disabled["url"] = json!("https://gone.test/h");
        assert_eq!(
            endpoints_table(&[endpoint(json!([])), disabled]),
            "ID      STATUS    EVENTS          PENDING  DELIVERED  FAILED  URL\n\
             0193-a  active    every type      1        12         0       https://hooks.platform.test/certs\n\
             0193-b  disabled  domain.removed  1        12         0       https://gone.test/h\n"
        );
        assert_eq!(
            endpoints_table(&[]),
            "ID  STATUS  EVENTS  PENDING  DELIVERED  FAILED  URL\n"
        );
    }

    #[test]
    fn an_endpoint_is_shown_a_field_a_line_with_why_it_is_disabled() {
        let mut shown = endpoint(json!(["certificate.issued", "domain.removed"]));
        shown["status"] = json!("disabled");
        shown["disabled_reason"] = json!("the receiver answered 410 Gone to message msg_1");
        shown["previous_secret_valid_until"] = json!("2026-12-01T01:00:00Z");
        assert_eq!(
            endpoint_details(&shown),
            "id:              0193-a\n\
             url:             https://hooks.platform.test/certs\n\
             events:          certificate.issued, domain.removed\n\
             description:     edge\n\
             status:          disabled (the receiver answered 410 Gone to message msg_1)\n\
             created:         2026-11-30T01:00:00Z\n\
             messages:        1 pending, 12 delivered, 0 failed\n\
             previous secret: signs too until 2026-12-01T01:00:00Z\n"
        );
        shown["description"] = json!("");
        assert!(endpoint_details(&shown).contains("\ndescription:     -\n"));
    }

    #[test]
    fn deliveries_show_each_attempt_with_its_status_or_its_error() {
        let attempts = [
            json!({"id": 3, "message_id": "msg_1", "position": 41, "attempt": 3,
                   "attempted_at": "2026-11-30T01:00:10Z", "status_code": 200, "latency_ms": 35,
                   "error": null}),
            json!({"id": 2, "message_id": "msg_1", "position": 41, "attempt": 2,
                   "attempted_at": "2026-11-30T01:00:05Z", "status_code": null,
                   "latency_ms": 15000, "error": "operation timed out\n(after 15 s)"}),
            json!({"id": 1, "message_id": "msg_1", "position": 41, "attempt": 1,
                   "attempted_at": "2026-11-30T01:00:00Z", "status_code": 503, "latency_ms": 4,
                   "error": null}),
        ];
        assert_eq!(
            deliveries_table(&attempts),
            "TIME                  MESSAGE  ATTEMPT  STATUS  LATENCY   ERROR\n\
             2026-11-30T01:00:10Z  msg_1    3        200     35 ms     -\n\
             2026-11-30T01:00:05Z  msg_1    2        -       15000 ms  operation timed out (after 15 s)\n\
             2026-11-30T01:00:00Z  msg_1    1        503     4 ms      -\n"
        );
    }
}
