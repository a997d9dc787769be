//! The records an order waits for, and those that prove a registration's ownership: what to
//! publish by hand, or, for an order the service validates by delegation, that there is nothing
//! to publish and what the service serves in its own zone.

use serde_json::Value;

use super::format::text;

/// The records that prove a newly registered domain's ownership, when the server validates by
/// delegation (empty otherwise: the instructions name the one TXT record): the TXT record, or
/// the CNAME records that also let the service publish every challenge itself.
pub(super) fn ownership_records(domain: &Value) -> String {
    let cnames = delegation_records(domain);
    if cnames.is_empty() {
        return String::new();
    }
    let txt = &domain["verification_record"];
    let mut out = format!(
        "To prove ownership by TXT (every order's records are then published by hand):\n  {} TXT {}\n",
        text(&txt["name"]),
        text(&txt["value"])
    );
    out.push_str(
        "Or by CNAME, once for good (the service then publishes every challenge itself, renewals included):\n",
    );
    out.push_str(&delegation_lines(&cnames));
    if let Some(shared) = cnames
        .iter()
        .map(|cname| text(&cname["name"]))
        .find(|name| *name == text(&txt["name"]))
    {
        out.push_str(&format!(
            "A CNAME excludes any other record at its name: set {shared} to the TXT record or to the CNAME, not both.\n"
        ));
    }
    out
}

/// The delegation CNAME records of a domain: `delegation_records`, or the one
/// `delegation_record`; none when the server does not validate by delegation.
fn delegation_records(domain: &Value) -> Vec<Value> {
    match domain["delegation_records"].as_array() {
        Some(records) if !records.is_empty() => records.clone(),
        _ => domain["delegation_record"]
            .is_object()
            .then(|| domain["delegation_record"].clone())
            .into_iter()
            .collect(),
    }
}

