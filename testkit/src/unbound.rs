//! A private unbound, the real recursive resolver that chains DNS servers on loopback: each zone
//! it is given is served by one server (pebble-challtestsrv for the users' zones, the service's
//! own DNS server for the delegated zone), and unbound follows a CNAME from one into the other
//! as a resolver on the internet would. It asks as such a resolver does, too: with QNAME
//! minimisation (an `A` query for a name before the `TXT` query the client made) and no cache.

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::process::{free_dns_port, program, spawn, ChildGuard, TempDir};

/// Where a missing unbound comes from.
const INSTALL_HINT: &str =
    "Run the test script (tests/run.sh), which installs unbound (apt-get install unbound).";

/// A running `unbound -d` on a free loopback port, killed and waited for on drop.
pub struct Unbound {
    // Declared first so it is dropped first: the process goes before its directory.
    _child: ChildGuard,
    /// The configuration (`unbound.conf`) and the log (`unbound.log`).
    pub dir: TempDir,
    port: u16,
}

impl Unbound {
    /// Starts unbound resolving each `(zone, server)` of `stub_zones` at `server` (the most
    /// specific zone wins, so `("test.", a)` and `("acme.platform.test.", b)` send
    /// `x.acme.platform.test.` to `b` and every other `*.test.` name to `a`). Names under no
    /// zone are refused, so the resolver never sends a query off this machine. A `"."` zone
    /// covers every name; unbound forwards it (recursion desired, no QNAME minimisation) rather
    /// than treat it as a stub, since a root stub must answer `. NS`, which challtestsrv does not.
    /// Returns once unbound answers queries; panics with its log when it is not installed or does
    /// not start.
    pub fn start(stub_zones: &[(&str, SocketAddr)]) -> Unbound {
        const ATTEMPTS: usize = 3;
        let mut failures = Vec::new();
        // Another attempt on a fresh port: the free port may be taken before unbound binds it.
        for _ in 0..ATTEMPTS {
            match Unbound::try_start(stub_zones) {
                Ok(unbound) => return unbound,
                Err(failure) => failures.push(failure),
            }
        }
        panic!(
            "unbound did not start in {ATTEMPTS} attempts:\n{}",
            failures.join("\n")
        );
    }

