//! `dns-handling edge sync` as the process an edge runs beside its terminator: started on a
//! directory with a change command, killed as a crash would kill it, started again.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::process::{spawn, ChildGuard};

/// A running `edge sync` agent; SIGKILL and reaped on drop.
pub struct EdgeAgent {
    command: Vec<String>,
    binary: PathBuf,
    log_path: PathBuf,
    guard: ChildGuard,
}

impl EdgeAgent {
    /// Starts `binary edge sync --server <server> --token <token> --dir <dir> --on-change
    /// <on_change> --debounce 200ms`, its output appended to `log_path`.
    pub fn start(
        binary: impl AsRef<Path>,
        server: &str,
        token: &str,
        dir: &Path,
        on_change: &str,
        log_path: &Path,
    ) -> EdgeAgent {
        let command: Vec<String> = [
            "edge",
            "sync",
            "--server",
            server,
            "--token",
            token,
            "--dir",
            &dir.display().to_string(),
            "--on-change",
            on_change,
            "--debounce",
            "200ms",
        ]
        .iter()
        .map(|arg| (*arg).to_owned())
        .collect();
        let binary = binary.as_ref().to_owned();
        let guard = Self::spawn(&binary, &command, log_path);
        EdgeAgent {
            command,
            binary,
            log_path: log_path.to_owned(),
            guard,
        }
    }

    fn spawn(binary: &Path, command: &[String], log_path: &Path) -> ChildGuard {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)
            .expect("the agent's log");
        spawn(
            Command::new(binary)
                .args(command)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("the agent's log"))
                .stderr(log),
            "dns-handling edge sync",
            "",
        )
    }

    /// SIGKILL, as a crash, and reaped.
    pub fn kill(&mut self) {
        self.guard.kill();
    }

    /// Starts the agent again with the same options (after [`EdgeAgent::kill`]).
    pub fn restart(&mut self) {
        self.guard.kill();
        self.guard = Self::spawn(&self.binary, &self.command, &self.log_path);
    }

    /// Whether the agent still runs (it stops for good on a refused token or a wrong URL).
    pub fn is_running(&mut self) -> bool {
        matches!(self.guard.child.try_wait(), Ok(None))
    }

    /// What the agent wrote to its stdout and stderr.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}
