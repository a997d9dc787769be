//! Seeding shared by the `pending`, `readpath`, `renewals` and `dns` benches: writes domains' events
//! straight into a store with multi-row inserts (as `bench/store.rs` loads its million events),
//! each stream linked into its hash chain as the service links it, and reserves each domain's
//! name. Either the service builds the read views itself when it next starts (projection
//! catch-up), or [`seed_with`] writes them too, folded from the same events and stored as the
//! projector stores them, with the checkpoint at the end of the feed: a start has nothing to
//! catch up.

use chrono::{DateTime, Utc};
use dns_handling::adapters::store::{ProjectionWrite, Store};
use dns_handling::domain::delegation::DelegationZone;
use dns_handling::read::projector::DOMAIN_VIEWS;
use dns_handling_events::chain::{event_hash, ChainedContent, GENESIS, HASH_KEY, PREV_HASH_KEY};
use dns_handling_events::{
    CertificateKeyType, CustomDomainEvent, IssuedCertificate, OrderChallenge, OrderDetails,
    RenewalReason,
};
use dns_handling_projections::{CertificateView, DomainView};
use serde_json::{json, Value};

/// How far each seeded domain got.
#[derive(Clone, Copy, Debug)]
pub enum Lifecycle {
    /// Registered, verified and `certificate_pending`: an order waits for its TXT record.
    Pending {
        /// The order's poll interval, as `issue-certificate` records it.
        poll_interval_ms: u64,
        /// The order's deadline.
        deadline: DateTime<Utc>,
    },
    /// Registered, verified, requested, observed and issued: `active`.
    Active,
    /// `active`, and the renewal scheduler has scheduled its renewal (by lifetime) for `due_at`.
    RenewalScheduled {
        /// When the renewal is due.
        due_at: DateTime<Utc>,
    },
    /// Registered, verified by its CNAME into [`DELEGATION_ZONE`], and `certificate_pending` with
    /// a delegated order: the service publishes the order's value at
    /// [`delegation_target`] itself.
    DelegatedPending {
        /// The order's poll interval, as `issue-certificate` records it.
        poll_interval_ms: u64,
        /// The order's deadline.
        deadline: DateTime<Utc>,
    },
}

/// The delegation zone of [`Lifecycle::DelegatedPending`] domains (the service must be started
/// with `DELEGATION_ZONE` set to it).
pub const DELEGATION_ZONE: &str = "acme.platform.test";

/// The id of seeded domain `n` (a UUID, like the ids `POST /domains` hands out).
pub fn domain_id(n: usize) -> String {
    format!("0193a7c2-0000-7000-8000-{n:012}")
}

/// The name of seeded domain `n`.
pub fn domain_name(n: usize) -> String {
    format!("shop{n}.example.com")
}

/// The challenge record name a pending seeded domain's poller looks up.
pub fn challenge_domain(n: usize) -> String {
    format!("_acme-challenge.{}.", domain_name(n))
}

/// The verification token of seeded domain `n` (40 hex characters, like the 160 random bits
/// the service hands out).
fn verification_token(n: usize) -> String {
    format!("6f1c0b0d9e3a4c5b8a7f6e5d4c3b{n:012}")
}

/// Where a [`Lifecycle::DelegatedPending`] domain `n`'s challenge is published: its label in
/// [`DELEGATION_ZONE`], absolute (trailing dot), derived from its token and name exactly as the
/// service derives it.
pub fn delegation_target(n: usize) -> String {
    let zone = DelegationZone::parse(DELEGATION_ZONE).expect("a valid zone name");
    zone.record_for(&verification_token(n), &domain_name(n))
        .target
}

/// The TXT value of seeded domain `n`'s challenge: 43 base64url characters (a SHA-256 digest
/// without padding, as ACME's key authorization digests are), different for every domain.
pub fn challenge_value(n: usize) -> String {
    use base64::Engine;
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("bench challenge {n}").as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest)
}

