//! Pebble, the ACME test CA, with pebble-challtestsrv as the DNS server it validates against
//! and the tests publish TXT records on.
//!
//! With delegated zones ([`PebbleOptions::delegated_zones`]) a private unbound stands between
//! Pebble and the DNS servers, as a recursive resolver does on the internet: every name is
//! resolved at challtestsrv except those under a delegated zone, which go to that zone's server
//! (the service's own DNS server), and a CNAME is followed from one into the other. The start
//! order is challtestsrv, unbound, Pebble (`-dnsserver` unbound), so the delegated zone's
//! server address must be known up front (`free_dns_port()`), but that server may start later.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{json, Value};

use crate::process::{free_dns_port, free_port, spawn, wait_for_tcp, ChildGuard, TempDir};
use crate::unbound::Unbound;

#[cfg(test)]
mod tests;

/// Where a missing Pebble comes from.
const INSTALL_HINT: &str =
    "Run the test script (tests/run.sh), which installs Pebble (apt-get install pebble).";

/// Pebble (ACME) and pebble-challtestsrv (its DNS server), on free ports.
pub struct Pebble {
    /// Pebble's configuration, HTTPS identity and logs, and both processes' logs.
    pub dir: TempDir,
    /// The ACME server's HTTPS port.
    pub acme_port: u16,
    /// Pebble's management API (its roots and intermediates).
    pub management_port: u16,
    /// The DNS server's port (UDP and TCP).
    pub dns_port: u16,
    /// pebble-challtestsrv's management API (TXT records, SERVFAIL, request history).
    pub challtestsrv_port: u16,
    // Dropped in this order: Pebble, its resolver, then the DNS server the resolver asks.
    pebble: ChildGuard,
    resolver: Option<Unbound>,
    _challtestsrv: ChildGuard,
}

/// Options for a Pebble run.
#[derive(Clone, Default)]
pub struct PebbleOptions {
    /// Percentage of nonces Pebble rejects; `None` keeps Pebble's own default (5%).
    pub nonce_reject_percent: Option<u8>,
    /// How long the certificates Pebble issues are valid, in seconds (its
    /// `certificateValidityPeriod`); `None` keeps Pebble's default (5 years).
    pub certificate_validity_secs: Option<u64>,
    /// Zones (`"acme.platform.test."`) whose names Pebble resolves at another DNS server (the
    /// service's `DNS_LISTEN_ADDR`) rather than at challtestsrv. Empty (the default): Pebble
    /// asks challtestsrv directly. Not empty: Pebble asks a private unbound that sends these
    /// zones to their servers and every other name to challtestsrv, following CNAMEs across;
    /// [`Pebble::nameserver`] is then that unbound.
    pub delegated_zones: Vec<(String, SocketAddr)>,
    /// External Account Binding (RFC 8555 §7.3.4): `Some` makes Pebble refuse a newAccount
    /// without a binding (`externalAccountBindingRequired`) and accept bindings made with these
    /// keys (`externalAccountMACKeys`): `(kid, key)`, the HMAC key as Pebble's config takes it,
    /// base64url without padding (see [`eab_key`]). `None` (the default): no binding asked for.
    pub external_account_binding: Option<Vec<(String, String)>>,
}

/// An External Account Binding key as [`PebbleOptions::external_account_binding`] takes it:
/// `key` (the raw HMAC key, what instant-acme's `ExternalAccountKey::new` takes) in base64url
/// without padding, the encoding Pebble 2.4 decodes its `externalAccountMACKeys` with.
pub fn eab_key(key: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key)
}

impl Pebble {
    /// Starts Pebble and its DNS server, on fresh ports again if a port was taken in between.
    pub fn start(options: PebbleOptions) -> Pebble {
        const ATTEMPTS: usize = 3;
        let mut failures = Vec::new();
        for _ in 0..ATTEMPTS {
            match Pebble::try_start(&options) {
                Ok(pebble) => return pebble,
                Err(failure) => failures.push(failure),
            }
        }
        panic!(
            "Pebble did not start in {ATTEMPTS} attempts:\n{}",
            failures.join("\n")
        );
    }

