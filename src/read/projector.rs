//! Keeps the read projections (domain and certificate views) up to date with the events.
//!
//! Two paths write the views:
//! - right after a commit, cqrs-es dispatches the new events in process, so a client that reads
//!   after a write sees it;
//! - the checkpointed catch-up reads the global feed after the projection's checkpoint, applies
//!   it in batches and moves the checkpoint. It runs at start (before pending orders resume) and
//!   continuously, so an update lost between a commit and a crash, or written by another replica,
//!   still arrives. A rebuild is the same catch-up from position zero on empty views.
//!
//! Both are idempotent: a view only moves by the next sequence of its stream. A view that missed
//! events (one update failed, a later one did not) is folded again from its whole stream rather
//! than moved past the gap, which no later update could repair.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use cqrs_es::{EventEnvelope, Query};
use dns_handling_events::{CustomDomainEvent, KeyDisposal, RevocationReason};
use dns_handling_projections::{Applied, CertificateView, DomainView};

use crate::adapters::store::{FeedRow, KeyDisposalMark, ProjectionWrite, Store, StoreError};
use crate::domain::aggregate::CustomDomain;
use crate::read::feed_follower::{FeedConsumer, FeedFollower, Handed, Handled, Undecodable, Wait};
use crate::tasks::AbortOnDrop;

/// The checkpoint name of the domain and certificate views.
pub const DOMAIN_VIEWS: &str = "domain_views";

/// Events read from the feed per batch.
const BATCH_EVENTS: u32 = 10_000;

/// Applies events to the domain and certificate views.
#[derive(Clone)]
pub struct ViewProjector {
    store: Store,
}

/// The writes a batch prepared.
struct Prepared {
    views: Vec<DomainView>,
    certificates: Vec<CertificateView>,
    removed: Vec<String>,
    /// Domains whose alt names were replaced, with every name they hold now.
    renamed: Vec<(String, Vec<String>)>,
    /// Certificate keys whose fate the batch's events decided.
    key_disposals: Vec<KeyDisposalMark>,
}

impl Prepared {
    /// Writes the batch, and moves the checkpoint to `position` when given, in one transaction.
    async fn write(self, store: &Store, position: Option<i64>) -> Result<(), StoreError> {
        let removed: Vec<&str> = self.removed.iter().map(String::as_str).collect();
        store
            .write_projection(ProjectionWrite {
                views: &self.views,
                certificates: &self.certificates,
                removed: &removed,
                renamed: &self.renamed,
                key_disposals: &self.key_disposals,
                checkpoint: position.map(|position| (DOMAIN_VIEWS, position)),
            })
            .await
    }
}

/// When an event decides the fate of certificate keys: a certificate's key goes at its end of
/// validity, or at once when it was revoked for `keyCompromise`; a key whose order ended
/// without a certificate at once; every key of a removed domain at once.
fn key_disposal(domain_id: &str, event: &CustomDomainEvent) -> Option<KeyDisposalMark> {
    let mark = |order_id: Option<&String>, certificate_id: Option<&String>, why, after| {
        Some(KeyDisposalMark {
            domain_id: domain_id.to_owned(),
            order_id: order_id.cloned(),
            certificate_id: certificate_id.cloned(),
            why,
            after,
        })
    };
    match event {
        CustomDomainEvent::CertificateIssued { certificate, .. } => mark(
            Some(&certificate.order_id),
            Some(&certificate.certificate_id),
            KeyDisposal::CertificateExpired,
            certificate.not_after,
        ),
        CustomDomainEvent::IssuanceFailed {
            order_id,
            failed_at,
            ..
        } => mark(Some(order_id), None, KeyDisposal::OrderEnded, *failed_at),
        CustomDomainEvent::IssuanceTimedOut {
            order_id,
            timed_out_at,
            ..
        } => mark(Some(order_id), None, KeyDisposal::OrderEnded, *timed_out_at),
        CustomDomainEvent::RenewalFailed {
            order_id: Some(order_id),
            failed_at,
            ..
        } => mark(Some(order_id), None, KeyDisposal::OrderEnded, *failed_at),
        CustomDomainEvent::CertificateRevoked {
            certificate_id,
            reason: RevocationReason::KeyCompromise,
            revoked_at,
        } => mark(
            None,
            Some(certificate_id),
            KeyDisposal::KeyCompromised,
            *revoked_at,
        ),
        CustomDomainEvent::DomainRemoved { removed_at, .. } => {
            mark(None, None, KeyDisposal::DomainRemoved, *removed_at)
        }
        _ => None,
    }
}

