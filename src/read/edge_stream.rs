//! The certificate stream the platform's TLS edges follow (`GET /edge/certificates`): NDJSON
//! lines ([`EdgeLine`]) of the certificates served, with their keys, then the changes as they
//! commit.
//!
//! **Where it starts.** From `after` when the feed can be resumed there: any position from 1
//! up to the feed's head (the feed is never truncated, so nothing is ever too old). From a
//! snapshot otherwise: `after=0`, or a position past the head, which this database never
//! handed out (a directory kept against another database, or one restored from a backup
//! older than the edge's state).
//!
//! **The snapshot** is read from the views, not folded from the feed: a fold would hold every
//! domain's state at once, where the views are read a page at a time in one read transaction
//! (`store::edge_certificates`), so memory stays bounded per connection whatever the number of
//! certificates. Its position is the projection checkpoint read first in that transaction. The
//! views are at it or ahead of it (the commits' own path writes them first); a view ahead of it
//! is replaced by its stream folded up to the position, in the same transaction, so the
//! snapshot shows exactly that position and the changes after it lose and repeat nothing.
//! Snapshots run a few at a time ([`SNAPSHOTS_AT_ONCE`]): each holds a store connection while
//! the client reads it.
//!
//! **The changes** come from a feed follower (`read::feed_follower`), which wakes on the
//! commits of any replica: `served` on `CertificateIssued` (with the certificate it replaces),
//! `withdrawn` on `CertificateRevoked`, `CertificateExpired`, `DomainRemoved` and
//! `CertificateKeyDestroyed` (for any certificate: an edge holding another ignores it). A
//! `served` change whose key is already destroyed, or whose end has passed, is skipped: the
//! edge must not take it up, and its withdrawal follows in the feed.
//!
//! **The keys it hands out** are recorded before each chunk carrying them leaves, for whoever
//! asked ([`KeyReceiver`]; see `read::edge_chunk`).
//!
//! **When the process stops** ([`Stopping`]) the stream ends after its last whole chunk: a
//! following stream never ends by itself, and actix's graceful stop waits for it.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use dns_handling_events::{CustomDomainEvent, DomainStatus, IssuedCertificate};
use dns_handling_projections::{CertificateSummary, CertificateView, DomainView};
use tokio::sync::{mpsc, Semaphore};

use crate::adapters::acme::certificate_names;
use crate::adapters::store::{EdgeSnapshot, EdgeSnapshotRow, FeedRow, Store, StoreError};
use crate::adapters::vault::{KeyVault, VaultError};
use crate::edge::line::{EdgeLine, ServedCertificate};
pub use crate::read::edge_chunk::KeyReceiver;
use crate::read::edge_chunk::{Chunk, Outbox};
use crate::read::feed_follower::{FeedConsumer, FeedFollower, Handed, Handled, Undecodable, Wait};
use crate::read::projector::DOMAIN_VIEWS;
use crate::tasks::{AbortOnDrop, Stopping};

/// Domains read per page of a snapshot.
const SNAPSHOT_PAGE: u32 = 200;

/// Feed events read per batch of changes.
const CHANGES_BATCH: u32 = 200;

/// Bytes of lines gathered before they are handed to the response.
const CHUNK_BYTES: usize = 256 * 1024;

/// Snapshots read at once in this process; more wait their turn. Each holds a store connection
/// (of 16 on PostgreSQL, 8 on SQLite) for as long as its client takes to read it.
pub const SNAPSHOTS_AT_ONCE: usize = 4;

static SNAPSHOTS: Semaphore = Semaphore::const_new(SNAPSHOTS_AT_ONCE);

/// The event types that change what an edge serves.
const CHANGES: [&str; 5] = [
    "CertificateIssued",
    "CertificateRevoked",
    "CertificateExpired",
    "CertificateKeyDestroyed",
    "DomainRemoved",
];

/// What a stream reads: the store, the vault that opens the keys, how often a caught-up
/// follower looks again when no commit woke it; and who asked, whom its keys are recorded for.
#[derive(Clone)]
pub struct EdgeStreamSource {
    /// The store.
    pub store: Store,
    /// The vault the keys are opened with.
    pub vault: KeyVault,
    /// `FEED_POLL_INTERVAL`.
    pub poll_interval: Duration,
    /// Who asks: every key the stream sends is recorded for it.
    pub receiver: KeyReceiver,
    /// The process is stopping: the stream ends.
    pub stopping: Stopping,
}

