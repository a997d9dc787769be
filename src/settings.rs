//! Settings: one typed struct with defaults in code, overridden by a TOML file (`--config`),
//! overridden in turn by environment variables.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use dns_handling_events::CertificateKeyType;

/// Let's Encrypt's staging directory: the default, so that a misconfigured first run cannot burn
/// production rate limits.
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

/// A secret value that never prints itself.
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

/// Every setting of the service.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `postgres://…` for PostgreSQL, anything else (`sqlite:…` or a path) for SQLite.
    pub database_url: String,
    /// Address the HTTP server binds (port 0 picks a free one).
    pub server_addr: SocketAddr,
    /// The ACME directory URL.
    pub acme_directory: String,
    /// Contact e-mail for the ACME account.
    pub acme_email: Option<String>,
    /// Extra root certificate (PEM) to trust for the ACME server's HTTPS (Pebble needs one).
    pub acme_ca_bundle: Option<PathBuf>,
    /// Name servers to poll (`ip:port`); the system's resolvers when empty.
    pub dns_nameservers: Vec<SocketAddr>,
    /// How long one DNS query may take.
    pub dns_timeout: Duration,
    /// How long a request waits for a database connection before it is answered `503`.
    pub store_timeout: Duration,
    /// How often a pending order's TXT record is looked up.
    pub poll_interval: Duration,
    /// How long a pending order waits for its TXT record.
    pub poll_timeout: Duration,
    /// The label in front of the domain where the verification token is published.
    pub verification_record_prefix: String,
    /// The admin bearer token, required on every request but the health checks and the API
    /// description (`/openapi.json`, `/docs/`), when set.
    pub auth_token: Option<Secret>,
    /// Read-only (auditor) bearer tokens: may read, get `403` on writes and on private keys.
    pub read_only_tokens: Vec<Secret>,
    /// The key-encryption key for private keys at rest (standard base64 of 32 bytes).
    pub key_encryption_key: Option<Secret>,
    /// A file holding the key-encryption key.
    pub key_encryption_key_file: Option<PathBuf>,
    /// Keys values may still be sealed under after a rotation: they open values, never seal.
    pub previous_key_encryption_keys: Vec<Secret>,
    /// `tracing` filter directive, e.g. `info` or `dns_handling=debug`.
    pub log_level: String,
    /// How log lines are written.
    pub log_format: LogFormat,
    /// HTTP worker threads; actix's default (one per core) when unset.
    pub server_workers: Option<usize>,
    /// The kind of key certificates are issued for.
    pub cert_key_type: CertificateKeyType,
    /// How long a replica's lease on a pending order lasts without renewal (PostgreSQL mode).
    pub lease_ttl: Duration,
    /// This replica's stable name (e.g. its pod name): a restarted replica with the same name
    /// takes its leases back at once. Unset, each start gets a random one and a restarted
    /// replica's orders resume once their leases expire. Never give two live replicas one name.
    pub replica_id: Option<String>,
    /// How often a feed stream that follows looks for new events when no commit notification
    /// woke it (see `commit_signal`).
    pub feed_poll_interval: Duration,
    /// The Ed25519 key checkpoints of the log are signed with (standard base64 of its 32-byte
    /// seed); never stored in the database.
    pub audit_signing_key: Option<Secret>,
    /// A file holding the audit signing key.
    pub audit_signing_key_file: Option<PathBuf>,
    /// How often a signed checkpoint of the log is made, when events were added.
    pub audit_checkpoint_interval: Duration,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One human-readable line per event (the default).
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Every setting's name, as an environment variable; in a TOML file, the same in lower case.
pub const SETTING_NAMES: [&str; 27] = [
    "DATABASE_URL",
    "SERVER_ADDR",
    "ACME_DIRECTORY",
    "ACME_EMAIL",
    "ACME_CA_BUNDLE",
    "DNS_NAMESERVERS",
    "DNS_TIMEOUT",
    "STORE_TIMEOUT",
    "POLL_INTERVAL",
    "POLL_TIMEOUT",
    "VERIFICATION_RECORD_PREFIX",
    "AUTH_TOKEN",
    "READ_ONLY_TOKENS",
    "KEY_ENCRYPTION_KEY",
    "KEY_ENCRYPTION_KEY_FILE",
    "LOG_LEVEL",
    "LOG_FORMAT",
    "CERT_KEY_TYPE",
    "LEASE_TTL",
    "REPLICA_ID",
    "CONFIG_FILE",
    "SERVER_WORKERS",
    "FEED_POLL_INTERVAL",
    "PREVIOUS_KEY_ENCRYPTION_KEYS",
    "AUDIT_SIGNING_KEY",
    "AUDIT_SIGNING_KEY_FILE",
    "AUDIT_CHECKPOINT_INTERVAL",
];

