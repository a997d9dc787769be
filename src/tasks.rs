//! Tasks that end with their owner: a task spawned for a piece of work is aborted when whoever
//! waits for it stops waiting (a poller that stops, a catch-up cancelled at shutdown), rather
//! than running on alone. A task left running past the runtime's end drops its database
//! connection outside the runtime, where sqlx panics and the process aborts.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::task::{JoinError, JoinHandle};

/// A spawned task, aborted when this handle is dropped; awaiting it awaits the task.
pub struct AbortOnDrop<T>(pub JoinHandle<T>);

impl<T> Future for AbortOnDrop<T> {
    type Output = Result<T, JoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx)
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Tells the streams that would otherwise follow forever (`GET /events?follow=true`, the edges'
/// certificate stream) that the process is stopping. actix stops gracefully on SIGTERM: it
/// stops accepting, then waits for every response in flight to end, up to its shutdown timeout
/// (30 s). A following stream's response never ends by itself, whether its client still reads
/// it or has gone (nothing is written to notice that it has), so each ends on this signal: its
/// client sees the stream end after its last whole line and resumes from the last position it
/// read, on another replica or after the restart.
#[derive(Debug, Clone)]
pub struct Stopping(tokio::sync::watch::Receiver<bool>);

/// Says [`Stopping`]: held by whoever hears the process's stop signals.
#[derive(Debug)]
pub struct StopStreams(tokio::sync::watch::Sender<bool>);

impl Stopping {
    /// The signal and its sender.
    pub fn channel() -> (StopStreams, Stopping) {
        let (sender, receiver) = tokio::sync::watch::channel(false);
        (StopStreams(sender), Stopping(receiver))
    }

    /// Returns once the process is stopping; never, if its sender went without saying so (a
    /// process that stops by other means, or a test's state).
    pub async fn wait(&self) {
        let mut receiver = self.0.clone();
        if receiver.wait_for(|stopping| *stopping).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl StopStreams {
    /// The process is stopping: every [`Stopping::wait`] returns.
    pub fn stop(&self) {
        self.0.send_replace(true);
    }
}

/// How background work stands: which kinds of it panicked, how often, and whether one is down
/// now. Process-wide, like the metrics: every piece of background work reports here, and
/// `GET /readyz` reads it.
pub static BACKGROUND: std::sync::LazyLock<BackgroundHealth> =
    std::sync::LazyLock::new(BackgroundHealth::default);

/// Panics in a row after which a task counts as failing (`/readyz` answers `503`) until it runs
/// again for [`HEALTHY_RUN`].
const FAILING_AFTER: u32 = 3;

/// A run (or a tick) that lasts this long, or ends well, ends a series of panics.
const HEALTHY_RUN: std::time::Duration = std::time::Duration::from_secs(60);

/// The longest wait before a panicked loop is started again; the wait doubles from a second.
const LONGEST_RESTART_DELAY: std::time::Duration = std::time::Duration::from_secs(30);

/// How one kind of background work stands.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct TaskHealth {
    /// Panics since the process started.
    pub restarts: u64,
    /// Panics since it last ran well.
    pub panics_in_a_row: u32,
    /// It panicked and waits to be started again.
    pub down: bool,
}

/// The health of every kind of background work that ever panicked.
#[derive(Debug, Default)]
pub struct BackgroundHealth(std::sync::Mutex<std::collections::BTreeMap<&'static str, TaskHealth>>);

impl BackgroundHealth {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<&'static str, TaskHealth>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `task` panicked: counted (metric `background_restarts_total{task}`) and logged.
    pub fn panicked(&self, task: &'static str, error: &JoinError) {
        crate::metrics::METRICS
            .background_restarts
            .get_or_create(&crate::metrics::TaskLabel { task })
            .inc();
        let mut tasks = self.lock();
        let health = tasks.entry(task).or_default();
        health.restarts += 1;
        health.panics_in_a_row += 1;
        tracing::error!(
            task, %error, restarts = health.restarts,
            "background work panicked; it is started again"
        );
    }

    /// `task` waits to be started again (`true`), or runs again (`false`).
    fn set_down(&self, task: &'static str, down: bool) {
        if let Some(health) = self.lock().get_mut(task) {
            health.down = down;
        }
    }

    /// `task` ran well: a series of panics ends.
    pub fn ran_well(&self, task: &'static str) {
        if let Some(health) = self.lock().get_mut(task) {
            health.panics_in_a_row = 0;
        }
    }

    /// Every kind of work that ever panicked, and how it stands.
    pub fn report(&self) -> std::collections::BTreeMap<&'static str, TaskHealth> {
        self.lock().clone()
    }

    /// Why the process is not ready because of its background work: a task down, or one that
    /// keeps panicking.
    pub fn problem(&self) -> Option<String> {
        let problems: Vec<String> = self
            .lock()
            .iter()
            .filter_map(|(task, health)| {
                if health.down {
                    Some(format!(
                        "background task {task} panicked and is being started again"
                    ))
                } else if health.panics_in_a_row >= FAILING_AFTER {
                    Some(format!(
                        "background task {task} panicked {} times in a row",
                        health.panics_in_a_row
                    ))
                } else {
                    None
                }
            })
            .collect();
        (!problems.is_empty()).then(|| problems.join("; "))
    }
}

/// Runs `work` as a task of its own on the current actix (tokio local) runtime, so that a panic
/// in it ends that task alone: answered as `None`, counted for `task` and logged. The caller (an
/// actor's tick, a loop) goes on; `None` too when the task was cancelled.
pub async fn contained<T: 'static>(
    task: &'static str,
    work: impl Future<Output = T> + 'static,
) -> Option<T> {
    let started = std::time::Instant::now();
    match AbortOnDrop(actix_web::rt::spawn(work)).await {
        Ok(value) => {
            if started.elapsed() < HEALTHY_RUN {
                BACKGROUND.ran_well(task);
            }
            Some(value)
        }
        Err(error) if error.is_panic() => {
            BACKGROUND.panicked(task, &error);
            None
        }
        Err(_) => None,
    }
}

/// Spawns a loop that runs for the life of the process and is started again after it panics
/// (or ends), after a wait that doubles from a second up to half a minute while it keeps
/// panicking; each panic counted for `task`. Aborting the handle ends the loop and its run.
pub fn spawn_supervised<F, Fut>(task: &'static str, mut start: F) -> JoinHandle<()>
where
    F: FnMut() -> Fut + 'static,
    Fut: Future<Output = ()> + 'static,
{
    actix_web::rt::spawn(async move {
        let mut delay = std::time::Duration::from_secs(1);
        loop {
            let started = std::time::Instant::now();
            match AbortOnDrop(actix_web::rt::spawn(start())).await {
                Err(error) if error.is_panic() => BACKGROUND.panicked(task, &error),
                Err(_) => return,
                Ok(()) => tracing::error!(task, "background loop ended; starting it again"),
            }
            if started.elapsed() >= HEALTHY_RUN {
                BACKGROUND.ran_well(task);
                delay = std::time::Duration::from_secs(1);
            }
            BACKGROUND.set_down(task, true);
            actix_web::rt::time::sleep(delay).await;
            BACKGROUND.set_down(task, false);
            delay = (delay * 2).min(LONGEST_RESTART_DELAY);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    #[actix_web::test]
    async fn a_supervised_loop_that_panics_is_started_again_and_counted() {
        let runs = Arc::new(AtomicU32::new(0));
        let counted = runs.clone();
        let handle = spawn_supervised("test-loop", move || {
            let runs = counted.clone();
            async move {
                if runs.fetch_add(1, Ordering::SeqCst) == 0 {
                    panic!("the first run fails");
                }
                std::future::pending::<()>().await;
            }
        });
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while runs.load(Ordering::SeqCst) < 2 {
            assert!(std::time::Instant::now() < deadline, "not started again");
            actix_web::rt::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let health = BACKGROUND.report()["test-loop"].clone();
        assert_eq!(health.restarts, 1);
        assert!(!health.down);
        let counted = crate::metrics::METRICS
            .background_restarts
            .get_or_create(&crate::metrics::TaskLabel { task: "test-loop" })
            .get();
        assert_eq!(counted, 1);
        handle.abort();
    }

    #[actix_web::test]
    async fn contained_work_that_panics_is_answered_none_and_its_caller_goes_on() {
        let first = contained("test-tick", async { panic!("a tick fails") }).await;
        assert_eq!(first, None::<u32>);
        for _ in 0..2 {
            assert_eq!(
                contained("test-tick", async { panic!("again") }).await,
                None::<u32>
            );
        }
        assert!(BACKGROUND
            .problem()
            .is_some_and(|p| p.contains("test-tick")));
        assert_eq!(contained("test-tick", async { 7 }).await, Some(7));
        assert_eq!(BACKGROUND.report()["test-tick"].restarts, 3);
        assert!(BACKGROUND
            .problem()
            .is_none_or(|problem| !problem.contains("test-tick")));
    }
}
