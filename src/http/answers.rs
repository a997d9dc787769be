//! The answers several resources give alike: the `202` of an order placed (a first issuance's
//! or a renewal's: the records to publish, in fields and in words), and the `200` of a private
//! key handed out.

use actix_web::HttpResponse;
use dns_handling_events::{DomainStatus, OrderChallenge, OrderDetails, Validation};
use dns_handling_projections::ChallengeView;

use super::bodies::{IssuanceStarted, PrivateKeyBody};
use crate::use_cases::keys::HandedKey;

/// The `200` of a private key handed out: never cached.
pub fn key_handed_out(key: HandedKey) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(("cache-control", "no-store"))
        .json(PrivateKeyBody {
            domain_id: key.domain_id,
            certificate_id: key.certificate_id,
            private_key_pem: key.private_key_pem,
        })
}

/// The `202` of an order placed (a first issuance or a renewal): the domain's own record in
/// the seed's fields, every record in `challenges`, and both in words.
pub fn issuance_started(
    order: OrderDetails,
    domain_name: &str,
    status: DomainStatus,
    settings: &crate::settings::Settings,
    wait: std::time::Duration,
) -> IssuanceStarted {
    let (own, challenges) = ChallengeView::of_order(&order, domain_name);
    let instructions = match (order.validation, &order.delegation_problem) {
        (Validation::Delegated, _) => "Nothing to publish: every _acme-challenge name is a CNAME \
             into the service's delegation zone, where the service publishes the values itself \
             and asks the CA to validate as soon as they are visible."
            .to_owned(),
        (Validation::Manual, problem) => format!(
            "{}{} The service checks DNS every {}s for up to {}s.",
            problem
                .as_ref()
                .map(|problem| format!("Delegated validation is not possible: {problem}. "))
                .unwrap_or_default(),
            publishing_instructions(&challenges),
            settings.poll_interval.as_secs_f64(),
            wait.as_secs_f64()
        ),
    };
    // The seed's single-record fields show the domain's own challenge; with none to publish
    // (the CA holds every authorization already) they name where it would be, with no value.
    let (challenge_domain, expected_txt_value) = match own {
        Some(own) => (own.challenge_domain, own.expected_txt_value),
        None => (OrderChallenge::record_name(domain_name), String::new()),
    };
    IssuanceStarted {
        order_id: order.order_id,
        status,
        challenge_domain,
        expected_txt_value,
        instructions,
        challenges,
        validation: order.validation,
        delegation_problem: order.delegation_problem,
    }
}

/// What to publish, in words: one record per challenge, several values at one name said
/// outright (two TXT records side by side, both at once), since the CA needs all of them.
fn publishing_instructions(challenges: &[ChallengeView]) -> String {
    let mut by_name: Vec<(&str, Vec<&ChallengeView>)> = Vec::new();
    for challenge in challenges {
        match by_name
            .iter_mut()
            .find(|(name, _)| *name == challenge.challenge_domain)
        {
            Some((_, shared)) => shared.push(challenge),
            None => by_name.push((&challenge.challenge_domain, vec![challenge])),
        }
    }
    match by_name.as_slice() {
        [] => "Nothing to publish: the CA already holds a valid authorization for every name."
            .to_owned(),
        [(name, only)] if only.len() == 1 => format!(
            "Set a TXT record at {name} with value {} .",
            only[0].expected_txt_value
        ),
        _ => {
            let records: Vec<String> = by_name
                .iter()
                .map(|(name, shared)| match shared.as_slice() {
                    [one] => format!(
                        "at {name} the value {} (for {})",
                        one.expected_txt_value, one.identifier
                    ),
                    several => format!(
                        "at {name} {} TXT records side by side, published at the same time: {}",
                        several.len(),
                        several
                            .iter()
                            .map(|c| format!("{} (for {})", c.expected_txt_value, c.identifier))
                            .collect::<Vec<_>>()
                            .join(" and ")
                    ),
                })
                .collect();
            format!(
                "Publish every one of these TXT records; the CA is asked to validate only once all are visible: {}.",
                records.join("; ")
            )
        }
    }
}
