//! What every fixture stands on: temporary directories, free loopback ports, and child
//! processes that are killed and reaped when their guard drops.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A fresh temporary directory, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates `<system temp dir>/<prefix>-<uuid>`.
    pub fn new(prefix: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!("{prefix}-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    /// Where the directory is.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Ports are handed out from below the kernel's ephemeral range (32768–60999 on Linux). A port
/// found free is released before its server binds it; inside the ephemeral range any process's
/// outgoing connection can be given it as its local port in that window (CI once saw Pebble's
/// management port taken so). Below the range only another listener can take it.
const PORT_RANGE: std::ops::Range<u16> = 20_000..32_000;

/// A free loopback port, never the same twice in this test process: the port is released
/// before the server that gets it binds it, and two fixtures must not be handed one port.
pub fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = rand::Rng::gen_range(&mut rand::thread_rng(), PORT_RANGE);
        if TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if !handed_out.contains(&port) {
            handed_out.push(port);
            return port;
        }
    }
}

/// A free UDP and TCP port pair for a DNS server.
pub fn free_dns_port() -> u16 {
    loop {
        let port = free_port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Waits until `port` accepts connections; an error when the child exits first or never listens.
pub(crate) fn wait_for_tcp(port: u16, what: &str, child: &mut Child) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("{what} exited early with {status}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("{what} did not listen on port {port} within 20 s"))
}

/// A child process that is killed and reaped on drop.
pub struct ChildGuard {
    /// The running process.
    pub child: Child,
}

impl ChildGuard {
    /// Sends SIGKILL and waits: the harshest stop, as a crash would be.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Spawns `command`; panics naming `name` and telling how to install it (`hint`) when it
/// cannot start.
pub(crate) fn spawn(command: &mut Command, name: &str, hint: &str) -> ChildGuard {
    let child = command
        .spawn()
        .unwrap_or_else(|error| panic!("cannot start {name}: {error}. {hint}"));
    ChildGuard { child }
}

/// The path of `name` on `PATH`, else in `/usr/sbin`, where Debian puts unbound and nsd and
/// which a non-root user's `PATH` may lack.
pub(crate) fn program(name: &str) -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file());
    on_path.unwrap_or_else(|| {
        let sbin = Path::new("/usr/sbin").join(name);
        if sbin.is_file() {
            sbin
        } else {
            PathBuf::from(name)
        }
    })
}
