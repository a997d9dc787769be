//! `dns-handling audit verify`: checks the whole log in one pass in feed order: every stream's
//! hash chain, and every signed checkpoint's signature, event count and log hash. It reads the
//! database, or the API with nothing but a read-only token, so an auditor needs no access to
//! the service's store.

use std::io::Write;

use anyhow::Context as _;
use dns_handling_events::chain::LogWalker;
use dns_handling_events::feed::FeedEvent;
use dns_handling_events::AGGREGATE_TYPE;

use crate::adapters::store::Store;
use crate::audit::checkpoints::Checkpoint;

/// Events read per page.
const PAGE: u32 = 1000;

/// Where the log is read from.
pub enum LogSource {
    /// The service's database (`DATABASE_URL`).
    Store(Store),
    /// A running service's API, with a read-only (or admin) token.
    Api {
        /// The HTTP client.
        http: reqwest::Client,
        /// The server's base URL, e.g. `https://certs.internal`.
        server: String,
        /// The bearer token, when the server needs one.
        token: Option<String>,
    },
}

/// Reads checkpoints an auditor kept: the JSON of a `GET /audit/checkpoints` page, a JSON array
/// of checkpoints, or one checkpoint per line.
pub fn read_kept_checkpoints(text: &str) -> anyhow::Result<Vec<Checkpoint>> {
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(text) {
        let items = value.get("items").cloned().unwrap_or(value);
        return serde_json::from_value(items).context("kept checkpoints");
    }
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).context("a kept checkpoint"))
        .collect()
}

impl LogSource {
    /// Reads the API of `server`.
    pub fn api(server: &str, token: Option<String>) -> Self {
        Self::Api {
            http: reqwest::Client::new(),
            server: server.trim_end_matches('/').to_owned(),
            token,
        }
    }

