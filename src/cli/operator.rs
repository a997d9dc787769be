//! The operator commands: `replay`, `audit verify`, `audit views`, `audit edge-deliveries`,
//! `keys rotate` and `export`.

use std::io::Write;
use std::time::Instant;

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};

use dns_handling_events::feed::FeedEvent;
use dns_handling_projections::DomainView;

use crate::adapters::store::{recorded_receiver, DeliveriesOf, EdgeKeyDelivery, Store};
use crate::audit::verify::LogSource;
use crate::cli::client::format::table;
use crate::read::projector::ViewProjector;
use crate::settings::Settings;

/// Opens (and migrates) the configured store.
pub async fn open_store(settings: &Settings) -> anyhow::Result<Store> {
    let store = Store::connect_pooled(
        &settings.database_url,
        settings.store_timeout,
        settings.store_connections,
    )
    .await
    .context("connecting to the store (DATABASE_URL)")?;
    store.migrate().await.context("migrating the store")?;
    Ok(store)
}

/// Rebuilds the projections from zero with a progress bar on stderr. In SQLite mode it refuses
/// to run while the service holds the database.
pub async fn replay(settings: &Settings) -> anyhow::Result<()> {
    let _lock = crate::adapters::store::lock_sqlite_exclusively(&settings.database_url)?;
    let store = open_store(settings).await?;
    let (_, total) = store.feed_extent().await?;
    let bar = ProgressBar::new(u64::try_from(total).unwrap_or(0));
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} events ({per_sec}, eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let applied = ViewProjector::new(store)
        .rebuild(|done| bar.set_position(done))
        .await?;
    bar.finish();
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "replayed {applied} events in {seconds:.2} s ({:.0} events/s)",
        applied as f64 / seconds.max(f64::EPSILON)
    );
    Ok(())
}

/// Every stream of the store, whole, a page of streams at a time, ordered by domain id.
struct StreamPages<'a> {
    store: &'a Store,
    after: String,
}

impl<'a> StreamPages<'a> {
    /// Streams per page.
    const STREAMS: u32 = 500;

    fn new(store: &'a Store) -> Self {
        Self {
            store,
            after: String::new(),
        }
    }

    /// The next page's events, ordered by domain then sequence; `None` after the last.
    async fn next(&mut self) -> anyhow::Result<Option<Vec<FeedEvent>>> {
        let page = self
            .store
            .all_streams_in_order(&self.after, Self::STREAMS)
            .await?;
        let Some(last) = page.last() else {
            return Ok(None);
        };
        self.after = last.aggregate_id.clone();
        Ok(Some(page))
    }
}

/// The options of `audit verify`.
#[derive(Debug, Default, PartialEq, Eq, clap::Args)]
pub struct VerifyOptions {
    /// Checkpoints must be signed by this public key (standard base64)
    #[arg(long, value_name = "KEY")]
    pub public_key: Option<String>,
    /// Read the log through this server's API instead of the database
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    /// The bearer token for --server
    #[arg(
        long,
        value_name = "TOKEN",
        env = "DNS_HANDLING_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// A file of checkpoints kept elsewhere (a saved GET /audit/checkpoints page, a JSON array
    /// or one per line): each must still be stored as it was, and the log must still match it
    #[arg(long, value_name = "FILE")]
    pub known: Option<String>,
    /// After a clean run, writes every checkpoint checked back to --known (one per line), so
    /// the next run holds the store to every checkpoint this one saw
    #[arg(long, requires = "known")]
    pub update_known: bool,
    /// The newest checkpoint must have been signed within this (e.g. `2h`: a few of the
    /// service's AUDIT_CHECKPOINT_INTERVAL), and every event older than this must be covered by
    /// a checkpoint: catches the newest checkpoints deleted and the events after them rewritten
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub max_age: Option<std::time::Duration>,
}

/// The options of `audit edge-deliveries`: whose deliveries, and where they are read.
#[derive(Debug, PartialEq, Eq, clap::Args)]
#[command(group(clap::ArgGroup::new("of").required(true).args(["edge", "certificate_id"])))]
pub struct DeliveriesOptions {
    /// List every certificate whose key this receiver got: an edge's name in EDGE_TOKENS (or
    /// `edge:<name>` as recorded), or `admin`
    #[arg(long, value_name = "NAME")]
    pub edge: Option<String>,
    /// List every receiver of this certificate's key
    #[arg(long, value_name = "ID")]
    pub certificate_id: Option<String>,
    /// Read through this server's API (GET /audit/edge-deliveries) instead of the database
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    /// The bearer token for --server (a read-only token will do)
    #[arg(
        long,
        value_name = "TOKEN",
        env = "DNS_HANDLING_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
}

