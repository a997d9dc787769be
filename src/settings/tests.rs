//! The settings: defaults, parsing, layering, refusals, and what is never printed.

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
    let refused = Settings::from_map(&vars(&[("LEASE_TTL", "10s"), ("WEBHOOK_TIMEOUT", "10s")]))
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
    let error = Settings::from_map(&vars(&[("FEED_POLL_INTERVAL", "0s")])).expect_err("invalid");
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
fn the_store_connections_are_sixteen_unless_set_and_zero_is_refused() {
    assert_eq!(Settings::default().store_connections, 16);
    let settings = Settings::from_map(&vars(&[("STORE_CONNECTIONS", "4")])).expect("valid");
    assert_eq!(settings.store_connections, 4);
    let error = Settings::from_map(&vars(&[("STORE_CONNECTIONS", "0")])).expect_err("invalid");
    assert_eq!(error.name, "STORE_CONNECTIONS");
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

#[test]
fn edge_tokens_are_named_pairs_that_need_the_admin_token_and_never_print() {
    let admin = ("AUTH_TOKEN", "admin-secret");
    let settings = Settings::from_map(&vars(&[
        admin,
        ("EDGE_TOKENS", "edge1=tok-one, edge-2.b = tok-two"),
    ]))
    .expect("valid");
    let named: Vec<(&str, &str)> = settings
        .edge_tokens
        .iter()
        .map(|edge| (&*edge.name, edge.token.expose()))
        .collect();
    assert_eq!(named, [("edge1", "tok-one"), ("edge-2.b", "tok-two")]);
    let printed = format!("{settings:?}{}", settings.to_redacted_toml());
    assert!(!printed.contains("tok-one") && !printed.contains("tok-two"));
    assert!(
        printed.contains("edge_tokens = [\"edge1=<redacted>\", \"edge-2.b=<redacted>\"]"),
        "{printed}"
    );
    assert_eq!(settings.edge_cache_entries, 10_000);

    let without_admin = Settings::from_map(&vars(&[("EDGE_TOKENS", "edge1=tok-one")]))
        .expect_err("needs AUTH_TOKEN");
    assert_eq!(without_admin.name, "EDGE_TOKENS");
    assert!(
        without_admin.reason.contains("AUTH_TOKEN"),
        "{without_admin}"
    );
    let refused = |value: &str| {
        let error =
            Settings::from_map(&vars(&[admin, ("EDGE_TOKENS", value)])).expect_err("refused");
        assert_eq!(error.name, "EDGE_TOKENS");
        assert!(
            !error.to_string().contains("tok-"),
            "a token shown: {error}"
        );
        error.reason
    };
    assert!(refused("edge1tok-one").contains("not name=token"));
    assert!(refused("=tok-one").contains("empty name"));
    assert!(refused("edge1=tok-one,edge1=tok-two").contains("named twice"));
    assert!(refused("edge 1=tok-one").contains("edge name"));
    assert!(refused("edge1=").contains("empty token"));
    assert!(refused("edge1=tok-one,edge2=tok-one").contains("another token's"));
    assert!(refused("edge1=admin-secret").contains("another token's"));
}

#[test]
fn the_edge_cache_size_is_a_positive_count() {
    let settings = Settings::from_map(&vars(&[("EDGE_CACHE_ENTRIES", "500")])).expect("valid");
    assert_eq!(settings.edge_cache_entries, 500);
    let zero = Settings::from_map(&vars(&[("EDGE_CACHE_ENTRIES", "0")])).expect_err("zero");
    assert_eq!(zero.name, "EDGE_CACHE_ENTRIES");
}

#[test]
fn caa_check_and_caa_identities_are_read_from_the_environment_and_the_file() {
    let defaults = Settings::from_map(&HashMap::new()).expect("defaults are valid");
    assert_eq!(defaults.caa_check, CaaCheck::Enforce);
    assert!(defaults.acme_caa_identities.is_empty());
    let settings = Settings::from_map(&vars(&[
        ("CAA_CHECK", "warn"),
        ("ACME_CAA_IDENTITIES", "letsencrypt.org, pebble.test"),
        (
            "ACME_FALLBACK_ISSUERS",
            r#"[{"directory": "https://ca.example/dir", "caa_identities": ["ca.example"]}]"#,
        ),
    ]))
    .expect("valid");
    assert_eq!(settings.caa_check, CaaCheck::Warn);
    assert_eq!(
        settings.acme_caa_identities,
        ["letsencrypt.org", "pebble.test"]
    );
    assert_eq!(
        settings.acme_fallback_issuers[0].caa_identities,
        ["ca.example"]
    );
    let file = ConfigFileFixture::new(
        "caa",
        "caa_check = \"off\"\nacme_caa_identities = [\"letsencrypt.org\"]\n\
         [[acme_fallback_issuers]]\ndirectory = \"https://ca.example/dir\"\n\
         caa_identities = [\"ca.example\"]\n",
    );
    let settings = file.load(&[]).expect("valid");
    assert_eq!(settings.caa_check, CaaCheck::Off);
    assert_eq!(settings.acme_caa_identities, ["letsencrypt.org"]);
    assert_eq!(
        settings.acme_fallback_issuers[0].caa_identities,
        ["ca.example"]
    );
    let error = Settings::from_map(&vars(&[("CAA_CHECK", "strict")])).expect_err("bad");
    assert_eq!(error.name, "CAA_CHECK");
    assert!(error.reason.contains("enforce, warn or off"), "{error}");
}

#[test]
fn the_health_settings_are_read_with_their_defaults_and_a_bad_target_names_the_variable() {
    let defaults = Settings::default();
    assert!(defaults.routing_targets.is_empty());
    assert_eq!(
        defaults.health_check_interval,
        Duration::from_secs(6 * 3600)
    );
    assert_eq!(defaults.moved_after, Duration::from_secs(72 * 3600));
    let settings = Settings::from_map(&vars(&[
        (
            "ROUTING_TARGETS",
            "edge.platform.test, 203.0.113.0/24,2001:db8::/32",
        ),
        ("HEALTH_CHECK_INTERVAL", "2s"),
        ("MOVED_AFTER", "6s"),
    ]))
    .expect("valid");
    assert_eq!(settings.routing_targets.hosts, ["edge.platform.test"]);
    assert_eq!(settings.routing_targets.networks.len(), 2);
    assert_eq!(settings.health_check_interval, Duration::from_secs(2));
    assert_eq!(settings.moved_after, Duration::from_secs(6));
    let error =
        Settings::from_map(&vars(&[("ROUTING_TARGETS", "203.0.113.0/99")])).expect_err("invalid");
    assert_eq!(error.name, "ROUTING_TARGETS");
}

#[test]
fn moved_remove_after_is_unset_by_default_and_a_bad_value_names_the_variable() {
    assert_eq!(Settings::default().moved_remove_after, None);
    let settings = Settings::from_map(&vars(&[("MOVED_REMOVE_AFTER", "7d")])).expect("valid");
    assert_eq!(
        settings.moved_remove_after,
        Some(Duration::from_secs(7 * 86_400))
    );
    for bad in ["a week", "0s"] {
        let error = Settings::from_map(&vars(&[("MOVED_REMOVE_AFTER", bad)])).expect_err(bad);
        assert_eq!(error.name, "MOVED_REMOVE_AFTER", "{error}");
        assert_eq!(error.value, bad, "{error}");
    }
}
