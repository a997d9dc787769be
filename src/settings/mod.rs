//! Settings: one typed struct, each field one setting with its default in code, layered by
//! figment: the defaults, under a TOML file (`--config`), under environment variables.
//!
//! A field's name is the setting's key in the file and, in upper case, its environment
//! variable. Both layers hand the field's parser the same text (numbers and booleans in the file
//! become their text), so `POLL_INTERVAL=5s` and `poll_interval = "5s"` mean one thing. A blank
//! value is no value, in the file as in the environment.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::error::Kind;
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use dns_handling_events::CertificateKeyType;

mod acme;
mod delegation;
mod edge;
mod health;
mod layers;
mod proxies;
mod secret;
mod tenants;
mod values;

pub use acme::{Budget, IssuerSettings, LETS_ENCRYPT_STAGING};
pub use delegation::NameserverAddress;
pub use edge::EdgeToken;
use layers::{ConfigFile, Environment};
pub use secret::Secret;
use secret::REDACTED;
use values::{duration, parse, show};
pub use values::{parse_duration, redact_url_password};

/// Every setting of the service. Serializing it gives the redacted form `dns-handling config`
/// prints: secrets serialize as `<redacted>`, the database URL without its password.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// `postgres://…` for PostgreSQL, anything else (`sqlite:…` or a path) for SQLite.
    #[serde(serialize_with = "show::database_url")]
    pub database_url: String,
    /// Address the HTTP server binds (port 0 picks a free one).
    #[serde(deserialize_with = "parse::server_addr")]
    pub server_addr: SocketAddr,
    /// The ACME directory URL.
    #[serde(deserialize_with = "parse::acme_directory")]
    pub acme_directory: String,
    /// Contact e-mail for the ACME account.
    pub acme_email: Option<String>,
    /// Further CAs, tried in this order when the first (`ACME_DIRECTORY`) is unreachable or
    /// refuses for now: each with its `directory`, and optionally `contact`, `ca_bundle`,
    /// `eab_kid` and `eab_hmac_key`, one account each. A TOML array of tables in the file;
    /// the same as a JSON array in the environment.
    #[serde(deserialize_with = "parse::issuers")]
    pub acme_fallback_issuers: Vec<IssuerSettings>,
    /// The issuer domain names `ACME_DIRECTORY`'s CA recognises in CAA records (`issue
    /// "letsencrypt.org"`), when its directory's `meta.caaIdentities` lists none (Pebble's does
    /// not); set, it is used in place of the directory's.
    #[serde(deserialize_with = "parse::host_names")]
    pub acme_caa_identities: Vec<String>,
    /// What CAA records (RFC 8659) do before an order: `enforce` (the order goes to the first
    /// CA they permit, and is refused with `409 caa_forbids` when they permit none), `warn`
    /// (ordered anyway, logged and counted) or `off` (not looked up). A failed lookup never
    /// blocks an order.
    #[serde(deserialize_with = "parse::caa_check")]
    pub caa_check: CaaCheck,
    /// The ACME profile orders ask for, where the CA lists profiles (Let's Encrypt: `classic`,
    /// `tlsserver`, `shortlived`); checked against the CA's directory at start.
    #[serde(deserialize_with = "parse::trimmed")]
    pub acme_profile: Option<String>,
    /// The key id of an External Account Binding, for CAs that require one (ZeroSSL, Google
    /// Trust Services, SSL.com); with `ACME_EAB_HMAC_KEY`.
    #[serde(deserialize_with = "parse::trimmed")]
    pub acme_eab_kid: Option<String>,
    /// The HMAC key of the External Account Binding, base64url as CAs hand it out.
    pub acme_eab_hmac_key: Option<Secret>,
    /// New orders the account may ask for per window, all replicas together (`300/3h`, Let's
    /// Encrypt's limit; `0/1h` asks for none). ARI renewals, which Let's Encrypt exempts, are
    /// not counted.
    #[serde(deserialize_with = "parse::budget", serialize_with = "show::budget")]
    pub acme_new_order_budget: Budget,
    /// Failed validations one name may have per window before its orders wait (`5/1h`, Let's
    /// Encrypt's limit).
    #[serde(deserialize_with = "parse::budget", serialize_with = "show::budget")]
    pub acme_failed_validation_budget: Budget,
    /// Extra root certificate (PEM) to trust for the ACME server's HTTPS (Pebble needs one).
    #[serde(deserialize_with = "parse::existing_file")]
    pub acme_ca_bundle: Option<PathBuf>,
    /// Name servers to poll (`ip:port`); the system's resolvers when empty.
    #[serde(deserialize_with = "parse::nameservers")]
    pub dns_nameservers: Vec<SocketAddr>,
    /// How long one DNS query may take.
    #[serde(with = "duration")]
    pub dns_timeout: Duration,
    /// How long a request waits for a database connection before it is answered `503`.
    #[serde(with = "duration")]
    pub store_timeout: Duration,
    /// The most connections one replica holds to PostgreSQL (every replica's count against the
    /// server's `max_connections`).
    #[serde(deserialize_with = "parse::positive_count")]
    pub store_connections: usize,
    /// How often a pending order's TXT record is looked up.
    #[serde(with = "duration")]
    pub poll_interval: Duration,
    /// How long a pending order waits for its TXT record.
    #[serde(with = "duration")]
    pub poll_timeout: Duration,
    /// The label in front of the domain where the verification token is published.
    #[serde(deserialize_with = "parse::record_prefix")]
    pub verification_record_prefix: String,
    /// The admin bearer token, required on every request but the health checks and the API
    /// description (`/openapi.json`, `/docs/`), when set.
    pub auth_token: Option<Secret>,
    /// Read-only (auditor) bearer tokens: may read, get `403` on writes and on private keys.
    #[serde(deserialize_with = "parse::secrets")]
    pub read_only_tokens: Vec<Secret>,
    /// The platform's TLS edges, `name=token` each (`edge1=…,edge2=…`): an edge's token may
    /// use the edge routes (`/edge/…`) and nothing else; its key reads are recorded under its
    /// name. Needs `AUTH_TOKEN`.
    #[serde(
        deserialize_with = "parse::edge_tokens",
        serialize_with = "edge::show_edge_tokens"
    )]
    pub edge_tokens: Vec<EdgeToken>,
    /// Certificates (chain and key) the edge routes keep in memory in front of the store, the
    /// most used ones kept.
    #[serde(deserialize_with = "parse::positive_count")]
    pub edge_cache_entries: usize,
    /// The key-encryption key for private keys at rest (standard base64 of 32 bytes).
    pub key_encryption_key: Option<Secret>,
    /// A file holding the key-encryption key.
    pub key_encryption_key_file: Option<PathBuf>,
    /// Keys values may still be sealed under after a rotation: they open values, never seal.
    #[serde(deserialize_with = "parse::secrets")]
    pub previous_key_encryption_keys: Vec<Secret>,
    /// `tracing` filter directive, e.g. `info` or `dns_handling=debug`.
    pub log_level: String,
    /// How log lines are written.
    #[serde(deserialize_with = "parse::log_format")]
    pub log_format: LogFormat,
    /// The kind of key certificates are issued for.
    #[serde(deserialize_with = "parse::cert_key_type")]
    pub cert_key_type: CertificateKeyType,
    /// How long a replica's lease on a pending order lasts without renewal (PostgreSQL mode).
    #[serde(with = "duration")]
    pub lease_ttl: Duration,
    /// This replica's stable name (e.g. its pod name): a restarted replica with the same name
    /// takes its leases back at once. Unset, each start gets a random one and a restarted
    /// replica's orders resume once their leases expire. Never give two live replicas one name.
    #[serde(deserialize_with = "parse::trimmed")]
    pub replica_id: Option<String>,
    /// HTTP worker threads; actix's default (one per core) when unset.
    #[serde(deserialize_with = "parse::server_workers")]
    pub server_workers: Option<usize>,
    /// How often a feed stream that follows looks for new events when no commit notification
    /// woke it (see `commit_signal`).
    #[serde(with = "duration")]
    pub feed_poll_interval: Duration,
    /// The Ed25519 key checkpoints of the log are signed with (standard base64 of its 32-byte
    /// seed); never stored in the database.
    pub audit_signing_key: Option<Secret>,
    /// A file holding the audit signing key.
    pub audit_signing_key_file: Option<PathBuf>,
    /// How often a signed checkpoint of the log is made, when events were added.
    #[serde(with = "duration")]
    pub audit_checkpoint_interval: Duration,
    /// How much lifetime a certificate has left when it is renewed (without ARI); unset, a
    /// third of the certificate's own lifetime (30 days of 90, 2 of 6).
    #[serde(
        deserialize_with = "parse::optional_duration",
        serialize_with = "show::optional_duration"
    )]
    pub renew_before: Option<Duration>,
    /// The waits after the 1st, 2nd, … failed renewal attempt in a row; the last repeats.
    #[serde(
        deserialize_with = "parse::durations",
        serialize_with = "show::durations"
    )]
    pub renewal_retry_schedule: Vec<Duration>,
    /// How often the renewal scheduler looks for certificates due, expired, or without a
    /// schedule yet.
    #[serde(with = "duration")]
    pub renewal_check_interval: Duration,
    /// How long a renewal order waits for its TXT records: as long as a pending authorization
    /// stays valid at Let's Encrypt (7 days), since a person may have to publish them.
    #[serde(with = "duration")]
    pub renewal_txt_timeout: Duration,
    /// The zone this service serves itself for delegated validation (e.g.
    /// `acme.platform.example`): owners point `_acme-challenge.<name>` at it with one CNAME and
    /// the service publishes every challenge there. Unset, delegation is off.
    #[serde(deserialize_with = "parse::dns_zone")]
    pub delegation_zone: Option<String>,
    /// Where the delegation zone's DNS server listens, UDP and TCP (only with
    /// `DELEGATION_ZONE`).
    #[serde(deserialize_with = "parse::server_addr")]
    pub dns_listen_addr: SocketAddr,
    /// The host names of the delegation zone's nameservers (this service's replicas, as the
    /// parent zone's NS records name them), for the zone's SOA and NS answers.
    #[serde(deserialize_with = "parse::host_names")]
    pub delegation_nameservers: Vec<String>,
    /// The addresses of those nameservers whose names are inside `DELEGATION_ZONE` (such as
    /// `ns1.acme.platform.example`), `name=ip` each, a name once per address (IPv4 and IPv6
    /// alike): the zone answers their A and AAAA records itself, as the glue in its parent
    /// says, rather than NXDOMAIN. Every in-zone name of `DELEGATION_NAMESERVERS` needs one.
    #[serde(
        deserialize_with = "parse::nameserver_addresses",
        serialize_with = "show::nameserver_addresses"
    )]
    pub delegation_nameserver_addresses: Vec<NameserverAddress>,
    /// TCP connections the delegation zone's DNS server holds at once, all clients together;
    /// a connection over it is closed at once. Lowered at start to half the process's limit
    /// of open files (after raising that to its hard limit), so that the rest stays for the
    /// API, the database and webhook sends.
    #[serde(deserialize_with = "parse::positive_count")]
    pub dns_tcp_max_connections: usize,
    /// TCP connections the delegation zone's DNS server holds at once from one client (an
    /// IPv4 address, an IPv6 /64).
    #[serde(deserialize_with = "parse::positive_count")]
    pub dns_tcp_max_connections_per_address: usize,
    /// The waits after the 1st, 2nd, … failed delivery of a webhook message; after the last,
    /// the message is marked failed and the endpoint moves on. Each wait varies by up to a
    /// tenth either way, so endpoints that failed together are not retried together.
    #[serde(
        deserialize_with = "parse::durations",
        serialize_with = "show::durations"
    )]
    pub webhook_retry_schedule: Vec<Duration>,
    /// Allow webhook URLs that resolve to loopback, private, link-local or metadata addresses
    /// (for tests and closed networks; never on a platform whose users add endpoints).
    #[serde(deserialize_with = "parse::boolean")]
    pub webhook_allow_private_targets: bool,
    /// How long one webhook delivery may take before it counts as failed.
    #[serde(with = "duration")]
    pub webhook_timeout: Duration,
    /// How long a rotated webhook secret keeps signing beside its replacement.
    #[serde(with = "duration")]
    pub webhook_secret_overlap: Duration,
    /// Where users point their names: host names they CNAME to and addresses or prefixes their
    /// A/AAAA records may hold (`edge.platform.example,203.0.113.0/24,2001:db8::/32`). Unset,
    /// routing is not checked.
    #[serde(
        deserialize_with = "health::parse_routing_targets",
        serialize_with = "health::show_routing_targets"
    )]
    pub routing_targets: crate::domain::health::RoutingTargets,
    /// How often every `active`, `expired` and `verified` domain's DNS is checked (routing,
    /// delegation, CAA), the checks spread evenly over the interval.
    #[serde(with = "duration")]
    pub health_check_interval: Duration,
    /// How many domains are checked at once.
    #[serde(deserialize_with = "parse::positive_count")]
    pub health_check_concurrency: usize,
    /// How long every name of an `active` or `expired` domain must route elsewhere or nowhere,
    /// check after check, before it is `moved` (no renewal ordered).
    #[serde(with = "duration")]
    pub moved_after: Duration,
    /// How long a domain stays `moved` before it is removed, its certificate revoked
    /// (`cessationOfOperation`). Unset, a moved domain is never removed.
    #[serde(
        deserialize_with = "parse::optional_duration",
        serialize_with = "show::optional_duration"
    )]
    pub moved_remove_after: Option<Duration>,
    /// How many live domains one tenant may hold; a registration over it is refused. No limit
    /// when unset.
    #[serde(deserialize_with = "tenants::domain_limit")]
    pub tenant_domain_limit: Option<u32>,
    /// The proxies in front of the service (addresses or prefixes): from one of them, a
    /// client's address is the right-most one of `X-Forwarded-For` that is not theirs. None by
    /// default: the address is the connection's peer.
    #[serde(
        deserialize_with = "proxies::trusted_proxies",
        serialize_with = "proxies::show"
    )]
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

