//! `KeyVault`: the private keys (certificate keys and the ACME account's credentials), encrypted
//! at rest with XChaCha20-Poly1305 under a key-encryption key from configuration.
//!
//! Each sealed value is bound to where it is stored (its table and row) as associated data, so a
//! ciphertext copied into another row does not decrypt. The store only ever sees ciphertext.

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use crate::settings::Secret;
use crate::store::{Store, StoreError};

/// Prefix of every sealed value: the scheme's version, so the scheme can change later.
const SEALED_PREFIX: &str = "xchacha20poly1305:v1:";

/// Why a key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// The key-encryption key is missing or malformed.
    #[error("{0}")]
    Configuration(String),
    /// A stored value does not decrypt under the configured key (wrong key, or tampering).
    #[error("stored secret for {0} cannot be decrypted with the configured KEY_ENCRYPTION_KEY")]
    Undecryptable(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The 32-byte key-encryption key.
#[derive(Clone)]
pub struct KeyEncryptionKey([u8; 32]);

impl std::fmt::Debug for KeyEncryptionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyEncryptionKey(<redacted>)")
    }
}

impl KeyEncryptionKey {
    /// Parses standard base64 of exactly 32 bytes.
    pub fn from_base64(text: &str) -> Result<Self, VaultError> {
        let bytes = STANDARD.decode(text.trim()).map_err(|e| {
            VaultError::Configuration(format!("KEY_ENCRYPTION_KEY is not standard base64: {e}"))
        })?;
        let key: [u8; 32] = bytes.try_into().map_err(|bytes: Vec<u8>| {
            VaultError::Configuration(format!(
                "KEY_ENCRYPTION_KEY must be 32 bytes (openssl rand -base64 32), got {}",
                bytes.len()
            ))
        })?;
        Ok(Self(key))
    }

    /// A fresh random key.
    pub fn generate() -> Self {
        Self(XChaCha20Poly1305::generate_key(&mut OsRng).into())
    }

    fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// Decides the key as configured: `KEY_ENCRYPTION_KEY`, else `KEY_ENCRYPTION_KEY_FILE`, else
    /// (SQLite only) a key generated on first start and kept beside the database file with
    /// owner-only permissions. PostgreSQL without a key is refused: a generated key on one
    /// replica's disk would make the others unable to read what it wrote.
    pub fn resolve(
        inline: Option<&Secret>,
        file: Option<&Path>,
        database_url: &str,
        uses_postgres: bool,
    ) -> Result<Self, VaultError> {
        if let Some(inline) = inline {
            return Self::from_base64(inline.expose());
        }
        if let Some(file) = file {
            let text = std::fs::read_to_string(file).map_err(|e| {
                VaultError::Configuration(format!(
                    "KEY_ENCRYPTION_KEY_FILE {} cannot be read: {e}",
                    file.display()
                ))
            })?;
            return Self::from_base64(&text);
        }
        if uses_postgres {
            return Err(VaultError::Configuration(
                "KEY_ENCRYPTION_KEY or KEY_ENCRYPTION_KEY_FILE must be set when DATABASE_URL is \
                 PostgreSQL (generate one with: openssl rand -base64 32)"
                    .into(),
            ));
        }
        match sqlite_key_path(database_url) {
            Some(path) => Self::load_or_create(&path),
            None => {
                tracing::warn!("in-memory SQLite: private keys are sealed with a key that lives only as long as this process");
                Ok(Self::generate())
            }
        }
    }

    fn load_or_create(path: &Path) -> Result<Self, VaultError> {
        if path.exists() {
            let text = std::fs::read_to_string(path).map_err(|e| {
                VaultError::Configuration(format!("{} cannot be read: {e}", path.display()))
            })?;
            return Self::from_base64(&text);
        }
        let key = Self::generate();
        write_owner_only(path, &key.to_base64()).map_err(|e| {
            VaultError::Configuration(format!("cannot create {}: {e}", path.display()))
        })?;
        tracing::warn!(
            path = %path.display(),
            "generated a key-encryption key for private keys at rest; back it up with the database"
        );
        Ok(key)
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new((&self.0).into())
    }

    /// Encrypts `plaintext`, bound to `context`.
    pub fn seal(&self, plaintext: &str, context: &str) -> String {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let payload = Payload {
            msg: plaintext.as_bytes(),
            aad: context.as_bytes(),
        };
        // Encryption with a valid key and a fresh nonce cannot fail for inputs of this size.
        let ciphertext = self.cipher().encrypt(&nonce, payload).unwrap_or_default();
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&ciphertext);
        format!("{SEALED_PREFIX}{}", STANDARD.encode(sealed))
    }

    /// Decrypts a value sealed for `context`.
    pub fn open(&self, sealed: &str, context: &str) -> Result<String, VaultError> {
        let undecryptable = || VaultError::Undecryptable(context.to_owned());
        let encoded = sealed
            .strip_prefix(SEALED_PREFIX)
            .ok_or_else(undecryptable)?;
        let bytes = STANDARD.decode(encoded).map_err(|_| undecryptable())?;
        if bytes.len() < 24 {
            return Err(undecryptable());
        }
        let (nonce, ciphertext) = bytes.split_at(24);
        let payload = Payload {
            msg: ciphertext,
            aad: context.as_bytes(),
        };
        let plaintext = self
            .cipher()
            .decrypt(XNonce::from_slice(nonce), payload)
            .map_err(|_| undecryptable())?;
        String::from_utf8(plaintext).map_err(|_| undecryptable())
    }
}