fn domain_events(n: usize, lifecycle: Lifecycle) -> Vec<CustomDomainEvent> {
    let now = Utc::now();
    let name = domain_name(n);
    let order_id = format!("0193a7c3-0000-7000-8000-{n:012}");
    let token = verification_token(n);
    let (poll_interval_ms, deadline) = match lifecycle {
        Lifecycle::Pending {
            poll_interval_ms,
            deadline,
        }
        | Lifecycle::DelegatedPending {
            poll_interval_ms,
            deadline,
        } => (poll_interval_ms, deadline),
        Lifecycle::Active | Lifecycle::RenewalScheduled { .. } => {
            (10_000, now + chrono::Duration::minutes(5))
        }
    };
    if let Lifecycle::DelegatedPending { .. } = lifecycle {
        return delegated_events(n, &name, token, order_id, poll_interval_ms, deadline);
    }
    let mut events = vec![
        CustomDomainEvent::DomainRegistered {
            domain_name: name.clone(),
            verification_token: token.clone(),
            verification_record_name: format!("_acme-challenge.{name}."),
            registered_at: now,
            alt_names: vec![],
            tenant: None,
        },
        CustomDomainEvent::OwnershipVerified {
            observed_values: vec![token],
            proof: dns_handling_events::OwnershipProof::Txt,
            cname_target: None,
            verified_at: now,
        },
        CustomDomainEvent::CertificateRequested {
            order: OrderDetails {
                order_id: order_id.clone(),
                // Never fetched: a poller only talks to the CA once the TXT record is seen.
                order_url: format!("https://acme.invalid/order/{n}"),
                names: vec![name.clone()],
                challenges: vec![OrderChallenge {
                    identifier: name.clone(),
                    challenge_url: format!("https://acme.invalid/chall/{n}"),
                    challenge_domain: challenge_domain(n),
                    expected_txt_value: "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0".into(),
                    delegated_to: None,
                }],
                account_id: "https://acme.invalid/acct/1".into(),
                poll_interval_ms,
                deadline,
                key_type: CertificateKeyType::Rsa2048,
                validation: dns_handling_events::Validation::Manual,
                delegation_problem: None,
                ca_directory: String::new(),
            },
            requested_at: now,
        },
    ];
    if let Lifecycle::Active | Lifecycle::RenewalScheduled { .. } = lifecycle {
        events.push(CustomDomainEvent::ChallengeRecordObserved {
            order_id: order_id.clone(),
            observed_values: vec!["LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0".into()],
            resolver: "127.0.0.1:53".into(),
            observed_at: now,
        });
        events.push(CustomDomainEvent::CertificateIssued {
            certificate: IssuedCertificate {
                certificate_id: format!("cert-{n}"),
                order_id,
                serial: "03a1b2c3d4e5f60718293a4b5c6d7e8f".into(),
                not_before: now,
                not_after: now + chrono::Duration::days(90),
                fingerprint_sha256: "ab".repeat(32),
                chain_pem: format!(
                    "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
                    "A".repeat(1400)
                ),
                ca_directory: String::new(),
            },
            issued_at: now,
        });
    }
    if let Lifecycle::RenewalScheduled { due_at } = lifecycle {
        events.push(CustomDomainEvent::RenewalScheduled {
            certificate_id: format!("cert-{n}"),
            due_at,
            reason: RenewalReason::Lifetime,
            window: None,
            scheduled_at: now,
        });
    }
    events
}

/// The events of a domain verified by its CNAME whose order is delegated: what the aggregate
/// records when `_acme-challenge.<name>` points at the domain's label in the zone.
fn delegated_events(
    n: usize,
    name: &str,
    token: String,
    order_id: String,
    poll_interval_ms: u64,
    deadline: DateTime<Utc>,
) -> Vec<CustomDomainEvent> {
    let now = Utc::now();
    let target = delegation_target(n);
    vec![
        CustomDomainEvent::DomainRegistered {
            domain_name: name.to_owned(),
            verification_token: token,
            verification_record_name: format!("_acme-challenge.{name}."),
            registered_at: now,
            alt_names: vec![],
            tenant: None,
        },
        CustomDomainEvent::OwnershipVerified {
            observed_values: vec![],
            proof: dns_handling_events::OwnershipProof::Cname,
            cname_target: Some(target.clone()),
            verified_at: now,
        },
        CustomDomainEvent::CertificateRequested {
            order: OrderDetails {
                order_id,
                // Never fetched: a poller only talks to the CA once it has seen the record.
                order_url: format!("https://acme.invalid/order/{n}"),
                names: vec![name.to_owned()],
                challenges: vec![OrderChallenge {
                    identifier: name.to_owned(),
                    challenge_url: format!("https://acme.invalid/chall/{n}"),
                    challenge_domain: challenge_domain(n),
                    expected_txt_value: challenge_value(n),
                    delegated_to: Some(target),
                }],
                account_id: "https://acme.invalid/acct/1".into(),
                poll_interval_ms,
                deadline,
                key_type: CertificateKeyType::Rsa2048,
                validation: dns_handling_events::Validation::Delegated,
                delegation_problem: None,
                ca_directory: String::new(),
            },
            requested_at: now,
        },
    ]
}

