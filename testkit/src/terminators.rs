//! The TLS terminators of the edge tests, from Debian: Caddy, nginx and HAProxy, each run
//! privately on a free loopback port from a configuration template (the files of `docs/edge/`,
//! whose `{{PLACEHOLDER}}`s are filled here and by the test), and `openssl s_client` to see which
//! certificate a terminator serves for a name.
//!
//! Every terminator is stopped on drop: SIGTERM to its master, so that nginx's and HAProxy's
//! workers go with it, then SIGKILL if it lingers.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use tokio_rustls::rustls;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{DigitallySignedStruct, SignatureScheme};

use crate::process::{free_port, program, spawn, wait_for_tcp, ChildGuard, TempDir};

/// Where missing terminators come from.
const INSTALL_HINT: &str =
    "Run the test script (tests/run.sh), which installs caddy, nginx-light and haproxy.";

/// A terminator's process, its port and its private directory (configuration, logs, pid file).
struct Running {
    port: u16,
    dir: TempDir,
    log_path: PathBuf,
    guard: ChildGuard,
}

impl Running {
    /// Starts `command` (its stdout and stderr to `log` in `dir`) and waits until `port` listens.
    fn start(mut command: Command, name: &str, port: u16, dir: TempDir, log: &str) -> Running {
        let log_path = dir.path().join(log);
        let output = std::fs::File::create(&log_path).expect("a log file");
        command
            .stdin(Stdio::null())
            .stdout(output.try_clone().expect("a log file"))
            .stderr(output);
        let mut guard = spawn(&mut command, name, INSTALL_HINT);
        if let Err(error) = wait_for_tcp(port, name, &mut guard.child) {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            panic!("{error}; its log:\n{log}");
        }
        Running {
            port,
            dir,
            log_path,
            guard,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let pid = self.guard.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.guard.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Still running: the guard's SIGKILL follows.
    }
}

/// `template` with every `{{NAME}}` of `values` replaced; panics naming a placeholder left over,
/// so that a configuration and its test cannot drift apart unseen.
pub fn fill_template(template: &str, values: &[(&str, &str)]) -> String {
    let mut text = template.to_owned();
    for (name, value) in values {
        text = text.replace(&format!("{{{{{name}}}}}"), value);
    }
    if let Some(at) = text.find("{{") {
        let rest = text[at..].lines().next().unwrap_or_default();
        panic!("a placeholder of the configuration is not filled: {rest}");
    }
    text
}

/// The placeholders every terminator fills itself: where it listens.
fn listen_values(port: &str) -> [(&'static str, &str); 2] {
    [("ADDRESS", "127.0.0.1"), ("PORT", port)]
}

/// Caddy, run with `caddy run` on a Caddyfile (its data under a private `HOME`).
pub struct Caddy(Running);

impl Caddy {
    /// Starts Caddy on `template` (a Caddyfile) with `{{ADDRESS}}`/`{{PORT}}` filled here and
    /// `values` for the rest, and waits until it listens.
    pub fn start(template: &str, values: &[(&str, &str)]) -> Caddy {
        let dir = TempDir::new("caddy");
        let port = free_port();
        let config = fill_with_listen(template, values, port);
        let path = dir.path().join("Caddyfile");
        std::fs::write(&path, config).expect("write the Caddyfile");
        let mut command = Command::new(program("caddy"));
        command
            .args(["run", "--adapter", "caddyfile", "--config"])
            .arg(&path)
            // Caddy keeps its storage (locks, nothing else here) under HOME and XDG's homes.
            .env("HOME", dir.path())
            .env("XDG_DATA_HOME", dir.path().join("data"))
            .env("XDG_CONFIG_HOME", dir.path().join("config"));
        Caddy(Running::start(command, "caddy", port, dir, "caddy.log"))
    }

    /// The HTTPS port.
    pub fn port(&self) -> u16 {
        self.0.port
    }

    /// Caddy's log (JSON lines).
    pub fn log(&self) -> String {
        self.0.log()
    }
}

/// nginx in the foreground with a private main configuration that includes the template (an
/// `http`-level snippet: a `map` and a `server`) and keeps pid file, logs and temporary files in
/// a private directory.
pub struct Nginx(Running);

impl Nginx {
    /// Starts nginx on `template` with `{{ADDRESS}}`/`{{PORT}}` filled here and `values` for the
    /// rest, and waits until it listens.
    pub fn start(template: &str, values: &[(&str, &str)]) -> Nginx {
        let dir = TempDir::new("nginx");
        let port = free_port();
        let run = dir.path().display().to_string();
        let snippet = dir.path().join("edge.conf");
        std::fs::write(&snippet, fill_with_listen(template, values, port)).expect("write");
        // The workers read the key files at each handshake: they must run as the user who wrote
        // them (0600). As root, nginx would switch them to `nobody` unless told otherwise;
        // as anyone else it cannot switch at all.
        let user = if is_root(dir.path()) {
            "user root;"
        } else {
            ""
        };
        let main = format!(
            "{user}
worker_processes 1;
pid {run}/nginx.pid;
error_log {run}/error.log notice;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {run}/body;
    proxy_temp_path {run}/proxy;
    fastcgi_temp_path {run}/fastcgi;
    uwsgi_temp_path {run}/uwsgi;
    scgi_temp_path {run}/scgi;
    include {};
}}
",
            snippet.display()
        );
        std::fs::write(dir.path().join("nginx.conf"), main).expect("write nginx.conf");
        let mut command = Command::new(program("nginx"));
        command
            .args(nginx_options(dir.path()))
            .args(["-g", "daemon off;"]);
        Nginx(Running::start(command, "nginx", port, dir, "nginx.out"))
    }

