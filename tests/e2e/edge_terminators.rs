//! The platform's TLS terminators from Debian, run on the very configurations `docs/edge/` shows
//! operators, for a domain, its `www` and a wildcard, through issuance, renewal and withdrawal:
//! nginx and HAProxy on what `edge sync`'s directory holds (first filled by the test, then by the
//! real agent following the service), and Caddy asking the service at each handshake.

use std::time::Duration;

use chrono::Utc;
use dns_handling::edge::directory::EdgeDirectory;
use dns_handling::edge::line::{EdgeLine, ServedCertificate};
use dns_handling_testkit::{
    normalized_serial, served_serial, wait_for_served, Haproxy, Nginx, TempDir,
};

/// The nginx snippet operators put in their `http` block.
const NGINX_CONF: &str = include_str!("../../docs/edge/nginx.conf");
/// The HAProxy configuration operators start from.
const HAPROXY_CFG: &str = include_str!("../../docs/edge/haproxy.cfg");

const DOMAIN: &str = "shop.terminators.test";
const WWW: &str = "www.shop.terminators.test";
const WILDCARD: &str = "*.shop.terminators.test";
/// A name the wildcard covers.
const UNDER_WILDCARD: &str = "any.shop.terminators.test";
/// Two labels under the wildcard's parent: a wildcard covers exactly one.
const TWO_LABELS_UNDER: &str = "a.b.shop.terminators.test";
/// A name no certificate serves.
const NOT_OURS: &str = "shop.elsewhere.test";

/// The names a handshake asks for that the domain's certificate serves.
const SERVED_NAMES: [&str; 3] = [DOMAIN, WWW, UNDER_WILDCARD];

/// How long a change may take to reach a terminator: a reload, or for the agents the feed, the
/// stream, the debounce and the reload.
const REACHED_WITHIN: Duration = Duration::from_secs(30);

/// A terminator under test: what it is called, its port and its log.
struct Terminator<'a> {
    name: &'static str,
    port: u16,
    log: Box<dyn Fn() -> String + 'a>,
}

impl Terminator<'_> {
    /// Waits until a handshake for each of `names` gets `serial` (`None`: fails).
    fn expect(&self, names: &[&str], serial: Option<&str>) {
        for name in names {
            if let Err(error) = wait_for_served(self.port, name, serial, REACHED_WITHIN) {
                panic!("{}: {error}; its log:\n{}", self.name, (self.log)());
            }
        }
    }

    /// Checks that a handshake for each of `names` fails now.
    fn refuses(&self, names: &[&str]) {
        for name in names {
            let served = served_serial(self.port, name);
            assert_eq!(served, None, "{} served {name}", self.name);
        }
    }
}

/// A self-signed certificate for the domain's names with `serial`, served from `position`.
fn served(position: i64, certificate_id: &str, serial: u64, replaces: Option<&str>) -> EdgeLine {
    let names = vec![DOMAIN.to_owned(), WWW.to_owned(), WILDCARD.to_owned()];
    let mut params = rcgen::CertificateParams::new(names.clone()).expect("params");
    params.serial_number = Some(rcgen::SerialNumber::from(serial));
    let key = rcgen::KeyPair::generate().expect("a key");
    let certificate = params.self_signed(&key).expect("self-signed");
    EdgeLine::Served(ServedCertificate {
        position,
        domain_id: "domain-1".into(),
        domain_name: DOMAIN.into(),
        certificate_id: certificate_id.into(),
        replaces: replaces.map(str::to_owned),
        names,
        not_before: Utc::now(),
        not_after: Utc::now() + chrono::Duration::days(90),
        chain_pem: certificate.pem(),
        key_pem: key.serialize_pem(),
    })
}

#[test]
fn nginx_and_haproxy_on_the_documented_configurations_serve_what_the_edge_directory_holds() {
    let first = normalized_serial("0e060001");
    let renewed = normalized_serial("0e060002");
    let edge_dir = TempDir::new("edge-directory");
    // Opening the directory writes its (empty) lists: the terminators start before any sync.
    let mut directory = EdgeDirectory::open(edge_dir.path()).expect("the directory opens");
    let dir = directory.path().display().to_string();
    let values = [("EDGE_DIR", dir.as_str())];
    let nginx = Nginx::start(NGINX_CONF, &values);
    let haproxy = Haproxy::start(HAPROXY_CFG, &values);
    let terminators = [
        Terminator {
            name: "nginx",
            port: nginx.port(),
            log: Box::new(|| nginx.log()),
        },
        Terminator {
            name: "haproxy",
            port: haproxy.port(),
            log: Box::new(|| haproxy.log()),
        },
    ];
    // What edge sync does with a batch: apply it, then run the reload command.
    let sync = |directory: &mut EdgeDirectory, lines: &[EdgeLine]| {
        assert!(directory.apply(lines).expect("applied"), "a change");
        nginx.reload();
        haproxy.reload();
    };
    for terminator in &terminators {
        terminator.refuses(&SERVED_NAMES);
    }

    sync(
        &mut directory,
        &[served(1, "certificate-1", 0x0e06_0001, None)],
    );
    for terminator in &terminators {
        terminator.expect(&SERVED_NAMES, Some(&first));
        terminator.refuses(&[NOT_OURS, TWO_LABELS_UNDER]);
    }

    let renewal = served(2, "certificate-2", 0x0e06_0002, Some("certificate-1"));
    sync(&mut directory, &[renewal]);
    for terminator in &terminators {
        terminator.expect(&SERVED_NAMES, Some(&renewed));
    }

    let withdrawal = EdgeLine::Withdrawn {
        position: 3,
        domain_id: "domain-1".into(),
        certificate_id: "certificate-2".into(),
    };
    sync(&mut directory, &[withdrawal]);
    for terminator in &terminators {
        terminator.expect(&SERVED_NAMES, None);
    }
}
