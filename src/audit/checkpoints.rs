//! Signed checkpoints of the whole event log, in the way of Certificate Transparency's signed
//! tree heads: the hash chains alone cannot show that a stream's last events were deleted, and
//! anyone who can write the events table can recompute them. A checkpoint fixes the feed
//! position, the number of events up to it and a running hash over all of them (see
//! [`dns_handling_events::chain::log_hash`]) under an Ed25519 signature whose key is never in
//! the database, so rewriting what a checkpoint covers is evident to anyone with the public key.
//!
//! The service signs one every `AUDIT_CHECKPOINT_INTERVAL` when events were added, and on
//! demand (`POST /audit/checkpoints`). `dns-handling audit verify` checks them.

use std::path::{Path, PathBuf};

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _, UnparsedPublicKey, ED25519};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use dns_handling_events::chain::{log_hash, GENESIS};
use dns_handling_events::AGGREGATE_TYPE;
use rand::RngCore as _;

pub use crate::adapters::store::Checkpoint;
use crate::adapters::store::{Store, StoreError};
use crate::settings::{Secret, Settings};

/// What a checkpoint means (the struct is the store's row: `adapters/store/checkpoints.rs`).
impl Checkpoint {
    /// The text that is signed.
    pub fn message(&self) -> String {
        format!(
            "dns-handling checkpoint v1\nposition={}\nevents={}\nlog_hash={}\nsigned_at={}",
            self.position, self.event_count, self.log_hash, self.signed_at
        )
    }

    /// Whether the signature holds under `public_key` (standard base64).
    pub fn is_signed_by(&self, public_key: &str) -> bool {
        let (Ok(key), Ok(signature)) = (
            STANDARD.decode(public_key),
            STANDARD.decode(&self.signature),
        ) else {
            return false;
        };
        UnparsedPublicKey::new(&ED25519, key)
            .verify(self.message().as_bytes(), &signature)
            .is_ok()
    }
}

/// Why the signing key cannot be had.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SigningKeyError(String);

/// The Ed25519 key checkpoints are signed with, and how far this process has checked the log
/// itself. Its `Debug` never shows the key.
pub struct AuditSigner {
    key_pair: Ed25519KeyPair,
    public_key: String,
    /// The log as this process last walked it; `None` until the first signing, which walks the
    /// whole log. Locked for the whole of a signing, so one process signs one at a time.
    tip: tokio::sync::Mutex<Option<Tip>>,
    /// Why this process signs no more: the walk behind its first anchor found the log
    /// rewritten ([`check_log_behind_anchor`]).
    refused: std::sync::Mutex<Option<String>>,
}

/// A place in the log with the number of events and the log hash up to it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Tip {
    position: i64,
    count: i64,
    hash: String,
}

impl Tip {
    /// Before the first event.
    fn genesis() -> Self {
        Tip {
            position: 0,
            count: 0,
            hash: GENESIS.to_owned(),
        }
    }
}

impl std::fmt::Debug for AuditSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AuditSigner(public key {})", self.public_key)
    }
}

impl AuditSigner {
    /// A signer from the standard base64 of a 32-byte seed; errors name `setting`.
    pub fn from_base64(text: &str, setting: &str) -> Result<Self, SigningKeyError> {
        let seed = STANDARD
            .decode(text.trim())
            .map_err(|e| SigningKeyError(format!("{setting} is not standard base64: {e}")))?;
        if seed.len() != 32 {
            return Err(SigningKeyError(format!(
                "{setting} must be the 32-byte seed of an Ed25519 key (openssl rand -base64 32), got {} bytes",
                seed.len()
            )));
        }
        let key_pair = Ed25519KeyPair::from_seed_unchecked(&seed)
            .map_err(|e| SigningKeyError(format!("{setting} is not an Ed25519 seed: {e}")))?;
        let public_key = STANDARD.encode(key_pair.public_key().as_ref());
        Ok(Self {
            key_pair,
            public_key,
            tip: tokio::sync::Mutex::new(None),
            refused: std::sync::Mutex::new(None),
        })
    }

