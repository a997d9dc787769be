//! `KeyVault`: the private keys (certificate keys and the ACME account's credentials), encrypted
//! at rest with XChaCha20-Poly1305 under a key-encryption key from configuration.
//!
//! Each sealed value is bound to where it is stored (its table and row) as associated data, so a
//! ciphertext copied into another row does not decrypt. The store only ever sees ciphertext.
//!
//! The key can be rotated without stopping anything: every replica is given the new key as
//! `KEY_ENCRYPTION_KEY` and the old one in `PREVIOUS_KEY_ENCRYPTION_KEYS` (values are sealed
//! with the first and opened with any), then `dns-handling keys rotate` re-seals every stored
//! value under the new key, after which the old one can be dropped from the configuration.

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use crate::adapters::store::{SecretTable, Store, StoreError};
use crate::settings::{Secret, Settings};

/// Prefix of every sealed value: the scheme's version, so the scheme can change later.
const SEALED_PREFIX: &str = "xchacha20poly1305:v1:";

/// Why a key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// The key-encryption key is missing or malformed.
    #[error("{0}")]
    Configuration(String),
    /// A setting holding a key is not standard base64.
    #[error("{setting} is not standard base64")]
    NotBase64 {
        /// The setting.
        setting: String,
        /// What the decoder found.
        #[source]
        source: base64::DecodeError,
    },
    /// A file holding the key-encryption key could not be read or created.
    #[error("{context}")]
    KeyFile {
        /// What was being done, naming the file.
        context: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// A stored value does not decrypt under the configured key (wrong key, or tampering).
    #[error(
        "stored secret for {0} cannot be decrypted with KEY_ENCRYPTION_KEY or any of \
         PREVIOUS_KEY_ENCRYPTION_KEYS"
    )]
    Undecryptable(String),
    /// Encryption itself failed: nothing is stored, the operation fails.
    #[error("sealing a secret for {0} failed")]
    Sealing(String),
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
        Self::from_setting(text, "KEY_ENCRYPTION_KEY")
    }

    /// Parses standard base64 of exactly 32 bytes; errors name `setting`.
    fn from_setting(text: &str, setting: &str) -> Result<Self, VaultError> {
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(|source| VaultError::NotBase64 {
                setting: setting.to_owned(),
                source,
            })?;
        let key: [u8; 32] = bytes.try_into().map_err(|bytes: Vec<u8>| {
            VaultError::Configuration(format!(
                "{setting} must be 32 bytes (openssl rand -base64 32), got {}",
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
            let text = std::fs::read_to_string(file).map_err(|source| VaultError::KeyFile {
                context: format!("KEY_ENCRYPTION_KEY_FILE {} cannot be read", file.display()),
                source,
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
            let text = std::fs::read_to_string(path).map_err(|source| VaultError::KeyFile {
                context: format!("{} cannot be read", path.display()),
                source,
            })?;
            return Self::from_base64(&text);
        }
        let key = Self::generate();
        write_owner_only(path, &key.to_base64()).map_err(|source| VaultError::KeyFile {
            context: format!("cannot create {}", path.display()),
            source,
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
    pub fn seal(&self, plaintext: &str, context: &str) -> Result<String, VaultError> {
        seal_with(&self.cipher(), plaintext, context)
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

/// Encrypts with `cipher` under a fresh nonce. A failure of the cipher fails the operation:
/// an empty or partial ciphertext would be stored as a key that never opens again.
fn seal_with<C>(cipher: &C, plaintext: &str, context: &str) -> Result<String, VaultError>
where
    C: Aead + AeadCore<NonceSize = <XChaCha20Poly1305 as AeadCore>::NonceSize>,
{
    let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
    let payload = Payload {
        msg: plaintext.as_bytes(),
        aad: context.as_bytes(),
    };
    let ciphertext = cipher
        .encrypt(&nonce, payload)
        .map_err(|_| VaultError::Sealing(context.to_owned()))?;
    let mut sealed = nonce.to_vec();
    sealed.extend_from_slice(&ciphertext);
    Ok(format!("{SEALED_PREFIX}{}", STANDARD.encode(sealed)))
}

/// The key values are sealed with, and the keys values sealed before a rotation may still be
/// under.
#[derive(Clone, Debug)]
pub struct KeyRing {
    current: KeyEncryptionKey,
    previous: Vec<KeyEncryptionKey>,
}

impl KeyRing {
    /// A ring sealing with `current` and opening with it or any of `previous`.
    pub fn new(current: KeyEncryptionKey, previous: Vec<KeyEncryptionKey>) -> Self {
        Self { current, previous }
    }

    /// The ring as configured: the current key as [`KeyEncryptionKey::resolve`] decides it,
    /// and `PREVIOUS_KEY_ENCRYPTION_KEYS`.
    pub fn resolve(settings: &Settings) -> Result<Self, VaultError> {
        let current = KeyEncryptionKey::resolve(
            settings.key_encryption_key.as_ref(),
            settings.key_encryption_key_file.as_deref(),
            &settings.database_url,
            settings.uses_postgres(),
        )?;
        let previous = settings
            .previous_key_encryption_keys
            .iter()
            .map(|key| KeyEncryptionKey::from_setting(key.expose(), "PREVIOUS_KEY_ENCRYPTION_KEYS"))
            .collect::<Result<_, _>>()?;
        Ok(Self::new(current, previous))
    }

    /// Seals under the current key.
    pub fn seal(&self, plaintext: &str, context: &str) -> Result<String, VaultError> {
        self.current.seal(plaintext, context)
    }

    /// Opens a value sealed under the current key or any previous one.
    pub fn open(&self, sealed: &str, context: &str) -> Result<String, VaultError> {
        self.current
            .open(sealed, context)
            .or_else(|error| self.open_with_previous(sealed, context).ok_or(error))
    }

    /// Opens a value with the first previous key that can.
    fn open_with_previous(&self, sealed: &str, context: &str) -> Option<String> {
        self.previous
            .iter()
            .find_map(|key| key.open(sealed, context).ok())
    }

    /// The value under the current key: `None` when it is already, else re-sealed.
    fn resealed(&self, sealed: &str, context: &str) -> Result<Option<String>, VaultError> {
        match self.current.open(sealed, context) {
            Ok(_) => Ok(None),
            Err(error) => {
                let plaintext = self.open_with_previous(sealed, context).ok_or(error)?;
                self.seal(&plaintext, context).map(Some)
            }
        }
    }
}

/// What `KeyVault::rotate` did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rotation {
    /// Certificate private keys re-sealed under the current key.
    pub certificate_keys: u64,
    /// ACME account credentials re-sealed under the current key.
    pub acme_accounts: u64,
    /// Webhook signing secrets re-sealed under the current key.
    pub webhook_secrets: u64,
    /// Values that were under the current key already.
    pub already_current: u64,
}

/// `<database file>.kek` for a file-backed SQLite URL; `None` for in-memory databases.
fn sqlite_key_path(database_url: &str) -> Option<PathBuf> {
    crate::adapters::store::sqlite_path(database_url)
        .map(|path| PathBuf::from(format!("{}.kek", path.display())))
}

/// Creates `path` holding `contents`, readable by its owner only; refuses to overwrite.
#[cfg(unix)]
pub(crate) fn write_owner_only(path: &Path, contents: &str) -> std::io::Result<()> {
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
pub(crate) fn write_owner_only(path: &Path, contents: &str) -> std::io::Result<()> {
    std::fs::write(path, contents)
}

/// The store's private keys, sealed on the way in and opened on the way out.
#[derive(Clone)]
pub struct KeyVault {
    store: Store,
    key: KeyRing,
}

impl KeyVault {
    /// A vault over `store` under the keys of `key`.
    pub fn new(store: Store, key: KeyRing) -> Self {
        Self { store, key }
    }

    /// What a value is bound to: its table and row.
    fn context(table: SecretTable, row: &str) -> String {
        format!("{}/{row}", table.name())
    }

    fn certificate_context(order_id: &str) -> String {
        Self::context(SecretTable::CertificateKeys, order_id)
    }

    fn account_context(directory_url: &str) -> String {
        Self::context(SecretTable::AcmeAccounts, directory_url)
    }

    /// Re-seals every stored value that is not under the current key yet, a page of rows per
    /// transaction. A value no configured key opens stops the rotation before its page is
    /// written; what was re-sealed before stays so (and opens with the current key), and running
    /// again once the configuration is right carries on where it stopped.
    pub async fn rotate(&self) -> Result<Rotation, VaultError> {
        const PAGE: u32 = 500;
        let mut rotation = Rotation::default();
        let tables = [
            SecretTable::CertificateKeys,
            SecretTable::AcmeAccounts,
            SecretTable::WebhookSecrets,
        ];
        for table in tables {
            let mut after = String::new();
            loop {
                let page = self.store.sealed_secrets(table, &after, PAGE).await?;
                let Some((last, _)) = page.last() else {
                    break;
                };
                after = last.clone();
                let mut replacements = Vec::new();
                for (row, sealed) in page {
                    match self.key.resealed(&sealed, &Self::context(table, &row))? {
                        Some(resealed) => replacements.push((row, sealed, resealed)),
                        None => rotation.already_current += 1,
                    }
                }
                self.store.replace_secrets(table, &replacements).await?;
                let count = replacements.len() as u64;
                match table {
                    SecretTable::CertificateKeys => rotation.certificate_keys += count,
                    SecretTable::AcmeAccounts => rotation.acme_accounts += count,
                    SecretTable::WebhookSecrets => rotation.webhook_secrets += count,
                }
            }
        }
        Ok(rotation)
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

    /// Opens an order's key as the store holds it sealed (read in bulk by the caller).
    pub fn open_certificate_key(&self, order_id: &str, sealed: &str) -> Result<String, VaultError> {
        self.key.open(sealed, &Self::certificate_context(order_id))
    }

    /// Stores an order's key unless one is stored already; returns the key of record.
    pub async fn store_certificate_key(
        &self,
        order_id: &str,
        domain_id: &str,
        private_key_pem: &str,
    ) -> Result<String, VaultError> {
        let context = Self::certificate_context(order_id);
        let sealed = self.key.seal(private_key_pem, &context)?;
        let of_record = self
            .store
            .insert_certificate_key(order_id, domain_id, &sealed)
            .await?;
        self.key.open(&of_record, &context)
    }

    /// Stores a webhook signing secret (`whsec_…`), sealed.
    pub async fn store_webhook_secret(
        &self,
        secret_id: &str,
        endpoint_id: &str,
        secret: &str,
    ) -> Result<(), VaultError> {
        let context = Self::context(SecretTable::WebhookSecrets, secret_id);
        let sealed = self.key.seal(secret, &context)?;
        Ok(self
            .store
            .insert_webhook_secret(secret_id, endpoint_id, &sealed)
            .await?)
    }

    /// A webhook signing secret, if stored.
    pub async fn webhook_secret(&self, secret_id: &str) -> Result<Option<String>, VaultError> {
        let context = Self::context(SecretTable::WebhookSecrets, secret_id);
        self.store
            .webhook_secret(secret_id)
            .await?
            .map(|sealed| self.key.open(&sealed, &context))
            .transpose()
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
        let sealed = self.key.seal(credentials_json, &context)?;
        let of_record = self
            .store
            .insert_acme_account(directory_url, account_id, &sealed)
            .await?;
        self.key.open(&of_record, &context)
    }
}

#[cfg(test)]
mod tests;