/// What CAA records do before an order (`CAA_CHECK`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CaaCheck {
    /// Orders go only to a CA CAA permits; none permitted, the order is refused.
    #[default]
    Enforce,
    /// Orders go as without CAA; a CA it forbids is logged and counted.
    Warn,
    /// CAA is not looked up.
    Off,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event (the default).
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// A setting that could not be understood; names the variable.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting {name}={value:?}: {reason}")]
pub struct SettingsError {
    /// The environment variable (`CONFIG_FILE` for the file itself or a key it should not have).
    pub name: String,
    /// Its value.
    pub value: String,
    /// What is wrong with it.
    pub reason: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            database_url: "sqlite://dns-handling.db".to_owned(),
            server_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            acme_directory: LETS_ENCRYPT_STAGING.to_owned(),
            acme_email: None,
            acme_eab_kid: None,
            acme_profile: None,
            acme_caa_identities: Vec::new(),
            caa_check: CaaCheck::Enforce,
            acme_fallback_issuers: Vec::new(),
            acme_new_order_budget: Budget {
                limit: 300,
                window: Duration::from_secs(3 * 3600),
            },
            acme_failed_validation_budget: Budget {
                limit: 5,
                window: Duration::from_secs(3600),
            },
            acme_eab_hmac_key: None,
            acme_ca_bundle: None,
            dns_nameservers: Vec::new(),
            dns_timeout: Duration::from_secs(3),
            store_timeout: Duration::from_secs(2),
            store_connections: 16,
            poll_interval: Duration::from_secs(10),
            poll_timeout: Duration::from_secs(300),
            verification_record_prefix: "_acme-challenge".to_owned(),
            auth_token: None,
            read_only_tokens: Vec::new(),
            edge_tokens: Vec::new(),
            edge_cache_entries: 10_000,
            key_encryption_key: None,
            key_encryption_key_file: None,
            previous_key_encryption_keys: Vec::new(),
            log_level: "info".to_owned(),
            log_format: LogFormat::Text,
            cert_key_type: CertificateKeyType::Rsa2048,
            lease_ttl: Duration::from_secs(30),
            replica_id: None,
            server_workers: None,
            feed_poll_interval: Duration::from_secs(1),
            audit_signing_key: None,
            audit_signing_key_file: None,
            audit_checkpoint_interval: Duration::from_secs(60),
            renew_before: None,
            renewal_retry_schedule: crate::domain::renewal::RenewalPolicy::default().retry_schedule,
            renewal_check_interval: Duration::from_secs(60),
            renewal_txt_timeout: Duration::from_secs(7 * 86_400),
            delegation_zone: None,
            dns_listen_addr: SocketAddr::from(([0, 0, 0, 0], 53)),
            delegation_nameservers: Vec::new(),
            delegation_nameserver_addresses: Vec::new(),
            dns_tcp_max_connections: 256,
            dns_tcp_max_connections_per_address: 16,
            webhook_retry_schedule: [5, 300, 1800, 7200, 18_000, 36_000, 50_400, 72_000, 86_400]
                .into_iter()
                .map(Duration::from_secs)
                .collect(),
            webhook_allow_private_targets: false,
            webhook_timeout: Duration::from_secs(15),
            webhook_secret_overlap: Duration::from_secs(86_400),
            routing_targets: crate::domain::health::RoutingTargets::default(),
            health_check_interval: Duration::from_secs(health::DEFAULT_INTERVAL_SECS),
            health_check_concurrency: health::DEFAULT_CONCURRENCY,
            moved_after: Duration::from_secs(health::DEFAULT_MOVED_AFTER_SECS),
            moved_remove_after: None,
            tenant_domain_limit: None,
            trusted_proxies: Vec::new(),
        }
    }
}

