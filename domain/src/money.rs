//! Money as integer cents. Parsed at the edge: never negative, never beyond [`Cents::MAX`].

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    Default,
    schemars::JsonSchema,
)]
#[serde(transparent)]
pub struct Cents(i64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("{field} must not be negative (got {value})")]
    Negative { field: &'static str, value: i64 },
    #[error("{field} must be at most {max} cents (got {value})")]
    TooLarge {
        field: &'static str,
        value: i64,
        max: i64,
    },
}

impl Cents {
    /// One billion dollars: far above any car, far below overflow when amounts are added.
    pub const MAX: i64 = 100_000_000_000;
    pub const ZERO: Cents = Cents(0);

    pub fn parse(field: &'static str, value: i64) -> Result<Self, MoneyError> {
        if value < 0 {
            Err(MoneyError::Negative { field, value })
        } else if value > Self::MAX {
            Err(MoneyError::TooLarge {
                field,
                value,
                max: Self::MAX,
            })
        } else {
            Ok(Cents(value))
        }
    }

    pub fn get(self) -> i64 {
        self.0
    }

    /// Both operands are bounded by `MAX`, so the sum cannot overflow.
    pub fn plus(self, other: Cents) -> Cents {
        Cents(self.0 + other.0)
    }
}

impl fmt::Display for Cents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.0 / 100, self.0 % 100)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds() {
        assert_eq!(Cents::parse("x", 0).map(Cents::get), Ok(0));
        assert!(matches!(
            Cents::parse("x", -1),
            Err(MoneyError::Negative { .. })
        ));
        assert!(matches!(
            Cents::parse("x", Cents::MAX + 1),
            Err(MoneyError::TooLarge { .. })
        ));
        assert_eq!(
            Cents::parse("x", 12345).map(|c| c.to_string()),
            Ok("123.45".into())
        );
    }
}
