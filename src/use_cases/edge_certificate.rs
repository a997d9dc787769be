//! Answering an edge's TLS handshake (`GET /edge/certificate?server_name=…`): which certificate
//! serves the name (the in-memory edge index), its chain and key (the bounded cache, one read
//! of the store on a miss), and the key read recorded before the key leaves: an edge's first
//! read of each certificate is an event of the domain, its repeats only a metric.

use std::sync::Arc;

use chrono::Utc;
use cqrs_es::AggregateError;

use super::command::execute;
use crate::app_state::{AppState, CommandOrigin};
use crate::domain::aggregate::{edge_reader, CustomDomainCommand, DomainError};
use crate::edge::names::NotAHostName;
use crate::metrics::METRICS;
use crate::read::edge_material::{CertificateMaterial, MaterialError};

/// Who asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Asker {
    /// An edge, by its name: its first read of each certificate is recorded.
    Edge(Arc<str>),
    /// Anyone else allowed (an admin), as its reads are recorded: each one is.
    Other(String),
}

/// Why nothing could be answered.
#[derive(Debug, thiserror::Error)]
pub enum EdgeCertificateError {
    /// The name is missing or not a host name.
    #[error("{0}")]
    BadName(String),
    /// The certificate could not be read.
    #[error(transparent)]
    Material(#[from] MaterialError),
    /// The key read could not be recorded (the store, a lost race): the key is not handed out.
    #[error(transparent)]
    Command(AggregateError<DomainError>),
}

/// The certificate serving `server_name` now, with its key, the read recorded: `None` when
/// none does (not ours, not issued yet, removed, revoked, past its end). `origin` is asked
/// only when a read is recorded: an edge's repeated handshakes build no metadata.
pub async fn certificate_for(
    state: &AppState,
    server_name: Option<&str>,
    asker: Asker,
    origin: impl FnOnce() -> CommandOrigin,
) -> Result<Option<Arc<CertificateMaterial>>, EdgeCertificateError> {
    let answer = answer(state, server_name, asker, origin).await;
    let outcome = match &answer {
        Ok(Some(_)) => "served",
        Ok(None) => "none",
        Err(EdgeCertificateError::BadName(_)) => "bad_name",
        Err(_) => "error",
    };
    METRICS.edge.certificate_request(outcome);
    answer
}

async fn answer(
    state: &AppState,
    server_name: Option<&str>,
    asker: Asker,
    origin: impl FnOnce() -> CommandOrigin,
) -> Result<Option<Arc<CertificateMaterial>>, EdgeCertificateError> {
    let server_name = server_name
        .filter(|name| !name.trim().is_empty())
        .ok_or_else(|| {
            EdgeCertificateError::BadName("server_name is missing: ?server_name=<host name>".into())
        })?;
    let served =
        state
            .edge_index
            .lookup(server_name, Utc::now())
            .map_err(|NotAHostName(name)| {
                EdgeCertificateError::BadName(format!("server_name {name:?} is not a host name"))
            })?;
    let Some(served) = served else {
        return Ok(None);
    };
    let material = state
        .edge_material
        .get(&state.store, &state.vault, &served)
        .await?;
    let Some(material) = material else {
        return Ok(None);
    };
    let recorded = record_read(state, &material, asker, origin).await;
    match recorded {
        Ok(()) => Ok(Some(material)),
        // The aggregate will not hand the key out (revoked or removed since the index was
        // told): nothing serves the name.
        Err(AggregateError::UserError(_)) => Ok(None),
        Err(other) => Err(EdgeCertificateError::Command(other)),
    }
}

/// Records the key read before the key leaves: each time for an admin, once per certificate
/// for an edge. A read this process saw recorded skips the command: first asked of the cached
/// certificate (no lock shared by other certificates), then of the process's set, which
/// outlives the cache's evictions; the aggregate records none for a repeat another replica
/// recorded.
async fn record_read(
    state: &AppState,
    material: &CertificateMaterial,
    asker: Asker,
    origin: impl FnOnce() -> CommandOrigin,
) -> Result<(), AggregateError<DomainError>> {
    let certificate_id = &material.certificate_id;
    let record = |reader| CustomDomainCommand::RecordPrivateKeyRead {
        certificate_id: certificate_id.clone(),
        reader,
        at: Utc::now(),
    };
    match asker {
        Asker::Other(reader) => execute(state, &material.domain_id, record(reader), origin()).await,
        Asker::Edge(edge) => {
            if !material.read_recorded_for(&edge) {
                if !state.edge_reads.contains(&edge, certificate_id) {
                    let command = record(edge_reader(&edge));
                    execute(state, &material.domain_id, command, origin()).await?;
                    state.edge_reads.insert(&edge, certificate_id);
                }
                material.note_read_recorded(&edge);
            }
            METRICS.edge.key_read(&edge);
            Ok(())
        }
    }
}