/// One client's stream: chunks of whole lines, produced by a task that ends with it.
pub struct EdgeStream {
    chunks: mpsc::Receiver<Result<Vec<u8>, StoreError>>,
    _task: AbortOnDrop<()>,
}

impl EdgeStream {
    /// The next chunk of lines; an error ends the stream (the client resumes from the last
    /// position it read); `None` when it is over.
    pub async fn next(&mut self) -> Option<Result<Vec<u8>, StoreError>> {
        self.chunks.recv().await
    }
}

impl EdgeStreamSource {
    /// The stream after feed position `after` (`0`: from a snapshot); with `follow` it stays
    /// open for the changes to come, else it ends once caught up.
    pub fn open(self, after: i64, follow: bool) -> EdgeStream {
        // One chunk in hand and one waiting at most: the client's pace paces the reads.
        let (sender, chunks) = mpsc::channel(1);
        let outbox = Outbox {
            sender,
            store: self.store.clone(),
            receiver: self.receiver.clone(),
        };
        let stopping = self.stopping.clone();
        let task = tokio::spawn(async move {
            let run = async {
                if let Err(error) = self.run(after, follow, outbox.clone()).await {
                    outbox.fail(error).await;
                }
            };
            // Stopping drops the run, and with it every sender of the chunks: the response
            // ends after the chunks already handed over.
            tokio::select! {
                () = run => {}
                () = stopping.wait() => {}
            }
        });
        EdgeStream {
            chunks,
            _task: AbortOnDrop(task),
        }
    }

    async fn run(self, after: i64, follow: bool, outbox: Outbox) -> Result<(), StoreError> {
        let resumable = after > 0 && after <= self.store.feed_head().await?;
        let position = if resumable {
            after
        } else {
            match self.snapshot(&outbox).await? {
                Some(position) => position,
                None => return Ok(()),
            }
        };
        let changes = Changes {
            source: self.clone(),
            after: position,
            follow,
            outbox,
        };
        FeedFollower::new(self.store.clone(), changes)
            .follow()
            .await;
        Ok(())
    }

    /// Sends a snapshot; answers its position, or `None` when the client left.
    async fn snapshot(&self, outbox: &Outbox) -> Result<Option<i64>, StoreError> {
        let _turn = SNAPSHOTS.acquire().await.expect("never closed");
        let mut snapshot = self.store.edge_snapshot(DOMAIN_VIEWS).await?;
        let position = snapshot.position();
        let now = Utc::now();
        let mut lines = Chunk::default();
        lines.push(&EdgeLine::SnapshotBegins { position });
        let mut cursor = String::new();
        loop {
            let page = snapshot.page(&cursor, SNAPSHOT_PAGE).await?;
            let Some(last) = page.last() else { break };
            cursor = last.domain_id.clone();
            let mut served = Vec::with_capacity(page.len());
            for row in &page {
                served.extend(served_at_position(&mut snapshot, row, now).await?);
            }
            let orders: Vec<String> = served.iter().map(|c| c.order_id.clone()).collect();
            let mut keys = snapshot.sealed_keys(&orders).await?;
            for certificate in served {
                // A key destroyed since the position: its withdrawal follows in the changes.
                let Some(sealed) = keys.remove(&certificate.order_id) else {
                    continue;
                };
                let key = (self.vault)
                    .open_certificate_key(&certificate.order_id, &sealed)
                    .map_err(vault_error)?;
                lines.push(&EdgeLine::Served(certificate.line(position, None, key)));
            }
            if !outbox.send(&mut lines).await? || page.len() < SNAPSHOT_PAGE as usize {
                break;
            }
        }
        snapshot.close().await?;
        lines.push(&EdgeLine::SnapshotEnds { position });
        Ok(outbox.send(&mut lines).await?.then_some(position))
    }
}

/// A certificate a domain serves, before its key is read.
struct Candidate {
    domain_id: String,
    domain_name: String,
    certificate_id: String,
    order_id: String,
    not_before: DateTime<Utc>,
    not_after: DateTime<Utc>,
    chain_pem: String,
}

impl Candidate {
    fn issued(domain_id: &str, domain_name: &str, certificate: &IssuedCertificate) -> Self {
        Self {
            domain_id: domain_id.to_owned(),
            domain_name: domain_name.to_owned(),
            certificate_id: certificate.certificate_id.clone(),
            order_id: certificate.order_id.clone(),
            not_before: certificate.not_before,
            not_after: certificate.not_after,
            chain_pem: certificate.chain_pem.clone(),
        }
    }

