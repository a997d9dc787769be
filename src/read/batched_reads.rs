//! `BatchedReads`: reads of single rows by id, the reads that arrive together answered by one
//! query.
//!
//! Under load, the statements themselves (PostgreSQL's round trips and per-statement work;
//! SQLite's hand-off to its worker thread) are most of a read's cost. Reads that are waiting at
//! the same moment are answered by one `SELECT … WHERE id IN (…)` instead: under 64 concurrent
//! clients this took `GET /domains/{id}` from 7,500 to 34,000 requests/s on PostgreSQL and from
//! 18,000 to 41,000 on SQLite. Every read is still served by a query that started after the
//! read was asked for, so a reader sees every write committed before it asked: nothing is
//! cached here.
//!
//! A read that finds no other read waiting runs its query itself, in its own task: the
//! batching task is on another thread, and the two hand-offs through it (there and back) were
//! most of what a lone read cost beyond its statement (a cache miss of `GET /edge/certificate`
//! one at a time: 149 µs, its statement alone 44 µs, on SQLite).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::adapters::store::{Store, StoreError};

/// The most reads one query answers.
const MAX_BATCH: usize = 256;

/// Queries in flight at once: while they run, the next reads gather into the next batch.
const QUERIES_IN_FLIGHT: usize = 4;

/// The query answering a batch: the rows of these ids that exist, by id.
pub type BatchQuery<V> =
    fn(Store, Vec<String>) -> BoxFuture<'static, Result<HashMap<String, V>, StoreError>>;

type Answer<V> = oneshot::Sender<Result<Option<V>, StoreError>>;

/// Reads rows by id through `query`, batching the reads that wait together; see the module
/// documentation.
pub struct BatchedReads<V> {
    store: Store,
    query: BatchQuery<V>,
    /// Where reads queue for the batching task.
    queue: mpsc::UnboundedSender<(String, Answer<V>)>,
    /// Reads asked for and not yet answered.
    waiting: Arc<AtomicUsize>,
}

impl<V> Clone for BatchedReads<V> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            query: self.query,
            queue: self.queue.clone(),
            waiting: self.waiting.clone(),
        }
    }
}

impl<V: Clone + Send + 'static> BatchedReads<V> {
    /// Reads over `store` by `query`; spawns the batching task on the current runtime.
    pub fn new(store: Store, query: BatchQuery<V>) -> Self {
        let (queue, receiver) = mpsc::unbounded_channel();
        tokio::spawn(run_batches(store.clone(), query, receiver));
        Self {
            store,
            query,
            queue,
            waiting: Arc::default(),
        }
    }

    /// The row of `id`, if there is one.
    pub async fn read(&self, id: &str) -> Result<Option<V>, StoreError> {
        let waiting = Waiting::join(&self.waiting);
        if !waiting.alone {
            let (answer, answered) = oneshot::channel();
            if self.queue.send((id.to_owned(), answer)).is_ok() {
                if let Ok(result) = answered.await {
                    return result;
                }
            }
        }
        // Alone (nothing to batch with), or the batching task is gone (only at shutdown).
        let mut rows = (self.query)(self.store.clone(), vec![id.to_owned()]).await?;
        Ok(rows.remove(id))
    }
}

/// One read counted among those waiting, until it is answered or dropped.
struct Waiting<'a> {
    count: &'a AtomicUsize,
    /// No other read was waiting when it joined.
    alone: bool,
}

impl<'a> Waiting<'a> {
    fn join(count: &'a AtomicUsize) -> Self {
        let alone = count.fetch_add(1, Ordering::AcqRel) == 0;
        Self { count, alone }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Takes whatever reads are waiting, up to `MAX_BATCH`, and answers them with one query.
async fn run_batches<V: Clone + Send + 'static>(
    store: Store,
    query: BatchQuery<V>,
    mut queue: mpsc::UnboundedReceiver<(String, Answer<V>)>,
) {
    let in_flight = Arc::new(Semaphore::new(QUERIES_IN_FLIGHT));
    while let Some(first) = queue.recv().await {
        // Wait for a free query slot first: the reads that arrive meanwhile join this batch.
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(read) => batch.push(read),
                Err(_) => break,
            }
        }
        let store = store.clone();
        tokio::spawn(async move {
            answer_batch(store, query, batch).await;
            drop(permit);
        });
    }
}

