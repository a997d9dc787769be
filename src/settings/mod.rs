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

mod layers;
mod values;

use layers::{ConfigFile, Environment};
use values::{duration, parse, show};
pub use values::{parse_duration, redact_url_password};

/// Let's Encrypt's staging directory: the default, so that a misconfigured first run cannot burn
/// production rate limits.
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

/// The address of one of the delegation zone's own nameservers (`ns1.acme.example=192.0.2.53`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameserverAddress {
    /// The nameserver's host name, normalised like a domain name (no final dot).
    pub name: String,
    /// One of its addresses: an A record for IPv4, AAAA for IPv6.
    pub address: std::net::IpAddr,
}

impl std::fmt::Display for NameserverAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.name, self.address)
    }
}

/// What a secret prints and serializes as.
const REDACTED: &str = "<redacted>";

/// A secret value that never prints itself: its `Debug` and its serialized form are
/// `<redacted>`. Read from a setting, it is trimmed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that must compare or use it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(REDACTED)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Never a custom error: a refused secret is then never shown (see `SettingsError`).
        String::deserialize(deserializer).map(|text| Secret::new(text.trim()))
    }
}

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
}

/// One further CA (`ACME_FALLBACK_ISSUERS`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerSettings {
    /// Its ACME directory URL.
    pub directory: String,
    /// Contact e-mail for its account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<String>,
    /// Extra root certificate (PEM) to trust for its HTTPS; `ACME_CA_BUNDLE`'s when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<PathBuf>,
    /// The key id of its External Account Binding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eab_kid: Option<String>,
    /// The HMAC key of its External Account Binding (base64url).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eab_hmac_key: Option<Secret>,
}

impl IssuerSettings {
    /// Its External Account Binding (key id, HMAC key bytes), when both are set.
    pub fn external_account_binding(&self) -> Option<(String, Vec<u8>)> {
        let kid = self.eab_kid.clone()?;
        let key = decode_eab_key(self.eab_hmac_key.as_ref()?.expose())?;
        Some((kid, key))
    }

    /// What is wrong with it, if anything.
    fn problem(&self) -> Option<String> {
        if !(self.directory.starts_with("https://") || self.directory.starts_with("http://")) {
            return Some(format!(
                "directory {:?} is not an http(s) URL",
                self.directory
            ));
        }
        if let Some(bundle) = self.ca_bundle.as_ref().filter(|path| !path.is_file()) {
            return Some(format!("ca_bundle {} is no such file", bundle.display()));
        }
        match (&self.eab_kid, &self.eab_hmac_key) {
            (Some(_), None) | (None, Some(_)) => {
                Some("External Account Binding needs both eab_kid and eab_hmac_key".into())
            }
            (Some(_), Some(key)) if decode_eab_key(key.expose()).is_none() => {
                Some("eab_hmac_key is not base64url".into())
            }
            _ => None,
        }
    }
}

/// A budget kept for the CA: so many units per window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Units per window.
    pub limit: u32,
    /// The sliding window.
    pub window: Duration,
}