/// One multi-row insert of `rows` events; PostgreSQL's payload and metadata columns are `json`.
fn insert_sql(rows: usize, postgres: bool) -> String {
    let json = if postgres { "::json" } else { "" };
    let values: Vec<String> = (0..rows)
        .map(|r| {
            let b = r * 6;
            format!(
                "('CustomDomain', ${}, ${}, ${}, ${}, ${}{json}, ${}{json})",
                b + 1,
                b + 2,
                b + 3,
                b + 4,
                b + 5,
                b + 6
            )
        })
        .collect();
    format!(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
         payload, metadata) VALUES {}",
        values.join(",")
    )
}

/// A stored event row: stream, sequence, type, version, payload, metadata.
pub type Row = (String, i64, &'static str, String, String, String);

/// A domain's events as stored rows, hash-chained from the genesis hash.
pub fn rows_of(id: &str, events: &[CustomDomainEvent]) -> anyhow::Result<Vec<Row>> {
    let mut prev_hash = GENESIS.to_owned();
    let mut rows = Vec::new();
    for (index, event) in events.iter().enumerate() {
        let payload = serde_json::to_value(event)?;
        let mut metadata = json!({"actor": "bench-seed"});
        let sequence = index as u64 + 1;
        let hash = event_hash(
            &prev_hash,
            &ChainedContent {
                aggregate_type: "CustomDomain",
                aggregate_id: id,
                sequence,
                event_type: event.type_name(),
                event_version: event.version(),
                payload: &payload,
                metadata: &metadata,
            },
        );
        if let Some(map) = metadata.as_object_mut() {
            map.insert(PREV_HASH_KEY.to_owned(), Value::from(prev_hash.clone()));
            map.insert(HASH_KEY.to_owned(), Value::from(hash.clone()));
        }
        prev_hash = hash;
        rows.push((
            id.to_owned(),
            sequence as i64,
            event.type_name(),
            event.version().to_owned(),
            payload.to_string(),
            metadata.to_string(),
        ));
    }
    Ok(rows)
}

/// A fresh database of `kind` seeded with `domains` `active` domains, as [`seed`] writes them
/// (the views left to the service's catch-up); says on stderr how long the seeding took.
pub async fn active_database(
    kind: dns_handling_testkit::StoreKind,
    domains: usize,
) -> anyhow::Result<dns_handling_testkit::TestDatabase> {
    let database = dns_handling_testkit::TestDatabase::create(kind).await;
    let store = Store::connect(&database.url).await?;
    let seeding = std::time::Instant::now();
    let events = seed(&store, domains, Lifecycle::Active).await?;
    close(store).await;
    eprintln!(
        "{kind:?}: seeded {domains} active domains ({events} events) in {:.1} s",
        seeding.elapsed().as_secs_f64()
    );
    Ok(database)
}

/// Writes `domains` domains' events and name reservations into `store` (migrated here), in
/// large transactions. Returns the number of events written.
pub async fn seed(store: &Store, domains: usize, lifecycle: Lifecycle) -> anyhow::Result<usize> {
    seed_with(store, domains, |_| lifecycle, false).await
}

/// As [`seed`], domain `n` as far as `lifecycle(n)` says; with `views`, also each domain's view
/// and certificate view (folded from its events, written by `Store::write_projection` as the
/// projector writes them) and, at the end, the views' checkpoint at the last event.
pub async fn seed_with(
    store: &Store,
    domains: usize,
    lifecycle: impl Fn(usize) -> Lifecycle,
    views: bool,
) -> anyhow::Result<usize> {
    seed_events(
        store,
        domains,
        |n| Ok(domain_events(n, lifecycle(n))),
        views,
    )
    .await
}

/// As [`seed_with`], domain `n`'s events being `events_of(n)` (named [`domain_name`]`(n)`,
/// with id [`domain_id`]`(n)`).
pub async fn seed_events(
    store: &Store,
    domains: usize,
    mut events_of: impl FnMut(usize) -> anyhow::Result<Vec<CustomDomainEvent>>,
    views: bool,
) -> anyhow::Result<usize> {
    store.migrate().await?;
    let mut written = 0;
    let mut rows: Vec<Row> = Vec::new();
    let mut names: Vec<(String, String)> = Vec::new();
    let mut domain_views: Vec<DomainView> = Vec::new();
    let mut certificates: Vec<CertificateView> = Vec::new();
    for n in 0..domains {
        let id = domain_id(n);
        let events = events_of(n)?;
        rows.extend(rows_of(&id, &events)?);
        if views {
            let numbered = || (1u64..).zip(events.iter());
            let view = DomainView::fold(&id, numbered())
                .ok_or_else(|| anyhow::anyhow!("domain {n}'s events do not fold into a view"))?;
            domain_views.push(view);
            // The current certificate: the last one issued.
            if let Some(certificate) = numbered()
                .filter_map(|(sequence, event)| CertificateView::from_event(&id, sequence, event))
                .last()
            {
                certificates.push(certificate);
            }
        }
        names.push((domain_name(n), id));
        if rows.len() < 30_000 && n + 1 < domains {
            continue;
        }
        insert(store, &rows, &names).await?;
        if views {
            store
                .write_projection(ProjectionWrite {
                    views: &domain_views,
                    certificates: &certificates,
                    ..ProjectionWrite::default()
                })
                .await?;
            domain_views.clear();
            certificates.clear();
        }
        written += rows.len();
        rows.clear();
        names.clear();
    }
    if views {
        let (last, _) = store.feed_extent().await?;
        store
            .write_projection(ProjectionWrite {
                checkpoint: Some((DOMAIN_VIEWS, last)),
                ..ProjectionWrite::default()
            })
            .await?;
    }
    Ok(written)
}

/// Inserts event `rows` and name reservations `names` (name, domain id) in one transaction.
pub async fn insert(store: &Store, rows: &[Row], names: &[(String, String)]) -> anyhow::Result<()> {
    const ROWS_PER_STATEMENT: usize = 100;
    let reserved_at = Utc::now().format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
    macro_rules! insert_all {
        ($pool:expr, $postgres:expr) => {{
            let mut tx = $pool.begin().await?;
            for chunk in rows.chunks(ROWS_PER_STATEMENT) {
                let sql = insert_sql(chunk.len(), $postgres);
                let mut query = sqlx::query(&sql);
                for (id, sequence, kind, version, payload, metadata) in chunk {
                    query = query
                        .bind(id)
                        .bind(sequence)
                        .bind(*kind)
                        .bind(version)
                        .bind(payload)
                        .bind(metadata);
                }
                query.execute(&mut *tx).await?;
            }
            for chunk in names.chunks(ROWS_PER_STATEMENT) {
                let values: Vec<String> = (0..chunk.len())
                    .map(|r| format!("(${}, ${}, ${})", r * 3 + 1, r * 3 + 2, r * 3 + 3))
                    .collect();
                let sql = format!(
                    "INSERT INTO domain_names (domain_name, domain_id, reserved_at) VALUES {}",
                    values.join(",")
                );
                let mut query = sqlx::query(&sql);
                for (name, id) in chunk {
                    query = query.bind(name).bind(id).bind(&reserved_at);
                }
                query.execute(&mut *tx).await?;
            }
            tx.commit().await?;
        }};
    }
    match store {
        Store::Postgres(pool) => insert_all!(pool, true),
        Store::Sqlite(pool) => insert_all!(pool, false),
    }
    Ok(())
}

/// Closes the store's pool, so the service finds the database to itself.
pub async fn close(store: Store) {
    match store {
        Store::Postgres(pool) => pool.close().await,
        Store::Sqlite(pool) => pool.close().await,
    }
}
