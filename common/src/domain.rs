//! The words hookd and hooktop share. Each type is parsed once at the boundary, so code holding
//! one never re-checks it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Who sent a webhook: a provider's name (`stripe`, `github`, or one an operator declared),
/// which is also the `{source}` of its route. Names are interned, so a `Source` is a copyable
/// `&'static str` and a name parses only once something registered it: the built-in providers
/// and the operator's at start-up, or a row read back from the database.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Source(&'static str);

#[allow(non_upper_case_globals)]
impl Source {
    pub const Stripe: Source = Source("stripe");
    pub const Telnyx: Source = Source("telnyx");
    pub const Custom: Source = Source("custom");
    /// The sources whose events have built-in handlers.
    pub const ALL: [Source; 3] = [Source::Stripe, Source::Telnyx, Source::Custom];
    /// Longest name: it is a path segment, a metric label and a column value.
    pub const MAX_LEN: usize = 32;

    pub fn as_str(self) -> &'static str {
        self.0
    }

    /// Makes `name` a known source (lower-case ASCII letters, digits and `_`, starting with a
    /// letter, at most [`Source::MAX_LEN`]), so it parses from now on.
    pub fn register(name: &str) -> Result<Source, BadSourceName> {
        let valid = name.len() <= Self::MAX_LEN
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !valid {
            return Err(BadSourceName(name.to_owned()));
        }
        let mut names = names();
        if let Some(known) = names.get(name) {
            return Ok(Source(known));
        }
        // Leaked once per distinct name, and names come only from the configuration and from
        // rows hookd itself wrote.
        let name: &'static str = Box::leak(name.to_owned().into_boxed_str());
        names.insert(name);
        Ok(Source(name))
    }
}

fn names() -> std::sync::MutexGuard<'static, std::collections::BTreeSet<&'static str>> {
    static NAMES: std::sync::LazyLock<std::sync::Mutex<std::collections::BTreeSet<&'static str>>> =
        std::sync::LazyLock::new(|| {
            std::sync::Mutex::new(Source::ALL.iter().map(|s| s.as_str()).collect())
        });
    NAMES.lock().unwrap_or_else(|e| e.into_inner())
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Source {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Source {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        Source::register(&name).map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown source {:?}: expected {}", .0, expected())]
pub struct UnknownSource(String);

fn expected() -> String {
    let known: Vec<&str> = names().iter().copied().collect();
    match known.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => known.join(""),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid source name {0:?}: lower-case letters, digits and _, starting with a letter, at most 32"
)]
pub struct BadSourceName(String);

impl FromStr for Source {
    type Err = UnknownSource;

    /// A known source, in any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.to_ascii_lowercase();
        names()
            .get(lower.as_str())
            .map(|name| Source(name))
            .ok_or_else(|| UnknownSource(s.to_owned()))
    }
}

/// Where an event is in its life. `Dead` is the dead-letter queue: a state, not a copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Pending,
    Processing,
    Succeeded,
    Retrying,
    Dead,
    Skipped,
}

impl State {
    pub const ALL: [State; 6] = [
        State::Pending,
        State::Processing,
        State::Succeeded,
        State::Retrying,
        State::Dead,
        State::Skipped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Processing => "processing",
            State::Succeeded => "succeeded",
            State::Retrying => "retrying",
            State::Dead => "dead",
            State::Skipped => "skipped",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown event state {0:?}")]
pub struct UnknownState(String);

impl FromStr for State {
    type Err = UnknownState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        State::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| UnknownState(s.to_owned()))
    }
}

/// Longest provider event id or event type accepted; real ones are far shorter, and the bound
/// keeps hostile input out of the unique index.
pub const MAX_IDENTIFIER_LEN: usize = 255;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentifierError {
    #[error("{0} is empty")]
    Empty(&'static str),
    #[error("{0} is longer than {MAX_IDENTIFIER_LEN} bytes")]
    TooLong(&'static str),
    #[error("{0} contains control characters")]
    Control(&'static str),
}

fn check_identifier(what: &'static str, s: &str) -> Result<(), IdentifierError> {
    if s.is_empty() {
        Err(IdentifierError::Empty(what))
    } else if s.len() > MAX_IDENTIFIER_LEN {
        Err(IdentifierError::TooLong(what))
    } else if s.chars().any(char::is_control) {
        Err(IdentifierError::Control(what))
    } else {
        Ok(())
    }
}

/// A provider's event type, such as `customer.subscription.updated` or `call.hangup`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct EventType(String);

impl EventType {
    pub fn parse(s: impl Into<String>) -> Result<Self, IdentifierError> {
        let s = s.into();
        check_identifier("event type", &s)?;
        Ok(EventType(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The provider's id of one event (Stripe `id`, Telnyx `data.id`, Standard Webhooks
/// `webhook-id`): the idempotency key, together with the source.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct ProviderEventId(String);

impl ProviderEventId {
    pub fn parse(s: impl Into<String>) -> Result<Self, IdentifierError> {
        let s = s.into();
        check_identifier("event id", &s)?;
        Ok(ProviderEventId(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ProviderEventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_and_states_round_trip() {
        for source in Source::ALL {
            assert_eq!(source.as_str().parse::<Source>(), Ok(source));
        }
        for state in State::ALL {
            assert_eq!(state.as_str().parse::<State>(), Ok(state));
        }
        assert!("paypal".parse::<Source>().is_err());
        assert!("DEAD".parse::<State>().is_err());
    }

    #[test]
    fn identifiers_are_bounded() {
        assert!(EventType::parse("call.hangup").is_ok());
        assert_eq!(
            EventType::parse(""),
            Err(IdentifierError::Empty("event type"))
        );
        assert_eq!(
            ProviderEventId::parse("x".repeat(256)),
            Err(IdentifierError::TooLong("event id"))
        );
        assert_eq!(
            ProviderEventId::parse("evt\n1"),
            Err(IdentifierError::Control("event id"))
        );
    }
}