    /// Decides the key as configured: `AUDIT_SIGNING_KEY`, else `AUDIT_SIGNING_KEY_FILE`, else
    /// (SQLite only) a key generated on first start beside the database file, owner-only.
    /// PostgreSQL without a key is refused: a key on one replica's disk would leave the others
    /// unable to sign, and the database is exactly where it must not be.
    pub fn resolve(settings: &Settings) -> Result<Self, SigningKeyError> {
        Self::resolve_from(
            settings.audit_signing_key.as_ref(),
            settings.audit_signing_key_file.as_deref(),
            &settings.database_url,
            settings.uses_postgres(),
        )
    }

    /// The key as configured, never generating one: what `audit public-key` prints.
    pub fn existing(settings: &Settings) -> Result<Self, SigningKeyError> {
        let generated = signing_key_path(&settings.database_url);
        let configured = settings.audit_signing_key.is_some()
            || settings.audit_signing_key_file.is_some()
            || settings.uses_postgres();
        match generated {
            Some(path) if !configured && !path.exists() => Err(SigningKeyError(format!(
                "no audit signing key yet: the service generates one at {} on its first start",
                path.display()
            ))),
            _ => Self::resolve(settings),
        }
    }

    fn resolve_from(
        inline: Option<&Secret>,
        file: Option<&Path>,
        database_url: &str,
        uses_postgres: bool,
    ) -> Result<Self, SigningKeyError> {
        if let Some(inline) = inline {
            return Self::from_base64(inline.expose(), "AUDIT_SIGNING_KEY");
        }
        if let Some(file) = file {
            let text = std::fs::read_to_string(file).map_err(|e| {
                SigningKeyError(format!(
                    "AUDIT_SIGNING_KEY_FILE {} cannot be read: {e}",
                    file.display()
                ))
            })?;
            return Self::from_base64(&text, "AUDIT_SIGNING_KEY_FILE");
        }
        if uses_postgres {
            return Err(SigningKeyError(
                "AUDIT_SIGNING_KEY or AUDIT_SIGNING_KEY_FILE must be set when DATABASE_URL is \
                 PostgreSQL (generate one with: openssl rand -base64 32)"
                    .into(),
            ));
        }
        match signing_key_path(database_url) {
            Some(path) => Self::load_or_create(&path),
            None => {
                tracing::warn!("in-memory SQLite: checkpoints are signed with a key that lives only as long as this process");
                Ok(Self::generate())
            }
        }
    }

    fn generate() -> Self {
        let mut seed = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut seed);
        let encoded = STANDARD.encode(seed);
        // A fresh 32-byte seed is always a valid Ed25519 seed.
        Self::from_base64(&encoded, "a generated key").unwrap_or_else(|_| unreachable!())
    }

    fn load_or_create(path: &Path) -> Result<Self, SigningKeyError> {
        if path.exists() {
            let text = std::fs::read_to_string(path)
                .map_err(|e| SigningKeyError(format!("{} cannot be read: {e}", path.display())))?;
            return Self::from_base64(&text, &path.display().to_string());
        }
        let mut seed = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut seed);
        let encoded = STANDARD.encode(seed);
        crate::adapters::vault::write_owner_only(path, &encoded)
            .map_err(|e| SigningKeyError(format!("cannot create {}: {e}", path.display())))?;
        tracing::warn!(
            path = %path.display(),
            "generated the audit signing key; keep it (and its public key) away from the database's backups"
        );
        Self::from_base64(&encoded, &path.display().to_string())
    }

    /// The public key, standard base64: what auditors are given to verify checkpoints with.
    pub fn public_key(&self) -> &str {
        &self.public_key
    }

    /// Why this process refuses to sign, if it does.
    fn refusal(&self) -> Option<String> {
        self.refused
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Refuses every later signing of this process, saying `why`.
    fn refuse(&self, why: String) {
        *self
            .refused
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(why);
    }

    fn sign(&self, position: i64, event_count: i64, log_hash: String) -> Checkpoint {
        let mut checkpoint = Checkpoint {
            position,
            event_count,
            log_hash,
            signed_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            public_key: self.public_key.clone(),
            signature: String::new(),
        };
        let signature = self.key_pair.sign(checkpoint.message().as_bytes());
        checkpoint.signature = STANDARD.encode(signature.as_ref());
        checkpoint
    }
}