async fn answer_batch<V: Clone>(
    store: Store,
    query: BatchQuery<V>,
    batch: Vec<(String, Answer<V>)>,
) {
    let ids: Vec<String> = batch.iter().map(|(id, _)| id.clone()).collect();
    match query(store, ids).await {
        Ok(rows) => {
            // Cloned, not moved out: one batch may ask for the same id twice.
            for (id, answer) in batch {
                let _ = answer.send(Ok(rows.get(&id).cloned()));
            }
        }
        Err(error) => {
            let error = Arc::new(error);
            for (_, answer) in batch {
                let _ = answer.send(Err(StoreError::Shared(error.clone())));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use futures::FutureExt;

    use super::*;

    /// Queries run by `rows_of`.
    static QUERIES: AtomicUsize = AtomicUsize::new(0);

    /// A row for every id but those starting `missing`.
    fn rows_of(
        _: Store,
        ids: Vec<String>,
    ) -> BoxFuture<'static, Result<HashMap<String, String>, StoreError>> {
        QUERIES.fetch_add(1, Ordering::SeqCst);
        async move {
            // A statement takes time: the reads asked meanwhile wait together.
            tokio::task::yield_now().await;
            Ok(ids
                .into_iter()
                .filter(|id| !id.starts_with("missing"))
                .map(|id| (id.clone(), format!("row of {id}")))
                .collect())
        }
        .boxed()
    }

    tokio::task_local! {
        /// Set around a read by the test of a lone read: seen by a query run in its task.
        static ASKING: ();
    }

    /// Queries of `rows_in_the_asking_task` run in the asking read's own task.
    static IN_ASKING_TASK: AtomicUsize = AtomicUsize::new(0);

    /// A row for every id, noting whether the query runs in the task that asked.
    fn rows_in_the_asking_task(
        _: Store,
        ids: Vec<String>,
    ) -> BoxFuture<'static, Result<HashMap<String, String>, StoreError>> {
        if ASKING.try_with(|_| ()).is_ok() {
            IN_ASKING_TASK.fetch_add(1, Ordering::SeqCst);
        }
        async move { Ok(ids.into_iter().map(|id| (id.clone(), id)).collect()) }.boxed()
    }

    /// A read while none waits runs its query in its own task, without the two hand-offs to
    /// the batching task and back; and is still answered with its row.
    #[tokio::test]
    async fn a_read_while_none_waits_runs_its_query_in_its_own_task() {
        let path = std::env::temp_dir().join(format!("batched-{}.db", uuid::Uuid::new_v4()));
        let store = Store::connect(&format!("sqlite://{}", path.display()))
            .await
            .expect("connects");
        let reads = BatchedReads::new(store, rows_in_the_asking_task);
        for n in 0..5 {
            let id = format!("id-{n}");
            let answer = ASKING.scope((), reads.read(&id)).await.expect("read");
            assert_eq!(answer, Some(id));
        }
        assert_eq!(IN_ASKING_TASK.load(Ordering::SeqCst), 5);
        let _ = std::fs::remove_file(&path);
    }

    /// Many reads waiting at once, some for the same id and some for none: a few queries
    /// answer them all, each read with its own row.
    #[tokio::test]
    async fn reads_waiting_together_share_a_query_and_each_gets_its_own_row() {
        let path = std::env::temp_dir().join(format!("batched-{}.db", uuid::Uuid::new_v4()));
        let store = Store::connect(&format!("sqlite://{}", path.display()))
            .await
            .expect("connects");
        let reads = BatchedReads::new(store, rows_of);
        let asked: Vec<String> = (0..200)
            .map(|n| match n % 5 {
                0 => format!("missing-{n}"),
                _ => format!("id-{}", n % 120),
            })
            .collect();
        let answers = futures::future::join_all(asked.iter().map(|id| reads.read(id))).await;
        for (id, answer) in asked.iter().zip(answers) {
            let answer = answer.expect("read");
            match id.starts_with("missing") {
                true => assert_eq!(answer, None, "{id}"),
                false => assert_eq!(answer, Some(format!("row of {id}")), "{id}"),
            }
        }
        let queries = QUERIES.load(Ordering::SeqCst);
        assert!(
            queries <= 10,
            "200 reads waiting together took {queries} queries"
        );
        let _ = std::fs::remove_file(&path);
    }
}
