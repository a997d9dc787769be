//! Sealing and opening, the key-encryption key and its rotation.

use super::*;

#[test]
fn a_sealed_value_opens_only_in_its_own_context() {
    let key = KeyEncryptionKey::generate();
    let sealed = key
        .seal("-----BEGIN PRIVATE KEY-----", "certificate_keys/a")
        .expect("sealed");
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
fn a_ring_seals_with_its_current_key_and_opens_with_any() {
    let (old, new) = (KeyEncryptionKey::generate(), KeyEncryptionKey::generate());
    let ring = KeyRing::new(new.clone(), vec![old.clone()]);
    let under_old = old.seal("secret", "acme_accounts/x").expect("sealed");
    assert_eq!(
        ring.open(&under_old, "acme_accounts/x").expect("opens"),
        "secret"
    );
    let resealed = ring
        .resealed(&under_old, "acme_accounts/x")
        .expect("opens")
        .expect("re-sealed");
    assert_eq!(
        new.open(&resealed, "acme_accounts/x").expect("opens"),
        "secret"
    );
    assert!(old.open(&resealed, "acme_accounts/x").is_err());
    assert_eq!(
        ring.resealed(&resealed, "acme_accounts/x").expect("opens"),
        None
    );
    assert!(new.open(&ring.seal("s", "c").expect("sealed"), "c").is_ok());
    let stranger = KeyEncryptionKey::generate()
        .seal("secret", "acme_accounts/x")
        .expect("sealed");
    assert!(ring.open(&stranger, "acme_accounts/x").is_err());
}

#[test]
fn a_bad_previous_key_is_refused_naming_its_setting() {
    let settings = Settings {
        database_url: "postgres://x/y".into(),
        key_encryption_key: Some(Secret::new(STANDARD.encode([1u8; 32]))),
        previous_key_encryption_keys: vec![
            Secret::new(STANDARD.encode([2u8; 32])),
            Secret::new(STANDARD.encode([3u8; 16])),
        ],
        ..Settings::default()
    };
    let error = KeyRing::resolve(&settings).expect_err("refused");
    assert!(
        error
            .to_string()
            .starts_with("PREVIOUS_KEY_ENCRYPTION_KEYS must be 32 bytes"),
        "{error}"
    );
    let settings = Settings {
        previous_key_encryption_keys: vec![Secret::new(STANDARD.encode([2u8; 32]))],
        ..settings
    };
    let ring = KeyRing::resolve(&settings).expect("a ring");
    let under_previous = KeyEncryptionKey::from_base64(&STANDARD.encode([2u8; 32]))
        .expect("a key")
        .seal("secret", "c")
        .expect("sealed");
    assert_eq!(ring.open(&under_previous, "c").expect("opens"), "secret");
}

/// An AEAD whose encryption always fails, as a real cipher's would on input it cannot take.
struct FailingCipher;

impl AeadCore for FailingCipher {
    type NonceSize = <XChaCha20Poly1305 as AeadCore>::NonceSize;
    type TagSize = <XChaCha20Poly1305 as AeadCore>::TagSize;
    type CiphertextOverhead = <XChaCha20Poly1305 as AeadCore>::CiphertextOverhead;
}

impl chacha20poly1305::aead::AeadInPlace for FailingCipher {
    fn encrypt_in_place_detached(
        &self,
        _nonce: &chacha20poly1305::aead::Nonce<Self>,
        _associated_data: &[u8],
        _buffer: &mut [u8],
    ) -> chacha20poly1305::aead::Result<chacha20poly1305::aead::Tag<Self>> {
        Err(chacha20poly1305::aead::Error)
    }

    fn decrypt_in_place_detached(
        &self,
        _nonce: &chacha20poly1305::aead::Nonce<Self>,
        _associated_data: &[u8],
        _buffer: &mut [u8],
        _tag: &chacha20poly1305::aead::Tag<Self>,
    ) -> chacha20poly1305::aead::Result<()> {
        Err(chacha20poly1305::aead::Error)
    }
}

#[test]
fn a_cipher_failure_fails_the_seal_instead_of_storing_an_unopenable_value() {
    let error = seal_with(
        &FailingCipher,
        "-----BEGIN PRIVATE KEY-----",
        "certificate_keys/a",
    )
    .expect_err("refused");
    assert!(matches!(error, VaultError::Sealing(ref context) if context == "certificate_keys/a"));
}

#[test]
fn a_key_must_be_32_bytes_of_base64() {
    assert!(KeyEncryptionKey::from_base64(&STANDARD.encode([7u8; 32])).is_ok());
    assert!(KeyEncryptionKey::from_base64(&STANDARD.encode([7u8; 16])).is_err());
    assert!(KeyEncryptionKey::from_base64("not base64!").is_err());
}

#[test]
fn postgres_without_a_key_is_refused() {
    let error = KeyEncryptionKey::resolve(None, None, "postgres://x/y", true).expect_err("refused");
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