/// A setting that could not be understood; names the variable.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting {name}={value:?}: {reason}")]
pub struct SettingsError {
    /// The environment variable.
    pub name: &'static str,
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
            server_workers: None,
            cert_key_type: CertificateKeyType::Rsa2048,
            lease_ttl: Duration::from_secs(30),
            replica_id: None,
            feed_poll_interval: Duration::from_secs(1),
            audit_signing_key: None,
            audit_signing_key_file: None,
            audit_checkpoint_interval: Duration::from_secs(60),
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
        let mut settings = Settings::default();
        let get = |name: &str| vars.get(name).filter(|value| !value.trim().is_empty());
        if let Some(value) = get("DATABASE_URL") {
            settings.database_url = value.clone();
        }
        if let Some(value) = get("SERVER_ADDR") {
            settings.server_addr = value
                .parse()
                .map_err(|e| invalid("SERVER_ADDR", value, format!("{e}; expected ip:port")))?;
        }
        if let Some(value) = get("ACME_DIRECTORY") {
            if !value.starts_with("https://") && !value.starts_with("http://") {
                return Err(invalid("ACME_DIRECTORY", value, "expected an http(s) URL"));
            }
            settings.acme_directory = value.clone();
        }
        settings.acme_email = get("ACME_EMAIL").cloned();
        if let Some(value) = get("ACME_CA_BUNDLE") {
            let path = PathBuf::from(value);
            if !path.is_file() {
                return Err(invalid("ACME_CA_BUNDLE", value, "no such file"));
            }
            settings.acme_ca_bundle = Some(path);
        }
        if let Some(value) = get("DNS_NAMESERVERS") {
            settings.dns_nameservers = parse_nameservers(value)
                .map_err(|reason| invalid("DNS_NAMESERVERS", value, reason))?;
        }
        for (name, slot) in [
            ("LEASE_TTL", &mut settings.lease_ttl),
            ("DNS_TIMEOUT", &mut settings.dns_timeout),
            ("STORE_TIMEOUT", &mut settings.store_timeout),
            ("POLL_INTERVAL", &mut settings.poll_interval),
            ("POLL_TIMEOUT", &mut settings.poll_timeout),
            ("FEED_POLL_INTERVAL", &mut settings.feed_poll_interval),
            (
                "AUDIT_CHECKPOINT_INTERVAL",
                &mut settings.audit_checkpoint_interval,
            ),
        ] {
            if let Some(value) = get(name) {
                *slot = parse_duration(value).map_err(|reason| invalid(name, value, reason))?;
            }
        }
        if let Some(value) = get("VERIFICATION_RECORD_PREFIX") {
            settings.verification_record_prefix = value.trim_matches('.').to_owned();
        }
        settings.auth_token = get("AUTH_TOKEN").map(|token| Secret::new(token.trim()));
        settings.read_only_tokens = get("READ_ONLY_TOKENS")
            .map(|tokens| secret_list(tokens))
            .unwrap_or_default();
        if !settings.read_only_tokens.is_empty() && settings.auth_token.is_none() {
            return Err(invalid(
                "READ_ONLY_TOKENS",
                "<redacted>",
                "read-only tokens need an admin AUTH_TOKEN too, or every caller would be admin",
            ));
        }
        settings.key_encryption_key = get("KEY_ENCRYPTION_KEY").map(|key| Secret::new(key.trim()));
        settings.key_encryption_key_file = get("KEY_ENCRYPTION_KEY_FILE").map(PathBuf::from);
        settings.previous_key_encryption_keys = get("PREVIOUS_KEY_ENCRYPTION_KEYS")
            .map(|keys| secret_list(keys))
            .unwrap_or_default();
        settings.audit_signing_key = get("AUDIT_SIGNING_KEY").map(|key| Secret::new(key.trim()));
        settings.audit_signing_key_file = get("AUDIT_SIGNING_KEY_FILE").map(PathBuf::from);
        settings.replica_id = get("REPLICA_ID").map(|id| id.trim().to_owned());
        if let Some(value) = get("CERT_KEY_TYPE") {
            settings.cert_key_type = CertificateKeyType::parse(value.trim())
                .ok_or_else(|| invalid("CERT_KEY_TYPE", value, "use rsa2048 or ecdsa-p256"))?;
        }
        if let Some(value) = get("LOG_LEVEL") {
            settings.log_level = value.clone();
        }
        if let Some(value) = get("SERVER_WORKERS") {
            let workers: usize = value
                .trim()
                .parse()
                .map_err(|_| invalid("SERVER_WORKERS", value, "expected a whole number"))?;
            if !(1..=256).contains(&workers) {
                return Err(invalid("SERVER_WORKERS", value, "expected 1 to 256"));
            }
            settings.server_workers = Some(workers);
        }
        if let Some(value) = get("LOG_FORMAT") {
            settings.log_format = match value.trim() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                _ => return Err(invalid("LOG_FORMAT", value, "use text or json")),
            };
        }
        Ok(settings)
    }

    /// Reads the settings from a TOML file (when given), with the environment's variables
    /// taking precedence over the file's.
    pub fn load(
        config_file: Option<&std::path::Path>,
        environment: &HashMap<String, String>,
    ) -> Result<Settings, SettingsError> {
        let mut merged = match config_file {
            Some(path) => read_config_file(path)?,
            None => HashMap::new(),
        };
        for name in SETTING_NAMES {
            if let Some(value) = environment.get(name).filter(|v| !v.trim().is_empty()) {
                merged.insert(name.to_owned(), value.clone());
            }
        }
        Self::from_map(&merged)
    }

    /// The effective configuration as TOML, secrets replaced by `"<redacted>"`: what
    /// `dns-handling config` prints.
    pub fn to_redacted_toml(&self) -> String {
        fn quoted(text: impl std::fmt::Display) -> Option<String> {
            Some(toml::Value::String(text.to_string()).to_string())
        }
        fn duration(value: Duration) -> Option<String> {
            quoted(format!("{}ms", value.as_millis()))
        }
        fn list<T>(items: &[T], show: impl Fn(&T) -> String) -> Option<String> {
            let items: Vec<String> = items.iter().filter_map(|item| quoted(show(item))).collect();
            Some(format!("[{}]", items.join(", ")))
        }
        let path = |path: &Option<PathBuf>| path.as_ref().and_then(|p| quoted(p.display()));
        let secret = |secret: &Option<Secret>| secret.as_ref().and_then(|_| quoted("<redacted>"));
        let log_format = match self.log_format {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        };
        // `None`: not set, printed as a comment.
        let lines: [(&str, Option<String>); 26] = [
            (
                "database_url",
                quoted(redact_url_password(&self.database_url)),
            ),
            ("server_addr", quoted(self.server_addr)),
            ("acme_directory", quoted(&self.acme_directory)),
            ("acme_email", self.acme_email.as_ref().and_then(quoted)),
            ("acme_ca_bundle", path(&self.acme_ca_bundle)),
            (
                "dns_nameservers",
                list(&self.dns_nameservers, ToString::to_string),
            ),
            ("dns_timeout", duration(self.dns_timeout)),
            ("store_timeout", duration(self.store_timeout)),
            ("poll_interval", duration(self.poll_interval)),
            ("poll_timeout", duration(self.poll_timeout)),
            (
                "verification_record_prefix",
                quoted(&self.verification_record_prefix),
            ),
            ("auth_token", secret(&self.auth_token)),
            (
                "read_only_tokens",
                list(&self.read_only_tokens, |_| "<redacted>".into()),
            ),
            ("key_encryption_key", secret(&self.key_encryption_key)),
            (
                "key_encryption_key_file",
                path(&self.key_encryption_key_file),
            ),
            (
                "previous_key_encryption_keys",
                list(&self.previous_key_encryption_keys, |_| "<redacted>".into()),
            ),
            ("log_level", quoted(&self.log_level)),
            ("log_format", quoted(log_format)),
            ("cert_key_type", quoted(self.cert_key_type.as_str())),
            ("lease_ttl", duration(self.lease_ttl)),
            ("replica_id", self.replica_id.as_ref().and_then(quoted)),
            ("server_workers", self.server_workers.map(|n| n.to_string())),
            ("feed_poll_interval", duration(self.feed_poll_interval)),
            ("audit_signing_key", secret(&self.audit_signing_key)),
            ("audit_signing_key_file", path(&self.audit_signing_key_file)),
            (
                "audit_checkpoint_interval",
                duration(self.audit_checkpoint_interval),
            ),
        ];
        lines
            .iter()
            .map(|(name, value)| match value {
                Some(value) => format!("{name} = {value}\n"),
                None => format!("# {name} is not set\n"),
            })
            .collect()
    }

    /// True when the store is PostgreSQL.
    pub fn uses_postgres(&self) -> bool {
        crate::adapters::store::is_postgres_url(&self.database_url)
    }
}