/// `<database file>.kek` for a file-backed SQLite URL; `None` for in-memory databases.
fn sqlite_key_path(database_url: &str) -> Option<PathBuf> {
    crate::store::sqlite_path(database_url)
        .map(|path| PathBuf::from(format!("{}.kek", path.display())))
}

#[cfg(unix)]
fn write_owner_only(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}

#[cfg(not(unix))]
fn write_owner_only(path: &Path, contents: &str) -> std::io::Result<()> {
    std::fs::write(path, contents)
}

/// The store's private keys, sealed on the way in and opened on the way out.
#[derive(Clone)]
pub struct KeyVault {
    store: Store,
    key: KeyEncryptionKey,
}

impl KeyVault {
    /// A vault over `store` under `key`.
    pub fn new(store: Store, key: KeyEncryptionKey) -> Self {
        Self { store, key }
    }

    fn certificate_context(order_id: &str) -> String {
        format!("certificate_keys/{order_id}")
    }

    fn account_context(directory_url: &str) -> String {
        format!("acme_accounts/{directory_url}")
    }

    /// The private key (PEM) of an order, if one is stored.
    pub async fn certificate_key(&self, order_id: &str) -> Result<Option<String>, VaultError> {
        let context = Self::certificate_context(order_id);
        self.store
            .certificate_key(order_id)
            .await?
            .map(|sealed| self.key.open(&sealed, &context))
            .transpose()
    }

    /// Stores an order's key unless one is stored already; returns the key of record.
    pub async fn store_certificate_key(
        &self,
        order_id: &str,
        domain_id: &str,
        private_key_pem: &str,
    ) -> Result<String, VaultError> {
        let context = Self::certificate_context(order_id);
        let sealed = self.key.seal(private_key_pem, &context);
        let of_record = self
            .store
            .insert_certificate_key(order_id, domain_id, &sealed)
            .await?;
        self.key.open(&of_record, &context)
    }

    /// Runs `work` under the cluster-wide lock that serialises ACME account creation.
    pub async fn with_account_lock<T>(
        &self,
        work: impl std::future::Future<Output = T>,
    ) -> Result<T, VaultError> {
        Ok(self.store.with_account_lock(work).await?)
    }

    /// The ACME account credentials (JSON) for a directory, if stored.
    pub async fn acme_credentials(
        &self,
        directory_url: &str,
    ) -> Result<Option<String>, VaultError> {
        let context = Self::account_context(directory_url);
        self.store
            .acme_account(directory_url)
            .await?
            .map(|sealed| self.key.open(&sealed, &context))
            .transpose()
    }

    /// Stores account credentials unless some are stored already; returns those of record.
    pub async fn store_acme_credentials(
        &self,
        directory_url: &str,
        account_id: &str,
        credentials_json: &str,
    ) -> Result<String, VaultError> {
        let context = Self::account_context(directory_url);
        let sealed = self.key.seal(credentials_json, &context);
        let of_record = self
            .store
            .insert_acme_account(directory_url, account_id, &sealed)
            .await?;
        self.key.open(&of_record, &context)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_only_in_its_own_context() {
        let key = KeyEncryptionKey::generate();
        let sealed = key.seal("-----BEGIN PRIVATE KEY-----", "certificate_keys/a");
        assert!(!sealed.contains("PRIVATE KEY"));
        assert_eq!(
            key.open(&sealed, "certificate_keys/a").expect("opens"),
            "-----BEGIN PRIVATE KEY-----"
        );
        assert!(key.open(&sealed, "certificate_keys/b").is_err());
        assert!(KeyEncryptionKey::generate()
            .open(&sealed, "certificate_keys/a")
            .is_err());
    }

    #[test]
    fn a_key_must_be_32_bytes_of_base64() {
        assert!(KeyEncryptionKey::from_base64(&STANDARD.encode([7u8; 32])).is_ok());
        assert!(KeyEncryptionKey::from_base64(&STANDARD.encode([7u8; 16])).is_err());
        assert!(KeyEncryptionKey::from_base64("not base64!").is_err());
    }

    #[test]
    fn postgres_without_a_key_is_refused() {
        let error =
            KeyEncryptionKey::resolve(None, None, "postgres://x/y", true).expect_err("refused");
        assert!(error.to_string().contains("KEY_ENCRYPTION_KEY"));
    }

    #[test]
    fn sqlite_keys_live_beside_the_database() {
        assert_eq!(
            sqlite_key_path("sqlite:///var/lib/dns.db?mode=rwc"),
            Some(PathBuf::from("/var/lib/dns.db.kek"))
        );
        assert_eq!(sqlite_key_path("sqlite::memory:"), None);
    }
}