/// `<database file>.audit-key` for a file-backed SQLite URL; `None` for in-memory databases.
fn signing_key_path(database_url: &str) -> Option<PathBuf> {
    crate::adapters::store::sqlite_path(database_url)
        .map(|path| PathBuf::from(format!("{}.audit-key", path.display())))
}

/// Events read per step when a checkpoint extends the previous one.
const PAGE: u32 = 1000;

/// Why no checkpoint was signed.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The stored log or checkpoints are not what this key signed: signing now would vouch for
    /// a rewritten log.
    #[error("refusing to sign a checkpoint: {0}; run dns-handling audit verify")]
    Refused(String),
}

/// Signs a checkpoint of the log as it stands. Answers the checkpoint and whether it is new;
/// when no event was added since the latest checkpoint, that one is answered.
///
/// A process's first signing starts from the newest stored checkpoint its own key signed (see
/// [`anchor`]), so that it hashes only what came after: a checkpoint cannot be forged without
/// the key, and the number of events up to it is checked, so an event deleted or slipped in
/// below it refuses at once. A rewrite below it that keeps the number of events is what
/// [`check_log_behind_anchor`] finds, walking the log from its start in the background after
/// each start: from then on this process refuses to sign, and `audit verify` reports it too.
/// Later signings go on from where this process last stood, checking the checkpoints other
/// replicas signed meanwhile. Any disagreement refuses, loudly.
pub async fn sign_checkpoint(
    store: &Store,
    signer: &AuditSigner,
) -> Result<(Checkpoint, bool), CheckpointError> {
    if let Some(reason) = signer.refusal() {
        return Err(CheckpointError::Refused(reason));
    }
    let mut known = signer.tip.lock().await;
    let start = match known.clone() {
        Some(tip) => tip,
        None => anchor(store, signer).await?,
    };
    let (tip, latest_stored) = walk(store, signer, start, None).await?;
    *known = Some(tip.clone());
    let previous = match latest_stored {
        Some(checked) => Some(checked),
        // Nothing stored after where this process stood: its own last checkpoint may be it.
        None => store.latest_audit_checkpoint().await?,
    };
    if let Some(previous) = previous {
        let same = previous.position == tip.position
            && previous.event_count == tip.count
            && previous.log_hash == tip.hash
            && previous.is_signed_by(&signer.public_key);
        if same {
            return Ok((previous, false));
        }
    }
    let checkpoint = signer.sign(tip.position, tip.count, tip.hash);
    if store.insert_audit_checkpoint(&checkpoint).await? {
        tracing::info!(
            position = checkpoint.position,
            events = checkpoint.event_count,
            "signed a checkpoint of the log"
        );
        return Ok((checkpoint, true));
    }
    // Another replica signed the same position at the same moment: answer what is stored.
    let stored = store
        .audit_checkpoints(Some(checkpoint.position + 1), 1)
        .await?
        .into_iter()
        .next()
        .filter(|stored| stored.position == checkpoint.position)
        .unwrap_or(checkpoint);
    Ok((stored, false))
}

/// Walks the log from its start to the newest checkpoint this service's key signed, checking
/// every stored checkpoint on the way: what a process's first signing took on trust. Run once
/// after each start, in the background (at 6 M events it takes a minute or more). A
/// disagreement is kept: every later signing of this process is refused with it.
pub async fn check_log_behind_anchor(
    store: &Store,
    signer: &AuditSigner,
) -> Result<(), CheckpointError> {
    let Some(newest) = newest_own_checkpoint(store, signer).await? else {
        // No anchor: the first signing walks the whole log itself.
        return Ok(());
    };
    match walk(store, signer, Tip::genesis(), Some(newest.position)).await {
        Err(CheckpointError::Refused(reason)) => {
            signer.refuse(reason.clone());
            Err(CheckpointError::Refused(reason))
        }
        walked => walked.map(drop),
    }
}