/// Deliveries read per page.
const DELIVERIES_PAGE: u32 = 1000;

/// One page of deliveries after `after` (a certificate id for a receiver's, a receiver for a
/// certificate's), from the store or through `GET /audit/edge-deliveries`.
async fn deliveries_page(
    source: &LogSource,
    of: DeliveriesOf<'_>,
    after: &str,
) -> anyhow::Result<Vec<EdgeKeyDelivery>> {
    let store = match source {
        LogSource::Store(store) => store,
        LogSource::Api { .. } => {
            let (key, value) = match of {
                DeliveriesOf::Receiver(receiver) => ("edge", receiver),
                DeliveriesOf::Certificate(certificate_id) => ("certificate_id", certificate_id),
            };
            let query = reqwest::Url::parse_with_params(
                "http://query.invalid/",
                [(key, value), ("after", after)],
            )?;
            let limit = DELIVERIES_PAGE;
            let path = format!(
                "/audit/edge-deliveries?{}&limit={limit}",
                query.query().unwrap_or_default()
            );
            let page = source.get(&path).await?;
            return serde_json::from_value(page["items"].clone())
                .with_context(|| format!("GET {path}: not a page of deliveries"));
        }
    };
    Ok(store.key_deliveries(of, after, DELIVERIES_PAGE).await?)
}

/// Prints, as a table, the first delivery of each certificate's key by the certificate stream
/// to the receiver (`--edge`) or of the certificate (`--certificate-id`) the options name, then
/// how many; returns them. An edge's reads through `GET /edge/certificate` are not here: each
/// edge's first read of a certificate's key is a `PrivateKeyRead` event of the domain.
pub async fn audit_edge_deliveries(
    source: &LogSource,
    options: &DeliveriesOptions,
    out: &mut impl Write,
) -> anyhow::Result<Vec<EdgeKeyDelivery>> {
    let receiver = options.edge.as_deref().map(recorded_receiver);
    let of = match (&receiver, &options.certificate_id) {
        (Some(receiver), None) => DeliveriesOf::Receiver(receiver),
        (None, Some(certificate_id)) => DeliveriesOf::Certificate(certificate_id),
        // clap's group asks for exactly one.
        _ => anyhow::bail!("give one of --edge and --certificate-id"),
    };
    let mut deliveries = Vec::new();
    let mut after = String::new();
    loop {
        let page = deliveries_page(source, of, &after).await?;
        let Some(last) = page.last() else { break };
        after = match of {
            DeliveriesOf::Receiver(_) => last.certificate_id.clone(),
            DeliveriesOf::Certificate(_) => last.edge.clone(),
        };
        let full = page.len() == DELIVERIES_PAGE as usize;
        deliveries.extend(page);
        if !full {
            break;
        }
    }
    if !deliveries.is_empty() {
        let header = ["RECEIVER", "CERTIFICATE", "DOMAIN", "FIRST DELIVERED"];
        let mut rows = vec![header.map(str::to_owned).to_vec()];
        rows.extend(deliveries.iter().map(|delivery| {
            vec![
                delivery.edge.clone(),
                delivery.certificate_id.clone(),
                delivery.domain_id.clone(),
                delivery.first_delivered_at.clone(),
            ]
        }));
        write!(out, "{}", table(&rows))?;
    }
    match of {
        DeliveriesOf::Receiver(receiver) => writeln!(
            out,
            "{} certificates' keys delivered to {receiver} by the certificate stream",
            deliveries.len()
        )?,
        DeliveriesOf::Certificate(certificate_id) => writeln!(
            out,
            "the key of certificate {certificate_id} delivered to {} receivers by the \
             certificate stream",
            deliveries.len()
        )?,
    }
    Ok(deliveries)
}

/// A stored domain view that disagrees with the history it says it reflects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewMismatch {
    /// The domain.
    pub domain_id: String,
    /// How the view disagrees.
    pub reason: String,
}

