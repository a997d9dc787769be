//! `AltNames`: the further names a domain's certificate covers, each validated against the
//! domain, so that every set the aggregate records is one a CA can issue for.

use super::domain_name::{DomainName, DomainNameError};

/// The most names one certificate may hold, the domain itself included (Let's Encrypt's limit).
pub const MAX_NAMES_PER_CERTIFICATE: usize = 100;

/// A domain's further names: normalised like a [`DomainName`], each a subdomain of the domain
/// (`www.shop.example.com`) or a wildcard (`*.shop.example.com`, `*.eu.shop.example.com`: the
/// `*` only as the whole leftmost label, once), none twice, none the domain itself, and at most
/// [`MAX_NAMES_PER_CERTIFICATE`] names with the domain. The client's order is kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AltNames(Vec<String>);

/// Why a set of further names is refused; every message names the name at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AltNameError {
    /// The name is not a valid host name.
    #[error("alt name {name:?} is not a valid name: {reason}")]
    Invalid {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: DomainNameError,
    },
    /// A `*` anywhere but as the whole leftmost label, or more than once.
    #[error("alt name {0:?} has a misplaced wildcard: `*` may only be the whole leftmost label, once (e.g. *.shop.example.com)")]
    MisplacedWildcard(String),
    /// The name is neither the domain's subdomain nor a wildcard under it.
    #[error("alt name {name:?} is not under the domain {domain}: each alt name must be a subdomain of it or a wildcard under it")]
    OutsideDomain {
        /// The normalised name.
        name: String,
        /// The domain it had to be under.
        domain: String,
    },
    /// The domain itself, which every certificate covers anyway.
    #[error("alt name {0:?} is the domain itself, which the certificate always covers")]
    TheDomainItself(String),
    /// The same name twice (after normalisation).
    #[error("alt name {0:?} is listed more than once")]
    Duplicate(String),
    /// More names than a certificate may hold.
    #[error("{count} names in all (the domain and {alt} alt names); a certificate holds at most {max}", alt = .count - 1, max = MAX_NAMES_PER_CERTIFICATE)]
    TooMany {
        /// The domain plus the alt names.
        count: usize,
    },
}

impl AltNames {
    /// Normalises and validates `inputs` as further names of `domain`.
    pub fn parse(domain: &DomainName, inputs: &[String]) -> Result<AltNames, AltNameError> {
        if inputs.len() + 1 > MAX_NAMES_PER_CERTIFICATE {
            return Err(AltNameError::TooMany {
                count: inputs.len() + 1,
            });
        }
        let mut names: Vec<String> = Vec::with_capacity(inputs.len());
        for input in inputs {
            let name = normalise(domain, input)?;
            if names.contains(&name) {
                return Err(AltNameError::Duplicate(name));
            }
            names.push(name);
        }
        Ok(AltNames(names))
    }

    /// Names already validated (as recorded in an event): trusted as they are.
    pub fn recorded(names: Vec<String>) -> AltNames {
        AltNames(names)
    }

    /// The names, in the client's order.
    pub fn as_slice(&self) -> &[String] {
        &self.0
    }

    /// The names as owned strings.
    pub fn into_vec(self) -> Vec<String> {
        self.0
    }
}

