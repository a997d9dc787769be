//! `DomainName`: a host name that has been normalised and validated, so no other code checks it.

use serde::{Deserialize, Serialize};

/// A normalised DNS host name: lower case, ASCII (IDN labels as punycode), no trailing dot,
/// labels of 1–63 letters, digits and hyphens not starting or ending with a hyphen, at most 253
/// characters, at least two labels, and not an IP address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DomainName(String);

/// Why a text is not a usable domain name; the message is shown to API clients as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainNameError {
    /// Nothing was given.
    #[error("domain_name must not be empty")]
    Empty,
    /// IDN conversion failed (invalid Unicode for a host name).
    #[error("domain_name {0:?} is not a valid internationalised domain name")]
    InvalidIdn(String),
    /// An IPv4 or IPv6 literal.
    #[error("domain_name {0:?} is an IP address, not a host name")]
    IpLiteral(String),
    /// More than 253 characters once normalised.
    #[error("domain_name is {0} characters long; at most 253 are allowed")]
    TooLong(usize),
    /// A single label such as `com`.
    #[error("domain_name {0:?} is a bare top-level name; a registrable host name has at least two labels")]
    SingleLabel(String),
    /// Two dots in a row, or a leading dot.
    #[error("domain_name {0:?} has an empty label")]
    EmptyLabel(String),
    /// A label over 63 characters.
    #[error("label {0:?} is longer than 63 characters")]
    LabelTooLong(String),
    /// A character outside letters, digits and hyphen.
    #[error(
        "label {label:?} contains {character:?}; only letters, digits and hyphens are allowed"
    )]
    BadCharacter {
        /// The offending label.
        label: String,
        /// The first offending character.
        character: char,
    },
    /// A label starting or ending with a hyphen.
    #[error("label {0:?} starts or ends with a hyphen")]
    HyphenAtEdge(String),
    /// A top-level label that is all digits (which would be read as an address).
    #[error("domain_name {0:?} ends in a numeric label")]
    NumericTld(String),
}

impl DomainName {
    /// Normalises and validates a host name as a client typed it.
    pub fn parse(input: &str) -> Result<DomainName, DomainNameError> {
        let trimmed = input.trim();
        let without_dot = trimmed.strip_suffix('.').unwrap_or(trimmed);
        if without_dot.is_empty() {
            return Err(DomainNameError::Empty);
        }
        if without_dot.parse::<std::net::IpAddr>().is_ok()
            || without_dot.starts_with('[')
            || without_dot.contains(':')
        {
            return Err(DomainNameError::IpLiteral(without_dot.to_owned()));
        }
        let ascii = if without_dot.is_ascii() {
            without_dot.to_ascii_lowercase()
        } else {
            idna::domain_to_ascii(without_dot)
                .map_err(|_| DomainNameError::InvalidIdn(without_dot.to_owned()))?
        };
        if ascii.len() > 253 {
            return Err(DomainNameError::TooLong(ascii.len()));
        }
        let labels: Vec<&str> = ascii.split('.').collect();
        for label in &labels {
            check_label(&ascii, label)?;
        }
        if labels.len() < 2 {
            return Err(DomainNameError::SingleLabel(ascii));
        }
        if labels
            .last()
            .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(DomainNameError::NumericTld(ascii));
        }
        Ok(DomainName(ascii))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as an owned string.
    pub fn into_string(self) -> String {
        self.0
    }
}

fn check_label(name: &str, label: &str) -> Result<(), DomainNameError> {
    if label.is_empty() {
        return Err(DomainNameError::EmptyLabel(name.to_owned()));
    }
    if label.len() > 63 {
        return Err(DomainNameError::LabelTooLong(label.to_owned()));
    }
    if let Some(character) = label
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
    {
        return Err(DomainNameError::BadCharacter {
            label: label.to_owned(),
            character,
        });
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err(DomainNameError::HyphenAtEdge(label.to_owned()));
    }
    Ok(())
}

