//! `ViewReader`: reads single domain views for the API (`GET /domains/{id}`), coalescing the
//! reads that arrive together into one query (see `batched_reads`). No view is cached: a client
//! sees its own writes and every write committed before it asked.
//!
//! Only a domain's tenant is kept once read (for a tenant token's scope check, on every request
//! of one domain): it is fixed when the domain is registered, a removed domain's view keeps it,
//! and ids are never reused, so a kept tenant is never stale, on any replica.

use std::collections::HashMap;
use std::sync::Arc;

use dns_handling_projections::DomainView;
use futures::FutureExt;

use super::batched_reads::BatchedReads;
use crate::adapters::store::{Store, StoreError};

/// Reads domain views by id; see the module documentation.
#[derive(Clone)]
pub struct ViewReader {
    reads: BatchedReads<DomainView>,
    /// The tenant (or none) of each domain read lately, by id, the least used evicted first.
    tenants: moka::sync::Cache<String, Option<Arc<str>>>,
}

/// How many domains' tenants a replica keeps: about 100 bytes each, 10 MB at most.
const KEPT_TENANTS: u64 = 100_000;

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
            tenants: moka::sync::Cache::new(KEPT_TENANTS),
        }
    }

    /// The view of domain `id`, if there is one.
    pub async fn domain_view(&self, id: &str) -> Result<Option<DomainView>, StoreError> {
        self.reads.read(id).await
    }

    /// Whose domain `id` is: `Some(tenant)` (`Some(None)` for a domain of no tenant), `None`
    /// when no domain has that id. Kept once found (see the module documentation); an id not
    /// found is asked again next time, since it may be registered by then.
    pub async fn domain_tenant(&self, id: &str) -> Result<Option<Option<Arc<str>>>, StoreError> {
        if let Some(tenant) = self.tenants.get(id) {
            return Ok(Some(tenant));
        }
        let Some(view) = self.domain_view(id).await? else {
            return Ok(None);
        };
        let tenant: Option<Arc<str>> = view.tenant.as_deref().map(Arc::from);
        self.tenants.insert(id.to_owned(), tenant.clone());
        Ok(Some(tenant))
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

    async fn store_of(views: &[DomainView], dir: &std::path::Path) -> Store {
        let url = format!("sqlite://{}", dir.join("views.db").display());
        let store = Store::connect(&url).await.expect("open SQLite");
        store.migrate().await.expect("migrate");
        write(&store, views).await;
        store
    }

    async fn write(store: &Store, views: &[DomainView]) {
        store
            .write_projection(ProjectionWrite {
                views,
                certificates: &[],
                removed: &[],
                renamed: &[],
                key_disposals: &[],
                checkpoint: None,
            })
            .await
            .expect("write views");
    }

    fn of_tenant(n: usize, tenant: Option<&str>) -> DomainView {
        DomainView {
            tenant: tenant.map(str::to_owned),
            ..view(n)
        }
    }

    /// A domain's tenant is read from its view once, then answered from memory (the view is
    /// rewritten with another tenant here, which no event can do, to see which answers); an id
    /// no domain has is asked of the store each time, and found once it is registered.
    #[tokio::test]
    async fn a_domain_s_tenant_is_read_once_and_an_unknown_id_every_time() {
        let dir = std::env::temp_dir().join(format!("view-tenants-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let store = store_of(&[of_tenant(1, Some("acct_a")), of_tenant(2, None)], &dir).await;
        let reader = ViewReader::new(store.clone());

        let first = reader.domain_tenant("domain-1").await.expect("read");
        assert_eq!(first, Some(Some(Arc::from("acct_a"))));
        assert_eq!(
            reader.domain_tenant("domain-2").await.expect("read"),
            Some(None)
        );
        assert_eq!(reader.domain_tenant("domain-3").await.expect("read"), None);

        let rewritten = DomainView {
            last_sequence: 2,
            ..of_tenant(1, Some("acct_b"))
        };
        write(&store, &[rewritten, of_tenant(3, Some("acct_c"))]).await;
        let view = reader.domain_view("domain-1").await.expect("read");
        assert_eq!(view.and_then(|view| view.tenant).as_deref(), Some("acct_b"));
        assert_eq!(
            reader.domain_tenant("domain-1").await.expect("read"),
            Some(Some(Arc::from("acct_a"))),
            "the tenant was read again"
        );
        assert_eq!(
            reader.domain_tenant("domain-3").await.expect("read"),
            Some(Some(Arc::from("acct_c"))),
            "an id not found was kept as not found"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Many reads at once, for many ids, some asked twice and some unknown: each gets exactly
    /// its own view (or none), from a real SQLite store.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_reads_each_get_their_own_view() {
        let dir = std::env::temp_dir().join(format!("view-reader-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let views: Vec<DomainView> = (0..300).map(view).collect();
        let store = store_of(&views, &dir).await;

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