    /// One start on fresh ports; the error carries what the process that failed logged.
    fn try_start(options: &PebbleOptions) -> Result<Pebble, String> {
        let dir = TempDir::new("pebble");
        let (acme_port, management_port, dns_port, challtestsrv_port) =
            (free_port(), free_port(), free_dns_port(), free_port());
        write_https_identity(dir.path());
        let config = json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{acme_port}"),
            "managementListenAddress": format!("127.0.0.1:{management_port}"),
            "certificate": dir.path().join("pebble-cert.pem"),
            "privateKey": dir.path().join("pebble-key.pem"),
            "httpPort": free_port(),
            "tlsPort": free_port(),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false
        }});
        let mut config = config;
        if let Some(seconds) = options.certificate_validity_secs {
            config["pebble"]["certificateValidityPeriod"] = json!(seconds);
        }
        if let Some(keys) = &options.external_account_binding {
            config["pebble"]["externalAccountBindingRequired"] = json!(true);
            config["pebble"]["externalAccountMACKeys"] = keys
                .iter()
                .map(|(kid, key)| (kid.clone(), json!(key)))
                .collect();
        }
        let config_path = dir.path().join("pebble.json");
        std::fs::write(&config_path, config.to_string()).expect("write pebble config");
        let log_of =
            |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap_or_default();

        let challtestsrv_log =
            std::fs::File::create(dir.path().join("challtestsrv.log")).expect("log file");
        let mut challtestsrv = spawn(
            Command::new("pebble-challtestsrv")
                .args(["-dns01", &format!("127.0.0.1:{dns_port}")])
                .args(["-management", &format!("127.0.0.1:{challtestsrv_port}")])
                .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
                .stdout(Stdio::null())
                .stderr(challtestsrv_log),
            "pebble-challtestsrv",
            INSTALL_HINT,
        );
        wait_for_tcp(
            challtestsrv_port,
            "pebble-challtestsrv",
            &mut challtestsrv.child,
        )
        .map_err(|error| format!("{error}; its log:\n{}", log_of("challtestsrv.log")))?;
        let dns_address = SocketAddr::from(([127, 0, 0, 1], dns_port));
        let resolver = if options.delegated_zones.is_empty() {
            None
        } else {
            // "." is the least specific zone: every name no delegated zone covers goes to
            // challtestsrv, as it does without a resolver.
            let mut zones = vec![(".", dns_address)];
            zones.extend(
                options
                    .delegated_zones
                    .iter()
                    .map(|(zone, server)| (zone.as_str(), *server)),
            );
            Some(Unbound::try_start(&zones)?)
        };
        let pebble_dns = resolver
            .as_ref()
            .map_or(dns_address, |resolver| resolver.address());

        let pebble_log = std::fs::File::create(dir.path().join("pebble.log")).expect("log file");
        let mut command = Command::new("pebble");
        command
            .args(["-config", &config_path.to_string_lossy()])
            .args(["-dnsserver", &pebble_dns.to_string()])
            .arg("-strict=false")
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(pebble_log.try_clone().expect("log file"))
            .stderr(pebble_log);
        match options.nonce_reject_percent {
            Some(percent) => command.env("PEBBLE_WFE_NONCEREJECT", percent.to_string()),
            None => command.env_remove("PEBBLE_WFE_NONCEREJECT"),
        };
        let mut pebble = spawn(&mut command, "pebble", INSTALL_HINT);
        wait_for_tcp(acme_port, "pebble", &mut pebble.child)
            .and_then(|()| wait_for_tcp(management_port, "pebble management", &mut pebble.child))
            .map_err(|error| format!("{error}; its log:\n{}", log_of("pebble.log")))?;
        Ok(Pebble {
            dir,
            acme_port,
            management_port,
            dns_port,
            challtestsrv_port,
            pebble,
            resolver,
            _challtestsrv: challtestsrv,
        })
    }

    /// The ACME directory URL.
    pub fn directory_url(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.acme_port)
    }

    /// The CA file that trusts Pebble's HTTPS certificate.
    pub fn ca_bundle(&self) -> PathBuf {
        self.dir.path().join("test-ca.pem")
    }

    /// A CA file trusting this Pebble's HTTPS certificate and each of `others`' (every Pebble has
    /// a test CA of its own), for a client of a primary and a fallback CA that takes one bundle.
    /// Written into this Pebble's directory: it lives as long as this Pebble.
    pub fn ca_bundle_with(&self, others: &[&Pebble]) -> PathBuf {
        let mut bundle = std::fs::read_to_string(self.ca_bundle()).expect("read the test CA");
        let mut name = format!("test-ca-{}", self.acme_port);
        for other in others {
            bundle.push_str(&std::fs::read_to_string(other.ca_bundle()).expect("read a test CA"));
            name.push_str(&format!("+{}", other.acme_port));
        }
        let path = self.dir.path().join(format!("{name}.pem"));
        std::fs::write(&path, bundle).expect("write the CA bundle");
        path
    }

    /// Pebble's HTTPS certificate and key files (`localhost`/`127.0.0.1`, signed by the CA of
    /// [`Pebble::ca_bundle`]): the CA front serves with them, so clients that trust Pebble
    /// trust it too.
    pub(crate) fn https_identity(&self) -> (PathBuf, PathBuf) {
        (
            self.dir.path().join("pebble-cert.pem"),
            self.dir.path().join("pebble-key.pem"),
        )
    }

    /// The DNS server Pebble validates with, as `DNS_NAMESERVERS` takes it (`127.0.0.1:<port>`):
    /// challtestsrv, or the resolver in front of it when there are delegated zones.
    pub fn nameserver(&self) -> String {
        match &self.resolver {
            Some(resolver) => resolver.nameserver(),
            None => self.dns_address().to_string(),
        }
    }

    /// challtestsrv's DNS address (UDP and TCP), where the records a test publishes are served,
    /// whether or not a resolver stands in front of it.
    pub fn dns_address(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.dns_port))
    }

    /// The unbound between Pebble and the DNS servers, when there are delegated zones (its
    /// address, its log).
    pub fn resolver(&self) -> Option<&Unbound> {
        self.resolver.as_ref()
    }

    fn challtestsrv(&self, path: &str, body: Value) {
        let url = format!("http://127.0.0.1:{}{path}", self.challtestsrv_port);
        assert!(curl_post(&url, &body), "challtestsrv {path} {body} failed");
    }

    /// Publishes a TXT value (appended to any already there). `host` must end with a dot.
    pub fn set_txt(&self, host: &str, value: &str) {
        assert!(
            host.ends_with('.'),
            "challtestsrv ignores hosts without the trailing dot"
        );
        self.challtestsrv("/set-txt", json!({"host": host, "value": value}));
    }

    /// Publishes a CNAME at `host` pointing to `target` (both end with a dot). challtestsrv
    /// answers it but does not follow it into another server; a resolver does.
    pub fn set_cname(&self, host: &str, target: &str) {
        assert!(
            host.ends_with('.') && target.ends_with('.'),
            "challtestsrv ignores names without the trailing dot"
        );
        self.challtestsrv("/set-cname", json!({"host": host, "target": target}));
    }

    /// Removes the CNAME at `host`.
    pub fn clear_cname(&self, host: &str) {
        self.challtestsrv("/clear-cname", json!({"host": host}));
    }

    /// Adds CAA records at `host` (ends with a dot): `(tag, value)` each, flags 0
    /// (`("issue", "other-ca.example")` is `0 issue "other-ca.example"`). Pebble itself does
    /// not check CAA.
    pub fn add_caa(&self, host: &str, records: &[(&str, &str)]) {
        assert!(
            host.ends_with('.'),
            "challtestsrv ignores hosts without the trailing dot"
        );
        let policies: Vec<Value> = records
            .iter()
            .map(|(tag, value)| json!({"tag": tag, "value": value}))
            .collect();
        self.challtestsrv("/add-caa", json!({"host": host, "policies": policies}));
    }

    /// Answers A queries for `host` (ends with a dot) with `addresses` in place of
    /// challtestsrv's default (`127.0.0.1` for every name).
    pub fn add_a(&self, host: &str, addresses: &[&str]) {
        assert!(
            host.ends_with('.'),
            "challtestsrv ignores hosts without the trailing dot"
        );
        self.challtestsrv("/add-a", json!({"host": host, "addresses": addresses}));
    }

    /// Removes the A records set at `host`: its A queries get challtestsrv's default again.
    pub fn clear_a(&self, host: &str) {
        self.challtestsrv("/clear-a", json!({"host": host}));
    }

    /// Removes every CAA record at `host`.
    pub fn clear_caa(&self, host: &str) {
        self.challtestsrv("/clear-caa", json!({"host": host}));
    }

    /// Stops the ACME server (its DNS server keeps running), as a CA outage would.
    pub fn stop_acme(&mut self) {
        self.pebble.kill();
    }

    /// Makes every query for `host` answer SERVFAIL.
    pub fn set_servfail(&self, host: &str) {
        self.challtestsrv("/set-servfail", json!({"host": host}));
    }

    /// Removes every TXT value at `host`.
    pub fn clear_txt(&self, host: &str) {
        self.challtestsrv("/clear-txt", json!({"host": host}));
    }

    /// Undoes [`Pebble::set_servfail`].
    pub fn clear_servfail(&self, host: &str) {
        self.challtestsrv("/clear-servfail", json!({"host": host}));
    }

    /// How many DNS queries for `host` the DNS server has answered so far (its request history;
    /// Pebble's own validation lookups count too, and with delegated zones the resolver's
    /// queries, which may be more than one a lookup). `host` may end with a dot.
    pub fn dns_queries(&self, host: &str) -> usize {
        let url = format!(
            "http://127.0.0.1:{}/dns-request-history",
            self.challtestsrv_port
        );
        let body = json!({"host": host.trim_end_matches('.')});
        let output = Command::new("curl")
            .args(["-sS", "--fail-with-body", "-X", "POST", "-d"])
            .arg(body.to_string())
            .arg(&url)
            .output()
            .expect("curl runs");
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "challtestsrv {url} failed: {text}");
        let history: Value = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("the DNS request history is not JSON: {text:?}"));
        history.as_array().map_or(0, Vec::len)
    }

    /// What Pebble's management API says of the certificate with `serial` (lower-case hex):
    /// its JSON, whose `Status` is `Valid` or `Revoked`.
    pub fn certificate_status(&self, serial: &str) -> Value {
        let output = Command::new("curl")
            .args([
                "-sSfk",
                &format!(
                    "https://127.0.0.1:{}/cert-status-by-serial/{serial}",
                    self.management_port
                ),
            ])
            .output()
            .expect("curl runs");
        assert!(
            output.status.success(),
            "Pebble does not know certificate {serial}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).expect("Pebble answers JSON")
    }

    /// The root Pebble issues under (it changes on every start).
    pub fn issuing_root_pem(&self) -> String {
        let output = Command::new("curl")
            .args([
                "-sSfk",
                &format!("https://127.0.0.1:{}/roots/0", self.management_port),
            ])
            .output()
            .expect("curl runs");
        assert!(output.status.success(), "fetching Pebble's root failed");
        String::from_utf8(output.stdout).expect("PEM is text")
    }
}