    fn line(self, position: i64, replaces: Option<String>, key_pem: String) -> ServedCertificate {
        ServedCertificate {
            position,
            names: served_names(&self.domain_name, &self.chain_pem),
            domain_id: self.domain_id,
            domain_name: self.domain_name,
            certificate_id: self.certificate_id,
            replaces,
            not_before: self.not_before,
            not_after: self.not_after,
            chain_pem: self.chain_pem,
            key_pem,
        }
    }
}

/// The certificate a view serves at `now`: a live domain's current certificate, neither
/// revoked nor expired nor past its end. (Only `active` and `expired` domains have one: a
/// renewal keeps the domain `active`; a `moved` domain's is served until its end.)
pub fn serving(view: &DomainView, now: DateTime<Utc>) -> Option<&CertificateSummary> {
    let live = !view.removed && matches!(view.status, DomainStatus::Active | DomainStatus::Moved);
    (view.certificate.as_ref()).filter(|c| live && c.revoked_at.is_none() && c.not_after > now)
}

/// The names a certificate serves as an edge matches them (lower case, no trailing dot), read
/// from its leaf, the domain's name first.
pub fn served_names(domain_name: &str, chain_pem: &str) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    let read = certificate_names(chain_pem).into_iter();
    for name in read.map(|name| name.trim_end_matches('.').to_ascii_lowercase()) {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    if let Some(at) = names.iter().position(|name| name == domain_name) {
        names[..=at].rotate_right(1);
    }
    names
}

/// What a snapshot row's domain served at the snapshot's position: from its views when they
/// are at it, else from its stream folded up to it.
async fn served_at_position(
    snapshot: &mut EdgeSnapshot,
    row: &EdgeSnapshotRow,
    now: DateTime<Utc>,
) -> Result<Option<Candidate>, StoreError> {
    let ahead = row.view_position.is_some_and(|at| at > snapshot.position());
    if !ahead {
        let view: DomainView = serde_json::from_str(&row.view)?;
        let Some(summary) = serving(&view, now) else {
            return Ok(None);
        };
        let certificate: Option<CertificateView> = row
            .certificate
            .as_deref()
            .map(serde_json::from_str)
            .transpose()?;
        // The two views are written together; should they differ, the stream decides.
        if let Some(certificate) = certificate.filter(|c| c.id == summary.id) {
            return Ok(Some(Candidate {
                domain_id: view.id,
                domain_name: view.domain_name,
                certificate_id: certificate.id,
                order_id: certificate.order_id,
                not_before: certificate.not_before,
                not_after: certificate.not_after,
                chain_pem: certificate.chain_pem,
            }));
        }
    }
    let rows = snapshot.stream_until_position(&row.domain_id).await?;
    let events = rows
        .iter()
        .map(|row| Ok((u64::try_from(row.sequence).unwrap_or(0), row.decode()?)))
        .collect::<Result<Vec<_>, StoreError>>()?;
    let stream = events.iter().map(|(sequence, event)| (*sequence, event));
    let Some(view) = DomainView::fold(&row.domain_id, stream) else {
        return Ok(None);
    };
    let Some(summary) = serving(&view, now) else {
        return Ok(None);
    };
    Ok(events.iter().rev().find_map(|(_, event)| match event {
        CustomDomainEvent::CertificateIssued { certificate, .. }
            if certificate.certificate_id == summary.id =>
        {
            Some(Candidate::issued(&view.id, &view.domain_name, certificate))
        }
        _ => None,
    }))
}

/// A vault failure as the stream reports it.
fn vault_error(error: VaultError) -> StoreError {
    match error {
        VaultError::Store(error) => error,
        error => StoreError::other("opening a certificate key", error),
    }
}

/// The changes after a position, as a consumer of the feed: its position is the client's.
struct Changes {
    source: EdgeStreamSource,
    after: i64,
    follow: bool,
    outbox: Outbox,
}