impl Settings {
    /// Reads the settings from the process environment.
    pub fn from_env() -> Result<Settings, SettingsError> {
        Self::from_map(&std::env::vars().collect())
    }

    /// Reads the settings from a map of variables (the environment, or a test's own).
    pub fn from_map(vars: &HashMap<String, String>) -> Result<Settings, SettingsError> {
        Self::load(None, vars)
    }

    /// Reads the settings: the defaults, under the TOML file (when given), under the
    /// environment's variables.
    pub fn load(
        config_file: Option<&Path>,
        environment: &HashMap<String, String>,
    ) -> Result<Settings, SettingsError> {
        let mut figment = Figment::new();
        if let Some(path) = config_file {
            figment = figment.merge(ConfigFile::read(path)?);
        }
        let figment = figment.merge(Environment::new(environment));
        let settings: Settings = figment
            .extract()
            .map_err(|error| SettingsError::from_figment(error, &figment, config_file))?;
        if !settings.read_only_tokens.is_empty() && settings.auth_token.is_none() {
            return Err(SettingsError {
                name: "READ_ONLY_TOKENS".into(),
                value: REDACTED.into(),
                reason: "read-only tokens need an admin AUTH_TOKEN too, or every caller would be \
                         admin"
                    .into(),
            });
        }
        if let Some(problem) = settings.edge_problem() {
            return Err(problem);
        }
        if let Some(problem) = settings.acme_problem() {
            return Err(problem);
        }
        // A webhook driver takes its lease again right before a send: the send must end before
        // the lease can lapse, or a second replica could send beside it.
        if settings.webhook_timeout >= settings.lease_ttl {
            return Err(SettingsError {
                name: "WEBHOOK_TIMEOUT".into(),
                value: format!("{}ms", settings.webhook_timeout.as_millis()),
                reason: format!(
                    "must be under LEASE_TTL ({}ms), so that a delivery ends before its \
                     lease can pass to another replica",
                    settings.lease_ttl.as_millis()
                ),
            });
        }
        if let Some(problem) = settings.delegation_problem() {
            return Err(problem);
        }
        Ok(settings)
    }

