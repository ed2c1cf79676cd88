//! Identifier newtypes. Ids are opaque strings; parsing at the edge bounds their size and
//! alphabet so that nothing unprintable or unbounded reaches the store.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a raw string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{kind} must not be empty")]
    Empty { kind: &'static str },
    #[error("{kind} is longer than {max} characters")]
    TooLong { kind: &'static str, max: usize },
    #[error("{kind} may contain only letters, digits, '-', '_', '.', ':' and '@'")]
    BadCharacter { kind: &'static str },
}

pub const MAX_ID_LEN: usize = 128;

fn validate(kind: &'static str, raw: &str) -> Result<(), IdError> {
    if raw.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if raw.chars().count() > MAX_ID_LEN {
        return Err(IdError::TooLong {
            kind,
            max: MAX_ID_LEN,
        });
    }
    let ok = raw
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '@'));
    if ok {
        Ok(())
    } else {
        Err(IdError::BadCharacter { kind })
    }
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default, schemars::JsonSchema)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Parses untrusted input.
            pub fn parse(raw: impl Into<String>) -> Result<Self, IdError> {
                let raw = raw.into();
                validate($kind, &raw)?;
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

id_type!(
    /// An auction (the aggregate id of [`crate::auction::Auction`]).
    AuctionId,
    "auction id"
);
id_type!(
    /// A user: the `sub` claim of a token.
    UserId,
    "user id"
);
id_type!(
    /// A client-chosen id that makes a bid idempotent, scoped to its bidder.
    ClientBidId,
    "client bid id"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        assert!(AuctionId::parse("a-1").is_ok());
        assert_eq!(
            AuctionId::parse(""),
            Err(IdError::Empty { kind: "auction id" })
        );
        assert!(matches!(
            UserId::parse("x".repeat(129)),
            Err(IdError::TooLong { .. })
        ));
        assert!(matches!(
            UserId::parse("a b"),
            Err(IdError::BadCharacter { .. })
        ));
    }
}
