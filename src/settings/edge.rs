//! The edge settings: the tokens of the platform's TLS edges (`EDGE_TOKENS`), each under the
//! edge's name, and how many certificates the edges' cache holds.

use std::collections::HashSet;
use std::sync::Arc;

use serde::Serializer;

use super::secret::REDACTED;
use super::{Secret, Settings, SettingsError};

/// One edge's token (`edge1=<token>` in `EDGE_TOKENS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeToken {
    /// The edge's name: how its key reads are recorded (`edge:<name>`), its metrics labelled,
    /// and the user name of its HTTP Basic credentials. Shared: every request of the edge
    /// carries it in its role.
    pub name: Arc<str>,
    /// Its token.
    pub token: Secret,
}

/// The longest edge name: it labels a metric and prefixes a recorded reader.
const MAX_NAME: usize = 64;

/// Parses `name=token` items; the refusal names the item by its position or its name, never
/// its token (and the setting's value is never shown: see `SettingsError::from_figment`).
pub(super) fn parse_edge_tokens(items: Vec<String>) -> Result<Vec<EdgeToken>, String> {
    let mut tokens: Vec<EdgeToken> = Vec::with_capacity(items.len());
    for (position, item) in items.iter().enumerate() {
        let number = position + 1;
        let Some((name, token)) = item.split_once('=') else {
            return Err(format!("item {number} is not name=token"));
        };
        let (name, token) = (name.trim(), token.trim());
        if name.is_empty() {
            return Err(format!("item {number} has an empty name"));
        }
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
        if name.len() > MAX_NAME || !name.chars().all(allowed) {
            return Err(format!(
                "item {number}: an edge name is 1 to {MAX_NAME} letters, digits, '-', '_' or '.'"
            ));
        }
        if token.is_empty() {
            return Err(format!("edge {name:?} has an empty token"));
        }
        if tokens.iter().any(|known| *known.name == *name) {
            return Err(format!("edge {name:?} is named twice"));
        }
        tokens.push(EdgeToken {
            name: name.into(),
            token: Secret::new(token),
        });
    }
    Ok(tokens)
}

/// Edge tokens as the environment spells them, tokens redacted: `edge1=<redacted>`.
pub(super) fn show_edge_tokens<S: Serializer>(
    tokens: &[EdgeToken],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(
        tokens
            .iter()
            .map(|edge| format!("{}={REDACTED}", edge.name)),
    )
}

impl Settings {
    /// What is wrong with the edge tokens, if anything: they need an admin token (or every
    /// caller would be admin), and a token must say which edge it is.
    pub(super) fn edge_problem(&self) -> Option<SettingsError> {
        let refusal = |reason: String| SettingsError {
            name: "EDGE_TOKENS".into(),
            value: REDACTED.into(),
            reason,
        };
        if self.edge_tokens.is_empty() {
            return None;
        }
        if self.auth_token.is_none() {
            return Some(refusal(
                "edge tokens need an admin AUTH_TOKEN too, or every caller would be admin".into(),
            ));
        }
        let mut seen = HashSet::new();
        for edge in &self.edge_tokens {
            let token = edge.token.expose();
            let taken = self.auth_token.iter().any(|admin| admin.expose() == token)
                || self.read_only_tokens.iter().any(|t| t.expose() == token);
            if taken || !seen.insert(token) {
                return Some(refusal(format!(
                    "the token of edge {:?} is another token's too: a token must say who \
                     presents it",
                    edge.name
                )));
            }
        }
        None
    }
}
