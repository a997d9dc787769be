//! The layers under the defaults: the TOML file and the environment, each a figment provider,
//! and how figment's errors are told back as the setting that was refused.

use super::*;

/// The TOML file's layer. The file is read here rather than by figment's `Toml` provider so that
/// a missing or malformed file is refused as `CONFIG_FILE`, and its numbers and booleans are
/// given to the parsers as text, as the environment gives them.
pub(super) struct ConfigFile {
    path: PathBuf,
    table: Dict,
}

impl ConfigFile {
    pub(super) fn read(path: &Path) -> Result<Self, SettingsError> {
        let refused = |reason: String| SettingsError {
            name: "CONFIG_FILE".into(),
            value: path.display().to_string(),
            reason,
        };
        let text =
            std::fs::read_to_string(path).map_err(|e| refused(format!("cannot read it: {e}")))?;
        let table: toml::Table = text
            .parse()
            .map_err(|e| refused(format!("not valid TOML: {e}")))?;
        let table = table
            .into_iter()
            .filter(|(_, value)| !value.as_str().is_some_and(|text| text.trim().is_empty()))
            .map(|(key, value)| (key, as_text(value)))
            .collect();
        Ok(Self {
            path: path.to_owned(),
            table,
        })
    }
}

/// A file's value as the parsers read it: scalars become their text, lists and tables keep
/// their shape.
fn as_text(value: toml::Value) -> Value {
    match value {
        toml::Value::String(text) => Value::from(text),
        toml::Value::Integer(number) => Value::from(number.to_string()),
        toml::Value::Float(number) => Value::from(number.to_string()),
        toml::Value::Boolean(flag) => Value::from(flag.to_string()),
        toml::Value::Datetime(datetime) => Value::from(datetime.to_string()),
        toml::Value::Array(items) => {
            Value::from(items.into_iter().map(as_text).collect::<Vec<_>>())
        }
        toml::Value::Table(table) => Value::from(
            table
                .into_iter()
                .map(|(key, value)| (key, as_text(value)))
                .collect::<Map<String, Value>>(),
        ),
    }
}

impl Provider for ConfigFile {
    fn metadata(&self) -> Metadata {
        Metadata::from("TOML file", self.path.as_path())
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.table.clone()))
    }
}

/// The environment's layer: each setting's variable (its name in upper case) that is not blank.
/// Not figment's `Env`: that reads only the process's own environment (tests pass their own
/// map) and parses values as literals, so a token such as `[abc]` would become a list.
pub(super) struct Environment(Dict);

impl Environment {
    pub(super) fn new(variables: &HashMap<String, String>) -> Self {
        let settings = setting_names().iter().filter_map(|name| {
            let value = variables.get(&name.to_uppercase())?;
            (!value.trim().is_empty()).then(|| ((*name).to_owned(), Value::from(value.clone())))
        });
        Self(settings.collect())
    }
}

impl Provider for Environment {
    fn metadata(&self) -> Metadata {
        Metadata::named("environment variables")
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.0.clone()))
    }
}

impl SettingsError {
    /// Names the setting figment could not read as its environment variable.
    pub(super) fn from_figment(
        error: figment::Error,
        figment: &Figment,
        file: Option<&Path>,
    ) -> Self {
        let in_the_file = |reason: String| Self {
            name: "CONFIG_FILE".into(),
            value: file
                .map(|path| path.display().to_string())
                .unwrap_or_default(),
            reason,
        };
        let key = match (&error.kind, error.path.first()) {
            // Only the file can hold a key that is no setting: the environment's layer takes
            // the settings' own variables alone.
            (Kind::UnknownField(key, known), _) => {
                return in_the_file(format!(
                    "unknown setting {key:?}; known: {}",
                    known.join(", ")
                ))
            }
            (_, Some(key)) => key,
            (other, None) => return in_the_file(other.to_string()),
        };
        let (value, reason) = match &error.kind {
            // The parsers' own refusals: the value is shown, but for the settings holding
            // secrets whose parser refuses (which says why without them).
            Kind::Message(reason) if SECRET_LISTS.contains(&key.as_str()) => {
                (REDACTED.to_owned(), reason.clone())
            }
            Kind::Message(reason) => (
                figment.find_value(key).map(shown).unwrap_or_default(),
                reason.clone(),
            ),
            // A list or table where text belongs (or the reverse): the value is not shown, as
            // it may be a secret.
            other => ("…".to_owned(), other.to_string()),
        };
        Self {
            name: key.to_uppercase(),
            value,
            reason,
        }
    }
}

/// The settings that hold secrets and whose parser may refuse: their value is never shown.
const SECRET_LISTS: [&str; 1] = ["edge_tokens"];

/// A value as it would be written in the environment: lists with commas between the items.
fn shown(value: Value) -> String {
    match value {
        Value::Array(_, items) => items.into_iter().map(shown).collect::<Vec<_>>().join(","),
        other => other.into_string().unwrap_or_default(),
    }
}