    /// The HTTPS port.
    pub fn port(&self) -> u16 {
        self.0.port
    }

    /// The shell command that makes this nginx load its configuration again (edge sync's
    /// `--on-change`): `nginx -s reload` on its private configuration.
    pub fn reload_command(&self) -> String {
        let options: Vec<String> = nginx_options(self.0.dir.path())
            .into_iter()
            .map(|option| format!("'{option}'"))
            .collect();
        format!(
            "'{}' {} -s reload",
            program("nginx").display(),
            options.join(" ")
        )
    }

    /// Runs [`Nginx::reload_command`]. nginx reloads after the command returns: look for the
    /// outcome with a deadline.
    pub fn reload(&self) {
        run_shell(&self.reload_command());
    }

    /// nginx's error log (notices included: each reload shows there).
    pub fn log(&self) -> String {
        let errors = std::fs::read_to_string(self.0.dir.path().join("error.log"));
        format!("{}{}", self.0.log(), errors.unwrap_or_default())
    }
}

/// The options that point nginx at its private directory (prefix, error log before the
/// configuration is read, configuration).
fn nginx_options(dir: &Path) -> Vec<String> {
    let run = dir.display();
    vec![
        "-p".into(),
        format!("{run}/"),
        "-e".into(),
        format!("{run}/error.log"),
        "-c".into(),
        format!("{run}/nginx.conf"),
    ]
}

/// HAProxy in master-worker mode (`-W`, as Debian's unit runs it), in the foreground, with a pid
/// file holding the master's pid: SIGUSR2 to it reloads.
pub struct Haproxy(Running);

impl Haproxy {
    /// Starts HAProxy on `template` (a whole configuration) with `{{ADDRESS}}`/`{{PORT}}` filled
    /// here and `values` for the rest, and waits until it listens.
    pub fn start(template: &str, values: &[(&str, &str)]) -> Haproxy {
        let dir = TempDir::new("haproxy");
        let port = free_port();
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, fill_with_listen(template, values, port)).expect("write");
        let mut command = Command::new(program("haproxy"));
        command
            .arg("-W")
            .arg("-p")
            .arg(dir.path().join("haproxy.pid"))
            .arg("-f")
            .arg(&path);
        Haproxy(Running::start(command, "haproxy", port, dir, "haproxy.log"))
    }

    /// The HTTPS port.
    pub fn port(&self) -> u16 {
        self.0.port
    }

    /// The shell command that makes this HAProxy reload (edge sync's `--on-change`): SIGUSR2 to
    /// the master, whose pid its pid file holds, then a wait (10 s at most) until the master
    /// logs the new worker's `Loading success`, as `systemctl reload` waits. A SIGUSR2 that
    /// reaches the master while it is still re-executing itself for the previous one can be
    /// lost, leaving the older files served; waiting keeps the agent's next reload after it.
    pub fn reload_command(&self) -> String {
        let pid_file = self.0.dir.path().join("haproxy.pid");
        let log = self.0.log_path.display();
        format!(
            "loaded=$(grep -c 'Loading success' '{log}'); kill -USR2 \"$(cat '{}')\"; \
             for _ in $(seq 100); do \
             [ \"$(grep -c 'Loading success' '{log}')\" -gt \"$loaded\" ] && break; sleep 0.1; done",
            pid_file.display()
        )
    }

    /// Runs [`Haproxy::reload_command`]. The new worker takes over after the command returns:
    /// look for the outcome with a deadline.
    pub fn reload(&self) {
        run_shell(&self.reload_command());
    }

    /// HAProxy's log (the master's notices: each reload shows there).
    pub fn log(&self) -> String {
        self.0.log()
    }
}

