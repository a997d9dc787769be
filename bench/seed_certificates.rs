//! Seeding for the edge bench: `active` domains whose `CertificateIssued` carries a real
//! certificate for the domain's three names (`shop<n>.example.com`, its `www.` and its
//! wildcard), and whose private key is stored sealed as the service stores it (the vault's
//! XChaCha20-Poly1305 under the key-encryption key the service is started with, bound to
//! `certificate_keys/<order id>`).
//!
//! One bench CA (ECDSA P-256) signs every leaf, and every leaf has the same key pair: generating
//! a key per certificate would cost minutes at a million and change nothing the service does (it
//! never looks inside a key; it seals, stores, opens and hands it out). The key is still sealed
//! once per order, under that order's context, as the service would have sealed it.

use chrono::{Datelike, Utc};
use dns_handling::adapters::acme::hex;
use dns_handling::adapters::store::{SecretTable, Store};
use dns_handling::adapters::vault::KeyEncryptionKey;
use dns_handling::domain::aggregate::edge_reader;
use dns_handling_events::{
    CertificateKeyType, CustomDomainEvent, IssuedCertificate, OrderChallenge, OrderDetails,
    OwnershipProof, RenewalReason, Validation,
};
use sha2::Digest;

use crate::seed;

/// Keys stored per statement.
const KEYS_PER_STATEMENT: usize = 200;

/// The bench CA and the one leaf key pair every certificate it signs carries.
pub struct Authority {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    ca_pem: String,
    leaf_key: rcgen::KeyPair,
    /// The leaf key, PEM: what the service hands an edge with every chain.
    pub key_pem: String,
    kek: KeyEncryptionKey,
}

/// One seeded certificate.
pub struct Issued {
    /// The `CertificateIssued` of it.
    pub certificate: IssuedCertificate,
    /// The leaf's PEM (the first part of the chain).
    pub leaf_pem: String,
}

impl Authority {
    /// A fresh CA and leaf key; keys are sealed under `kek` (base64, as `KEY_ENCRYPTION_KEY`).
    pub fn new(kek: &str) -> anyhow::Result<Self> {
        let ca_key = rcgen::KeyPair::generate()?;
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "dns-handling edge bench CA");
        let ca_pem = ca.self_signed(&ca_key)?.pem();
        let leaf_key = rcgen::KeyPair::generate()?;
        let key_pem = leaf_key.serialize_pem();
        Ok(Self {
            issuer: rcgen::Issuer::new(ca, ca_key),
            ca_pem,
            leaf_key,
            key_pem,
            kek: KeyEncryptionKey::from_base64(kek)?,
        })
    }

    /// A certificate for domain `n`'s three names, its `generation`-th (serials differ), valid
    /// from today for 90 days.
    pub fn issue(&self, n: usize, generation: u32) -> anyhow::Result<Issued> {
        let name = seed::domain_name(n);
        let mut params = rcgen::CertificateParams::new(names(n))?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name.as_str());
        let serial = serial(n, generation);
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
        let today = Utc::now().date_naive();
        let not_before = today.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc();
        let not_after = not_before + chrono::Duration::days(90);
        let (from, to) = (not_before.date_naive(), not_after.date_naive());
        params.not_before = rcgen::date_time_ymd(from.year(), from.month() as u8, from.day() as u8);
        params.not_after = rcgen::date_time_ymd(to.year(), to.month() as u8, to.day() as u8);
        let leaf = params.signed_by(&self.leaf_key, &self.issuer)?;
        let leaf_pem = leaf.pem();
        Ok(Issued {
            certificate: IssuedCertificate {
                certificate_id: certificate_id(n, generation),
                order_id: order_id(n, generation),
                serial: hex(&serial),
                not_before,
                not_after,
                fingerprint_sha256: hex(&sha2::Sha256::digest(leaf.der())),
                chain_pem: format!("{leaf_pem}{}", self.ca_pem),
                ca_directory: String::new(),
            },
            leaf_pem,
        })
    }

    /// The key of order `order_id` (of domain `domain_id`) as the vault stores it.
    fn sealed_key(&self, order_id: &str) -> anyhow::Result<String> {
        let context = format!("{}/{order_id}", SecretTable::CertificateKeys.name());
        Ok(self.kek.seal(&self.key_pem, &context)?)
    }
}

/// Domain `n`'s names: the domain, its `www.` and its wildcard.
pub fn names(n: usize) -> Vec<String> {
    let name = seed::domain_name(n);
    vec![name.clone(), format!("www.{name}"), format!("*.{name}")]
}

fn serial(n: usize, generation: u32) -> Vec<u8> {
    // Positive (high bit clear) and never zero.
    let mut serial = vec![0x01];
    serial.extend_from_slice(&(n as u64).to_be_bytes());
    serial.extend_from_slice(&generation.to_be_bytes());
    serial
}

fn certificate_id(n: usize, generation: u32) -> String {
    format!("0193a7c4-{generation:04x}-7000-8000-{n:012}")
}

fn order_id(n: usize, generation: u32) -> String {
    format!("0193a7c3-{generation:04x}-7000-8000-{n:012}")
}

