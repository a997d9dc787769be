//! Telling a service manager how the service is, by systemd's notification protocol
//! (`Type=notify`, the `sd-notify` crate): `READY=1` once the service answers `/readyz` as
//! ready (the store and the CA answer), `STOPPING=1` when a stop signal arrives, and
//! `WATCHDOG=1` while the runtime turns, when the unit asks for a watchdog (`WatchdogSec=`).
//!
//! Without `NOTIFY_SOCKET` (not started by a service manager) every message is dropped by the
//! crate, and nothing here changes how the service runs.

use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;

use crate::app_state::AppState;
use crate::tasks::AbortOnDrop;

/// How often readiness is asked again while the service is not yet ready.
const READINESS_INTERVAL: Duration = Duration::from_secs(1);

/// Whether a service manager listens (`NOTIFY_SOCKET` is set).
fn listening() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
}

/// Sends `states`; a manager that cannot be told is logged, never fatal: the service itself
/// works on.
fn tell(states: &[NotifyState<'_>]) {
    // `notify`, not `notify_and_unset_env`: the variables are read again for each message,
    // and changing a multi-threaded process's environment is not sound.
    if let Err(error) = sd_notify::notify(states) {
        tracing::warn!(%error, "the service manager cannot be told the service's state");
    }
}

/// Tells the manager `STOPPING=1`: the service is stopping (a stop signal arrived).
pub fn stopping() {
    if listening() {
        tell(&[
            NotifyState::Stopping,
            NotifyState::Status("stopping: finishing requests in flight"),
        ]);
    }
}

/// Starts telling the manager about the service: `READY=1` (with a status line) once
/// `/readyz` would answer ready, a `STATUS=` naming the problem while it would not, and the
/// watchdog's pings from now on when one is asked for. Nothing when no manager listens. The
/// tasks end when the returned handles are dropped.
pub fn start(state: Arc<AppState>) -> Vec<AbortOnDrop<()>> {
    if !listening() {
        return Vec::new();
    }
    let mut tasks = vec![AbortOnDrop(actix_web::rt::spawn(tell_when_ready(state)))];
    if let Some(timeout) = sd_notify::watchdog_enabled() {
        // Pinged at half the manager's interval, as sd_watchdog_enabled(3) advises. The pings
        // prove the runtime turns, not that the CA answers: a CA outage is not a reason for the
        // manager to restart the service.
        let every = (timeout / 2).max(Duration::from_millis(10));
        tasks.push(AbortOnDrop(actix_web::rt::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            loop {
                ticks.tick().await;
                tell(&[NotifyState::Watchdog]);
            }
        })));
    }
    tasks
}

/// Asks the readiness of `/readyz` until it holds, saying the problem as the status meanwhile
/// (`systemctl status` shows it); then `READY=1`, once.
async fn tell_when_ready(state: Arc<AppState>) {
    let mut told_problem = None;
    loop {
        match crate::http::readiness_problem(&state).await {
            None => break,
            Some(problem) => {
                if told_problem.as_ref() != Some(&problem) {
                    tell(&[NotifyState::Status(&format!("starting: {problem}"))]);
                    told_problem = Some(problem);
                }
            }
        }
        tokio::time::sleep(READINESS_INTERVAL).await;
    }
    tracing::info!("ready: the service manager is told");
    tell(&[NotifyState::Ready, NotifyState::Status("ready")]);
}
