//! CAA (RFC 8659, with RFC 8657's `accounturi` and `validationmethods`): whether the relevant
//! CAA records of a name let a CA issue for it, and, for an order, which of the configured CAs
//! its names let issue. Pure: the records come from a lookup (`adapters/caa.rs`), the CAs'
//! identities from their directories or the settings.

use std::fmt;

/// The property tags this service understands; an unknown one flagged critical forbids
/// issuance (RFC 8659 §4.1). `iodef` and the contact tags restrict nothing.
const UNDERSTOOD_TAGS: [&str; 5] = [
    "issue",
    "issuewild",
    "iodef",
    "contactemail",
    "contactphone",
];

/// The validation method every order of this service uses (RFC 8657 §4 `validationmethods`).
const VALIDATION_METHOD: &str = "dns-01";

/// One CAA record as a name's relevant RRset has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaaRecord {
    /// The flags octet; its top bit is the issuer-critical flag.
    pub flags: u8,
    /// The property tag, in lower case.
    pub tag: String,
    /// The property value as published.
    pub value: String,
    /// The value of an `issue` or `issuewild` property, read; `None` for other tags. A value
    /// that does not parse is read as naming no issuer, as RFC 8659 §4.2 says to.
    pub issuer: Option<CaaIssuer>,
}

/// The value of an `issue` or `issuewild` property: the CA it names and its parameters.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CaaIssuer {
    /// The issuer's domain name; `None` for `";"` (no CA may issue) or a malformed value.
    pub domain: Option<String>,
    /// The parameters (`accounturi`, `validationmethods`, a CA's own), in order.
    pub parameters: Vec<(String, String)>,
}

impl CaaRecord {
    /// Whether the issuer-critical flag is set.
    pub fn critical(&self) -> bool {
        self.flags & 0x80 != 0
    }

    /// Whether this record lets `ca` issue: an `issue`/`issuewild` naming one of its
    /// identities, whose `accounturi` (if any) is the service's account there and whose
    /// `validationmethods` (if any) include `dns-01`.
    fn authorizes(&self, ca: &CaaCa) -> bool {
        let Some(CaaIssuer {
            domain: Some(domain),
            parameters,
        }) = &self.issuer
        else {
            return false;
        };
        let named = ca
            .identities
            .iter()
            .any(|identity| same_name(identity, domain));
        named
            && parameters.iter().all(|(key, value)| {
                if key.eq_ignore_ascii_case("accounturi") {
                    ca.account_uri.as_deref() == Some(value.as_str())
                } else if key.eq_ignore_ascii_case("validationmethods") {
                    value
                        .split(',')
                        .any(|method| method.trim().eq_ignore_ascii_case(VALIDATION_METHOD))
                } else {
                    // Other parameters are the named CA's own (RFC 8659 §4.2).
                    true
                }
            })
    }
}

impl fmt::Display for CaaRecord {
    /// The record's presentation form: `0 issue "letsencrypt.org"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {:?}", self.flags, self.tag, self.value)
    }
}

/// A CA as CAA sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaaCa {
    /// Its ACME directory, to name it.
    pub directory: String,
    /// The issuer domain names it recognises (its directory's `meta.caaIdentities`, or the
    /// `caa_identities` setting).
    pub identities: Vec<String>,
    /// The URL of the service's account there, when known (RFC 8657 `accounturi`).
    pub account_uri: Option<String>,
}

/// The relevant CAA RRset of one name of an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameCaa {
    /// The name of the order (`*.shop.example` for a wildcard).
    pub name: String,
    /// The name whose CAA RRset is relevant (the name itself or the nearest ancestor with one);
    /// `None` when no name up to the top-level domain has one.
    pub found_at: Option<String>,
    /// The records; empty when there are none (issuance unrestricted).
    pub records: Vec<CaaRecord>,
}

/// What CAA says of one CA for one name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaaVerdict {
    /// The CA may issue for the name.
    Permitted,
    /// The CA may not: the records that forbid it (the `issue` or `issuewild` set that names
    /// other CAs only, or an unknown critical property).
    Forbidden(Vec<CaaRecord>),
}

/// Whether `records`, the relevant CAA RRset of `name`, let `ca` issue for it (RFC 8659 §4):
/// a critical property this service does not understand forbids; a wildcard name is governed
/// by the `issuewild` records when there are any, else by the `issue` ones; other names by
/// `issue`; without such records issuance is unrestricted; with them, one must authorize `ca`.
pub fn verdict(name: &str, records: &[CaaRecord], ca: &CaaCa) -> CaaVerdict {
    let unknown_critical: Vec<CaaRecord> = records
        .iter()
        .filter(|record| record.critical() && !UNDERSTOOD_TAGS.contains(&record.tag.as_str()))
        .cloned()
        .collect();
    if !unknown_critical.is_empty() {
        return CaaVerdict::Forbidden(unknown_critical);
    }
    let governing = governing_records(name, records);
    if governing.is_empty() || governing.iter().any(|record| record.authorizes(ca)) {
        CaaVerdict::Permitted
    } else {
        CaaVerdict::Forbidden(governing.into_iter().cloned().collect())
    }
}

