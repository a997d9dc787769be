//! `deploy/dns-handling.service`, checked by systemd's own tools as a system would load it:
//! `systemd-analyze verify` (a root holding the unit, its drop-in when asked, the binary and the
//! system's units) and `systemd-analyze security`'s exposure rating, with and without the
//! delegation drop-in that grants CAP_NET_BIND_SERVICE. No systemd needs to run.

use std::path::{Path, PathBuf};
use std::process::Command;

use dns_handling_testkit::TempDir;

/// The repository's `deploy/` directory.
fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

/// The release binary where the test command built it, else this build's.
pub fn release_binary() -> PathBuf {
    std::env::var("DNS_HANDLING_RELEASE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(crate::BINARY))
}

/// A root directory as systemd-analyze's `--root` reads it: the system's units, the binary at
/// the unit's `ExecStart` path, the unit in /etc/systemd/system and, with `delegation`, its
/// drop-in.
fn unit_root(delegation: bool) -> TempDir {
    let root = TempDir::new("systemd-root");
    let path = root.path();
    std::fs::create_dir_all(path.join("usr/lib/systemd")).expect("usr/lib/systemd");
    let copied = Command::new("cp")
        .args(["-a", "/usr/lib/systemd/system"])
        .arg(path.join("usr/lib/systemd/system"))
        .status();
    assert!(
        copied.is_ok_and(|status| status.success()),
        "copying the system's units (is systemd installed? tests/run.sh installs it)"
    );
    std::fs::create_dir_all(path.join("usr/bin")).expect("usr/bin");
    let binary = path.join("usr/bin/dns-handling");
    if std::fs::hard_link(release_binary(), &binary).is_err() {
        std::fs::copy(release_binary(), &binary).expect("copy the binary");
    }
    let units = path.join("etc/systemd/system");
    std::fs::create_dir_all(units.join("dns-handling.service.d")).expect("units directory");
    std::fs::copy(
        deploy().join("dns-handling.service"),
        units.join("dns-handling.service"),
    )
    .expect("copy the unit");
    if delegation {
        std::fs::copy(
            deploy().join("dns-handling.service.d/delegation.conf"),
            units.join("dns-handling.service.d/delegation.conf"),
        )
        .expect("copy the drop-in");
    }
    root
}

/// Runs `systemd-analyze` with `args`: its exit status, stdout and stderr.
fn systemd_analyze(args: &[&str], root: &Path) -> (bool, String, String) {
    let output = Command::new("systemd-analyze")
        .args(args)
        .arg(format!("--root={}", root.display()))
        .arg("dns-handling.service")
        .output()
        .expect("systemd-analyze runs (from Debian's systemd; tests/run.sh installs it)");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `systemd-analyze security`'s overall exposure (0 safest, 10 exposed), and its full report.
fn exposure(root: &Path) -> (f64, String) {
    let (ok, stdout, stderr) = systemd_analyze(&["security", "--offline=true"], root);
    assert!(ok, "{stdout}\n{stderr}");
    let rating = stdout
        .lines()
        .find_map(|line| {
            line.split("Overall exposure level for dns-handling.service:")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{stdout}"));
    (rating, stdout)
}

/// The report's line for `setting`: whether it passed (`✓`) or not (`✗`).
fn passes(report: &str, setting: &str) -> bool {
    let line = report
        .lines()
        .find(|line| line.get(4..).is_some_and(|rest| rest.starts_with(setting)))
        .unwrap_or_else(|| panic!("no {setting} in:\n{report}"));
    line.starts_with('✓')
}

#[test]
fn the_unit_and_its_delegation_drop_in_pass_systemd_analyze_verify() {
    for delegation in [false, true] {
        let root = unit_root(delegation);
        let (ok, stdout, stderr) = systemd_analyze(&["verify"], root.path());
        // verify exits 0 on a setting it ignores, but says so: nothing may be said.
        assert!(
            ok && stderr.trim().is_empty(),
            "delegation {delegation}:\n{stdout}\n{stderr}"
        );
    }
}

#[test]
fn the_unit_is_rated_ok_by_systemd_analyze_security_and_grants_a_capability_only_with_delegation() {
    let (rating, report) = exposure(unit_root(false).path());
    assert!(rating <= 2.0, "exposure {rating}:\n{report}");
    assert!(passes(&report, "AmbientCapabilities="), "{report}");
    assert!(passes(&report, "PrivateUsers="), "{report}");

    let (rating, report) = exposure(unit_root(true).path());
    assert!(
        rating <= 2.0,
        "exposure with delegation {rating}:\n{report}"
    );
    assert!(!passes(&report, "AmbientCapabilities="), "{report}");
    // The one capability: binding ports below 1024 (the report rates CAP_NET_BIND_SERVICE
    // nowhere else, so it is checked in the unit itself).
    let drop_in = std::fs::read_to_string(deploy().join("dns-handling.service.d/delegation.conf"))
        .expect("drop-in");
    assert!(
        drop_in.contains("AmbientCapabilities=CAP_NET_BIND_SERVICE\n"),
        "{drop_in}"
    );
}