/// How a stored view (`None`: there is none) disagrees with its domain's events, or `None` when
/// it agrees. The events are folded only up to the sequence the stored view says it has applied,
/// so an event committed while the audit runs, and not yet in the view, is no disagreement.
fn view_disagreement(
    id: &str,
    events: &[FeedEvent],
    stored: Option<&DomainView>,
) -> anyhow::Result<Option<String>> {
    let Some(stored) = stored else {
        return Ok(Some(format!(
            "no view, though the domain has {} events",
            events.len()
        )));
    };
    let length = events.len() as u64;
    if stored.last_sequence > length {
        return Ok(Some(format!(
            "the view has applied sequence {} but the history ends at {length}",
            stored.last_sequence
        )));
    }
    let mut folded: Option<DomainView> = None;
    for event in events.iter().take(stored.last_sequence as usize) {
        let sequence = u64::try_from(event.sequence).unwrap_or(0);
        let decoded = event
            .decode()
            .with_context(|| format!("decoding {id} sequence {sequence}"))?;
        match folded.as_mut() {
            Some(view) => {
                view.apply(sequence, &decoded);
            }
            None => folded = DomainView::from_registration(id, sequence, &decoded),
        }
    }
    let Some(folded) = folded else {
        return Ok(Some(
            "the history does not start with a registration".into(),
        ));
    };
    let (expected, found) = (
        serde_json::to_value(&folded)?,
        serde_json::to_value(stored)?,
    );
    if expected == found {
        return Ok(None);
    }
    let fields = |value: &serde_json::Value| value.as_object().cloned().unwrap_or_default();
    let (expected, found) = (fields(&expected), fields(&found));
    let mut differing: Vec<&str> = expected
        .keys()
        .chain(found.keys())
        .filter(|key| expected.get(*key) != found.get(*key))
        .map(String::as_str)
        .collect();
    differing.sort_unstable();
    differing.dedup();
    Ok(Some(format!(
        "differs from its history at sequence {} in: {}",
        stored.last_sequence,
        differing.join(", ")
    )))
}

/// The disagreements of a page of streams (ordered by domain, then sequence) with their views.
async fn page_disagreements(
    store: &Store,
    page: &[FeedEvent],
) -> anyhow::Result<Vec<ViewMismatch>> {
    let streams: Vec<&[FeedEvent]> = page
        .chunk_by(|a, b| a.aggregate_id == b.aggregate_id)
        .collect();
    let ids: Vec<&str> = streams
        .iter()
        .map(|stream| stream[0].aggregate_id.as_str())
        .collect();
    let views: std::collections::HashMap<String, DomainView> = store
        .domain_views_by_ids(&ids)
        .await?
        .into_iter()
        .map(|view| (view.id.clone(), view))
        .collect();
    let mut mismatches = Vec::new();
    for (id, stream) in ids.iter().zip(&streams) {
        if let Some(reason) = view_disagreement(id, stream, views.get(*id))? {
            mismatches.push(ViewMismatch {
                domain_id: (*id).to_owned(),
                reason,
            });
        }
    }
    Ok(mismatches)
}

/// Checks every stored domain view against its own history, and looks for views of domains
/// without events; prints each disagreement and returns them. Reads only, so it may run while
/// the service runs: a disagreement is read a second time before it is reported, as a view may
/// be written in the moment between reading the events and reading the view.
pub async fn audit_views(store: &Store, out: &mut impl Write) -> anyhow::Result<Vec<ViewMismatch>> {
    let mut suspects = Vec::new();
    let mut streams = 0u64;
    let mut pages = StreamPages::new(store);
    while let Some(page) = pages.next().await? {
        streams += page
            .chunk_by(|a, b| a.aggregate_id == b.aggregate_id)
            .count() as u64;
        suspects.extend(page_disagreements(store, &page).await?);
    }
    let mut mismatches = Vec::new();
    for suspect in suspects {
        // The view first: every event it has applied was committed before it was written, so
        // the history read after it holds them all.
        let views = store.domain_views_by_ids(&[&suspect.domain_id]).await?;
        let events = store.domain_history(&suspect.domain_id).await?;
        if let Some(reason) = view_disagreement(&suspect.domain_id, &events, views.first())? {
            mismatches.push(ViewMismatch {
                domain_id: suspect.domain_id,
                reason,
            });
        }
    }
    for id in store.view_ids_without_events().await? {
        mismatches.push(ViewMismatch {
            domain_id: id,
            reason: "a view of a domain without any event".into(),
        });
    }
    for mismatch in &mismatches {
        writeln!(
            out,
            "MISMATCH view {}: {}",
            mismatch.domain_id, mismatch.reason
        )?;
    }
    writeln!(
        out,
        "checked {streams} domain views against their histories: {} disagree",
        mismatches.len()
    )?;
    Ok(mismatches)
}

