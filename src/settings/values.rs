//! The settings' values: how each is parsed from its text, and how it is printed.

use super::*;

/// The database URL without its password, for messages and `dns-handling config`.
pub fn redact_url_password(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &url[scheme_end + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => {
                    format!("{}://{user}:***@{}", &url[..scheme_end], &url[at + 1..])
                }
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Parses a duration as humantime does (`250ms`, `10s`, `5m`, `1h`, `1h 30m`), or a bare number
/// of seconds. Zero is refused: every duration here is an interval, a timeout or a lease, and
/// zero would spin or give up at once.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let duration = match text.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => humantime::parse_duration(text)
            .map_err(|e| format!("expected a duration such as 10s, 5m or 250ms ({e})"))?,
    };
    if duration.is_zero() {
        return Err("must be greater than zero".to_owned());
    }
    Ok(duration)
}

/// Durations: read by [`parse_duration`], written in milliseconds (`"1500ms"`) so that the
/// printed configuration reads back to the same value.
pub(super) mod duration {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        parse::read(deserializer, parse_duration)
    }

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        if value.subsec_nanos().is_multiple_of(1_000_000) {
            serializer.serialize_str(&format!("{}ms", value.as_millis()))
        } else {
            // Finer than a millisecond (`500us`): humantime's spelling keeps it exact.
            serializer.serialize_str(&humantime::format_duration(*value).to_string())
        }
    }
}

/// How fields whose printed form is not their value serialize.
pub(super) mod show {
    use super::*;

    pub fn database_url<S: Serializer>(url: &str, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&redact_url_password(url))
    }

    /// A budget as the environment spells it: `300/10800000ms`.
    pub fn budget<S: Serializer>(value: &Budget, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format!("{}/{}ms", value.limit, value.window.as_millis()))
    }

    /// A list of durations as the environment spells it: `60000ms,600000ms`.
    pub fn durations<S: Serializer>(values: &[Duration], serializer: S) -> Result<S::Ok, S::Error> {
        let text: Vec<String> = values
            .iter()
            .map(|value| format!("{}ms", value.as_millis()))
            .collect();
        serializer.serialize_str(&text.join(","))
    }

    /// Nameserver addresses as the environment spells them: `name=ip` each.
    pub fn nameserver_addresses<S: Serializer>(
        values: &[NameserverAddress],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(values.iter().map(ToString::to_string))
    }

    /// An optional duration, in milliseconds when set.
    pub fn optional_duration<S: Serializer>(
        value: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(value) => serializer.serialize_str(&format!("{}ms", value.as_millis())),
            None => serializer.serialize_none(),
        }
    }
}

/// The parsers of the settings whose text is more than a string. Each error is a message that
/// `SettingsError` shows after the setting's name and value.
pub(super) mod parse {
    use super::*;

    /// Reads a setting's text and hands it to `parse`.
    pub fn read<'de, D, T>(
        deserializer: D,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<T, D::Error>
    where
        D: Deserializer<'de>,
    {
        let text = String::deserialize(deserializer)?;
        parse(&text).map_err(de::Error::custom)
    }

