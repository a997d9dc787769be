//! `dns-handling edge sync`, the binary, following the service on both stores with Pebble: its
//! directory holds exactly what the service serves (combined PEM, `.crt`, `.key` mode 0600,
//! HAProxy's crt-list, the nginx map, state.json) after an issuance and a renewal; killed with
//! SIGKILL while it writes a certificate, then started again after a revocation, it ends exact;
//! it runs the change command; a removal takes the files away.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dns_handling_testkit::{active_domain, pebble_and_database, Service, StoreKind, TempDir};
use serde_json::{json, Value};

use crate::edge_stream::{current_certificate, issued, renewed, settled_after_revocation, TOKEN};
use crate::BINARY;

crate::on_both_stores!(edge_sync_keeps_its_directory_exact_through_renewal_a_crash_and_revocation);

/// The agent, killed when dropped.
struct Agent(Child);

impl Agent {
    fn start(service: &Service, dir: &Path, reloads: &Path, log: &Path) -> Agent {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("log");
        let child = Command::new(BINARY)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .args([
                "edge",
                "sync",
                "--server",
                &service.url(""),
                "--token",
                TOKEN,
            ])
            .arg("--dir")
            .arg(dir)
            .arg("--on-change")
            .arg(format!("echo reload >> {}", reloads.display()))
            .args(["--debounce", "100ms"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("the agent starts");
        Agent(child)
    }

    /// SIGKILL, as a crash.
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What the directory records as served: certificate id by domain id.
fn recorded(dir: &Path) -> Option<BTreeMap<String, String>> {
    let state: Value = serde_json::from_slice(&std::fs::read(dir.join("state.json")).ok()?).ok()?;
    let served = state["served"].as_object()?;
    Some(
        served
            .iter()
            .map(|(domain, held)| {
                (
                    domain.clone(),
                    held["certificate_id"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect(),
    )
}

/// Waits until the directory records exactly `expected` (domain id, certificate id).
async fn wait_for(dir: &Path, expected: &[(&str, &str)], log: &Path) {
    let expected: BTreeMap<String, String> = expected
        .iter()
        .map(|(d, c)| ((*d).to_owned(), (*c).to_owned()))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while recorded(dir).as_ref() != Some(&expected) {
        assert!(
            Instant::now() < deadline,
            "the directory records {:?}, not {expected:?}; agent log:\n{}",
            recorded(dir),
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A certificate as the service serves it: its files' stem, chain, key and names.
struct Expected {
    stem: String,
    chain: String,
    key: String,
    names: Vec<String>,
}

async fn expected(service: &Service, id: &str) -> Expected {
    let (code, certificate) = service.get(&format!("/domains/{id}/certificate")).await;
    assert_eq!(code, 200, "{certificate}");
    let (code, key) = service.get(&format!("/domains/{id}/certificate/key")).await;
    assert_eq!(code, 200, "{key}");
    let (_, view) = service.get(&format!("/domains/{id}")).await;
    let text = |value: &Value| value.as_str().expect("text").to_owned();
    let mut names: Vec<String> = certificate["names"]
        .as_array()
        .expect("names")
        .iter()
        .map(text)
        .collect();
    names.sort();
    Expected {
        stem: text(&view["domain_name"]),
        chain: text(&certificate["chain_pem"]),
        key: text(&key["private_key_pem"]),
        names,
    }
}

fn with_newline(pem: &str) -> String {
    if pem.ends_with('\n') {
        pem.to_owned()
    } else {
        format!("{pem}\n")
    }
}

/// Checks the directory holds exactly `served`: their files and nothing else, the lists naming
/// them and nothing else.
fn assert_exact(dir: &Path, served: &[Expected]) {
    let list = || {
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .expect("lists")
            .map(|entry| {
                entry
                    .expect("entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        files.sort();
        files
    };
    // The agent, still running, may be writing a file again as a later event of its feed
    // arrives (seen in a clean-clone run: `.state.json.partial` beside `state.json`); its
    // temporary file is gone once renamed. One that stays is still reported below.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut files = list();
    while files.iter().any(|name| name.ends_with(".partial"))
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
        files = list();
    }
    let mut wanted = vec![
        "crt-list.txt".to_owned(),
        "nginx-names.map".to_owned(),
        "state.json".to_owned(),
    ];
    for certificate in served {
        for extension in ["crt", "key", "pem"] {
            wanted.push(format!("{}.{extension}", certificate.stem));
        }
    }
    wanted.sort();
    assert_eq!(files, wanted);
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).expect(name);
    let mode = |name: &str| {
        std::fs::metadata(dir.join(name))
            .expect(name)
            .permissions()
            .mode()
            & 0o777
    };
    let mut crt_list = Vec::new();
    let mut map = Vec::new();
    for certificate in served {
        let (chain, key) = (
            with_newline(&certificate.chain),
            with_newline(&certificate.key),
        );
        let stem = &certificate.stem;
        assert_eq!(read(&format!("{stem}.crt")), chain);
        assert_eq!(read(&format!("{stem}.key")), key);
        assert_eq!(read(&format!("{stem}.pem")), format!("{chain}{key}"));
        assert_eq!(mode(&format!("{stem}.key")), 0o600);
        assert_eq!(mode(&format!("{stem}.pem")), 0o600);
        let mut line = vec![dir.join(format!("{stem}.pem")).display().to_string()];
        line.extend(certificate.names.iter().cloned());
        crt_list.push(line);
        for name in &certificate.names {
            map.push(match name.strip_prefix("*.") {
                Some(parent) => format!("~*^[^.]+\\.{}$ {stem};", parent.replace('.', "\\.")),
                None => format!("{name} {stem};"),
            });
        }
    }
    let mut listed: Vec<Vec<String>> = read("crt-list.txt")
        .lines()
        .map(|line| line.split(' ').map(str::to_owned).collect())
        .collect();
    for line in &mut listed {
        line[1..].sort();
    }
    listed.sort();
    crt_list.sort();
    assert_eq!(listed, crt_list);
    let mut mapped: Vec<String> = read("nginx-names.map").lines().map(str::to_owned).collect();
    mapped.sort();
    map.sort();
    assert_eq!(mapped, map);
}

fn reloads(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |text| text.lines().count())
}

async fn edge_sync_keeps_its_directory_exact_through_renewal_a_crash_and_revocation(
    kind: StoreKind,
) {
    let (pebble, _database, mut env) = pebble_and_database(kind).await;
    env.insert("AUTH_TOKEN".into(), TOKEN.into());
    let service = Service::start(BINARY, &env);
    let scratch = TempDir::new("edge-sync");
    let dir: PathBuf = scratch.path().join("certificates");
    let (reload_log, log) = (
        scratch.path().join("reloads"),
        scratch.path().join("agent.log"),
    );

    let shop = issued(&service, &pebble).await;
    let mut agent = Agent::start(&service, &dir, &reload_log, &log);
    let first = current_certificate(&service, &shop).await;
    wait_for(&dir, &[(shop.as_str(), first.as_str())], &log).await;
    assert_exact(&dir, &[expected(&service, &shop).await]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while reloads(&reload_log) == 0 {
        assert!(Instant::now() < deadline, "--on-change never ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let second = renewed(&service, &pebble, &shop).await;
    wait_for(&dir, &[(shop.as_str(), second.as_str())], &log).await;
    assert_exact(&dir, &[expected(&service, &shop).await]);

    // Killed as soon as the second domain's files start to appear (or, should the agent be
    // quicker than this loop, once it recorded them).
    let other = active_domain(&service, &pebble, "other.edge.test").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let started = std::fs::read_dir(&dir).expect("lists").any(|entry| {
            let name = entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned();
            name.contains("other.edge.test")
        });
        if started || recorded(&dir).is_some_and(|served| served.contains_key(&other)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the agent never wrote the second domain"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    agent.kill();
    let (code, body) = service
        .post(
            &format!("/domains/{shop}/certificate/revoke"),
            Some(json!({"reason": "superseded"})),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let reloaded = reloads(&reload_log);

    let _agent = Agent::start(&service, &dir, &reload_log, &log);
    let other_certificate = current_certificate(&service, &other).await;
    let (replacement, revoked) = settled_after_revocation(&service, &shop).await;
    let mut served = vec![(other.as_str(), other_certificate.as_str())];
    if !revoked {
        served.push((shop.as_str(), replacement.as_str()));
    }
    wait_for(&dir, &served, &log).await;
    let mut exact = vec![expected(&service, &other).await];
    if served.len() == 2 {
        exact.push(expected(&service, &shop).await);
    }
    assert_exact(&dir, &exact);
    let deadline = Instant::now() + Duration::from_secs(10);
    while reloads(&reload_log) == reloaded {
        assert!(
            Instant::now() < deadline,
            "--on-change did not run after the restart"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    assert_eq!(service.delete(&format!("/domains/{other}")).await, 204);
    served.remove(0);
    wait_for(&dir, &served, &log).await;
    exact.remove(0);
    assert_exact(&dir, &exact);
}
