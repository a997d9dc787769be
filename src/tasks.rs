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
