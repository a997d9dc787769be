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

/// Writes `checked` and `kept` to `path`, one checkpoint per line in position order (a kept one
/// wins over a checked one at the same position: it is what the auditor saw first), replacing
/// the file at once (a temporary file, then a rename).
pub fn keep_checkpoints(
    path: &str,
    checked: &[Checkpoint],
    kept: &[Checkpoint],
) -> anyhow::Result<()> {
    let mut all: std::collections::BTreeMap<i64, &Checkpoint> = std::collections::BTreeMap::new();
    for checkpoint in checked.iter().chain(kept) {
        all.insert(checkpoint.position, checkpoint);
    }
    let mut text = String::new();
    for checkpoint in all.values() {
        text.push_str(&serde_json::to_string(checkpoint)?);
        text.push('\n');
    }
    let temporary = format!("{path}.tmp");
    std::fs::write(&temporary, text).with_context(|| format!("writing {temporary}"))?;
    std::fs::rename(&temporary, path).with_context(|| format!("replacing {path}"))?;
    Ok(())
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

    /// `GET path` from the API, its JSON body; an error status is an error with the server's
    /// message.
    pub(crate) async fn get(&self, path: &str) -> anyhow::Result<serde_json::Value> {
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
    pub async fn checkpoints(&self) -> anyhow::Result<Vec<Checkpoint>> {
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
    /// The newest checkpoint whose signature holds is older than the auditor's bound (or there
    /// is none): the newest checkpoints may have been deleted, or signing stopped.
    Stale {
        /// When the newest one was signed, if there is one.
        newest_signed_at: Option<String>,
    },
    /// Events older than the auditor's bound that no checkpoint covers: a checkpoint should
    /// have been signed over them, so the ones that were may have been deleted and the events
    /// after them rewritten.
    Uncovered {
        /// How many.
        count: u64,
        /// The feed position of the first of them.
        first_position: i64,
    },
}

/// How fresh the auditor requires the checkpoints to be: the newest one signed within `max_age`
/// of `now`, and no event recorded longer than `max_age` before `now` left uncovered.
#[derive(Debug, Clone, Copy)]
pub struct Freshness {
    /// The bound (at least the service's `AUDIT_CHECKPOINT_INTERVAL`, with room for a late one).
    pub max_age: chrono::Duration,
    /// The time the check is made at.
    pub now: chrono::DateTime<chrono::Utc>,
}

impl Freshness {
    /// Whether an RFC 3339 time lies before the bound (unreadable times count as before).
    fn is_older(&self, time: &str) -> bool {
        chrono::DateTime::parse_from_rfc3339(time).map_or(true, |at| {
            at.with_timezone(&chrono::Utc) < self.now - self.max_age
        })
    }
}

/// Checks the whole log from `source`: prints each finding and a summary to `out` and returns
/// the findings. With `trusted_key`, checkpoints must be signed by that key (standard base64);
/// without, by the key each names, and all by the same one. `known` are checkpoints the auditor
/// kept copies of: each must still be stored as it was, and the log must still match it.
///
/// With `freshness`, the newest signed checkpoint must be within its bound and every event
/// older than it covered by one: without it, deleting the newest checkpoints and rewriting what
/// came after them cannot be told from a log whose newest events are not yet signed.
pub async fn verify_log(
    source: &LogSource,
    trusted_key: Option<&str>,
    known: &[Checkpoint],
    freshness: Option<Freshness>,
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

    // Events after the newest checkpoint whose signature holds are not covered by any.
    let covered_up_to = signed.last().map_or(0, |checkpoint| checkpoint.position);
    let mut uncovered_old: Option<(u64, i64)> = None;
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
            if let Some(freshness) = &freshness {
                if event.position > covered_up_to && freshness.is_older(&event.recorded_at) {
                    let (count, first) = uncovered_old.get_or_insert((0, event.position));
                    *count += 1;
                    *first = (*first).min(event.position);
                }
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
    if let Some(freshness) = &freshness {
        let newest = signed.last().map(|checkpoint| checkpoint.signed_at.clone());
        if newest.as_deref().is_none_or(|at| freshness.is_older(at)) {
            writeln!(
                out,
                "STALE: the newest checkpoint whose signature holds was signed {}, longer ago \
                 than --max-age {}: newer ones may have been deleted, or signing stopped",
                newest.as_deref().unwrap_or("never"),
                humantime::format_duration(freshness.max_age.to_std().unwrap_or_default())
            )?;
            findings.push(Finding::Stale {
                newest_signed_at: newest,
            });
        }
        if let Some((count, first_position)) = uncovered_old {
            writeln!(
                out,
                "UNCOVERED: {count} events recorded longer ago than --max-age (the first at \
                 position {first_position}) are covered by no checkpoint whose signature holds: \
                 the checkpoints over them may have been deleted and the events rewritten"
            )?;
            findings.push(Finding::Uncovered {
                count,
                first_position,
            });
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
