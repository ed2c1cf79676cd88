//! Store URLs (`sqlite://PATH`, `postgres://...`, `esdb://...`), parsed at the edge.

use crate::error::StoreError;
use std::fmt;
use std::str::FromStr;

pub const DEFAULT_STORE_URL: &str = "sqlite://data/triad.db";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// Embedded SQLite file; the path is relative to the working directory unless absolute.
    Sqlite {
        path: String,
    },
    Postgres {
        url: String,
    },
    /// EventStoreDB: only with the cargo feature `eventstoredb`.
    EventStoreDb {
        url: String,
    },
}

impl FromStr for StoreUrl {
    type Err = StoreError;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        if let Some(path) = raw.strip_prefix("sqlite://") {
            let path = path.split('?').next().unwrap_or_default();
            if path.is_empty() {
                return Err(StoreError::BadUrl(format!("{raw}: missing file path")));
            }
            Ok(StoreUrl::Sqlite { path: path.into() })
        } else if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
            Ok(StoreUrl::Postgres { url: raw.into() })
        } else if raw.starts_with("esdb://") || raw.starts_with("esdb+discover://") {
            Ok(StoreUrl::EventStoreDb { url: raw.into() })
        } else {
            Err(StoreError::BadUrl(format!(
                "{raw}: expected sqlite://PATH, postgres://... or esdb://..."
            )))
        }
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreUrl::Sqlite { path } => write!(f, "sqlite://{path}"),
            // Never print credentials.
            StoreUrl::Postgres { url } | StoreUrl::EventStoreDb { url } => {
                match url.split_once('@') {
                    Some((scheme_user, host)) => {
                        let scheme = scheme_user.split("://").next().unwrap_or("postgres");
                        write!(f, "{scheme}://***@{host}")
                    }
                    None => f.write_str(url),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        assert_eq!(
            "sqlite://data/triad.db".parse::<StoreUrl>().unwrap(),
            StoreUrl::Sqlite {
                path: "data/triad.db".into()
            }
        );
        assert!(matches!(
            "postgres://u:p@h/db".parse::<StoreUrl>().unwrap(),
            StoreUrl::Postgres { .. }
        ));
        assert_eq!(
            "postgres://u:p@h/db"
                .parse::<StoreUrl>()
                .unwrap()
                .to_string(),
            "postgres://***@h/db"
        );
        assert!("mysql://x".parse::<StoreUrl>().is_err());
        assert!("sqlite://".parse::<StoreUrl>().is_err());
    }
}