    async fn get(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        let Self::Api {
            http,
            server,
            token,
        } = self
        else {
            anyhow::bail!("not an API source");
        };
        let mut request = http.get(format!("{server}{path}"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach {server}"))?;
        let status = response.status();
        let body: serde_json::Value = response
            .json()
            .await
            .with_context(|| format!("GET {path}: {status} with no JSON"))?;
        anyhow::ensure!(
            status.is_success(),
            "GET {path}: {} {}",
            status.as_u16(),
            body["error"].as_str().unwrap_or("")
        );
        Ok(body)
    }

    /// Up to `PAGE` events after `after`, in feed order.
    async fn events_after(&self, after: i64) -> anyhow::Result<Vec<FeedEvent>> {
        match self {
            Self::Store(store) => Ok(store.events_after(after, PAGE).await?),
            Self::Api { .. } => {
                let page = self
                    .get(&format!("/events?after={after}&limit={PAGE}"))
                    .await?;
                Ok(serde_json::from_value(page["items"].clone())?)
            }
        }
    }

    /// Every checkpoint, oldest first.
    async fn checkpoints(&self) -> anyhow::Result<Vec<Checkpoint>> {
        let mut all = Vec::new();
        let mut before: Option<i64> = None;
        loop {
            let page: Vec<Checkpoint> = match self {
                Self::Store(store) => store.audit_checkpoints(before, PAGE).await?,
                Self::Api { .. } => {
                    let cursor = before.map(|b| format!("&before={b}")).unwrap_or_default();
                    let page = self
                        .get(&format!("/audit/checkpoints?limit={PAGE}{cursor}"))
                        .await?;
                    serde_json::from_value(page["items"].clone())?
                }
            };
            let full = page.len() == PAGE as usize;
            let next = page.last().map(|checkpoint| checkpoint.position);
            // Each page must go further back, or a source that repeats itself loops for ever.
            anyhow::ensure!(
                page.windows(2)
                    .all(|pair| pair[0].position > pair[1].position)
                    && before.zip(next).is_none_or(|(before, next)| next < before),
                "the source's checkpoints are not in order, latest first"
            );
            before = next;
            all.extend(page);
            if !full {
                break;
            }
        }
        all.reverse();
        Ok(all)
    }
}

/// What `audit verify` found wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// A stream's hash chain breaks.
    BrokenStream {
        /// The stream.
        aggregate_id: String,
        /// Its first event whose link does not hold.
        sequence: i64,
    },
    /// A checkpoint's signature does not hold.
    BadSignature {
        /// The checkpoint's position.
        position: i64,
    },
    /// Events of the store that the feed does not carry (no position, or one below 1): they
    /// are in streams, yet no walk of the feed, and so no checkpoint, covers them.
    OutsideFeed {
        /// How many.
        count: i64,
    },
    /// A checkpoint the auditor kept a copy of is gone from the store, or differs.
    KeptCheckpoint {
        /// Its position.
        position: i64,
    },
    /// The log no longer is what a checkpoint signed.
    CheckpointMismatch {
        /// The checkpoint's position.
        position: i64,
        /// The last checkpoint that still matched (0: the start of the log): the change lies
        /// after it and at or before `position`.
        after: i64,
    },
}

/// Checks the whole log from `source`: prints each finding and a summary to `out` and returns
/// the findings. With `trusted_key`, checkpoints must be signed by that key (standard base64);
/// without, by the key each names, and all by the same one. `known` are checkpoints the auditor
/// kept copies of: each must still be stored as it was, and the log must still match it.
pub async fn verify_log(
    source: &LogSource,
    trusted_key: Option<&str>,
    known: &[Checkpoint],
    out: &mut impl Write,
) -> anyhow::Result<Vec<Finding>> {
    let mut findings = Vec::new();
    let mut checkpoints = source.checkpoints().await?;
    for kept in known {
        match checkpoints.iter().find(|c| c.position == kept.position) {
            Some(stored) if stored == kept => {}
            Some(_) => {
                writeln!(
                    out,
                    "CHANGED checkpoint at position {}: the stored one differs from the copy kept",
                    kept.position
                )?;
                findings.push(Finding::KeptCheckpoint {
                    position: kept.position,
                });
            }
            None => {
                writeln!(
                    out,
                    "MISSING checkpoint at position {}: a copy was kept, the store no longer has it",
                    kept.position
                )?;
                findings.push(Finding::KeptCheckpoint {
                    position: kept.position,
                });
            }
        }
    }
    // The kept copies are compared with the log too, in place of what the store holds.
    checkpoints.retain(|c| !known.iter().any(|kept| kept.position == c.position));
    checkpoints.extend(known.iter().cloned());
    checkpoints.sort_by_key(|c| c.position);
    let mut signed = Vec::with_capacity(checkpoints.len());
    for checkpoint in &checkpoints {
        let key = trusted_key.unwrap_or(checkpoints[0].public_key.as_str());
        if checkpoint.is_signed_by(key) {
            signed.push(checkpoint);
            continue;
        }
        writeln!(
            out,
            "UNSIGNED checkpoint at position {} (signed_at {}): its signature does not hold under {}",
            checkpoint.position,
            checkpoint.signed_at,
            if trusted_key.is_some() { "the given public key" } else { "the key of the first checkpoint" }
        )?;
        findings.push(Finding::BadSignature {
            position: checkpoint.position,
        });
    }

    // Only checkpoints whose signature holds say what the log was: a forged one is reported
    // above and must not hide where the log really changed.
    let mut walker = LogWalker::new(AGGREGATE_TYPE);
    let mut pending = signed.iter().copied().peekable();
    let mut last_matched = 0i64;
    let mut mismatched = 0usize;
    let mut compare = |walker: &LogWalker,
                       checkpoint: &Checkpoint,
                       feed_ended: bool,
                       out: &mut dyn Write,
                       findings: &mut Vec<Finding>|
     -> anyhow::Result<()> {
        if walker.events as i64 == checkpoint.event_count && walker.log_hash == checkpoint.log_hash
        {
            if mismatched == 0 {
                last_matched = checkpoint.position;
            }
            return Ok(());
        }
        mismatched += 1;
        if mismatched > 1 {
            // The log hash is cumulative: every checkpoint after the first mismatch differs too.
            return Ok(());
        }
        let tail = if feed_ended && walker.position < checkpoint.position {
            format!(
                "; the feed ends at position {}, before the checkpoint's position",
                walker.position
            )
        } else {
            String::new()
        };
        writeln!(
            out,
            "CHECKPOINT MISMATCH at position {} (signed_at {}): it signed {} events with log hash {}, \
             the log now holds {} events up to there with log hash {}: events were removed, \
             inserted, reordered or rewritten after position {last_matched} and at or before \
             position {}{tail}",
            checkpoint.position,
            checkpoint.signed_at,
            checkpoint.event_count,
            checkpoint.log_hash,
            walker.events,
            walker.log_hash,
            checkpoint.position,
        )?;
        findings.push(Finding::CheckpointMismatch {
            position: checkpoint.position,
            after: last_matched,
        });
        Ok(())
    };

    loop {
        let events = source.events_after(walker.position).await?;
        for event in &events {
            // A source that does not move forward would make this walk go round for ever.
            anyhow::ensure!(
                event.position > walker.position,
                "the source answered position {} after position {}: not in feed order",
                event.position,
                walker.position
            );
            while let Some(checkpoint) = pending.next_if(|c| event.position > c.position) {
                compare(&walker, checkpoint, false, out, &mut findings)?;
            }
            if let Some(link) = walker.next(event) {
                writeln!(
                    out,
                    "BROKEN stream {} at sequence {} (position {}): {}",
                    link.aggregate_id, link.sequence, link.position, link.reason
                )?;
                findings.push(Finding::BrokenStream {
                    aggregate_id: link.aggregate_id,
                    sequence: link.sequence,
                });
            }
        }
        if events.len() < PAGE as usize {
            break;
        }
    }
    for checkpoint in pending {
        compare(&walker, checkpoint, true, out, &mut findings)?;
    }
    if let LogSource::Store(store) = source {
        let outside = store.events_outside_the_feed().await?;
        if outside > 0 {
            writeln!(
                out,
                "OUTSIDE THE FEED: {outside} stored events have no place in the feed order (no \
                 position, one below 1, or another aggregate type): they were written around the \
                 service"
            )?;
            findings.push(Finding::OutsideFeed { count: outside });
        }
    }
    let broken = findings
        .iter()
        .filter(|finding| matches!(finding, Finding::BrokenStream { .. }))
        .count();
    writeln!(
        out,
        "checked {} streams, {} events: {broken} broken",
        walker.streams(),
        walker.events
    )?;
    match checkpoints.last() {
        None => writeln!(
            out,
            "no signed checkpoint yet: deleting a stream's last events or rewriting the log \
             with recomputed hashes cannot be detected"
        )?,
        Some(latest) => {
            let bad = findings
                .iter()
                .filter(|finding| matches!(finding, Finding::BadSignature { .. }))
                .count();
            writeln!(
                out,
                "checked {} signed checkpoints ({bad} with a bad signature, {mismatched} not matching the log); \
                 the latest covers position {} ({} events, signed_at {}); {} events after it are not covered yet",
                checkpoints.len(),
                latest.position,
                latest.event_count,
                latest.signed_at,
                (walker.events as i64 - latest.event_count).max(0)
            )?;
            if trusted_key.is_none() {
                writeln!(
                    out,
                    "checkpoints were checked with the public key stored beside them ({}): pass \
                     --public-key with the key you were given to rule out a re-signed log",
                    checkpoints[0].public_key
                )?;
            }
        }
    }
    Ok(findings)
}