/// Where a process's first signing starts: the newest stored checkpoint this key signed, once
/// the log holds as many events up to it as it counted; the log's start when there is none.
async fn anchor(store: &Store, signer: &AuditSigner) -> Result<Tip, CheckpointError> {
    let Some(newest) = newest_own_checkpoint(store, signer).await? else {
        return Ok(Tip::genesis());
    };
    let counted = store.feed_events_up_to(newest.position).await?;
    if counted != newest.event_count {
        return Err(CheckpointError::Refused(format!(
            "the number of events up to position {} is {counted}, where its checkpoint counted {}",
            newest.position, newest.event_count
        )));
    }
    Ok(Tip {
        position: newest.position,
        count: newest.event_count,
        hash: newest.log_hash,
    })
}

/// The newest stored checkpoint, when this service's key signed it. One signed by another key
/// (or forged) is no anchor: the walk from the log's start meets it and refuses.
async fn newest_own_checkpoint(
    store: &Store,
    signer: &AuditSigner,
) -> Result<Option<Checkpoint>, StoreError> {
    Ok(store.latest_audit_checkpoint().await?.filter(|newest| {
        newest.public_key == signer.public_key && newest.is_signed_by(&signer.public_key)
    }))
}

/// Hashes the log from `from` on (up to `until`, inclusive, or its end), checking each stored
/// checkpoint it passes. Answers where it stopped and the last checkpoint it checked.
async fn walk(
    store: &Store,
    signer: &AuditSigner,
    from: Tip,
    until: Option<i64>,
) -> Result<(Tip, Option<Checkpoint>), CheckpointError> {
    let within = |position: i64| until.is_none_or(|end| position <= end);
    let mut tip = from;
    let mut stored = store
        .audit_checkpoints_after(tip.position)
        .await?
        .into_iter()
        .filter(|checkpoint| within(checkpoint.position))
        .peekable();
    let mut latest_checked = None;
    'pages: loop {
        let events = store.events_after(tip.position, PAGE).await?;
        for event in &events {
            if !within(event.position) {
                break 'pages;
            }
            while let Some(checkpoint) = stored.next_if(|c| event.position > c.position) {
                latest_checked = Some(check(signer, checkpoint, &tip)?);
            }
            tip.hash = log_hash(&tip.hash, AGGREGATE_TYPE, event);
            tip.position = event.position;
            tip.count += 1;
        }
        if events.len() < PAGE as usize {
            break;
        }
    }
    for checkpoint in stored {
        if checkpoint.position > tip.position {
            return Err(CheckpointError::Refused(format!(
                "a checkpoint claims position {}, beyond the end of the log at {}",
                checkpoint.position, tip.position
            )));
        }
        latest_checked = Some(check(signer, checkpoint, &tip)?);
    }
    Ok((tip, latest_checked))
}

/// Checks a stored checkpoint against the log as walked up to it: signed by this key, the same
/// number of events, the same hash.
fn check(
    signer: &AuditSigner,
    checkpoint: Checkpoint,
    tip: &Tip,
) -> Result<Checkpoint, CheckpointError> {
    if checkpoint.public_key != signer.public_key || !checkpoint.is_signed_by(&signer.public_key) {
        return Err(CheckpointError::Refused(format!(
            "the checkpoint at position {} is not signed by this service's key",
            checkpoint.position
        )));
    }
    if checkpoint.event_count != tip.count || checkpoint.log_hash != tip.hash {
        return Err(CheckpointError::Refused(format!(
            "the log up to position {} no longer matches its checkpoint",
            checkpoint.position
        )));
    }
    Ok(checkpoint)
}