impl Changes {
    /// The line an event of the feed makes, if it changes what an edge serves.
    async fn line(
        &self,
        row: &FeedRow,
        event: &CustomDomainEvent,
    ) -> Result<Option<EdgeLine>, StoreError> {
        let withdrawn = |certificate_id: &String| {
            Some(EdgeLine::Withdrawn {
                position: row.position,
                domain_id: row.aggregate_id.clone(),
                certificate_id: certificate_id.clone(),
            })
        };
        Ok(match event {
            CustomDomainEvent::CertificateIssued { certificate, .. } => {
                self.served(row, certificate).await?.map(EdgeLine::Served)
            }
            CustomDomainEvent::CertificateRevoked { certificate_id, .. }
            | CustomDomainEvent::CertificateExpired { certificate_id, .. }
            | CustomDomainEvent::CertificateKeyDestroyed {
                certificate_id: Some(certificate_id),
                ..
            } => withdrawn(certificate_id),
            CustomDomainEvent::DomainRemoved { .. } => {
                let (_, last) = self.domain_before(row).await?;
                last.and_then(|certificate| withdrawn(&certificate.certificate_id))
            }
            _ => None,
        })
    }

    /// The `served` line of a certificate just issued, unless its key is gone or its end past.
    async fn served(
        &self,
        row: &FeedRow,
        certificate: &IssuedCertificate,
    ) -> Result<Option<ServedCertificate>, StoreError> {
        if certificate.not_after <= Utc::now() {
            return Ok(None);
        }
        let vault = &self.source.vault;
        let key = vault.certificate_key(&certificate.order_id).await;
        let Some(key) = key.map_err(vault_error)? else {
            return Ok(None);
        };
        let (domain_name, replaced) = self.domain_before(row).await?;
        let domain_name = domain_name.unwrap_or_default();
        let candidate = Candidate::issued(&row.aggregate_id, &domain_name, certificate);
        let replaces = replaced.map(|replaced| replaced.certificate_id);
        Ok(Some(candidate.line(row.position, replaces, key)))
    }

    /// The domain's name and the certificate it served before `row`, from its stream.
    async fn domain_before(
        &self,
        row: &FeedRow,
    ) -> Result<(Option<String>, Option<IssuedCertificate>), StoreError> {
        let store = &self.source.store;
        let facts = store
            .edge_domain_facts(&row.aggregate_id, row.position)
            .await?;
        let (mut name, mut last) = (None, None);
        for fact in facts {
            match fact.decode()? {
                CustomDomainEvent::DomainRegistered { domain_name, .. } => name = Some(domain_name),
                CustomDomainEvent::CertificateIssued { certificate, .. } => {
                    last = Some(certificate)
                }
                _ => {}
            }
        }
        Ok((name, last))
    }
}

#[async_trait]
impl FeedConsumer for Changes {
    type Record = FeedRow;

    fn names(&self) -> Vec<String> {
        vec!["edge-certificates-stream".to_owned()]
    }

    fn batch_size(&self) -> u32 {
        CHANGES_BATCH
    }

    fn wait(&self) -> Wait {
        if self.follow {
            Wait::ForCommitOrAfter(self.source.poll_interval)
        } else {
            Wait::Ends
        }
    }

    async fn load_position(&mut self) -> Result<i64, StoreError> {
        Ok(self.after)
    }

    fn reads(&self, row: &FeedRow) -> bool {
        CHANGES.contains(&row.event_type.as_str())
    }

    async fn handle(&mut self, rows: Vec<Handed<'_, FeedRow>>) -> Result<Handled, StoreError> {
        let mut lines = Chunk::default();
        for handed in &rows {
            let Some(event) = &handed.decoded else {
                continue;
            };
            if let Some(line) = self.line(handed.row, event).await? {
                lines.push(&line);
            }
            if lines.len() >= CHUNK_BYTES && !self.outbox.send(&mut lines).await? {
                return Ok(Handled::Finished);
            }
        }
        Ok(if self.outbox.send(&mut lines).await? {
            Handled::All
        } else {
            Handled::Finished
        })
    }

    async fn save_position(&mut self, position: i64) -> Result<(), StoreError> {
        self.after = position;
        Ok(())
    }

    async fn failed(&mut self, error: &StoreError) -> bool {
        // The stream ends with the error; the client resumes from the last position it read.
        let error = StoreError::other("reading the certificate stream", error.to_string());
        self.outbox.fail(error).await;
        false
    }

    async fn undecodable(&mut self, position: i64, why: &str) -> Undecodable {
        tracing::error!(error = %why, position, "a feed event the certificate stream needs cannot be read; the stream ends");
        Undecodable::Stop(StoreError::other(
            format!("the event at position {position} cannot be read"),
            why.to_owned(),
        ))
    }
}
