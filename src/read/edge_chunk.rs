//! The chunks of the certificate stream (`read::edge_stream`) and the receipt of the keys they
//! carry: before a chunk with `served` lines leaves, each (receiver, certificate) pair is
//! recorded in the store (`edge_key_deliveries`, the first time only), and a chunk whose record
//! fails is not sent: the stream ends with the error and the client resumes. Recording a row
//! per pair rather than an event per key keeps a snapshot of 100,000 certificates off the
//! domains' streams; later deliveries are counted in `edge_key_reads_total{edge}`.

use chrono::Utc;
use tokio::sync::mpsc;

use crate::adapters::store::{KeyDelivery, Store, StoreError};
use crate::domain::aggregate::edge_reader;
use crate::edge::line::EdgeLine;
use crate::metrics::METRICS;

/// Who the stream's keys go to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyReceiver {
    /// An edge, by its name in `EDGE_TOKENS`: recorded as `edge:<name>`, counted in
    /// `edge_key_reads_total{edge}`.
    Edge(String),
    /// The admin token: recorded as `admin` (not counted: the metric is the edges').
    Admin,
}

impl KeyReceiver {
    /// The receiver as its deliveries are recorded (an edge as the key-read events name it).
    pub fn recorded_as(&self) -> String {
        match self {
            Self::Edge(name) => edge_reader(name),
            Self::Admin => "admin".to_owned(),
        }
    }
}

/// The channel a stream's chunks go out by; an error ends the stream.
pub(super) type ChunkSender = mpsc::Sender<Result<Vec<u8>, StoreError>>;

/// Whole lines gathered for the response, with the keys among them.
#[derive(Default)]
pub(super) struct Chunk {
    bytes: Vec<u8>,
    keys: Vec<KeyDelivery>,
}

impl Chunk {
    /// Adds a line; a `served` line's key is to be recorded before the chunk leaves.
    pub(super) fn push(&mut self, line: &EdgeLine) {
        serde_json::to_writer(&mut self.bytes, line).expect("a line serializes");
        self.bytes.push(b'\n');
        if let EdgeLine::Served(served) = line {
            self.keys.push(KeyDelivery {
                certificate_id: served.certificate_id.clone(),
                domain_id: served.domain_id.clone(),
            });
        }
    }

    /// The bytes gathered so far.
    pub(super) fn len(&self) -> usize {
        self.bytes.len()
    }
}

/// Where a stream's chunks go: to its client, each chunk's keys recorded first.
#[derive(Clone)]
pub(super) struct Outbox {
    /// The client's channel.
    pub(super) sender: ChunkSender,
    /// Where the deliveries are recorded.
    pub(super) store: Store,
    /// Whom they are recorded for.
    pub(super) receiver: KeyReceiver,
}

impl Outbox {
    /// Records the chunk's keys, then hands it to the response: `Ok(false)` when the client
    /// left; an error (nothing sent) when the record failed.
    pub(super) async fn send(&self, chunk: &mut Chunk) -> Result<bool, StoreError> {
        if chunk.bytes.is_empty() {
            return Ok(true);
        }
        let keys = std::mem::take(&mut chunk.keys);
        if !keys.is_empty() {
            let receiver = self.receiver.recorded_as();
            (self.store)
                .record_key_deliveries(&receiver, &keys, Utc::now())
                .await?;
        }
        let sent = (self.sender)
            .send(Ok(std::mem::take(&mut chunk.bytes)))
            .await
            .is_ok();
        if let (true, KeyReceiver::Edge(edge)) = (sent, &self.receiver) {
            METRICS.edge.keys_sent(edge, keys.len() as u64);
        }
        Ok(sent)
    }

    /// Ends the stream with `error`.
    pub(super) async fn fail(&self, error: StoreError) {
        let _ = self.sender.send(Err(error)).await;
    }
}
