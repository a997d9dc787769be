//! Access tokens made and revoked through their use cases, with this process's table of tokens
//! following their log in a real SQLite file.

use std::time::Duration;

use cqrs_es::AggregateError;

use super::World;
use crate::domain::access_token::AccessTokenError;
use crate::read::token_table;
use crate::use_cases::access_tokens::{
    access_tokens, create_token, revoke_token, AccessTokensError, NewToken,
};

fn new_token(role: &str, allowed_from: &[&str]) -> NewToken {
    NewToken {
        name: "deploys".into(),
        role: role.into(),
        tenant: None,
        expires_at: None,
        allowed_from: allowed_from.iter().map(|p| (*p).to_owned()).collect(),
    }
}

#[tokio::test]
async fn a_token_made_is_accepted_once_answered_and_refused_once_its_revocation_is() {
    let world = World::new(1, |_| {}).await;
    let (store, table) = (world.state.store.clone(), world.state.token_table.clone());
    let following = tokio::spawn(token_table::follow(store, table, Duration::from_secs(1)));

    let created = create_token(&world.state, new_token("auditor", &[]), World::origin())
        .await
        .expect("made");
    assert!(created.secret.starts_with("dnsh_"));
    let found = world.state.token_table.find(&created.secret);
    assert_eq!(
        found.map(|token| token.id.to_string()),
        Some(created.id.clone())
    );
    assert_ne!(created.token.secret_sha256, created.secret, "only a digest");

    revoke_token(&world.state, &created.id, World::origin())
        .await
        .expect("revoked");
    assert!(world.state.token_table.find(&created.secret).is_none());
    let again = revoke_token(&world.state, &created.id, World::origin()).await;
    assert!(
        matches!(
            again,
            Err(AccessTokensError::Command(AggregateError::UserError(
                AccessTokenError::Revoked
            )))
        ),
        "{again:?}"
    );
    following.abort();
}

#[tokio::test]
async fn a_refused_token_stores_nothing() {
    let world = World::new(1, |_| {}).await;
    let refused = create_token(
        &world.state,
        new_token("auditor", &["not-a-prefix"]),
        World::origin(),
    )
    .await;
    assert!(
        matches!(
            refused,
            Err(AccessTokensError::Command(AggregateError::UserError(
                AccessTokenError::BadPrefix(_)
            )))
        ),
        "{refused:?}"
    );
    assert!(access_tokens(&world.state).await.expect("read").is_empty());
}
