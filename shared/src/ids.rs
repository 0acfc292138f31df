//! Identifiers that arrive from outside: parsed once, bounded, never empty.

use std::fmt;

use serde::Serialize;

/// Ids are short strings; anything longer is a mistake or an attack.
pub const MAX_ID_BYTES: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{what} is empty")]
    Empty { what: &'static str },
    #[error("{what} is {len} bytes long; the limit is {MAX_ID_BYTES}")]
    TooLong { what: &'static str, len: usize },
    #[error("{what} contains control characters")]
    ControlCharacters { what: &'static str },
}

fn parse_bounded(what: &'static str, raw: &str) -> Result<(), IdError> {
    if raw.trim().is_empty() {
        return Err(IdError::Empty { what });
    }
    if raw.len() > MAX_ID_BYTES {
        return Err(IdError::TooLong {
            what,
            len: raw.len(),
        });
    }
    if raw.chars().any(char::is_control) {
        return Err(IdError::ControlCharacters { what });
    }
    Ok(())
}

macro_rules! bounded_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn parse(raw: impl Into<String>) -> Result<Self, IdError> {
                let raw = raw.into();
                parse_bounded($what, &raw)?;
                Ok(Self(raw))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

bounded_id!(
    /// The Pub/Sub `messageId` of a job message: the id the frontend polls with.
    MessageId,
    "message_id"
);
bounded_id!(
    /// The LINE user a job belongs to.
    LineUserId,
    "line_user_id"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_ids_and_the_longest_allowed() {
        assert_eq!(
            MessageId::parse("1234567890").unwrap().as_str(),
            "1234567890"
        );
        assert!(MessageId::parse("x".repeat(MAX_ID_BYTES)).is_ok());
        assert!(LineUserId::parse("U1234567890abcdef").is_ok());
        assert!(MessageId::parse("物件/1 %20").is_ok());
    }

    #[test]
    fn rejects_empty_long_and_control_ids() {
        assert_eq!(
            MessageId::parse("  "),
            Err(IdError::Empty { what: "message_id" })
        );
        assert_eq!(
            MessageId::parse("x".repeat(MAX_ID_BYTES + 1)),
            Err(IdError::TooLong {
                what: "message_id",
                len: MAX_ID_BYTES + 1
            })
        );
        assert!(matches!(
            LineUserId::parse("a\nb"),
            Err(IdError::ControlCharacters { .. })
        ));
    }
}
