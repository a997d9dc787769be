//! The Debian package, made by cargo-deb from the release binary (`cargo deb --no-build`) and
//! installed on this machine as an operator would: `dpkg -i`, the installed binary answering
//! from its installed paths, the system user, the state directory written by the service run
//! as that user, an upgrade keeping a changed configuration, `dpkg -r` keeping configuration
//! and state, `dpkg -P` removing them; lintian finding no error. Needs root (dpkg), cargo-deb
//! and lintian (tests/run.sh installs both). The package is purged when the test ends, passed
//! or failed, and the machine left as it was.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use dns_handling_testkit::TempDir;

use super::systemd_unit::release_binary;

const PACKAGE: &str = "dns-handling";
const CONFIG: &str = "/etc/dns-handling/dns-handling.toml";
const STATE: &str = "/var/lib/dns-handling";

fn root_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `program args`, as root (through `sudo -n` when the test is not).
fn run(program: &str, args: &[&str]) -> Output {
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0");
    let mut command = if is_root {
        Command::new(program)
    } else {
        let mut sudo = Command::new("sudo");
        sudo.args(["-n", program]);
        sudo
    };
    command
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} runs: {e}"))
}

/// As [`run`], asserting success; its stdout.
fn run_ok(program: &str, args: &[&str]) -> String {
    let output = run(program, args);
    assert!(
        output.status.success(),
        "{program} {args:?}: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// dpkg's status of the package (`install ok installed`, `deinstall ok config-files`), or
/// `None` when dpkg knows nothing of it.
fn status() -> Option<String> {
    let output = run("dpkg-query", &["-W", "-f=${Status}", PACKAGE]);
    let text = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    (output.status.success() && !text.is_empty() && !text.contains("not-installed")).then_some(text)
}

fn user_exists() -> bool {
    run("getent", &["passwd", PACKAGE]).status.success()
}

/// Purges the package when the test ends, however it ends.
struct PurgeOnDrop;

impl Drop for PurgeOnDrop {
    fn drop(&mut self) {
        let _ = run("dpkg", &["--purge", PACKAGE]);
    }
}

/// Writes the shell completions the package ships where its assets name them.
fn write_completions() {
    let dir = root_dir().join("target/completions");
    std::fs::create_dir_all(&dir).expect("target/completions");
    for (shell, file) in [
        ("bash", "dns-handling.bash"),
        ("zsh", "_dns-handling"),
        ("fish", "dns-handling.fish"),
    ] {
        let output = Command::new(release_binary())
            .args(["completions", shell])
            .output()
            .expect("completions");
        assert!(output.status.success(), "completions {shell}");
        std::fs::write(dir.join(file), output.stdout).expect("write completions");
    }
}

/// `cargo deb --no-build` with `revision`, into `out`: the package's path.
fn build_package(revision: &str, out: &Path) -> PathBuf {
    let path = out.join(format!("dns-handling_{revision}.deb"));
    let output = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(root_dir())
        .args(["deb", "--no-build", "--deb-revision", revision, "--output"])
        .arg(&path)
        .output()
        .expect("cargo runs");
    assert!(
        output.status.success(),
        "cargo deb (cargo install cargo-deb --locked; tests/run.sh does): {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    path
}

#[test]
fn the_debian_package_installs_runs_as_its_user_and_removes_its_state_only_on_purge() {
    assert_eq!(
        status(),
        None,
        "{PACKAGE} is already known to dpkg on this machine: the test would change it"
    );
    assert!(!user_exists(), "a {PACKAGE} user exists already");
    write_completions();
    let out = TempDir::new("deb");
    let first = build_package("1", out.path());
    let second = build_package("2", out.path());

    let lintian = run(
        "lintian",
        &["--fail-on", "error", first.to_str().expect("path")],
    );
    let said = String::from_utf8_lossy(&lintian.stdout);
    assert!(
        lintian.status.success() && !said.lines().any(|l| l.starts_with("E:")),
        "lintian found errors:\n{said}\n{}",
        String::from_utf8_lossy(&lintian.stderr)
    );

    let _purge = PurgeOnDrop;
    run_ok("dpkg", &["-i", first.to_str().expect("path")]);
    assert_eq!(status().as_deref(), Some("install ok installed"));
    // The binary, from its installed path.
    let version = run_ok("/usr/bin/dns-handling", &["--version"]);
    assert_eq!(
        version.trim(),
        format!("dns-handling {}", env!("CARGO_PKG_VERSION"))
    );
    // The system user, with the state directory as its home and no login.
    let passwd = run_ok("getent", &["passwd", PACKAGE]);
    let fields: Vec<&str> = passwd.trim().split(':').collect();
    let uid: u32 = fields[2].parse().expect("uid");
    assert!(uid < 1000, "not a system user: {passwd}");
    assert_eq!(
        (fields[5], fields[6]),
        (STATE, "/usr/sbin/nologin"),
        "{passwd}"
    );
    assert_eq!(
        run_ok("stat", &["-c", "%U %a", STATE]).trim(),
        "dns-handling 700"
    );
    // The unit, the completions and the drop-in's example where they belong.
    let unit = std::fs::read_to_string("/lib/systemd/system/dns-handling.service")
        .or_else(|_| std::fs::read_to_string("/usr/lib/systemd/system/dns-handling.service"))
        .expect("the unit is installed");
    assert_eq!(
        unit,
        std::fs::read_to_string(root_dir().join("deploy/dns-handling.service")).expect("unit")
    );
    for installed in [
        "/usr/share/bash-completion/completions/dns-handling",
        "/usr/share/zsh/vendor-completions/_dns-handling",
        "/usr/share/fish/vendor_completions.d/dns-handling.fish",
        "/usr/share/doc/dns-handling/examples/delegation.conf",
    ] {
        assert!(Path::new(installed).is_file(), "{installed} is missing");
    }
    let conffiles = run_ok("dpkg-query", &["-W", "-f=${Conffiles}", PACKAGE]);
    assert!(conffiles.contains(CONFIG), "{conffiles}");

    // `config` from the installed configuration, as the service's user.
    let config = run_ok(
        "runuser",
        &[
            "-u",
            PACKAGE,
            "--",
            "/usr/bin/dns-handling",
            "--config",
            CONFIG,
            "config",
        ],
    );
    assert!(
        config.contains("database_url = \"sqlite:///var/lib/dns-handling/dns-handling.db\""),
        "{config}"
    );
    // The service itself, as its user, from the installed configuration: its database and the
    // keys generated beside it land in the state directory.
    serve_once_as_the_user();
    for state in [
        "dns-handling.db",
        "dns-handling.db.kek",
        "dns-handling.db.audit-key",
    ] {
        let path = Path::new(STATE).join(state);
        assert!(path.is_file(), "{} is missing", path.display());
        assert_eq!(
            run_ok("stat", &["-c", "%U", path.to_str().expect("path")]).trim(),
            "dns-handling"
        );
    }

    // An upgrade keeps the operator's change to the configuration.
    let mut changed = std::fs::read_to_string(CONFIG).expect("config");
    changed.push_str("\nlog_format = \"json\"\n");
    std::fs::write(CONFIG, &changed).expect("change the config");
    run_ok("dpkg", &["-i", second.to_str().expect("path")]);
    assert_eq!(std::fs::read_to_string(CONFIG).expect("config"), changed);
    assert!(Path::new(STATE).join("dns-handling.db").is_file());

    // Removal: the program goes; configuration, state and user stay.
    run_ok("dpkg", &["-r", PACKAGE]);
    assert_eq!(status().as_deref(), Some("deinstall ok config-files"));
    assert!(!Path::new("/usr/bin/dns-handling").exists());
    assert_eq!(
        std::fs::read_to_string(CONFIG).expect("config kept"),
        changed
    );
    assert!(Path::new(STATE).join("dns-handling.db.kek").is_file());
    assert!(user_exists());

    // Purge: configuration, state and user go too.
    run_ok("dpkg", &["-P", PACKAGE]);
    assert_eq!(status(), None);
    assert!(!Path::new(CONFIG).exists());
    assert!(!Path::new("/etc/dns-handling").exists());
    assert!(!Path::new(STATE).exists());
    assert!(!user_exists());
}

/// Starts the installed service as its user on a free port until it listens, then SIGTERM.
fn serve_once_as_the_user() {
    let port = dns_handling_testkit::free_port();
    // setpriv execs the service as the user (runuser would stand between the signal and it).
    let mut child = Command::new("setpriv")
        .args([
            "--reuid=dns-handling",
            "--regid=dns-handling",
            "--init-groups",
            "--",
            "/usr/bin/dns-handling",
            "--config",
            CONFIG,
        ])
        // Only what an operator's shell would not add: the settings come from the file.
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("SERVER_ADDR", format!("127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("the service starts");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(exit)) = child.try_wait() {
            panic!("the installed service exited: {exit:?}");
        }
        assert!(std::time::Instant::now() < deadline, "not listening");
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let exit = child.wait().expect("wait");
    assert!(exit.success(), "{exit:?}");
}