/// One domain's views folded from its whole stream.
struct Rebuilt {
    view: Option<DomainView>,
    certificate: Option<CertificateView>,
    removed: bool,
}

/// Waits for a spawned write.
async fn join(write: AbortOnDrop<Result<u64, StoreError>>) -> Result<u64, StoreError> {
    write
        .await
        .map_err(|e| StoreError::other("projection write task failed", e))?
}

/// A domain's events in one batch, in order.
type Stream<'a> = Vec<(u64, &'a CustomDomainEvent)>;

impl ViewProjector {
    /// A projector writing to `store`.
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// Applies the events of several domains on top of their stored views: one read, however
    /// many domains the batch touches. Returns what is to be written.
    async fn prepare(&self, streams: &[(&str, Stream<'_>)]) -> Result<Prepared, StoreError> {
        let ids: Vec<&str> = streams.iter().map(|(id, _)| *id).collect();
        let mut views: HashMap<String, DomainView> = self
            .store
            .domain_views_by_ids(&ids)
            .await?
            .into_iter()
            .map(|view| (view.id.clone(), view))
            .collect();
        // A batch may hold two certificates of one domain: the later one is its current one.
        let mut certificates: HashMap<String, CertificateView> = HashMap::new();
        let mut removed = Vec::new();
        let mut renamed = Vec::new();
        let mut key_disposals = Vec::new();
        let mut gaps = Vec::new();
        for (id, events) in streams {
            let mut view = views.remove(*id);
            let mut batch_certificate = None;
            let mut batch_removed = false;
            let mut batch_renamed = false;
            let mut gap = None;
            for (sequence, event) in events {
                let applied = match view.as_mut() {
                    Some(existing) => existing.apply(*sequence, event),
                    None => match DomainView::from_registration(id, *sequence, event) {
                        Some(started) if *sequence == 1 => {
                            view = Some(started);
                            Applied::Moved
                        }
                        _ => Applied::Gap { expected: 1 },
                    },
                };
                if let Applied::Gap { expected } = applied {
                    gap = Some((expected, *sequence));
                    break;
                }
                // A batch may hold two certificates of one domain: the later one is current.
                if let Some(certificate) = CertificateView::from_event(id, *sequence, event) {
                    batch_certificate = Some(certificate);
                }
                // The name is freed by the projection, not by the request, so that a crash
                // right after the removal was recorded still frees it at the catch-up.
                batch_removed |= matches!(event, CustomDomainEvent::DomainRemoved { .. });
                // Likewise the names a new set dropped.
                batch_renamed |= matches!(event, CustomDomainEvent::AltNamesReplaced { .. });
                // And when each certificate key is to be destroyed.
                key_disposals.extend(key_disposal(id, event));
            }
            if let Some((expected, found)) = gap {
                tracing::warn!(
                    domain_id = %id, expected, found,
                    "the view missed events; it is rebuilt from its stream"
                );
                crate::metrics::METRICS.view_rebuilds.inc();
                gaps.push(*id);
                continue;
            }
            if let Some(certificate) = batch_certificate {
                certificates.insert((*id).to_owned(), certificate);
            }
            if batch_removed {
                removed.push((*id).to_owned());
            }
            if let Some(view) = view.as_ref().filter(|view| batch_renamed && !view.removed) {
                renamed.push(((*id).to_owned(), view.names()));
            }
            if let Some(view) = view {
                views.insert(view.id.clone(), view);
            }
        }
        for id in gaps {
            let rebuilt = self.rebuild_from_stream(id).await?;
            if let Some(certificate) = rebuilt.certificate {
                certificates.insert(id.to_owned(), certificate);
            }
            if rebuilt.removed {
                removed.push(id.to_owned());
            } else if let Some(view) = &rebuilt.view {
                renamed.push((id.to_owned(), view.names()));
            }
            if let Some(view) = rebuilt.view {
                views.insert(view.id.clone(), view);
            }
        }
        Ok(Prepared {
            views: views.into_values().collect(),
            certificates: certificates.into_values().collect(),
            removed,
            renamed,
            key_disposals,
        })
    }

    /// A domain's views folded again from its whole stream, for a view that missed events
    /// (an update that failed while a later one succeeded). Every event dispatched or read from
    /// the feed is committed, so the stream holds at least what the batch did.
    async fn rebuild_from_stream(&self, id: &str) -> Result<Rebuilt, StoreError> {
        let history = self.store.domain_history(id).await?;
        let mut decoded = Vec::with_capacity(history.len());
        for event in &history {
            decoded.push((u64::try_from(event.sequence).unwrap_or(0), event.decode()?));
        }
        let view = DomainView::fold(
            id,
            decoded.iter().map(|(sequence, event)| (*sequence, event)),
        );
        if view.is_none() && !decoded.is_empty() {
            tracing::error!(domain_id = %id, "the stream does not fold into a view (dns-handling audit verify shows why)");
        }
        Ok(Rebuilt {
            certificate: decoded
                .iter()
                .rev()
                .find_map(|(sequence, event)| CertificateView::from_event(id, *sequence, event)),
            removed: decoded
                .iter()
                .any(|(_, event)| matches!(event, CustomDomainEvent::DomainRemoved { .. })),
            view,
        })
    }

    /// Prepares the writes of a batch of decoded feed rows.
    async fn prepare_feed(
        &self,
        batch: &[(&FeedRow, &CustomDomainEvent)],
    ) -> Result<Prepared, StoreError> {
        let mut order: Vec<&str> = Vec::new();
        let mut streams: HashMap<&str, Stream<'_>> = HashMap::new();
        for (row, event) in batch {
            let stream = streams.entry(row.aggregate_id.as_str()).or_insert_with(|| {
                order.push(row.aggregate_id.as_str());
                Vec::new()
            });
            stream.push((u64::try_from(row.sequence).unwrap_or(0), *event));
        }
        let streams: Vec<(&str, Stream<'_>)> = order
            .into_iter()
            .filter_map(|id| streams.remove(id).map(|stream| (id, stream)))
            .collect();
        self.prepare(&streams).await
    }

    /// Applies the feed after the checkpoint until it is exhausted; calls `progress` with the
    /// number of events applied after each batch. Returns how many were applied.
    ///
    /// Three things overlap, which is what makes a replay fast: the next batch is read while
    /// the current one is decoded and applied (the feed follower reads ahead), and the previous
    /// batch's writes (views, freed names and checkpoint, in one transaction) finish meanwhile;
    /// a batch's views are only read once the previous batch's writes are in.
    pub async fn catch_up(&self, progress: impl FnMut(u64) + Send) -> Result<u64, StoreError> {
        let consumer = ViewsConsumer {
            projector: self.clone(),
            writing: None,
            applied: 0,
            progress: Box::new(progress),
            interval: Duration::ZERO,
        };
        FeedFollower::new(self.store.clone(), consumer)
            .catch_up()
            .await
    }

    /// Applies the feed after the checkpoint for as long as the process runs, looking again
    /// every `interval`: what an in-process update missed (it failed, or the process died
    /// between the commit and the update) or another replica wrote still arrives.
    pub async fn follow(self, interval: Duration) {
        let consumer = ViewsConsumer {
            projector: self.clone(),
            writing: None,
            applied: 0,
            progress: Box::new(|_| {}),
            interval,
        };
        FeedFollower::new(self.store.clone(), consumer)
            .follow()
            .await;
    }

    /// Empties the views and rebuilds them from the first event.
    pub async fn rebuild(&self, progress: impl FnMut(u64) + Send) -> Result<u64, StoreError> {
        self.store.clear_projections().await?;
        self.catch_up(progress).await
    }
}

/// The views as a consumer of the feed: their checkpoint moves in the transaction that writes
/// a batch's views, and an event they cannot read stops the catch-up with an error (a view
/// moved past it would be wrong for good).
struct ViewsConsumer<'p> {
    projector: ViewProjector,
    /// The previous batch's write, with its number of events.
    writing: Option<(AbortOnDrop<Result<u64, StoreError>>, u64)>,
    /// Events applied (their writes landed) so far.
    applied: u64,
    progress: Box<dyn FnMut(u64) + Send + 'p>,
    /// How long it waits between two looks at the feed while following.
    interval: Duration,
}

impl ViewsConsumer<'_> {
    /// Waits for the write in flight, if any.
    async fn land(&mut self) -> Result<(), StoreError> {
        if let Some((write, _)) = self.writing.take() {
            self.applied += join(write).await?;
            (self.progress)(self.applied);
        }
        Ok(())
    }
}

#[async_trait]
impl FeedConsumer for ViewsConsumer<'_> {
    type Record = FeedRow;