/// Domain `n`'s events up to `issued` and its renewal scheduled, registered with its three
/// names; with `read_by`, that edge's first read of the key is recorded too (as after the edge
/// fetched it once).
pub fn domain_events(n: usize, issued: &Issued, read_by: Option<&str>) -> Vec<CustomDomainEvent> {
    let now = Utc::now();
    let name = seed::domain_name(n);
    let token = format!("e06e0b0d9e3a4c5b8a7f6e5d4c3b{n:012}");
    let certificate = issued.certificate.clone();
    let challenge = |identifier: &str| OrderChallenge {
        identifier: identifier.to_owned(),
        challenge_url: format!("https://acme.invalid/chall/{n}/{identifier}"),
        challenge_domain: format!("_acme-challenge.{}.", identifier.trim_start_matches("*.")),
        expected_txt_value: "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0".into(),
        delegated_to: None,
    };
    let mut events = vec![
        CustomDomainEvent::DomainRegistered {
            domain_name: name.clone(),
            verification_token: token.clone(),
            verification_record_name: format!("_acme-challenge.{name}."),
            registered_at: now,
            alt_names: names(n)[1..].to_vec(),
            tenant: None,
        },
        CustomDomainEvent::OwnershipVerified {
            observed_values: vec![token],
            proof: OwnershipProof::Txt,
            cname_target: None,
            verified_at: now,
        },
        CustomDomainEvent::CertificateRequested {
            order: OrderDetails {
                order_id: certificate.order_id.clone(),
                order_url: format!("https://acme.invalid/order/{n}"),
                names: names(n),
                challenges: names(n).iter().map(|name| challenge(name)).collect(),
                account_id: "https://acme.invalid/acct/1".into(),
                poll_interval_ms: 10_000,
                deadline: now + chrono::Duration::minutes(5),
                key_type: CertificateKeyType::EcdsaP256,
                validation: Validation::Manual,
                delegation_problem: None,
                ca_directory: String::new(),
            },
            requested_at: now,
        },
        CustomDomainEvent::ChallengeRecordObserved {
            order_id: certificate.order_id.clone(),
            observed_values: vec!["LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0".into()],
            resolver: "127.0.0.1:53".into(),
            observed_at: now,
        },
    ];
    let certificate_id = certificate.certificate_id.clone();
    let due_at = certificate.not_after - chrono::Duration::days(30);
    events.push(CustomDomainEvent::CertificateIssued {
        certificate,
        issued_at: now,
    });
    // As the renewal scheduler records it: otherwise the service appends one for every domain
    // after its start, writes that would run under the measurements.
    events.push(CustomDomainEvent::RenewalScheduled {
        certificate_id: certificate_id.clone(),
        due_at,
        reason: RenewalReason::Lifetime,
        window: None,
        scheduled_at: now,
    });
    if let Some(edge) = read_by {
        events.push(CustomDomainEvent::PrivateKeyRead {
            certificate_id,
            reader: edge_reader(edge),
            read_at: now,
        });
    }
    events
}

/// Seeds `domains` active domains with their certificates (views and projection checkpoint
/// written, as after the projector ran) and their sealed keys; `read_by` as in
/// [`domain_events`]. Returns the number of events written.
pub async fn seed(
    store: &Store,
    authority: &Authority,
    domains: usize,
    read_by: Option<&str>,
) -> anyhow::Result<usize> {
    store.migrate().await?;
    // The keys first, as the service stores an order's key before its certificate exists.
    let orders: Vec<usize> = (0..domains).collect();
    for chunk in orders.chunks(20 * KEYS_PER_STATEMENT) {
        let rows = chunk
            .iter()
            .map(|&n| key_row(authority, n, 0))
            .collect::<anyhow::Result<Vec<_>>>()?;
        insert_keys(store, &rows).await?;
    }
    seed::seed_events(
        store,
        domains,
        |n| Ok(domain_events(n, &authority.issue(n, 0)?, read_by)),
        true,
    )
    .await
}

/// Commits one more domain `n` with `issued` (its key first, then its events, each in a
/// transaction of its own), as another replica would; returns when the events are committed.
pub async fn commit_domain(
    store: &Store,
    authority: &Authority,
    n: usize,
    issued: &Issued,
) -> anyhow::Result<()> {
    let order = &issued.certificate.order_id;
    insert_keys(
        store,
        &[(
            order.clone(),
            seed::domain_id(n),
            authority.sealed_key(order)?,
        )],
    )
    .await?;
    let id = seed::domain_id(n);
    let rows = seed::rows_of(&id, &domain_events(n, issued, None))?;
    seed::insert(store, &rows, &[(seed::domain_name(n), id)]).await
}

/// A stored key: order id, domain id, sealed key.
type KeyRow = (String, String, String);

fn key_row(authority: &Authority, n: usize, generation: u32) -> anyhow::Result<KeyRow> {
    let order = order_id(n, generation);
    let sealed = authority.sealed_key(&order)?;
    Ok((order, seed::domain_id(n), sealed))
}

/// Inserts `rows` into `certificate_keys` in one transaction.
async fn insert_keys(store: &Store, rows: &[KeyRow]) -> anyhow::Result<()> {
    let created_at = Utc::now().to_rfc3339();
    macro_rules! insert_all {
        ($pool:expr) => {{
            let mut tx = $pool.begin().await?;
            for chunk in rows.chunks(KEYS_PER_STATEMENT) {
                let values: Vec<String> = (0..chunk.len())
                    .map(|r| {
                        let b = r * 4;
                        format!("(${}, ${}, ${}, ${})", b + 1, b + 2, b + 3, b + 4)
                    })
                    .collect();
                let sql = format!(
                    "INSERT INTO certificate_keys (order_id, domain_id, private_key, created_at) \
                     VALUES {}",
                    values.join(",")
                );
                let mut query = sqlx::query(&sql);
                for (order, domain, sealed) in chunk {
                    query = query.bind(order).bind(domain).bind(sealed).bind(&created_at);
                }
                query.execute(&mut *tx).await?;
            }
            tx.commit().await?;
        }};
    }
    match store {
        Store::Postgres(pool) => insert_all!(pool),
        Store::Sqlite(pool) => insert_all!(pool),
    }
    Ok(())
}
