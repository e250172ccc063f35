//! The words hookd and hooktop share. Each type is parsed once at the boundary, so code holding
//! one never re-checks it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Who sent a webhook; each source has its own route, signature scheme and handlers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Stripe,
    Telnyx,
    Custom,
}

impl Source {
    pub const ALL: [Source; 3] = [Source::Stripe, Source::Telnyx, Source::Custom];

    pub fn as_str(self) -> &'static str {
        match self {
            Source::Stripe => "stripe",
            Source::Telnyx => "telnyx",
            Source::Custom => "custom",
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown source {0:?}: expected stripe, telnyx or custom")]
pub struct UnknownSource(String);

impl FromStr for Source {
    type Err = UnknownSource;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "stripe" => Ok(Source::Stripe),
            "telnyx" => Ok(Source::Telnyx),
            "custom" => Ok(Source::Custom),
            _ => Err(UnknownSource(s.to_owned())),
        }
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