/// One name: its wildcard label set aside, the rest normalised as a host name and checked to
/// be the domain or under it (a plain name must be strictly under it).
fn normalise(domain: &DomainName, input: &str) -> Result<String, AltNameError> {
    let trimmed = input.trim();
    let (wildcard, rest) = match trimmed.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, trimmed),
    };
    if rest.contains('*') {
        return Err(AltNameError::MisplacedWildcard(input.to_owned()));
    }
    let base = DomainName::parse(rest).map_err(|reason| AltNameError::Invalid {
        name: input.to_owned(),
        reason,
    })?;
    let name = if wildcard {
        format!("*.{base}")
    } else {
        base.to_string()
    };
    let under = base
        .as_str()
        .strip_suffix(domain.as_str())
        .is_some_and(|prefix| prefix.ends_with('.'));
    let is_domain = base == *domain;
    if !wildcard && is_domain {
        return Err(AltNameError::TheDomainItself(name));
    }
    if !(under || (wildcard && is_domain)) {
        return Err(AltNameError::OutsideDomain {
            name,
            domain: domain.to_string(),
        });
    }
    if name.len() > 253 {
        return Err(AltNameError::Invalid {
            name: input.to_owned(),
            reason: DomainNameError::TooLong(name.len()),
        });
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shop() -> DomainName {
        DomainName::parse("shop.example.com").expect("valid")
    }

    fn parse(inputs: &[&str]) -> Result<AltNames, AltNameError> {
        let inputs: Vec<String> = inputs.iter().map(|s| (*s).to_owned()).collect();
        AltNames::parse(&shop(), &inputs)
    }

    #[test]
    fn subdomains_and_wildcards_under_the_domain_are_accepted_normalised_in_order() {
        let names = parse(&[
            "WWW.Shop.Example.com.",
            "*.shop.example.com",
            "*.eu.shop.example.com",
            "a.b.shop.example.com",
        ])
        .expect("valid");
        assert_eq!(
            names.as_slice(),
            [
                "www.shop.example.com",
                "*.shop.example.com",
                "*.eu.shop.example.com",
                "a.b.shop.example.com"
            ]
        );
    }

    #[test]
    fn an_internationalised_subdomain_becomes_punycode() {
        let names = parse(&["bücher.shop.example.com"]).expect("valid");
        assert_eq!(names.as_slice(), ["xn--bcher-kva.shop.example.com"]);
    }

    #[test]
    fn no_alt_names_is_the_empty_set() {
        assert_eq!(parse(&[]).expect("valid"), AltNames::default());
    }

    #[test]
    fn a_name_outside_the_domain_is_refused_naming_it() {
        for outside in [
            "www.other.example.com",
            "example.com",
            "xshop.example.com",
            "*.example.com",
        ] {
            let error = parse(&[outside]).expect_err(outside);
            assert!(
                matches!(error, AltNameError::OutsideDomain { .. }),
                "{outside}: {error:?}"
            );
            assert!(error.to_string().contains(outside), "{error}");
        }
    }

    #[test]
    fn a_misplaced_or_repeated_wildcard_is_refused() {
        for bad in [
            "*shop.example.com",
            "www.*.shop.example.com",
            "*.*.shop.example.com",
            "w*.shop.example.com",
        ] {
            let error = parse(&[bad]).expect_err(bad);
            assert!(
                matches!(
                    error,
                    AltNameError::MisplacedWildcard(_) | AltNameError::Invalid { .. }
                ),
                "{bad}: {error:?}"
            );
            assert!(error.to_string().contains(bad), "{error}");
        }
    }

    #[test]
    fn the_domain_itself_is_refused_as_an_alt_name() {
        let error = parse(&["Shop.Example.com"]).expect_err("the domain");
        assert_eq!(
            error,
            AltNameError::TheDomainItself("shop.example.com".into())
        );
    }

    #[test]
    fn a_name_listed_twice_after_normalisation_is_refused_naming_it() {
        let error = parse(&["www.shop.example.com", "WWW.shop.example.com."]).expect_err("twice");
        assert_eq!(
            error,
            AltNameError::Duplicate("www.shop.example.com".into())
        );
    }

    #[test]
    fn an_invalid_name_is_refused_with_its_reason() {
        let error = parse(&["a_b.shop.example.com"]).expect_err("underscore");
        assert!(matches!(error, AltNameError::Invalid { .. }), "{error:?}");
        assert!(
            error.to_string().contains("a_b.shop.example.com"),
            "{error}"
        );
    }

    #[test]
    fn ninety_nine_alt_names_are_accepted_and_a_hundred_refused() {
        let names: Vec<String> = (0..100).map(|n| format!("n{n}.shop.example.com")).collect();
        assert!(AltNames::parse(&shop(), &names[..99]).is_ok());
        let error = AltNames::parse(&shop(), &names).expect_err("too many");
        assert_eq!(error, AltNameError::TooMany { count: 101 });
        assert!(error.to_string().contains("at most 100"), "{error}");
    }
}