/// Re-seals every stored secret under the current key-encryption key and says what it did.
pub async fn keys_rotate(settings: &Settings, out: &mut impl Write) -> anyhow::Result<()> {
    let keys = crate::adapters::vault::KeyRing::resolve(settings)?;
    let store = open_store(settings).await?;
    let rotation = crate::adapters::vault::KeyVault::new(store, keys)
        .rotate()
        .await?;
    writeln!(
        out,
        "re-sealed {} values under the current key ({} certificate keys, {} ACME accounts, \
         {} webhook secrets); {} were under it already",
        rotation.certificate_keys + rotation.acme_accounts + rotation.webhook_secrets,
        rotation.certificate_keys,
        rotation.acme_accounts,
        rotation.webhook_secrets,
        rotation.already_current
    )?;
    Ok(())
}

/// Writes the feed after `after` as NDJSON.
pub async fn export(store: &Store, after: i64, out: &mut impl Write) -> anyhow::Result<u64> {
    let mut position = after;
    let mut written = 0u64;
    loop {
        let page = store.events_after(position, 5_000).await?;
        let Some(last) = page.last() else {
            return Ok(written);
        };
        position = last.position;
        for event in &page {
            serde_json::to_writer(&mut *out, event)?;
            out.write_all(b"\n")?;
        }
        written += page.len() as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use cqrs_es::DomainEvent;
    use dns_handling_events::CustomDomainEvent;

    /// A domain's first two events as the feed carries them.
    fn history() -> Vec<FeedEvent> {
        let at = Utc
            .with_ymd_and_hms(2026, 11, 26, 12, 0, 0)
            .single()
            .expect("a time");
        let events = [
            CustomDomainEvent::DomainRegistered {
                domain_name: "shop.example.com".into(),
                verification_token: "token".into(),
                verification_record_name: "_dns-handling.shop.example.com.".into(),
                registered_at: at,
                alt_names: vec![],
                tenant: None,
            },
            CustomDomainEvent::OwnershipVerified {
                observed_values: vec!["token".into()],
                proof: dns_handling_events::OwnershipProof::Txt,
                cname_target: None,
                verified_at: at,
            },
        ];
        events
            .iter()
            .zip(1..)
            .map(|(event, sequence)| FeedEvent {
                position: sequence,
                aggregate_id: "d1".into(),
                sequence,
                event_type: event.event_type(),
                event_version: event.event_version(),
                recorded_at: String::new(),
                payload: serde_json::to_value(event).expect("payload"),
                metadata: serde_json::json!({}),
            })
            .collect()
    }

    /// The view the projection builds from the first `up_to` events.
    fn projected(events: &[FeedEvent], up_to: usize) -> DomainView {
        let first = events[0].decode().expect("decodes");
        let mut view = DomainView::from_registration("d1", 1, &first).expect("a registration");
        for event in &events[1..up_to] {
            view.apply(event.sequence as u64, &event.decode().expect("decodes"));
        }
        view
    }

    #[test]
    fn a_view_that_follows_from_its_history_agrees_even_when_the_history_has_moved_on() {
        let events = history();
        for up_to in 1..=events.len() {
            let view = projected(&events, up_to);
            assert_eq!(
                view_disagreement("d1", &events, Some(&view)).expect("checked"),
                None,
                "a view at sequence {up_to}"
            );
        }
    }

    #[test]
    fn a_changed_field_a_missing_view_and_a_view_ahead_of_its_history_disagree() {
        let events = history();
        let mut forged = projected(&events, 2);
        forged.verification_token = "forged".into();
        let reason = view_disagreement("d1", &events, Some(&forged))
            .expect("checked")
            .expect("a disagreement");
        assert!(reason.ends_with("in: verification_token"), "{reason}");

        let reason = view_disagreement("d1", &events, None)
            .expect("checked")
            .expect("a disagreement");
        assert!(reason.starts_with("no view"), "{reason}");

        let reason = view_disagreement("d1", &events[..1], Some(&projected(&events, 2)))
            .expect("checked")
            .expect("a disagreement");
        assert!(reason.contains("history ends at 1"), "{reason}");
    }
}