    fn names(&self) -> Vec<String> {
        vec![DOMAIN_VIEWS.to_owned()]
    }

    fn batch_size(&self) -> u32 {
        BATCH_EVENTS
    }

    fn wait(&self) -> Wait {
        // Not on commits: the commit's own path updates the views in process.
        Wait::After(self.interval)
    }

    async fn load_position(&mut self) -> Result<i64, StoreError> {
        self.projector.store.checkpoint(DOMAIN_VIEWS).await
    }

    async fn handle(&mut self, rows: Vec<Handed<'_, FeedRow>>) -> Result<Handled, StoreError> {
        // A batch's views are read once the previous batch's writes are in.
        self.land().await?;
        let Some(last) = rows.last().map(|handed| handed.row.position) else {
            return Ok(Handled::All);
        };
        let decoded: Vec<(&FeedRow, &CustomDomainEvent)> = rows
            .iter()
            .filter_map(|handed| handed.decoded.as_ref().map(|event| (handed.row, event)))
            .collect();
        let prepared = self.projector.prepare_feed(&decoded).await?;
        let count = rows.len() as u64;
        let store = self.projector.store.clone();
        let write = tokio::spawn(async move {
            prepared.write(&store, Some(last)).await?;
            Ok(count)
        });
        self.writing = Some((AbortOnDrop(write), count));
        Ok(Handled::All)
    }

    async fn save_position(&mut self, _position: i64) -> Result<(), StoreError> {
        // Written with the batch's views, in one transaction.
        Ok(())
    }

    async fn undecodable(&mut self, position: i64, why: &str) -> Undecodable {
        Undecodable::Stop(StoreError::Corrupt(serde::de::Error::custom(format!(
            "the event at position {position} cannot be read: {why}"
        ))))
    }

    async fn flush(&mut self) -> Result<(), StoreError> {
        self.land().await
    }
}

#[async_trait]
impl Query<CustomDomain> for ViewProjector {
    async fn dispatch(&self, aggregate_id: &str, events: &[EventEnvelope<CustomDomain>]) {
        let stream: Stream<'_> = events
            .iter()
            .map(|envelope| (envelope.sequence as u64, &envelope.payload))
            .collect();
        let result = match self.prepare(&[(aggregate_id, stream)]).await {
            Ok(prepared) => prepared.write(&self.store, None).await,
            Err(error) => Err(error),
        };
        if let Err(error) = result {
            tracing::error!(%aggregate_id, %error, "view update failed; the catch-up repairs it");
        }
    }
}