    /// The effective configuration as TOML, secrets replaced by `"<redacted>"`: what
    /// `dns-handling config` prints, one line per setting in the struct's order.
    pub fn to_redacted_toml(&self) -> String {
        // Cannot fail: every field serializes to a string, an integer or a list of strings.
        let table = toml::Table::try_from(self).expect("the settings serialize to TOML");
        setting_names()
            .iter()
            .map(|name| match table.get(*name) {
                Some(value) => format!("{name} = {value}\n"),
                // TOML has no null: a setting without a value is written as a comment.
                None => format!("# {name} is not set\n"),
            })
            .collect()
    }

    /// True when the store is PostgreSQL.
    pub fn uses_postgres(&self) -> bool {
        is_postgres_url(&self.database_url)
    }
}

/// True when `database_url` names a PostgreSQL database (`postgres://…` or
/// `postgresql://…`); anything else is SQLite.
pub fn is_postgres_url(database_url: &str) -> bool {
    database_url.starts_with("postgres://") || database_url.starts_with("postgresql://")
}

/// The settings' names in lower case, in the struct's order. They are asked of the derived
/// `Deserialize`, which knows them, so that each setting is named once: as its field.
fn setting_names() -> &'static [&'static str] {
    /// A deserializer that only takes note of the fields a struct asks for.
    struct FieldNames<'a>(&'a mut &'static [&'static str]);

    impl<'de> Deserializer<'de> for FieldNames<'_> {
        type Error = de::value::Error;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(de::Error::custom("only the field names were wanted"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
            ignored_any
        }
    }

    let mut names: &'static [&'static str] = &[];
    // The error is the deserializer stopping once it has the names.
    let _ = Settings::deserialize(FieldNames(&mut names));
    names
}

#[cfg(test)]
mod tests;