/// One line per delegation CNAME record, with the names it serves.
fn delegation_lines(cnames: &[Value]) -> String {
    cnames
        .iter()
        .map(|cname| {
            let names: Vec<&str> = cname["names"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            format!(
                "  {} CNAME {}   (for {})\n",
                text(&cname["name"]),
                text(&cname["value"]),
                names.join(", ")
            )
        })
        .collect()
}

/// What to print of the `202` of `issue-certificate` or `renew`: the API's instructions for an
/// order published by hand; for a delegated one, that there is nothing to publish and which
/// values the service serves itself.
pub(super) fn started_instructions(started: &Value) -> String {
    if is_delegated(started) {
        order_report("The order", started, &challenges_of(&started["challenges"]))
    } else {
        format!("{}\n", text(&started["instructions"]))
    }
}

/// An order's challenges (`challenges` of a `202` or of a domain, or `renewal.challenges`).
pub(super) fn challenges_of(challenges: &Value) -> Vec<Value> {
    challenges.as_array().cloned().unwrap_or_default()
}

/// Whether the open order of `order` (the `202` of `issue-certificate` or `renew`, or a domain
/// with an order open) is validated by delegation: the service publishes its records itself.
pub(super) fn is_delegated(order: &Value) -> bool {
    order["validation"] == "delegated"
}

/// What an open order waits for, after `heading` (which names the order): for a delegated order,
/// nothing to publish, and the values the service serves in its own zone; otherwise the TXT
/// records to publish, and why the order is not delegated when delegation was tried, with the
/// CNAME records that would delegate the next orders (when `order` is a domain, which lists them).
pub(super) fn order_report(heading: &str, order: &Value, challenges: &[Value]) -> String {
    if is_delegated(order) {
        let served: String = challenges
            .iter()
            .map(|challenge| {
                format!(
                    "  {} TXT {}   (for {}, via {})\n",
                    text(&challenge["delegated_to"]),
                    text(&challenge["expected_txt_value"]),
                    text(&challenge["identifier"]),
                    text(&challenge["challenge_domain"])
                )
            })
            .collect();
        return if served.is_empty() {
            format!("{heading}: nothing to publish: delegated\n")
        } else {
            format!(
                "{heading}: nothing to publish: delegated; the service serves these values in its own zone:\n{served}"
            )
        };
    }
    let mut out = if challenges.is_empty() {
        format!(
            "{heading}: nothing to publish: the CA holds a valid authorization for every name\n"
        )
    } else {
        format!(
            "{heading} waits for these TXT records:\n{}",
            records(challenges)
        )
    };
    if let Some(problem) = order["delegation_problem"].as_str() {
        out.push_str(&format!("  (not delegated: {problem})\n"));
        let cnames = delegation_records(order);
        if !cnames.is_empty() {
            out.push_str("  to have the next orders delegated, set these CNAME records once:\n");
            out.push_str(&delegation_lines(&cnames));
        }
    }
    out
}

/// The open renewal order of a domain: its id and the TXT records it waits for.
pub(super) fn renewal_waiting(domain: &Value) -> Option<(String, Vec<Value>)> {
    let renewal = &domain["renewal"];
    if renewal["in_progress"] != true {
        return None;
    }
    let challenges = renewal["challenges"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    Some((text(&renewal["order_id"]).to_owned(), challenges))
}

/// One line per TXT record to publish.
fn records(challenges: &[Value]) -> String {
    challenges
        .iter()
        .map(|challenge| {
            format!(
                "  {} TXT {}   (for {})\n",
                text(&challenge["challenge_domain"]),
                text(&challenge["expected_txt_value"]),
                text(&challenge["identifier"])
            )
        })
        .collect()
}

/// Says on stderr what needs a person in the domain's renewal: an open order's records (a
/// delegated one needs nobody, and says so), and failed attempts in a row with the next one.
pub(super) fn report_renewal(domain: &Value) {
    let name = text(&domain["domain_name"]);
    let renewal = &domain["renewal"];
    if let Some((order_id, challenges)) = renewal_waiting(domain) {
        let heading = format!(
            "the renewal of {name} (order {order_id}; the current certificate ends at {})",
            text(&domain["certificate"]["not_after"])
        );
        let warning = if is_delegated(domain) {
            ""
        } else {
            "warning: "
        };
        eprint!("{warning}{}", order_report(&heading, domain, &challenges));
    }
    let attempts = renewal["attempts"].as_u64().unwrap_or(0);
    if attempts > 0 {
        let failure = &renewal["last_failure"];
        eprintln!(
            "warning: {attempts} renewal attempt(s) of {name} failed in a row, the last with {}: {}; the next is due at {}",
            text(&failure["code"]),
            text(&failure["detail"]),
            text(&renewal["next_attempt_at"])
        );
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn records_list_each_challenge_on_its_own_line() {
        let challenges = vec![json!({
            "identifier": "*.shop.test",
            "challenge_domain": "_acme-challenge.shop.test.",
            "expected_txt_value": "v1"
        })];
        assert_eq!(
            records(&challenges),
            "  _acme-challenge.shop.test. TXT v1   (for *.shop.test)\n"
        );
        let domain =
            json!({"renewal": {"in_progress": true, "order_id": "o", "challenges": challenges}});
        assert_eq!(
            renewal_waiting(&domain).map(|(id, c)| (id, c.len())),
            Some(("o".to_owned(), 1))
        );
        assert!(renewal_waiting(&json!({"renewal": {"in_progress": false}})).is_none());
    }

    /// The delegation records of a registration: the domain and its wildcard share one.
    fn cnames() -> Value {
        json!([
            {"name": "_acme-challenge.shop.test.", "type": "CNAME", "value": "a1.acme.platform.test.",
             "names": ["shop.test", "*.shop.test"]},
            {"name": "_acme-challenge.www.shop.test.", "type": "CNAME", "value": "b2.acme.platform.test.",
             "names": ["www.shop.test"]}
        ])
    }

    #[test]
    fn a_registration_without_delegation_adds_nothing_to_the_instructions() {
        let domain = json!({"verification_record": {"name": "_acme-challenge.shop.test.", "type": "TXT", "value": "tok"}});
        assert_eq!(ownership_records(&domain), "");
        assert!(delegation_records(&domain).is_empty());
    }

    #[test]
    fn a_registration_with_delegation_lists_the_txt_record_and_every_cname() {
        let domain = json!({
            "verification_record": {"name": "_acme-challenge.shop.test.", "type": "TXT", "value": "tok"},
            "delegation_record": cnames()[0].clone(),
            "delegation_records": cnames(),
        });
        assert_eq!(
            ownership_records(&domain),
            "To prove ownership by TXT (every order's records are then published by hand):\n\
             \x20 _acme-challenge.shop.test. TXT tok\n\
             Or by CNAME, once for good (the service then publishes every challenge itself, renewals included):\n\
             \x20 _acme-challenge.shop.test. CNAME a1.acme.platform.test.   (for shop.test, *.shop.test)\n\
             \x20 _acme-challenge.www.shop.test. CNAME b2.acme.platform.test.   (for www.shop.test)\n\
             A CNAME excludes any other record at its name: set _acme-challenge.shop.test. to the TXT record or to the CNAME, not both.\n"
        );
    }

    #[test]
    fn the_single_delegation_record_stands_in_for_a_missing_list() {
        let domain = json!({"delegation_record": cnames()[1].clone()});
        assert_eq!(
            delegation_lines(&delegation_records(&domain)),
            "  _acme-challenge.www.shop.test. CNAME b2.acme.platform.test.   (for www.shop.test)\n"
        );
    }

    #[test]
    fn a_delegated_order_has_nothing_to_publish_and_names_what_the_service_serves() {
        let challenges = vec![json!({
            "identifier": "shop.test",
            "challenge_domain": "_acme-challenge.shop.test.",
            "expected_txt_value": "v1",
            "delegated_to": "a1.acme.platform.test."
        })];
        let started = json!({"validation": "delegated", "challenges": challenges,
            "instructions": "Nothing to publish: …"});
        assert_eq!(
            started_instructions(&started),
            "The order: nothing to publish: delegated; the service serves these values in its own zone:\n\
             \x20 a1.acme.platform.test. TXT v1   (for shop.test, via _acme-challenge.shop.test.)\n"
        );
        assert_eq!(
            order_report("x", &json!({"validation": "delegated"}), &[]),
            "x: nothing to publish: delegated\n"
        );
    }

    #[test]
    fn a_manual_order_lists_its_records_and_why_it_is_not_delegated() {
        let challenges = vec![json!({
            "identifier": "shop.test",
            "challenge_domain": "_acme-challenge.shop.test.",
            "expected_txt_value": "v1"
        })];
        let started = json!({"validation": "manual", "instructions": "Set a TXT record at …"});
        assert_eq!(started_instructions(&started), "Set a TXT record at …\n");
        // Delegation off: the records alone, as before.
        assert_eq!(
            order_report("its order (o)", &json!({"validation": "manual"}), &challenges),
            "its order (o) waits for these TXT records:\n  _acme-challenge.shop.test. TXT v1   (for shop.test)\n"
        );
        // Fallen back: why, and the CNAME records that would delegate the next orders.
        let domain = json!({
            "validation": "manual",
            "delegation_problem": "_acme-challenge.shop.test. has no CNAME; set it to a1.acme.platform.test. to let the service publish the challenges",
            "delegation_records": [cnames()[0].clone()],
        });
        assert_eq!(
            order_report("its order (o)", &domain, &challenges),
            "its order (o) waits for these TXT records:\n\
             \x20 _acme-challenge.shop.test. TXT v1   (for shop.test)\n\
             \x20 (not delegated: _acme-challenge.shop.test. has no CNAME; set it to a1.acme.platform.test. to let the service publish the challenges)\n\
             \x20 to have the next orders delegated, set these CNAME records once:\n\
             \x20 _acme-challenge.shop.test. CNAME a1.acme.platform.test.   (for shop.test, *.shop.test)\n"
        );
        assert_eq!(
            order_report("its order (o)", &json!({"validation": "manual"}), &[]),
            "its order (o): nothing to publish: the CA holds a valid authorization for every name\n"
        );
    }
}