fn invalid(name: &'static str, value: &str, reason: impl Into<String>) -> SettingsError {
    SettingsError {
        name,
        value: value.to_owned(),
        reason: reason.into(),
    }
}

/// Reads a TOML configuration file into the same variables the environment uses: keys are the
/// settings' names in lower case, values strings, numbers, booleans or arrays of strings.
fn read_config_file(path: &std::path::Path) -> Result<HashMap<String, String>, SettingsError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| invalid("CONFIG_FILE", &shown, format!("cannot read it: {e}")))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e| invalid("CONFIG_FILE", &shown, format!("not valid TOML: {e}")))?;
    let mut vars = HashMap::new();
    for (key, value) in table {
        let name = key.to_uppercase();
        if !SETTING_NAMES.contains(&name.as_str()) || name == "CONFIG_FILE" {
            return Err(invalid(
                "CONFIG_FILE",
                &shown,
                format!("unknown setting {key:?}; known: {}", known_file_keys()),
            ));
        }
        let text = match value {
            toml::Value::String(text) => text,
            toml::Value::Integer(number) => number.to_string(),
            toml::Value::Float(number) => number.to_string(),
            toml::Value::Boolean(flag) => flag.to_string(),
            toml::Value::Array(items) => items
                .iter()
                .map(|item| match item {
                    toml::Value::String(text) => Ok(text.clone()),
                    other => Err(invalid(
                        "CONFIG_FILE",
                        &shown,
                        format!("{key}: expected strings in the list, found {other}"),
                    )),
                })
                .collect::<Result<Vec<_>, _>>()?
                .join(","),
            other => {
                return Err(invalid(
                    "CONFIG_FILE",
                    &shown,
                    format!("{key}: expected a string, number, boolean or list, found {other}"),
                ))
            }
        };
        vars.insert(name, text);
    }
    Ok(vars)
}

