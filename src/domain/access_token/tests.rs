//! Given/when/then tests of the `AccessToken` aggregate.

use chrono::Duration;
use cqrs_es::test::TestFramework;

use super::*;

type TokenTest = TestFramework<AccessToken>;

fn create(role: &str, at: DateTime<Utc>) -> AccessTokenCommand {
    AccessTokenCommand::Create {
        name: "deploys".into(),
        role: role.into(),
        tenant: None,
        secret_sha256: "ab".repeat(32),
        expires_at: Some(at + Duration::days(30)),
        allowed_from: vec!["10.1.2.3/8".into(), "2001:db8::1/32".into()],
        at,
    }
}

fn created(at: DateTime<Utc>) -> AccessTokenEvent {
    AccessTokenEvent::TokenCreated {
        name: "deploys".into(),
        role: "auditor".into(),
        tenant: None,
        secret_sha256: "ab".repeat(32),
        expires_at: Some(at + Duration::days(30)),
        allowed_from: vec!["10.0.0.0/8".into(), "2001:db8::/32".into()],
        created_at: at,
    }
}

fn refused(command: AccessTokenCommand, error: AccessTokenError) {
    TokenTest::with(())
        .given_no_previous_events()
        .when(command)
        .then_expect_error(error);
}

#[test]
fn a_token_is_created_with_its_prefixes_reduced_to_their_networks() {
    let at = Utc::now();
    TokenTest::with(())
        .given_no_previous_events()
        .when(create("auditor", at))
        .then_expect_events(vec![created(at)]);
}

#[test]
fn a_token_that_exists_is_not_created_again() {
    let at = Utc::now();
    TokenTest::with(())
        .given(vec![created(at)])
        .when(create("auditor", at))
        .then_expect_error(AccessTokenError::AlreadyExists);
}

#[test]
fn a_live_token_is_revoked_then_refused_and_a_second_revocation_is_refused() {
    let at = Utc::now();
    TokenTest::with(())
        .given(vec![created(at)])
        .when(AccessTokenCommand::Revoke { at })
        .then_expect_events(vec![AccessTokenEvent::TokenRevoked { revoked_at: at }]);
    TokenTest::with(())
        .given(vec![
            created(at),
            AccessTokenEvent::TokenRevoked { revoked_at: at },
        ])
        .when(AccessTokenCommand::Revoke { at })
        .then_expect_error(AccessTokenError::Revoked);
    let mut token = AccessToken::default();
    token.apply(created(at));
    assert!(token.is_live(at));
    token.apply(AccessTokenEvent::TokenRevoked { revoked_at: at });
    assert!(!token.is_live(at));
}

#[test]
fn a_token_that_does_not_exist_is_not_revoked() {
    refused(
        AccessTokenCommand::Revoke { at: Utc::now() },
        AccessTokenError::NotFound,
    );
}

#[test]
fn a_token_past_its_end_is_not_live() {
    let at = Utc::now();
    let mut token = AccessToken::default();
    token.apply(created(at));
    assert!(!token.is_live(at + Duration::days(30)));
}

#[test]
fn an_unknown_role_is_refused() {
    refused(
        create("root", Utc::now()),
        AccessTokenError::UnknownRole("root".into()),
    );
}

#[test]
fn a_tenant_on_a_role_other_than_tenant_is_refused() {
    let mut command = create("admin", Utc::now());
    if let AccessTokenCommand::Create { tenant, .. } = &mut command {
        *tenant = Some("acct_123".into());
    }
    refused(command, AccessTokenError::TenantMismatch);
}

#[test]
fn a_tenant_token_without_its_tenant_is_refused() {
    refused(
        create("tenant", Utc::now()),
        AccessTokenError::TenantMismatch,
    );
}

#[test]
fn a_tenant_token_is_created_with_its_tenant_and_a_bad_tenant_is_refused() {
    let at = Utc::now();
    let mut command = create("tenant", at);
    if let AccessTokenCommand::Create { tenant, .. } = &mut command {
        *tenant = Some("acct_123".into());
    }
    let mut expected = created(at);
    if let AccessTokenEvent::TokenCreated { role, tenant, .. } = &mut expected {
        *role = "tenant".into();
        *tenant = Some("acct_123".into());
    }
    TokenTest::with(())
        .given_no_previous_events()
        .when(command.clone())
        .then_expect_events(vec![expected]);
    if let AccessTokenCommand::Create { tenant, .. } = &mut command {
        *tenant = Some("acct 123".into());
    }
    refused(command, AccessTokenError::BadTenant);
}

#[test]
fn an_expiry_that_is_not_in_the_future_is_refused() {
    let at = Utc::now();
    let mut command = create("admin", at);
    if let AccessTokenCommand::Create { expires_at, .. } = &mut command {
        *expires_at = Some(at);
    }
    refused(command, AccessTokenError::ExpiresInThePast);
}

#[test]
fn a_prefix_that_does_not_parse_is_refused() {
    let mut command = create("admin", Utc::now());
    if let AccessTokenCommand::Create { allowed_from, .. } = &mut command {
        *allowed_from = vec!["10.0.0.0/33".into()];
    }
    refused(command, AccessTokenError::BadPrefix("10.0.0.0/33".into()));
}

#[test]
fn too_many_prefixes_are_refused() {
    let mut command = create("admin", Utc::now());
    if let AccessTokenCommand::Create { allowed_from, .. } = &mut command {
        *allowed_from = vec!["10.0.0.0/8".into(); MAX_ALLOWED_FROM + 1];
    }
    refused(command, AccessTokenError::TooManyPrefixes);
}

#[test]
fn an_empty_or_oversized_name_is_refused() {
    for bad in [
        String::new(),
        "  ".into(),
        "x".repeat(MAX_NAME_CHARS + 1),
        "a\nb".into(),
    ] {
        let mut command = create("admin", Utc::now());
        if let AccessTokenCommand::Create { name, .. } = &mut command {
            *name = bad;
        }
        refused(command, AccessTokenError::BadName);
    }
}

#[test]
fn an_edge_token_named_with_a_colon_is_refused() {
    let mut command = create("edge", Utc::now());
    if let AccessTokenCommand::Create { name, .. } = &mut command {
        *name = "edge:1".into();
    }
    refused(command, AccessTokenError::BadEdgeName);
}
