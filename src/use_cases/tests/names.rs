//! Names another live domain holds.

use super::World;
use crate::use_cases::register::{register, replace_alt_names, NamesError};

#[tokio::test]
async fn a_name_another_domain_holds_is_refused_as_taken_and_nothing_is_recorded() {
    let world = World::new(1, |_| {}).await;
    let shop = world.registered("shop.example.com").await;
    world.registered("www.shop.example.com").await;

    let again = register(&world.state, "shop.example.com", &[], World::origin()).await;
    let alt = replace_alt_names(
        &world.state,
        &shop.id,
        &["www.shop.example.com".into()],
        World::origin(),
    )
    .await;

    assert!(
        matches!(&again, Err(NamesError::Taken { name, own: true }) if name == "shop.example.com"),
        "{again:?}"
    );
    assert!(
        matches!(&alt, Err(NamesError::Taken { name, own: false }) if name == "www.shop.example.com"),
        "{alt:?}"
    );
    assert!(world.view(&shop.id).await.alt_names.is_empty());
}