/// The records that decide issuance for `name`: `issuewild` for a wildcard where any exist,
/// else `issue`.
fn governing_records<'a>(name: &str, records: &'a [CaaRecord]) -> Vec<&'a CaaRecord> {
    let tagged = |tag: &str| -> Vec<&'a CaaRecord> {
        records.iter().filter(|record| record.tag == tag).collect()
    };
    if name.starts_with("*.") {
        let wild = tagged("issuewild");
        if !wild.is_empty() {
            return wild;
        }
    }
    tagged("issue")
}

/// Why CAA forbids a CA one name of an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaaRefusal {
    /// The CA refused (its directory).
    pub directory: String,
    /// The name of the order.
    pub name: String,
    /// Where the relevant records are published.
    pub found_at: String,
    /// The records that forbid it, in presentation form.
    pub forbidding: Vec<String>,
    /// A record that would let the CA issue, to add at `found_at`.
    pub would_allow: Option<String>,
    /// A record of the same set that lets another configured CA issue, with that CA's
    /// directory: the order could go there were every name to allow it.
    pub allows_other: Option<(String, String)>,
}

/// What CAA says of an order's names for each configured CA, in the order they are tried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaaDecision {
    /// For each CA (as given), the names it may not issue for; empty when it may issue for all.
    pub refusals: Vec<Vec<CaaRefusal>>,
}

impl CaaDecision {
    /// Whether the CA at `place` may issue for every name.
    pub fn permits(&self, place: usize) -> bool {
        self.refusals.get(place).is_none_or(Vec::is_empty)
    }

    /// Whether CAA forbids every CA (some name each).
    pub fn forbids_all(&self) -> bool {
        !self.refusals.is_empty() && self.refusals.iter().all(|refused| !refused.is_empty())
    }
}

/// Which of `cas` (in the order orders try them) the relevant CAA records of `names` let issue
/// for all of them, and why not where not.
pub fn decide(names: &[NameCaa], cas: &[CaaCa]) -> CaaDecision {
    let refusals = cas
        .iter()
        .map(|ca| {
            names
                .iter()
                .filter_map(|name| match verdict(&name.name, &name.records, ca) {
                    CaaVerdict::Permitted => None,
                    CaaVerdict::Forbidden(forbidding) => Some(refusal(name, ca, forbidding, cas)),
                })
                .collect()
        })
        .collect();
    CaaDecision { refusals }
}

/// The refusal of `ca` for `name`, with what would allow it and what allows another CA.
fn refusal(name: &NameCaa, ca: &CaaCa, forbidding: Vec<CaaRecord>, cas: &[CaaCa]) -> CaaRefusal {
    let found_at = name.found_at.clone().unwrap_or_else(|| name.name.clone());
    let tag = if name.name.starts_with("*.") && name.records.iter().any(|r| r.tag == "issuewild") {
        "issuewild"
    } else {
        "issue"
    };
    let would_allow = ca.identities.first().map(|identity| {
        let value = match &ca.account_uri {
            Some(account) if uses_account_uri(&forbidding) => {
                format!("{identity}; accounturi={account}")
            }
            _ => identity.clone(),
        };
        format!("{}. CAA 0 {tag} {value:?}", found_at.trim_end_matches('.'))
    });
    let governing = governing_records(&name.name, &name.records);
    let allows_other = cas
        .iter()
        .filter(|other| other.directory != ca.directory)
        .find_map(|other| {
            let record = governing.iter().find(|record| record.authorizes(other))?;
            Some((other.directory.clone(), record.to_string()))
        });
    CaaRefusal {
        directory: ca.directory.clone(),
        name: name.name.clone(),
        found_at,
        forbidding: forbidding.iter().map(ToString::to_string).collect(),
        would_allow,
        allows_other,
    }
}

/// Whether any of `records` binds issuance to an account.
fn uses_account_uri(records: &[CaaRecord]) -> bool {
    records.iter().any(|record| {
        record.issuer.as_ref().is_some_and(|issuer| {
            issuer
                .parameters
                .iter()
                .any(|(key, _)| key.eq_ignore_ascii_case("accounturi"))
        })
    })
}

/// DNS names compare without regard to case or a trailing dot.
fn same_name(a: &str, b: &str) -> bool {
    a.trim_end_matches('.')
        .eq_ignore_ascii_case(b.trim_end_matches('.'))
}

/// The name whose CAA RRset is looked up first for an order's `name`: a wildcard's base name
/// (RFC 8659 §3 looks up `example.com` for `*.example.com`).
pub fn caa_base_name(name: &str) -> &str {
    name.strip_prefix("*.").unwrap_or(name)
}

#[cfg(test)]
mod tests;
