//! Domains of tenants: the tenant recorded and listed, a malformed tenant refused, and the
//! tenants' domain limit.

use super::World;
use crate::adapters::store::DomainFilter;
use crate::use_cases::register::{register, register_for, NamesError};

/// Every event in the store, in feed order: what "nothing stored" is checked against.
async fn stored_events(world: &World) -> usize {
    world
        .state
        .store
        .events_after(0, 1000)
        .await
        .expect("the feed")
        .len()
}

/// The names of the listed domains of `tenant`.
async fn listed(world: &World, tenant: &str) -> Vec<String> {
    let filter = DomainFilter {
        tenant: Some(tenant),
        ..DomainFilter::default()
    };
    let page = world
        .state
        .store
        .list_domains(filter, 50, None)
        .await
        .expect("a page");
    page.items
        .into_iter()
        .map(|view| view.domain_name)
        .collect()
}

#[tokio::test]
async fn a_domain_registered_for_a_tenant_shows_its_tenant_and_is_listed_under_it_alone() {
    let world = World::new(1, |_| {}).await;
    let a = register_for(
        &world.state,
        "a.example.com",
        &[],
        Some("acct_A"),
        World::origin(),
    )
    .await
    .expect("registered for acct_A");
    register_for(
        &world.state,
        "b.example.com",
        &[],
        Some("acct_B"),
        World::origin(),
    )
    .await
    .expect("registered for acct_B");
    let none = world.registered("none.example.com").await;

    assert_eq!(a.tenant.as_deref(), Some("acct_A"));
    assert_eq!(world.view(&a.id).await.tenant.as_deref(), Some("acct_A"));
    assert_eq!(none.tenant, None);
    assert_eq!(listed(&world, "acct_A").await, ["a.example.com"]);
    assert_eq!(listed(&world, "acct_B").await, ["b.example.com"]);
    assert!(listed(&world, "acct_a").await.is_empty(), "case matters");
}

#[tokio::test]
async fn a_malformed_tenant_is_refused_and_nothing_is_stored() {
    let world = World::new(1, |_| {}).await;
    for bad in ["", "acct 1", "acct/1", &"a".repeat(65)] {
        let refused = register_for(
            &world.state,
            "shop.example.com",
            &[],
            Some(bad),
            World::origin(),
        )
        .await;
        assert!(
            matches!(refused, Err(NamesError::Tenant(_))),
            "{bad:?}: {refused:?}"
        );
    }
    assert_eq!(stored_events(&world).await, 0);
    // The name was never claimed.
    register(&world.state, "shop.example.com", &[], World::origin())
        .await
        .expect("the name is free");
}

#[tokio::test]
async fn a_tenant_at_its_domain_limit_is_refused_naming_the_limit_and_nothing_is_stored() {
    let world = World::new(1, |settings| settings.tenant_domain_limit = Some(2)).await;
    for name in ["one.example.com", "two.example.com"] {
        register_for(&world.state, name, &[], Some("acct_A"), World::origin())
            .await
            .expect("under the limit");
    }
    let before = stored_events(&world).await;

    let refused = register_for(
        &world.state,
        "three.example.com",
        &["www.three.example.com".into()],
        Some("acct_A"),
        World::origin(),
    )
    .await;

    assert!(
        matches!(&refused, Err(NamesError::TenantFull { tenant, limit: 2 }) if tenant == "acct_A"),
        "{refused:?}"
    );
    let message = refused.expect_err("refused").to_string();
    assert!(message.contains("TENANT_DOMAIN_LIMIT"), "{message}");
    assert_eq!(stored_events(&world).await, before);
    assert_eq!(listed(&world, "acct_A").await.len(), 2);
    // Another tenant, and a domain of no tenant, are not held back; the names were not claimed.
    register_for(
        &world.state,
        "three.example.com",
        &[],
        Some("acct_B"),
        World::origin(),
    )
    .await
    .expect("acct_B has room");
    register(&world.state, "www.three.example.com", &[], World::origin())
        .await
        .expect("no tenant, no limit");
}

#[tokio::test]
async fn a_tenant_that_removes_a_domain_may_register_another_under_its_limit() {
    let world = World::new(1, |settings| settings.tenant_domain_limit = Some(1)).await;
    let one = register_for(
        &world.state,
        "one.example.com",
        &[],
        Some("acct_A"),
        World::origin(),
    )
    .await
    .expect("under the limit");
    let full = register_for(
        &world.state,
        "two.example.com",
        &[],
        Some("acct_A"),
        World::origin(),
    )
    .await;
    assert!(
        matches!(full, Err(NamesError::TenantFull { .. })),
        "{full:?}"
    );

    crate::use_cases::remove::remove(
        &world.state,
        &world.pollers,
        &one.id,
        false,
        World::origin(),
    )
    .await
    .expect("removed");

    register_for(
        &world.state,
        "two.example.com",
        &[],
        Some("acct_A"),
        World::origin(),
    )
    .await
    .expect("room again");
}

#[tokio::test]
async fn registrations_racing_for_one_tenant_never_pass_its_domain_limit() {
    let world = World::new(1, |settings| settings.tenant_domain_limit = Some(2)).await;
    let names: Vec<String> = (0..6).map(|n| format!("race{n}.example.com")).collect();

    let outcomes = futures::future::join_all(
        names
            .iter()
            .map(|name| register_for(&world.state, name, &[], Some("acct_A"), World::origin())),
    )
    .await;

    let registered = outcomes.iter().filter(|outcome| outcome.is_ok()).count();
    let refused = outcomes
        .iter()
        .filter(|outcome| matches!(outcome, Err(NamesError::TenantFull { limit: 2, .. })))
        .count();
    assert_eq!((registered, refused), (2, 4), "{outcomes:?}");
    assert_eq!(listed(&world, "acct_A").await.len(), 2);
}
