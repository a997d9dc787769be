//! Part 4: `dns-handling edge sync` of every served certificate into an empty directory: the
//! time until its `state.json` records the snapshot's end, and the agent's peak RSS. The agent
//! is left running for part 3.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dns_handling::edge::directory::CRT_LIST_FILE;
use dns_handling_testkit::{Service, StoreKind};

use crate::process::status_mib;
use crate::{BINARY, EDGE_TOKEN};

/// A running `edge sync` (killed when dropped).
pub struct Agent {
    child: std::process::Child,
    /// The directory it keeps.
    pub dir: PathBuf,
    log: PathBuf,
}

impl Agent {
    /// What it wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Fails, with its log, if it has exited.
    pub fn ensure_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            anyhow::bail!("edge sync exited ({status}): {}", self.log());
        }
        Ok(())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `state.json` records a whole snapshot of `domains` certificates (the position it
/// records is that of the last change it carried, which may be behind the feed's end). Read
/// only once the agent wrote its lists, which it does first at a snapshot's end: the file is
/// megabytes at 100,000 certificates, and parsing it ten times a second would compete with
/// the agent for the cores.
fn snapshot_recorded(dir: &Path, domains: usize) -> bool {
    if !dir.join(CRT_LIST_FILE).exists() {
        return false;
    }
    let Ok(text) = std::fs::read(dir.join("state.json")) else {
        return false;
    };
    let Ok(state) = serde_json::from_slice::<serde_json::Value>(&text) else {
        return false;
    };
    let receiving = state.get("snapshot").is_some_and(|value| !value.is_null());
    let served = state["served"].as_object().map_or(0, |served| served.len());
    !receiving && served == domains
}

/// Starts `edge sync` into `dir` (empty), waits until it recorded the end of the snapshot of
/// `domains` certificates, and reports the time and its peak RSS.
pub async fn measure(
    kind: StoreKind,
    service: &Service,
    domains: usize,
    dir: &Path,
) -> anyhow::Result<Agent> {
    std::fs::create_dir_all(dir)?;
    let log = dir.with_extension("log");
    let started = Instant::now();
    let child = Command::new(BINARY)
        .args(["edge", "sync", "--server", &service.url(""), "--token"])
        .arg(EDGE_TOKEN)
        .arg("--dir")
        .arg(dir)
        .env("LOG_LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()?;
    let mut agent = Agent {
        child,
        dir: dir.to_owned(),
        log,
    };
    let pid = agent.child.id();
    let mut peak = 0.0_f64;
    loop {
        agent.ensure_running()?;
        peak = peak.max(status_mib(pid, "VmHWM:"));
        if snapshot_recorded(dir, domains) {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(1800),
            "edge sync did not finish the snapshot within 30 minutes: {}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    peak = peak.max(status_mib(pid, "VmHWM:"));
    let combined = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter(|entry| entry.path().extension().is_some_and(|ext| ext == "pem"))
        .count();
    anyhow::ensure!(
        combined == domains,
        "edge sync wrote {combined} combined PEMs for {domains} certificates"
    );
    println!(
        "{kind:?}: edge sync of {domains} certificates into an empty directory: state.json at \
         the snapshot's end after {elapsed:.1} s ({:.0} certificates/s), the \
         agent's peak RSS (VmHWM) {peak:.0} MiB",
        domains as f64 / elapsed
    );
    Ok(agent)
}