/// Signs a checkpoint every `interval` in which events were added, for as long as the process
/// runs (started again should it panic). On several replicas each may sign: checkpoints of one
/// position are kept once.
pub fn spawn_checkpoint_loop(
    store: Store,
    signer: std::sync::Arc<AuditSigner>,
    interval: std::time::Duration,
) -> actix_web::rt::task::JoinHandle<()> {
    crate::tasks::spawn_supervised("checkpoint-signer", move || {
        checkpoint_loop(store.clone(), signer.clone(), interval)
    })
}

/// One run of the checkpoint loop: the walk behind the newest checkpoint, then a tick every
/// `interval`, the first skipped.
async fn checkpoint_loop(
    store: Store,
    signer: std::sync::Arc<AuditSigner>,
    interval: std::time::Duration,
) {
    report(check_log_behind_anchor(&store, &signer).await);
    let mut ticks = actix_web::rt::time::interval(interval);
    // The first tick is immediate: skip it, so a start alone signs nothing.
    ticks.tick().await;
    loop {
        ticks.tick().await;
        report(sign_checkpoint(&store, &signer).await.map(drop));
    }
}

/// Counts and logs a refusal loudly; a store's failure is tried again at the next interval.
fn report(outcome: Result<(), CheckpointError>) {
    match outcome {
        Ok(()) => {}
        Err(error @ CheckpointError::Refused(_)) => {
            crate::metrics::METRICS.checkpoint_refusals.inc();
            tracing::error!(%error, "the log does not match its checkpoints");
        }
        Err(error) => {
            tracing::warn!(%error, "could not check the log; trying again at the next interval");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> AuditSigner {
        AuditSigner::from_base64(&STANDARD.encode([9u8; 32]), "AUDIT_SIGNING_KEY").expect("a key")
    }

    #[test]
    fn a_checkpoint_verifies_under_its_key_and_no_other_and_not_once_changed() {
        let signer = signer();
        let checkpoint = signer.sign(7, 5, "ab".repeat(32));
        assert!(checkpoint.is_signed_by(signer.public_key()));
        let other = AuditSigner::generate();
        assert!(!checkpoint.is_signed_by(other.public_key()));
        let mut changed = checkpoint.clone();
        changed.event_count = 4;
        assert!(!changed.is_signed_by(signer.public_key()));
    }

    #[test]
    fn the_signing_key_must_be_a_32_byte_seed_and_errors_name_the_setting() {
        let error = AuditSigner::from_base64(&STANDARD.encode([1u8; 16]), "AUDIT_SIGNING_KEY")
            .expect_err("refused");
        assert!(
            error
                .to_string()
                .starts_with("AUDIT_SIGNING_KEY must be the 32-byte seed"),
            "{error}"
        );
        let error =
            AuditSigner::from_base64("not base64!", "AUDIT_SIGNING_KEY_FILE").expect_err("refused");
        assert!(error
            .to_string()
            .starts_with("AUDIT_SIGNING_KEY_FILE is not standard base64"));
    }

    #[test]
    fn postgres_without_a_signing_key_is_refused() {
        let error =
            AuditSigner::resolve_from(None, None, "postgres://x/y", true).expect_err("refused");
        assert!(error.to_string().contains("AUDIT_SIGNING_KEY"), "{error}");
    }

    #[test]
    fn sqlite_generates_its_signing_key_beside_the_database_once() {
        let directory = std::env::temp_dir().join(format!("audit-key-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&directory).expect("a directory");
        let url = format!("sqlite://{}/service.db", directory.display());
        let first = AuditSigner::resolve_from(None, None, &url, false).expect("generated");
        let second = AuditSigner::resolve_from(None, None, &url, false).expect("loaded");
        assert_eq!(first.public_key(), second.public_key());
        assert!(directory.join("service.db.audit-key").exists());
        let _ = std::fs::remove_dir_all(directory);
    }

    #[test]
    fn the_debug_form_shows_the_public_key_only() {
        let signer = signer();
        let shown = format!("{signer:?}");
        assert!(shown.contains(signer.public_key()));
        assert!(!shown.contains(&STANDARD.encode([9u8; 32])));
    }
}
