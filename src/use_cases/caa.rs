//! CAA before an order: which configured CAs the relevant CAA records of the order's names let
//! issue (`CAA_CHECK`). With `enforce` the order goes only to those, and is refused when there
//! are none; with `warn` it goes as without CAA, the refusal logged and counted; with `off` CAA
//! is not looked up. A lookup that fails never blocks: that name counts as unrestricted, and the
//! failure is logged.

use std::fmt;

use crate::adapters::caa::CaaLookup;
use crate::app_state::AppState;
use crate::domain::caa::{decide, CaaCa, CaaRefusal, NameCaa};
use crate::metrics::METRICS;
use crate::settings::CaaCheck;

/// CAA forbids every configured CA some name of the order: nothing was asked of any CA.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct CaaForbids {
    /// Every configured CA (in the order orders try them) and each name it may not issue for.
    pub refusals: Vec<CaaRefusal>,
}

impl fmt::Display for CaaForbids {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CAA records forbid every configured CA to issue for this domain: ")?;
        let told: Vec<String> = self
            .refusals
            .iter()
            .map(|refusal| {
                let mut text = format!(
                    "{} may not issue for {}: {} at {}",
                    refusal.directory,
                    refusal.name,
                    refusal.forbidding.join(", "),
                    refusal.found_at
                );
                if let Some(record) = &refusal.would_allow {
                    text.push_str(&format!(" (`{record}` would allow it)"));
                }
                text
            })
            .collect();
        f.write_str(&told.join("; "))?;
        f.write_str("; nothing was asked of any CA")
    }
}

/// Which configured CAs (by their place in `state.issuers.configured()`) an order for `names`
/// may go to, by the relevant CAA records `found` for each (the health check before the order
/// looked them up): all but those CAA forbids, or [`CaaForbids`] when it forbids them all under
/// `enforce`.
pub(super) async fn permitted_cas(
    state: &AppState,
    names: &[String],
    found: &[CaaLookup],
) -> Result<Vec<bool>, CaaForbids> {
    let configured = state.issuers.configured();
    let everyone = vec![true; configured.len()];
    if state.settings.caa_check == CaaCheck::Off {
        return Ok(everyone);
    }
    let mut relevant = Vec::new();
    for (name, lookup) in names.iter().zip(found) {
        match lookup {
            CaaLookup::Failed(error) => {
                // cert-manager's lesson: a resolver that cannot see the truth must not stop
                // issuance; the CA looks CAA up itself anyway.
                tracing::warn!(%name, %error, "CAA lookup failed; the order goes on unchecked for this name");
                METRICS.caa_lookup_failed();
            }
            found => relevant.extend(found.for_name(name)),
        }
    }
    if relevant.iter().all(|name| name.records.is_empty()) {
        return Ok(everyone);
    }
    let cas = Box::pin(caa_identities(state, &relevant)).await;
    // A CA whose identities are unknown cannot be judged: it is not held back.
    let judged: Vec<(usize, CaaCa)> = cas
        .into_iter()
        .enumerate()
        .filter_map(|(place, ca)| Some((place, ca?)))
        .collect();
    let only_judged: Vec<CaaCa> = judged.iter().map(|(_, ca)| ca.clone()).collect();
    let decision = decide(&relevant, &only_judged);
    let mut permitted = everyone;
    for (at, (place, _)) in judged.iter().enumerate() {
        permitted[*place] = decision.permits(at);
    }
    if permitted.iter().any(|permitted| *permitted) {
        if !permitted.first().copied().unwrap_or(true) {
            tracing::info!(
                ?names,
                "CAA forbids the first CA: the order goes to a CA it permits"
            );
            METRICS.caa_refusal("fallback");
        }
        return Ok(permitted);
    }
    let refusals: Vec<CaaRefusal> = decision.refusals.into_iter().flatten().collect();
    let forbids = CaaForbids { refusals };
    match state.settings.caa_check {
        CaaCheck::Warn => {
            tracing::warn!(error = %forbids, "CAA_CHECK=warn: ordering anyway");
            METRICS.caa_refusal("warned");
            Ok(vec![true; permitted.len()])
        }
        _ => {
            METRICS.caa_refusal("refused");
            Err(forbids)
        }
    }
}

/// Each configured CA as CAA sees it (`None` where its identities could not be had or it lists
/// none), its account URL asked for only when a record binds issuance to an account.
pub(super) async fn caa_identities(state: &AppState, relevant: &[NameCaa]) -> Vec<Option<CaaCa>> {
    let binds_account = relevant
        .iter()
        .flat_map(|name| &name.records)
        .any(|record| {
            record.issuer.as_ref().is_some_and(|issuer| {
                issuer
                    .parameters
                    .iter()
                    .any(|(key, _)| key.eq_ignore_ascii_case("accounturi"))
            })
        });
    let mut cas = Vec::new();
    for ca in state.issuers.configured() {
        let identities = match ca.caa_identities().await {
            Ok(identities) if !identities.is_empty() => identities,
            Ok(_) => {
                tracing::warn!(
                    directory = ca.directory_url(),
                    "the CA lists no CAA identities (set caa_identities for it): CAA cannot \
                     say whether it may issue"
                );
                cas.push(None);
                continue;
            }
            Err(error) => {
                tracing::warn!(directory = ca.directory_url(), %error, "the CA's CAA identities could not be read");
                cas.push(None);
                continue;
            }
        };
        let account_uri = if binds_account {
            ca.account_url().await.ok()
        } else {
            None
        };
        cas.push(Some(CaaCa {
            directory: ca.directory_url().to_owned(),
            identities,
            account_uri,
        }));
    }
    cas
}
