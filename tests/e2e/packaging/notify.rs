//! The service under a service manager: systemd's notification protocol (`Type=notify`) spoken
//! to a datagram socket the test listens on as systemd would (`NOTIFY_SOCKET`), and `health`,
//! the probe a container's `HEALTHCHECK` runs.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use dns_handling_testkit::{
    run_command, service_env, CaFront, Pebble, PebbleOptions, Service, StoreKind, TempDir,
    TestDatabase,
};

use crate::BINARY;

/// The notifications received so far, one state (`READY=1`, `STATUS=…`) per entry, in order.
struct Manager {
    socket: UnixDatagram,
    received: Vec<String>,
}

impl Manager {
    fn listen(path: &std::path::Path) -> Manager {
        let socket = UnixDatagram::bind(path).expect("bind the notification socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("read timeout");
        Manager {
            socket,
            received: Vec::new(),
        }
    }

    /// Reads every datagram waiting (a message may carry several states, one a line).
    fn drain(&mut self) {
        let mut buffer = [0u8; 4096];
        while let Ok(length) = self.socket.recv(&mut buffer) {
            let text = String::from_utf8_lossy(&buffer[..length]).into_owned();
            self.received
                .extend(text.lines().map(str::to_owned).filter(|l| !l.is_empty()));
        }
    }

    /// Reads until `state` has been received; panics with what came after `within`.
    fn wait_for(&mut self, state: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.received.iter().any(|s| s == state) {
            assert!(
                Instant::now() < deadline,
                "no {state} within {within:?}: {:?}",
                self.received
            );
            self.drain();
        }
    }

    fn position(&self, state: &str) -> Option<usize> {
        self.received.iter().position(|s| s == state)
    }
}

/// `dns-handling health --url …`: its exit code and what it said.
fn health(service_url: &str) -> (i32, String) {
    let env = Default::default();
    let (status, stdout, stderr) = run_command(BINARY, &env, &["health", "--url", service_url]);
    (status.code().unwrap_or(-1), format!("{stdout}{stderr}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_manager_is_told_ready_only_once_the_ca_answers_and_stopping_at_sigterm() {
    let pebble = Pebble::start(PebbleOptions::default());
    let database = TestDatabase::create(StoreKind::Sqlite).await;
    // The CA is down when the service starts: it serves, but is not ready.
    let front = CaFront::start(&pebble);
    front.down();
    let socket_dir = TempDir::new("notify-socket");
    let socket_path = socket_dir.path().join("notify");
    let mut manager = Manager::listen(&socket_path);
    let mut env = service_env(&pebble, &database);
    env.insert("ACME_DIRECTORY".into(), front.directory_url());
    env.insert("NOTIFY_SOCKET".into(), socket_path.display().to_string());
    // A watchdog of 400 ms, as `WatchdogSec=` sets it: pinged every 200 ms.
    env.insert("WATCHDOG_USEC".into(), "400000".into());
    let mut service = Service::start(BINARY, &env);

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = service.get("/readyz").await;
        assert_eq!(status, 503, "ready with the CA down: {body}");
        if body["error"]
            .as_str()
            .is_some_and(|e| e.contains("ACME directory unreachable"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, said) = health(&service.url(""));
    assert_eq!(code, 1, "health while the CA is down: {said}");
    assert!(said.contains("ACME directory unreachable"), "{said}");
    // Readiness is asked every second: three rounds, and still the manager is not told ready,
    // only why not.
    tokio::time::sleep(Duration::from_secs(3)).await;
    manager.drain();
    assert_eq!(manager.position("READY=1"), None, "{:?}", manager.received);
    assert!(
        manager
            .received
            .iter()
            .any(|s| s.starts_with("STATUS=starting: ACME directory unreachable")),
        "{:?}",
        manager.received
    );
    assert!(
        manager.position("WATCHDOG=1").is_some(),
        "the watchdog is pinged while starting: {:?}",
        manager.received
    );

    front.up();
    manager.wait_for("READY=1", Duration::from_secs(30));
    let (status, body) = service.get("/readyz").await;
    assert_eq!(status, 200, "{body}");
    let (code, said) = health(&service.url(""));
    assert_eq!((code, said.trim()), (0, "ready"));

    let exit = service.terminate();
    assert!(exit.success(), "{exit:?}");
    manager.wait_for("STOPPING=1", Duration::from_secs(5));
    let ready = manager.position("READY=1").expect("ready");
    let stopping = manager.position("STOPPING=1").expect("stopping");
    assert!(ready < stopping, "{:?}", manager.received);
    assert_eq!(
        manager.received.iter().filter(|s| *s == "READY=1").count(),
        1,
        "{:?}",
        manager.received
    );
    let (code, said) = health(&service.url(""));
    assert_eq!(code, 1, "health of a stopped service: {said}");
}

#[test]
fn health_asks_the_address_server_addr_binds_on_loopback() {
    // `health` with no --url asks the address SERVER_ADDR binds, on loopback when it binds
    // every address: nothing listens on this one.
    let port = dns_handling_testkit::free_port();
    let env = [("SERVER_ADDR".to_owned(), format!("0.0.0.0:{port}"))].into();
    let (status, _, stderr) = run_command(BINARY, &env, &["health", "--timeout", "2s"]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("http://127.0.0.1:{port}/readyz")),
        "{stderr}"
    );
}