    pub fn server_addr<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
        read(d, |text| {
            text.parse().map_err(|e| format!("{e}; expected ip:port"))
        })
    }

    pub fn acme_directory<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        read(d, |text| {
            if text.starts_with("https://") || text.starts_with("http://") {
                Ok(text.to_owned())
            } else {
                Err("expected an http(s) URL".to_owned())
            }
        })
    }

    pub fn existing_file<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
        read(d, |text| {
            let path = PathBuf::from(text);
            match path.is_file() {
                true => Ok(Some(path)),
                false => Err("no such file".to_owned()),
            }
        })
    }

    pub fn record_prefix<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        read(d, |text| Ok(text.trim_matches('.').to_owned()))
    }

    pub fn trimmed<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        read(d, |text| Ok(Some(text.trim().to_owned())))
    }

    pub fn log_format<'de, D: Deserializer<'de>>(d: D) -> Result<LogFormat, D::Error> {
        read(d, |text| match text.trim() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err("use text or json".to_owned()),
        })
    }

    pub fn caa_check<'de, D: Deserializer<'de>>(d: D) -> Result<CaaCheck, D::Error> {
        read(d, |text| match text.trim() {
            "enforce" => Ok(CaaCheck::Enforce),
            "warn" => Ok(CaaCheck::Warn),
            "off" => Ok(CaaCheck::Off),
            _ => Err("use enforce, warn or off".to_owned()),
        })
    }

    pub fn cert_key_type<'de, D: Deserializer<'de>>(d: D) -> Result<CertificateKeyType, D::Error> {
        read(d, |text| {
            CertificateKeyType::parse(text.trim())
                .ok_or_else(|| "use rsa2048 or ecdsa-p256".to_owned())
        })
    }

    pub fn server_workers<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
        read(d, |text| {
            let workers: usize = text
                .trim()
                .parse()
                .map_err(|_| "expected a whole number".to_owned())?;
            match (1..=256).contains(&workers) {
                true => Ok(Some(workers)),
                false => Err("expected 1 to 256".to_owned()),
            }
        })
    }

    pub fn nameservers<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SocketAddr>, D::Error> {
        let servers = list(d)?.into_iter().map(|part| {
            part.parse::<SocketAddr>()
                .or_else(|_| {
                    part.parse::<std::net::IpAddr>()
                        .map(|ip| SocketAddr::new(ip, 53))
                })
                .map_err(|_| de::Error::custom(format!("{part:?} is not an ip or ip:port")))
        });
        servers.collect()
    }

    /// Further CAs: a list of tables in the file, a JSON array of objects in the environment.
    pub fn issuers<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IssuerSettings>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Given {
            Text(String),
            List(Vec<IssuerSettings>),
        }
        match Given::deserialize(d)? {
            Given::List(issuers) => Ok(issuers),
            Given::Text(text) => serde_json::from_str(&text).map_err(|error| {
                de::Error::custom(format!(
                    "expected a JSON array of {{\"directory\": …}} objects: {error}"
                ))
            }),
        }
    }

    /// A budget: `<units>/<window>`, e.g. `300/3h`.
    pub fn budget<'de, D: Deserializer<'de>>(d: D) -> Result<Budget, D::Error> {
        read(d, |text| {
            let (limit, window) = text
                .trim()
                .split_once('/')
                .ok_or_else(|| "expected <units>/<window>, e.g. 300/3h".to_owned())?;
            let limit: u32 = limit
                .trim()
                .parse()
                .map_err(|_| format!("{limit:?} is not a whole number of units"))?;
            let window = parse_duration(window.trim())?;
            if window.is_zero() {
                return Err("the window must be longer than zero".to_owned());
            }
            Ok(Budget { limit, window })
        })
    }

    /// `true` or `false` (also `1`/`0`, `yes`/`no`).
    pub fn boolean<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
        read(d, |text| match text.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Ok(true),
            "false" | "0" | "no" => Ok(false),
            _ => Err("use true or false".to_owned()),
        })
    }

    /// A DNS zone, normalised like a domain name.
    pub fn dns_zone<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        read(d, |text| {
            crate::domain::domain_name::DomainName::parse(text)
                .map(|zone| Some(zone.to_string()))
                .map_err(|error| error.to_string())
        })
    }

    /// A whole number above zero.
    pub fn positive_count<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
        read(d, |text| match text.trim().parse::<usize>() {
            Ok(0) => Err("must be at least 1".to_owned()),
            Ok(count) => Ok(count),
            Err(_) => Err("expected a whole number".to_owned()),
        })
    }

    /// `name=ip` items: a host name (normalised like a domain name) and one of its addresses.
    pub fn nameserver_addresses<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<NameserverAddress>, D::Error> {
        list(d)?
            .iter()
            .map(|item| {
                let (name, address) = item
                    .split_once('=')
                    .ok_or_else(|| de::Error::custom(format!("{item:?} is not name=ip")))?;
                let name = crate::domain::domain_name::DomainName::parse(name.trim())
                    .map_err(|error| de::Error::custom(format!("{name:?}: {error}")))?;
                let address = address.trim().parse().map_err(|_| {
                    de::Error::custom(format!("{address:?} is not an IPv4 or IPv6 address"))
                })?;
                Ok(NameserverAddress {
                    name: name.to_string(),
                    address,
                })
            })
            .collect()
    }

    /// Host names, each normalised like a domain name.
    pub fn host_names<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        list(d)?
            .iter()
            .map(|part| {
                crate::domain::domain_name::DomainName::parse(part)
                    .map(|name| name.to_string())
                    .map_err(|error| de::Error::custom(error.to_string()))
            })
            .collect()
    }

    /// A non-empty list of durations (`1m,10m,100m,1d`).
    pub fn durations<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
        let durations = list(d)?
            .iter()
            .map(|part| parse_duration(part).map_err(de::Error::custom))
            .collect::<Result<Vec<Duration>, D::Error>>()?;
        if durations.is_empty() {
            return Err(de::Error::custom("at least one duration is needed"));
        }
        Ok(durations)
    }

    /// A duration that may be left unset.
    pub fn optional_duration<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        read(d, parse_duration).map(Some)
    }

    /// `name=token` items (`EDGE_TOKENS`); the refusal never shows a token.
    pub fn edge_tokens<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<EdgeToken>, D::Error> {
        crate::settings::edge::parse_edge_tokens(list(d)?).map_err(de::Error::custom)
    }

    pub fn secrets<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Secret>, D::Error> {
        Ok(list(d)?.into_iter().map(Secret::new).collect())
    }

    /// A list: an array in the file, or text with commas between the items as the environment
    /// has it. Items are trimmed and blank ones dropped.
    pub(in crate::settings) fn list<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<String>, D::Error> {
        struct List;

        impl<'de> Visitor<'de> for List {
            type Value = Vec<String>;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list, or text with commas between the items")
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<Vec<String>, E> {
                Ok(items(text))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
                let mut all = Vec::new();
                while let Some(item) = seq.next_element::<String>()? {
                    all.extend(items(&item));
                }
                Ok(all)
            }
        }

        fn items(text: &str) -> Vec<String> {
            text.split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(str::to_owned)
                .collect()
        }

        d.deserialize_any(List)
    }
}
