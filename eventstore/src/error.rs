use cqrs_es::persist::PersistenceError;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("bad store url: {0}")]
    BadUrl(String),
    #[error("this build has no EventStoreDB support (cargo feature `eventstoredb`)")]
    EventStoreDbDisabled,
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration: {0}")]
    Migration(String),
    #[error("optimistic concurrency conflict")]
    Conflict,
    #[error("event at position {position} ({event_type} v{version}) cannot be decoded: {reason}")]
    Decode {
        position: i64,
        event_type: String,
        version: String,
        reason: String,
    },
    #[error("persistence: {0}")]
    Persistence(String),
    #[error("encryption: {0}")]
    Crypto(String),
    #[error("subject {0} has been erased; nothing more can be stored for it")]
    Shredded(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

impl From<PersistenceError> for StoreError {
    fn from(err: PersistenceError) -> Self {
        match err {
            PersistenceError::OptimisticLockError => StoreError::Conflict,
            other => StoreError::Persistence(other.to_string()),
        }
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(err: serde_json::Error) -> Self {
        StoreError::Persistence(format!("json: {err}"))
    }
}
