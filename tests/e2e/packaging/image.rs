//! The container image of `deploy/Dockerfile`, built and run as an operator would, with no
//! image registry: the base is a Debian root file system made by mmdebstrap (cached under
//! target/packaging/) and imported, substituted through the Dockerfile's `BASE` argument;
//! buildah builds the image from the release binary; podman runs it (with runc: this machine's
//! mixed cgroup hierarchy stops crun) on the host's network against a Pebble on the host.
//! Needs root, mmdebstrap, buildah, podman and runc (tests/run.sh installs them).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use dns_handling_testkit::{
    active_domain, dig, free_port, verified_domain, Pebble, PebbleOptions, Service, TempDir,
};
use serde_json::Value;

use super::systemd_unit::release_binary;

/// The image the base root file system is imported as.
const BASE: &str = "localhost/dns-handling-test-base:bookworm";
/// The image under test.
const IMAGE: &str = "localhost/dns-handling:test";
/// The user the Dockerfile makes.
const UID: u32 = 10053;

fn repository() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn output(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} runs (tests/run.sh installs it): {e}"))
}

/// Runs `program args`, asserting success; its stdout.
fn run_ok(program: &str, args: &[&str]) -> String {
    let out = output(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?}:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// podman with the runc runtime.
fn podman(args: &[&str]) -> Output {
    let mut all = vec!["--runtime", "runc"];
    all.extend_from_slice(args);
    output("podman", &all)
}

fn podman_ok(args: &[&str]) -> String {
    let out = podman(args);
    assert!(
        out.status.success(),
        "podman {args:?}:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The base image: Debian bookworm's minimal root (what `debian:bookworm-slim` holds) with
/// ca-certificates and setcap, made by mmdebstrap once and kept as a tarball under target/.
fn base_image() {
    let cache = repository().join("target/packaging/bookworm-minbase.tar");
    if !cache.is_file() {
        std::fs::create_dir_all(cache.parent().expect("parent")).expect("target/packaging");
        let partial = cache.with_extension("partial.tar");
        let started = Instant::now();
        run_ok(
            "mmdebstrap",
            &[
                "--variant=minbase",
                "--include=ca-certificates,libcap2-bin",
                "bookworm",
                partial.to_str().expect("path"),
            ],
        );
        std::fs::rename(&partial, &cache).expect("keep the base");
        println!("mmdebstrap made the base in {:?}", started.elapsed());
    }
    if !podman(&["image", "exists", BASE]).status.success() {
        podman_ok(&["import", cache.to_str().expect("path"), BASE]);
    }
}

/// `buildah bud` of deploy/Dockerfile over `BASE`, in a build context holding the release
/// binary where the Dockerfile takes it (the repository itself works as well, but is large).
fn build_image() {
    let context = TempDir::new("image-context");
    let binary = context.path().join("target/release/dns-handling");
    std::fs::create_dir_all(binary.parent().expect("parent")).expect("context");
    if std::fs::hard_link(release_binary(), &binary).is_err() {
        std::fs::copy(release_binary(), &binary).expect("copy the binary");
    }
    let dockerfile = repository().join("deploy/Dockerfile");
    let started = Instant::now();
    run_ok(
        "buildah",
        &[
            "bud",
            "--runtime",
            "runc",
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
            "--format",
            "docker",
            "--build-arg",
            &format!("BASE={BASE}"),
            "-f",
            dockerfile.to_str().expect("path"),
            "-t",
            IMAGE,
            context.path().to_str().expect("path"),
        ],
    );
    println!("buildah built the image in {:?}", started.elapsed());
}

/// A named podman volume, removed at the end.
struct Volume(String);

impl Drop for Volume {
    fn drop(&mut self) {
        let _ = podman(&["volume", "rm", "-f", &self.0]);
    }
}

/// A container of the image, removed at the end.
struct Container(String);

impl Container {
    fn run(name: &str, volume: &Volume, env: &HashMap<String, String>, ca: &Path) -> Container {
        let mut args: Vec<String> = [
            "run",
            "-d",
            "--name",
            name,
            "--network",
            "host",
            "--ulimit",
            "nofile=16384:16384",
            "--ulimit",
            "nproc=4096:4096",
        ]
        .map(str::to_owned)
        .to_vec();
        args.push("-v".into());
        args.push(format!("{}:/var/lib/dns-handling", volume.0));
        args.push("-v".into());
        args.push(format!("{}:/etc/pebble-ca.pem:ro", ca.display()));
        for (key, value) in env {
            args.push("-e".into());
            args.push(format!("{key}={value}"));
        }
        args.push(IMAGE.into());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        podman_ok(&args);
        Container(name.to_owned())
    }

    fn logs(&self) -> String {
        let out = podman(&["logs", &self.0]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    fn inspect(&self, format: &str) -> String {
        podman_ok(&["inspect", "--format", format, &self.0])
    }

    /// Polls `/readyz` on the host's network until it answers 200.
    async fn wait_ready(&self, address: SocketAddr) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let answer = client
                .get(format!("http://{address}/readyz"))
                .send()
                .await
                .map(|r| r.status().as_u16());
            if matches!(answer, Ok(200)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "not ready ({answer:?}); its log:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman(&["rm", "-f", "-t", "0", &self.0]);
    }
}

/// Removes the images when the test ends (the base's tarball stays cached under target/).
struct RemoveImages;

impl Drop for RemoveImages {
    fn drop(&mut self) {
        let _ = podman(&["rmi", "-f", IMAGE, BASE]);
    }
}

/// Port 53 of a loopback address where it is free (the delegation tests take 127.0.53.x).
fn loopback_port_53() -> SocketAddr {
    for _ in 0..50 {
        let last = rand::random::<u8>().clamp(2, 250);
        let address = SocketAddr::from(([127, 0, 54, last], 53));
        let free = std::net::UdpSocket::bind(address).is_ok()
            && std::net::TcpListener::bind(address).is_ok();
        if free {
            return address;
        }
    }
    panic!("no loopback address with a free port 53 (the test runs as root)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_runs_as_its_user_binds_port_53_and_keeps_its_orders_across_a_sigterm() {
    let _images = RemoveImages;
    base_image();
    build_image();
    let config: Value = serde_json::from_str(&podman_ok(&[
        "image",
        "inspect",
        "--format",
        "{{json .Config}}",
        IMAGE,
    ]))
    .expect("image config");
    assert_eq!(config["User"], "dns-handling:dns-handling", "{config}");
    assert_eq!(config["StopSignal"], "SIGTERM", "{config}");
    // Docker's format keeps the health check beside the OCI configuration.
    let healthcheck: Value = serde_json::from_str(&podman_ok(&[
        "image",
        "inspect",
        "--format",
        "{{json .Config.Healthcheck}}",
        IMAGE,
    ]))
    .expect("health check");
    assert_eq!(
        healthcheck["Test"],
        serde_json::json!(["CMD", "/usr/bin/dns-handling", "health", "--timeout", "4s"]),
        "{healthcheck}"
    );
    for port in ["8080/tcp", "53/udp", "53/tcp"] {
        assert!(
            config["ExposedPorts"].get(port).is_some(),
            "{port}: {config}"
        );
    }
    assert!(
        config["Volumes"].get("/var/lib/dns-handling").is_some(),
        "{config}"
    );

    let pebble = Pebble::start(PebbleOptions::default());
    let name = format!("dns-handling-test-{}", std::process::id());
    let volume = Volume(name.clone());
    podman_ok(&["volume", "create", &volume.0]);
    let port = free_port();
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let dns = loopback_port_53();
    // The image's own settings (0.0.0.0, the volume's database) with the test's CA and ports;
    // the delegation zone's DNS server on port 53, which the user binds through the capability.
    let env: HashMap<String, String> = [
        ("SERVER_ADDR", format!("0.0.0.0:{port}")),
        ("ACME_DIRECTORY", pebble.directory_url()),
        ("ACME_CA_BUNDLE", "/etc/pebble-ca.pem".into()),
        ("DNS_NAMESERVERS", pebble.nameserver()),
        ("POLL_INTERVAL", "200ms".into()),
        ("REPLICA_ID", "container".into()),
        ("DELEGATION_ZONE", "acme.image.test".into()),
        (
            "DELEGATION_NAMESERVERS",
            "ns1.image.test,ns2.image.test".into(),
        ),
        ("DNS_LISTEN_ADDR", dns.to_string()),
    ]
    .map(|(k, v)| (k.to_owned(), v))
    .into();
    let container = Container::run(&name, &volume, &env, &pebble.ca_bundle());
    container.wait_ready(address).await;
    // The image's HEALTHCHECK, run by podman in the container.
    podman_ok(&["healthcheck", "run", &name]);

    // The process runs as the image's user, holding CAP_NET_BIND_SERVICE (bit 10) alone.
    let pid = container.inspect("{{.State.Pid}}");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let field = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(str::trim)
            .unwrap_or_default()
            .to_owned()
    };
    assert!(field("Uid:").starts_with(&format!("{UID}\t")), "{status}");
    assert_eq!(field("CapEff:"), "0000000000000400", "{status}");
    // Port 53 answers for the delegation zone.
    let soa = dig(dns, &["acme.image.test", "SOA"]);
    assert_eq!(soa.status, "NOERROR", "{}", soa.output);
    assert_eq!(soa.answers("SOA").len(), 1, "{}", soa.output);

    let service = Service::attach(address, &HashMap::new());
    let issued = active_domain(&service, &pebble, "shop.image.test").await;
    let (code, history) = service.get(&format!("/domains/{issued}/events")).await;
    assert_eq!(code, 200, "{history}");
    // A second order, placed and waiting for its record when the container is stopped.
    let pending = verified_domain(&service, &pebble, "cart.image.test").await;
    let (code, started) = service
        .post(&format!("/domains/{pending}/issue-certificate"), None)
        .await;
    assert_eq!(code, 202, "{started}");

    // `podman stop` sends the image's STOPSIGNAL: a graceful stop, exit 0.
    podman_ok(&["stop", "-t", "60", &name]);
    assert_eq!(
        container.inspect("{{.State.ExitCode}}"),
        "0",
        "{}",
        container.logs()
    );
    drop(container);

    let container = Container::run(&format!("{name}-again"), &volume, &env, &pebble.ca_bundle());
    container.wait_ready(address).await;
    let (code, again) = service.get(&format!("/domains/{issued}/events")).await;
    assert_eq!(code, 200, "{again}");
    // Every event before the stop is there, unchanged, in order (a health check may add one).
    let (before, after) = (
        history.as_array().expect("a list"),
        again.as_array().expect("a list"),
    );
    assert!(
        before
            .iter()
            .any(|e| e["event_type"] == "CertificateIssued"),
        "{history}"
    );
    assert_eq!(
        after.get(..before.len()),
        Some(&before[..]),
        "the history changed"
    );
    pebble.set_txt(
        started["challenge_domain"]
            .as_str()
            .expect("challenge_domain"),
        started["expected_txt_value"].as_str().expect("value"),
    );
    let view = service
        .wait_for_status(&pending, &["active", "failed"], Duration::from_secs(90))
        .await;
    assert_eq!(view["status"], "active", "{view}\n{}", container.logs());

    // The volume holds the database and the keys generated beside it, the user's own.
    let mountpoint = PathBuf::from(podman_ok(&[
        "volume",
        "inspect",
        "--format",
        "{{.Mountpoint}}",
        &volume.0,
    ]));
    for file in [
        "dns-handling.db",
        "dns-handling.db.kek",
        "dns-handling.db.audit-key",
    ] {
        let owner = run_ok(
            "stat",
            &["-c", "%u", mountpoint.join(file).to_str().expect("path")],
        );
        assert_eq!(owner.trim(), UID.to_string(), "{file}");
    }
}
