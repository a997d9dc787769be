//! `ViewReader`: reads single domain views for the API (`GET /domains/{id}`), coalescing the
//! reads that arrive together into one query (see `batched_reads`). Nothing is cached: a client
//! sees its own writes and every write committed before it asked.

use std::collections::HashMap;

use dns_handling_projections::DomainView;
use futures::FutureExt;

use super::batched_reads::BatchedReads;
use crate::adapters::store::{Store, StoreError};

/// Reads domain views by id; see the module documentation.
#[derive(Clone)]
pub struct ViewReader {
    reads: BatchedReads<DomainView>,
}

impl ViewReader {
    /// A reader over `store`; spawns its batching task on the current runtime.
    pub fn new(store: Store) -> Self {
        Self {
            reads: BatchedReads::new(store, |store, ids| {
                async move {
                    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
                    let views = store.domain_views_by_ids(&ids).await?;
                    Ok(views
                        .into_iter()
                        .map(|view| (view.id.clone(), view))
                        .collect::<HashMap<_, _>>())
                }
                .boxed()
            }),
        }
    }

    /// The view of domain `id`, if there is one.
    pub async fn domain_view(&self, id: &str) -> Result<Option<DomainView>, StoreError> {
        self.reads.read(id).await
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use dns_handling_events::CustomDomainEvent;

    use super::*;
    use crate::adapters::store::ProjectionWrite;

    fn view(n: usize) -> DomainView {
        let registered = CustomDomainEvent::DomainRegistered {
            domain_name: format!("d{n}.example.test"),
            verification_token: format!("token-{n}"),
            verification_record_name: format!("_acme-challenge.d{n}.example.test."),
            registered_at: Utc::now(),
            alt_names: vec![],
            tenant: None,
        };
        DomainView::from_registration(&format!("domain-{n}"), 1, &registered)
            .expect("a registration makes a view")
    }

    /// Many reads at once, for many ids, some asked twice and some unknown: each gets exactly
    /// its own view (or none), from a real SQLite store.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_reads_each_get_their_own_view() {
        let dir = std::env::temp_dir().join(format!("view-reader-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let url = format!("sqlite://{}", dir.join("views.db").display());
        let store = Store::connect(&url).await.expect("open SQLite");
        store.migrate().await.expect("migrate");
        let views: Vec<DomainView> = (0..300).map(view).collect();
        store
            .write_projection(ProjectionWrite {
                views: &views,
                certificates: &[],
                removed: &[],
                renamed: &[],
                key_disposals: &[],
                checkpoint: None,
            })
            .await
            .expect("write views");

        let reader = ViewReader::new(store);
        let asked: Vec<String> = (0..600)
            .map(|n| format!("domain-{}", n % 400)) // 300–399 do not exist; each id twice
            .collect();
        let answers =
            futures::future::join_all(asked.iter().map(|id| reader.domain_view(id))).await;
        for (id, answer) in asked.iter().zip(answers) {
            let answer = answer.expect("the read succeeds");
            let n: usize = id["domain-".len()..].parse().expect("number");
            match answer {
                Some(found) => {
                    assert!(n < 300, "{id} does not exist but was found");
                    assert_eq!(&found.id, id);
                    assert_eq!(found.domain_name, format!("d{n}.example.test"));
                }
                None => assert!(n >= 300, "{id} exists but was not found"),
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