impl Budget {
    /// The window as a chrono duration.
    pub fn chrono_window(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.window).unwrap_or_else(|_| chrono::Duration::days(1))
    }
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
            poll_interval: Duration::from_secs(10),
            poll_timeout: Duration::from_secs(300),
            verification_record_prefix: "_acme-challenge".to_owned(),
            auth_token: None,
            read_only_tokens: Vec::new(),
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
        match (&settings.acme_eab_kid, &settings.acme_eab_hmac_key) {
            (Some(_), None) | (None, Some(_)) => {
                return Err(SettingsError {
                    name: if settings.acme_eab_kid.is_some() {
                        "ACME_EAB_HMAC_KEY".into()
                    } else {
                        "ACME_EAB_KID".into()
                    },
                    value: String::new(),
                    reason: "External Account Binding needs both ACME_EAB_KID and \
                             ACME_EAB_HMAC_KEY"
                        .into(),
                })
            }
            (Some(_), Some(key)) if decode_eab_key(key.expose()).is_none() => {
                return Err(SettingsError {
                    name: "ACME_EAB_HMAC_KEY".into(),
                    value: REDACTED.into(),
                    reason: "not base64url (the key as the CA handed it out)".into(),
                })
            }
            _ => {}
        }
        for (place, issuer) in settings.acme_fallback_issuers.iter().enumerate() {
            if let Some(problem) = issuer.problem() {
                return Err(SettingsError {
                    name: "ACME_FALLBACK_ISSUERS".into(),
                    value: format!("[{place}]"),
                    reason: problem,
                });
            }
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
        if settings.delegation_zone.is_some() && settings.delegation_nameservers.is_empty() {
            return Err(SettingsError {
                name: "DELEGATION_NAMESERVERS".into(),
                value: String::new(),
                reason: "DELEGATION_ZONE needs the names of its nameservers (the replicas the \
                         parent zone delegates it to) for its SOA and NS answers"
                    .into(),
            });
        }
        if let Some(problem) = settings.nameserver_address_problem() {
            return Err(problem);
        }
        Ok(settings)
    }

    /// What is wrong with `DELEGATION_NAMESERVER_ADDRESSES`, if anything: an address for a
    /// name that is not among `DELEGATION_NAMESERVERS` or not inside the zone (the zone could
    /// not answer for it), or an in-zone nameserver without an address (a lame delegation:
    /// the parent's glue names an address the zone itself denies).
    fn nameserver_address_problem(&self) -> Option<SettingsError> {
        let refusal = |value: String, reason: String| SettingsError {
            name: "DELEGATION_NAMESERVER_ADDRESSES".into(),
            value,
            reason,
        };
        let Some(zone) = self.delegation_zone.as_deref() else {
            return (!self.delegation_nameserver_addresses.is_empty()).then(|| {
                refusal(
                    String::new(),
                    "addresses of nameservers need a DELEGATION_ZONE".into(),
                )
            });
        };
        let in_zone = |name: &str| name == zone || name.ends_with(&format!(".{zone}"));
        for given in &self.delegation_nameserver_addresses {
            if !self.delegation_nameservers.contains(&given.name) {
                return Some(refusal(
                    given.to_string(),
                    format!("{} is not among DELEGATION_NAMESERVERS", given.name),
                ));
            }
            if !in_zone(&given.name) {
                return Some(refusal(
                    given.to_string(),
                    format!(
                        "{} is not inside {zone}: its addresses belong in its own zone",
                        given.name
                    ),
                ));
            }
        }
        let without_address = self.delegation_nameservers.iter().find(|name| {
            in_zone(name)
                && !self
                    .delegation_nameserver_addresses
                    .iter()
                    .any(|given| &given.name == *name)
        })?;
        Some(refusal(
            String::new(),
            format!(
                "{without_address} (in DELEGATION_NAMESERVERS) is inside {zone}, which must \
                 answer its address: give it as {without_address}=<ip>"
            ),
        ))
    }

    /// The External Account Binding (key id, HMAC key bytes), when both are set.
    pub fn external_account_binding(&self) -> Option<(String, Vec<u8>)> {
        let kid = self.acme_eab_kid.clone()?;
        let key = decode_eab_key(self.acme_eab_hmac_key.as_ref()?.expose())?;
        Some((kid, key))
    }

    /// The delegation zone, when delegated validation is on.
    pub fn delegation(&self) -> Option<crate::domain::delegation::DelegationZone> {
        // Parsed when read (`parse::dns_zone`), so it parses again.
        let zone = self.delegation_zone.as_deref()?;
        crate::domain::delegation::DelegationZone::parse(zone).ok()
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

/// An EAB HMAC key as CAs hand it out: base64url, with or without padding.
fn decode_eab_key(text: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let unpadded = text.trim().trim_end_matches('=');
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(unpadded)
        .ok()
        .filter(|key| !key.is_empty())
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
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_match_the_source_system() {
        let settings = Settings::from_map(&HashMap::new()).expect("defaults are valid");
        assert_eq!(settings.poll_interval, Duration::from_secs(10));
        assert_eq!(settings.poll_timeout, Duration::from_secs(300));
        assert_eq!(settings.server_addr.to_string(), "127.0.0.1:8080");
        assert!(!settings.uses_postgres());
    }

    #[test]
    fn durations_and_nameservers_are_parsed() {
        let settings = Settings::from_map(&vars(&[
            ("POLL_INTERVAL", "250ms"),
            ("POLL_TIMEOUT", "2m"),
            ("DNS_NAMESERVERS", "127.0.0.1:8053, 10.0.0.1"),
        ]))
        .expect("valid");
        assert_eq!(settings.poll_interval, Duration::from_millis(250));
        assert_eq!(settings.poll_timeout, Duration::from_secs(120));
        assert_eq!(settings.dns_nameservers.len(), 2);
        assert_eq!(settings.dns_nameservers[1].port(), 53);
    }

    #[test]
    fn an_external_account_binding_needs_both_halves_and_a_base64url_key() {
        let half = Settings::from_map(&vars(&[("ACME_EAB_KID", "kid-1")])).expect_err("half");
        assert_eq!(half.name, "ACME_EAB_HMAC_KEY");
        let other_half =
            Settings::from_map(&vars(&[("ACME_EAB_HMAC_KEY", "c2VjcmV0")])).expect_err("half");
        assert_eq!(other_half.name, "ACME_EAB_KID");
        let garbled = Settings::from_map(&vars(&[
            ("ACME_EAB_KID", "kid-1"),
            ("ACME_EAB_HMAC_KEY", "not base64!"),
        ]))
        .expect_err("garbled");
        assert_eq!(garbled.name, "ACME_EAB_HMAC_KEY");
        assert!(
            !garbled.to_string().contains("not base64!"),
            "a secret is never shown"
        );
        let both = Settings::from_map(&vars(&[
            ("ACME_EAB_KID", "kid-1"),
            ("ACME_EAB_HMAC_KEY", "c2VjcmV0LWtleQ"),
        ]))
        .expect("both");
        let (kid, key) = both.external_account_binding().expect("a binding");
        assert_eq!(
            (kid.as_str(), key.as_slice()),
            ("kid-1", b"secret-key".as_slice())
        );
    }

    #[test]
    fn a_webhook_timeout_as_long_as_the_lease_is_refused() {
        let refused =
            Settings::from_map(&vars(&[("LEASE_TTL", "10s"), ("WEBHOOK_TIMEOUT", "10s")]))
                .expect_err("refused");
        assert_eq!(refused.name, "WEBHOOK_TIMEOUT");
        assert!(refused.reason.contains("LEASE_TTL"), "{refused}");
        let schedule =
            Settings::from_map(&vars(&[("WEBHOOK_RETRY_SCHEDULE", "1s,5m")])).expect("a schedule");
        assert_eq!(
            schedule.webhook_retry_schedule,
            [Duration::from_secs(1), Duration::from_secs(300)]
        );
    }

    #[test]
    fn a_bad_setting_names_the_variable() {
        let error = Settings::from_map(&vars(&[("POLL_TIMEOUT", "soon")])).expect_err("invalid");
        assert_eq!(error.name, "POLL_TIMEOUT");
        assert!(error.to_string().contains("POLL_TIMEOUT"));
    }

    #[test]
    fn the_feed_poll_interval_is_parsed_and_zero_is_refused() {
        let settings = Settings::from_map(&vars(&[("FEED_POLL_INTERVAL", "1h")])).expect("valid");
        assert_eq!(settings.feed_poll_interval, Duration::from_secs(3600));
        assert_eq!(
            Settings::default().feed_poll_interval,
            Duration::from_secs(1)
        );
        let error =
            Settings::from_map(&vars(&[("FEED_POLL_INTERVAL", "0s")])).expect_err("invalid");
        assert_eq!(error.name, "FEED_POLL_INTERVAL");
    }

    #[test]
    fn the_store_timeout_is_parsed_printed_and_zero_is_refused() {
        assert_eq!(Settings::default().store_timeout, Duration::from_secs(2));
        let settings = Settings::from_map(&vars(&[("STORE_TIMEOUT", "1500ms")])).expect("valid");
        assert_eq!(settings.store_timeout, Duration::from_millis(1500));
        assert!(
            settings
                .to_redacted_toml()
                .contains("store_timeout = \"1500ms\"\n"),
            "{}",
            settings.to_redacted_toml()
        );
        let error = Settings::from_map(&vars(&[("STORE_TIMEOUT", "0")])).expect_err("invalid");
        assert_eq!(error.name, "STORE_TIMEOUT");
        assert!(error.to_string().contains("STORE_TIMEOUT"), "{error}");
    }

    #[test]
    fn previous_key_encryption_keys_are_listed_and_never_printed() {
        let settings = Settings::from_map(&vars(&[(
            "PREVIOUS_KEY_ENCRYPTION_KEYS",
            " old-key-one , ,old-key-two",
        )]))
        .expect("valid");
        assert_eq!(settings.previous_key_encryption_keys.len(), 2);
        assert_eq!(
            settings.previous_key_encryption_keys[1].expose(),
            "old-key-two"
        );
        let printed = format!("{settings:?}{}", settings.to_redacted_toml());
        assert!(!printed.contains("old-key"), "{printed}");
        assert!(
            settings
                .to_redacted_toml()
                .contains("previous_key_encryption_keys = [\"<redacted>\", \"<redacted>\"]"),
            "{}",
            settings.to_redacted_toml()
        );
    }

    /// A TOML file of its own, removed when dropped.
    struct ConfigFileFixture(PathBuf);

    impl ConfigFileFixture {
        fn new(name: &str, text: &str) -> Self {
            let path = std::env::temp_dir().join(format!(
                "dns-handling-settings-{name}-{}.toml",
                std::process::id()
            ));
            std::fs::write(&path, text).expect("write the file");
            Self(path)
        }

        fn load(&self, environment: &[(&str, &str)]) -> Result<Settings, SettingsError> {
            Settings::load(Some(&self.0), &vars(environment))
        }
    }

    impl Drop for ConfigFileFixture {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn the_file_is_under_the_environment_and_its_numbers_read_as_text() {
        let file = ConfigFileFixture::new(
            "layers",
            r#"
poll_interval = 5
poll_timeout = "1m"
server_workers = 3
acme_email = ""
dns_nameservers = ["10.0.0.53", "10.0.1.53:5353,10.0.2.53"]
replica_id = " pod-1 "
"#,
        );
        let settings = file
            .load(&[("POLL_TIMEOUT", "2m"), ("SERVER_WORKERS", " ")])
            .expect("valid");
        assert_eq!(settings.poll_interval, Duration::from_secs(5));
        assert_eq!(settings.poll_timeout, Duration::from_secs(120), "env wins");
        assert_eq!(
            settings.server_workers,
            Some(3),
            "a blank variable is unset"
        );
        assert_eq!(settings.acme_email, None, "a blank value is unset");
        assert_eq!(settings.dns_nameservers.len(), 3);
        assert_eq!(settings.replica_id.as_deref(), Some("pod-1"));
    }

    #[test]
    fn the_file_refuses_a_key_that_is_no_setting_and_names_it() {
        let file = ConfigFileFixture::new("unknown", "poll_intervall = \"1s\"\n");
        let error = file.load(&[]).expect_err("refused");
        assert_eq!(error.name, "CONFIG_FILE");
        assert!(error.reason.contains("\"poll_intervall\""), "{error}");
        let file = ConfigFileFixture::new("config-file", "config_file = \"x.toml\"\n");
        assert_eq!(file.load(&[]).expect_err("refused").name, "CONFIG_FILE");
        let missing = Settings::load(Some(Path::new("/nonexistent.toml")), &HashMap::new());
        assert!(missing
            .expect_err("refused")
            .reason
            .starts_with("cannot read it"));
    }

    #[test]
    fn a_refusal_shows_the_value_but_never_a_secret() {
        let error = Settings::from_map(&vars(&[("SERVER_WORKERS", "many")])).expect_err("bad");
        assert_eq!(
            error.to_string(),
            "invalid setting SERVER_WORKERS=\"many\": expected a whole number"
        );
        let error = Settings::from_map(&vars(&[("READ_ONLY_TOKENS", "auditor-secret")]))
            .expect_err("needs AUTH_TOKEN");
        assert!(!error.to_string().contains("auditor-secret"), "{error}");
        let file = ConfigFileFixture::new("secret", "auth_token = [\"file-secret\"]\n");
        let error = file.load(&[]).expect_err("a list is no token");
        assert_eq!(error.name, "AUTH_TOKEN");
        assert!(!error.to_string().contains("file-secret"), "{error}");
    }

    #[test]
    fn the_printed_configuration_reads_back_as_itself() {
        let settings = Settings::from_map(&vars(&[
            ("DATABASE_URL", "postgres://svc:hunter2@db/certs"),
            ("DNS_NAMESERVERS", "10.0.0.53"),
            ("AUTH_TOKEN", "admin"),
            ("READ_ONLY_TOKENS", "a,b"),
            ("SERVER_WORKERS", "4"),
            ("LOG_FORMAT", "json"),
            ("CERT_KEY_TYPE", "ecdsa-p256"),
            ("LEASE_TTL", "1h"),
        ]))
        .expect("valid");
        let printed = settings.to_redacted_toml();
        assert_eq!(printed.lines().count(), setting_names().len(), "{printed}");
        assert!(printed.contains("# acme_email is not set\n"), "{printed}");
        assert!(
            printed.contains("dns_nameservers = [\"10.0.0.53:53\"]\n"),
            "{printed}"
        );
        assert!(printed.contains("lease_ttl = \"3600000ms\"\n"), "{printed}");
        let file = ConfigFileFixture::new("printed", &printed);
        let again = file.load(&[]).expect("the printed file reads");
        assert_eq!(again.to_redacted_toml(), printed);
    }

    #[test]
    fn in_zone_nameservers_need_their_addresses_and_only_they_may_have_some() {
        let zone = [
            ("DELEGATION_ZONE", "acme.example"),
            ("DELEGATION_NAMESERVERS", "ns1.acme.example,ns2.example"),
        ];
        let with = |more: &[(&'static str, &'static str)]| {
            let mut all = zone.to_vec();
            all.extend_from_slice(more);
            Settings::from_map(&vars(&all))
        };
        let lame = with(&[]).expect_err("ns1.acme.example has no address");
        assert_eq!(lame.name, "DELEGATION_NAMESERVER_ADDRESSES");
        assert!(lame.reason.contains("ns1.acme.example"), "{lame}");
        let settings = with(&[(
            "DELEGATION_NAMESERVER_ADDRESSES",
            "NS1.acme.example.=192.0.2.53, ns1.acme.example=2001:db8::53",
        )])
        .expect("valid");
        let given: Vec<String> = settings
            .delegation_nameserver_addresses
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            given,
            [
                "ns1.acme.example=192.0.2.53",
                "ns1.acme.example=2001:db8::53"
            ]
        );
        let outside = with(&[(
            "DELEGATION_NAMESERVER_ADDRESSES",
            "ns1.acme.example=192.0.2.53,ns2.example=192.0.2.54",
        )])
        .expect_err("ns2.example is not in the zone");
        assert!(outside.reason.contains("not inside"), "{outside}");
        let unknown = with(&[(
            "DELEGATION_NAMESERVER_ADDRESSES",
            "ns1.acme.example=not-an-ip",
        )]);
        assert!(unknown.is_err());
        assert_eq!(settings.dns_tcp_max_connections, 256);
        assert_eq!(settings.dns_tcp_max_connections_per_address, 16);
        let zero = Settings::from_map(&vars(&[("DNS_TCP_MAX_CONNECTIONS", "0")]));
        assert_eq!(
            zero.expect_err("no connections").name,
            "DNS_TCP_MAX_CONNECTIONS"
        );
    }

    #[test]
    fn the_auth_token_does_not_print_itself() {
        let settings = Settings::from_map(&vars(&[("AUTH_TOKEN", "hunter2")])).expect("valid");
        assert!(!format!("{settings:?}").contains("hunter2"));
    }
}