/// A throwaway CA and a `localhost`/`127.0.0.1` certificate for Pebble's HTTPS.
fn write_https_identity(dir: &Path) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "dns-handling test CA");
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
    let issuer = Issuer::from_params(&ca_params, &ca_key);
    let leaf_key = KeyPair::generate().expect("leaf key");
    let leaf_params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .expect("leaf params");
    let leaf = leaf_params
        .signed_by(&leaf_key, &issuer)
        .expect("leaf certificate");
    std::fs::write(dir.join("test-ca.pem"), ca_cert.pem()).expect("write CA");
    std::fs::write(dir.join("pebble-cert.pem"), leaf.pem()).expect("write cert");
    std::fs::write(dir.join("pebble-key.pem"), leaf_key.serialize_pem()).expect("write key");
}

/// A blocking HTTP POST for challtestsrv's management API (plain HTTP on loopback), usable
/// from synchronous fixture code.
fn curl_post(url: &str, body: &Value) -> bool {
    let output = Command::new("curl")
        .args([
            "-sS",
            "--fail-with-body",
            "-X",
            "POST",
            "-d",
            &body.to_string(),
            url,
        ])
        .output();
    match output {
        Ok(output) if output.status.success() => true,
        Ok(output) => {
            eprintln!(
                "curl {url} failed: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            false
        }
        Err(error) => {
            eprintln!("curl {url} did not run: {error}");
            false
        }
    }
}