fn known_file_keys() -> String {
    SETTING_NAMES
        .iter()
        .filter(|name| **name != "CONFIG_FILE")
        .map(|name| name.to_lowercase())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The database URL without its password, for messages and `dns-handling config`.
pub fn redact_url_password(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &url[scheme_end + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => {
                    format!("{}://{user}:***@{}", &url[..scheme_end], &url[at + 1..])
                }
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Parses `10s`, `5m`, `250ms`, `1h` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| "expected a duration such as 10s, 5m or 250ms".to_owned())?;
    let duration = match unit.trim() {
        "" | "s" => Duration::from_secs(number),
        "ms" => Duration::from_millis(number),
        "m" => Duration::from_secs(number * 60),
        "h" => Duration::from_secs(number * 3600),
        other => return Err(format!("unknown unit {other:?}; use ms, s, m or h")),
    };
    if duration.is_zero() {
        return Err("must be greater than zero".to_owned());
    }
    Ok(duration)
}

/// A comma-separated list of secrets, blanks dropped.
fn secret_list(text: &str) -> Vec<Secret> {
    text.split(',')
        .map(str::trim)
        .filter(|secret| !secret.is_empty())
        .map(Secret::new)
        .collect()
}

fn parse_nameservers(text: &str) -> Result<Vec<SocketAddr>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(|part| {
            part.parse::<SocketAddr>()
                .or_else(|_| {
                    part.parse::<std::net::IpAddr>()
                        .map(|ip| SocketAddr::new(ip, 53))
                })
                .map_err(|_| format!("{part:?} is not an ip or ip:port"))
        })
        .collect()
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

    #[test]
    fn the_auth_token_does_not_print_itself() {
        let settings = Settings::from_map(&vars(&[("AUTH_TOKEN", "hunter2")])).expect("valid");
        assert!(!format!("{settings:?}").contains("hunter2"));
    }
}
