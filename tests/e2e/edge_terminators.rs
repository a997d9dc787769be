//! The platform's TLS terminators from Debian, run on the very configurations `docs/edge/` shows
//! operators, for a domain, its `www` and a wildcard, through issuance, renewal and withdrawal:
//! nginx and HAProxy on what `edge sync`'s directory holds (first filled by the test, then by the
//! real agent following the service), and Caddy asking the service at each handshake.

use std::os::unix::fs::PermissionsExt as _;
use std::time::Duration;

use chrono::Utc;
use dns_handling::edge::directory::EdgeDirectory;
use dns_handling::edge::line::{EdgeLine, ServedCertificate};
use dns_handling_testkit::{
    normalized_serial, pebble_and_database, served_serial, verified_domain,
    verified_domain_with_alt_names, wait_for_served, Caddy, EdgeAgent, Haproxy, Nginx, Pebble,
    Service, StoreKind, TempDir,
};
use serde_json::{json, Value};

use crate::BINARY;

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

// ---------------------------------------------------------------------------------------------
// Against the service, on both stores with Pebble: Caddy asking `GET /edge/certificate` at each
// handshake; nginx and HAProxy fed by the real `dns-handling edge sync` processes.
// ---------------------------------------------------------------------------------------------

/// The Caddyfile operators start from.
const CADDYFILE: &str = include_str!("../../docs/edge/Caddyfile");

const ADMIN_TOKEN: &str = "terminators-admin-token";
const EDGE_NAME: &str = "edge1";
const EDGE_TOKEN: &str = "terminators-edge-token";
/// A second domain, removed at the end.
const BLOG: &str = "blog.terminators.test";