impl std::fmt::Display for DomainName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_lower_cased_and_lose_the_trailing_dot() {
        let name = DomainName::parse("Shop.Example.COM.").expect("valid");
        assert_eq!(name.as_str(), "shop.example.com");
    }

    #[test]
    fn unicode_names_become_punycode() {
        let name = DomainName::parse("bücher.example").expect("valid");
        assert_eq!(name.as_str(), "xn--bcher-kva.example");
    }

    #[test]
    fn invalid_names_are_refused_with_a_precise_reason() {
        type Expectation = fn(&DomainNameError) -> bool;
        let cases: &[(&str, Expectation)] = &[
            ("", |e| matches!(e, DomainNameError::Empty)),
            (".", |e| matches!(e, DomainNameError::Empty)),
            ("192.168.0.1", |e| {
                matches!(e, DomainNameError::IpLiteral(_))
            }),
            ("::1", |e| matches!(e, DomainNameError::IpLiteral(_))),
            ("com", |e| matches!(e, DomainNameError::SingleLabel(_))),
            ("a..example.com", |e| {
                matches!(e, DomainNameError::EmptyLabel(_))
            }),
            ("-a.example.com", |e| {
                matches!(e, DomainNameError::HyphenAtEdge(_))
            }),
            ("a-.example.com", |e| {
                matches!(e, DomainNameError::HyphenAtEdge(_))
            }),
            ("a_b.example.com", |e| {
                matches!(e, DomainNameError::BadCharacter { character: '_', .. })
            }),
            ("a b.example.com", |e| {
                matches!(e, DomainNameError::BadCharacter { .. })
            }),
            ("example.123", |e| {
                matches!(e, DomainNameError::NumericTld(_))
            }),
        ];
        for (input, expected) in cases {
            let error = DomainName::parse(input).expect_err(input);
            assert!(expected(&error), "{input:?} gave {error:?}");
        }
        let long_label = format!("{}.example.com", "a".repeat(64));
        assert!(matches!(
            DomainName::parse(&long_label),
            Err(DomainNameError::LabelTooLong(_))
        ));
        let long_name = format!("{}.com", vec!["a".repeat(60); 5].join("."));
        assert!(matches!(
            DomainName::parse(&long_name),
            Err(DomainNameError::TooLong(_))
        ));
    }

    fn satisfies_the_invariants(name: &DomainName) -> bool {
        let text = name.as_str();
        let labels: Vec<&str> = text.split('.').collect();
        text.len() <= 253
            && labels.len() >= 2
            && text.parse::<std::net::IpAddr>().is_err()
            && labels.iter().all(|label| {
                (1..=63).contains(&label.len())
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            })
    }

    proptest::proptest! {
        #[test]
        fn any_input_is_refused_or_yields_a_valid_normalised_name(input in "\\PC{0,80}") {
            if let Ok(name) = DomainName::parse(&input) {
                proptest::prop_assert!(satisfies_the_invariants(&name), "{input:?} -> {name:?}");
                proptest::prop_assert_eq!(DomainName::parse(name.as_str()), Ok(name.clone()));
            }
        }

        #[test]
        fn names_made_of_valid_labels_are_accepted_in_lower_case(
            labels in proptest::collection::vec("[a-zA-Z0-9]([a-zA-Z0-9-]{0,20}[a-zA-Z0-9])?", 1..5),
            tld in "[a-zA-Z]{2,10}",
            trailing_dot in proptest::bool::ANY,
        ) {
            let input = format!("{}.{}{}", labels.join("."), tld, if trailing_dot { "." } else { "" });
            let name = DomainName::parse(&input).map_err(|e| proptest::test_runner::TestCaseError::fail(format!("{input:?}: {e}")))?;
            proptest::prop_assert_eq!(name.as_str(), input.trim_end_matches('.').to_ascii_lowercase());
        }

        #[test]
        fn names_with_a_bad_character_are_refused(
            prefix in "[a-z]{1,10}",
            bad in "[_!@#$%^&*()+=/\\\\ ,;:<>?\\[\\]{}|~`'\"]",
        ) {
            let input = format!("{prefix}{bad}x.example.com");
            proptest::prop_assert!(DomainName::parse(&input).is_err(), "{input:?} was accepted");
        }
    }

    #[test]
    fn the_longest_valid_labels_are_accepted() {
        let name = format!("{}.example.com", "a".repeat(63));
        assert!(DomainName::parse(&name).is_ok());
    }
}
