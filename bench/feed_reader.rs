//! Reading a following feed (`GET /events?follow=true`, one JSON event per line) as it arrives,
//! shared by the `follow` and `webhooks` benches.

use std::time::Instant;

use serde_json::Value;
use tokio::sync::mpsc;

/// Reads `stream` until it ends or `arrivals` is dropped, and sends the domain id of each event
/// (of type `only`, when given) with the moment its line arrived.
pub async fn follow(
    mut stream: reqwest::Response,
    only: Option<&str>,
    arrivals: mpsc::UnboundedSender<(String, Instant)>,
) {
    let mut buffer: Vec<u8> = Vec::new();
    while let Ok(Some(chunk)) = stream.chunk().await {
        let arrived = Instant::now();
        buffer.extend_from_slice(&chunk);
        while let Some(end) = buffer.iter().position(|byte| *byte == b'\n') {
            let line: Vec<u8> = buffer.drain(..=end).collect();
            let Ok(event) = serde_json::from_slice::<Value>(&line) else {
                continue;
            };
            if only.is_some_and(|event_type| event["event_type"] != event_type) {
                continue;
            }
            let id = event["aggregate_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if arrivals.send((id, arrived)).is_err() {
                return;
            }
        }
    }
}