/// Publishes every challenge record of a `202` (an issuance or a renewal; one on an
/// authorization the CA still holds has none), in place of the names' earlier records: four
/// values at one name overflow the UDP answer Pebble reads.
fn publish_all(pebble: &Pebble, started: &Value) {
    let challenges = started["challenges"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let field = |challenge: &Value, name: &str| challenge[name].as_str().expect(name).to_owned();
    for challenge in &challenges {
        pebble.clear_txt(&field(challenge, "challenge_domain"));
    }
    for challenge in &challenges {
        pebble.set_txt(
            &field(challenge, "challenge_domain"),
            &field(challenge, "expected_txt_value"),
        );
    }
}

/// The domain's current certificate as the API reports it: (id, serial, chain).
async fn current_certificate(service: &Service, id: &str) -> (String, String, String) {
    let (code, view) = service.get(&format!("/domains/{id}/certificate")).await;
    assert_eq!(code, 200, "{view}");
    let field = |name: &str| view[name].as_str().expect(name).to_owned();
    (
        field("id"),
        normalized_serial(&field("serial")),
        field("chain_pem"),
    )
}

/// Issues the verified domain's certificate, every challenge published; returns its serial.
async fn issued(service: &Service, pebble: &Pebble, id: &str) -> String {
    let (code, started) = service
        .post(&format!("/domains/{id}/issue-certificate"), None)
        .await;
    assert_eq!(code, 202, "{started}");
    publish_all(pebble, &started);
    let view = service
        .wait_for_status(id, &["active", "failed"], Duration::from_secs(90))
        .await;
    assert_eq!(view["status"], "active", "{view}");
    current_certificate(service, id).await.1
}

/// Waits until `path` exists and holds each of `needles`.
async fn wait_for_file_containing(path: &std::path::Path, needles: &[&str], within: Duration) {
    let deadline = std::time::Instant::now() + within;
    let holds = |text: String| needles.iter().all(|needle| text.contains(needle));
    while !std::fs::read_to_string(path).is_ok_and(holds) {
        assert!(
            std::time::Instant::now() < deadline,
            "{} never held {needles:?}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The directory holds exactly the files of `served` (stem, chain), the lists and the state:
/// nothing left from a write cut short; the chains are the API's; the keys are `0600`.
fn assert_directory_exact(dir: &std::path::Path, served: &[(&str, &str)]) {
    let mut expected = vec![
        "crt-list.txt".to_owned(),
        "nginx-names.map".to_owned(),
        "state.json".to_owned(),
    ];
    for (stem, chain) in served {
        expected.extend(["crt", "key", "pem"].map(|ext| format!("{stem}.{ext}")));
        let crt = std::fs::read_to_string(dir.join(format!("{stem}.crt"))).expect("the .crt");
        assert_eq!(crt.trim(), chain.trim(), "{stem}.crt is the API's chain");
        let pem = std::fs::read_to_string(dir.join(format!("{stem}.pem"))).expect("the .pem");
        assert!(pem.starts_with(&crt), "{stem}.pem: the chain, then the key");
        for ext in ["key", "pem"] {
            let path = dir.join(format!("{stem}.{ext}"));
            let mode = std::fs::metadata(&path)
                .expect("a key file")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{}", path.display());
        }
    }
    expected.sort();
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .expect("the directory lists")
        .map(|entry| {
            entry
                .expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    files.sort();
    assert_eq!(files, expected, "{}", dir.display());
    let list = std::fs::read_to_string(dir.join("crt-list.txt")).expect("the crt-list");
    assert_eq!(list.lines().count(), served.len(), "{list}");
}

/// Waits until a handshake for each of `names` no longer gets `serial` (it fails, or gets a
/// replacement the service issued meanwhile).
fn expect_no_longer(terminator: &Terminator, names: &[&str], serial: &str) {
    let deadline = std::time::Instant::now() + REACHED_WITHIN;
    for name in names {
        while served_serial(terminator.port, name).as_deref() == Some(serial) {
            assert!(
                std::time::Instant::now() < deadline,
                "{} still serves {serial} for {name}; its log:\n{}",
                terminator.name,
                (terminator.log)()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// An agent, its directory and its change command (a script the test writes once the
/// terminator is up, which records each run).
struct Agent {
    dir: std::path::PathBuf,
    script: std::path::PathBuf,
    process: EdgeAgent,
}

/// The edges of a test: an agent per file-reading terminator, nginx, HAProxy, and Caddy.
struct Edges {
    scratch: TempDir,
    nginx_agent: Agent,
    haproxy_agent: Agent,
    nginx: Nginx,
    haproxy: Haproxy,
    caddy: Caddy,
}

impl Edges {
    /// Starts the agents first, as an edge starts, each on its own directory; once their lists
    /// name `names`, the terminators on the `docs/edge/` configurations; then the change
    /// scripts, which reload them.
    async fn start(service: &Service, names: &[&str]) -> Edges {
        let scratch = TempDir::new("edge-terminators");
        let agent = |which: &str| {
            let dir = scratch.path().join(which);
            let script = scratch.path().join(format!("{which}-on-change.sh"));
            let on_change = format!("sh '{}'", script.display());
            let log = scratch.path().join(format!("{which}-agent.log"));
            let server = service.url("");
            let process = EdgeAgent::start(BINARY, &server, EDGE_TOKEN, &dir, &on_change, &log);
            Agent {
                dir,
                script,
                process,
            }
        };
        let (nginx_agent, haproxy_agent) = (agent("nginx"), agent("haproxy"));
        // The map is the last list an agent writes (at a snapshot's end, not within it).
        for agent in [&nginx_agent, &haproxy_agent] {
            let map = agent.dir.join("nginx-names.map");
            wait_for_file_containing(&map, names, REACHED_WITHIN).await;
        }
        let resolved = |agent: &Agent| agent.dir.canonicalize().expect("resolves");
        let nginx_dir = resolved(&nginx_agent).display().to_string();
        let nginx = Nginx::start(NGINX_CONF, &[("EDGE_DIR", &nginx_dir)]);
        let haproxy_dir = resolved(&haproxy_agent).display().to_string();
        let haproxy = Haproxy::start(HAPROXY_CFG, &[("EDGE_DIR", &haproxy_dir)]);
        let service_address = service.address.to_string();
        let caddy = Caddy::start(
            CADDYFILE,
            &[
                ("SERVICE", &service_address),
                ("EDGE_NAME", EDGE_NAME),
                ("EDGE_TOKEN", EDGE_TOKEN),
            ],
        );
        let runs = scratch.path().join("on-change-runs");
        for (agent, reload) in [
            (&nginx_agent, nginx.reload_command()),
            (&haproxy_agent, haproxy.reload_command()),
        ] {
            let script = format!("echo \"$0\" >> '{}'\n{reload}\n", runs.display());
            std::fs::write(&agent.script, script).expect("the change script");
        }
        Edges {
            scratch,
            nginx_agent,
            haproxy_agent,
            nginx,
            haproxy,
            caddy,
        }
    }

    fn terminators(&self) -> [Terminator<'_>; 3] {
        [
            Terminator {
                name: "caddy",
                port: self.caddy.port(),
                log: Box::new(|| self.caddy.log()),
            },
            Terminator {
                name: "nginx",
                port: self.nginx.port(),
                log: Box::new(|| self.fed_log(&self.nginx.log(), &self.nginx_agent)),
            },
            Terminator {
                name: "haproxy",
                port: self.haproxy.port(),
                log: Box::new(|| self.fed_log(&self.haproxy.log(), &self.haproxy_agent)),
            },
        ]
    }

    /// A terminator's log with its agent's and the change scripts' runs: what a failure needs
    /// to tell a reload that did not run from one that ran too early.
    fn fed_log(&self, terminator: &str, agent: &Agent) -> String {
        format!(
            "{terminator}\n--- its agent:\n{}\n--- the change scripts' runs:\n{}\n--- its state.json:\n{}",
            agent.process.log(),
            self.runs(),
            // The record names files and certificates, never a key.
            std::fs::read_to_string(agent.dir.join("state.json")).unwrap_or_default()
        )
    }

    fn agents(&self) -> [&Agent; 2] {
        [&self.nginx_agent, &self.haproxy_agent]
    }

    /// What the change scripts recorded: one line per run, naming the script.
    fn runs(&self) -> String {
        std::fs::read_to_string(self.scratch.path().join("on-change-runs")).unwrap_or_default()
    }
}

/// Renews the domain, its records published; waits until the API shows the new certificate
/// and returns its serial and chain.
async fn renewed(service: &Service, pebble: &Pebble, id: &str, serial: &str) -> (String, String) {
    let (code, renewing) = service.post(&format!("/domains/{id}/renew"), None).await;
    assert_eq!(code, 202, "{renewing}");
    publish_all(pebble, &renewing);
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let (_, now, chain) = current_certificate(service, id).await;
        if now != serial {
            return (now, chain);
        }
        if std::time::Instant::now() > deadline {
            let (_, view) = service.get(&format!("/domains/{id}")).await;
            panic!("no renewal: {view}; {renewing}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

crate::on_both_stores!(caddy_nginx_and_haproxy_serve_what_the_service_issues);

async fn caddy_nginx_and_haproxy_serve_what_the_service_issues(kind: StoreKind) {
    let (pebble, _database, mut env) = pebble_and_database(kind).await;
    env.insert("AUTH_TOKEN".into(), ADMIN_TOKEN.into());
    env.insert("EDGE_TOKENS".into(), format!("{EDGE_NAME}={EDGE_TOKEN}"));
    let service = Service::start(BINARY, &env);
    let shop = verified_domain_with_alt_names(&service, &pebble, DOMAIN, &[WWW, WILDCARD]).await;
    let blog = verified_domain(&service, &pebble, BLOG).await;
    let (shop_serial, blog_serial) = tokio::join!(
        issued(&service, &pebble, &shop),
        issued(&service, &pebble, &blog)
    );
    let mut edges = Edges::start(&service, &[DOMAIN, BLOG]).await;
    for terminator in &edges.terminators() {
        terminator.expect(&SERVED_NAMES, Some(&shop_serial));
        terminator.expect(&[BLOG], Some(&blog_serial));
        terminator.refuses(&[NOT_OURS, TWO_LABELS_UNDER]);
    }
    let (_, _, shop_chain) = current_certificate(&service, &shop).await;
    let (_, _, blog_chain) = current_certificate(&service, &blog).await;
    for agent in edges.agents() {
        assert_directory_exact(&agent.dir, &[(DOMAIN, &shop_chain), (BLOG, &blog_chain)]);
    }

    // A renewal, served everywhere within seconds. The HAProxy agent is killed (SIGKILL) the
    // moment the API shows the new certificate, its line on the way or being written, and
    // started again: its directory ends exact, and its terminator is reloaded.
    let (renewed_serial, renewed_chain) = renewed(&service, &pebble, &shop, &shop_serial).await;
    let shown = std::time::Instant::now();
    edges.haproxy_agent.process.kill();
    edges.haproxy_agent.process.restart();
    for terminator in &edges.terminators() {
        terminator.expect(&SERVED_NAMES, Some(&renewed_serial));
        eprintln!(
            "{} serves the renewed certificate {:.2} s after the API showed it (checked in turn)",
            terminator.name,
            shown.elapsed().as_secs_f64()
        );
    }
    for agent in edges.agents() {
        assert_directory_exact(&agent.dir, &[(DOMAIN, &renewed_chain), (BLOG, &blog_chain)]);
        let script = agent.script.display().to_string();
        assert!(edges.runs().contains(&script), "{script} never ran");
    }
    assert!(
        edges.nginx.log().contains("reconfiguring"),
        "{}",
        edges.nginx.log()
    );
    let haproxy_log = edges.haproxy.log();
    assert!(haproxy_log.contains("Reloading HAProxy"), "{haproxy_log}");

    // A revocation and a removal: no longer served anywhere.
    let revoke = format!("/domains/{shop}/certificate/revoke");
    let (code, revoked) = service.post(&revoke, Some(json!({}))).await;
    assert_eq!(code, 200, "{revoked}");
    assert_eq!(service.delete(&format!("/domains/{blog}")).await, 204);
    for terminator in &edges.terminators() {
        expect_no_longer(terminator, &SERVED_NAMES, &renewed_serial);
        terminator.expect(&[BLOG], None);
    }
    for agent in [&mut edges.nginx_agent, &mut edges.haproxy_agent] {
        assert!(agent.process.is_running(), "{}", agent.process.log());
        assert!(!agent.process.log().contains("PRIVATE KEY"));
        for file in ["state.json", "crt-list.txt", "nginx-names.map"] {
            let text = std::fs::read_to_string(agent.dir.join(file)).expect(file);
            assert!(!text.contains("PRIVATE KEY"), "{file}");
        }
    }
    assert!(
        !service.log().contains("PRIVATE KEY"),
        "no key in the service's log"
    );
}