/// `template` filled with where the terminator listens and the caller's `values`.
fn fill_with_listen(template: &str, values: &[(&str, &str)], port: u16) -> String {
    let port = port.to_string();
    let mut all = listen_values(&port).to_vec();
    all.extend_from_slice(values);
    fill_template(template, &all)
}

/// Whether this process runs as root (the owner of a directory it just created).
fn is_root(created: &Path) -> bool {
    std::fs::metadata(created).is_ok_and(|metadata| metadata.uid() == 0)
}

/// Runs `command` with `sh -c`; panics when it fails.
fn run_shell(command: &str) {
    let status = Command::new("sh")
        .args(["-c", command])
        .status()
        .expect("sh runs");
    assert!(status.success(), "{command:?} exited with {status}");
}

/// The serial number of the leaf certificate a terminator on `port` serves for `server_name`
/// (as [`normalized_serial`] writes it), or `None` when the handshake fails.
pub fn served_serial(port: u16, server_name: &str) -> Option<String> {
    // `timeout`: a terminator that hangs the handshake fails it rather than the test.
    let handshake = Command::new("timeout")
        .args(["10", "openssl", "s_client", "-connect"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["-servername", server_name])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .expect("openssl runs");
    let text = String::from_utf8_lossy(&handshake.stdout);
    const END: &str = "-----END CERTIFICATE-----";
    let begin = text.find("-----BEGIN CERTIFICATE-----")?;
    let end = begin + text[begin..].find(END)? + END.len();
    let mut x509 = Command::new("openssl")
        .args(["x509", "-noout", "-serial"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("openssl runs");
    std::io::Write::write_all(
        &mut x509.stdin.take().expect("piped"),
        &text.as_bytes()[begin..end],
    )
    .expect("write to openssl");
    let output = x509.wait_with_output().expect("openssl x509 ends");
    let serial = String::from_utf8_lossy(&output.stdout);
    let hex = serial.trim().strip_prefix("serial=")?;
    Some(normalized_serial(hex))
}

/// A serial number in hex as [`served_serial`] gives it: lower case, no separators, no leading
/// zeros (OpenSSL and the API write the same number differently).
pub fn normalized_serial(hex: &str) -> String {
    let digits: String = hex
        .chars()
        .filter(char::is_ascii_hexdigit)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let trimmed = digits.trim_start_matches('0');
    if trimmed.is_empty() {
        "0".into()
    } else {
        trimmed.into()
    }
}

/// Waits up to `within` until the terminator on `port` serves `expected` for `server_name`
/// (`None`: until it refuses the handshake); an error saying what it served instead.
pub fn wait_for_served(
    port: u16,
    server_name: &str,
    expected: Option<&str>,
    within: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + within;
    loop {
        let served = served_serial(port, server_name);
        if served.as_deref() == expected {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "served {served:?} for {server_name} after {within:?}, not {expected:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The leaf certificate (DER) a terminator on `port` presents for `server_name`, from a TLS
/// handshake made in process, or `None` when the handshake fails (or takes over 10 s). Where
/// [`served_serial`] runs two `openssl` processes per handshake, this spawns nothing, so a bench
/// can ask every millisecond. No session is resumed (a resumed handshake presents no
/// certificate), and the chain is not checked (the terminator serves whatever the service hands
/// it; a test compares the leaf), only the handshake's signature by the leaf's key.
pub async fn presented_leaf(port: u16, server_name: &str) -> Option<Vec<u8>> {
    let name = ServerName::try_from(server_name.to_owned()).ok()?;
    let handshake = async {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        let tls = HANDSHAKES.connect(name, tcp).await.ok()?;
        let (_, connection) = tls.get_ref();
        let leaf = connection.peer_certificates()?.first()?;
        Some(leaf.to_vec())
    };
    tokio::time::timeout(Duration::from_secs(10), handshake)
        .await
        .ok()
        .flatten()
}

/// The connector of [`presented_leaf`]: any certificate, no resumption.
static HANDSHAKES: LazyLock<tokio_rustls::TlsConnector> = LazyLock::new(|| {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("aws-lc-rs supports rustls's default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyLeaf(provider)))
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    tokio_rustls::TlsConnector::from(Arc::new(config))
});

/// Takes any certificate for any name, but still checks that the server signs the handshake
/// with the leaf's key.
#[derive(Debug)]
struct AnyLeaf(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyLeaf {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, certificate, signature, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, certificate, signature, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