    /// One start on a fresh port; the error carries unbound's log.
    pub(crate) fn try_start(stub_zones: &[(&str, SocketAddr)]) -> Result<Unbound, String> {
        let dir = TempDir::new("unbound");
        let port = free_dns_port();
        let config_path = dir.path().join("unbound.conf");
        std::fs::write(&config_path, config(dir.path(), port, stub_zones))
            .expect("write unbound config");
        // With no `logfile`, `-d` logs to stderr, configuration errors included.
        let log = std::fs::File::create(dir.path().join("unbound.log")).expect("log file");
        let mut child = spawn(
            Command::new(program("unbound"))
                .args(["-d", "-c"])
                .arg(&config_path)
                .stdout(log.try_clone().expect("log file"))
                .stderr(log),
            "unbound",
            INSTALL_HINT,
        );
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if answers(address) {
                return Ok(Unbound {
                    _child: child,
                    dir,
                    port,
                });
            }
            let log = std::fs::read_to_string(dir.path().join("unbound.log")).unwrap_or_default();
            if let Ok(Some(status)) = child.child.try_wait() {
                return Err(format!(
                    "unbound exited early with {status}; its log:\n{log}"
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "unbound did not answer on {address} within 20 s; its log:\n{log}"
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Where unbound answers, UDP and TCP.
    pub fn address(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The resolver as `DNS_NAMESERVERS` and Pebble's `-dnsserver` take it (`127.0.0.1:<port>`).
    pub fn nameserver(&self) -> String {
        self.address().to_string()
    }

    /// What unbound has logged so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("unbound.log")).unwrap_or_default()
    }
}

/// The configuration: a resolver for tests rather than for the internet.
fn config(dir: &Path, port: u16, stub_zones: &[(&str, SocketAddr)]) -> String {
    let zones: Vec<String> = stub_zones
        .iter()
        .map(|(zone, _)| format!("{}.", zone.trim_end_matches('.')))
        .collect();
    let mut server = format!(
        r#"server:
  interface: 127.0.0.1@{port}
  do-ip6: no
  access-control: 127.0.0.0/8 allow
  # The stub servers are on loopback, which unbound skips by default.
  do-not-query-localhost: no
  # No DNSSEC validation: no trust anchor or root key is needed.
  module-config: "iterator"
  domain-insecure: "test."
  # Without it unbound answers NXDOMAIN itself for every name under the special-use test.
  local-zone: "test." nodefault
  username: ""
  chroot: ""
  directory: "{dir}"
  pidfile: "{dir}/unbound.pid"
  use-syslog: no
  verbosity: 1
  # Tests change records between queries: answer from the servers every time.
  cache-max-ttl: 0
  cache-max-negative-ttl: 0
  # By default unbound drops (never answers) a query it took over 1.9 s on, a stub server down
  # included: answer SERVFAIL instead, as a client expects.
  discard-timeout: 0
  # A stub server that was down (a service restarting) is asked again within about 2 s, not
  # after unbound's default backoff (minutes).
  infra-host-ttl: 1
  infra-cache-max-rtt: 1000
  infra-keep-probing: yes
"#,
        dir = dir.display()
    );
    for zone in &zones {
        // A local zone of another kind than unbound's built-in one (test., invalid., ...) lets
        // the names under a stub through to it, past the `"."` refusal below.
        server.push_str(&format!("  local-zone: \"{zone}\" transparent\n"));
    }
    if !zones.iter().any(|zone| zone == ".") {
        // No query for a name under no stub zone leaves the machine for the root servers.
        server.push_str("  local-zone: \".\" refuse\n");
    }
    server.push_str("remote-control:\n  control-enable: no\n");
    for (zone, (_, address)) in zones.iter().zip(stub_zones) {
        // A stub zone at the root makes unbound prime it (a `. NS` query), which challtestsrv
        // answers NOTIMP, failing every name: the root is forwarded instead. A forwarded
        // answer's CNAME is still followed from the start, into a more specific stub zone.
        let kind = if zone == "." { "forward" } else { "stub" };
        server.push_str(&format!(
            "{kind}-zone:\n  name: \"{zone}\"\n  {kind}-addr: {}@{}\n  {kind}-no-cache: yes\n",
            address.ip(),
            address.port()
        ));
    }
    server
}

/// Whether a DNS server answers a UDP query at `address` within 200 ms: any answer will do.
fn answers(address: SocketAddr) -> bool {
    // `localhost. A`: unbound answers it from its built-in local zone, asking no stub server.
    const QUERY: &[u8] = &[
        0x12, 0x34, // id
        0x01, 0x00, // flags: rd
        0, 1, 0, 0, 0, 0, 0, 0, // one question
        9, b'l', b'o', b'c', b'a', b'l', b'h', b'o', b's', b't', 0, // localhost.
        0, 1, 0, 1, // A, IN
    ];
    let Ok(socket) = UdpSocket::bind("127.0.0.1:0") else {
        return false;
    };
    let mut buffer = [0u8; 512];
    // Connected, so a closed port fails at once (ICMP port unreachable) rather than time out.
    socket.connect(address).is_ok()
        && socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .is_ok()
        && socket.send(QUERY).is_ok()
        && matches!(socket.recv(&mut buffer), Ok(n) if n >= 2 && buffer[..2] == QUERY[..2])
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::process::{Command, Stdio};
    use std::time::Duration;

    use serde_json::json;

    use super::Unbound;
    use crate::dig::dig;
    use crate::pebble::{Pebble, PebbleOptions};
    use crate::process::{free_dns_port, free_port, spawn, wait_for_tcp, ChildGuard};

    /// A second pebble-challtestsrv, standing in for the service's DNS server of the delegated
    /// zone; its management port comes with it.
    fn challtestsrv(dns: SocketAddr) -> (ChildGuard, u16) {
        let management = free_port();
        let mut child = spawn(
            Command::new("pebble-challtestsrv")
                .args(["-dns01", &dns.to_string()])
                .args(["-management", &format!("127.0.0.1:{management}")])
                .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
            "pebble-challtestsrv",
            "Run tests/run.sh, which installs pebble.",
        );
        wait_for_tcp(management, "pebble-challtestsrv", &mut child.child).expect("it starts");
        (child, management)
    }

    #[test]
    fn a_cname_is_followed_from_challtestsrv_into_the_delegated_zone() {
        let delegated = SocketAddr::from(([127, 0, 0, 1], free_dns_port()));
        let (_server, management) = challtestsrv(delegated);
        let pebble = Pebble::start(PebbleOptions {
            delegated_zones: vec![("acme.platform.test.".to_owned(), delegated)],
            ..PebbleOptions::default()
        });
        let resolver = pebble.resolver().expect("a resolver for delegated zones");
        assert_eq!(pebble.nameserver(), resolver.nameserver());
        pebble.set_cname("_acme-challenge.x.test.", "y.acme.platform.test.");
        set_txt(management, "y.acme.platform.test.", "token");

        let answer = dig(resolver.address(), &["TXT", "_acme-challenge.x.test."]);
        assert_eq!(
            answer.status,
            "NOERROR",
            "{}\n{}",
            answer.output,
            resolver.log()
        );
        assert_eq!(answer.answers("CNAME"), ["y.acme.platform.test."]);
        assert_eq!(answer.txt(), ["token"], "{}", answer.output);
        // challtestsrv alone has the CNAME but not what it points to: unbound went to the other
        // server, the more specific stub zone under the "." one.
        let direct = dig(
            pebble.dns_address(),
            &["+norecurse", "TXT", "_acme-challenge.x.test."],
        );
        assert_eq!(direct.answers("CNAME"), ["y.acme.platform.test."]);
        assert!(direct.txt().is_empty(), "{}", direct.output);

        // Names outside test. reach challtestsrv through the "." stub zone too.
        pebble.set_txt("_acme-challenge.shop.example.com.", "other");
        let answer = dig(
            resolver.address(),
            &["TXT", "_acme-challenge.shop.example.com."],
        );
        assert_eq!(answer.txt(), ["other"], "{}", answer.output);
    }

    /// Publishes a TXT value on the stand-in server behind `management`.
    fn set_txt(management: u16, host: &str, value: &str) {
        let output = Command::new("curl")
            .args(["-sSf", "-X", "POST", "-d"])
            .arg(json!({"host": host, "value": value}).to_string())
            .arg(format!("http://127.0.0.1:{management}/set-txt"))
            .output()
            .expect("curl runs");
        assert!(output.status.success(), "{output:?}");
    }

    #[tokio::test]
    async fn pebble_validates_a_dns01_challenge_through_the_delegation() {
        // instant-acme's client takes the process's provider; rustls has two here.
        let _ = tokio_rustls::rustls::crypto::aws_lc_rs::default_provider().install_default();
        let delegated = SocketAddr::from(([127, 0, 0, 1], free_dns_port()));
        let (_server, management) = challtestsrv(delegated);
        let pebble = Pebble::start(PebbleOptions {
            nonce_reject_percent: Some(0),
            delegated_zones: vec![("acme.platform.test.".to_owned(), delegated)],
            ..PebbleOptions::default()
        });
        let (account, _) = instant_acme::Account::builder_with_root(pebble.ca_bundle())
            .expect("an ACME client trusting the test CA")
            .create(
                &instant_acme::NewAccount {
                    contact: &[],
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                pebble.directory_url(),
                None,
            )
            .await
            .expect("newAccount");
        let identifiers = [instant_acme::Identifier::Dns("shop.delegated.test".into())];
        let mut order = account
            .new_order(&instant_acme::NewOrder::new(&identifiers))
            .await
            .expect("newOrder");
        // The user's CNAME on challtestsrv, the TXT on the delegated zone's server only.
        pebble.set_cname(
            "_acme-challenge.shop.delegated.test.",
            "shop.acme.platform.test.",
        );
        let mut authorizations = order.authorizations();
        while let Some(authorization) = authorizations.next().await {
            let mut authorization = authorization.expect("authorization");
            let mut challenge = authorization
                .challenge(instant_acme::ChallengeType::Dns01)
                .expect("a dns-01 challenge");
            let value = challenge.key_authorization().dns_value();
            set_txt(management, "shop.acme.platform.test.", &value);
            challenge.set_ready().await.expect("challenge ready");
        }
        let status = order
            .poll_ready(&instant_acme::RetryPolicy::new().timeout(Duration::from_secs(20)))
            .await
            .expect("the order settles");
        assert_eq!(
            status,
            instant_acme::OrderStatus::Ready,
            "{:?}\nunbound's log:\n{}",
            order.refresh().await,
            pebble.resolver().expect("a resolver").log()
        );
    }

    #[test]
    fn names_under_no_stub_zone_are_refused() {
        let pebble = Pebble::start(PebbleOptions::default());
        pebble.set_txt("_acme-challenge.x.test.", "token");
        let unbound = Unbound::start(&[("test", pebble.dns_address())]);
        let answer = dig(unbound.address(), &["TXT", "_acme-challenge.x.test."]);
        assert_eq!(answer.txt(), ["token"], "{}", answer.output);
        // Refused at once rather than sent to the internet's root servers.
        let outside = dig(unbound.address(), &["TXT", "example.com."]);
        assert_eq!(outside.status, "REFUSED", "{}", outside.output);
    }
}
